// End to end: sub-channels as a multi-queue driver uses them, against the mock host in this
// process and as a separate //mock:mock_host process, over MockBackend and HyperVBackend
// (e2e_params.h). The driver opens its echo primary in
// Probe and asks the echo device for three sub-channels (mock/host/sub_channel_request.h); the
// host hot-adds them, the driver hears of each (Driver::SubChannelOffered) and opens it, and
// every queue carries data. Then each way a device's channels end: the primary's Close (its
// sub-channels first), the host's rescind of the primary (its sub-channels first), and the bus's
// shutdown.
//
// Usage: sub_channel_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/driver.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/host/device_kinds.h"
#include "mock/host/sub_channel_request.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/e2e_params.h"
#include "test/e2e/echo_stream.h"  // Deadline
#include "test/e2e/eventually.h"

namespace vbus::e2e {
namespace {

using ::testing::ElementsAre;

constexpr uint16_t kQueues = 3;

// Callback mode (completions are matched by the dispatcher); the echo device answers Calls
// with completions, so no in-band data arrives.
ChannelOpenOptions SmallRings() {
  ChannelOpenOptions o;
  o.outbound_ring_pages = 4;
  o.inbound_ring_pages = 4;
  o.on_packet = [](const PacketView&) {};
  return o;
}

// What the driver saw, in order, and the channels it holds.
struct DriverState {
  Mutex mu;
  std::vector<std::string> events ABSL_GUARDED_BY(mu);
  Channel* primary ABSL_GUARDED_BY(mu) = nullptr;
  std::vector<Channel*> queues ABSL_GUARDED_BY(mu);
  void Add(std::string e) {
    MutexLock lock(&mu);
    events.push_back(std::move(e));
  }
  std::vector<std::string> Events() {
    MutexLock lock(&mu);
    return events;
  }
  size_t OpenQueues() {
    MutexLock lock(&mu);
    return static_cast<size_t>(
        std::count_if(queues.begin(), queues.end(), [](Channel* c) { return c->is_open(); }));
  }
};

class MultiQueueDriver : public Driver {
 public:
  explicit MultiQueueDriver(DriverState* state) : state_(state) {}
  absl::Status Probe(Channel& channel) override {
    if (absl::Status s = channel.Open(SmallRings(), Deadline()); !s.ok()) return s;
    {
      MutexLock lock(&state_->mu);
      state_->primary = &channel;
    }
    const std::vector<uint8_t> request = mock::EncodeSubChannelRequest(kQueues);
    absl::StatusOr<std::vector<uint8_t>> answer = channel.Call(request, Deadline());
    if (!answer.ok()) return answer.status();
    absl::StatusOr<mock::SubChannelAnswer> parsed = mock::ParseSubChannelAnswer(*answer);
    if (!parsed.ok()) return parsed.status();
    state_->Add(absl::StrCat("asked for ", parsed->count, ": status ", parsed->status));
    return absl::OkStatus();
  }
  void SubChannelOffered(Channel& sub) override {
    const absl::Status s = sub.Open(SmallRings(), Deadline());
    state_->Add(absl::StrCat("queue ", sub.offer().sub_channel_index, " ", s.ToString()));
    MutexLock lock(&state_->mu);
    state_->queues.push_back(&sub);
  }
  void SubChannelRemoved(Channel& sub, const absl::Status& reason) override {
    state_->Add(absl::StrCat("queue ", sub.offer().sub_channel_index, " removed ",
                             absl::StatusCodeToString(reason.code()),
                             sub.is_open() ? " open" : " closed"));
    MutexLock lock(&state_->mu);
    state_->queues.erase(std::remove(state_->queues.begin(), state_->queues.end(), &sub),
                         state_->queues.end());
  }
  void Remove() override {
    Channel* primary;
    {
      MutexLock lock(&state_->mu);
      primary = state_->primary;
      state_->primary = nullptr;
    }
    state_->Add(absl::StrCat("remove, ", state_->OpenQueues(), " queues open"));
    if (primary != nullptr) {
      EXPECT_TRUE(primary->Close(Deadline()).ok());
    }
  }

 private:
  DriverState* state_;
};

class SubChannelTest : public ::testing::TestWithParam<E2eParam> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_
                    .Register({"multiqueue", mock::kEchoDeviceClass,
                               [this](const OfferInfo&) {
                                 return std::make_unique<MultiQueueDriver>(&state_);
                               }})
                    .ok());
    absl::StatusOr<std::unique_ptr<E2eHost>> host = E2eHost::Start(ModeOf(GetParam()), Deadline());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    E2eGuestOptions guest_options;
    guest_options.backend = BackendOf(GetParam());
    ChannelBusOptions options;
    options.drivers = &registry_;
    options.log = [](absl::string_view line) { std::cerr << "guest: " << line << "\n"; };
    absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
        E2eGuest::Attach(*host_, kGuest, std::move(options), std::move(guest_options));
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = std::move(*guest);
    bus_ = &guest_->bus();

