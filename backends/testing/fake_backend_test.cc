#include "backends/testing/fake_backend.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "core/runtime/sync.h"
#include "gtest/gtest.h"

namespace vbus::testing {
namespace {

v1::ControlMessage Rescind(uint32_t relid) {
  v1::ControlMessage m;
  m.mutable_rescind_offer()->set_child_relid(relid);
  return m;
}

// Records deliveries; optionally runs a hook inside OnHostMessage.
class Recorder : public BackendListener {
 public:
  void OnHostMessage(const v1::ControlMessage& m) override {
    relids.push_back(m.rescind_offer().child_relid());
    if (hook) hook(m);
  }
  void OnEventsPending(uint32_t vp) override {
    events.fetch_add(1);
    last_vp.store(vp);
  }
  void OnHostLost(const absl::Status& s) override { lost.push_back(s); }

  std::vector<uint32_t> relids;
  std::atomic<int> events{0};
  std::atomic<uint32_t> last_vp{0};
  std::vector<absl::Status> lost;
  std::function<void(const v1::ControlMessage&)> hook;
};

TEST(FakeBackendTest, RecordsPostsSignalsAndConnection) {
  FakeBackend backend;
  Recorder r;
  v1::ControlMessage m;
  m.mutable_request_offers();
  EXPECT_EQ(backend.PostMessage(m).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend.Start(&r).ok());
  EXPECT_EQ(backend.Start(&r).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend.PostMessage(m).ok());
  EXPECT_EQ(backend.PostMessage(v1::ControlMessage()).code(), absl::StatusCode::kInvalidArgument);
  backend.FailNextPost(absl::NotFoundError("connection rejected"));
  EXPECT_EQ(backend.PostMessage(m).code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(backend.TakePosted().size(), 1u);
  EXPECT_TRUE(backend.TakePosted().empty());
  ASSERT_TRUE(backend.SignalHost(ChannelSignal{7, 0x10007}).ok());
  EXPECT_EQ(backend.SignalHost(ChannelSignal{0}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend.SignalHost(ChannelSignal{2048}).code(), absl::StatusCode::kInvalidArgument);
  std::vector<ChannelSignal> signals = backend.TakeSignals();
  ASSERT_EQ(signals.size(), 1u);
  EXPECT_EQ(signals[0].connection_id, 0x10007u);
  backend.SetConnection(NegotiatedConnection{0x00050003, 4});
  EXPECT_EQ(backend.connection()->message_connection_id, 4u);
}

TEST(FakeBackendTest, PauseHoldsMessagesInOrderAndResumeDeliversThem) {
  FakeBackend backend;
  Recorder r;
  ASSERT_TRUE(backend.Start(&r).ok());
  ASSERT_TRUE(backend.DeliverToGuest(Rescind(1)).ok());
  backend.PauseDelivery();
  ASSERT_TRUE(backend.DeliverToGuest(Rescind(2)).ok());
  ASSERT_TRUE(backend.DeliverToGuest(Rescind(3)).ok());
  EXPECT_EQ(r.relids, std::vector<uint32_t>({1}));
  EXPECT_EQ(backend.queued_messages(), 2u);
  backend.ResumeDelivery();
  EXPECT_EQ(r.relids, std::vector<uint32_t>({1, 2, 3}));
}

TEST(FakeBackendTest, PauseFromInsideADeliveryTakesEffectAfterIt) {
  FakeBackend backend;
  Recorder r;
  ASSERT_TRUE(backend.Start(&r).ok());
  r.hook = [&](const v1::ControlMessage& m) {
    if (m.rescind_offer().child_relid() == 1) {
      backend.PauseDelivery();                               // must not deadlock
      ASSERT_TRUE(backend.DeliverToGuest(Rescind(2)).ok());  // queued, not re-entered
    }
  };
  ASSERT_TRUE(backend.DeliverToGuest(Rescind(1)).ok());
  EXPECT_EQ(r.relids, std::vector<uint32_t>({1}));
  EXPECT_TRUE(backend.paused());
  backend.ResumeDelivery();
  EXPECT_EQ(r.relids, std::vector<uint32_t>({1, 2}));
}

TEST(FakeBackendTest, PauseFromAnotherThreadWaitsForTheDeliveryInProgress) {
  FakeBackend backend;
  Recorder r;
  ASSERT_TRUE(backend.Start(&r).ok());
  Notification inside, release;
  std::atomic<bool> delivery_done{false};
  r.hook = [&](const v1::ControlMessage&) {
    inside.Notify();
    ASSERT_TRUE(release.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(10)));
    delivery_done.store(true);
  };
  std::thread deliverer([&] { ASSERT_TRUE(backend.DeliverToGuest(Rescind(1)).ok()); });
  ASSERT_TRUE(inside.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(10)));
  std::thread pauser([&] {
    backend.PauseDelivery();
    EXPECT_TRUE(delivery_done.load());  // Pause returned only after the delivery finished
  });
  release.Notify();
  pauser.join();
  deliverer.join();
  EXPECT_TRUE(backend.paused());
}

TEST(FakeBackendTest, EventsSetTheFlagAndRaiseOnEventsPending) {
  FakeBackend backend;
  Recorder r;
  EXPECT_EQ(backend.RaiseEvent(5).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend.Start(&r).ok());
  ASSERT_TRUE(backend.RaiseEvent(5).ok());
  ASSERT_TRUE(backend.RaiseEvent(2047).ok());
  EXPECT_EQ(backend.RaiseEvent(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.events.load(), 2);
  absl::Span<uint8_t> flags = backend.ReceiveEventFlags(0);
  ASSERT_EQ(flags.size(), kEventFlagBytes);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(flags.data()) % 8, 0u);
  EXPECT_EQ(flags[0], 1u << 5);
  EXPECT_EQ(flags[255], 0x80u);
}

TEST(FakeBackendTest, LosingTheHostEndsPostsAndDeliveries) {
  FakeBackend backend;
  Recorder r;
  ASSERT_TRUE(backend.Start(&r).ok());
  backend.LoseHost(absl::UnavailableError("gone"));
  backend.LoseHost(absl::UnavailableError("twice"));
  ASSERT_EQ(r.lost.size(), 1u);
  EXPECT_EQ(r.lost[0].message(), "gone");
  v1::ControlMessage m;
  m.mutable_unload();
  EXPECT_EQ(backend.PostMessage(m).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(backend.DeliverToGuest(Rescind(1)).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(FakeBackendTest, PagesComeFromThePoolWithPfns) {
  FakeBackend backend(8);
  absl::StatusOr<Pages> p = backend.AllocatePages(3, PageSharing::kDefault);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->pfns()[0], FakeBackend::kFirstDataPfn);
  EXPECT_EQ(backend.pool().free_pages(), 5u);
  EXPECT_EQ(backend.AllocatePages(6, PageSharing::kHostVisible).status().code(),
            absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace vbus::testing
