#include "core/data/channel_table.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "core/runtime/sync.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

class RecordingTarget : public EventTarget {
 public:
  bool OnEvent(uint32_t relid) override {
    events.push_back(relid);
    return false;
  }
  std::vector<uint32_t> events;
};

// Every test runs with both forms of the hazard handshake (channel_table.h, step 6).
class ChannelTableTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    absl::StatusOr<EventPage> page = EventPage::Attach(absl::MakeSpan(memory_));
    ASSERT_TRUE(page.ok());
    page_.emplace(*page);
  }
  absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

  alignas(8) uint8_t memory_[EventPage::kBytes] = {};
  std::optional<EventPage> page_;
  ChannelTable table_{/*use_process_barrier=*/GetParam()};
};

INSTANTIATE_TEST_SUITE_P(Handshakes, ChannelTableTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "ProcessBarrier" : "SeqCstStores";
                         });

TEST_P(ChannelTableTest, PublishDispatchRetire) {
  absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table_.RegisterDispatcher();
  ASSERT_TRUE(dispatcher.ok());
  RecordingTarget a, b;
  ASSERT_TRUE(table_.Publish(7, &a).ok());
  ASSERT_TRUE(table_.Publish(2047, &b).ok());
  EXPECT_EQ(table_.Lookup(7), &a);
  ASSERT_TRUE(page_->Set(7).ok());
  ASSERT_TRUE(page_->Set(2047).ok());
  ASSERT_TRUE(page_->Set(9).ok());  // nobody there: spurious
  DispatchStats stats = dispatcher->Dispatch(*page_);
  EXPECT_EQ(stats.delivered, 2u);
  EXPECT_EQ(stats.spurious, 1u);
  EXPECT_EQ(a.events, std::vector<uint32_t>{7});
  EXPECT_EQ(b.events, std::vector<uint32_t>{2047});
  EXPECT_EQ(table_.spurious_events(), 1u);
  EXPECT_EQ(dispatcher->delivered(), 2u);
  EXPECT_EQ(dispatcher->spurious(), 1u);

  ASSERT_TRUE(table_.Unpublish(7, &a).ok());
  EXPECT_FALSE(table_.InUse(7));
  EXPECT_EQ(table_.Lookup(7), nullptr);
  // A late signal for the retired relid is spurious, not delivered.
  ASSERT_TRUE(page_->Set(7).ok());
  stats = dispatcher->Dispatch(*page_);
  EXPECT_EQ(stats.delivered, 0u);
  EXPECT_EQ(stats.spurious, 1u);
  EXPECT_EQ(a.events.size(), 1u);
  EXPECT_FALSE(page_->IsSet(7));  // cleared: no spinning on it
  ASSERT_TRUE(table_.Unpublish(2047, &b).ok());
}

TEST_P(ChannelTableTest, PublishValidatesArguments) {
  RecordingTarget a, b;
  EXPECT_EQ(table_.Publish(0, &a).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_.Publish(2048, &a).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_.Publish(5, nullptr).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(table_.Publish(5, &a).ok());
  absl::Status again = table_.Publish(5, &b);
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(table_.Lookup(5), &a);  // unchanged
  EXPECT_EQ(table_.Lookup(0), nullptr);
  EXPECT_EQ(table_.Lookup(99999), nullptr);
  ASSERT_TRUE(table_.Unpublish(5, &a).ok());
}

TEST_P(ChannelTableTest, UnpublishValidatesArgumentsAndClearsOnlyTheExpectedTarget) {
  RecordingTarget a, b;
  EXPECT_EQ(table_.Unpublish(0, &a).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_.Unpublish(4096, &a).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_.Unpublish(3, &a).code(), absl::StatusCode::kNotFound);
  // The slot holds another channel (e.g. the relid was reused): it is left alone.
  ASSERT_TRUE(table_.Publish(3, &b).ok());
  EXPECT_EQ(table_.Unpublish(3, &a).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table_.Lookup(3), &b);
  ASSERT_TRUE(table_.Unpublish(3, &b).ok());
}

TEST_P(ChannelTableTest, RelidCanBeRepublishedAfterRetire) {
  absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table_.RegisterDispatcher();
  ASSERT_TRUE(dispatcher.ok());
  RecordingTarget a, b;
  ASSERT_TRUE(table_.Publish(12, &a).ok());
  ASSERT_TRUE(table_.Unpublish(12, &a).ok());
  ASSERT_TRUE(table_.Publish(12, &b).ok());
  ASSERT_TRUE(page_->Set(12).ok());
  dispatcher->Dispatch(*page_);
  EXPECT_TRUE(a.events.empty());
  EXPECT_EQ(b.events, std::vector<uint32_t>{12});
  ASSERT_TRUE(table_.Unpublish(12, &b).ok());
}

TEST_P(ChannelTableTest, DispatchRelidDeliversOrCountsSpurious) {
  absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table_.RegisterDispatcher();
  ASSERT_TRUE(dispatcher.ok());
  RecordingTarget a;
  ASSERT_TRUE(table_.Publish(3, &a).ok());
  EXPECT_EQ(dispatcher->DispatchRelid(3).delivered, 1u);
  EXPECT_EQ(dispatcher->DispatchRelid(4).spurious, 1u);
  EXPECT_EQ(dispatcher->DispatchRelid(0).spurious, 1u);
  EXPECT_EQ(dispatcher->DispatchRelid(5000).spurious, 1u);
  EXPECT_EQ(a.events, std::vector<uint32_t>{3});
  EXPECT_EQ(table_.spurious_events(), 3u);
  ASSERT_TRUE(table_.Unpublish(3, &a).ok());
}

TEST_P(ChannelTableTest, DispatcherSlotsAreBoundedAndReused) {
  std::vector<ChannelTable::Dispatcher> dispatchers;
  for (size_t i = 0; i < ChannelTable::kMaxDispatchers; ++i) {
    absl::StatusOr<ChannelTable::Dispatcher> d = table_.RegisterDispatcher();
    ASSERT_TRUE(d.ok()) << i;
    dispatchers.push_back(std::move(*d));
  }
  EXPECT_EQ(table_.RegisterDispatcher().status().code(), absl::StatusCode::kResourceExhausted);
  dispatchers.pop_back();  // unregisters
  absl::StatusOr<ChannelTable::Dispatcher> d = table_.RegisterDispatcher();
  EXPECT_TRUE(d.ok());
  // Moved-from handles do not unregister twice.
  ChannelTable::Dispatcher moved = std::move(*d);
  EXPECT_EQ(table_.RegisterDispatcher().status().code(), absl::StatusCode::kResourceExhausted);
}

// A target whose OnEvent blocks until released, to hold a dispatcher inside a delivery.
class BlockingTarget : public EventTarget {
 public:
  bool OnEvent(uint32_t) override {
    entered.Notify();
    release.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(60));
    finished.store(true);
    return false;
  }
  Notification entered, release;
  std::atomic<bool> finished{false};
};

