// Runtime robustness over TestHost: receive callbacks that block (a slow callback holds up only
// its own channel, and nothing it uses is torn down under it), calls that give up while the bus
// is busy (what the caller is told is the truth, and nothing is left behind), several senders
// waiting for room on one channel, a failed ring, a busy channel next to quiet ones, silent
// devices next to good ones, events raised while the bus starts, destruction of the bus from its
// own callbacks, and host text in logs. Every wait has a deadline; nothing sleeps.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "core/runtime/channel.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/channel_bus_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

using testing::Deadline;
using ::testing::HasSubstr;
using testing::kInstance1;
using testing::kInstance2;
using testing::kInstance3;
using testing::kTestClass;
using testing::TestHost;

std::vector<uint8_t> Bytes(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

ChannelOpenOptions Rings(uint32_t pages = 4) {
  ChannelOpenOptions o;
  o.outbound_ring_pages = pages;
  o.inbound_ring_pages = pages;
  return o;
}

// A gate a callback waits at until the test opens it (bounded: a forgotten gate times out).
class Gate {
 public:
  void Open() {
    MutexLock lock(&mu_);
    open_ = true;
    cv_.SignalAll();
  }
  // Called by the blocked side: announces arrival, then waits for Open.
  void Pass() {
    MutexLock lock(&mu_);
    ++arrived_;
    cv_.SignalAll();
    cv_.AwaitWithDeadline(&mu_, Deadline(),
                          [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return open_; });
  }
  bool AwaitArrivals(int n) {
    MutexLock lock(&mu_);
    return cv_.AwaitWithDeadline(
        &mu_, Deadline(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return arrived_ >= n; });
  }

 private:
  Mutex mu_;
  CondVar cv_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  int arrived_ ABSL_GUARDED_BY(mu_) = 0;
};

class RobustnessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_.AddOffer(7, kTestClass, kInstance1);
    host_.AddOffer(8, kTestClass, kInstance2);
  }
  void TearDown() override { bus_.reset(); }

  void MakeBus(ChannelBusOptions options = {}) {
    options.log = [this](absl::string_view line) {
      MutexLock lock(&log_mu_);
      logs_.emplace_back(line);
    };
    absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&host_, options);
    ASSERT_TRUE(bus.ok()) << bus.status();
    bus_ = std::move(*bus);
  }
  void ConnectBus(ChannelBusOptions options = {}) {
    MakeBus(std::move(options));
    ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  }
  bool Eventually(const std::function<bool()>& condition) {
    return host_.WaitFor(condition, Deadline());
  }
  // Writes packets to the guest from a thread of its own: TestHost raises the event on the
  // writing thread, so a receive callback that blocks blocks that thread, not the test. Writes
  // after the first may find the channel closed by then (the test closes it meanwhile).
  std::thread WriteFromHost(uint32_t relid, std::vector<std::string> payloads) {
    return std::thread([this, relid, payloads = std::move(payloads)] {
      uint64_t id = 1;
      for (const std::string& p : payloads) {
        host_.WriteToGuest(relid, PacketType::kDataInband, 0, id++, Bytes(p)).IgnoreError();
      }
    });
  }
  std::vector<std::string> Logs() {
    MutexLock lock(&log_mu_);
    return logs_;
  }

  TestHost host_;
  Mutex log_mu_;
  std::vector<std::string> logs_ ABSL_GUARDED_BY(log_mu_);
  std::unique_ptr<ChannelBus> bus_;
};

// ---- Receive callbacks that block ----------------------------------------------------------

