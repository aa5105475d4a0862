// End to end: hibernation with relid fix-up. ChannelBus::Suspend / Resume against the mock host
// in this process and as a separate //mock:mock_host process, over MockBackend and
// HyperVBackend (e2e_params.h). The host re-offers every channel under another channel's relid
// and monitor id (HostSettings.permute_relids_on_resume), leaves one out, adds one, stops
// answering or disconnects midway; each device keeps its Channel object and its driver, and
// echo traffic is checked packet by packet across every cycle.
//
// Usage: suspend_resume_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <atomic>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/runtime/channel_bus.h"
#include "core/runtime/driver.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/host/device_kinds.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/e2e_params.h"
#include "test/e2e/echo_stream.h"
#include "test/e2e/eventually.h"

namespace vbus::e2e {
namespace {

using ::testing::HasSubstr;

// One echo device as its driver sees it; slots are keyed by instance and outlive drivers.
struct Device {
  EchoStream stream{1};
  std::atomic<Channel*> channel{nullptr};
  std::atomic<int> probes{0}, suspends{0}, resumes{0}, removes{0};
};

struct Devices {
  Mutex mu;
  std::map<Guid, std::unique_ptr<Device>> by_instance ABSL_GUARDED_BY(mu);
  Device& Of(const Guid& instance) {
    MutexLock lock(&mu);
    std::unique_ptr<Device>& d = by_instance[instance];
    if (d == nullptr) d = std::make_unique<Device>();
    return *d;
  }
};

// Opens its echo channel in Probe with the device's stream; default Suspend (close) and Resume
// (reopen with the same options, so the stream carries on) with counts.
class EchoDriver : public Driver {
 public:
  explicit EchoDriver(Devices* devices) : devices_(devices) {}
  absl::Status Probe(Channel& channel) override {
    device_ = &devices_->Of(channel.offer().interface_instance);
    device_->probes.fetch_add(1);
    absl::Status s = channel.Open(EchoOptions(&device_->stream, 8), Deadline());
    if (s.ok()) device_->channel.store(&channel);
    return s;
  }
  absl::Status Suspend(Channel& channel, absl::Time deadline) override {
    device_->suspends.fetch_add(1);
    return Driver::Suspend(channel, deadline);
  }
  absl::Status Resume(Channel& channel, absl::Time deadline) override {
    device_->resumes.fetch_add(1);
    return Driver::Resume(channel, deadline);
  }
  void Remove() override {
    device_->channel.store(nullptr);
    device_->removes.fetch_add(1);
  }

 private:
  Devices* const devices_;
  Device* device_ = nullptr;
};

class SuspendResumeTest : public ::testing::TestWithParam<E2eParam> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<E2eHost>> host = E2eHost::Start(ModeOf(GetParam()), Deadline());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    ASSERT_TRUE(drivers_
                    .Register({"echo", mock::kEchoDeviceClass,
                               [this](const OfferInfo&) {
                                 return std::make_unique<EchoDriver>(&devices_);
                               }})
                    .ok());
  }
  void Attach(absl::Duration resume_offer_wait = absl::Seconds(10)) {
    ChannelBusOptions options;
    options.drivers = &drivers_;
    options.resume_offer_wait = resume_offer_wait;
    options.log = [](absl::string_view line) { std::cerr << "guest: " << line << "\n"; };
    options.on_offer_removed = [this](const OfferInfo& offer, const absl::Status& why) {
      MutexLock lock(&mu_);
      removed_[offer.interface_instance] = why;
    };
    E2eGuestOptions guest_options;
    guest_options.backend = BackendOf(GetParam());
    absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
        E2eGuest::Attach(*host_, kGuest, std::move(options), std::move(guest_options));
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = std::move(*guest);
  }
  void TearDown() override {
    guest_.reset();
    if (HasFailure() && host_ != nullptr) std::cerr << "mock_host log:\n" << host_->log() << "\n";
    host_.reset();
  }
  void Configure(bool permute) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(Deadline(absl::Seconds(20))));
    v1::ConfigureRequest request;
    request.mutable_settings()->set_permute_relids_on_resume(permute);
    v1::HostSettings settings;
    ASSERT_TRUE(host_->control().Configure(&context, request, &settings).ok());
  }
  // Offers an echo device (monitored or not); returns its instance.
  Guid OfferEcho(bool monitored) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(Deadline(absl::Seconds(20))));
    v1::OfferRequest request;
    request.set_guest(kGuest);
    request.mutable_spec()->set_device("echo");
    request.mutable_spec()->set_monitored(monitored);
    v1::OfferResponse response;
    grpc::Status s = host_->control().Offer(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    absl::StatusOr<Guid> instance = Guid::Parse(response.interface_instance().value());
    EXPECT_TRUE(instance.ok());
    return instance.value_or(Guid());
  }
  // Sends `count` more packets on the device's channel and waits for every echo.
  void Traffic(const Guid& instance, uint64_t count) {
    Device& d = devices_.Of(instance);
    Channel* channel = d.channel.load();
    ASSERT_NE(channel, nullptr);
    const uint64_t first = d.stream.sent();
    ASSERT_TRUE(d.stream.SendRange(*channel, first, count).ok()) << "relid " << channel->relid();
    ASSERT_TRUE(d.stream.WaitFor(first + count, Deadline())) << "relid " << channel->relid();
    ASSERT_EQ(d.stream.bad(), 0u);
    ASSERT_EQ(d.stream.received_sum(), d.stream.sent_sum());
  }
  absl::Status RemovedReason(const Guid& instance) {
    MutexLock lock(&mu_);
    auto it = removed_.find(instance);
    return it == removed_.end() ? absl::OkStatus() : it->second;
  }

  static constexpr char kGuest[] = "hibernating-guest";
  std::unique_ptr<E2eHost> host_;
  std::unique_ptr<E2eGuest> guest_;
  DriverRegistry drivers_;
  Devices devices_;
  Mutex mu_;
  std::map<Guid, absl::Status> removed_ ABSL_GUARDED_BY(mu_);
};

