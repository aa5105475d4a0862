// TestHost (testonly): a Backend for ChannelBus and Channel tests whose host is a small rule
// book plus the host side of every opened channel's rings.
//
// It wraps a FakeBackend (backends/testing/fake_backend.h) as the transport and adds what a
// runtime test needs beyond it: a host thread that answers the bus's control messages as a
// well-behaved host would (or as the rules say: refuse, stay silent), owns the host end of
// each opened channel's rings (found by PFN in the pages the bus allocated through it), can
// echo packets, and lets the test write packets to the guest, read what the guest sent, and
// wait for any of it with a deadline. Everything the host does runs on its own thread, as a
// remote host would, so a test sees the same interleavings a real backend produces.
//
// Example:
//   TestHost host;
//   host.AddOffer(7, kEchoClass, kInstanceA);
//   ASSIGN_OR_RETURN(auto bus, ChannelBus::Create(&host, {}));
//   ASSERT_OK(bus->Connect(Deadline()));
//   std::shared_ptr<Channel> channel = bus->FindChannel(7);
//   ASSERT_OK(channel->Open({...}, Deadline()));
//   host.set_echo(true);
//   ...
//   EXPECT_TRUE(host.WaitFor([&] { return host.CountPosted("close_channel") == 1; }, Deadline()));
//
// Thread-safe.
#ifndef VBUS_CORE_RUNTIME_CHANNEL_BUS_TESTING_H_
#define VBUS_CORE_RUNTIME_CHANNEL_BUS_TESTING_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "backends/testing/fake_backend.h"
#include "core/data/guid.h"
#include "core/data/protocol.h"
#include "core/data/ring_buffer.h"
#include "core/runtime/channel.h"
#include "core/runtime/sync.h"

namespace vbus::testing {

// A deadline comfortably beyond anything a passing test waits for.
inline absl::Time Deadline(absl::Duration d = absl::Seconds(30)) { return absl::Now() + d; }

inline constexpr Guid kTestClass = Guid::Literal("8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501");
inline constexpr Guid kOtherClass = Guid::Literal("0e0b6031-5213-4934-818b-38d90ced39db");
inline constexpr Guid kInstance1 = Guid::Literal("11111111-2222-3333-4444-555555555555");
inline constexpr Guid kInstance2 = Guid::Literal("66666666-7777-8888-9999-aaaaaaaaaaaa");
inline constexpr Guid kInstance3 = Guid::Literal("12345678-9abc-def0-1234-56789abcdef0");

// A packet the guest wrote, as the host read it.
struct HostPacket {
  uint16_t type = 0;
  uint16_t flags = 0;
  uint64_t trans_id = 0;
  std::vector<uint8_t> sub_header;
  std::vector<uint8_t> payload;
};

class TestHost final : public Backend {
 public:
  // How the host answers. Changed at any time with Update().
  struct Rules {
    uint32_t max_version = protocol::kVersion5_3;  // newer versions are refused
    uint32_t connection_id = 4;                    // returned from 5.0
    bool answer_contact = true;
    bool answer_gpadl = true;
    uint32_t gpadl_status = 0;
    bool answer_open = true;
    // Relids whose OpenChannel is never answered (the rest are, per answer_open).
    std::set<uint32_t> silent_open_relids;
    uint32_t open_status = 0;
    bool answer_teardown = true;
    bool answer_unload = true;
    // Echo every in-band packet the guest writes on an open channel (a completion with the
    // same payload when it requested one), and count completions the guest sends.
    bool echo = false;
  };

  // `vp_count` virtual processors take events; the host signals each open channel on the
  // target VP of its OpenChannel or latest ModifyChannel.
  explicit TestHost(size_t data_pages = 4096, uint32_t vp_count = 1);
  ~TestHost() override;

  void Update(const std::function<void(Rules&)>& change);

  // ---- Offers ----
  // Adds an offer: delivered at RequestOffers, or at once (hot-add) once offers were sent.
  void AddOffer(uint32_t relid, const Guid& type, const Guid& instance,
                uint16_t sub_channel_index = 0);
  // Forgets every offer without telling the guest (host thread): for a host that will offer
  // something else after the guest's Unload (a resume after a suspend).
  void ClearOffers();
  // Rescinds (host thread). The relid stays taken until the guest's RelidReleased.
  void Rescind(uint32_t relid);
  // Sends an arbitrary message to the guest (host thread, in order with the rest).
  void SendToGuest(v1::ControlMessage message);
  // The link is lost (FakeBackend::LoseHost, on the host thread, in order).
  void LoseHost(absl::Status status);

