// Backend: the one seam between the hypervisor-neutral channel bus (core/) and a hypervisor.
//
// Core speaks the neutral protocol of proto/control.proto and moves packets through rings in
// shared memory. Everything else is a backend's job, and this interface is all of it:
//   - control messages: PostMessage (guest → host) and BackendListener::OnHostMessage
//     (host → guest, with PauseDelivery / ResumeDelivery for suspend);
//   - the negotiated connection: SetConnection (where later messages go);
//   - signals: SignalHost (guest → host, per channel) and BackendListener::OnEventsPending
//     (host → guest: "scan virtual processor v's receive event flags"), plus
//     ReceiveEventFlags(v) (the 2048-bit bitmap the host sets relid bits in, one per virtual
//     processor the backend takes events on: vp_count());
//   - memory: AllocatePages (host-reachable pages with PFNs).
//
// How the two backends implement it:
//   MockBackend (mock/guest): control messages travel as they are on the GuestLink gRPC stream;
//     the receive event flags are a page in the shared guest-memory file; OnEventsPending is
//     raised by a thread waiting on the guest's futex doorbell word (and by Signal messages on
//     the stream); SignalHost sets the relid bit in the host's event page and wakes the host's
//     doorbell; AllocatePages hands out pages of the shared file (PFN = file offset / 4096).
//   HyperVBackend (hyperv/): PostMessage encodes the message into 240-byte SynIC payloads
//     (GpadlCreate becomes GPADL_HEADER + GPADL_BODY messages) and issues HvPostMessage with
//     retries; OnHostMessage runs after a SINT2 message-slot interrupt decodes a slot (copied,
//     validated, then EOM); the receive event flags are the SINT2 block of the SIEF page;
//     SignalHost uses the monitor pages or HvSignalEvent(connection_id); AllocatePages uses
//     the platform's page allocator and its guest physical addresses.
//
// Example (how the bus runtime drives a backend):
//   class Runtime : public BackendListener { ... };
//   Runtime runtime;
//   if (absl::Status s = backend->Start(&runtime); !s.ok()) return s;
//   v1::ControlMessage contact;  // built by the bus state machine from contact_info()
//   absl::Status posted = backend->PostMessage(contact);
//   ...  // the host answers through runtime.OnHostMessage(...)
//   backend->Stop();
//
// Errors use the canonical codes with their retry meaning: Unavailable = the link to the host
// is gone (reconnecting may help); NotFound = the host rejected the connection used for a
// message (only for InitiateContact; the bus then tries an older version); InvalidArgument =
// the message or request is malformed (a bug in the caller); ResourceExhausted = out of memory
// or of host buffers after the backend's own retries; FailedPrecondition = called in the
// wrong state (e.g. before Start).
#ifndef VBUS_BACKENDS_BACKEND_H_
#define VBUS_BACKENDS_BACKEND_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "backends/pages.h"
#include "core/data/mirrored_mapping.h"
#include "proto/control.pb.h"

namespace vbus {

// Number of event flags (relid bits) in a receive or send event bitmap: 2048 bits = 256 bytes.
inline constexpr size_t kEventFlagCount = protocol::kRelidCount;
inline constexpr size_t kEventFlagBytes = kEventFlagCount / 8;
// The most virtual processors a backend may take host events on (each needs a dispatcher of
// the channel table).
inline constexpr uint32_t kMaxEventVps = 64;

// ContactInfo
// What the guest tells the host in InitiateContact about where it listens. The backend knows
// these (they are hypervisor resources); the bus copies them into every InitiateContact.
struct ContactInfo {
  // Virtual processor that receives control messages (the connect CPU).
  uint32_t target_vcpu = 0;
  // From 5.0: SINT on which the host posts control messages (2 on Hyper-V) and the VTL.
  uint32_t message_sint = 2;
  uint32_t message_vtl = 0;
  // Below 5.0: guest-physical address of the interrupt page InitiateContact carries. The guest
  // sets a channel's bit in its send half (the second 2 KiB) on every signal (SignalHost); its
  // receive half is unused from 2.4 on, where host events come from the event flags directly.
  // A backend that may negotiate below 5.0 must provide one (the mock platform's is its host
  // event page; docs/protocol.md §12).
  uint64_t interrupt_page_gpa = 0;
  // Guest-physical addresses of the monitor pages (host → guest, guest → host); 0 if none.
  uint64_t monitor_page1_gpa = 0;
  uint64_t monitor_page2_gpa = 0;
};

// NegotiatedConnection
// The result of version negotiation, handed to the backend before the bus posts anything
// else (RequestOffers first).
struct NegotiatedConnection {
  // The agreed protocol version, (major << 16) | minor.
  uint32_t version = 0;
  // From 5.0: the connection id the host returned in VersionResponse, on which every later
  // message must be posted. 0 below 5.0, meaning "the backend's fixed message connection"
  // (connection id 1 on Hyper-V).
  uint32_t message_connection_id = 0;
};

// ChannelSignal
// How to signal the host for one channel, taken from the channel's offer (validated by the
// bus: relid 1..2047, monitor_id < 128 when monitor_allocated).
struct ChannelSignal {
  uint32_t relid = 0;
  // Connection id to signal (HvSignalEvent's connection id on Hyper-V).
  uint32_t connection_id = 0;
  // Signal through the guest → host monitor page (trigger group bit monitor_id) instead of a
  // hypercall.
  bool monitor_allocated = false;
  uint8_t monitor_id = 0;
  // The channel has its own interrupt: no shared send-flag bit is set.
  bool dedicated_interrupt = false;
};

// BackendListener
// Implemented by the bus runtime; the backend calls it. Every method must return quickly and
// must not call Backend::Stop (it may call PostMessage, SignalHost and the delivery controls).
class BackendListener {
 public:
  virtual ~BackendListener() = default;

