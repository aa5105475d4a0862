// End to end: a guest's ChannelBus against the mock host, both in this process and as a separate
// //mock:mock_host process, over MockBackend and over HyperVBackend on the FakeHypervisor
// bridged to the mock host (every test runs in all four combinations, e2e_params.h). Packets
// move through rings in the shared guest-memory file; control messages over the GuestLink
// stream (on HyperV through the binary codec and SynIC messages first); the test plays the
// operator through HostControl.
//
// Scenarios: connect and list offers; two echo channels with VBUS_E2E_PACKETS (default
// 100,000) packets each way, every byte and the running checksums checked, then close;
// rescind while traffic flows; hot-add bound by a driver; relid reuse; the host refusing an
// open; the largest GPADL and ring pair (one page more fails cleanly); the host disconnecting
// (and, as a process, dying) mid-open — Unavailable, no hang, on MockBackend; on HyperV, which
// has no notion of a host going away, the requests end by their deadlines instead.
//
// Usage: bus_e2e_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "core/data/guid_proto.h"
#include "core/data/protocol.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/host/device_kinds.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/e2e_params.h"
#include "test/e2e/echo_stream.h"

namespace vbus::e2e {
namespace {

using ::testing::HasSubstr;
using Mode = E2eHost::Mode;

uint64_t PacketsPerStream() {
  const char* env = std::getenv("VBUS_E2E_PACKETS");
  if (env != nullptr && std::atoi(env) > 0) return static_cast<uint64_t>(std::atoll(env));
  return 100000;
}

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

class BusE2eTest : public ::testing::TestWithParam<E2eParam> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<E2eHost>> host = E2eHost::Start(ModeOf(GetParam()), Deadline());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
  }
  void TearDown() override {
    guest_.reset();
    if (HasFailure() && host_ != nullptr) std::cerr << "mock_host log:\n" << host_->log() << "\n";
    host_.reset();
  }
  void AttachGuest(ChannelBusOptions options = {}, uint64_t memory_bytes = 64 << 20) {
    options.log = [](absl::string_view line) { std::cerr << "guest: " << line << "\n"; };
    E2eGuestOptions guest_options;
    guest_options.backend = backend();
    guest_options.memory_bytes = memory_bytes;
    absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
        E2eGuest::Attach(*host_, kGuest, std::move(options), std::move(guest_options));
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = std::move(*guest);
  }
  uint32_t OfferEcho() {
    absl::StatusOr<v1::OfferResponse> offered = host_->Offer(kGuest, "echo");
    EXPECT_TRUE(offered.ok()) << offered.status();
    return offered.ok() ? offered->child_relid() : 0;
  }
  bool HostLists(uint32_t relid) { return host_->Channel(kGuest, relid).ok(); }
  BackendKind backend() const { return BackendOf(GetParam()); }

  static constexpr char kGuest[] = "e2e-guest";
  std::unique_ptr<E2eHost> host_;
  std::unique_ptr<E2eGuest> guest_;
};

TEST_P(BusE2eTest, ConnectListsTheHostsOffers) {
  AttachGuest();
  absl::StatusOr<v1::OfferResponse> echo = host_->Offer(kGuest, "echo");
  absl::StatusOr<v1::OfferResponse> sink = host_->Offer(kGuest, "sink");
  absl::StatusOr<v1::OfferResponse> raw = host_->Offer(kGuest, "raw");
  ASSERT_TRUE(echo.ok() && sink.ok() && raw.ok());
  ASSERT_TRUE(guest_->bus().Connect(Deadline()).ok());
  EXPECT_EQ(guest_->bus().version(), protocol::kVersion5_3);
  std::vector<OfferInfo> offers = guest_->bus().Offers();
  ASSERT_EQ(offers.size(), 3u);
  EXPECT_EQ(offers[0].relid, echo->child_relid());
  EXPECT_EQ(offers[0].interface_type, mock::kEchoDeviceClass);
  EXPECT_EQ(offers[0].interface_instance, *GuidFromProto(echo->interface_instance()));
  EXPECT_EQ(offers[1].relid, sink->child_relid());
  EXPECT_EQ(offers[1].interface_type, mock::kSinkDeviceClass);
  EXPECT_EQ(offers[2].relid, raw->child_relid());
  EXPECT_EQ(offers[2].interface_type, mock::kRawDeviceClass);
  // The host sees a connected guest that received its offers.
  absl::StatusOr<std::vector<v1::ChannelInfo>> channels = host_->Channels(kGuest);
  ASSERT_TRUE(channels.ok());
  ASSERT_EQ(channels->size(), 3u);
  for (const v1::ChannelInfo& c : *channels) EXPECT_TRUE(c.offer_delivered());
}

