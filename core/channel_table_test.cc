#include "core/channel_table.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

class RecordingTarget : public EventTarget {
 public:
  void OnEvent(uint32_t relid) override { events.push_back(relid); }
  std::vector<uint32_t> events;
};

class ChannelTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<EventPage> page = EventPage::Attach(absl::MakeSpan(memory_));
    ASSERT_TRUE(page.ok());
    page_.emplace(*page);
  }
  absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

  alignas(8) uint8_t memory_[EventPage::kBytes] = {};
  std::optional<EventPage> page_;
  ChannelTable table_;
};

TEST_F(ChannelTableTest, PublishDispatchRetire) {
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

  absl::StatusOr<EventTarget*> retired = table_.Retire(7, Soon());
  ASSERT_TRUE(retired.ok()) << retired.status();
  EXPECT_EQ(*retired, &a);
  EXPECT_EQ(table_.Lookup(7), nullptr);
  // A late signal for the retired relid is spurious, not delivered.
  ASSERT_TRUE(page_->Set(7).ok());
  stats = dispatcher->Dispatch(*page_);
  EXPECT_EQ(stats.delivered, 0u);
  EXPECT_EQ(stats.spurious, 1u);
  EXPECT_EQ(a.events.size(), 1u);
  EXPECT_FALSE(page_->IsSet(7));  // cleared: no spinning on it
  ASSERT_TRUE(table_.Retire(2047, Soon()).ok());
}

TEST_F(ChannelTableTest, PublishValidatesArguments) {
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
  ASSERT_TRUE(table_.Retire(5, Soon()).ok());
}

TEST_F(ChannelTableTest, RetireValidatesArguments) {
  EXPECT_EQ(table_.Retire(0, Soon()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_.Retire(4096, Soon()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_.Retire(3, Soon()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ChannelTableTest, RelidCanBeRepublishedAfterRetire) {
  absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table_.RegisterDispatcher();
  ASSERT_TRUE(dispatcher.ok());
  RecordingTarget a, b;
  ASSERT_TRUE(table_.Publish(12, &a).ok());
  ASSERT_TRUE(table_.Retire(12, Soon()).ok());
  ASSERT_TRUE(table_.Publish(12, &b).ok());
  ASSERT_TRUE(page_->Set(12).ok());
  dispatcher->Dispatch(*page_);
  EXPECT_TRUE(a.events.empty());
  EXPECT_EQ(b.events, std::vector<uint32_t>{12});
  ASSERT_TRUE(table_.Retire(12, Soon()).ok());
}

TEST_F(ChannelTableTest, DispatchRelidDeliversOrCountsSpurious) {
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
  ASSERT_TRUE(table_.Retire(3, Soon()).ok());
}

TEST_F(ChannelTableTest, DispatcherSlotsAreBoundedAndReused) {
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

// A target whose OnEvent blocks until released, to hold a dispatcher inside its section.
class BlockingTarget : public EventTarget {
 public:
  void OnEvent(uint32_t) override {
    entered.Notify();
    release.WaitForNotification();
    finished.store(true);
  }
  absl::Notification entered, release;
  std::atomic<bool> finished{false};
};

TEST_F(ChannelTableTest, RetireWaitsForADispatcherInsideItsSection) {
  BlockingTarget target;
  ASSERT_TRUE(table_.Publish(42, &target).ok());
  ASSERT_TRUE(page_->Set(42).ok());
  std::thread dispatcher_thread([&] {
    absl::StatusOr<ChannelTable::Dispatcher> d = table_.RegisterDispatcher();
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->Dispatch(*page_).delivered, 1u);
  });
  target.entered.WaitForNotification();
  // The dispatcher is inside OnEvent and cannot leave: Retire must not return OK.
  absl::StatusOr<EventTarget*> r = table_.Retire(42, absl::Now() + absl::Milliseconds(20));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(table_.Lookup(42), nullptr);  // cleared anyway
  EXPECT_EQ(table_.WaitForQuiescence(absl::Now() + absl::Milliseconds(5)).code(),
            absl::StatusCode::kDeadlineExceeded);
  // Released, the grace period ends, and only after OnEvent finished.
  std::thread releaser([&] { target.release.Notify(); });
  ASSERT_TRUE(table_.WaitForQuiescence(Soon()).ok());
  EXPECT_TRUE(target.finished.load());
  releaser.join();
  dispatcher_thread.join();
}

TEST_F(ChannelTableTest, IdleDispatchersDoNotDelayRetire) {
  absl::StatusOr<ChannelTable::Dispatcher> idle = table_.RegisterDispatcher();
  ASSERT_TRUE(idle.ok());
  RecordingTarget a;
  ASSERT_TRUE(table_.Publish(8, &a).ok());
  ASSERT_TRUE(page_->Set(8).ok());
  idle->Dispatch(*page_);  // leaves its section: counter even
  // A deadline already in the past still succeeds: nobody is inside a section.
  EXPECT_TRUE(table_.Retire(8, absl::InfinitePast()).ok());
}

class RetiringTarget : public EventTarget {
 public:
  explicit RetiringTarget(ChannelTable* table) : table_(table) {}
  void OnEvent(uint32_t relid) override {
    result = table_->Retire(relid, absl::Now() + absl::Seconds(10)).status();
    quiescence = table_->WaitForQuiescence(absl::Now() + absl::Seconds(10));
  }
  ChannelTable* table_;
  absl::Status result, quiescence;
};

TEST_F(ChannelTableTest, RetireFromInsideOnEventFailsFast) {
  absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table_.RegisterDispatcher();
  ASSERT_TRUE(dispatcher.ok());
  RetiringTarget target(&table_);
  ASSERT_TRUE(table_.Publish(6, &target).ok());
  ASSERT_TRUE(page_->Set(6).ok());
  dispatcher->Dispatch(*page_);
  EXPECT_EQ(target.result.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(target.quiescence.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table_.Lookup(6), &target);
  // Outside the section it works.
  ASSERT_TRUE(table_.Retire(6, Soon()).ok());
}

}  // namespace
}  // namespace vbus