    absl::StatusOr<v1::OfferResponse> offered = host_->Offer(kGuest, "echo");
    ASSERT_TRUE(offered.ok()) << offered.status();
    primary_relid_ = offered->child_relid();
    ASSERT_TRUE(bus_->Connect(Deadline()).ok());
    ASSERT_TRUE(Eventually([&] { return state_.OpenQueues() == kQueues; }))
        << ::testing::PrintToString(state_.Events());
  }
  void TearDown() override {
    bus_ = nullptr;
    guest_.reset();
    if (HasFailure() && host_ != nullptr) std::cerr << "mock_host log:\n" << host_->log() << "\n";
    host_.reset();
  }

  // The host's view of the device's channels: sub_channel_index → state.
  std::vector<std::pair<uint32_t, v1::ChannelState>> HostChannels() {
    std::vector<std::pair<uint32_t, v1::ChannelState>> out;
    absl::StatusOr<std::vector<v1::ChannelInfo>> channels = host_->Channels(kGuest);
    if (!channels.ok()) return out;
    for (const v1::ChannelInfo& c : *channels) out.push_back({c.sub_channel_index(), c.state()});
    std::sort(out.begin(), out.end());
    return out;
  }
  bool HostHasOpen(size_t n) {
    std::vector<std::pair<uint32_t, v1::ChannelState>> channels = HostChannels();
    return static_cast<size_t>(std::count_if(channels.begin(), channels.end(), [](const auto& c) {
             return c.second == v1::CHANNEL_STATE_OPEN;
           })) == n;
  }

  static constexpr char kGuest[] = "multiqueue-guest";
  DriverRegistry registry_;
  DriverState state_;
  std::unique_ptr<E2eHost> host_;
  std::unique_ptr<E2eGuest> guest_;
  ChannelBus* bus_ = nullptr;
  uint32_t primary_relid_ = 0;
};

TEST_P(SubChannelTest, TheDriverAsksForQueuesAndOpensEachAsItArrives) {
  EXPECT_THAT(state_.Events(),
              ElementsAre("asked for 3: status 0", "queue 1 OK", "queue 2 OK", "queue 3 OK"));
  // Every queue is the echo device's, with the primary's GUIDs, open on both sides.
  EXPECT_TRUE(Eventually([&] { return HostHasOpen(4); }));
  for (uint16_t index = 1; index <= kQueues; ++index) {
    std::shared_ptr<Channel> queue =
        bus_->FindChannel(bus_->FindChannel(primary_relid_)->offer().interface_instance, index);
    ASSERT_NE(queue, nullptr);
    const std::string ping = absl::StrCat("queue-", index, "!");  // 8 bytes: echoed as sent
    absl::StatusOr<std::vector<uint8_t>> pong =
        queue->Call({reinterpret_cast<const uint8_t*>(ping.data()), ping.size()}, Deadline());
    ASSERT_TRUE(pong.ok()) << pong.status();
    EXPECT_EQ(std::string(pong->begin(), pong->end()), ping);
  }
  // Asking again for as many offers nothing new.
  std::shared_ptr<Channel> primary = bus_->FindChannel(primary_relid_);
  absl::StatusOr<std::vector<uint8_t>> again =
      primary->Call(mock::EncodeSubChannelRequest(kQueues), Deadline());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(mock::ParseSubChannelAnswer(*again)->status, 0u);
  EXPECT_EQ(HostChannels().size(), 4u);
}

TEST_P(SubChannelTest, ClosingThePrimaryClosesItsQueuesFirst) {
  std::shared_ptr<Channel> primary = bus_->FindChannel(primary_relid_);
  ASSERT_TRUE(primary->Close(Deadline()).ok());
  EXPECT_EQ(state_.OpenQueues(), 0u);
  EXPECT_TRUE(Eventually([&] { return HostHasOpen(0); }));
  // The queues stay offered; they open again once the primary is open.
  std::shared_ptr<Channel> queue =
      bus_->FindChannel(primary->offer().interface_instance, /*sub_channel_index=*/2);
  EXPECT_TRUE(queue->Close(Deadline()).ok());  // closed with its primary: OK at once
  EXPECT_EQ(queue->Open(SmallRings(), Deadline()).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(primary->Open(SmallRings(), Deadline()).ok());
  ASSERT_TRUE(queue->Open(SmallRings(), Deadline()).ok());
  EXPECT_TRUE(Eventually([&] { return HostHasOpen(2); }));
}

TEST_P(SubChannelTest, TheHostsRescindOfThePrimaryTakesTheQueuesFirst) {
  ASSERT_TRUE(host_->Rescind(kGuest, primary_relid_).ok());
  ASSERT_TRUE(Eventually([&] {
    const std::vector<std::string> events = state_.Events();
    return !events.empty() && absl::StartsWith(events.back(), "remove");
  }));
  EXPECT_THAT(
      state_.Events(),
      ElementsAre("asked for 3: status 0", "queue 1 OK", "queue 2 OK", "queue 3 OK",
                  "queue 1 removed UNAVAILABLE closed", "queue 2 removed UNAVAILABLE closed",
                  "queue 3 removed UNAVAILABLE closed", "remove, 0 queues open"));
  EXPECT_TRUE(Eventually([&] { return HostChannels().empty(); }));  // every relid released
}

TEST_P(SubChannelTest, ShutdownClosesTheQueuesFirstAndTellsTheDriver) {
  ASSERT_TRUE(bus_->Shutdown(Deadline()).ok());
  EXPECT_THAT(state_.Events(),
              ElementsAre("asked for 3: status 0", "queue 1 OK", "queue 2 OK", "queue 3 OK",
                          "queue 1 removed CANCELLED closed", "queue 2 removed CANCELLED closed",
                          "queue 3 removed CANCELLED closed", "remove, 0 queues open"));
}

INSTANTIATE_TEST_SUITE_P(Hosts, SubChannelTest, AllHostsAndBackends(), E2eParamName());

}  // namespace
}  // namespace vbus::e2e