TEST_P(SuspendResumeTest, EveryRelidAndMonitorIdPermutedKeepsChannelsDriversAndData) {
  Attach();
  Configure(/*permute=*/true);
  const std::vector<Guid> instances = {OfferEcho(true), OfferEcho(true), OfferEcho(false)};
  ChannelBus& bus = guest_->bus();
  ASSERT_TRUE(bus.Connect(Deadline()).ok());
  std::map<Guid, std::pair<Channel*, OfferInfo>> before;
  for (const Guid& instance : instances) {
    Traffic(instance, 500);
    Channel* channel = devices_.Of(instance).channel.load();
    before[instance] = {channel, channel->offer()};
  }

  ASSERT_TRUE(bus.Suspend(Deadline()).ok());
  EXPECT_EQ(bus.phase(), BusPhase::kSuspended);
  EXPECT_TRUE(bus.Offers().empty());
  ASSERT_TRUE(bus.Resume(Deadline()).ok());

  for (const Guid& instance : instances) {
    Device& d = devices_.Of(instance);
    const auto& [channel, old] = before[instance];
    ASSERT_EQ(d.channel.load(), channel);  // the same object, never removed
    EXPECT_EQ(d.probes.load(), 1);
    EXPECT_EQ(d.removes.load(), 0);
    EXPECT_EQ(d.resumes.load(), 1);
    const OfferInfo now = channel->offer();
    EXPECT_NE(now.relid, old.relid) << instance.ToString();
    EXPECT_NE(now.connection_id, old.connection_id);
    if (old.monitor_allocated) {
      EXPECT_NE(now.monitor_id, old.monitor_id);
    }
    EXPECT_EQ(bus.FindChannel(now.relid).get(), channel);
    Traffic(instance, 500);  // the same stream, checked in order across the cycle
  }
  EXPECT_EQ(bus.stats().offers_resumed, 3u);
}

TEST_P(SuspendResumeTest, AMissingDeviceIsRemovedAndAnExtraOneProbed) {
  Attach(/*resume_offer_wait=*/absl::Milliseconds(100));
  Configure(/*permute=*/true);
  const Guid kept = OfferEcho(false);
  absl::StatusOr<v1::OfferResponse> gone = host_->Offer(kGuest, "echo");
  ASSERT_TRUE(gone.ok());
  const Guid gone_instance = Guid::Parse(gone->interface_instance().value()).value_or(Guid());
  ChannelBus& bus = guest_->bus();
  ASSERT_TRUE(bus.Connect(Deadline()).ok());
  ASSERT_TRUE(bus.Suspend(Deadline()).ok());
  // While the guest is suspended the host drops one device and gains another.
  ASSERT_TRUE(host_->Rescind(kGuest, gone->child_relid()).ok());
  const Guid extra = OfferEcho(false);
  ASSERT_TRUE(bus.Resume(Deadline()).ok());
  EXPECT_EQ(devices_.Of(gone_instance).removes.load(), 1);
  const absl::Status why = RemovedReason(gone_instance);
  EXPECT_EQ(why.code(), absl::StatusCode::kNotFound) << why;
  EXPECT_EQ(devices_.Of(extra).probes.load(), 1);
  EXPECT_EQ(devices_.Of(kept).resumes.load(), 1);
  Traffic(kept, 200);
  Traffic(extra, 200);
  EXPECT_EQ(bus.Offers().size(), 2u);
}

