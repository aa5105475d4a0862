// HostMessageQueue on its own: order, holding before Start and while paused, the pusher that
// finds another thread delivering (it leaves the message to that thread and does not wait),
// pausing and resuming from inside OnHostMessage, and Stop. Threads meet through
// Notifications with deadlines; nothing sleeps.
#include "hyperv/host_message_queue.h"

#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::hyperv {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

v1::ControlMessage Message(uint32_t gpadl) {
  v1::ControlMessage m;
  m.mutable_gpadl_torndown()->set_gpadl(gpadl);
  return m;
}

// Records the gpadl of each message and the thread it came on; runs `hook` inside the call.
class Listener : public BackendListener {
 public:
  std::function<void(uint32_t gpadl)> hook;

  void OnHostMessage(const v1::ControlMessage& message) override {
    const uint32_t gpadl = message.gpadl_torndown().gpadl();
    {
      MutexLock lock(&mu_);
      got_.push_back(gpadl);
      threads_.push_back(std::this_thread::get_id());
    }
    if (hook) hook(gpadl);
  }
  void OnEventsPending(uint32_t) override {}
  void OnHostLost(const absl::Status&) override {}

  std::vector<uint32_t> got() {
    MutexLock lock(&mu_);
    return got_;
  }
  std::vector<std::thread::id> threads() {
    MutexLock lock(&mu_);
    return threads_;
  }

 private:
  Mutex mu_;
  std::vector<uint32_t> got_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread::id> threads_ ABSL_GUARDED_BY(mu_);
};

TEST(HostMessageQueueTest, DeliversInOrderOnThePushingThread) {
  HostMessageQueue queue(nullptr);
  Listener listener;
  queue.Start(&listener);
  for (uint32_t i = 1; i <= 3; ++i) queue.Push(Message(i));
  EXPECT_THAT(listener.got(), ElementsAre(1u, 2u, 3u));
  for (std::thread::id t : listener.threads()) EXPECT_EQ(t, std::this_thread::get_id());
  EXPECT_EQ(queue.delivered(), 3u);
}

TEST(HostMessageQueueTest, HoldsMessagesUntilStartAndWhilePaused) {
  HostMessageQueue queue(nullptr);
  Listener listener;
  queue.Push(Message(1));
  queue.Start(&listener);  // delivers what came before
  queue.Pause();
  queue.Push(Message(2));
  queue.Push(Message(3));
  EXPECT_EQ(queue.held(), 2u);
  EXPECT_THAT(listener.got(), ElementsAre(1u));
  queue.Resume();
  EXPECT_THAT(listener.got(), ElementsAre(1u, 2u, 3u));
  EXPECT_EQ(queue.held(), 0u);
}

TEST(HostMessageQueueTest, APushDuringAnotherThreadsDeliveryIsLeftToThatThread) {
  HostMessageQueue queue(nullptr);
  Listener listener;
  Notification inside;
  Notification release;
  listener.hook = [&](uint32_t gpadl) {
    if (gpadl != 1) return;
    inside.Notify();
    release.WaitForNotificationWithDeadline(Deadline());
  };
  queue.Start(&listener);
  std::thread first([&] { queue.Push(Message(1)); });
  ASSERT_TRUE(inside.WaitForNotificationWithDeadline(Deadline()));
  // Returns at once (an interrupt handler must not wait for a listener call).
  queue.Push(Message(2));
  EXPECT_EQ(queue.held(), 1u);
  release.Notify();
  first.join();
  EXPECT_THAT(listener.got(), ElementsAre(1u, 2u));
  EXPECT_EQ(listener.threads()[1], listener.threads()[0]);  // delivered by `first`
}

TEST(HostMessageQueueTest, PauseAndResumeFromInsideOnHostMessage) {
  HostMessageQueue queue(nullptr);
  Listener listener;
  listener.hook = [&](uint32_t gpadl) {
    if (gpadl == 1) queue.Pause();   // takes effect when this call returns
    if (gpadl == 2) queue.Resume();  // does not recurse into another delivery
  };
  queue.Start(&listener);
  queue.Pause();
  queue.Push(Message(1));
  queue.Push(Message(2));
  queue.Push(Message(3));
  queue.Resume();
  EXPECT_THAT(listener.got(), ElementsAre(1u));
  EXPECT_EQ(queue.held(), 2u);
  queue.Resume();
  EXPECT_THAT(listener.got(), ElementsAre(1u, 2u, 3u));
}

TEST(HostMessageQueueTest, StopDropsWhatIsHeldAndWaitsForTheCallInProgress) {
  Notification stalled;  // Stop reported that it waits for the call in progress
  HostMessageQueue queue([&](absl::string_view) { stalled.Notify(); }, absl::Milliseconds(1));
  Listener listener;
  Notification inside;
  Notification release;
  listener.hook = [&](uint32_t gpadl) {
    if (gpadl != 1) return;
    inside.Notify();
    release.WaitForNotificationWithDeadline(Deadline());
  };
  queue.Start(&listener);
  std::thread first([&] { queue.Push(Message(1)); });
  ASSERT_TRUE(inside.WaitForNotificationWithDeadline(Deadline()));
  queue.Push(Message(2));  // held behind the call in progress
  bool in_call_when_stopped = true;
  std::thread stopper([&] {
    queue.Stop();
    in_call_when_stopped = !release.HasBeenNotified();
  });
  EXPECT_TRUE(stalled.WaitForNotificationWithDeadline(Deadline()));
  release.Notify();
  stopper.join();
  first.join();
  EXPECT_FALSE(in_call_when_stopped);
  EXPECT_THAT(listener.got(), ElementsAre(1u));  // 2 was dropped
  queue.Push(Message(3));
  queue.Resume();
  EXPECT_THAT(listener.got(), ElementsAre(1u));
  EXPECT_EQ(queue.held(), 0u);
}

TEST(HostMessageQueueTest, StopBeforeStartDeliversNothing) {
  HostMessageQueue queue(nullptr);
  Listener listener;
  queue.Push(Message(1));
  queue.Stop();
  queue.Start(&listener);
  EXPECT_THAT(listener.got(), IsEmpty());
}

}  // namespace
}  // namespace vbus::hyperv
