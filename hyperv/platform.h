// HvPlatform: the seam of privileged operations below vbus's Hyper-V code.
//
// Everything the Hyper-V side needs from the machine goes through this interface, so the code
// above it (detect.h, synic.h, hypercalls.h, hypercall_page.h and hyperv_backend.h)
// runs unchanged on two implementations:
//   X86HvPlatform (hyperv/x86_platform.h): the real instructions (CPUID, RDMSR/WRMSR, calls
//     into the hypercall page) for code running in ring 0 of an x86-64 Hyper-V guest, with
//     page allocation and interrupt registration taken from that environment;
//   FakeHypervisor (hyperv/testing/fake_hypervisor.h): the same operations in software, with
//     the TLFS rules enforced and every MSR write and fault recorded for tests.
//
// Virtual processors. Synthetic MSRs are per VP: RDMSR/WRMSR reach the registers of the VP
// the instruction runs on. The seam makes that explicit: ReadMsr/WriteMsr take the VP index
// the caller means, and the caller runs each VP's set-up itself (SynIC enable, disable, EOM).
// On real hardware the caller must be running on that VP (X86HvPlatform refuses any other
// with FailedPrecondition); the fake accepts the call from any thread. Partition-wide MSRs
// (GUEST_OS_ID, HYPERCALL) may be accessed through any VP. VP indexes are 0..vp_count()-1,
// Hyper-V's VP_INDEX numbering (not CPU numbers or APIC ids).
//
// Faults. An MSR access the hypervisor refuses raises #GP, which kernel code cannot survive
// unless its environment catches it. Callers therefore validate what they write (the SynIC
// code checks vectors before writing a SINT); the fake reports a #GP as a failed Status and
// records it, so tests see the mistake instead of a crash.
//
// Example (what synic.cc does for one VP):
//   absl::StatusOr<uint64_t> simp = platform.ReadMsr(vp, kMsrSimp);
//   if (!simp.ok()) return simp.status();
//   absl::Status s = platform.WriteMsr(vp, kMsrSimp,
//                                      (*simp & kSynicPagePreserve) | gpa | kSynicPageEnable);
//
// Thread safety: every method may be called from any thread (subject to the VP rule above);
// implementations synchronise internally.
#ifndef VBUS_HYPERV_PLATFORM_H_
#define VBUS_HYPERV_PLATFORM_H_

#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backends/pages.h"

namespace vbus::hyperv {

// The four registers CPUID returns.
struct CpuidResult {
  uint32_t eax = 0;
  uint32_t ebx = 0;
  uint32_t ecx = 0;
  uint32_t edx = 0;
};

class HvPlatform {
 public:
  virtual ~HvPlatform() = default;

  // vp_count
  // The partition's virtual processors: VP indexes 0..vp_count()-1. Fixed for the platform's
  // life; at least 1.
  virtual uint32_t vp_count() const = 0;

  // Cpuid
  // CPUID with EAX = `leaf` (sub-leaf 0). Unprivileged; never fails (an unknown leaf reads
  // whatever the processor answers, usually zeros).
  virtual CpuidResult Cpuid(uint32_t leaf) = 0;

  // ReadMsr / WriteMsr
  // RDMSR / WRMSR of synthetic MSR `msr` on VP `vp`. InvalidArgument for a VP out of range;
  // FailedPrecondition when the caller is not running on `vp` (real hardware only); a #GP the
  // fake detected is InvalidArgument naming the MSR, the value and the rule.
  virtual absl::StatusOr<uint64_t> ReadMsr(uint32_t vp, uint32_t msr) = 0;
  virtual absl::Status WriteMsr(uint32_t vp, uint32_t msr, uint64_t value) = 0;

  // Hypercall
  // The memory form: RCX = `control`, RDX = `input_gpa`, R8 = `output_gpa`; returns RAX, the
  // result value (status in bits 15:0; tlfs.h HypercallResultStatus). The input and output
  // blocks are guest memory the hypervisor reads and writes during the call. Callable only
  // once the hypercall page is enabled (hypercall_page.h: X86HvPlatform::Create does it; with
  // the fake, the test does); before that both implementations answer
  // HV_STATUS_INVALID_PARTITION_STATE without calling anything. The caller builds and checks
  // its inputs (hypercalls.h); the hypervisor's refusal is a status in the result, never a
  // fault.
  virtual uint64_t Hypercall(uint64_t control, uint64_t input_gpa, uint64_t output_gpa) = 0;

  // FastHypercall
  // The register form: RCX = `control`, which must have the fast bit (bit 16) set; RDX =
  // `in0`, R8 = `in1`. Returns the result value as Hypercall does. It is the same instruction
  // as Hypercall: the hypervisor tells the forms apart by the fast bit alone.
  virtual uint64_t FastHypercall(uint64_t control, uint64_t in0, uint64_t in1) = 0;

  // AllocatePages
  // `count` zero-filled 4096-byte pages the hypervisor and host can reach: mapped contiguously
  // in the guest, each with its guest physical page number (PFN; GPA = PFN * 4096) in
  // Pages::pfns(). Freed by destroying the Pages (backends/pages.h), which must not outlive
  // the platform. InvalidArgument for count 0; ResourceExhausted when there is no memory.
  virtual absl::StatusOr<Pages> AllocatePages(size_t count) = 0;

  // RegisterInterrupt / UnregisterInterrupt
  // Routes interrupt `vector` (16..255) on VP `vp` to `handler`, which then runs on that VP in
  // interrupt context (a real ISR, or the fake's per-VP thread): it must not block, and it
  // may call ReadMsr/WriteMsr for its own VP. When the vector's SINT is not auto-EOI the
  // interrupt path (not the handler) sends the APIC EOI after the handler returns.
  // RegisterInterrupt: InvalidArgument for a VP or vector out of range, AlreadyExists if the
  // pair has a handler. UnregisterInterrupt: when it returns, the handler is not running on
  // that VP and will not run again (so it must not be called from that handler), and an
  // interrupt still pending for the pair is discarded (the caller masked its source first: an
  // interrupt raised before that belongs to the registration that is going); unknown pairs
  // are ignored.
  virtual absl::Status RegisterInterrupt(uint32_t vp, uint8_t vector,
                                         std::function<void()> handler) = 0;
  virtual void UnregisterInterrupt(uint32_t vp, uint8_t vector) = 0;
};

}  // namespace vbus::hyperv

#endif  // VBUS_HYPERV_PLATFORM_H_
