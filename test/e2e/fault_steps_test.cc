// The host failing a guest in the middle of each step: disconnecting, or rescinding the device
// the step is about, while connect, open, close, suspend or resume waits for the host's
// answer; plus an open the host refuses and a rescind that arrives while the driver is inside
// its receive callback. Against the mock host in this process, over MockBackend and
// HyperVBackend. For each cell: the step returns in time (its deadline plus the bus's grace)
// with its documented error, nothing crashes or leaks (ASan in CI), the channel the fault did
// not touch keeps working where the link survives, and the bus shuts down in time. The outcomes
// are the table in docs/security.md.
//
// A step is caught mid-way deterministically: the host's answer that would end it is dropped
// (a message fault), the step runs on its own thread, and the fault is injected once the host
// has taken the request (its state says so).
//
// Usage: fault_steps_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <atomic>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/e2e_params.h"
#include "test/e2e/echo_stream.h"
#include "test/e2e/eventually.h"

namespace vbus::e2e {
namespace {

constexpr absl::Duration kStepDeadline = absl::Seconds(1);
constexpr absl::Duration kGrace = absl::Milliseconds(500);
const absl::Duration kLatest = kStepDeadline + kGrace + absl::Seconds(2);

enum class Step { kConnect, kOpen, kClose, kSuspend, kResume };
enum class Fault { kDisconnect, kRescind };

std::string StepName(Step s) {
  switch (s) {
    case Step::kConnect:
      return "Connect";
    case Step::kOpen:
      return "Open";
    case Step::kClose:
      return "Close";
    case Step::kSuspend:
      return "Suspend";
    case Step::kResume:
      return "Resume";
  }
  return "?";
}

class FaultStepsTest : public ::testing::TestWithParam<std::tuple<Step, Fault, BackendKind>> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<E2eHost>> host =
        E2eHost::Start(E2eHost::Mode::kInProcess, absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    ChannelBusOptions options;
    options.call_grace = kGrace;
    options.resume_offer_wait = absl::Milliseconds(100);
    options.log = [](absl::string_view) {};
    E2eGuestOptions guest_options;
    guest_options.backend = std::get<2>(GetParam());
    guest_options.memory_bytes = 16 << 20;
    absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
        E2eGuest::Attach(*host_, kGuest, std::move(options), std::move(guest_options));
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = std::move(*guest);
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<v1::OfferResponse> offered = host_->Offer(kGuest, "echo");
      ASSERT_TRUE(offered.ok()) << offered.status();
      relids_[i] = offered->child_relid();
      absl::StatusOr<Guid> instance = Guid::Parse(offered->interface_instance().value());
      ASSERT_TRUE(instance.ok());
      instances_[i] = *instance;
    }
  }
  void TearDown() override {
    guest_.reset();
    host_.reset();
  }

  ChannelBus& bus() { return guest_->bus(); }
  bool mock() const { return std::get<2>(GetParam()) == BackendKind::kMock; }

