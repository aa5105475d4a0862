// Per-VP event delivery over TestHost (docs/protocol.md §12): a backend that takes events on
// four virtual processors, channels opened on each, the host signalling every channel in its
// target VP's event flags, and channels moved between VPs (ModifyChannel) while echo traffic
// flows. Every packet comes back once and in order, a channel's receive callback never runs on
// two VPs at once, and an event left on a VP the channel no longer targets is still delivered.
#include <array>
#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/runtime/channel.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/channel_bus_testing.h"
#include "core/runtime/sync.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

using testing::Deadline;
using testing::kTestClass;
using testing::TestHost;

constexpr uint32_t kVps = 4;
constexpr std::array<Guid, 8> kInstances = {
    Guid::Literal("00000001-0000-4000-8000-000000000001"),
    Guid::Literal("00000002-0000-4000-8000-000000000002"),
    Guid::Literal("00000003-0000-4000-8000-000000000003"),
    Guid::Literal("00000004-0000-4000-8000-000000000004"),
    Guid::Literal("00000005-0000-4000-8000-000000000005"),
    Guid::Literal("00000006-0000-4000-8000-000000000006"),
    Guid::Literal("00000007-0000-4000-8000-000000000007"),
    Guid::Literal("00000008-0000-4000-8000-000000000008"),
};

// One channel's echoes: the receive callback checks order and that it never runs twice at once.
class Echoes {
 public:
  void OnPacket(const PacketView& p) {
    // [VP-E1] acq_rel: a second callback entering before the first left would see true.
    if (in_callback_.exchange(true, std::memory_order_acq_rel)) overlaps_.fetch_add(1);
    uint64_t index = ~uint64_t{0};
    if (p.payload().size() >= 8) std::memcpy(&index, p.payload().data(), 8);
    if (index != next_) out_of_order_.fetch_add(1);
    ++next_;
    in_callback_.store(false, std::memory_order_release);  // [VP-E2] pairs with [VP-E1]
    MutexLock lock(&mu_);
    received_ = next_;
    cv_.SignalAll();
  }
  bool WaitFor(uint64_t count) {
    MutexLock lock(&mu_);
    return cv_.AwaitWithDeadline(
        &mu_, Deadline(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return received_ >= count; });
  }
  uint64_t overlaps() const { return overlaps_.load(); }
  uint64_t out_of_order() const { return out_of_order_.load(); }

 private:
  std::atomic<bool> in_callback_{false};
  std::atomic<uint64_t> overlaps_{0};
  std::atomic<uint64_t> out_of_order_{0};
  uint64_t next_ = 0;  // the dispatching thread's (one callback at a time)
  Mutex mu_;
  CondVar cv_;
  uint64_t received_ ABSL_GUARDED_BY(mu_) = 0;
};

class PerVpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (size_t i = 0; i < kInstances.size(); ++i) {
      host_.AddOffer(static_cast<uint32_t>(10 + i), kTestClass, kInstances[i]);
    }
    absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&host_, {});
    ASSERT_TRUE(bus.ok()) << bus.status();
    bus_ = std::move(*bus);
    ASSERT_TRUE(bus_->Connect(Deadline()).ok());
    host_.Update([](TestHost::Rules& r) { r.echo = true; });
  }
  void TearDown() override {
    channels_.clear();
    bus_.reset();
  }
  // Opens relid 10 + i on VP i % kVps.
  void OpenAll(size_t count) {
    for (size_t i = 0; i < count; ++i) {
      std::shared_ptr<Channel> channel = bus_->FindChannel(static_cast<uint32_t>(10 + i));
      ASSERT_NE(channel, nullptr);
      ChannelOpenOptions o;
      o.outbound_ring_pages = 4;
      o.inbound_ring_pages = 4;
      o.target_vp = static_cast<uint32_t>(i % kVps);
      Echoes* echoes = &echoes_[i];
      o.on_packet = [echoes](const PacketView& p) { echoes->OnPacket(p); };
      ASSERT_TRUE(channel->Open(o, Deadline()).ok());
      channels_.push_back(channel);
    }
  }
  static absl::Status SendNumbered(Channel& channel, uint64_t first, uint64_t count) {
    SendOptions wait;
    uint8_t payload[24] = {};
    for (uint64_t i = first; i < first + count; ++i) {
      std::memcpy(payload, &i, 8);
      wait.deadline = Deadline();
      if (absl::Status s = channel.Send(payload, wait); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  TestHost host_{4096, kVps};
  std::unique_ptr<ChannelBus> bus_;
  std::vector<std::shared_ptr<Channel>> channels_;
  std::array<Echoes, kInstances.size()> echoes_;
};

TEST_F(PerVpTest, EachVpDeliversTheChannelsThatTargetIt) {
  OpenAll(kInstances.size());
  for (size_t i = 0; i < channels_.size(); ++i) {
    ASSERT_TRUE(SendNumbered(*channels_[i], 0, 500).ok());
  }
  for (size_t i = 0; i < channels_.size(); ++i) {
    ASSERT_TRUE(echoes_[i].WaitFor(500)) << "relid " << 10 + i;
    EXPECT_EQ(echoes_[i].out_of_order(), 0u);
    EXPECT_EQ(host_.TargetVp(static_cast<uint32_t>(10 + i)), i % kVps);
  }
  const BusStats stats = bus_->stats();
  ASSERT_EQ(stats.events_dispatched_per_vp.size(), kVps);
  for (uint32_t vp = 0; vp < kVps; ++vp) {
    EXPECT_GT(stats.events_dispatched_per_vp[vp], 0u) << "VP " << vp;
  }
}

// The claim of docs/protocol.md §12: channels move between VPs under traffic, and nothing is
// lost, reordered or delivered twice, and no callback runs on two VPs at once.
TEST_F(PerVpTest, ChannelsMovedUnderTrafficLoseNothing) {
  constexpr uint64_t kPackets = 20000;
  OpenAll(4);
  std::atomic<bool> done{false};
  std::atomic<uint64_t> moves{0};
  std::thread mover([&] {
    uint32_t round = 0;
    while (!done.load(std::memory_order_relaxed)) {
      for (size_t i = 0; i < channels_.size(); ++i) {
        const uint32_t vp = (round + static_cast<uint32_t>(i) + 1) % kVps;
        absl::Status s = channels_[i]->SetTargetVp(vp, Deadline());
        ASSERT_TRUE(s.ok()) << s;
        moves.fetch_add(1, std::memory_order_relaxed);
      }
      ++round;
    }
  });
  // Late signals: another thread keeps raising the channels' relids on every VP, as signals
  // made before a move would, so that two VPs deliver the same channel at the same time.
  std::thread late_signals([&] {
    uint32_t n = 0;
    while (!done.load(std::memory_order_relaxed)) {
      const uint32_t relid = 10 + n % static_cast<uint32_t>(channels_.size());
      ASSERT_TRUE(host_.fake().RaiseEvent(relid, (n / 4) % kVps).ok());
      ++n;
    }
  });
  std::vector<std::thread> senders;
  for (size_t i = 0; i < channels_.size(); ++i) {
    senders.emplace_back([&, i] { EXPECT_TRUE(SendNumbered(*channels_[i], 0, kPackets).ok()); });
  }
  for (std::thread& t : senders) t.join();
  for (size_t i = 0; i < channels_.size(); ++i) {
    EXPECT_TRUE(echoes_[i].WaitFor(kPackets)) << "relid " << 10 + i;
  }
  done.store(true);
  mover.join();
  late_signals.join();
  EXPECT_GT(moves.load(), channels_.size());  // the moves did overlap the traffic
  for (size_t i = 0; i < channels_.size(); ++i) {
    EXPECT_EQ(echoes_[i].out_of_order(), 0u) << "relid " << 10 + i;
    EXPECT_EQ(echoes_[i].overlaps(), 0u) << "relid " << 10 + i;
    EXPECT_EQ(channels_[i]->stats().packets_received, kPackets);
  }
}

// A signal the host made just before a move lands on the old VP: it is still delivered, and
// the same packet is not delivered again by the new VP's event.
TEST_F(PerVpTest, AnEventLeftOnTheOldVpIsStillDelivered) {
  OpenAll(1);  // relid 10 on VP 0
  ASSERT_TRUE(channels_[0]->SetTargetVp(2, Deadline()).ok());
  EXPECT_EQ(host_.TargetVp(10), 2u);
  uint8_t payload[16] = {};
  ASSERT_TRUE(host_.WriteToGuest(10, PacketType::kDataInband, 0, 0, payload).ok());  // on VP 2
  ASSERT_TRUE(echoes_[0].WaitFor(1));
  // Late signals on the old VP and on the new one: nothing new to deliver.
  ASSERT_TRUE(host_.fake().RaiseEvent(10, 0).ok());
  ASSERT_TRUE(host_.fake().RaiseEvent(10, 2).ok());
  uint64_t one = 1;
  std::memcpy(payload, &one, 8);
  ASSERT_TRUE(host_.fake().RaiseEvent(10, 0).ok());
  ASSERT_TRUE(host_.WriteToGuest(10, PacketType::kDataInband, 0, 0, payload).ok());
  ASSERT_TRUE(echoes_[0].WaitFor(2));
  EXPECT_EQ(channels_[0]->stats().packets_received, 2u);
  EXPECT_EQ(echoes_[0].out_of_order(), 0u);
  const BusStats stats = bus_->stats();
  EXPECT_GT(stats.events_dispatched_per_vp[0], 0u);
  EXPECT_GT(stats.events_dispatched_per_vp[2], 0u);
}

TEST_F(PerVpTest, AVpTheBackendDoesNotServeIsRefusedBeforeAnythingIsSent) {
  std::shared_ptr<Channel> channel = bus_->FindChannel(10);
  ChannelOpenOptions o;
  o.target_vp = kVps;
  o.on_packet = [](const PacketView&) {};
  const size_t posted = host_.Posted().size();
  absl::Status s = channel->Open(o, Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(host_.Posted().size(), posted);
  OpenAll(1);
  s = channels_[0]->SetTargetVp(kVps, Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(host_.TargetVp(10), 0u);
}

}  // namespace
}  // namespace vbus