// A channel whose receive callback is still running when it is closed keeps its rings and
// callback until that callback returns; the failed reopen in between must not tear them down
// under it, and once it returns the channel works again.
TEST_F(RobustnessTest, ReopenWhileTheLastCallbackStillRunsLeavesItsRingsAlone) {
  ChannelBusOptions options;
  options.retire_timeout = absl::Milliseconds(50);
  ConnectBus(options);
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  Gate gate;
  std::atomic<int> delivered{0};
  ChannelOpenOptions o = Rings();
  o.on_packet = [&](const PacketView&) {
    if (delivered.fetch_add(1) == 0) gate.Pass();
  };
  ASSERT_TRUE(channel->Open(o, Deadline()).ok());
  std::thread writer = WriteFromHost(7, {"first", "second"});
  ASSERT_TRUE(gate.AwaitArrivals(1));
  // The callback is stuck in the first packet. A close cannot finish while it runs.
  absl::Status closed = channel->Close(absl::Now() + absl::Milliseconds(300));
  // Opening again while the old callback still runs is refused or waits; it must not touch the
  // receive side the callback is using.
  absl::Status reopened = channel->Open(o, absl::Now() + absl::Milliseconds(100));
  EXPECT_FALSE(reopened.ok());
  gate.Open();  // the callback returns into the drain loop: its ring and callback must be intact
  writer.join();
  if (!closed.ok()) {
    // The close finishes once the callback returned.
    ASSERT_TRUE(Eventually([&] { return channel->Close(Deadline()).ok(); }));
  }
  ASSERT_TRUE(Eventually([&] { return !host_.IsOpen(7); }));
  // Nothing wedged: the channel opens again and carries packets.
  ASSERT_TRUE(Eventually([&] { return channel->Open(o, Deadline()).ok(); }));
  const int before = delivered.load();
  ASSERT_TRUE(host_.WriteToGuest(7, PacketType::kDataInband, 0, 3, Bytes("third")).ok());
  ASSERT_TRUE(Eventually([&] { return delivered.load() == before + 1; }));
}

// A rescind while the callback is stuck: the driver side lets go of the channel (the last
// reference is dropped) before the callback returns; nothing the callback uses may go.
TEST_F(RobustnessTest, RescindWhileACallbackIsStuckFreesNothingUnderIt) {
  ChannelBusOptions options;
  options.retire_timeout = absl::Milliseconds(50);
  ConnectBus(options);
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  Gate gate;
  std::atomic<int> delivered{0};
  ChannelOpenOptions o = Rings();
  o.on_packet = [&](const PacketView&) {
    if (delivered.fetch_add(1) == 0) gate.Pass();
  };
  ASSERT_TRUE(channel->Open(o, Deadline()).ok());
  std::thread writer = WriteFromHost(7, {"first", "second"});
  ASSERT_TRUE(gate.AwaitArrivals(1));
  const OfferId id = channel->id();
  channel.reset();  // the test lets go; only the bus holds the channel now
  host_.Rescind(7);
  // The removal may wait for the callback, but the rest of the bus keeps working.
  std::shared_ptr<Channel> other = bus_->FindChannel(8);
  ASSERT_NE(other, nullptr);
  EXPECT_TRUE(other->Open(Rings(), Deadline()).ok());
  gate.Open();
  writer.join();
  ASSERT_TRUE(Eventually([&] { return host_.Released().size() == 1; }));
  ASSERT_TRUE(Eventually([&] { return bus_->GetChannel(id) == nullptr; }));
  EXPECT_TRUE(other->Send(Bytes("fine")).ok());
}

// Closing one channel while another channel's callback is stuck: the close is not held up, and
// the closed channel opens again.
TEST_F(RobustnessTest, ASlowCallbackHoldsUpOnlyItsOwnChannel) {
  ChannelBusOptions options;
  options.retire_timeout = absl::Milliseconds(50);
  ConnectBus(options);
  std::shared_ptr<Channel> slow = bus_->FindChannel(7);
  std::shared_ptr<Channel> quiet = bus_->FindChannel(8);
  Gate gate;
  ChannelOpenOptions o = Rings();
  o.on_packet = [&](const PacketView&) { gate.Pass(); };
  ASSERT_TRUE(slow->Open(o, Deadline()).ok());
  ASSERT_TRUE(quiet->Open(Rings(), Deadline()).ok());
  std::thread writer = WriteFromHost(7, {"stuck"});
  ASSERT_TRUE(gate.AwaitArrivals(1));
  EXPECT_TRUE(quiet->Close(Deadline()).ok());
  EXPECT_TRUE(quiet->Open(Rings(), Deadline()).ok());
  EXPECT_TRUE(quiet->is_open());
  gate.Open();
  writer.join();
}

// ---- Calls that give up ----------------------------------------------------------------------