TEST_P(BusE2eTest, TwoEchoChannelsCarryEveryPacketBothWays) {
  AttachGuest();
  const uint32_t relid_a = OfferEcho();
  const uint32_t relid_b = OfferEcho();
  ASSERT_TRUE(guest_->bus().Connect(Deadline()).ok());
  std::shared_ptr<Channel> a = guest_->bus().FindChannel(relid_a);
  std::shared_ptr<Channel> b = guest_->bus().FindChannel(relid_b);
  ASSERT_TRUE(a != nullptr && b != nullptr);
  EchoStream stream_a(0x11), stream_b(0x77);
  // a asks for mirrored rings, b keeps the single mapping: both carry the same traffic.
  ChannelOpenOptions mirrored = EchoOptions(&stream_a);
  mirrored.mirrored_rings = true;
  ASSERT_TRUE(a->Open(mirrored, Deadline()).ok());
  ASSERT_TRUE(b->Open(EchoOptions(&stream_b), Deadline()).ok());
  // MockBackend maps its shared file's rings twice; the fake hypervisor's memory is not mirrored.
  EXPECT_EQ(a->rings_mirrored(), backend() == BackendKind::kMock);
  EXPECT_FALSE(b->rings_mirrored());

  const uint64_t n = PacketsPerStream();
  absl::Status sent_a, sent_b;
  std::thread sender_a([&] { sent_a = stream_a.SendRange(*a, 0, n); });
  std::thread sender_b([&] { sent_b = stream_b.SendRange(*b, 0, n); });
  sender_a.join();
  sender_b.join();
  ASSERT_TRUE(sent_a.ok()) << sent_a;
  ASSERT_TRUE(sent_b.ok()) << sent_b;
  ASSERT_TRUE(stream_a.WaitFor(n, Deadline(absl::Seconds(120))))
      << stream_a.received() << " of " << n;
  ASSERT_TRUE(stream_b.WaitFor(n, Deadline(absl::Seconds(120))))
      << stream_b.received() << " of " << n;

  // Every packet came back, in order, byte for byte.
  EXPECT_EQ(stream_a.bad(), 0u);
  EXPECT_EQ(stream_b.bad(), 0u);
  EXPECT_EQ(stream_a.received_sum(), stream_a.sent_sum());
  EXPECT_EQ(stream_b.received_sum(), stream_b.sent_sum());
  EXPECT_NE(stream_a.sent_sum(), stream_b.sent_sum());  // different salts, different bytes
  // Both ends counted the same traffic.
  for (const auto& [relid, channel] : {std::pair{relid_a, a}, std::pair{relid_b, b}}) {
    absl::StatusOr<v1::ChannelInfo> info = host_->Channel(kGuest, relid);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->state(), v1::CHANNEL_STATE_OPEN);
    EXPECT_EQ(info->packets_from_guest(), n);
    EXPECT_EQ(info->packets_to_guest(), n);
    EXPECT_EQ(info->bytes_from_guest(), info->bytes_to_guest());
    ChannelStats stats = channel->stats();
    EXPECT_EQ(stats.packets_sent, n);
    EXPECT_EQ(stats.packets_received, n);
    EXPECT_EQ(stats.errors, 0u);
    EXPECT_EQ(stats.completions_unknown + stats.completions_stale, 0u);
    // Signal suppression: far fewer signals than packets in either direction.
    EXPECT_LT(stats.signals_sent, n);
    EXPECT_LT(stats.signals_received, n);
  }
  BusStats bus = guest_->bus().stats();
  EXPECT_EQ(bus.channels.packets_sent, 2 * n);
  EXPECT_EQ(bus.channels.packets_received, 2 * n);

  // Close: the host unmaps the rings and the channel is offered (closed) again.
  ASSERT_TRUE(a->Close(Deadline()).ok());
  ASSERT_TRUE(b->Close(Deadline()).ok());
  EXPECT_FALSE(a->rings_mirrored());  // the mapping went with the rings
  for (uint32_t relid : {relid_a, relid_b}) {
    absl::StatusOr<v1::ChannelInfo> info = host_->Channel(kGuest, relid);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->state(), v1::CHANNEL_STATE_OFFERED);
    EXPECT_EQ(info->ring_gpadl(), 0u);
  }
  EXPECT_EQ(a->Send(std::vector<uint8_t>(8)).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_P(BusE2eTest, RescindWhileTrafficFlows) {
  Mutex mu;
  std::vector<uint32_t> removed;
  ChannelBusOptions options;
  options.on_offer_removed = [&](const OfferInfo& offer, const absl::Status&) {
    MutexLock lock(&mu);
    removed.push_back(offer.relid);
  };
  AttachGuest(std::move(options));
  const uint32_t relid_a = OfferEcho();
  const uint32_t relid_b = OfferEcho();
  ASSERT_TRUE(guest_->bus().Connect(Deadline()).ok());
  std::shared_ptr<Channel> a = guest_->bus().FindChannel(relid_a);
  std::shared_ptr<Channel> b = guest_->bus().FindChannel(relid_b);
  EchoStream stream_a(1), stream_b(2);
  ASSERT_TRUE(a->Open(EchoOptions(&stream_a, 4), Deadline()).ok());
  ASSERT_TRUE(b->Open(EchoOptions(&stream_b, 4), Deadline()).ok());

  // A sender that goes on until the channel goes away under it.
  absl::Status stopped;
  std::thread sender([&] { stopped = stream_a.SendRange(*a, 0, ~uint64_t{0} >> 1); });
  ASSERT_TRUE(stream_a.WaitFor(2000, Deadline()));
  ASSERT_TRUE(host_->Rescind(kGuest, relid_a).ok());
  sender.join();
  EXPECT_EQ(stopped.code(), absl::StatusCode::kUnavailable) << stopped;
  EXPECT_GT(stream_a.sent(), 2000u);
  EXPECT_EQ(stream_a.bad(), 0u);  // everything echoed before the rescind was intact
  // The guest released the relid (the host forgot the channel) and reported the removal.
  ASSERT_TRUE(Eventually([&] { return !HostLists(relid_a); }));
  ASSERT_TRUE(Eventually([&] {
    MutexLock lock(&mu);
    return removed.size() == 1;
  }));
  EXPECT_EQ(guest_->bus().Offers().size(), 1u);
  EXPECT_EQ(a->removed_status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(a->Close(Deadline()).ok());  // closed already: OK

  // The other channel never noticed.
  ASSERT_TRUE(stream_b.SendRange(*b, 0, 1000).ok());
  ASSERT_TRUE(stream_b.WaitFor(1000, Deadline()));
  EXPECT_EQ(stream_b.bad(), 0u);
  EXPECT_EQ(stream_b.received_sum(), stream_b.sent_sum());
  guest_.reset();  // its callbacks refer to this frame
}

// A driver for the mock's echo device: opens its channel in Probe and echo-checks a stream.
class EchoDriver : public Driver {
 public:
  struct Shared {
    EchoStream stream{0x42};
    std::atomic<int> probes{0};
    std::atomic<int> removes{0};
    std::atomic<Channel*> channel{nullptr};
  };
  explicit EchoDriver(Shared* shared) : shared_(shared) {}
  absl::Status Probe(Channel& channel) override {
    shared_->probes.fetch_add(1);
    absl::Status s = channel.Open(EchoOptions(&shared_->stream), Deadline());
    if (s.ok()) shared_->channel.store(&channel);
    channel_ = &channel;
    return s;
  }
  void Remove() override {
    shared_->removes.fetch_add(1);
    shared_->channel.store(nullptr);
    channel_->Close(Deadline()).IgnoreError();
  }

 private:
  Shared* shared_;
  Channel* channel_ = nullptr;
};

TEST_P(BusE2eTest, HotAddedDeviceIsBoundToItsDriver) {
  DriverRegistry drivers;
  EchoDriver::Shared shared;
  ASSERT_TRUE(
      drivers
          .Register({"echo", mock::kEchoDeviceClass,
                     [&](const OfferInfo&) { return std::make_unique<EchoDriver>(&shared); }})
          .ok());
  ChannelBusOptions options;
  options.drivers = &drivers;
  AttachGuest(std::move(options));
  ASSERT_TRUE(guest_->bus().Connect(Deadline()).ok());
  EXPECT_TRUE(guest_->bus().Offers().empty());
  const uint32_t relid = OfferEcho();  // hot-add
  ASSERT_TRUE(Eventually([&] { return shared.channel.load() != nullptr; }));
  std::vector<DeviceEntry> devices = guest_->bus().Devices();
  ASSERT_EQ(devices.size(), 1u);
  EXPECT_EQ(devices[0].offer.relid, relid);
  EXPECT_EQ(devices[0].binding, Binding::kBound);
  EXPECT_EQ(devices[0].driver, "echo");
  absl::StatusOr<v1::ChannelInfo> info = host_->Channel(kGuest, relid);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state(), v1::CHANNEL_STATE_OPEN);
  ASSERT_TRUE(shared.stream.SendRange(*shared.channel.load(), 0, 500).ok());
  ASSERT_TRUE(shared.stream.WaitFor(500, Deadline()));
  EXPECT_EQ(shared.stream.bad(), 0u);
  // Shutdown removes the driver (after closing its channel and unloading).
  guest_.reset();
  EXPECT_EQ(shared.probes.load(), 1);
  EXPECT_EQ(shared.removes.load(), 1);
}

TEST_P(BusE2eTest, ReusedRelidIsANewChannel) {
  AttachGuest();
  const uint32_t relid = OfferEcho();
  ASSERT_TRUE(guest_->bus().Connect(Deadline()).ok());
  std::shared_ptr<Channel> first = guest_->bus().FindChannel(relid);
  EchoStream stream_1(5);
  ASSERT_TRUE(first->Open(EchoOptions(&stream_1), Deadline()).ok());
  ASSERT_TRUE(stream_1.SendRange(*first, 0, 100).ok());
  ASSERT_TRUE(stream_1.WaitFor(100, Deadline()));
  ASSERT_TRUE(host_->Rescind(kGuest, relid).ok());
  ASSERT_TRUE(Eventually([&] { return !HostLists(relid); }));  // released by the guest
  // The host hands out the lowest free relid: the same one, for a new device.
  absl::StatusOr<v1::OfferResponse> again = host_->Offer(kGuest, "echo");
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->child_relid(), relid);
  ASSERT_TRUE(Eventually([&] {
    std::shared_ptr<Channel> c = guest_->bus().FindChannel(relid);
    return c != nullptr && c != first;
  }));
  std::shared_ptr<Channel> second = guest_->bus().FindChannel(relid);
  EXPECT_NE(second->id(), first->id());
  EXPECT_EQ(second->offer().interface_instance, *GuidFromProto(again->interface_instance()));
  EXPECT_NE(second->offer().interface_instance, first->offer().interface_instance);
  EchoStream stream_2(6);
  ASSERT_TRUE(second->Open(EchoOptions(&stream_2), Deadline()).ok());
  ASSERT_TRUE(stream_2.SendRange(*second, 0, 100).ok());
  ASSERT_TRUE(stream_2.WaitFor(100, Deadline()));
  EXPECT_EQ(stream_2.bad(), 0u);
  EXPECT_EQ(first->Send(std::vector<uint8_t>(8)).code(), absl::StatusCode::kUnavailable);
  guest_.reset();  // its channels' callbacks refer to this frame
}

