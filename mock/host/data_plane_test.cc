// GuestDataPlane against a guest in the same process: real shared memory (a second mapping
// of the guest's memfd, as the host process would have), real rings, event pages and
// doorbells; ProcessEvents is called directly, so every step is deterministic.
#include "mock/host/data_plane.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "core/data/protocol.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/host/sub_channel_request.h"
#include "mock/testing/guest_rings.h"

namespace vbus::mock {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using testing::GuestPages;
using testing::GuestRings;
using ::testing::HasSubstr;
using testing::ReceivedPacket;
using ::testing::SizeIs;

constexpr uint64_t kMemoryBytes = 256 * protocol::kPageSize;

std::vector<uint8_t> Bytes(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

// The payload as received: the sender's bytes padded with zeros to 8.
std::vector<uint8_t> Padded(std::vector<uint8_t> b) {
  b.resize((b.size() + 7) / 8 * 8, 0);
  return b;
}

class DataPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto guest = GuestMemory::Create("", kMemoryBytes);
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_memory_ = std::move(*guest);
    pages_.emplace(*guest_memory_);
    auto host = GuestMemory::Open(guest_memory_->path(), kMemoryBytes, MemoryLayout{});
    ASSERT_TRUE(host.ok()) << host.status();
    DataPlaneHooks hooks;
    hooks.wants_packets = [this] { return watch_.load(); };
    hooks.on_packet = [this](v1::GuestPacket p) {
      MutexLock lock(&mu_);
      packets_.push_back(std::move(p));
    };
    hooks.on_event = [this](v1::ProtocolEvent e) {
      MutexLock lock(&mu_);
      events_.push_back(std::move(e));
    };
    if (take_sub_channel_requests_) {
      hooks.on_sub_channel_request = [this](uint32_t relid, uint16_t count) {
        MutexLock lock(&mu_);
        sub_channel_requests_.emplace_back(relid, count);
        return absl::OkStatus();
      };
    }
    auto plane = GuestDataPlane::Create("guest-1", std::move(*host), nullptr, std::move(hooks));
    ASSERT_TRUE(plane.ok()) << plane.status();
    plane_ = std::move(*plane);
  }

  // Allocates rings for `relid` and maps them in the host as `device`.
  std::unique_ptr<GuestRings> Open(uint32_t relid, const std::string& device,
                                   uint32_t outbound_pages = 4, uint32_t inbound_pages = 4,
                                   std::optional<uint32_t> monitor_id = std::nullopt) {
    auto pfns = pages_->Allocate(outbound_pages + inbound_pages);
    EXPECT_TRUE(pfns.ok());
    auto rings = GuestRings::Create(*guest_memory_, relid, *pfns, outbound_pages);
    EXPECT_TRUE(rings.ok()) << rings.status();
    std::vector<uint64_t> out(pfns->begin(), pfns->begin() + outbound_pages);
    std::vector<uint64_t> in(pfns->begin() + outbound_pages, pfns->end());
    absl::Status s = plane_->MapChannel(relid, device, out, in, monitor_id);
    EXPECT_TRUE(s.ok()) << s;
    return std::move(*rings);
  }

  uint32_t GuestDoorbell() { return guest_memory_->DoorbellValue(Doorbell::kGuest); }

  std::unique_ptr<GuestMemory> guest_memory_;
  std::optional<GuestPages> pages_;
  std::unique_ptr<GuestDataPlane> plane_;
  std::atomic<bool> watch_{true};
  Mutex mu_;
  std::vector<v1::GuestPacket> packets_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ProtocolEvent> events_ ABSL_GUARDED_BY(mu_);
  // Whether SetUp installs on_sub_channel_request (recording into sub_channel_requests_).
  bool take_sub_channel_requests_ = true;
  std::vector<std::pair<uint32_t, uint16_t>> sub_channel_requests_ ABSL_GUARDED_BY(mu_);
};

