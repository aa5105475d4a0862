// Synic: the guest's side of the synthetic interrupt controller, per virtual processor, for the
// one SINT VMBus uses (SINT 2).
//
// Each VP has its own message page (SIMP: 16 slots of 256 bytes, one per SINT) and event-flags
// page (SIEFP: 16 blocks of 256 bytes), enabled through that VP's synthetic MSRs
// (docs/hyperv.md §3-§6). A Synic owns both pages of every VP (allocated at Create from the
// platform) and runs the TLFS sequences:
//   Enable(vp):  register the interrupt handler → SIMP (page + enable) → SIEFP (page + enable)
//                → SINT2 (vector, unmasked, auto-EOI unless the hypervisor deprecates it)
//                → SCONTROL enable.
//   Disable(vp): the same steps undone in reverse: SCONTROL off → SINT2 masked → SIEFP off →
//                SIMP off → unregister the handler (FreeBSD's order; Linux masks SINT2 first and
//                turns SCONTROL off last: either stops all delivery; docs/hyperv.md §4).
// Every MSR write is a read-modify-write that keeps the bits the TLFS says to preserve.
//
// The message slot is shared with the hypervisor, which fills it only while it is empty
// (message_type 0) and otherwise queues the message and sets MessagePending in the busy slot.
// TakeMessage empties the slot in the order the TLFS requires (docs/hyperv.md §5):
//   1. copy the message out to private memory (type with an acquire load, then the rest);
//   2. set message_type = 0 with an atomic exchange (a full barrier);
//   3. only then read MessagePending; if it was set, write the EOM MSR so the hypervisor
//      delivers the next queued message (raising the interrupt again).
// Reading MessagePending before step 2 could miss a flag set just after it and leave a queued
// message undelivered for good; the barrier makes either the guest see the flag or the
// hypervisor see the empty slot.
//
// The event flags of SINT2 are handed out as the 256-byte span core/data/event_page.h's
// EventPage::Attach takes; the host sets relid bits there and raises the same interrupt.
//
// Example (the interrupt handler a backend registers through Enable):
//   synic->Enable(vp, [&, vp] {
//     events[vp].Scan(dispatch);                              // EventPage over EventFlags(vp)
//     for (;;) {
//       absl::StatusOr<std::optional<SynicMessage>> m = synic->TakeMessage(vp);
//       if (!m.ok()) { Count(m.status()); continue; }          // dropped; slot released
//       if (!m->has_value()) break;
//       Deliver((*m)->message_type, (*m)->bytes());
//     }
//   });
//
// Thread safety: Enable and Disable of one VP must not run concurrently with each other; on
// real hardware each runs on its VP (platform.h). TakeMessage(vp) runs on VP `vp` (its
// interrupt handler) while the VP is enabled; different VPs are independent. EventFlags and the
// GPA accessors may be called from any thread.
#ifndef VBUS_HYPERV_SYNIC_H_
#define VBUS_HYPERV_SYNIC_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "backends/pages.h"
#include "hyperv/detect.h"
#include "hyperv/platform.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv {

// SynicOptions
struct SynicOptions {
  // The interrupt vector the SINT raises: 16..255 (lower vectors are refused with #GP).
  uint8_t vector = 0;
  // Auto-EOI: the SINT's interrupt needs no APIC EOI. Off when the hypervisor recommends
  // against it (SynicOptionsFor).
  bool auto_eoi = true;
  // The SINT this Synic serves: VMBus's message SINT.
  uint32_t sint = kVmbusMessageSint;
};

// SynicOptionsFor
// The options for `vector` that follow the hypervisor's recommendations: auto-EOI unless
// CPUID 0x40000004 deprecates it.
SynicOptions SynicOptionsFor(const HyperVInfo& info, uint8_t vector);

// SynicMessage
// One message taken out of a slot: a private copy (nothing in it is shared any more). Every
// field is as the host wrote it, untrusted.
struct SynicMessage {
  uint32_t message_type = 0;
  uint64_t sender = 0;
  // 0..240 (a larger size makes TakeMessage fail instead).
  uint8_t payload_size = 0;
  std::array<uint8_t, kMessagePayloadBytes> payload{};