// The id of the last message of `kind` the guest posted for `relid`.
const v1::ControlMessage* LastPosted(const std::vector<v1::ControlMessage>& posted,
                                     v1::ControlMessage::MessageCase kind) {
  for (auto it = posted.rbegin(); it != posted.rend(); ++it) {
    if (it->message_case() == kind) return &*it;
  }
  return nullptr;
}

// The control thread is held up (a CloseAsync completion that blocks) just when the host's
// OpenResult for relid 8 arrives, so a blocking Open gives up on its own (deadline + grace).
// When the control thread then gets to the OpenResult, the caller was told DeadlineExceeded:
// the channel must not end up open, and nothing may be left behind.
TEST_F(RobustnessTest, AnOpenThatGaveUpIsUndoneWhenItsAnswerComesLater) {
  ChannelBusOptions options;
  options.call_grace = absl::Milliseconds(50);
  ConnectBus(options);
  std::shared_ptr<Channel> blocker = bus_->FindChannel(7);
  std::shared_ptr<Channel> channel = bus_->FindChannel(8);
  ASSERT_TRUE(blocker->Open(Rings(), Deadline()).ok());
  host_.Update([](TestHost::Rules& r) { r.silent_open_relids = {8}; });
  absl::Status opened;
  std::thread caller(
      [&] { opened = channel->Open(Rings(), absl::Now() + absl::Milliseconds(300)); });
  ASSERT_TRUE(Eventually([&] { return host_.CountPosted("open_channel") == 2; }));
  Gate gate;
  blocker->CloseAsync(Deadline(), [&](absl::Status) { gate.Pass(); });
  ASSERT_TRUE(gate.AwaitArrivals(1));  // the control thread is stuck in our completion
  const std::vector<v1::ControlMessage> posted = host_.Posted();
  const v1::ControlMessage* open = LastPosted(posted, v1::ControlMessage::kOpenChannel);
  ASSERT_NE(open, nullptr);
  v1::ControlMessage result;
  result.mutable_open_result()->set_child_relid(8);
  result.mutable_open_result()->set_open_id(open->open_channel().open_id());
  result.mutable_open_result()->set_status(0);
  host_.SendToGuest(result);
  caller.join();
  ASSERT_EQ(opened.code(), absl::StatusCode::kDeadlineExceeded) << opened;
  gate.Open();
  // The end state is what the caller was told: closed on both sides, no GPADL left.
  ASSERT_TRUE(Eventually([&] { return !host_.IsOpen(8) && host_.LiveGpadls() == 0; }))
      << "open on host: " << host_.IsOpen(8) << ", GPADLs: " << host_.LiveGpadls();
  EXPECT_FALSE(channel->is_open());
  host_.Update([](TestHost::Rules& r) { r.silent_open_relids.clear(); });
  EXPECT_TRUE(channel->Open(Rings(), Deadline()).ok());
}

