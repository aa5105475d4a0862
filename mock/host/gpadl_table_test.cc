#include "mock/host/gpadl_table.h"

#include <string>
#include <vector>

#include "core/data/protocol.h"
#include "gtest/gtest.h"

namespace vbus::mock {
namespace {

constexpr uint64_t kPages = 64;

Gpadl Make(uint32_t handle, uint32_t relid, std::vector<uint64_t> pfns) {
  Gpadl g;
  g.handle = handle;
  g.relid = relid;
  g.byte_count = static_cast<uint32_t>(pfns.size() * protocol::kPageSize);
  g.pfns = std::move(pfns);
  return g;
}

TEST(GpadlTableTest, AddFindRemove) {
  GpadlTable t;
  ASSERT_TRUE(t.Add(Make(1, 7, {10, 11, 20}), {}, kPages).ok());
  ASSERT_NE(t.Find(1), nullptr);
  EXPECT_EQ(t.Find(1)->relid, 7u);
  EXPECT_EQ(t.page_count(), 3u);
  EXPECT_EQ(t.Find(2), nullptr);
  t.Find(1)->used_by = 7;
  EXPECT_EQ(t.Remove(1).code(), absl::StatusCode::kFailedPrecondition);
  t.Find(1)->used_by = 0;
  EXPECT_TRUE(t.Remove(1).ok());
  EXPECT_EQ(t.Remove(1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(t.page_count(), 0u);
}

TEST(GpadlTableTest, RejectsBadGpadlsAndLeavesTheTableUnchanged) {
  GpadlTable t;
  ASSERT_TRUE(t.Add(Make(1, 7, {10, 11}), {}, kPages).ok());
  EXPECT_EQ(t.Add(Make(0, 7, {30}), {}, kPages).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Add(Make(1, 7, {30}), {}, kPages).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(t.Add(Make(2, 7, {}), {}, kPages).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Add(Make(2, 7, {30, 64}), {}, kPages).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(t.Add(Make(2, 7, {30, 4}), {}, kPages).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(t.Add(Make(2, 7, {30, 30}), {}, kPages).code(), absl::StatusCode::kInvalidArgument);
  absl::Status overlap = t.Add(Make(2, 8, {30, 11}), {}, kPages);
  EXPECT_EQ(overlap.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(overlap.message().find("GPADL 0x1"), std::string::npos) << overlap;
  Gpadl range = Make(2, 7, {30, 31});
  range.byte_count = protocol::kPageSize;  // covers only the first of two pages
  EXPECT_EQ(t.Add(range, {}, kPages).code(), absl::StatusCode::kInvalidArgument);
  range.byte_offset = 100;
  range.byte_count = 2 * protocol::kPageSize - 100;  // offset + count = exactly two pages: fine
  EXPECT_TRUE(t.Add(range, {}, kPages).ok());
  Gpadl offset = Make(3, 7, {40});
  offset.byte_offset = protocol::kPageSize;
  EXPECT_EQ(t.Add(offset, {}, kPages).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.page_count(), 4u);
}

// One GPADL holds at most 8190 pages (docs/protocol.md §6): at the limit it is recorded, one
// page more is refused naming both numbers, and the table is unchanged.
TEST(GpadlTableTest, HoldsAtMostTheLargestGpadlAHostCanReceive) {
  constexpr uint64_t kBig = 2 * protocol::kMaxGpadlPages + 64;
  auto pages_from = [](uint64_t first, size_t count) {
    std::vector<uint64_t> pfns(count);
    for (size_t i = 0; i < count; ++i) pfns[i] = first + i;
    return pfns;
  };
  GpadlTable t;
  absl::Status over = t.Add(Make(1, 7, pages_from(10, protocol::kMaxGpadlPages + 1)), {}, kBig);
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.message(),
            "GPADL 0x1 lists 8191 pages, more than the 8190 one GPADL holds (its range length is "
            "16 bits)");
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.page_count(), 0u);
  ASSERT_TRUE(t.Add(Make(1, 7, pages_from(10, protocol::kMaxGpadlPages)), {}, kBig).ok());
  EXPECT_EQ(t.page_count(), protocol::kMaxGpadlPages);
}

TEST(GpadlTableTest, RemoveForRelidAndClear) {
  GpadlTable t;
  ASSERT_TRUE(t.Add(Make(1, 7, {10}), {}, kPages).ok());
  ASSERT_TRUE(t.Add(Make(2, 8, {11}), {}, kPages).ok());
  ASSERT_TRUE(t.Add(Make(3, 7, {12}), {}, kPages).ok());
  t.Find(3)->used_by = 7;
  EXPECT_EQ(t.RemoveForRelid(7), 2u);
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(t.Add(Make(4, 9, {10, 12}), {}, kPages).ok());  // pages freed
  t.Clear();
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.page_count(), 0u);
}

}  // namespace
}  // namespace vbus::mock
