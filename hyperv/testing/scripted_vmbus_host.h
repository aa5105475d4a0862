// ScriptedVmbusHost (testonly): a small VMBus host on the FakeHypervisor's host side, so that a
// guest's HyperVBackend (and a ChannelBus above it) can be tested end to end without Hyper-V.
//
// It plays the host the way docs/protocol.md describes, through nothing but the fake's host
// interface (fake_hypervisor.h), with every message going through the binary codec
// (hyperv/wire.h) in both directions:
//   - message connections 1 and 4 (docs/hyperv.md §11) and, if different, the one it returns
//     from 5.0: every wire message the guest posts is decoded (GPADL parts reassembled by a
//     WireDecoder), recorded, and answered;
//   - answers are encoded with EncodeMessage and queued with QueueMessage on the guest's
//     message VP (the target_vcpu of its InitiateContact), SINT 2;
//   - one event connection per offer: a signal from the guest (HvSignalEvent) drains the
//     channel's outbound ring and, in echo mode, writes every in-band packet back into the
//     inbound ring (a completion with the same payload when one was requested) and sets the
//     channel's event flag on its target VP (SetEventFlag), as the host's signal does;
//   - the rings: at OpenChannel it attaches core/data/ring_buffer.h's IncomingRing (the
//     guest's outbound ring) and OutgoingRing (its inbound ring) to the GPADL's pages through
//     HostView; the GPADL's PFNs must be consecutive (the fake's allocator gives that).
// It answers what a well-behaved host answers: the versions up to max_version, every GPADL,
// open, teardown, modify and unload. A test can also send anything (Send, SendRaw) and wait
// for what the guest posted (WaitFor).
//
// Example:
//   FakeHypervisor hv(FakeHypervisorOptions{.vp_count = 2, .memory_pages = 1024});
//   ScriptedVmbusHost host(hv, {});
//   host.AddOffer({.relid = 5, .interface_type = kClass, .interface_instance = kInstance,
//                  .connection_id = 0x2005});
//   host.set_echo(true);
//   ... HyperVBackend + ChannelBus: Connect, open relid 5, send ...
//   ASSERT_TRUE(host.WaitFor([&] { return host.echoed(5) == 1; }, Deadline()));
//
// Thread safety: thread-safe. The fake runs the host's handlers on the guest's posting and
// signalling threads; they take this object's lock and queue replies after releasing it.
#ifndef VBUS_HYPERV_TESTING_SCRIPTED_VMBUS_HOST_H_
#define VBUS_HYPERV_TESTING_SCRIPTED_VMBUS_HOST_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/data/guid.h"
#include "core/data/protocol.h"
#include "core/data/ring_buffer.h"
#include "core/runtime/sync.h"
#include "hyperv/testing/fake_hypervisor.h"
#include "hyperv/wire.h"
#include "proto/control.pb.h"

namespace vbus::hyperv::testing {

class ScriptedVmbusHost {
 public:
  struct Options {
    // Where messages go before the guest's InitiateContact names its target_vcpu.
    uint32_t message_vp = 0;
    // Newer versions are refused (version_supported = false).
    uint32_t max_version = protocol::kVersion5_3;
    // The connection id returned from 5.0 (registered as a message connection too).
    uint32_t message_connection_id = 4;
    // Answer the guest's requests; false: only record them.
    bool answer = true;
  };

  // One channel the host offers at RequestOffers.
  struct OfferSpec {
    uint32_t relid = 0;
    Guid interface_type;
    Guid interface_instance;
    // The event connection the guest signals (registered with the fake), flag count 1.
    uint32_t connection_id = 0;
    bool monitor_allocated = false;
    uint8_t monitor_id = 0;
  };

  ScriptedVmbusHost(FakeHypervisor& hv, Options options);
  // Removes its connections from the fake.
  ~ScriptedVmbusHost();
  ScriptedVmbusHost(const ScriptedVmbusHost&) = delete;
  ScriptedVmbusHost& operator=(const ScriptedVmbusHost&) = delete;

  void AddOffer(const OfferSpec& offer);
  // Echo every in-band packet the guest writes (on its signal).
  void set_echo(bool echo);

  // Send / SendRaw
  // Host → guest: `message` encoded (every wire part) / one raw SynIC message, queued on the
  // guest's message VP, SINT 2. The codec's or QueueMessage's error.
  absl::Status Send(const v1::ControlMessage& message);
  absl::Status SendRaw(uint32_t message_type, absl::Span<const uint8_t> payload);

  // What the guest posted, decoded, in order; how many of one kind (the ControlMessage field
  // name, e.g. "gpadl_create"); wire messages the host could not decode.
  std::vector<v1::ControlMessage> Received() const;
  size_t Count(absl::string_view kind) const;
  size_t decode_errors() const;
  // The connection each decoded message was posted on, in the same order as Received().
  std::vector<uint32_t> ReceivedOn() const;
  // Packets echoed on `relid`, and packets the guest wrote there (echoed or not).
  uint64_t echoed(uint32_t relid) const;
  uint64_t packets_from_guest(uint32_t relid) const;
  bool is_open(uint32_t relid) const;

  // WaitFor
  // Waits until `condition()` holds (re-checked whenever the host handles something) or the
  // deadline passes; returns its last value. `condition` may call this object's accessors.
  bool WaitFor(const std::function<bool()>& condition, absl::Time deadline);

 private:
  struct Channel {
    std::optional<IncomingRing> from_guest;  // the guest's outbound ring
    std::optional<OutgoingRing> to_guest;    // the guest's inbound ring
    std::vector<uint8_t> scratch;
    uint32_t target_vp = 0;
  };

  void OnPost(const PostedMessage& posted);
  void OnSignal(uint32_t relid);
  // The answers to one guest message, in order. Requires mu_.
  std::vector<v1::ControlMessage> Answer(const v1::ControlMessage& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t OpenRings(const v1::OpenChannel& open) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drains relid's outbound ring (echoing if asked); returns whether the guest needs its event.
  bool Drain(uint32_t relid) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::ControlMessage OfferMessage(const OfferSpec& offer) const;
  absl::Status Queue(uint32_t vp, const std::vector<WireMessage>& parts);

  FakeHypervisor& hv_;
  const Options options_;

  mutable Mutex mu_;
  CondVar changed_;
  WireDecoder decoder_ ABSL_GUARDED_BY(mu_);
  uint32_t guest_vp_ ABSL_GUARDED_BY(mu_);
  uint32_t version_ ABSL_GUARDED_BY(mu_) = 0;
  bool echo_ ABSL_GUARDED_BY(mu_) = false;
  std::map<uint32_t, OfferSpec> offers_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ControlMessage> received_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> received_on_ ABSL_GUARDED_BY(mu_);
  size_t decode_errors_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint32_t, std::vector<uint64_t>> gpadls_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, Channel> open_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, uint64_t> echoed_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, uint64_t> packets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vbus::hyperv::testing

#endif  // VBUS_HYPERV_TESTING_SCRIPTED_VMBUS_HOST_H_