// The control thread is busy letting go of relid 8's timed-out open while relid 7's receive
// callback is stuck; relid 9's OpenResult arrives meanwhile and its caller gives up. Whatever
// the caller was told must be the truth: OK and open, or an error and closed on both sides.
TEST_F(RobustnessTest, AnOpenReportsTheTruthWhileTheControlThreadIsHeldUp) {
  host_.AddOffer(9, kTestClass, kInstance3);
  ChannelBusOptions options;
  options.retire_timeout = absl::Seconds(2);
  options.call_grace = absl::Milliseconds(100);
  ConnectBus(options);
  std::shared_ptr<Channel> stuck = bus_->FindChannel(7);
  std::shared_ptr<Channel> a = bus_->FindChannel(8);
  std::shared_ptr<Channel> b = bus_->FindChannel(9);
  Gate gate;
  ChannelOpenOptions o = Rings();
  o.on_packet = [&](const PacketView&) { gate.Pass(); };
  ASSERT_TRUE(stuck->Open(o, Deadline()).ok());
  std::thread writer = WriteFromHost(7, {"stuck"});
  ASSERT_TRUE(gate.AwaitArrivals(1));
  host_.Update([](TestHost::Rules& r) { r.silent_open_relids = {8, 9}; });
  absl::Status a_opened, b_opened;
  std::thread a_caller([&] { a_opened = a->Open(Rings(), absl::Now() + absl::Milliseconds(200)); });
  std::thread b_caller([&] { b_opened = b->Open(Rings(), absl::Now() + absl::Milliseconds(400)); });
  ASSERT_TRUE(Eventually([&] { return host_.CountPosted("open_channel") == 3; }));
  a_caller.join();  // relid 8's open timed out; letting go of it may hold up the control thread
  const std::vector<v1::ControlMessage> posted = host_.Posted();
  uint32_t b_open_id = 0;
  for (const v1::ControlMessage& m : posted) {
    if (m.has_open_channel() && m.open_channel().child_relid() == 9) {
      b_open_id = m.open_channel().open_id();
    }
  }
  v1::ControlMessage result;
  result.mutable_open_result()->set_child_relid(9);
  result.mutable_open_result()->set_open_id(b_open_id);
  result.mutable_open_result()->set_status(0);
  host_.SendToGuest(result);
  b_caller.join();
  gate.Open();
  writer.join();
  if (b_opened.ok()) {
    EXPECT_TRUE(b->is_open());
    EXPECT_TRUE(host_.IsOpen(9));
  } else {
    EXPECT_EQ(b_opened.code(), absl::StatusCode::kDeadlineExceeded) << b_opened;
    ASSERT_TRUE(Eventually([&] { return !host_.IsOpen(9) && !b->is_open(); }))
        << "the caller was told " << b_opened << " but relid 9 is open";
  }
}

TEST_F(RobustnessTest, AGpadlCreationThatGaveUpLeavesNoGpadl) {
  ChannelBusOptions options;
  options.call_grace = absl::Milliseconds(50);
  ConnectBus(options);
  std::shared_ptr<Channel> blocker = bus_->FindChannel(7);
  std::shared_ptr<Channel> channel = bus_->FindChannel(8);
  ASSERT_TRUE(blocker->Open(Rings(), Deadline()).ok());
  host_.Update([](TestHost::Rules& r) { r.answer_gpadl = false; });
  absl::StatusOr<GpadlBuffer> gpadl;
  std::thread caller(
      [&] { gpadl = channel->CreateGpadl(2, absl::Now() + absl::Milliseconds(300)); });
  ASSERT_TRUE(Eventually([&] { return host_.CountPosted("gpadl_create") == 2; }));
  Gate gate;
  blocker->CloseAsync(Deadline(), [&](absl::Status) { gate.Pass(); });
  ASSERT_TRUE(gate.AwaitArrivals(1));
  const std::vector<v1::ControlMessage> posted = host_.Posted();
  const v1::ControlMessage* create = LastPosted(posted, v1::ControlMessage::kGpadlCreate);
  ASSERT_NE(create, nullptr);
  v1::ControlMessage created;
  created.mutable_gpadl_created()->set_child_relid(8);
  created.mutable_gpadl_created()->set_gpadl(create->gpadl_create().gpadl());
  created.mutable_gpadl_created()->set_creation_status(0);
  host_.SendToGuest(created);
  caller.join();
  ASSERT_EQ(gpadl.status().code(), absl::StatusCode::kDeadlineExceeded) << gpadl.status();
  gate.Open();
  EXPECT_TRUE(Eventually([&] { return host_.LiveGpadls() == 0; }))
      << "GPADLs on host: " << host_.LiveGpadls();
}

// ---- Senders waiting for room --------------------------------------------------------------