  // ---- Observation ----
  // Waits until `condition()` holds (re-evaluated whenever the host sees something) or the
  // deadline passes; returns its final value.
  bool WaitFor(const std::function<bool()>& condition, absl::Time deadline);
  // Messages the guest posted, in order; the count of one kind (ControlMessage field name,
  // e.g. "open_channel").
  std::vector<v1::ControlMessage> Posted() const;
  size_t CountPosted(absl::string_view kind) const;
  // Relids released by the guest (RelidReleased), in order.
  std::vector<uint32_t> Released() const;
  // Whether the host has the channel open (after OpenChannel, before CloseChannel).
  bool IsOpen(uint32_t relid) const;
  // GPADLs the host holds (created and not torn down).
  size_t LiveGpadls() const;
  // Guest → host signals per relid, and completions the guest sent while echoing.
  uint64_t SignalsFrom(uint32_t relid) const;
  uint64_t EchoedPackets(uint32_t relid) const;

  // ---- The host end of the rings ----
  // Writes one packet into the guest's inbound ring and raises the event if the ring rules
  // say so (returns whether it did). ResourceExhausted when the ring is full.
  absl::StatusOr<bool> WriteToGuest(uint32_t relid, PacketType type, uint16_t flags,
                                    uint64_t trans_id, absl::Span<const uint8_t> payload);
  // Raises relid's event on its target VP whatever the ring says (a spurious or hostile
  // signal).
  absl::Status RaiseEvent(uint32_t relid) { return fake_.RaiseEvent(relid, TargetVp(relid)); }
  // The VP the host signals relid on (0 when not open).
  uint32_t TargetVp(uint32_t relid) const;
  // Takes the packets the guest wrote and the host has not consumed (not while echoing).
  absl::StatusOr<std::vector<HostPacket>> ReadFromGuest(uint32_t relid);
  // The raw control pages of an open channel's rings (for corruption tests).
  RingControlPage* GuestOutboundControl(uint32_t relid);
  RingControlPage* GuestInboundControl(uint32_t relid);

  FakeBackend& fake() { return fake_; }

  // ---- Backend (the bus calls these) ----
  absl::Status Start(BackendListener* listener) override { return fake_.Start(listener); }
  void Stop() override;
  ContactInfo contact_info() const override { return fake_.contact_info(); }
  absl::Status PostMessage(const v1::ControlMessage& message) override;
  void SetConnection(const NegotiatedConnection& connection) override {
    fake_.SetConnection(connection);
  }
  void PauseDelivery() override { fake_.PauseDelivery(); }
  void ResumeDelivery() override { fake_.ResumeDelivery(); }
  absl::Status SignalHost(const ChannelSignal& signal) override;
  uint32_t vp_count() const override { return fake_.vp_count(); }
  absl::Span<uint8_t> ReceiveEventFlags(uint32_t vp) override {
    return fake_.ReceiveEventFlags(vp);
  }
  absl::StatusOr<Pages> AllocatePages(size_t count, PageSharing sharing) override;

 private:
  struct HostChannel {
    std::optional<IncomingRing> from_guest;  // the guest's outbound ring
    std::optional<OutgoingRing> to_guest;    // the guest's inbound ring
    std::vector<uint8_t> scratch;
    RingControlPage* outbound_control = nullptr;
    RingControlPage* inbound_control = nullptr;
    uint64_t signals = 0;
    uint64_t echoed = 0;
    // An echo the guest's full inbound ring could not take yet.
    std::optional<HostPacket> held;
  };

  void HostLoop();
  void Post(std::function<void()> work);
  void Handle(const v1::ControlMessage& message);
  void Deliver(v1::ControlMessage message);
  void Echo(uint32_t relid) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint8_t* Translate(uint64_t pfn) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::ControlMessage OfferMessage(uint32_t relid) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  FakeBackend fake_;

  mutable Mutex mu_;
  CondVar changed_;  // anything observable changed
  Rules rules_ ABSL_GUARDED_BY(mu_);
  struct OfferSpec {
    Guid type;
    Guid instance;
    uint16_t sub_channel_index = 0;
  };
  std::map<uint32_t, OfferSpec> offers_ ABSL_GUARDED_BY(mu_);
  bool offers_sent_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<v1::ControlMessage> posted_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> released_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, std::vector<uint64_t>> gpadls_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, HostChannel> open_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, uint64_t> signals_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, uint32_t> target_vp_ ABSL_GUARDED_BY(mu_);  // of open channels
  // First PFN → guest address of every allocation the bus made through us.
  std::map<uint64_t, std::pair<uint8_t*, size_t>> allocations_ ABSL_GUARDED_BY(mu_);

  Mutex queue_mu_;
  CondVar queue_cv_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool stop_ ABSL_GUARDED_BY(queue_mu_) = false;
  std::thread thread_;
};

}  // namespace vbus::testing

#endif  // VBUS_CORE_RUNTIME_CHANNEL_BUS_TESTING_H_
