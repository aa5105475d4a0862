#include "backends/page_pool.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace vbus {
namespace {

// A page-aligned heap region standing in for a shared-memory mapping.
class Region {
 public:
  explicit Region(size_t pages)
      : mem_(static_cast<uint8_t*>(
            std::aligned_alloc(protocol::kPageSize, pages * protocol::kPageSize))),
        pages_(pages) {
    std::memset(mem_, 0xAB, pages * protocol::kPageSize);  // garbage, so zero-filling is observable
  }
  ~Region() { std::free(mem_); }
  uint8_t* data() const { return mem_; }
  size_t pages() const { return pages_; }

 private:
  uint8_t* mem_;
  size_t pages_;
};

TEST(PagePoolTest, AllocatesConsecutivePfnsAndContiguousZeroedMemory) {
  Region region(16);
  PagePool pool(region.data(), 100, region.pages());
  absl::StatusOr<Pages> a = pool.Allocate(3);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->page_count(), 3u);
  EXPECT_EQ(a->size_bytes(), 3 * protocol::kPageSize);
  EXPECT_EQ(a->data(), region.data());
  EXPECT_EQ(std::vector<uint64_t>(a->pfns().begin(), a->pfns().end()),
            (std::vector<uint64_t>{100, 101, 102}));
  EXPECT_TRUE(std::all_of(a->bytes().begin(), a->bytes().end(), [](uint8_t b) { return b == 0; }));
  // Bytes after the allocation were not touched.
  EXPECT_EQ(region.data()[3 * protocol::kPageSize], 0xAB);

  absl::StatusOr<Pages> b = pool.Allocate(2);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->pfns()[0], 103u);
  EXPECT_EQ(b->page(1), region.data() + 4 * protocol::kPageSize);
  EXPECT_EQ(pool.free_pages(), 11u);
}

TEST(PagePoolTest, ZeroPagesIsInvalidArgument) {
  Region region(4);
  PagePool pool(region.data(), 0, region.pages());
  EXPECT_EQ(pool.Allocate(0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PagePoolTest, ExhaustionNamesTheRequest) {
  Region region(4);
  PagePool pool(region.data(), 0, region.pages());
  absl::StatusOr<Pages> all = pool.Allocate(4);
  ASSERT_TRUE(all.ok());
  absl::StatusOr<Pages> more = pool.Allocate(1);
  EXPECT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(more.status().message().find("no run of 1 free pages"), std::string::npos)
      << more.status();
}

TEST(PagePoolTest, ReleaseCoalescesNeighbours) {
  Region region(6);
  PagePool pool(region.data(), 0, region.pages());
  std::vector<Pages> runs;
  for (int i = 0; i < 3; ++i) runs.push_back(*pool.Allocate(2));
  EXPECT_EQ(pool.free_pages(), 0u);
  runs[0].Reset();
  runs[2].Reset();
  EXPECT_EQ(pool.free_pages(), 4u);
  EXPECT_EQ(pool.largest_free_run(), 2u);  // two separate holes
  EXPECT_FALSE(pool.Allocate(3).ok());
  runs[1].Reset();  // joins both holes into one run of 6
  EXPECT_EQ(pool.largest_free_run(), 6u);
  absl::StatusOr<Pages> whole = pool.Allocate(6);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->pfns().front(), 0u);
}

TEST(PagePoolTest, FirstFitReusesTheEarliestHoleThatFits) {
  Region region(10);
  PagePool pool(region.data(), 50, region.pages());
  Pages a = *pool.Allocate(1);
  Pages b = *pool.Allocate(3);
  Pages c = *pool.Allocate(1);
  b.Reset();                    // hole of 3 at index 1
  Pages d = *pool.Allocate(4);  // does not fit the hole: goes after c
  EXPECT_EQ(d.pfns()[0], 55u);
  Pages e = *pool.Allocate(2);  // fits the hole
  EXPECT_EQ(e.pfns()[0], 51u);
}

TEST(PagesTest, MoveTransfersOwnershipAndReleasesOnce) {
  Region region(4);
  PagePool pool(region.data(), 0, region.pages());
  {
    Pages a = *pool.Allocate(2);
    Pages b = std::move(a);
    EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): moved-from is defined empty
    EXPECT_EQ(a.data(), nullptr);
    EXPECT_EQ(b.page_count(), 2u);
    Pages c;
    c = std::move(b);
    EXPECT_EQ(c.page_count(), 2u);
    EXPECT_EQ(pool.free_pages(), 2u);
    c = *pool.Allocate(1);  // move-assigning over c releases its old pages
    EXPECT_EQ(pool.free_pages(), 3u);
  }
  EXPECT_EQ(pool.free_pages(), 4u);
}

TEST(PagePoolTest, ConcurrentAllocateAndReleaseKeepTheCount) {
  Region region(64);
  PagePool pool(region.data(), 0, region.pages());
  constexpr int kThreads = 4;
  constexpr int kRounds = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&pool, t] {
      for (int i = 0; i < kRounds; ++i) {
        absl::StatusOr<Pages> p = pool.Allocate(1 + (i + t) % 4);
        if (!p.ok()) continue;  // transiently full: fine
        // Every page of the run is ours alone: stamp and verify it.
        for (size_t k = 0; k < p->page_count(); ++k) p->page(k)[0] = static_cast<uint8_t>(t);
        for (size_t k = 0; k < p->page_count(); ++k) ASSERT_EQ(p->page(k)[0], t);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(pool.free_pages(), 64u);
  EXPECT_EQ(pool.largest_free_run(), 64u);
}

}  // namespace
}  // namespace vbus
