#include "mock/host/relid_allocator.h"

#include "core/data/protocol.h"
#include "gtest/gtest.h"

namespace vbus::mock {
namespace {

TEST(RelidAllocatorTest, LowestFreeFirst) {
  RelidAllocator a;
  EXPECT_EQ(*a.Allocate(), 1u);
  EXPECT_EQ(*a.Allocate(), 2u);
  EXPECT_EQ(*a.Allocate(), 3u);
  ASSERT_TRUE(a.Release(2).ok());
  EXPECT_FALSE(a.IsTaken(2));
  EXPECT_EQ(*a.Allocate(), 2u);
  EXPECT_EQ(*a.Allocate({4, 5}), 6u);
  EXPECT_EQ(a.taken_count(), 4u);
}

TEST(RelidAllocatorTest, ExhaustionAndErrors) {
  RelidAllocator a;
  for (uint32_t i = protocol::kMinRelid; i <= protocol::kMaxRelid; ++i) ASSERT_EQ(*a.Allocate(), i);
  EXPECT_EQ(a.Allocate().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(a.Release(protocol::kMaxRelid).ok());
  EXPECT_EQ(a.Allocate({protocol::kMaxRelid}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*a.Allocate(), protocol::kMaxRelid);
  EXPECT_EQ(a.Release(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Release(protocol::kRelidCount).code(), absl::StatusCode::kInvalidArgument);
  RelidAllocator b;
  EXPECT_EQ(b.Release(5).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(b.IsTaken(0));
  EXPECT_FALSE(b.IsTaken(5000));
}

}  // namespace
}  // namespace vbus::mock