// A data plane whose runtime takes no sub-channel requests (no hook).
class DataPlaneWithoutSubChannelsTest : public DataPlaneTest {
 protected:
  DataPlaneWithoutSubChannelsTest() { take_sub_channel_requests_ = false; }
};

TEST_F(DataPlaneTest, EchoAnswersWithTheSameBytesAndSignalsOnce) {
  std::unique_ptr<GuestRings> rings = Open(3, "echo");
  const std::vector<uint8_t> hello = Bytes("hello, host");
  ASSERT_TRUE(*rings->Send(PacketType::kDataInband, 0, 42, hello));  // empty ring: signalled
  EXPECT_EQ(guest_memory_->DoorbellValue(Doorbell::kHost), 1u);
  const uint32_t doorbell = GuestDoorbell();
  EXPECT_EQ(plane_->ProcessEvents(), 1u);
  EXPECT_EQ(GuestDoorbell(), doorbell + 1);  // one signal back
  auto p = rings->TryReceive();
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_EQ((*p)->type, static_cast<uint16_t>(PacketType::kDataInband));
  EXPECT_EQ((*p)->trans_id, 42u);
  EXPECT_EQ((*p)->payload, Padded(hello));
  EXPECT_EQ(plane_->ProcessEvents(), 0u);  // nothing more pending

  absl::StatusOr<ChannelCounters> c = plane_->Counters(3);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->packets_from_guest, 1u);
  EXPECT_EQ(c->packets_to_guest, 1u);
  EXPECT_EQ(c->signals_from_guest, 1u);
  EXPECT_EQ(c->signals_to_guest, 1u);
  MutexLock lock(&mu_);
  ASSERT_THAT(packets_, SizeIs(1));
  EXPECT_EQ(packets_[0].guest_id(), "guest-1");
  EXPECT_EQ(packets_[0].child_relid(), 3u);
  EXPECT_EQ(packets_[0].transaction_id(), 42u);
  EXPECT_EQ(packets_[0].payload(), std::string("hello, host") + std::string(5, '\0'));
}

TEST_F(DataPlaneTest, EchoHonoursCompletionRequested) {
  std::unique_ptr<GuestRings> rings = Open(3, "echo");
  ASSERT_TRUE(
      rings->Send(PacketType::kDataInband, kCompletionRequested, 7, Bytes("abcdefgh")).ok());
  // A completion from the guest is consumed without an answer.
  ASSERT_TRUE(rings->Send(PacketType::kCompletion, 0, 8, Bytes("x")).ok());
  plane_->ProcessEvents();
  auto p = rings->TryReceive();
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->type, static_cast<uint16_t>(PacketType::kCompletion));
  EXPECT_EQ((*p)->trans_id, 7u);
  EXPECT_EQ((*p)->payload, Bytes("abcdefgh"));
  EXPECT_FALSE(rings->TryReceive()->has_value());
}