// Two senders on one channel: a large packet waits for room (pending_send_sz armed), then a
// small packet that still fits is sent. When the host drains, the large sender must be woken.
TEST_F(RobustnessTest, ASmallSendDoesNotDisarmALargeSendersWait) {
  ConnectBus();
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  ASSERT_TRUE(channel->Open(Rings(2), Deadline()).ok());  // 4096-byte data area
  // Fill until fewer than ~1200 bytes are free, leaving room for small packets only.
  const std::vector<uint8_t> filler(1000, 'f');
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(channel->Send(filler).ok());
  RingControlPage* control = host_.GuestOutboundControl(7);
  ASSERT_NE(control, nullptr);
  absl::Status large;
  std::thread waiter([&] {
    SendOptions wait;
    wait.deadline = absl::Now() + absl::Seconds(5);
    large = channel->Send(std::vector<uint8_t>(2000, 'L'), wait);
  });
  // Deterministic hook: the large sender has armed pending_send_sz.
  ASSERT_TRUE(
      Eventually([&] { return std::atomic_ref<uint32_t>(control->pending_send_sz).load() != 0; }));
  ASSERT_TRUE(channel->Send(Bytes("small")).ok());
  const absl::Time drained_at = absl::Now();
  absl::StatusOr<std::vector<testing::HostPacket>> got = host_.ReadFromGuest(7);
  ASSERT_TRUE(got.ok());
  waiter.join();
  EXPECT_TRUE(large.ok()) << large;
  EXPECT_LT(absl::Now() - drained_at, absl::Seconds(2)) << "the large sender was not woken";
}

// ---- A failed ring --------------------------------------------------------------------------

// The host corrupts the outbound ring: requests still waiting complete with the failure at
// once (not only at Close), and no inbound packet is handed to the callback afterwards.
TEST_F(RobustnessTest, AFailedRingFailsOutstandingRequestsAndStopsDelivery) {
  ConnectBus();
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  std::atomic<int> delivered{0};
  ChannelOpenOptions o = Rings();
  o.on_packet = [&](const PacketView&) { delivered.fetch_add(1); };
  ASSERT_TRUE(channel->Open(o, Deadline()).ok());
  Mutex mu;
  absl::Status completion_status;
  std::atomic<bool> completed{false};
  const std::vector<uint8_t> payload = Bytes("request");
  const absl::Span<const uint8_t> pieces[] = {payload};
  ASSERT_TRUE(channel
                  ->SendRequest(pieces,
                                [&](const Completion& c) {
                                  MutexLock lock(&mu);
                                  completion_status = c.status;
                                  completed.store(true);
                                })
                  .ok());
  // A read_index outside the data area; a send large enough to look at it again finds it.
  std::atomic_ref<uint32_t>(host_.GuestOutboundControl(7)->read_index).store(13);
  absl::Status sent;
  for (int i = 0; i < 10 && sent.ok(); ++i) sent = channel->Send(std::vector<uint8_t>(4000, 'x'));
  EXPECT_EQ(sent.code(), absl::StatusCode::kDataLoss) << sent;
  ASSERT_TRUE(Eventually([&] { return completed.load(); }));
  {
    MutexLock lock(&mu);
    EXPECT_EQ(completion_status.code(), absl::StatusCode::kDataLoss) << completion_status;
  }
  // The channel failed: what the host writes now is not delivered.
  ASSERT_TRUE(host_.WriteToGuest(7, PacketType::kDataInband, 0, 1, Bytes("late")).ok());
  ASSERT_TRUE(host_.RaiseEvent(7).ok());
  ASSERT_TRUE(Eventually([&] { return bus_->stats().events_dispatched >= 1; }));
  EXPECT_EQ(delivered.load(), 0);
}

// ---- Polling --------------------------------------------------------------------------------

// WaitForPackets belongs to polling mode; in callback mode the dispatcher owns the ring.
TEST_F(RobustnessTest, WaitForPacketsIsRefusedInCallbackMode) {
  ConnectBus();
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  ChannelOpenOptions o = Rings();
  o.on_packet = [](const PacketView&) {};
  ASSERT_TRUE(channel->Open(o, Deadline()).ok());
  std::atomic<bool> stop{false};
  std::thread host([&] {
    for (int i = 0; i < 2000 && !stop.load(); ++i) {
      host_.WriteToGuest(7, PacketType::kDataInband, 0, 1, Bytes("p")).IgnoreError();
    }
  });
  absl::Status waited = absl::OkStatus();
  for (int i = 0; i < 200; ++i) {
    waited = channel->WaitForPackets(absl::Now() + absl::Milliseconds(1));
    if (waited.code() == absl::StatusCode::kFailedPrecondition) break;
  }
  stop.store(true);
  host.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kFailedPrecondition) << waited;
}