  // OnHostMessage
  // One host → guest control message, exactly as the host sent it (already decoded and
  // minimally length-checked by the backend; every field is still untrusted). Calls are
  // serialised and in host order, from the backend's delivery thread, and never made while
  // delivery is paused.
  virtual void OnHostMessage(const v1::ControlMessage& message) = 0;

  // OnEventsPending
  // The host set one or more bits in virtual processor `vp`'s receive event flags: scan them.
  // May be called from any thread (an interrupt handler, a doorbell waiter), concurrently with
  // itself (for the same VP or others) and with OnHostMessage, and more often than bits were
  // set (spurious wake-ups are allowed). Must not block. A `vp` at or past vp_count() is
  // counted and ignored.
  virtual void OnEventsPending(uint32_t vp) = 0;

  // OnHostLost
  // The link to the host is gone (stream closed, host process exited, SynIC torn down).
  // Called once, from the delivery thread, after the last OnHostMessage. `status` says why
  // (usually Unavailable). Later PostMessage calls fail with Unavailable.
  virtual void OnHostLost(const absl::Status& status) = 0;
};

// PageSharing: what AllocatePages is asked for.
enum class PageSharing {
  kDefault,      // the backend's usual pages (all guest memory is host-reachable)
  kHostVisible,  // explicitly shared with the host (an isolated guest; ChannelBusOptions)
};

// Backend
// Thread safety: all methods may be called from any thread; PostMessage calls are serialised
// by the backend (messages reach the host in the order the calls returned).
class Backend {
 public:
  virtual ~Backend() = default;

  // Start
  // Connects to the host's transport (attaches over gRPC, enables the SynIC, …) and starts
  // delivering to `listener`, which must outlive Stop(). Returns Unavailable if the host
  // cannot be reached, FailedPrecondition if already started.
  virtual absl::Status Start(BackendListener* listener) = 0;

  // Stop
  // Stops delivery: when it returns, no listener method runs or will run. Idempotent. Pages
  // already handed out stay valid until destroyed; the backend must outlive them.
  virtual void Stop() = 0;

  // contact_info
  // The fields the bus copies into InitiateContact. Valid after Start.
  virtual ContactInfo contact_info() const = 0;

  // PostMessage
  // Sends one guest → host control message. Returns once the transport accepted it (not when
  // the host processed it). InitiateContact goes on the connection its requested version
  // implies (Hyper-V: connection id 4 from 5.0, else 1); every other message on the one set by
  // SetConnection. Errors: Unavailable (link gone), NotFound (InitiateContact only: the
  // connection for that version was rejected, e.g. HV_STATUS_INVALID_CONNECTION_ID),
  // InvalidArgument (cannot be encoded), ResourceExhausted (host buffers still full after the
  // backend's retries). The bus relies on these meanings (docs/protocol.md §5): Unavailable
  // ends the connection and detaches every device, so report it only when the link is really
  // gone; NotFound on a 5.x InitiateContact makes it try the next older version; any other
  // code fails only the request that sent the message (an open, a GPADL, a modify, a close,
  // an unload), and the rest of the bus carries on. A failed post must leave the host
  // unaware of the message: never report failure for a message that reached the host.
  virtual absl::Status PostMessage(const v1::ControlMessage& message) = 0;

