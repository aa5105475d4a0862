// MockHostBridge against a real mock host in this process: a HyperVBackend on the bridge's
// FakeHypervisor talks to MockHost through it. Covered: control messages both ways through the
// wire codec (InitiateContact on connection 4 with its pages rewritten, the answer on the
// negotiated connection, a GpadlCreate split into GPADL_HEADER + GPADL_BODY and reassembled
// for the host), an unmonitored channel's signals (HvSignalEvent; the host's doorbell), a
// monitored channel's (the guest's monitor page scanned), a host without connection 4 (4.1 on
// connection 1, signals through the interrupt page), Stop detaching the guest, and the host
// going away (the connections close; posts and signals fail).
#include "hyperv/testing/mock_host_bridge.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/data/protocol.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hyperv/hyperv_backend.h"
#include "mock/host/mock_host.h"

namespace vbus::hyperv::testing {
namespace {

using ::testing::IsEmpty;

constexpr char kGuest[] = "bridge-guest";

absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

// Waits (re-checking every 2 ms, bounded) until `done` holds.
bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = Deadline();
  Mutex mu;
  CondVar never;
  for (;;) {
    if (done()) return true;
    if (absl::Now() >= deadline) return false;
    MutexLock lock(&mu);
    never.WaitWithDeadline(&mu, std::min(deadline, absl::Now() + absl::Milliseconds(2)));
  }
}

// Records the host messages a bare HyperVBackend delivers.
class Inbox : public BackendListener {
 public:
  void OnHostMessage(const v1::ControlMessage& message) override {
    MutexLock lock(&mu_);
    messages_.push_back(message);
    cv_.SignalAll();
  }
  void OnEventsPending(uint32_t) override {}
  void OnHostLost(const absl::Status&) override {}

  // The first message after `skip` of the kind `has` picks, waiting for it.
  std::optional<v1::ControlMessage> Await(const std::function<bool(const v1::ControlMessage&)>& has,
                                          size_t skip = 0) {
    MutexLock lock(&mu_);
    std::optional<v1::ControlMessage> found;
    cv_.AwaitWithDeadline(&mu_, Deadline(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (size_t i = skip; i < messages_.size(); ++i) {
        if (has(messages_[i])) {
          found = messages_[i];
          return true;
        }
      }
      return false;
    });
    return found;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::vector<v1::ControlMessage> messages_ ABSL_GUARDED_BY(mu_);
};

class MockHostBridgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mock::MockHostOptions options;
    options.log = [](absl::string_view) {};
    absl::StatusOr<std::unique_ptr<mock::MockHostServer>> server =
        mock::MockHostServer::Start(std::move(options), "");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  void TearDown() override {
    bus_.reset();
    backend_.reset();
    if (bridge_ != nullptr) {
      EXPECT_TRUE(bridge_->hypervisor().WaitForIdle(Deadline()));
      EXPECT_THAT(bridge_->hypervisor().TakeFaults(), IsEmpty());
      EXPECT_EQ(bridge_->stats().misrouted_posts, 0u);
    }
    bridge_.reset();
    server_->Shutdown();
  }
  mock::MockHost& host() { return server_->host(); }