// A Poll callback that closes its own channel must not stall the bus: the close fails fast (it
// would wait for the poll it is called from) and other channels keep working meanwhile.
TEST_F(RobustnessTest, CloseFromItsOwnPollCallbackDoesNotStallTheBus) {
  ChannelBusOptions options;
  options.call_grace = absl::Milliseconds(100);
  ConnectBus(options);
  std::shared_ptr<Channel> polled = bus_->FindChannel(7);
  std::shared_ptr<Channel> other = bus_->FindChannel(8);
  ASSERT_TRUE(polled->Open(Rings(), Deadline()).ok());  // polling mode
  ASSERT_TRUE(host_.WriteToGuest(7, PacketType::kDataInband, 0, 1, Bytes("bye")).ok());
  absl::Status closed;
  absl::Status other_opened;
  absl::StatusOr<size_t> polled_count = polled->Poll([&](const PacketView&) {
    closed = polled->Close(absl::Now() + absl::Seconds(2));
    other_opened = other->Open(Rings(), absl::Now() + absl::Seconds(1));
  });
  ASSERT_TRUE(polled_count.ok()) << polled_count.status();
  EXPECT_TRUE(other_opened.ok()) << other_opened;
  EXPECT_EQ(closed.code(), absl::StatusCode::kFailedPrecondition) << closed;
  EXPECT_TRUE(polled->Close(Deadline()).ok());
}

// ---- Double open ----------------------------------------------------------------------------

