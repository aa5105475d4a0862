// End to end: per-VP event delivery (docs/protocol.md §12) against the mock host, in this
// process and as a separate //mock:mock_host process, over MockBackend and HyperVBackend
// (e2e_params.h). The guest takes events on four virtual processors (MockBackend: four event
// bitmaps, four futex doorbells, four doorbell threads; HyperV: four VPs' SynIC event flags
// and interrupt threads, fed by the bridge's four doorbell threads);
// eight echo channels spread over them carry traffic while a mover thread keeps moving them to
// other VPs (ModifyChannel), and the host signals each channel in its current target VP's
// flags. Every packet comes back, in order and intact, and every VP delivered events.
//
// Usage: per_vp_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <atomic>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/runtime/channel_bus.h"
#include "gtest/gtest.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/e2e_params.h"
#include "test/e2e/echo_stream.h"

namespace vbus::e2e {
namespace {

constexpr uint32_t kVps = 4;
constexpr size_t kChannels = 8;
constexpr uint64_t kPackets = 20000;  // per channel, each way

class PerVpTest : public ::testing::TestWithParam<E2eParam> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<E2eHost>> host = E2eHost::Start(ModeOf(GetParam()), Deadline());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    E2eGuestOptions guest_options;
    guest_options.backend = BackendOf(GetParam());
    guest_options.vp_count = kVps;
    ChannelBusOptions options;
    options.log = [](absl::string_view line) { std::cerr << "guest: " << line << "\n"; };
    absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
        E2eGuest::Attach(*host_, kGuest, std::move(options), std::move(guest_options));
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = std::move(*guest);
    bus_ = &guest_->bus();
  }
  void TearDown() override {
    bus_ = nullptr;
    guest_.reset();
    if (HasFailure() && host_ != nullptr) std::cerr << "mock_host log:\n" << host_->log() << "\n";
    host_.reset();
  }
  uint32_t HostTargetVp(uint32_t relid) {
    absl::StatusOr<v1::ChannelInfo> info = host_->Channel(kGuest, relid);
    return info.ok() ? info->target_vp() : ~0u;
  }

  static constexpr char kGuest[] = "per-vp-guest";
  std::unique_ptr<E2eHost> host_;
  std::unique_ptr<E2eGuest> guest_;
  ChannelBus* bus_ = nullptr;
};

TEST_P(PerVpTest, TrafficSpreadOverFourVpsWithChannelsMovingLosesNothing) {
  std::vector<uint32_t> relids;
  for (size_t i = 0; i < kChannels; ++i) {
    absl::StatusOr<v1::OfferResponse> offered = host_->Offer(kGuest, "echo");
    ASSERT_TRUE(offered.ok()) << offered.status();
    relids.push_back(offered->child_relid());
  }
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  std::vector<std::unique_ptr<EchoStream>> streams;
  std::vector<std::shared_ptr<Channel>> channels;
  for (size_t i = 0; i < kChannels; ++i) {
    streams.push_back(std::make_unique<EchoStream>(100 + i));
    std::shared_ptr<Channel> channel = bus_->FindChannel(relids[i]);
    ASSERT_NE(channel, nullptr);
    ChannelOpenOptions options = EchoOptions(streams[i].get(), 8);
    options.target_vp = static_cast<uint32_t>(i % kVps);
    ASSERT_TRUE(channel->Open(options, Deadline()).ok());
    EXPECT_EQ(HostTargetVp(relids[i]), i % kVps);
    channels.push_back(std::move(channel));
  }

  // The first half of the channels moves round the VPs for as long as traffic flows.
  std::atomic<bool> done{false};
  std::atomic<uint64_t> moves{0};
  std::thread mover([&] {
    for (uint32_t round = 1; !done.load(std::memory_order_relaxed); ++round) {
      for (size_t i = 0; i < kChannels / 2; ++i) {
        const uint32_t vp = static_cast<uint32_t>(i + round) % kVps;
        absl::Status s = channels[i]->SetTargetVp(vp, Deadline());
        ASSERT_TRUE(s.ok()) << s;
        moves.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });
  std::vector<std::thread> senders;
  for (size_t i = 0; i < kChannels; ++i) {
    senders.emplace_back(
        [&, i] { EXPECT_TRUE(streams[i]->SendRange(*channels[i], 0, kPackets).ok()); });
  }
  for (std::thread& t : senders) t.join();
  for (size_t i = 0; i < kChannels; ++i) {
    EXPECT_TRUE(streams[i]->WaitFor(kPackets, Deadline())) << "relid " << relids[i];
  }
  done.store(true);
  mover.join();

  EXPECT_GT(moves.load(), kChannels / 2);
  for (size_t i = 0; i < kChannels; ++i) {
    EXPECT_EQ(streams[i]->received(), kPackets) << "relid " << relids[i];
    EXPECT_EQ(streams[i]->bad(), 0u) << "relid " << relids[i];
    EXPECT_EQ(streams[i]->received_sum(), streams[i]->sent_sum()) << "relid " << relids[i];
  }
  // The host's view of where each channel is now matches the guest's last move.
  for (size_t i = kChannels / 2; i < kChannels; ++i) EXPECT_EQ(HostTargetVp(relids[i]), i % kVps);
  const BusStats stats = bus_->stats();
  ASSERT_EQ(stats.events_dispatched_per_vp.size(), kVps);
  for (uint32_t vp = 0; vp < kVps; ++vp) {
    EXPECT_GT(stats.events_dispatched_per_vp[vp], 0u) << "VP " << vp;
  }
  for (std::shared_ptr<Channel>& channel : channels) ASSERT_TRUE(channel->Close(Deadline()).ok());
}

// A VP past the guest's count is refused before anything is sent (the host would refuse it
// too: engine_channel_test shows that exchange message by message); the last VP works.
TEST_P(PerVpTest, AChannelOnTheLastVpWorksAndOneBeyondIsRefused) {
  absl::StatusOr<v1::OfferResponse> offered = host_->Offer(kGuest, "echo");
  ASSERT_TRUE(offered.ok()) << offered.status();
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  std::shared_ptr<Channel> channel = bus_->FindChannel(offered->child_relid());
  EchoStream stream(7);
  ChannelOpenOptions options = EchoOptions(&stream);
  options.target_vp = kVps;
  EXPECT_EQ(channel->Open(options, Deadline()).code(), absl::StatusCode::kInvalidArgument);
  options.target_vp = kVps - 1;
  ASSERT_TRUE(channel->Open(options, Deadline()).ok());
  EXPECT_EQ(HostTargetVp(offered->child_relid()), kVps - 1);
  ASSERT_TRUE(stream.SendRange(*channel, 0, 100).ok());
  ASSERT_TRUE(stream.WaitFor(100, Deadline()));
  EXPECT_GT(bus_->stats().events_dispatched_per_vp[kVps - 1], 0u);
  ASSERT_TRUE(channel->Close(Deadline()).ok());
}

INSTANTIATE_TEST_SUITE_P(Hosts, PerVpTest, AllHostsAndBackends(), E2eParamName());

}  // namespace
}  // namespace vbus::e2e