TEST_F(DataPlaneTest, EchoAnswersASubChannelRequestAndAsksTheHost) {
  std::unique_ptr<GuestRings> rings = Open(3, "echo");
  ASSERT_TRUE(
      rings->Send(PacketType::kDataInband, kCompletionRequested, 11, EncodeSubChannelRequest(3))
          .ok());
  // Bad counts are answered, but the host is not asked.
  ASSERT_TRUE(rings->Send(PacketType::kDataInband, 0, 12, EncodeSubChannelRequest(65)).ok());
  ASSERT_TRUE(rings->Send(PacketType::kDataInband, 0, 13, EncodeSubChannelRequest(0)).ok());
  EXPECT_EQ(plane_->ProcessEvents(), 1u);
  const std::pair<uint64_t, std::pair<uint32_t, uint16_t>> expected[] = {
      {11, {protocol::kStatusSuccess, 3}},
      {12, {protocol::kStatusUnsuccessful, 65}},
      {13, {protocol::kStatusUnsuccessful, 0}},
  };
  for (const auto& [trans_id, answer] : expected) {
    auto p = rings->TryReceive();
    ASSERT_TRUE(p.ok() && p->has_value()) << trans_id;
    EXPECT_EQ((*p)->trans_id, trans_id);
    EXPECT_EQ((*p)->type, static_cast<uint16_t>(trans_id == 11 ? PacketType::kCompletion
                                                               : PacketType::kDataInband));
    EXPECT_EQ((*p)->payload, EncodeSubChannelAnswer(answer.first, answer.second));
    absl::StatusOr<SubChannelAnswer> a = ParseSubChannelAnswer((*p)->payload);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->status, answer.first);
    EXPECT_EQ(a->count, answer.second);
  }
  EXPECT_FALSE(rings->TryReceive()->has_value());
  MutexLock lock(&mu_);
  EXPECT_THAT(sub_channel_requests_, ElementsAre(std::make_pair(3u, uint16_t{3})));
}

// The answer waits for room in a full inbound ring like an echo does; the host is asked once,
// however often the packet is handed to the device again.
TEST_F(DataPlaneTest, ASubChannelAnswerRetriedForRoomAsksTheHostOnce) {
  std::unique_ptr<GuestRings> rings = Open(3, "echo", 4, 2);  // 4096 data bytes inbound
  // An echo of 4064 ring bytes (16 header + 4040 + 8) leaves 32 free: the 48-byte answer
  // packet does not fit until the guest reads the echo.
  const std::vector<uint8_t> filler(4040, 0xAB);
  ASSERT_TRUE(rings->Send(PacketType::kDataInband, 0, 1, filler).ok());
  ASSERT_TRUE(rings->Send(PacketType::kDataInband, 0, 2, EncodeSubChannelRequest(2)).ok());
  EXPECT_EQ(plane_->ProcessEvents(), 1u);
  EXPECT_NE(rings->inbound_control()->pending_send_sz, 0u);  // the host waits for room
  // Drains without room hand the request to the device again.
  ASSERT_TRUE(plane_->DrainChannel(3).ok());
  ASSERT_TRUE(plane_->DrainChannel(3).ok());
  {
    MutexLock lock(&mu_);
    EXPECT_THAT(sub_channel_requests_, ElementsAre(std::make_pair(3u, uint16_t{2})));
  }
  auto echo = rings->TryReceive();  // frees the room and signals the host
  ASSERT_TRUE(echo.ok() && echo->has_value());
  EXPECT_EQ((*echo)->trans_id, 1u);
  EXPECT_EQ(plane_->ProcessEvents(), 1u);
  auto answer = rings->TryReceive();
  ASSERT_TRUE(answer.ok() && answer->has_value());
  EXPECT_EQ((*answer)->trans_id, 2u);
  EXPECT_EQ((*answer)->payload, EncodeSubChannelAnswer(protocol::kStatusSuccess, 2));
  EXPECT_FALSE(rings->TryReceive()->has_value());
  EXPECT_TRUE(plane_->ChannelStatus(3).ok());
  MutexLock lock(&mu_);
  EXPECT_THAT(sub_channel_requests_, ElementsAre(std::make_pair(3u, uint16_t{2})));
}

TEST_F(DataPlaneWithoutSubChannelsTest, EchoRefusesSubChannelRequests) {
  std::unique_ptr<GuestRings> rings = Open(3, "echo");
  ASSERT_TRUE(rings->Send(PacketType::kDataInband, 0, 5, EncodeSubChannelRequest(3)).ok());
  plane_->ProcessEvents();
  auto p = rings->TryReceive();
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->trans_id, 5u);
  absl::StatusOr<SubChannelAnswer> a = ParseSubChannelAnswer((*p)->payload);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->status, protocol::kStatusUnsuccessful);
  EXPECT_EQ(a->count, 3u);
}