TEST_F(RobustnessTest, ARefusedSecondOpenLeavesTheOpenChannelAlone) {
  ConnectBus();
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  ASSERT_TRUE(channel->Open(Rings(), Deadline()).ok());
  EXPECT_EQ(channel->Open(Rings(), Deadline()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(channel->is_open());
  EXPECT_TRUE(channel->Send(Bytes("still open")).ok());
  absl::StatusOr<std::vector<testing::HostPacket>> got = host_.ReadFromGuest(7);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->size(), 1u);
}

// ---- Fairness -------------------------------------------------------------------------------

// The host keeps relid 7's inbound ring from ever running empty (each delivery is followed by
// another packet). A packet on relid 8 must still be delivered promptly.
TEST_F(RobustnessTest, ABusyChannelDoesNotStarveTheOthers) {
  ConnectBus();
  std::shared_ptr<Channel> busy = bus_->FindChannel(7);
  std::shared_ptr<Channel> quiet = bus_->FindChannel(8);
  constexpr int kCap = 200000;
  std::atomic<int> busy_count{0};
  std::atomic<int> busy_when_quiet_served{-1};
  ChannelOpenOptions b = Rings();
  b.on_packet = [&](const PacketView&) {
    if (busy_count.fetch_add(1) < kCap) {
      host_.WriteToGuest(7, PacketType::kDataInband, 0, 1, Bytes("more")).IgnoreError();
    }
  };
  ChannelOpenOptions q = Rings();
  q.on_packet = [&](const PacketView&) { busy_when_quiet_served.store(busy_count.load()); };
  ASSERT_TRUE(busy->Open(b, Deadline()).ok());
  ASSERT_TRUE(quiet->Open(q, Deadline()).ok());
  // The writing thread becomes the dispatcher and stays in relid 7's stream.
  std::thread writer = WriteFromHost(7, {"start"});
  ASSERT_TRUE(Eventually([&] { return busy_count.load() > 100; }));
  ASSERT_TRUE(host_.WriteToGuest(8, PacketType::kDataInband, 0, 1, Bytes("hello")).ok());
  ASSERT_TRUE(Eventually([&] { return busy_when_quiet_served.load() >= 0; }));
  EXPECT_LT(busy_when_quiet_served.load(), 20000)
      << "relid 8 waited for " << busy_when_quiet_served.load() << " packets of relid 7";
  writer.join();
  ASSERT_TRUE(busy->Close(Deadline()).ok());
}

// ---- Drivers --------------------------------------------------------------------------------

// The host never answers relid 7's open. The driver for relid 8 must not wait for it.
TEST_F(RobustnessTest, ASilentDeviceDoesNotDelayTheOthers) {
  host_.Update([](TestHost::Rules& r) { r.silent_open_relids = {7}; });
  struct Probes {
    Mutex mu;
    CondVar cv;
    bool eight_open ABSL_GUARDED_BY(mu) = false;
    bool seven_saw_eight ABSL_GUARDED_BY(mu) = false;
  } probes;
  class Opener : public Driver {
   public:
    explicit Opener(Probes* p) : p_(p) {}
    absl::Status Probe(Channel& channel) override {
      if (channel.relid() == 7) {
        absl::Status s = channel.Open(Rings(), absl::Now() + absl::Seconds(1));
        MutexLock lock(&p_->mu);
        p_->seven_saw_eight = p_->eight_open;
        return s;
      }
      absl::Status s = channel.Open(Rings(), Deadline());
      MutexLock lock(&p_->mu);
      p_->eight_open = s.ok();
      p_->cv.SignalAll();
      return s;
    }
    void Remove() override {}

   private:
    Probes* p_;
  };
  DriverRegistry registry;
  ASSERT_TRUE(registry
                  .Register({"opener", kTestClass,
                             [&](const OfferInfo&) { return std::make_unique<Opener>(&probes); }})
                  .ok());
  ChannelBusOptions options;
  options.drivers = &registry;
  MakeBus(options);
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  MutexLock lock(&probes.mu);
  EXPECT_TRUE(probes.eight_open);
  EXPECT_TRUE(probes.seven_saw_eight) << "relid 8 was probed only after relid 7's open gave up";
}

// ---- Start-up -------------------------------------------------------------------------------

// A backend that signals relid 7 while it starts (before the bus has attached its event page).
class EarlySignalBackend final : public Backend {
 public:
  explicit EarlySignalBackend(TestHost* host) : host_(host) {}
  absl::Status Start(BackendListener* listener) override {
    if (absl::Status s = host_->Start(listener); !s.ok()) return s;
    absl::Span<uint8_t> flags = host_->ReceiveEventFlags(0);
    std::atomic_ref<uint8_t>(flags[0]).fetch_or(0x80);  // relid 7
    listener->OnEventsPending(0);
    return absl::OkStatus();
  }
  void Stop() override { host_->Stop(); }
  ContactInfo contact_info() const override { return host_->contact_info(); }
  absl::Status PostMessage(const v1::ControlMessage& m) override { return host_->PostMessage(m); }
  void SetConnection(const NegotiatedConnection& c) override { host_->SetConnection(c); }
  void PauseDelivery() override { host_->PauseDelivery(); }
  void ResumeDelivery() override { host_->ResumeDelivery(); }
  absl::Status SignalHost(const ChannelSignal& s) override { return host_->SignalHost(s); }
  uint32_t vp_count() const override { return host_->vp_count(); }
  absl::Span<uint8_t> ReceiveEventFlags(uint32_t vp) override {
    return host_->ReceiveEventFlags(vp);
  }
  absl::StatusOr<Pages> AllocatePages(size_t count, PageSharing sharing) override {
    return host_->AllocatePages(count, sharing);
  }

 private:
  TestHost* host_;
};

// An event raised while the bus starts is scanned (here: counted as spurious, no channel is
// open yet); its bit must not stay set, or a host that signals only on 0 → 1 never signals
// that relid again.
TEST_F(RobustnessTest, EventsRaisedWhileStartingAreScanned) {
  EarlySignalBackend backend(&host_);
  absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&backend, {});
  ASSERT_TRUE(bus.ok()) << bus.status();
  EXPECT_EQ(std::atomic_ref<uint8_t>(host_.ReceiveEventFlags(0)[0]).load() & 0x80, 0)
      << "relid 7's bit is still set";
  EXPECT_EQ((*bus)->stats().spurious_events, 1u);
  bus->reset();
}

// ---- Destroying the bus from its own threads ------------------------------------------------

TEST_F(RobustnessTest, TheBusMayBeDestroyedFromOnHostLost) {
  std::atomic<bool> destroyed{false};
  ChannelBusOptions options;
  options.on_host_lost = [&](const absl::Status&) {
    bus_.reset();
    destroyed.store(true);
  };
  ConnectBus(options);
  host_.LoseHost(absl::UnavailableError("host went away"));
  ASSERT_TRUE(Eventually([&] { return destroyed.load(); }));
  EXPECT_TRUE(ChannelBus::WaitForDeferredTeardowns(Deadline()).ok());
}

