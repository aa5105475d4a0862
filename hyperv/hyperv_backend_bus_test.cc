// The whole guest stack on "Hyper-V": a vbus::ChannelBus over HyperVBackend over the
// FakeHypervisor, against a scripted VMBus host on the fake's host side
// (hyperv/testing/scripted_vmbus_host.h). Every control message crosses the binary codec both
// ways; every event crosses the SynIC (HvSignalEvent to the host, event flags and SINT2
// interrupts to the guest); packets cross real rings in guest memory that the host reaches
// through HostView. Covered: version negotiation (including the fallback a host without
// connection 4 forces: NotFound, then the next version on connection 1), offers, an open
// whose ring GPADL is split into GPADL_HEADER + GPADL_BODY and reassembled, packets and a
// request echoed back on the channel's target VP, a move to another VP, close and shutdown.
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/data/guid.h"
#include "core/data/protocol.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hyperv/hyperv_backend.h"
#include "hyperv/testing/fake_hypervisor.h"
#include "hyperv/testing/scripted_vmbus_host.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv {
namespace {

using ::testing::ElementsAre;
using testing::FakeHypervisor;
using ::testing::IsEmpty;
using testing::ScriptedVmbusHost;

constexpr Guid kClass = Guid::Literal("8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501");
constexpr Guid kInstance = Guid::Literal("11111111-2222-3333-4444-555555555555");
constexpr uint32_t kRelid = 5;
constexpr uint32_t kEventConnection = 0x2005;
constexpr uint32_t kReturnedConnection = 0x15;

absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

// The payloads the channel's receive callback got, as text.
class Inbox {
 public:
  void Add(const PacketView& p) {
    MutexLock lock(&mu_);
    payloads_.emplace_back(p.payload().begin(), p.payload().end());
    cv_.SignalAll();
  }
  bool WaitFor(size_t n) {
    MutexLock lock(&mu_);
    return cv_.AwaitWithDeadline(&mu_, Deadline(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return payloads_.size() >= n;
    });
  }
  std::vector<std::string> payloads() {
    MutexLock lock(&mu_);
    return payloads_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::vector<std::string> payloads_ ABSL_GUARDED_BY(mu_);
};

class BusOnHyperVTest : public ::testing::Test {
 protected:
  BusOnHyperVTest()
      : hv_({.vp_count = 2, .memory_pages = 1024}),
        host_(hv_, {.message_connection_id = kReturnedConnection}) {
    host_.AddOffer({.relid = kRelid,
                    .interface_type = kClass,
                    .interface_instance = kInstance,
                    .connection_id = kEventConnection});
    host_.set_echo(true);
  }
  void SetUp() override {
    HyperVBackendOptions options;
    options.vector = 0x52;
    options.vp_count = 2;
    options.guest_os_id = OpenSourceGuestOsId(kGuestOsTypeLinux, 0, 0x50F00, 1);
    options.log = [](absl::string_view line) { ADD_FAILURE() << "backend: " << line; };
    absl::StatusOr<std::unique_ptr<HyperVBackend>> backend = HyperVBackend::Create(hv_, options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
  }
  void StartBus() {
    ChannelBusOptions options;
    options.log = [](absl::string_view) {};
    absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(backend_.get(), options);
    ASSERT_TRUE(bus.ok()) << bus.status();
    bus_ = *std::move(bus);
  }
  void TearDown() override {
    bus_.reset();
    backend_.reset();
    EXPECT_TRUE(hv_.WaitForIdle(Deadline()));
    EXPECT_THAT(hv_.TakeFaults(), IsEmpty());
  }
  // The kinds the host received, in order.
  std::vector<std::string> Kinds() {
    std::vector<std::string> kinds;
    for (const v1::ControlMessage& m : host_.Received()) {
      kinds.push_back(m.GetDescriptor()->FindFieldByNumber(m.message_case())->name());
    }
    return kinds;
  }

  FakeHypervisor hv_;
  ScriptedVmbusHost host_;
  std::unique_ptr<HyperVBackend> backend_;
  std::unique_ptr<ChannelBus> bus_;
};

TEST_F(BusOnHyperVTest, ConnectOpenEchoCloseShutdown) {
  StartBus();
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  EXPECT_EQ(bus_->version(), protocol::kVersion5_3);
  ASSERT_THAT(bus_->Offers().size(), 1u);
  EXPECT_EQ(bus_->Offers()[0].relid, kRelid);
  // InitiateContact on 4, then RequestOffers on the connection the host returned.
  EXPECT_THAT(Kinds(), ElementsAre("initiate_contact", "request_offers"));
  EXPECT_THAT(host_.ReceivedOn(), ElementsAre(kVmbusMessageConnectionIdV5, kReturnedConnection));
  const v1::InitiateContact contact = host_.Received()[0].initiate_contact();
  EXPECT_EQ(contact.message_sint(), kVmbusMessageSint);
  EXPECT_EQ(contact.monitor_page1(), backend_->contact_info().monitor_page1_gpa);
  EXPECT_EQ(contact.monitor_page2(), backend_->contact_info().monitor_page2_gpa);

  // Open on VP 1: 16 + 16 ring pages, one 32-page GPADL = a header (26 PFNs) and a body (6).
  std::shared_ptr<Channel> channel = bus_->FindChannel(kRelid);
  ASSERT_NE(channel, nullptr);
  Inbox inbox;
  ChannelOpenOptions open;
  open.target_vp = 1;
  open.on_packet = [&](const PacketView& p) { inbox.Add(p); };
  const uint64_t parts_before = backend_->stats().parts_posted;
  ASSERT_TRUE(channel->Open(open, Deadline()).ok());
  EXPECT_TRUE(host_.is_open(kRelid));
  EXPECT_EQ(host_.Count("gpadl_create"), 1u);
  EXPECT_EQ(backend_->stats().parts_posted - parts_before, 3u);  // header, body, OpenChannel
  EXPECT_EQ(host_.Received().back().open_channel().target_vp(), 1u);

  // A packet: the host reads it from the ring on the guest's HvSignalEvent and echoes it on
  // VP 1's event flags.
  const std::string hello = "hello, hyper-v!!";  // 16 bytes: no padding comes back
  ASSERT_TRUE(channel->Send({reinterpret_cast<const uint8_t*>(hello.data()), hello.size()}).ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  ASSERT_TRUE(hv_.WaitForIdle(Deadline()));  // the dispatch pass has ended and counted
  EXPECT_THAT(inbox.payloads(), ElementsAre(hello));
  EXPECT_EQ(host_.echoed(kRelid), 1u);
  EXPECT_GE(backend_->stats().signals_event, 1u);
  EXPECT_GE(bus_->stats().events_dispatched_per_vp.at(1), 1u);

  // A request: the host's completion carries the same bytes.
  const std::string ping = "ping-pong";
  absl::StatusOr<std::vector<uint8_t>> answer =
      channel->Call({reinterpret_cast<const uint8_t*>(ping.data()), ping.size()}, Deadline());
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(std::string(answer->begin(), answer->begin() + ping.size()), ping);

  // Move the channel's events to VP 0 (ModifyChannel, answered from 5.3). With VP 1 idle
  // (no drain pass of VP 1 could take VP 0's work over), the echo is dispatched on VP 0.
  ASSERT_TRUE(channel->SetTargetVp(0, Deadline()).ok());
  ASSERT_TRUE(hv_.WaitForIdle(Deadline()));
  const uint64_t on_vp0 = bus_->stats().events_dispatched_per_vp.at(0);
  ASSERT_TRUE(channel->Send({reinterpret_cast<const uint8_t*>(hello.data()), hello.size()}).ok());
  ASSERT_TRUE(inbox.WaitFor(2));
  ASSERT_TRUE(hv_.WaitForIdle(Deadline()));
  EXPECT_GT(bus_->stats().events_dispatched_per_vp.at(0), on_vp0);

  ASSERT_TRUE(channel->Close(Deadline()).ok());
  EXPECT_FALSE(host_.is_open(kRelid));
  ASSERT_TRUE(bus_->Shutdown(Deadline()).ok());
  EXPECT_THAT(Kinds(),
              ElementsAre("initiate_contact", "request_offers", "gpadl_create", "open_channel",
                          "modify_channel", "close_channel", "gpadl_teardown", "unload"));
  // Shutdown stopped the backend: the SynIC and the hypercall page are off.
  EXPECT_EQ(*hv_.ReadMsr(0, kMsrScontrol) & kScontrolEnable, 0u);
  EXPECT_EQ(*hv_.ReadMsr(0, kMsrHypercall) & kHypercallMsrEnable, 0u);
  EXPECT_EQ(backend_->stats().decode_errors, 0u);
  EXPECT_EQ(host_.decode_errors(), 0u);
}

TEST_F(BusOnHyperVTest, AHostWithoutConnection4NegotiatesBelow5OnConnection1) {
  hv_.RemoveMessageConnection(kVmbusMessageConnectionIdV5);
  hv_.RemoveMessageConnection(kReturnedConnection);
  StartBus();
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  // 5.3, 5.2, 5.1 and 5.0 were refused by the hypervisor (NotFound); 4.1 reached the host.
  EXPECT_EQ(bus_->version(), protocol::kVersion4_1);
  EXPECT_THAT(Kinds(), ElementsAre("initiate_contact", "request_offers"));
  EXPECT_THAT(host_.ReceivedOn(),
              ElementsAre(kVmbusMessageConnectionId, kVmbusMessageConnectionId));
  const v1::InitiateContact contact = host_.Received()[0].initiate_contact();
  EXPECT_EQ(contact.version_requested(), protocol::kVersion4_1);
  // Below 5.0 InitiateContact names the interrupt page (docs/protocol.md §12).
  EXPECT_EQ(contact.interrupt_page(), backend_->contact_info().interrupt_page_gpa);
  EXPECT_EQ(backend_->stats().post_failures, 4u);

  std::shared_ptr<Channel> channel = bus_->FindChannel(kRelid);
  ASSERT_NE(channel, nullptr);
  Inbox inbox;
  ChannelOpenOptions open;
  open.on_packet = [&](const PacketView& p) { inbox.Add(p); };
  ASSERT_TRUE(channel->Open(open, Deadline()).ok());
  const std::string hello = "over connection1";
  ASSERT_TRUE(channel->Send({reinterpret_cast<const uint8_t*>(hello.data()), hello.size()}).ok());
  ASSERT_TRUE(inbox.WaitFor(1));
  EXPECT_THAT(inbox.payloads(), ElementsAre(hello));
  ASSERT_TRUE(bus_->Shutdown(Deadline()).ok());
  for (uint32_t on : host_.ReceivedOn()) EXPECT_EQ(on, kVmbusMessageConnectionId);
}

}  // namespace
}  // namespace vbus::hyperv
