// FakePartition (testonly): the FakeHypervisor's model of a partition's synthetic MSRs and
// SynIC, without threads, locks or clocks.
//
// It holds the partition-wide MSRs (GUEST_OS_ID, HYPERCALL) and, per VP, SCONTROL, SIMP,
// SIEFP and the 16 SINTs, with the TLFS semantics (docs/hyperv.md §3-§6, §12):
//   - reset values: everything 0 but the SINTs (masked); with `reserved_bit_pattern`, the
//     preserve bits of HYPERCALL, SCONTROL, SIMP, SIEFP and the SINTs start non-zero, so a
//     guest that does not read-modify-write is caught;
//   - #GP (the write is refused, reported as an InvalidArgument "#GP: …" and recorded as a
//     fault): unknown MSRs, writes to VP_INDEX and SVERSION, an unmasked SINT with a vector
//     below 16, the polling bit when CPUID does not offer SINT polling;
//   - a write that changes preserve bits is recorded as a fault (hardware would not fault;
//     the write is undefined), and stored;
//   - HYPERCALL's enable bit does not stick while GUEST_OS_ID is 0; writing GUEST_OS_ID = 0
//     clears it; a locked HYPERCALL MSR ignores writes; an enabled page outside guest memory
//     is a fault;
//   - per VP and SINT a FIFO of host messages: the head goes into the slot when the SynIC and
//     SIMP are enabled and the slot is empty, raising the SINT's interrupt (lost while the SINT
//     is masked; the message stays); a busy slot gets MessagePending; delivery is retried on
//     every new message, every EOM write, every SynIC MSR write and every EOI of a SINT that is
//     not auto-EOI. Nothing queued is ever dropped;
//   - event flags: SetEventFlag sets a bit atomically and raises the SINT only on 0 → 1.
//
// Interrupts are outputs, not calls: TakeInterrupts returns the (VP, vector) pairs raised
// since the last call, in order, and the owner delivers them. Every MSR write (in order) and
// every fault are recorded for tests.
//
// The message slot and event flags live in guest memory, which the guest reads and clears
// without any lock: those accesses are atomic, with the orders the guest's side (hyperv/
// synic.h) pairs with. Everything else is plain state: the owner serialises all calls.
#ifndef VBUS_HYPERV_TESTING_FAKE_PARTITION_H_
#define VBUS_HYPERV_TESTING_FAKE_PARTITION_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "hyperv/testing/fake_guest_memory.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv::testing {

// A fault the fake detected. kGeneralProtection is a #GP the real instruction would raise;
// the others are mistakes hardware would not report but that break the guest.
struct FakeFault {
  enum class Kind {
    kGeneralProtection,      // RDMSR/WRMSR refused
    kReservedBitsChanged,    // a WRMSR changed bits the TLFS says to preserve
    kUnbackedPage,           // SIMP/SIEFP/HYPERCALL enabled on a GPA outside guest memory
    kSpuriousInterrupt,      // an interrupt arrived on a vector with no handler
    kHypercallPageDisabled,  // a hypercall before the hypercall page was enabled
  };
  Kind kind;
  uint32_t vp = 0;
  std::string what;
};

// "GP", "reserved bits changed", …
std::string FaultKindName(FakeFault::Kind kind);

// One WRMSR as the guest issued it; `faulted` when it raised #GP (and changed nothing).
struct FakeMsrWrite {
  uint32_t vp = 0;
  uint32_t msr = 0;
  uint64_t value = 0;
  bool faulted = false;
};

// An interrupt the partition raised.
struct FakeInterrupt {
  uint32_t vp = 0;
  uint8_t vector = 0;
};

class FakePartition {
 public:
  struct Config {
    uint32_t vp_count = 1;
    // CPUID 0x40000003 EDX bit 17: the SINT polling bit may be set.
    bool sint_polling_available = false;
    // Start the preserve bits with a recognisable non-zero pattern instead of 0.
    bool reserved_bit_pattern = true;
  };
  // The pattern: the preserve bits these reset values set.
  static constexpr uint64_t kPageMsrPattern = 0x5A4;  // bits 11:2 of HYPERCALL, 11:1 SIMP/SIEFP
  static constexpr uint64_t kSintPattern = uint64_t{0x5A} << 8 | uint64_t{1} << 40;
  static constexpr uint64_t kScontrolPattern = 0x5A4;