TEST_F(DataPlaneTest, BatchedPacketsAreDrainedWithOneSignal) {
  std::unique_ptr<GuestRings> rings = Open(3, "echo", 8, 8);
  int signalled = 0;
  for (int i = 0; i < 20; ++i) {
    const std::vector<uint8_t> b(static_cast<size_t>(i + 1), static_cast<uint8_t>(i));
    absl::StatusOr<bool> s = rings->Send(PacketType::kDataInband, 0, static_cast<uint64_t>(i), b);
    ASSERT_TRUE(s.ok()) << s.status();
    signalled += *s;
  }
  EXPECT_EQ(signalled, 1);  // only the first packet found the ring empty
  EXPECT_EQ(plane_->ProcessEvents(), 1u);
  for (int i = 0; i < 20; ++i) {
    auto p = rings->TryReceive();
    ASSERT_TRUE(p.ok() && p->has_value()) << i;
    EXPECT_EQ((*p)->trans_id, static_cast<uint64_t>(i));
    EXPECT_EQ((*p)->payload,
              Padded(std::vector<uint8_t>(static_cast<size_t>(i + 1), static_cast<uint8_t>(i))));
  }
  EXPECT_EQ(plane_->Counters(3)->signals_to_guest, 1u);
}

TEST_F(DataPlaneTest, FullInboundRingAppliesBackPressureAndLosesNothing) {
  // Outbound 8 pages, inbound 2 (4096 data bytes): the echo fills the inbound ring quickly.
  std::unique_ptr<GuestRings> rings = Open(3, "echo", 8, 2);
  constexpr int kPackets = 60;
  for (int i = 0; i < kPackets; ++i) {
    std::vector<uint8_t> b(200, static_cast<uint8_t>(i));
    ASSERT_TRUE(rings->Send(PacketType::kDataInband, 0, static_cast<uint64_t>(i), b).ok()) << i;
  }
  int received = 0;
  for (int round = 0; round < 100 && received < kPackets; ++round) {
    plane_->ProcessEvents();
    while (true) {
      auto p = rings->TryReceive();  // signals the host when it crosses pending_send_sz
      ASSERT_TRUE(p.ok()) << p.status();
      if (!p->has_value()) break;
      EXPECT_EQ((*p)->trans_id, static_cast<uint64_t>(received));
      EXPECT_EQ((*p)->payload, std::vector<uint8_t>(200, static_cast<uint8_t>(received)));
      ++received;
    }
  }
  EXPECT_EQ(received, kPackets);
  EXPECT_TRUE(plane_->ChannelStatus(3).ok());
}

TEST_F(DataPlaneTest, SinkCountsAndCompletes) {
  std::unique_ptr<GuestRings> rings = Open(5, "sink");
  watch_ = false;
  ASSERT_TRUE(rings->Send(PacketType::kDataInband, 0, 1, std::vector<uint8_t>(100)).ok());
  ASSERT_TRUE(
      rings->Send(PacketType::kDataInband, kCompletionRequested, 2, std::vector<uint8_t>(16)).ok());
  plane_->ProcessEvents();
  auto p = rings->TryReceive();
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->type, static_cast<uint16_t>(PacketType::kCompletion));
  EXPECT_EQ((*p)->trans_id, 2u);
  EXPECT_TRUE((*p)->payload.empty());
  EXPECT_FALSE(rings->TryReceive()->has_value());
  EXPECT_EQ(plane_->Counters(5)->bytes_from_guest, 104u + 16u);  // 100 padded to 104
  MutexLock lock(&mu_);
  EXPECT_THAT(packets_, SizeIs(0));  // nobody watching
}