  void StartBridge(MockHostBridgeOptions options = {}) {
    options.guest_name = kGuest;
    options.memory_bytes = 8 << 20;
    absl::StatusOr<std::unique_ptr<MockHostBridge>> bridge =
        MockHostBridge::Connect(server_->InProcessChannel(), std::move(options));
    ASSERT_TRUE(bridge.ok()) << bridge.status();
    bridge_ = std::move(*bridge);
    ASSERT_TRUE(bridge_->Start().ok());
    HyperVBackendOptions hv;
    hv.vector = 0x52;
    hv.vp_count = bridge_->hypervisor().vp_count();
    hv.guest_os_id = kBridgeGuestOsId;
    hv.post_timeout = absl::Milliseconds(300);
    absl::StatusOr<std::unique_ptr<HyperVBackend>> backend =
        HyperVBackend::Create(bridge_->hypervisor(), hv);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
  }
  void StartBus() {
    ChannelBusOptions options;
    options.log = [](absl::string_view line) { std::cerr << "guest: " << line << "\n"; };
    absl::StatusOr<std::unique_ptr<ChannelBus>> bus =
        ChannelBus::Create(backend_.get(), std::move(options));
    ASSERT_TRUE(bus.ok()) << bus.status();
    bus_ = std::move(*bus);
    ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  }
  uint32_t Offer(bool monitored) {
    v1::OfferRequest request;
    request.set_guest(kGuest);
    request.mutable_spec()->set_device("echo");
    request.mutable_spec()->set_monitored(monitored);
    absl::StatusOr<v1::OfferResponse> offered = host().Offer(request);
    EXPECT_TRUE(offered.ok()) << offered.status();
    return offered.ok() ? offered->child_relid() : 0;
  }
  // Opens the channel and has the echo device answer `calls` requests.
  void Echo(uint32_t relid, int calls) {
    std::shared_ptr<Channel> channel = bus_->FindChannel(relid);
    ASSERT_NE(channel, nullptr);
    ChannelOpenOptions open;
    open.outbound_ring_pages = 4;
    open.inbound_ring_pages = 4;
    open.on_packet = [](const PacketView&) {};
    ASSERT_TRUE(channel->Open(open, Deadline()).ok());
    for (int i = 0; i < calls; ++i) {
      const std::string ping = absl::StrCat("ping-", i % 10, "!!");  // 8 bytes
      absl::StatusOr<std::vector<uint8_t>> pong =
          channel->Call({reinterpret_cast<const uint8_t*>(ping.data()), ping.size()}, Deadline());
      ASSERT_TRUE(pong.ok()) << pong.status();
      EXPECT_EQ(std::string(pong->begin(), pong->end()), ping);
    }
    ASSERT_TRUE(channel->Close(Deadline()).ok());
  }
  // What the host's ListGuests says of the guest ("" if it is not attached).
  std::string GuestState() {
    const v1::ListGuestsResponse guests = host().ListGuests();
    for (const v1::GuestInfo& g : guests.guests()) {
      if (g.guest_name() == kGuest) return v1::GuestState_Name(g.state());
    }
    return "";
  }