  void Drop(const std::string& type) {
    v1::InjectFaultRequest f;
    f.set_guest(kGuest);
    f.mutable_message()->set_message_type(type);
    f.mutable_message()->set_action(v1::MessageFault::ACTION_DROP);
    ASSERT_TRUE(host_->InjectFault(f).ok());
  }
  v1::GuestState HostGuestState() {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::ListGuestsRequest request;
    v1::ListGuestsResponse response;
    if (!host_->control().ListGuests(&context, request, &response).ok() ||
        response.guests_size() == 0) {
      return v1::GUEST_STATE_UNSPECIFIED;
    }
    return response.guests(0).state();
  }
  // Runs `step` on its own thread, waits until `taken` says the host has the request, injects
  // the fault on the first device, and returns the step's result (and checks it was in time).
  absl::Status Interrupt(const std::function<absl::Status()>& step,
                         const std::function<bool()>& taken) {
    absl::Status result;
    absl::Time started = absl::Now(), ended;
    std::atomic<bool> done{false};
    std::thread runner([&] {
      result = step();
      ended = absl::Now();
      done.store(true);
    });
    EXPECT_TRUE(Eventually(taken)) << "the host never took the request";
    if (std::get<1>(GetParam()) == Fault::kDisconnect) {
      v1::InjectFaultRequest cut;
      cut.set_guest(kGuest);
      cut.set_disconnect(true);
      EXPECT_TRUE(host_->InjectFault(cut).ok());
    } else {
      EXPECT_TRUE(host_->Rescind(kGuest, relids_[0]).ok());
    }
    runner.join();
    EXPECT_LE(ended - started, kLatest) << "the step waited past its deadline";
    return result;
  }
  absl::Status Echo(Channel& channel) {
    const uint8_t ping[8] = {'s', 't', 'e', 'p', 'p', 'i', 'n', 'g'};
    return CallEcho(channel, ping, absl::Now() + absl::Seconds(10));
  }
  absl::Status OpenBoth() {
    for (uint32_t relid : relids_) {
      std::shared_ptr<Channel> channel = bus().FindChannel(relid);
      if (channel == nullptr) return absl::NotFoundError("no channel");
      if (absl::Status s = channel->Open(SmallCallbackRings(), absl::Now() + absl::Seconds(10));
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }
  absl::Time StepDeadline() { return absl::Now() + kStepDeadline; }

  static constexpr char kGuest[] = "fault-steps";
  std::unique_ptr<E2eHost> host_;
  std::unique_ptr<E2eGuest> guest_;
  // Device 0 takes the fault; device 1 is the bystander.
  uint32_t relids_[2] = {0, 0};
  Guid instances_[2];
};

TEST_P(FaultStepsTest, TheStepEndsInTimeAndTheRestOfTheBusCarriesOn) {
  const auto [step, fault, backend] = GetParam();
  absl::Status s;
  switch (step) {
    case Step::kConnect:
      Drop("version_response");
      s = Interrupt([&] { return bus().Connect(StepDeadline()); },
                    [&] { return HostGuestState() == v1::GUEST_STATE_CONNECTED; });
      break;
    case Step::kOpen: {
      ASSERT_TRUE(bus().Connect(absl::Now() + absl::Seconds(10)).ok());
      std::shared_ptr<Channel> a = bus().FindChannel(relids_[0]);
      ASSERT_TRUE(bus().FindChannel(relids_[1])->Open(SmallCallbackRings(), StepDeadline()).ok());
      Drop("open_result");
      s = Interrupt([&] { return a->Open(SmallCallbackRings(), StepDeadline()); },
                    [&] {
                      absl::StatusOr<v1::ChannelInfo> c = host_->Channel(kGuest, relids_[0]);
                      return c.ok() && c->state() == v1::CHANNEL_STATE_OPEN;
                    });
      break;
    }
    case Step::kClose: {
      ASSERT_TRUE(bus().Connect(absl::Now() + absl::Seconds(10)).ok());
      ASSERT_TRUE(OpenBoth().ok());
      std::shared_ptr<Channel> a = bus().FindChannel(relids_[0]);
      Drop("gpadl_torndown");
      s = Interrupt([&] { return a->Close(StepDeadline()); },
                    [&] {
                      absl::StatusOr<v1::ChannelInfo> c = host_->Channel(kGuest, relids_[0]);
                      return c.ok() && c->state() != v1::CHANNEL_STATE_OPEN && c->ring_gpadl() == 0;
                    });
      break;
    }
    case Step::kSuspend:
      ASSERT_TRUE(bus().Connect(absl::Now() + absl::Seconds(10)).ok());
      ASSERT_TRUE(OpenBoth().ok());
      Drop("unload_response");
      s = Interrupt([&] { return bus().Suspend(StepDeadline()); },
                    [&] { return HostGuestState() == v1::GUEST_STATE_UNLOADED; });
      break;
    case Step::kResume:
      ASSERT_TRUE(bus().Connect(absl::Now() + absl::Seconds(10)).ok());
      ASSERT_TRUE(OpenBoth().ok());
      ASSERT_TRUE(bus().Suspend(absl::Now() + absl::Seconds(10)).ok());
      Drop("all_offers_delivered");
      s = Interrupt([&] { return bus().Resume(StepDeadline()); },
                    [&] { return HostGuestState() == v1::GUEST_STATE_OFFERS_DELIVERED; });
      break;
  }
  const std::string outcome = absl::StatusCodeToString(s.code());
  std::cout << "CELL " << StepName(step) << " "
            << (fault == Fault::kDisconnect ? "disconnect" : "rescind") << " "
            << BackendName(backend) << ": " << outcome << " (" << s.message() << ")\n";
  EXPECT_TRUE(
      s.code() == absl::StatusCode::kOk || s.code() == absl::StatusCode::kDeadlineExceeded ||
      s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kCancelled ||
      s.code() == absl::StatusCode::kFailedPrecondition)
      << s;
  if (fault == Fault::kRescind) {
    // The link is up: the device the fault did not touch works (after the resume, if the
    // step left the bus suspended), and the rescinded one is gone.
    if (bus().phase() == BusPhase::kSuspended) {
      ASSERT_TRUE(bus().Resume(absl::Now() + absl::Seconds(10)).ok());
    }
    std::shared_ptr<Channel> b = bus().FindChannel(instances_[1]);
    ASSERT_NE(b, nullptr) << "the untouched device is gone";
    if (!b->is_open()) {
      ASSERT_TRUE(b->Open(SmallCallbackRings(), absl::Now() + absl::Seconds(10)).ok());
    }
    EXPECT_TRUE(Echo(*b).ok());
    EXPECT_TRUE(Eventually([&] { return bus().FindChannel(instances_[0]) == nullptr; }));
  }
  const absl::Time start = absl::Now();
  const absl::Status down = bus().Shutdown(absl::Now() + absl::Seconds(5));
  EXPECT_LE(absl::Now() - start, absl::Seconds(5) + kGrace + absl::Seconds(2));
  // The shutdown completes either way; what it reports: nothing wrong after a rescind; after
  // a disconnect the mock link is gone (Unavailable), while on Hyper-V the vanished host's
  // connection keeps refusing posts (INVALID_CONNECTION_ID, retried as Linux does, then
  // ResourceExhausted) or goes unanswered (DeadlineExceeded).
  if (fault == Fault::kRescind) {
    EXPECT_TRUE(down.ok()) << down;
  } else if (!mock()) {
    EXPECT_TRUE(down.ok() || absl::IsDeadlineExceeded(down) || absl::IsResourceExhausted(down))
        << down;
  }
}

// The same host and guest, one backend per run, for the faults that are not about one step.
class FaultEventsTest : public FaultStepsTest {};

TEST_P(FaultEventsTest, ARefusedOpenFailsAloneAndTheNextOneWorks) {
  ASSERT_TRUE(bus().Connect(absl::Now() + absl::Seconds(10)).ok());
  ASSERT_TRUE(bus().FindChannel(relids_[1])->Open(SmallCallbackRings(), StepDeadline()).ok());
  v1::InjectFaultRequest refuse;
  refuse.set_guest(kGuest);
  refuse.mutable_refuse()->set_request(v1::RefuseNext::REQUEST_OPEN_CHANNEL);
  ASSERT_TRUE(host_->InjectFault(refuse).ok());
  std::shared_ptr<Channel> a = bus().FindChannel(relids_[0]);
  const absl::Status refused = a->Open(SmallCallbackRings(), StepDeadline());
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(std::string(refused.message()), ::testing::HasSubstr("refused by host"));
  EXPECT_FALSE(a->is_open());
  EXPECT_TRUE(Echo(*bus().FindChannel(relids_[1])).ok());  // the other channel never noticed
  ASSERT_TRUE(a->Open(SmallCallbackRings(), StepDeadline()).ok());  // nothing was left behind
  EXPECT_TRUE(Echo(*a).ok());
  EXPECT_TRUE(bus().Shutdown(absl::Now() + absl::Seconds(5)).ok());
}

TEST_P(FaultEventsTest, ARescindWhileTheDriverIsInsideItsReceiveCallbackWaitsForIt) {
  struct Latch {
    Mutex mu;
    CondVar cv;
    bool inside ABSL_GUARDED_BY(mu) = false;
    bool release ABSL_GUARDED_BY(mu) = false;
    bool returned ABSL_GUARDED_BY(mu) = false;
    bool removed_before_return ABSL_GUARDED_BY(mu) = false;
    int removed ABSL_GUARDED_BY(mu) = 0;
  };
  auto latch = std::make_shared<Latch>();
  ChannelBusOptions options;
  options.call_grace = kGrace;
  options.log = [](absl::string_view) {};
  options.on_offer_removed = [latch](const OfferInfo&, const absl::Status&) {
    MutexLock lock(&latch->mu);
    if (!latch->returned) latch->removed_before_return = true;
    ++latch->removed;
    latch->cv.SignalAll();
  };
  E2eGuestOptions guest_options;
  guest_options.backend = std::get<2>(GetParam());
  guest_options.memory_bytes = 16 << 20;
  // A blocked callback holds up its own VP's dispatch (callbacks must not block); the other
  // channel is on another VP.
  guest_options.vp_count = 2;
  guest_.reset();
  absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
      E2eGuest::Attach(*host_, kGuest, std::move(options), std::move(guest_options));
  ASSERT_TRUE(guest.ok()) << guest.status();
  guest_ = std::move(*guest);
  for (Guid& instance : instances_) {  // the new guest's own devices
    absl::StatusOr<v1::OfferResponse> offered = host_->Offer(kGuest, "echo");
    ASSERT_TRUE(offered.ok()) << offered.status();
    instance = Guid::Parse(offered->interface_instance().value()).value_or(Guid());
  }
  ASSERT_TRUE(bus().Connect(absl::Now() + absl::Seconds(10)).ok());
  std::shared_ptr<Channel> a = bus().FindChannel(instances_[0]);
  std::shared_ptr<Channel> b = bus().FindChannel(instances_[1]);
  ASSERT_TRUE(a != nullptr && b != nullptr);
  ASSERT_TRUE(a->Open(SmallCallbackRings([latch](const PacketView&) {
                        MutexLock lock(&latch->mu);
                        latch->inside = true;
                        latch->cv.SignalAll();
                        latch->cv.AwaitWithDeadline(&latch->mu, absl::Now() + absl::Seconds(30),
                                                    [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(latch->mu) {
                                                      return latch->release;
                                                    });
                        latch->returned = true;
                      }),
                      StepDeadline())
                  .ok());
  ChannelOpenOptions on_vp1 = SmallCallbackRings();
  on_vp1.target_vp = 1;
  ASSERT_TRUE(b->Open(on_vp1, StepDeadline()).ok());
  const uint8_t ping[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_TRUE(a->Send(ping).ok());  // its echo runs the callback, which blocks
  {
    MutexLock lock(&latch->mu);
    ASSERT_TRUE(latch->cv.AwaitWithDeadline(
        &latch->mu, absl::Now() + absl::Seconds(30),
        [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(latch->mu) { return latch->inside; }));
  }
  ASSERT_TRUE(host_->Rescind(kGuest, a->relid()).ok());
  // The bus keeps serving the other VP's channel while the callback is stuck; the rescinded
  // one is not reported removed under the callback.
  EXPECT_TRUE(Echo(*b).ok());
  {
    MutexLock lock(&latch->mu);
    EXPECT_EQ(latch->removed, 0);
    latch->release = true;
    latch->cv.SignalAll();
    EXPECT_TRUE(latch->cv.AwaitWithDeadline(
        &latch->mu, absl::Now() + absl::Seconds(30),
        [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(latch->mu) { return latch->removed == 1; }));
    EXPECT_FALSE(latch->removed_before_return);
  }
  EXPECT_TRUE(Echo(*b).ok());
  EXPECT_TRUE(bus().Shutdown(absl::Now() + absl::Seconds(5)).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Backends, FaultEventsTest,
    ::testing::Combine(::testing::Values(Step::kOpen), ::testing::Values(Fault::kRescind),
                       ::testing::Values(BackendKind::kMock, BackendKind::kHyperV)),
    [](const auto& info) { return BackendName(std::get<2>(info.param)); });

std::string CellName(const ::testing::TestParamInfo<std::tuple<Step, Fault, BackendKind>>& info) {
  const auto [step, fault, backend] = info.param;
  return absl::StrCat(StepName(step), fault == Fault::kDisconnect ? "_Disconnect" : "_Rescind", "_",
                      BackendName(backend));
}

INSTANTIATE_TEST_SUITE_P(
    Disconnect, FaultStepsTest,
    ::testing::Combine(::testing::Values(Step::kConnect, Step::kOpen, Step::kClose, Step::kSuspend,
                                         Step::kResume),
                       ::testing::Values(Fault::kDisconnect),
                       ::testing::Values(BackendKind::kMock, BackendKind::kHyperV)),
    CellName);
INSTANTIATE_TEST_SUITE_P(
    Rescind, FaultStepsTest,
    ::testing::Combine(::testing::Values(Step::kOpen, Step::kClose, Step::kSuspend, Step::kResume),
                       ::testing::Values(Fault::kRescind),
                       ::testing::Values(BackendKind::kMock, BackendKind::kHyperV)),
    CellName);

}  // namespace
}  // namespace vbus::e2e