TEST_F(DataPlaneTest, RawChannelsAreDrivenBySendPacket) {
  std::unique_ptr<GuestRings> rings = Open(9, "raw");
  const uint32_t doorbell = GuestDoorbell();
  absl::StatusOr<bool> s = plane_->SendPacket(9, PacketType::kDataInband, 0, 77, Bytes("ping"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(*s);
  EXPECT_EQ(GuestDoorbell(), doorbell + 1);
  EXPECT_FALSE(*plane_->SendPacket(9, PacketType::kCompletion, 0, 78, Bytes("pong")));
  EXPECT_EQ(GuestDoorbell(), doorbell + 1);  // ring not empty: no second signal
  auto a = rings->TryReceive();
  auto b = rings->TryReceive();
  ASSERT_TRUE(a.ok() && a->has_value() && b.ok() && b->has_value());
  EXPECT_EQ((*a)->trans_id, 77u);
  EXPECT_EQ((*b)->type, static_cast<uint16_t>(PacketType::kCompletion));

  // The guest's packets go to watchers only.
  ASSERT_TRUE(rings->Send(PacketType::kDataInband, 0, 5, Bytes("to the watcher")).ok());
  plane_->ProcessEvents();
  EXPECT_FALSE(rings->TryReceive()->has_value());
  {
    MutexLock lock(&mu_);
    ASSERT_THAT(packets_, SizeIs(1));
    EXPECT_EQ(packets_[0].transaction_id(), 5u);
  }

  // Errors: unknown relid, bad type, a packet larger than the ring, a full ring.
  EXPECT_EQ(plane_->SendPacket(10, PacketType::kDataInband, 0, 0, {}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(plane_->SendPacket(9, PacketType::kDataUsingGpaDirect, 0, 0, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plane_->SendPacket(9, PacketType::kDataInband, 0, 0, std::vector<uint8_t>(20000))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status full;
  for (int i = 0; i < 100 && full.ok(); ++i) {
    full =
        plane_->SendPacket(9, PacketType::kDataInband, 0, 0, std::vector<uint8_t>(1000)).status();
  }
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(plane_->ChannelStatus(9).ok());
}

TEST_F(DataPlaneTest, ScatteredGpadlPagesWork) {
  // Pages out of order and not adjacent, as a guest may hand them out.
  std::vector<uint64_t> pfns = {40, 41, 30, 31, 60, 10, 11, 12};
  auto rings = GuestRings::Create(*guest_memory_, 4, pfns, 4);
  ASSERT_TRUE(rings.ok()) << rings.status();
  ASSERT_TRUE(plane_->MapChannel(4, "echo", {40, 41, 30, 31}, {60, 10, 11, 12}, std::nullopt).ok());
  std::vector<uint8_t> big(3000);
  std::iota(big.begin(), big.end(), 0);
  for (int i = 0; i < 6; ++i) {  // wraps both rings
    ASSERT_TRUE((*rings)->Send(PacketType::kDataInband, 0, static_cast<uint64_t>(i), big).ok());
    plane_->ProcessEvents();
    auto p = (*rings)->TryReceive();
    ASSERT_TRUE(p.ok() && p->has_value()) << i;
    EXPECT_EQ((*p)->payload, Padded(big));
  }
}

// A monitored signal rings no doorbell: the host's doorbell thread, idle in a long wait while
// no monitored channel was open, must be woken by the first one's map to start scanning
// triggers (otherwise that channel's first signal waits for the idle tick).
TEST_F(DataPlaneTest, TheFirstMonitoredChannelWakesTheHostsDoorbellThread) {
  const uint32_t before = guest_memory_->DoorbellValue(Doorbell::kHost);
  std::unique_ptr<GuestRings> plain = Open(5, "echo");
  EXPECT_EQ(guest_memory_->DoorbellValue(Doorbell::kHost), before);
  std::unique_ptr<GuestRings> first = Open(6, "echo", 4, 4, /*monitor_id=*/37);
  const uint32_t woken = guest_memory_->DoorbellValue(Doorbell::kHost);
  EXPECT_NE(woken, before);
  std::unique_ptr<GuestRings> second = Open(7, "echo", 4, 4, /*monitor_id=*/38);
  EXPECT_EQ(guest_memory_->DoorbellValue(Doorbell::kHost), woken);  // scanning already
}

TEST_F(DataPlaneTest, MonitoredChannelsAreFoundThroughTriggerBits) {
  std::unique_ptr<GuestRings> rings = Open(6, "echo", 4, 4, /*monitor_id=*/37);
  EXPECT_TRUE(plane_->HasMonitoredChannels());
  // Write without signalling, then signal as a guest does for a monitored channel: its
  // interrupt bit and its monitor trigger, no doorbell.
  rings->outbound_control()->interrupt_mask = 1;  // so Send does not signal
  ASSERT_FALSE(*rings->Send(PacketType::kDataInband, 0, 1, Bytes("mnf")));
  rings->outbound_control()->interrupt_mask = 0;
  ASSERT_EQ(*guest_memory_->SignalChannel(6, 37), GuestMemory::Signalled::kMonitored);
  EXPECT_EQ(plane_->ProcessEvents(), 1u);
  EXPECT_EQ(plane_->monitor_signals_without_bit(), 0u);
  auto p = rings->TryReceive();
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->payload, Padded(Bytes("mnf")));
  // A trigger for a monitor id nobody owns is spurious.
  ASSERT_TRUE(guest_memory_->TriggerMonitor(100).ok());
  EXPECT_EQ(plane_->ProcessEvents(), 0u);
  EXPECT_EQ(plane_->spurious_events(), 1u);
  ASSERT_TRUE(plane_->UnmapChannel(6).ok());
  EXPECT_FALSE(plane_->HasMonitoredChannels());
}

// A guest must set a monitored channel's interrupt bit as well as its trigger
// (docs/protocol.md §12): a trigger alone still drains the channel, but is counted and reported.
// The bit may also have been taken by an earlier scan, before the trigger arrived.
TEST_F(DataPlaneTest, AMonitorTriggerWithoutTheInterruptBitIsReported) {
  std::unique_ptr<GuestRings> rings = Open(6, "echo", 4, 4, /*monitor_id=*/37);
  rings->outbound_control()->interrupt_mask = 1;
  ASSERT_FALSE(*rings->Send(PacketType::kDataInband, 0, 1, Bytes("only-trigger")));
  ASSERT_TRUE(guest_memory_->TriggerMonitor(37).ok());
  EXPECT_EQ(plane_->ProcessEvents(), 1u);
  EXPECT_EQ(plane_->monitor_signals_without_bit(), 1u);
  {
    MutexLock lock(&mu_);
    ASSERT_FALSE(events_.empty());
    EXPECT_EQ(events_.back().kind(), v1::EVENT_KIND_ERROR);
    EXPECT_THAT(events_.back().detail(), ::testing::HasSubstr("without setting its bit"));
  }
  // The bit first, taken by a scan of its own; the trigger afterwards: in order.
  absl::StatusOr<EventPage> host_events =
      EventPage::Attach(absl::MakeSpan(guest_memory_->HostEventPage(), EventPage::kBytes));
  ASSERT_TRUE(host_events.ok());
  ASSERT_TRUE(host_events->Set(6).ok());
  EXPECT_EQ(plane_->ProcessEvents(), 1u);
  ASSERT_TRUE(guest_memory_->TriggerMonitor(37).ok());
  EXPECT_EQ(plane_->ProcessEvents(), 1u);
  EXPECT_EQ(plane_->monitor_signals_without_bit(), 1u);
}

// A monitored signal that reaches the host after its channel was unmapped sets the relid's
// interrupt bit with no doorbell, and no scan comes for it (nothing monitored is open). The
// next channel under that relid must not inherit the bit: its first signal would find it set
// and not ring (a lost wakeup the simulation found: seeds 16402, 54301, 79282, 79499, 83071).
TEST_F(DataPlaneTest, ABitLeftByAnEarlierChannelDoesNotSwallowTheNextChannelsSignal) {
  std::unique_ptr<GuestRings> old_rings = Open(6, "echo", 4, 4, /*monitor_id=*/37);
  ASSERT_TRUE(plane_->UnmapChannel(6).ok());
  ASSERT_EQ(*guest_memory_->SignalChannel(6, 37), GuestMemory::Signalled::kMonitored);
  EXPECT_FALSE(plane_->HasMonitoredChannels());  // so the host does not scan for triggers

  std::unique_ptr<GuestRings> rings = Open(6, "echo");  // the relid again, not monitored
  EXPECT_EQ(plane_->stale_bits_cleared(), 1u);
  const uint32_t host_bell = guest_memory_->DoorbellValue(Doorbell::kHost);
  ASSERT_TRUE(*rings->Send(PacketType::kDataInband, 0, 1, Bytes("first")));
  EXPECT_EQ(guest_memory_->DoorbellValue(Doorbell::kHost), host_bell + 1);
  EXPECT_EQ(plane_->ProcessEvents(), 1u);
  auto p = rings->TryReceive();
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_EQ((*p)->payload, Padded(Bytes("first")));
}

TEST_F(DataPlaneTest, CorruptRingFailsOnlyThatChannel) {
  std::unique_ptr<GuestRings> bad = Open(3, "echo");
  std::unique_ptr<GuestRings> good = Open(4, "echo");
  bad->outbound_control()->write_index = 5;  // misaligned
  bad->SignalHost();
  ASSERT_TRUE(good->Send(PacketType::kDataInband, 0, 1, Bytes("fine")).ok());
  EXPECT_EQ(plane_->ProcessEvents(), 2u);
  EXPECT_EQ(plane_->ChannelStatus(3).code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(plane_->ChannelStatus(4).ok());
  auto p = good->TryReceive();
  ASSERT_TRUE(p.ok() && p->has_value());
  {
    MutexLock lock(&mu_);
    ASSERT_THAT(events_, SizeIs(1));
    EXPECT_EQ(events_[0].kind(), v1::EVENT_KIND_ERROR);
    EXPECT_EQ(events_[0].child_relid(), 3u);
    EXPECT_THAT(events_[0].detail(), HasSubstr("relid 3 stopped"));
  }
  // Later signals for the dead channel are ignored; sends report the failure.
  bad->SignalHost();
  EXPECT_EQ(plane_->ProcessEvents(), 1u);
  EXPECT_EQ(plane_->SendPacket(3, PacketType::kDataInband, 0, 0, Bytes("x")).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_TRUE(plane_->UnmapChannel(3).ok());
}

TEST_F(DataPlaneTest, SpuriousEventBitsAreCounted) {
  absl::StatusOr<EventPage> host_page =
      EventPage::Attach(absl::MakeSpan(guest_memory_->HostEventPage(), protocol::kPageSize));
  ASSERT_TRUE(host_page.ok());
  ASSERT_TRUE(host_page->Set(12).ok());
  ASSERT_TRUE(host_page->Set(protocol::kMaxRelid).ok());
  EXPECT_EQ(plane_->ProcessEvents(), 0u);
  EXPECT_EQ(plane_->spurious_events(), 2u);
  EXPECT_EQ(plane_->DrainChannel(12).code(), absl::StatusCode::kNotFound);
}

TEST_F(DataPlaneTest, MapChannelErrors) {
  auto pfns = pages_->Allocate(8);
  ASSERT_TRUE(pfns.ok());
  auto rings = GuestRings::Create(*guest_memory_, 2, *pfns, 4);
  ASSERT_TRUE(rings.ok());
  std::vector<uint64_t> out(pfns->begin(), pfns->begin() + 4);
  std::vector<uint64_t> in(pfns->begin() + 4, pfns->end());
  EXPECT_EQ(plane_->MapChannel(2, "toaster", out, in, std::nullopt).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plane_->MapChannel(0, "echo", out, in, std::nullopt).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plane_->MapChannel(2, "echo", out, {in[0], 99999}, std::nullopt).code(),
            absl::StatusCode::kOutOfRange);
  (*rings)->inbound_control()->read_index = protocol::kPageSize * 8;  // outside the data area
  absl::Status corrupt = plane_->MapChannel(2, "echo", out, in, std::nullopt);
  EXPECT_EQ(corrupt.code(), absl::StatusCode::kDataLoss) << corrupt;
  EXPECT_THAT(std::string(corrupt.message()), HasSubstr("inbound ring"));
  (*rings)->inbound_control()->read_index = 0;
  ASSERT_TRUE(plane_->MapChannel(2, "echo", out, in, std::nullopt).ok());
  EXPECT_EQ(plane_->MapChannel(2, "echo", out, in, std::nullopt).code(),
            absl::StatusCode::kAlreadyExists);
  absl::StatusOr<ChannelCounters> final_counters = plane_->UnmapChannel(2);
  ASSERT_TRUE(final_counters.ok());
  EXPECT_EQ(plane_->UnmapChannel(2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(plane_->SendPacket(2, PacketType::kDataInband, 0, 0, {}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(DataPlaneTest, SignalEventsCountSinceTheLastFlush) {
  std::unique_ptr<GuestRings> rings = Open(3, "echo");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(rings->Send(PacketType::kDataInband, 0, 1, Bytes("s")).ok());
    plane_->ProcessEvents();
    ASSERT_TRUE(rings->TryReceive()->has_value());
  }
  plane_->FlushSignalEvents();
  plane_->FlushSignalEvents();  // nothing new: no events
  MutexLock lock(&mu_);
  ASSERT_THAT(events_, SizeIs(2));
  EXPECT_EQ(events_[0].kind(), v1::EVENT_KIND_SIGNALS_FROM_GUEST);
  EXPECT_EQ(events_[0].count(), 3u);
  EXPECT_EQ(events_[1].kind(), v1::EVENT_KIND_SIGNALS_TO_GUEST);
  EXPECT_EQ(events_[1].count(), 3u);
}

// The doorbells for real: a host thread waits on the host doorbell and processes events, the
// guest waits on its doorbell; 5,000 echo round trips of varying sizes, every byte checked.
TEST_F(DataPlaneTest, ThreadedEchoThroughDoorbells) {
  std::unique_ptr<GuestRings> rings = Open(3, "echo", 4, 4);
  std::atomic<bool> stop{false};
  std::thread host([&] {
    while (!stop.load()) {
      const uint32_t seen = guest_memory_->DoorbellValue(Doorbell::kHost);
      plane_->ProcessEvents();
      (void)guest_memory_->Wait(Doorbell::kHost, seen, absl::Now() + absl::Milliseconds(100));
    }
  });
  watch_ = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  for (int i = 0; i < 5000; ++i) {
    std::vector<uint8_t> b(static_cast<size_t>(1 + (i * 37) % 1500));
    for (size_t j = 0; j < b.size(); ++j) b[j] = static_cast<uint8_t>(i + j);
    ASSERT_TRUE(
        rings->SendWaiting(PacketType::kDataInband, 0, static_cast<uint64_t>(i), b, deadline).ok());
    absl::StatusOr<ReceivedPacket> p = rings->WaitForPacket(deadline);
    ASSERT_TRUE(p.ok()) << i << ": " << p.status();
    ASSERT_EQ(p->trans_id, static_cast<uint64_t>(i));
    ASSERT_EQ(p->payload, Padded(b)) << i;
  }
  stop = true;
  guest_memory_->Ring(Doorbell::kHost);
  host.join();
}

}  // namespace
}  // namespace vbus::mock