  absl::Span<const uint8_t> bytes() const { return {payload.data(), payload_size}; }
};

class Synic {
 public:
  // Create
  // Allocates the message and event-flags pages of every VP (2 × vp_count() pages) and
  // enables nothing. InvalidArgument for a vector below 16 or a SINT of 16 or more; the
  // platform's errors for the pages.
  static absl::StatusOr<std::unique_ptr<Synic>> Create(HvPlatform& platform, SynicOptions options);

  Synic(const Synic&) = delete;
  Synic& operator=(const Synic&) = delete;
  // Every VP must be disabled first (the hypervisor would go on writing to the freed pages):
  // destroying a Synic with an enabled VP aborts with a message.
  ~Synic();

  // Enable
  // Registers `on_interrupt` for the vector on `vp`, then runs the enable sequence above,
  // after clearing the VP's two pages (nothing stale from an earlier enable survives).
  // InvalidArgument for a VP out of range, FailedPrecondition if it is already enabled, the
  // platform's error (annotated with the VP and the step) if a step fails; then the steps
  // already done are undone in reverse order and the VP stays disabled.
  absl::Status Enable(uint32_t vp, std::function<void()> on_interrupt);

  // Disable
  // Runs the disable sequence and unregisters the handler; when it returns the hypervisor
  // writes nothing more to the VP's pages and the handler does not run. Every step is tried
  // even if one fails; the first failure is returned. OK for a VP that is not enabled.
  // Must not be called from the VP's interrupt handler.
  absl::Status Disable(uint32_t vp);

  bool enabled(uint32_t vp) const { return vp < vps_.size() && vps_[vp].enabled; }

  // TakeMessage
  // Takes the message in the SINT's slot on `vp`, if any, by the three steps above. Returns
  // nullopt when the slot is empty. A message whose payload_size exceeds 240 is released
  // (step 2 and 3 still run, so the slot is not wedged) and reported as InvalidArgument naming
  // the VP and the size. An EOM write that fails is returned as that error (the message is
  // lost with it; on real hardware the write cannot fail).
  absl::StatusOr<std::optional<SynicMessage>> TakeMessage(uint32_t vp);

  // EventFlags
  // The SINT's 256-byte event-flags block on `vp` (8-byte aligned, shared with the host), for
  // EventPage::Attach. Valid for the Synic's life; empty for a VP out of range.
  absl::Span<uint8_t> EventFlags(uint32_t vp);

  // Guest physical addresses of `vp`'s message and event-flags pages (what the MSRs hold).
  uint64_t message_page_gpa(uint32_t vp) const;
  uint64_t event_flags_page_gpa(uint32_t vp) const;

  const SynicOptions& options() const { return options_; }

 private:
  struct Vp {
    Pages pages;  // page 0: SIMP, page 1: SIEFP
    bool enabled = false;
  };
  // One step of the enable sequence (an MSR read-modify-write, or the handler registration).
  enum class Step { kHandler, kSimp, kSiefp, kSint, kScontrol };
  static constexpr std::array<Step, 5> kEnableOrder = {Step::kHandler, Step::kSimp, Step::kSiefp,
                                                       Step::kSint, Step::kScontrol};

  Synic(HvPlatform& platform, SynicOptions options, std::vector<Vp> vps)
      : platform_(platform), options_(options), vps_(std::move(vps)) {}

  // Rewrites `msr` on `vp` to (old & keep) | set, naming the step on failure.
  absl::Status Modify(uint32_t vp, uint32_t msr, uint64_t keep, uint64_t set);
  // Does / undoes one step of the sequence.
  absl::Status Do(uint32_t vp, Step step, std::function<void()>* handler);
  absl::Status Undo(uint32_t vp, Step step);
  HvMessage* Slot(uint32_t vp);

  HvPlatform& platform_;
  const SynicOptions options_;
  std::vector<Vp> vps_;
};

}  // namespace vbus::hyperv

#endif  // VBUS_HYPERV_SYNIC_H_