TEST_P(BusE2eTest, HostRefusingAnOpen) {
  AttachGuest();
  const uint32_t relid = OfferEcho();
  ASSERT_TRUE(guest_->bus().Connect(Deadline()).ok());
  v1::InjectFaultRequest refuse;
  refuse.set_guest(kGuest);
  refuse.mutable_refuse()->set_request(v1::RefuseNext::REQUEST_OPEN_CHANNEL);
  ASSERT_TRUE(host_->InjectFault(refuse).ok());
  std::shared_ptr<Channel> channel = guest_->bus().FindChannel(relid);
  EchoStream stream(9);
  absl::Status s = channel->Open(EchoOptions(&stream), Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("refused by host"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("0xC0000001"));
  EXPECT_FALSE(channel->is_open());
  // The fault was for one request: the next open works and carries traffic.
  ASSERT_TRUE(channel->Open(EchoOptions(&stream), Deadline()).ok());
  ASSERT_TRUE(stream.SendRange(*channel, 0, 100).ok());
  ASSERT_TRUE(stream.WaitFor(100, Deadline()));
  EXPECT_EQ(stream.bad(), 0u);
  guest_.reset();  // its channels' callbacks refer to this frame
}

// The largest ring pair and GPADL one GPADL can carry (8190 pages, docs/protocol.md §6) work
// against the host; one page more is refused by the guest with InvalidArgument naming both
// numbers before the host hears of it, and leaves nothing behind: no GPADL on the host, every
// guest page back in the pool, the channel free to open.
TEST_P(BusE2eTest, TheLargestGpadlWorksAndOnePageMoreFailsCleanly) {
  AttachGuest({}, /*memory_bytes=*/96 << 20);  // room for 8190 ring pages + an 8190-page GPADL
  const uint32_t relid = OfferEcho();
  ASSERT_TRUE(guest_->bus().Connect(Deadline()).ok());
  std::shared_ptr<Channel> channel = guest_->bus().FindChannel(relid);
  const size_t free_before = guest_->free_pages();
  auto nothing_left = [&] {
    absl::StatusOr<v1::ChannelInfo> info = host_->Channel(kGuest, relid);
    return guest_->free_pages() == free_before && info.ok() &&
           info->state() == v1::CHANNEL_STATE_OFFERED && info->ring_gpadl() == 0;
  };
  EchoStream stream(12);
  ChannelOpenOptions rings = EchoOptions(&stream);
  rings.outbound_ring_pages = 4096;  // 4096 + 4095 = 8191 pages
  rings.inbound_ring_pages = 4095;
  absl::Status over = channel->Open(rings, Deadline());
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument) << over;
  EXPECT_THAT(std::string(over.message()), HasSubstr("8191 ring pages"));
  EXPECT_THAT(std::string(over.message()), HasSubstr("the 8190 one GPADL holds"));
  EXPECT_FALSE(channel->is_open());
  ASSERT_TRUE(Eventually(nothing_left));
  // 4095 + 4095: the largest pair opens and carries traffic.
  rings.outbound_ring_pages = 4095;
  ASSERT_TRUE(channel->Open(rings, Deadline()).ok());
  ASSERT_TRUE(stream.SendRange(*channel, 0, 1000).ok());
  ASSERT_TRUE(stream.WaitFor(1000, Deadline()));
  EXPECT_EQ(stream.bad(), 0u);
  EXPECT_LE(guest_->free_pages(), free_before - 8190);
  // The largest GPADL is created and torn down; one page more never reaches the host.
  absl::StatusOr<GpadlBuffer> largest = channel->CreateGpadl(8190, Deadline());
  ASSERT_TRUE(largest.ok()) << largest.status();
  EXPECT_EQ(largest->pfns.size(), 8190u);
  EXPECT_EQ(largest->memory.size(), 8190u * protocol::kPageSize);
  absl::StatusOr<GpadlBuffer> too_large = channel->CreateGpadl(8191, Deadline());
  EXPECT_EQ(too_large.status().code(), absl::StatusCode::kInvalidArgument) << too_large.status();
  EXPECT_THAT(std::string(too_large.status().message()), HasSubstr("8191"));
  ASSERT_TRUE(channel->TeardownGpadl(largest->handle, Deadline()).ok());
  ASSERT_TRUE(channel->Close(Deadline()).ok());
  ASSERT_TRUE(Eventually(nothing_left));
  guest_.reset();  // its channels' callbacks refer to this frame
}