TEST_P(ChannelTableTest, InUseUntilTheDeliveryInProgressEnds) {
  BlockingTarget target;
  ASSERT_TRUE(table_.Publish(42, &target).ok());
  ASSERT_TRUE(page_->Set(42).ok());
  std::thread dispatcher_thread([&] {
    absl::StatusOr<ChannelTable::Dispatcher> d = table_.RegisterDispatcher();
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->Dispatch(*page_).delivered, 1u);
  });
  target.entered.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(60));
  // Unpublishing never waits; the delivery in progress keeps the relid in use.
  ASSERT_TRUE(table_.Unpublish(42, &target).ok());
  EXPECT_EQ(table_.Lookup(42), nullptr);
  EXPECT_TRUE(table_.InUse(42));
  const absl::Status stuck = table_.WaitUntilUnused(42, absl::Now() + absl::Milliseconds(20));
  EXPECT_EQ(stuck.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(std::string(stuck.message()).find("delivering relid 42"), std::string::npos) << stuck;
  EXPECT_EQ(table_.WaitForQuiescence(absl::Now() + absl::Milliseconds(5)).code(),
            absl::StatusCode::kDeadlineExceeded);
  // Released: unused, and only after OnEvent finished.
  std::thread releaser([&] { target.release.Notify(); });
  ASSERT_TRUE(table_.WaitUntilUnused(42, Soon()).ok());
  EXPECT_TRUE(target.finished.load());
  EXPECT_FALSE(table_.InUse(42));
  EXPECT_TRUE(table_.WaitForQuiescence(Soon()).ok());
  releaser.join();
  dispatcher_thread.join();
}

TEST_P(ChannelTableTest, ASlowDeliveryHoldsUpOnlyItsOwnRelid) {
  BlockingTarget slow;
  RecordingTarget other;
  ASSERT_TRUE(table_.Publish(42, &slow).ok());
  ASSERT_TRUE(table_.Publish(43, &other).ok());
  ASSERT_TRUE(page_->Set(42).ok());
  std::thread dispatcher_thread([&] {
    absl::StatusOr<ChannelTable::Dispatcher> d = table_.RegisterDispatcher();
    ASSERT_TRUE(d.ok());
    d->Dispatch(*page_);
  });
  slow.entered.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(60));
  ASSERT_TRUE(table_.Unpublish(43, &other).ok());
  EXPECT_FALSE(table_.InUse(43));  // relid 42's delivery does not hold relid 43
  EXPECT_TRUE(table_.WaitUntilUnused(43, absl::InfinitePast()).ok());
  slow.release.Notify();
  dispatcher_thread.join();
  ASSERT_TRUE(table_.Unpublish(42, &slow).ok());
}

