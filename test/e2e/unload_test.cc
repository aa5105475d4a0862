// End to end: a forced unload with channels open and traffic flowing (a guest on its way to a
// crash dump or a kexec), against the mock host in this process and as a separate
// //mock:mock_host process, over MockBackend and HyperVBackend (e2e_params.h). Every driver is
// told, nothing leaks, the host has torn everything down, and the same bus connects again
// afterwards.
//
// Usage: unload_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <atomic>
#include <iostream>
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

namespace vbus::e2e {
namespace {

// Opens its echo channel in Probe; counts Remove calls.
class EchoDriver : public Driver {
 public:
  struct Shared {
    std::atomic<int> probes{0};
    std::atomic<int> removes{0};
    EchoStream streams[2] = {EchoStream(1), EchoStream(2)};
    std::atomic<Channel*> channels[2] = {nullptr, nullptr};
  };
  explicit EchoDriver(Shared* shared) : shared_(shared) {}
  absl::Status Probe(Channel& channel) override {
    index_ = shared_->probes.fetch_add(1) % 2;
    channel_ = &channel;
    absl::Status s = channel.Open(EchoOptions(&shared_->streams[index_]), Deadline());
    if (s.ok()) shared_->channels[index_].store(&channel);
    return s;
  }
  void Remove() override {
    shared_->channels[index_].store(nullptr);
    // Already closed by the unload: Close succeeds at once.
    EXPECT_TRUE(channel_->Close(Deadline()).ok());
    shared_->removes.fetch_add(1);
  }

 private:
  Shared* shared_;
  Channel* channel_ = nullptr;
  int index_ = 0;
};

class UnloadTest : public ::testing::TestWithParam<E2eParam> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<E2eHost>> host = E2eHost::Start(ModeOf(GetParam()), Deadline());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    ASSERT_TRUE(
        drivers_
            .Register({"echo", mock::kEchoDeviceClass,
                       [this](const OfferInfo&) { return std::make_unique<EchoDriver>(&shared_); }})
            .ok());
    ChannelBusOptions options;
    options.drivers = &drivers_;
    options.log = [](absl::string_view line) { std::cerr << "guest: " << line << "\n"; };
    options.on_offer_removed = [this](const OfferInfo&, const absl::Status& why) {
      MutexLock lock(&mu_);
      removed_.push_back(why);
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
  std::vector<absl::Status> Removed() {
    MutexLock lock(&mu_);
    return removed_;
  }

  static constexpr char kGuest[] = "unload-guest";
  std::unique_ptr<E2eHost> host_;
  std::unique_ptr<E2eGuest> guest_;
  DriverRegistry drivers_;
  EchoDriver::Shared shared_;
  Mutex mu_;
  std::vector<absl::Status> removed_ ABSL_GUARDED_BY(mu_);
};

TEST_P(UnloadTest, AForcedUnloadWithOpenChannelsTellsEveryDriverAndLeaksNothing) {
  ChannelBus& bus = guest_->bus();
  const size_t free_pages = guest_->free_pages();
  ASSERT_TRUE(host_->Offer(kGuest, "echo").ok());
  ASSERT_TRUE(host_->Offer(kGuest, "echo").ok());
  ASSERT_TRUE(bus.Connect(Deadline()).ok());
  ASSERT_EQ(shared_.probes.load(), 2);
  Channel* a = shared_.channels[0].load();
  Channel* b = shared_.channels[1].load();
  ASSERT_TRUE(a != nullptr && b != nullptr);
  // Traffic in flight when the unload starts: packets sent, echoes not all back.
  ASSERT_TRUE(shared_.streams[0].SendRange(*a, 0, 2000).ok());
  ASSERT_TRUE(shared_.streams[1].SendRange(*b, 0, 2000).ok());

  ASSERT_TRUE(bus.ForceUnload(Deadline()).ok());
  // Every driver was told before ForceUnload returned, with the reason.
  EXPECT_EQ(shared_.removes.load(), 2);
  std::vector<absl::Status> removed = Removed();
  ASSERT_EQ(removed.size(), 2u);
  for (const absl::Status& why : removed) EXPECT_EQ(why.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(bus.phase(), BusPhase::kDisconnected);
  EXPECT_TRUE(bus.Offers().empty());
  // Every ring page is back; no echo was checked wrong on the way down.
  EXPECT_EQ(guest_->free_pages(), free_pages);
  EXPECT_EQ(shared_.streams[0].bad() + shared_.streams[1].bad(), 0u);
  // The host tore both channels down and forgot the guest's connection.
  absl::StatusOr<std::vector<v1::ChannelInfo>> channels = host_->Channels(kGuest);
  ASSERT_TRUE(channels.ok()) << channels.status();
  for (const v1::ChannelInfo& c : *channels) {
    EXPECT_NE(c.state(), v1::CHANNEL_STATE_OPEN) << c.child_relid();
    EXPECT_EQ(c.ring_gpadl(), 0u) << c.child_relid();
  }

  // The same bus connects again: the drivers are probed afresh and traffic flows.
  ASSERT_TRUE(bus.Connect(Deadline()).ok());
  EXPECT_EQ(shared_.probes.load(), 4);
  Channel* again = shared_.channels[0].load();
  ASSERT_NE(again, nullptr);
  EchoStream fresh(9);
  ASSERT_TRUE(again->Close(Deadline()).ok());
  ASSERT_TRUE(again->Open(EchoOptions(&fresh), Deadline()).ok());
  ASSERT_TRUE(fresh.SendRange(*again, 0, 1000).ok());
  ASSERT_TRUE(fresh.WaitFor(1000, Deadline()));
  EXPECT_EQ(fresh.bad(), 0u);
  ASSERT_TRUE(bus.Shutdown(Deadline()).ok());
  EXPECT_EQ(shared_.removes.load(), 4);
  if (BackendOf(GetParam()) == BackendKind::kHyperV) {
    // The shutdown stopped the backend, which returned its own hypercall and input pages too
    // (docs/hyperv.md §14).
    EXPECT_GE(guest_->free_pages(), free_pages);
  } else {
    EXPECT_EQ(guest_->free_pages(), free_pages);
  }
}

TEST_P(UnloadTest, AForcedUnloadNeedsAConnection) {
  absl::Status s = guest_->bus().ForceUnload(Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

INSTANTIATE_TEST_SUITE_P(Hosts, UnloadTest, AllHostsAndBackends(), E2eParamName());

}  // namespace
}  // namespace vbus::e2e