TEST_P(BusE2eTest, HostDisconnectingMidOpen) {
  std::atomic<int> lost{0};
  ChannelBusOptions options;
  options.on_host_lost = [&](const absl::Status& s) {
    if (s.code() == absl::StatusCode::kUnavailable) lost.fetch_add(1);
  };
  AttachGuest(std::move(options));
  const uint32_t relid = OfferEcho();
  ASSERT_TRUE(guest_->bus().Connect(Deadline()).ok());
  // The host will swallow the OpenResult, so the open is in flight when the host hangs up.
  v1::InjectFaultRequest drop;
  drop.set_guest(kGuest);
  drop.mutable_message()->set_message_type("open_result");
  drop.mutable_message()->set_action(v1::MessageFault::ACTION_DROP);
  ASSERT_TRUE(host_->InjectFault(drop).ok());
  std::shared_ptr<Channel> channel = guest_->bus().FindChannel(relid);
  EchoStream stream(3);
  absl::Status opened;
  // On HyperV nothing tells the guest that the host went away (docs/hyperv.md §14): the open
  // waits for its OpenResult until its deadline.
  const bool hyperv = backend() == BackendKind::kHyperV;
  const absl::Time open_deadline = hyperv ? Deadline(absl::Seconds(5)) : Deadline();
  std::thread opener([&] { opened = channel->Open(EchoOptions(&stream), open_deadline); });
  // The host has the OpenChannel once it maps the rings (state OPEN on its side).
  ASSERT_TRUE(Eventually([&] {
    absl::StatusOr<v1::ChannelInfo> info = host_->Channel(kGuest, relid);
    return info.ok() && info->state() == v1::CHANNEL_STATE_OPEN;
  }));
  const absl::Time hung_up = absl::Now();
  v1::InjectFaultRequest disconnect;
  disconnect.set_guest(kGuest);
  disconnect.set_disconnect(true);
  ASSERT_TRUE(host_->InjectFault(disconnect).ok());
  opener.join();
  if (hyperv) {
    EXPECT_EQ(opened.code(), absl::StatusCode::kDeadlineExceeded) << opened;
    EXPECT_LT(absl::Now(), open_deadline + absl::Seconds(5));  // by its deadline
    ASSERT_TRUE(Eventually([&] { return !guest_->bridge()->link_up(); }));
    EXPECT_EQ(lost.load(), 0);
    EXPECT_EQ(guest_->bus().phase(), BusPhase::kConnected);
    // The host's connections are gone: the next request's post fails after the backend's
    // retries, and fails only that request.
    EXPECT_EQ(channel->Open(EchoOptions(&stream), Deadline()).code(),
              absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(guest_->bus().phase(), BusPhase::kConnected);
    guest_.reset();  // its callbacks refer to this frame
    return;
  }
  EXPECT_EQ(opened.code(), absl::StatusCode::kUnavailable) << opened;
  EXPECT_LT(absl::Now() - hung_up, absl::Seconds(10));  // promptly, not at the deadline
  ASSERT_TRUE(Eventually([&] { return lost.load() == 1; }));
  EXPECT_EQ(guest_->bus().phase(), BusPhase::kDisconnected);
  EXPECT_TRUE(guest_->bus().Offers().empty());
  EXPECT_EQ(channel->Open(EchoOptions(&stream), Deadline()).code(), absl::StatusCode::kUnavailable);
  guest_.reset();  // its callbacks refer to this frame
}

TEST_P(BusE2eTest, HostProcessDyingMidTraffic) {
  if (ModeOf(GetParam()) != Mode::kProcess) GTEST_SKIP() << "only a separate process can die";
  std::atomic<int> lost{0};
  ChannelBusOptions options;
  options.on_host_lost = [&](const absl::Status&) { lost.fetch_add(1); };
  AttachGuest(std::move(options));
  const uint32_t relid = OfferEcho();
  ASSERT_TRUE(guest_->bus().Connect(Deadline()).ok());
  std::shared_ptr<Channel> channel = guest_->bus().FindChannel(relid);
  EchoStream stream(4);
  ASSERT_TRUE(channel->Open(EchoOptions(&stream, 4), Deadline()).ok());
  absl::Status stopped;
  // On HyperV nothing tells the guest that the host died: the sender ends when its ring stays
  // full past a send's deadline.
  const bool hyperv = backend() == BackendKind::kHyperV;
  const absl::Duration room_wait = hyperv ? absl::Seconds(5) : absl::Seconds(60);
  std::thread sender(
      [&] { stopped = stream.SendRange(*channel, 0, ~uint64_t{0} >> 1, room_wait); });
  ASSERT_TRUE(stream.WaitFor(1000, Deadline()));
  ASSERT_TRUE(host_->Kill().ok());
  sender.join();  // ends: the link loss retires the channel under the sender
  if (hyperv) {
    EXPECT_EQ(stopped.code(), absl::StatusCode::kDeadlineExceeded) << stopped;
    ASSERT_TRUE(Eventually([&] { return !guest_->bridge()->link_up(); }));
    EXPECT_EQ(lost.load(), 0);
    EXPECT_EQ(stream.bad(), 0u);
    EXPECT_EQ(guest_->bus().phase(), BusPhase::kConnected);
    guest_.reset();  // its callbacks refer to this frame
    return;
  }
  EXPECT_EQ(stopped.code(), absl::StatusCode::kUnavailable) << stopped;
  ASSERT_TRUE(Eventually([&] { return lost.load() == 1; }));
  EXPECT_EQ(stream.bad(), 0u);
  EXPECT_EQ(guest_->bus().phase(), BusPhase::kDisconnected);
  guest_.reset();  // its callbacks refer to this frame
}

INSTANTIATE_TEST_SUITE_P(Hosts, BusE2eTest, AllHostsAndBackends(), E2eParamName());

}  // namespace
}  // namespace vbus::e2e
