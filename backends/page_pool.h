// PagePool: hands out runs of pages from one contiguous region whose PFNs are consecutive.
//
// The mock backend's guest memory is one shared-memory file that both sides map; the fake
// hypervisor's guest memory is one buffer. In both, page i of the region has PFN
// first_pfn + i and the guest mapping of a run of pages is contiguous, so a ring buffer can be
// written straight through data(). PagePool manages such a region: first-fit allocation of
// contiguous runs, coalescing on release, zero-filled pages on allocation.
//
// Example:
//   PagePool pool(mapping + first_data_pfn * protocol::kPageSize, first_data_pfn, data_page_count);
//   absl::StatusOr<Pages> rings = pool.Allocate(2 * (1 + ring_pages));
//   if (!rings.ok()) return rings.status();   // ResourceExhausted: no run that long
//
// Thread safety: Allocate, free_pages, largest_free_run and the releases done by destroying
// a Pages may run concurrently from any threads. Every Pages allocated from a pool must be
// destroyed (or reset) before the pool.
#ifndef VBUS_BACKENDS_PAGE_POOL_H_
#define VBUS_BACKENDS_PAGE_POOL_H_

#include <cstddef>
#include <cstdint>
#include <map>

#include "absl/status/statusor.h"
#include "backends/pages.h"
#include "core/runtime/sync.h"

namespace vbus {

class PagePool final : public PageReleaser {
 public:
  // Manages page_count pages mapped at `base` (page-aligned, page_count * protocol::kPageSize
  // bytes), whose first page has PFN `first_pfn`. The pool does not own the mapping.
  PagePool(uint8_t* base, uint64_t first_pfn, size_t page_count);
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;
  ~PagePool();

  // Allocate
  // A run of `count` consecutive pages, zero-filled. InvalidArgument for count 0;
  // ResourceExhausted (naming the request, free pages and longest free run) when no free run
  // is long enough.
  absl::StatusOr<Pages> Allocate(size_t count);

  // Pages currently free, and the longest run Allocate could hand out now.
  size_t free_pages() const;
  size_t largest_free_run() const;
  size_t total_pages() const { return page_count_; }
  uint64_t first_pfn() const { return first_pfn_; }

  // PageReleaser: called by ~Pages. A release of pages this pool did not hand out (or already
  // took back) is a programming error in this process and aborts with a message.
  void ReleasePages(uint8_t* data, absl::Span<const uint64_t> pfns) override;

 private:
  uint8_t* const base_;
  const uint64_t first_pfn_;
  const size_t page_count_;

  mutable Mutex mu_;  // core/runtime/sync.h (visible to TSan)
  // Free runs (start index → length; no two runs touch: they are coalesced), allocated runs
  // (start index → length), the free page count.
  std::map<size_t, size_t> free_runs_ ABSL_GUARDED_BY(mu_);
  std::map<size_t, size_t> allocated_ ABSL_GUARDED_BY(mu_);
  size_t free_pages_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace vbus

#endif  // VBUS_BACKENDS_PAGE_POOL_H_
