#include "backends/page_pool.h"

#include <cstring>
#include <vector>

#include "absl/base/internal/raw_logging.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vbus {

PagePool::PagePool(uint8_t* base, uint64_t first_pfn, size_t page_count)
    : base_(base), first_pfn_(first_pfn), page_count_(page_count) {
  MutexLock lock(&mu_);
  if (page_count_ > 0) free_runs_.emplace(0, page_count_);
  free_pages_ = page_count_;
}

PagePool::~PagePool() {
  MutexLock lock(&mu_);
  ABSL_RAW_CHECK(allocated_.empty(), "PagePool destroyed while Pages allocated from it live");
}

absl::StatusOr<Pages> PagePool::Allocate(size_t count) {
  if (count == 0) return absl::InvalidArgumentError("PagePool::Allocate: zero pages requested");
  size_t start = 0;
  {
    MutexLock lock(&mu_);
    auto it = free_runs_.begin();
    while (it != free_runs_.end() && it->second < count) ++it;
    if (it == free_runs_.end()) {
      size_t longest = 0;
      for (const auto& [s, len] : free_runs_) longest = std::max(longest, len);
      return absl::ResourceExhaustedError(
          absl::StrCat("PagePool: no run of ", count, " free pages (", free_pages_,
                       " free, longest run ", longest, " of ", page_count_, ")"));
    }
    start = it->first;
    const size_t remaining = it->second - count;
    free_runs_.erase(it);
    if (remaining > 0) free_runs_.emplace(start + count, remaining);
    allocated_.emplace(start, count);
    free_pages_ -= count;
  }
  uint8_t* data = base_ + start * protocol::kPageSize;
  std::memset(data, 0, count * protocol::kPageSize);
  std::vector<uint64_t> pfns(count);
  for (size_t i = 0; i < count; ++i) pfns[i] = first_pfn_ + start + i;
  return Pages(data, std::move(pfns), this);
}

size_t PagePool::free_pages() const {
  MutexLock lock(&mu_);
  return free_pages_;
}

size_t PagePool::largest_free_run() const {
  MutexLock lock(&mu_);
  size_t longest = 0;
  for (const auto& [start, len] : free_runs_) longest = std::max(longest, len);
  return longest;
}

void PagePool::ReleasePages(uint8_t* data, absl::Span<const uint64_t> pfns) {
  ABSL_RAW_CHECK(data >= base_ && data < base_ + page_count_ * protocol::kPageSize,
                 "PagePool::ReleasePages: pages not from this pool");
  const size_t start = static_cast<size_t>(data - base_) / protocol::kPageSize;
  MutexLock lock(&mu_);
  auto it = allocated_.find(start);
  ABSL_RAW_CHECK(it != allocated_.end() && it->second == pfns.size() && !pfns.empty() &&
                     pfns.front() == first_pfn_ + start,
                 "PagePool::ReleasePages: not an allocation of this pool (double release?)");
  size_t run_start = start;
  size_t run_len = it->second;
  allocated_.erase(it);
  free_pages_ += run_len;
  // Coalesce with the free run after, then the one before.
  auto next = free_runs_.lower_bound(run_start);
  if (next != free_runs_.end() && next->first == run_start + run_len) {
    run_len += next->second;
    next = free_runs_.erase(next);
  }
  if (next != free_runs_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == run_start) {
      run_start = prev->first;
      run_len += prev->second;
      free_runs_.erase(prev);
    }
  }
  free_runs_.emplace(run_start, run_len);
}

}  // namespace vbus