// An OnEvent that dispatches again on its own dispatcher (a nested scan would overwrite the
// announcement of the delivery still on its stack).
class NestingTarget : public EventTarget {
 public:
  bool OnEvent(uint32_t) override {
    alignas(8) static uint8_t bits[EventPage::kBytes] = {};
    EventPage other = *EventPage::Attach(absl::MakeSpan(bits));
    other.Set(43).IgnoreError();
    nested = (*dispatcher)->Dispatch(other);
    still_set = other.IsSet(43);
    entered.Notify();
    release.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(60));
    return false;
  }
  absl::StatusOr<ChannelTable::Dispatcher>* dispatcher = nullptr;
  DispatchStats nested;
  bool still_set = false;
  Notification entered, release;
};

// Regression: a nested dispatch on the same dispatcher made the outer delivery look finished,
// so the outer channel's retire returned while its OnEvent still ran.
TEST_P(ChannelTableTest, ANestedDispatchIsRefusedAndTheOuterDeliveryStaysVisible) {
  NestingTarget outer;
  RecordingTarget inner;
  ASSERT_TRUE(table_.Publish(42, &outer).ok());
  ASSERT_TRUE(table_.Publish(43, &inner).ok());
  ASSERT_TRUE(page_->Set(42).ok());
  absl::StatusOr<ChannelTable::Dispatcher> d = table_.RegisterDispatcher();
  ASSERT_TRUE(d.ok());
  outer.dispatcher = &d;
  std::thread t([&] { d->Dispatch(*page_); });
  outer.entered.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(60));
  EXPECT_TRUE(outer.nested.refused_nested);
  EXPECT_EQ(outer.nested.delivered, 0u);
  EXPECT_TRUE(outer.still_set);  // left for a later pass
  EXPECT_TRUE(inner.events.empty());
  ASSERT_TRUE(table_.Unpublish(42, &outer).ok());
  EXPECT_TRUE(table_.InUse(42));
  EXPECT_EQ(table_.WaitUntilUnused(42, absl::Now() + absl::Milliseconds(20)).code(),
            absl::StatusCode::kDeadlineExceeded);
  outer.release.Notify();
  t.join();
  EXPECT_FALSE(table_.InUse(42));
  ASSERT_TRUE(table_.Unpublish(43, &inner).ok());
}

// A target that asks for another delivery until it has been delivered `rounds` times.
class BudgetTarget : public EventTarget {
 public:
  explicit BudgetTarget(int rounds) : rounds_left(rounds) {}
  bool OnEvent(uint32_t relid) override {
    order->push_back(relid);
    return --rounds_left > 0;
  }
  int rounds_left;
  std::vector<uint32_t>* order = nullptr;
};

TEST_P(ChannelTableTest, ATargetThatAsksAgainIsServedAfterTheOthers) {
  absl::StatusOr<ChannelTable::Dispatcher> d = table_.RegisterDispatcher();
  ASSERT_TRUE(d.ok());
  std::vector<uint32_t> order;
  BudgetTarget busy(3), quiet(1);
  busy.order = &order;
  quiet.order = &order;
  ASSERT_TRUE(table_.Publish(5, &busy).ok());
  ASSERT_TRUE(table_.Publish(200, &quiet).ok());
  ASSERT_TRUE(page_->Set(5).ok());
  ASSERT_TRUE(page_->Set(200).ok());
  DispatchStats first = d->Dispatch(*page_);
  EXPECT_EQ(first.delivered, 2u);
  EXPECT_EQ(first.requeued, 1u);
  EXPECT_TRUE(page_->IsSet(5));  // set again for the next pass
  d->Dispatch(*page_);
  d->Dispatch(*page_);
  EXPECT_EQ(order, (std::vector<uint32_t>{5, 200, 5, 5}));
  EXPECT_FALSE(page_->IsSet(5));
  EXPECT_EQ(d->DispatchRelid(200).requeued, 0u);
  ASSERT_TRUE(table_.Unpublish(5, &busy).ok());
  ASSERT_TRUE(table_.Unpublish(200, &quiet).ok());
}

class WaitingTarget : public EventTarget {
 public:
  explicit WaitingTarget(ChannelTable* table) : table_(table) {}
  bool OnEvent(uint32_t relid) override {
    unpublished = table_->Unpublish(relid, this);
    waited = table_->WaitUntilUnused(relid, absl::Now() + absl::Seconds(10));
    quiescence = table_->WaitForQuiescence(absl::Now() + absl::Seconds(10));
    return false;
  }
  ChannelTable* table_;
  absl::Status unpublished, waited, quiescence;
};

TEST_P(ChannelTableTest, WaitingFromInsideOnEventFailsFastButUnpublishWorks) {
  absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table_.RegisterDispatcher();
  ASSERT_TRUE(dispatcher.ok());
  WaitingTarget target(&table_);
  ASSERT_TRUE(table_.Publish(6, &target).ok());
  ASSERT_TRUE(page_->Set(6).ok());
  dispatcher->Dispatch(*page_);
  EXPECT_TRUE(target.unpublished.ok());
  EXPECT_EQ(target.waited.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(target.quiescence.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table_.Lookup(6), nullptr);
  EXPECT_FALSE(table_.InUse(6));
}

}  // namespace
}  // namespace vbus