  FakePartition(Config config, const FakeGuestMemory* memory);

  uint32_t vp_count() const { return config_.vp_count; }

  // ReadMsr / WriteMsr
  // The guest's RDMSR / WRMSR on `vp` (< vp_count, checked by the owner). A #GP is
  // InvalidArgument("#GP: …"), recorded as a fault; the write is then recorded as faulted.
  absl::StatusOr<uint64_t> ReadMsr(uint32_t vp, uint32_t msr);
  absl::Status WriteMsr(uint32_t vp, uint32_t msr, uint64_t value);

  bool hypercall_page_enabled() const { return (hypercall_ & kHypercallMsrEnable) != 0; }

  // QueueMessage
  // Host → guest: appends a message to `vp`'s queue for `sint` and tries to deliver.
  // InvalidArgument for a VP or SINT out of range, a payload over 240 bytes or type 0.
  absl::Status QueueMessage(uint32_t vp, uint32_t sint, uint32_t message_type,
                            absl::Span<const uint8_t> payload, uint64_t sender);

  // SetEventFlag
  // Host → guest: sets flag `flag` of `sint`'s block on `vp`. Returns true if the bit was
  // clear (the SINT's interrupt was raised, unless masked), false if it was already set.
  // InvalidArgument for a VP, SINT or flag out of range; FailedPrecondition
  // (HV_STATUS_INVALID_SYNIC_STATE) when the VP's SynIC or SIEFP is disabled.
  absl::StatusOr<bool> SetEventFlag(uint32_t vp, uint32_t sint, uint32_t flag);

  // EndOfInterrupt
  // The interrupt path finished a handler for `vector` on `vp` (the APIC EOI): retries
  // delivery on every SINT of that vector that is not auto-EOI.
  void EndOfInterrupt(uint32_t vp, uint8_t vector);

  // RecordFault
  // Adds a fault the owner detected (a spurious interrupt, a hypercall without the page).
  void RecordFault(FakeFault::Kind kind, uint32_t vp, std::string what);

  // Outputs since the last call, in order.
  std::vector<FakeInterrupt> TakeInterrupts();
  std::vector<FakeFault> TakeFaults();
  std::vector<FakeMsrWrite> TakeMsrWrites();

  // Messages waiting for `sint`'s slot on `vp` (not counting the one in the slot).
  size_t queued_messages(uint32_t vp, uint32_t sint) const;

 private:
  struct Message {
    uint32_t type = 0;
    uint64_t sender = 0;
    std::vector<uint8_t> payload;
  };
  struct Vp {
    uint64_t scontrol = 0;
    uint64_t simp = 0;
    uint64_t siefp = 0;
    std::array<uint64_t, kSintCount> sint{};
    std::array<std::deque<Message>, kSintCount> queue;
  };

  absl::Status Fault(uint32_t vp, std::string what);
  // Records a fault if `value` changes bits of `old` under `preserve`.
  void CheckPreserved(uint32_t vp, uint32_t msr, uint64_t old, uint64_t value, uint64_t preserve);
  // Records a fault if an enabled page MSR points outside guest memory.
  void CheckBacked(uint32_t vp, uint32_t msr, uint64_t value, uint64_t enable);
  absl::Status WriteSint(uint32_t vp, uint32_t n, uint64_t value);
  bool SynicOn(const Vp& v) const { return (v.scontrol & kScontrolEnable) != 0; }
  // The guest memory of a page MSR's page when enabled and backed; nullptr otherwise.
  uint8_t* PageOf(uint64_t msr_value) const;
  void TryDeliver(uint32_t vp, uint32_t sint);
  void TryDeliverAll(uint32_t vp);
  void Raise(uint32_t vp, uint32_t sint);

  const Config config_;
  const FakeGuestMemory* const memory_;
  uint64_t guest_os_id_ = 0;
  uint64_t hypercall_ = 0;
  std::vector<Vp> vps_;
  std::vector<FakeInterrupt> interrupts_;
  std::vector<FakeFault> faults_;
  std::vector<FakeMsrWrite> writes_;
};

}  // namespace vbus::hyperv::testing

#endif  // VBUS_HYPERV_TESTING_FAKE_PARTITION_H_
