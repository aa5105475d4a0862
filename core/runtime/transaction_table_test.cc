#include "core/runtime/transaction_table.h"

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace vbus {
namespace {

using Outcome = TransactionTable::Outcome;

TEST(TransactionTableTest, IdsAreSlotPlusOneWithAGeneration) {
  TransactionTable table(4);
  absl::StatusOr<uint64_t> a = table.Allocate([](const Completion&) {});
  absl::StatusOr<uint64_t> b = table.Allocate([](const Completion&) {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(static_cast<uint32_t>(*a), 1u);  // slot 0 → low half 1
  EXPECT_EQ(static_cast<uint32_t>(*b), 2u);
  EXPECT_EQ(TransactionTable::GenerationOf(*a), 1u);
  EXPECT_NE(*a, 0u);
  EXPECT_EQ(table.outstanding(), 2u);
}

TEST(TransactionTableTest, TakeMatchesOnceAndFreesTheSlot) {
  TransactionTable table(2);
  int calls = 0;
  absl::StatusOr<uint64_t> id = table.Allocate([&](const Completion&) { ++calls; });
  ASSERT_TRUE(id.ok());
  TransactionTable::Match m = table.Take(*id);
  ASSERT_EQ(m.outcome, Outcome::kMatched);
  m.callback(Completion{});
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(table.outstanding(), 0u);
  // The same id again is stale: the slot is free.
  EXPECT_EQ(table.Take(*id).outcome, Outcome::kStale);
}

TEST(TransactionTableTest, ReusedSlotRejectsTheOldGeneration) {
  TransactionTable table(1);
  absl::StatusOr<uint64_t> first = table.Allocate([](const Completion&) {});
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(table.Take(*first).outcome, Outcome::kMatched);
  absl::StatusOr<uint64_t> second = table.Allocate([](const Completion&) {});
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(TransactionTable::SlotOf(*first), TransactionTable::SlotOf(*second));
  EXPECT_NE(*first, *second);
  // A late completion of the first request must not complete the second.
  EXPECT_EQ(table.Take(*first).outcome, Outcome::kStale);
  EXPECT_EQ(table.outstanding(), 1u);
  EXPECT_EQ(table.Take(*second).outcome, Outcome::kMatched);
}

TEST(TransactionTableTest, UnknownIds) {
  TransactionTable table(3);
  EXPECT_EQ(table.Take(0).outcome, Outcome::kUnknown);
  EXPECT_EQ(table.Take(4).outcome, Outcome::kUnknown);                        // slot 3
  EXPECT_EQ(table.Take((uint64_t{7} << 32) | 0).outcome, Outcome::kUnknown);  // low half 0
  EXPECT_EQ(table.Take(~uint64_t{0}).outcome, Outcome::kUnknown);
  // In range but never handed out: stale.
  EXPECT_EQ(table.Take(2).outcome, Outcome::kStale);
}

TEST(TransactionTableTest, FullTableIsResourceExhausted) {
  TransactionTable table(2);
  ASSERT_TRUE(table.Allocate([](const Completion&) {}).ok());
  ASSERT_TRUE(table.Allocate([](const Completion&) {}).ok());
  absl::StatusOr<uint64_t> third = table.Allocate([](const Completion&) {});
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(TransactionTableTest, CancelWithdrawsWithoutCalling) {
  TransactionTable table(2);
  bool called = false;
  absl::StatusOr<uint64_t> id = table.Allocate([&](const Completion&) { called = true; });
  ASSERT_TRUE(id.ok());
  EXPECT_NE(table.Cancel(*id), nullptr);
  EXPECT_EQ(table.Cancel(*id), nullptr);  // already gone
  EXPECT_EQ(table.Take(*id).outcome, Outcome::kStale);
  EXPECT_FALSE(called);
  EXPECT_EQ(table.outstanding(), 0u);
}

TEST(TransactionTableTest, TakeAllReturnsEveryOutstandingInSlotOrder) {
  TransactionTable table(4);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(*table.Allocate([](const Completion&) {}));
  ASSERT_EQ(table.Take(ids[1]).outcome, Outcome::kMatched);
  std::vector<std::pair<uint64_t, CompletionCallback>> all = table.TakeAll();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, ids[0]);
  EXPECT_EQ(all[1].first, ids[2]);
  EXPECT_EQ(table.outstanding(), 0u);
}

TEST(TransactionTableTest, GrowsToItsCapacityAndNoFurther) {
  TransactionTable table(100);
  std::set<uint32_t> slots;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<uint64_t> id = table.Allocate([](const Completion&) {});
    ASSERT_TRUE(id.ok()) << i;
    slots.insert(TransactionTable::SlotOf(*id));
  }
  EXPECT_EQ(slots.size(), 100u);
  EXPECT_EQ(*slots.begin(), 0u);
  EXPECT_EQ(*slots.rbegin(), 99u);
  EXPECT_EQ(table.Allocate([](const Completion&) {}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(table.outstanding(), 100u);
  // Beyond the capacity is unknown; a slot a small table has not grown to yet too.
  EXPECT_EQ(table.Take(101).outcome, Outcome::kUnknown);
  TransactionTable small(1000);
  EXPECT_EQ(small.Take(500).outcome, Outcome::kUnknown);
}

TEST(TransactionTableTest, CapacityIsClamped) {
  EXPECT_EQ(TransactionTable(0).capacity(), 1u);
  EXPECT_EQ(TransactionTable(TransactionTable::kMaxCapacity + 5).capacity(),
            TransactionTable::kMaxCapacity);
}

TEST(TransactionTableTest, ConcurrentAllocateAndTakeNeverLoseOrDuplicate) {
  TransactionTable table(64);
  constexpr int kPerThread = 20000;
  std::atomic<int> completed{0};
  auto worker = [&] {
    for (int i = 0; i < kPerThread; ++i) {
      absl::StatusOr<uint64_t> id;
      do {
        id = table.Allocate([&](const Completion&) { completed.fetch_add(1); });
      } while (!id.ok());
      TransactionTable::Match m = table.Take(*id);
      ASSERT_EQ(m.outcome, Outcome::kMatched);
      m.callback(Completion{});
    }
  };
  std::thread a(worker), b(worker);
  a.join();
  b.join();
  EXPECT_EQ(completed.load(), 2 * kPerThread);
  EXPECT_EQ(table.outstanding(), 0u);
}

}  // namespace
}  // namespace vbus
