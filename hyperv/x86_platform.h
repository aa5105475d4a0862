// X86HvPlatform: HvPlatform (platform.h) on the real instructions of an x86-64 Hyper-V guest.
//
// Where it can run: only in ring 0 of a Hyper-V partition (RDMSR, WRMSR and the hypercall
// page's VMCALL fault anywhere else), so inside a kernel module, a unikernel or a boot-time
// agent that owns the machine. In a user-mode process, CPUID works but the first MSR access
// faults; vbus's tests never create one (they run the FakeHypervisor instead). It compiles on
// every architecture; off x86-64, Create returns Unimplemented.
//
// What it takes from that environment (X86HvEnvironment, all required): how many VPs there
// are and which one the calling thread runs on; page allocation with guest physical
// addresses (and one page mapped executable for the hypercall page); interrupt vector
// registration (the IDT entry and, when a SINT is not auto-EOI, the APIC EOI after the
// handler are the environment's business); and the GUEST_OS_ID value that identifies the
// guest to the hypervisor.
//
// Create checks the environment, runs DetectHyperV (detect.h: Hyper-V present, privileges
// vbus needs) and enables the hypercall page (hypercall_page.h); the destructor disables it.
// MSR accesses go to the VP the caller runs on: ReadMsr/WriteMsr fail with
// FailedPrecondition when `vp` is another one, rather than silently touching the wrong VP.
//
// Hypercalls follow the x64 convention (docs/hyperv.md §7): RCX = control, RDX = input GPA
// (fast: first input), R8 = output GPA (fast: second input), result in RAX; the hypervisor
// may change R9-R11. The call into the hypercall page steps over the caller's red zone.
//
// Example (in a kernel module's init):
//   X86HvEnvironment env;
//   env.vp_count = num_vps; env.current_vp = [] { return ThisCpuVpIndex(); };
//   env.guest_os_id = OpenSourceGuestOsId(kGuestOsTypeLinux, 0, KernelVersion(), 0);
//   env.allocate_pages = ...; env.allocate_hypercall_page = ...;
//   env.register_interrupt = ...; env.unregister_interrupt = ...;
//   absl::StatusOr<std::unique_ptr<X86HvPlatform>> platform = X86HvPlatform::Create(env);
#ifndef VBUS_HYPERV_X86_PLATFORM_H_
#define VBUS_HYPERV_X86_PLATFORM_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backends/pages.h"
#include "hyperv/detect.h"
#include "hyperv/platform.h"

namespace vbus::hyperv {

// X86HvEnvironment
// What the surrounding ring-0 environment provides. Every callback may be called from any VP.
struct X86HvEnvironment {
  // The partition's VPs (1 or more), numbered as VP_INDEX numbers them.
  uint32_t vp_count = 0;
  // The VP_INDEX of the VP the calling thread runs on (the caller keeps itself there for
  // the duration of a platform call).
  std::function<uint32_t()> current_vp;
  // GUEST_OS_ID (tlfs.h OpenSourceGuestOsId); must not be 0.
  uint64_t guest_os_id = 0;
  // `count` zero-filled pages, contiguous in the guest mapping, with their PFNs.
  std::function<absl::StatusOr<Pages>(size_t count)> allocate_pages;
  // One zero-filled page mapped executable: becomes the hypercall page. Kept until the
  // platform is destroyed.
  std::function<absl::StatusOr<Pages>()> allocate_hypercall_page;
  // Route `vector` on `vp` to `handler` / stop routing it (as HvPlatform documents).
  std::function<absl::Status(uint32_t vp, uint8_t vector, std::function<void()> handler)>
      register_interrupt;
  std::function<void(uint32_t vp, uint8_t vector)> unregister_interrupt;
};

class X86HvPlatform final : public HvPlatform {
 public:
  // Create
  // InvalidArgument naming the field if the environment is incomplete (checked before any
  // instruction runs); Unimplemented off x86-64; DetectHyperV's errors; the allocator's; and
  // EnableHypercallPage's.
  static absl::StatusOr<std::unique_ptr<X86HvPlatform>> Create(X86HvEnvironment env);

  X86HvPlatform(const X86HvPlatform&) = delete;
  X86HvPlatform& operator=(const X86HvPlatform&) = delete;
  // Disables the hypercall page (DisableHypercallPage) from the VP it runs on. Every Synic
  // must be disabled and every page freed first.
  ~X86HvPlatform() override;

  // What DetectHyperV found at Create.
  const HyperVInfo& info() const { return info_; }

  // ---- HvPlatform ------------------------------------------------------------------------
  uint32_t vp_count() const override { return env_.vp_count; }
  CpuidResult Cpuid(uint32_t leaf) override;
  absl::StatusOr<uint64_t> ReadMsr(uint32_t vp, uint32_t msr) override;
  absl::Status WriteMsr(uint32_t vp, uint32_t msr, uint64_t value) override;
  uint64_t Hypercall(uint64_t control, uint64_t input_gpa, uint64_t output_gpa) override;
  uint64_t FastHypercall(uint64_t control, uint64_t in0, uint64_t in1) override;
  absl::StatusOr<Pages> AllocatePages(size_t count) override;
  absl::Status RegisterInterrupt(uint32_t vp, uint8_t vector,
                                 std::function<void()> handler) override;
  void UnregisterInterrupt(uint32_t vp, uint8_t vector) override;

 private:
  explicit X86HvPlatform(X86HvEnvironment env) : env_(std::move(env)) {}
  // OK when `vp` is in range and the one the caller runs on.
  absl::Status CheckVp(uint32_t vp) const;

  const X86HvEnvironment env_;
  HyperVInfo info_;
  Pages hypercall_page_;
  // The hypercall page's guest mapping once enabled; hypercalls before that are refused.
  const void* hypercall_code_ = nullptr;
};

}  // namespace vbus::hyperv

#endif  // VBUS_HYPERV_X86_PLATFORM_H_
