#include "mock/host/gpadl_table.h"

#include <string>

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