TEST_P(SuspendResumeTest, TrafficInFlightWhenTheSuspendStartsLosesNothingAfterIt) {
  Attach();
  Configure(/*permute=*/true);
  const Guid instance = OfferEcho(false);
  ChannelBus& bus = guest_->bus();
  ASSERT_TRUE(bus.Connect(Deadline()).ok());
  Device& d = devices_.Of(instance);
  Channel* channel = d.channel.load();
  // Packets sent, echoes not all back, when the suspend closes the channel.
  ASSERT_TRUE(d.stream.SendRange(*channel, 0, 3000).ok());
  ASSERT_TRUE(bus.Suspend(Deadline()).ok());
  EXPECT_FALSE(channel->is_open());
  EXPECT_EQ(d.stream.bad(), 0u);  // what did arrive was whole and in order
  const uint64_t arrived = d.stream.received();
  ASSERT_TRUE(bus.Resume(Deadline()).ok());
  // The stream resumes from the packets the host echoed before the close: any that were
  // lost with the old rings are sent again (the device's own recovery).
  EchoStream fresh(7);
  ASSERT_TRUE(channel->Close(Deadline()).ok());
  ASSERT_TRUE(channel->Open(EchoOptions(&fresh, 8), Deadline()).ok());
  ASSERT_TRUE(fresh.SendRange(*channel, 0, 2000).ok());
  ASSERT_TRUE(fresh.WaitFor(2000, Deadline()));
  EXPECT_EQ(fresh.bad(), 0u);
  EXPECT_EQ(fresh.received_sum(), fresh.sent_sum());
  EXPECT_LE(arrived, 3000u);
  EXPECT_EQ(d.stream.received(), arrived);  // nothing of the old open arrived after the close
}

TEST_P(SuspendResumeTest, AHostThatStopsAnsweringFailsTheSuspendWithItsDeadline) {
  Attach();
  const Guid instance = OfferEcho(false);
  ChannelBus& bus = guest_->bus();
  ASSERT_TRUE(bus.Connect(Deadline()).ok());
  v1::InjectFaultRequest drop;
  drop.set_guest(kGuest);
  drop.mutable_message()->set_message_type("unload_response");
  drop.mutable_message()->set_action(v1::MessageFault::ACTION_DROP);
  ASSERT_TRUE(host_->InjectFault(drop).ok());
  const absl::Time start = absl::Now();
  const absl::Status s = bus.Suspend(start + absl::Milliseconds(500));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(s.message(), HasSubstr("no UnloadResponse"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));  // the deadline plus the bus's grace
  // Suspended without the host's word; the resume starts a new connection and the device
  // comes back.
  EXPECT_EQ(bus.phase(), BusPhase::kSuspended);
  ASSERT_TRUE(bus.Resume(Deadline()).ok());
  Traffic(instance, 100);
}

TEST_P(SuspendResumeTest, AHostThatDisconnectsWhileSuspendedFailsTheResume) {
  Attach();
  const Guid instance = OfferEcho(false);
  ChannelBus& bus = guest_->bus();
  ASSERT_TRUE(bus.Connect(Deadline()).ok());
  ASSERT_TRUE(bus.Suspend(Deadline()).ok());
  v1::InjectFaultRequest cut;
  cut.set_guest(kGuest);
  cut.set_disconnect(true);
  ASSERT_TRUE(host_->InjectFault(cut).ok());
  if (BackendOf(GetParam()) == BackendKind::kHyperV) {
    // The host's side of the fake hypervisor learns of the cut on its own thread; until then
    // it would accept the InitiateContact and lose it (the resume would end at its deadline).
    // Once link_up() is false its connections are closed.
    ASSERT_TRUE(Eventually([&] { return !guest_->bridge()->link_up(); }));
  }
  const absl::Status s = bus.Resume(Deadline());
  EXPECT_FALSE(s.ok());
  if (BackendOf(GetParam()) == BackendKind::kMock) {
    // The mock link reports the loss: every device is removed.
    EXPECT_TRUE(Eventually([&] { return devices_.Of(instance).removes.load() == 1; }));
    EXPECT_EQ(bus.phase(), BusPhase::kDisconnected);
  } else {
    // A hypervisor has no "link lost": the InitiateContact's connection is refused, which is
    // the host refusing the version. The bus stays suspended with its devices.
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_EQ(bus.phase(), BusPhase::kSuspended);
    EXPECT_EQ(devices_.Of(instance).removes.load(), 0);
  }
}

TEST_P(SuspendResumeTest, AHundredCyclesWithPermutedRelidsCheckEveryPacket) {
  Attach();
  Configure(/*permute=*/true);
  const std::vector<Guid> instances = {OfferEcho(true), OfferEcho(false), OfferEcho(false)};
  ChannelBus& bus = guest_->bus();
  ASSERT_TRUE(bus.Connect(Deadline()).ok());
  constexpr int cycles = 100;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    for (const Guid& instance : instances) Traffic(instance, 20);
    ASSERT_TRUE(bus.Suspend(Deadline()).ok()) << "cycle " << cycle;
    ASSERT_TRUE(bus.Resume(Deadline()).ok()) << "cycle " << cycle;
  }
  for (const Guid& instance : instances) {
    Traffic(instance, 20);
    EXPECT_EQ(devices_.Of(instance).resumes.load(), cycles);
    EXPECT_EQ(devices_.Of(instance).probes.load(), 1);
  }
  EXPECT_EQ(bus.stats().offers_resumed, 3u * cycles);
  EXPECT_EQ(bus.stats().errors, 0u);
}

INSTANTIATE_TEST_SUITE_P(Hosts, SuspendResumeTest, AllHostsAndBackends(), E2eParamName());

}  // namespace
}  // namespace vbus::e2e
