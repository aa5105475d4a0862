// Both users of kPageSize in one translation unit: this file failed to compile while
// core/ring_buffer.h and backends/pages.h each defined vbus::kPageSize.
#include "core/page_size.h"

#include "backends/pages.h"
#include "core/ring_buffer.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

static_assert(kPageSize == 4096);
static_assert(sizeof(RingControlPage) == kPageSize);

TEST(PageSizeTest, RingsAndPagesAgree) {
  // A ring over one Pages allocation: the control page is exactly one of its pages.
  std::vector<uint64_t> pfns = {7, 8};
  alignas(4096) static uint8_t memory[2 * kPageSize];
  Pages pages(memory, pfns, nullptr);
  EXPECT_EQ(pages.size_bytes(), 2 * kPageSize);
  EXPECT_TRUE(ValidateRingMemory(pages.bytes()).ok());
  EXPECT_EQ(pages.page(1) - pages.page(0), static_cast<ptrdiff_t>(kPageSize));
}

}  // namespace
}  // namespace vbus