// A driver whose Probe destroys the bus (a hot-added device the agent cannot handle).
TEST_F(RobustnessTest, TheBusMayBeDestroyedFromADriversProbe) {
  std::atomic<bool> destroyed{false};
  class Destroyer : public Driver {
   public:
    Destroyer(std::unique_ptr<ChannelBus>* bus, std::atomic<bool>* done) : bus_(bus), done_(done) {}
    absl::Status Probe(Channel& channel) override {
      if (channel.relid() == 9) {
        bus_->reset();
        done_->store(true);
      }
      return absl::OkStatus();
    }
    void Remove() override {}

   private:
    std::unique_ptr<ChannelBus>* bus_;
    std::atomic<bool>* done_;
  };
  DriverRegistry registry;
  ASSERT_TRUE(registry
                  .Register({"destroyer", kTestClass,
                             [&](const OfferInfo&) {
                               return std::make_unique<Destroyer>(&bus_, &destroyed);
                             }})
                  .ok());
  ChannelBusOptions options;
  options.drivers = &registry;
  ConnectBus(options);
  host_.AddOffer(9, kTestClass, kInstance3);  // hot-added: probed after Connect returned
  ASSERT_TRUE(Eventually([&] { return destroyed.load(); }));
  EXPECT_TRUE(ChannelBus::WaitForDeferredTeardowns(Deadline()).ok());
}

// An OpenAsync completion (the control thread) destroys the bus.
TEST_F(RobustnessTest, TheBusMayBeDestroyedFromACompletion) {
  ConnectBus();
  std::atomic<bool> destroyed{false};
  bus_->FindChannel(7)->OpenAsync(Rings(), Deadline(), [&](absl::Status) {
    bus_.reset();
    destroyed.store(true);
  });
  ASSERT_TRUE(Eventually([&] { return destroyed.load(); }));
  EXPECT_TRUE(ChannelBus::WaitForDeferredTeardowns(Deadline()).ok());
}

// A receive callback (a dispatching thread) destroys the bus.
TEST_F(RobustnessTest, TheBusMayBeDestroyedFromAReceiveCallback) {
  ConnectBus();
  std::atomic<bool> destroyed{false};
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  ChannelOpenOptions o = Rings();
  o.on_packet = [&](const PacketView&) {
    if (!destroyed.exchange(true)) bus_.reset();
  };
  ASSERT_TRUE(channel->Open(o, Deadline()).ok());
  std::thread writer = WriteFromHost(7, {"bye"});
  ASSERT_TRUE(Eventually([&] { return destroyed.load(); }));
  writer.join();
  EXPECT_TRUE(ChannelBus::WaitForDeferredTeardowns(Deadline()).ok());
  EXPECT_FALSE(channel->Send(Bytes("after")).ok());  // inert
}

// ---- Host text in logs ----------------------------------------------------------------------

TEST_F(RobustnessTest, HostTextInLogsIsBoundedAndEscaped) {
  ConnectBus();
  v1::ControlMessage offer;
  offer.mutable_offer()->mutable_interface_type()->set_value(std::string(4 << 20, 'A'));
  offer.mutable_offer()->mutable_interface_instance()->set_value("line\nvbus: forged");
  offer.mutable_offer()->set_child_relid(9);
  host_.SendToGuest(offer);
  host_.LoseHost(absl::UnavailableError(std::string(1 << 20, 'B') + "\r\nforged"));
  ASSERT_TRUE(Eventually([&] {
    for (const std::string& line : Logs()) {
      if (absl::StrContains(line, "lost")) return true;
    }
    return false;
  }));
  for (const std::string& line : Logs()) {
    EXPECT_LT(line.size(), 2000u) << line.substr(0, 200);
    EXPECT_EQ(line.find('\n'), std::string::npos) << line.substr(0, 200);
    EXPECT_EQ(line.find('\r'), std::string::npos) << line.substr(0, 200);
  }
}

}  // namespace
}  // namespace vbus