  std::unique_ptr<mock::MockHostServer> server_;
  std::unique_ptr<MockHostBridge> bridge_;
  std::unique_ptr<HyperVBackend> backend_;
  std::unique_ptr<ChannelBus> bus_;
};

TEST_F(MockHostBridgeTest, MessagesCrossBothWaysAndAGpadlIsReassembled) {
  ASSERT_NO_FATAL_FAILURE(StartBridge());
  const uint32_t relid = Offer(/*monitored=*/false);
  v1::WatchEventsRequest watch;
  watch.add_kinds(v1::EVENT_KIND_GUEST_MESSAGE);
  auto events = host().WatchEvents(watch);
  ASSERT_TRUE(events.ok()) << events.status();
  // What the host received next, as its event stream shows it.
  auto received = [&]() -> v1::ControlMessage {
    absl::StatusOr<std::optional<v1::ProtocolEvent>> e = (*events)->Next(Deadline());
    return e.ok() && e->has_value() ? (*e)->message() : v1::ControlMessage();
  };
  Inbox inbox;
  ASSERT_TRUE(backend_->Start(&inbox).ok());

  // InitiateContact on connection 4; the host sees the mock's pages, the guest the answer.
  v1::ControlMessage contact;
  v1::InitiateContact* c = contact.mutable_initiate_contact();
  c->set_version_requested(protocol::kVersion5_3);
  c->set_message_sint(kVmbusMessageSint);
  c->set_monitor_page1(backend_->contact_info().monitor_page1_gpa);
  c->set_monitor_page2(backend_->contact_info().monitor_page2_gpa);
  ASSERT_TRUE(backend_->PostMessage(contact).ok());
  const v1::InitiateContact seen = received().initiate_contact();
  EXPECT_EQ(seen.version_requested(), protocol::kVersion5_3);
  EXPECT_EQ(seen.monitor_page2(), bridge_->memory().layout().monitor_page2_pfn * 4096);
  std::optional<v1::ControlMessage> version =
      inbox.Await([](const v1::ControlMessage& m) { return m.has_version_response(); });
  ASSERT_TRUE(version.has_value());
  EXPECT_TRUE(version->version_response().version_supported());
  EXPECT_EQ(version->version_response().message_connection_id(), kVmbusMessageConnectionIdV5);
  backend_->SetConnection({protocol::kVersion5_3, kVmbusMessageConnectionIdV5});

  // The offer crosses as OFFERCHANNEL's 196 bytes.
  v1::ControlMessage request_offers;
  request_offers.mutable_request_offers();
  ASSERT_TRUE(backend_->PostMessage(request_offers).ok());
  EXPECT_TRUE(received().has_request_offers());
  std::optional<v1::ControlMessage> offer =
      inbox.Await([](const v1::ControlMessage& m) { return m.has_offer(); });
  ASSERT_TRUE(offer.has_value());
  EXPECT_EQ(offer->offer().child_relid(), relid);
  ASSERT_TRUE(inbox.Await([](const v1::ControlMessage& m) { return m.has_all_offers_delivered(); })
                  .has_value());

  // 40 pages: a GPADL_HEADER with 26 PFNs and a GPADL_BODY with 14, one GpadlCreate for the
  // host, naming the same pages of the shared file.
  absl::StatusOr<Pages> pages = backend_->AllocatePages(40, PageSharing::kDefault);
  ASSERT_TRUE(pages.ok()) << pages.status();
  v1::ControlMessage create;
  v1::GpadlCreate* g = create.mutable_gpadl_create();
  g->set_child_relid(relid);
  g->set_gpadl(7);
  g->set_byte_count(40 * 4096);
  for (uint64_t pfn : pages->pfns()) g->add_pfns(pfn);
  const uint64_t parts_before = backend_->stats().parts_posted;
  ASSERT_TRUE(backend_->PostMessage(create).ok());
  EXPECT_EQ(backend_->stats().parts_posted - parts_before, 2u);
  const v1::ControlMessage host_got = received();
  ASSERT_TRUE(host_got.has_gpadl_create()) << host_got.DebugString();
  EXPECT_EQ(host_got.gpadl_create().pfns_size(), 40);
  EXPECT_EQ(host_got.gpadl_create().pfns(39), pages->pfns()[39]);
  std::optional<v1::ControlMessage> created =
      inbox.Await([](const v1::ControlMessage& m) { return m.has_gpadl_created(); });
  ASSERT_TRUE(created.has_value());
  EXPECT_EQ(created->gpadl_created().gpadl(), 7u);
  EXPECT_EQ(created->gpadl_created().creation_status(), 0u);
  const MockHostBridgeStats stats = bridge_->stats();
  EXPECT_EQ(stats.posts_forwarded, 3u);
  EXPECT_EQ(stats.posts_dropped, 0u);
  EXPECT_EQ(stats.messages_dropped, 0u);
  backend_->Stop();
  host().Unwatch(*events);
}

TEST_F(MockHostBridgeTest, AnUnmonitoredChannelSignalsThroughHvSignalEventAndTheDoorbell) {
  ASSERT_NO_FATAL_FAILURE(StartBridge());
  const uint32_t relid = Offer(/*monitored=*/false);
  ASSERT_NO_FATAL_FAILURE(StartBus());
  ASSERT_NO_FATAL_FAILURE(Echo(relid, 20));
  const MockHostBridgeStats stats = bridge_->stats();
  EXPECT_GT(stats.event_signals, 0u);
  EXPECT_EQ(stats.monitor_signals, 0u);
  EXPECT_GT(stats.host_events, 0u);
  EXPECT_GT(backend_->stats().signals_event, 0u);
}

TEST_F(MockHostBridgeTest, AMonitoredChannelSignalsThroughTheMonitorPage) {
  ASSERT_NO_FATAL_FAILURE(StartBridge());
  const uint32_t relid = Offer(/*monitored=*/true);
  ASSERT_NO_FATAL_FAILURE(StartBus());
  ASSERT_TRUE(bus_->FindChannel(relid)->offer().monitor_allocated);
  ASSERT_NO_FATAL_FAILURE(Echo(relid, 20));
  const MockHostBridgeStats stats = bridge_->stats();
  EXPECT_GT(stats.monitor_signals, 0u);
  EXPECT_EQ(stats.event_signals, 0u);
  EXPECT_GT(stats.host_events, 0u);
  EXPECT_EQ(backend_->stats().signals_event, 0u);
  EXPECT_GT(backend_->stats().signals_monitor, 0u);
}

TEST_F(MockHostBridgeTest, WithoutConnection4TheGuestSettlesOn41AndItsInterruptPage) {
  MockHostBridgeOptions options;
  options.connection_v5 = false;
  ASSERT_NO_FATAL_FAILURE(StartBridge(std::move(options)));
  const uint32_t relid = Offer(/*monitored=*/false);
  ASSERT_NO_FATAL_FAILURE(StartBus());
  EXPECT_EQ(bus_->version(), protocol::kVersion4_1);
  ASSERT_NO_FATAL_FAILURE(Echo(relid, 20));
  EXPECT_GT(bridge_->stats().event_signals, 0u);
}

TEST_F(MockHostBridgeTest, ShutdownThenStopDetachesTheGuest) {
  ASSERT_NO_FATAL_FAILURE(StartBridge());
  const uint32_t relid = Offer(/*monitored=*/false);
  ASSERT_NO_FATAL_FAILURE(StartBus());
  ASSERT_NO_FATAL_FAILURE(Echo(relid, 2));
  ASSERT_TRUE(bus_->Shutdown(Deadline()).ok());
  EXPECT_EQ(GuestState(), "GUEST_STATE_UNLOADED");  // still attached
  bridge_->Stop();
  EXPECT_FALSE(bridge_->link_up());
  EXPECT_TRUE(Eventually([&] { return GuestState().empty(); }));
  bridge_->Stop();  // idempotent
  EXPECT_EQ(bridge_->stats().posts_dropped, 0u);
}

TEST_F(MockHostBridgeTest, TheHostGoingAwayClosesTheConnections) {
  ASSERT_NO_FATAL_FAILURE(StartBridge());
  const uint32_t relid = Offer(/*monitored=*/false);
  ASSERT_NO_FATAL_FAILURE(StartBus());
  std::shared_ptr<Channel> channel = bus_->FindChannel(relid);
  ChannelOpenOptions open;
  open.on_packet = [](const PacketView&) {};
  ASSERT_TRUE(channel->Open(open, Deadline()).ok());
  v1::InjectFaultRequest disconnect;
  disconnect.set_guest(kGuest);
  disconnect.set_disconnect(true);
  ASSERT_TRUE(host().InjectFault(disconnect).ok());
  ASSERT_TRUE(Eventually([&] { return !bridge_->link_up(); }));
  // No host-lost notice on Hyper-V: the bus stays connected, but nothing reaches a host. A
  // signal fails at once (the connection is gone), a post after its retries.
  EXPECT_EQ(bus_->phase(), BusPhase::kConnected);
  ChannelSignal signal;
  signal.relid = relid;
  signal.connection_id = channel->offer().connection_id;
  EXPECT_EQ(backend_->SignalHost(signal).code(), absl::StatusCode::kNotFound);
  v1::ControlMessage modify;
  modify.mutable_modify_channel()->set_child_relid(relid);
  EXPECT_EQ(backend_->PostMessage(modify).code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace vbus::hyperv::testing