  // SetConnection
  // Records the negotiated version and message connection id; called by the bus after a
  // VersionResponse accepts a version and before it posts RequestOffers.
  virtual void SetConnection(const NegotiatedConnection& connection) = 0;

  // PauseDelivery / ResumeDelivery
  // While paused, host messages are held back in order (queued by the backend, or left with
  // the host by not acknowledging the message slot) and OnHostMessage is not called; events
  // (OnEventsPending) keep flowing. PauseDelivery called from another thread waits until an
  // OnHostMessage call in progress has returned; called from inside OnHostMessage it takes
  // effect when that call returns. ResumeDelivery delivers what was held, then new messages.
  // Pauses do not nest: one Resume undoes any number of Pauses.
  virtual void PauseDelivery() = 0;
  virtual void ResumeDelivery() = 0;

  // SignalHost
  // Tells the host that channel `signal.relid` has work (new packets in the outbound ring or
  // space freed in the inbound one). Cheap and non-blocking; safe on the data path from any
  // thread. Unavailable if the link is gone; InvalidArgument for relid 0 or >= 2048.
  // The signal is the one Hyper-V defines (docs/protocol.md §12), in this order: unless
  // `dedicated_interrupt`, set the relid's bit in the send half of the interrupt page (release
  // order, after the ring writes it announces); then, for a `monitor_allocated` channel, set
  // its trigger bit in the guest → host monitor page and nothing else (the host scans those),
  // otherwise signal the connection (HvSignalEvent; the mock rings the host's doorbell when
  // the bit was clear). The mock host checks the interrupt bit of every monitored signal.
  virtual absl::Status SignalHost(const ChannelSignal& signal) = 0;

  // vp_count
  // How many virtual processors the backend takes host events on, 1..kMaxEventVps: each has
  // its own receive event flags and raises OnEventsPending(vp), and a channel's target_vp
  // (OpenChannel, ModifyChannel) must name one of them (docs/protocol.md §12). Fixed for the
  // backend's life; valid before Start.
  virtual uint32_t vp_count() const = 0;

  // ReceiveEventFlags
  // Virtual processor `vp`'s receive event flags (vp < vp_count()): kEventFlagBytes (256)
  // bytes, 8-byte aligned, shared with the host. Bit k (byte k / 8, bit k % 8) set by the host
  // means "relid k has work"; bit 0 is never a channel. The host sets a channel's bit in the
  // flags of the channel's target VP. Readers test-and-clear bits atomically
  // (core/data/event_page.h: EventPage::Attach(backend.ReceiveEventFlags(vp))). Valid after
  // Start, for the backend's lifetime; an empty span for a `vp` out of range.
  virtual absl::Span<uint8_t> ReceiveEventFlags(uint32_t vp) = 0;

  // AllocatePages
  // `count` zero-filled pages the host can reach, mapped contiguously in the guest, with their
  // PFNs. With PageSharing::kHostVisible the caller asks for pages explicitly shared with the
  // host: an isolated (confidential) guest's memory is private unless converted, so the backend
  // converts them (and converts them back before they are freed) or, if it cannot, fails with
  // FailedPrecondition naming why. ResourceExhausted when there is no room; InvalidArgument for
  // count 0. Free them by destroying the Pages, and only after every GPADL describing them is
  // torn down.
  virtual absl::StatusOr<Pages> AllocatePages(size_t count, PageSharing sharing) = 0;

  // MapRingMirrored (optional)
  // A second mapping of one ring inside `pages` (an allocation this backend made):
  // `page_count` pages from page `first_page`, control page first, laid out as
  // RingMapping::kMirrored (core/data/ring_buffer.h): the ring's data area twice, back to back,
  // so that a packet that wraps around its end is contiguous and is neither split by the writer
  // nor copied into scratch by the reader. The caller destroys the mapping before it frees
  // `pages`. A backend whose guest memory cannot be mapped twice (no file behind it, PFNs that
  // are not consecutive) keeps this default; any error means the channel uses its single
  // mapping, which is always correct.
  virtual absl::StatusOr<MirroredMapping> MapRingMirrored(const Pages& pages, size_t first_page,
                                                          size_t page_count) {
    (void)pages;
    (void)first_page;
    (void)page_count;
    return absl::UnimplementedError("this backend cannot map a ring twice");
  }
};

}  // namespace vbus

#endif  // VBUS_BACKENDS_BACKEND_H_
