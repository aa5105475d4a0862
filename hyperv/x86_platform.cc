#include "hyperv/x86_platform.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "hyperv/hypercall_page.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv {

namespace {

absl::Status CheckEnvironment(const X86HvEnvironment& env) {
  const char* missing = nullptr;
  if (env.vp_count == 0) missing = "vp_count (0)";
  if (!env.current_vp) missing = "current_vp";
  if (env.guest_os_id == 0) missing = "guest_os_id (0)";
  if (!env.allocate_pages) missing = "allocate_pages";
  if (!env.allocate_hypercall_page) missing = "allocate_hypercall_page";
  if (!env.register_interrupt) missing = "register_interrupt";
  if (!env.unregister_interrupt) missing = "unregister_interrupt";
  if (missing == nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("X86HvPlatform: the environment lacks ", missing));
}

}  // namespace

absl::StatusOr<std::unique_ptr<X86HvPlatform>> X86HvPlatform::Create(X86HvEnvironment env) {
  if (absl::Status s = CheckEnvironment(env); !s.ok()) return s;
#if defined(__x86_64__)
  std::unique_ptr<X86HvPlatform> platform(new X86HvPlatform(std::move(env)));
  absl::StatusOr<HyperVInfo> info = DetectHyperV(*platform);
  if (!info.ok()) return info.status();
  platform->info_ = *std::move(info);
  absl::StatusOr<Pages> page = platform->env_.allocate_hypercall_page();
  if (!page.ok()) return page.status();
  if (page->page_count() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "X86HvPlatform: allocate_hypercall_page returned ", page->page_count(), " pages, not 1"));
  }
  platform->hypercall_page_ = *std::move(page);
  const uint64_t gpa = platform->hypercall_page_.pfns()[0] << kMsrPfnShift;
  absl::Status enabled =
      EnableHypercallPage(*platform, platform->env_.current_vp(), platform->env_.guest_os_id, gpa);
  if (!enabled.ok()) return enabled;
  platform->hypercall_code_ = platform->hypercall_page_.data();
  return platform;
#else
  return absl::UnimplementedError("X86HvPlatform runs only on x86-64");
#endif
}

X86HvPlatform::~X86HvPlatform() {
  if (hypercall_code_ != nullptr) {
    // Nothing useful can be done with a failure while the platform goes away.
    DisableHypercallPage(*this, env_.current_vp()).IgnoreError();
    hypercall_code_ = nullptr;
  }
}

absl::Status X86HvPlatform::CheckVp(uint32_t vp) const {
  if (vp >= env_.vp_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("X86HvPlatform: VP ", vp, " out of range (", env_.vp_count, " VPs)"));
  }
  const uint32_t current = env_.current_vp();
  if (vp != current) {
    return absl::FailedPreconditionError(absl::StrCat(
        "X86HvPlatform: MSRs of VP ", vp, " accessed from VP ", current, " (run on VP ", vp, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Pages> X86HvPlatform::AllocatePages(size_t count) {
  if (count == 0) return absl::InvalidArgumentError("X86HvPlatform: zero pages requested");
  return env_.allocate_pages(count);
}

absl::Status X86HvPlatform::RegisterInterrupt(uint32_t vp, uint8_t vector,
                                              std::function<void()> handler) {
  if (vp >= env_.vp_count || vector < kSintMinVector) {
    return absl::InvalidArgumentError(
        absl::StrCat("X86HvPlatform: cannot route vector ", vector, " on VP ", vp));
  }
  return env_.register_interrupt(vp, vector, std::move(handler));
}

void X86HvPlatform::UnregisterInterrupt(uint32_t vp, uint8_t vector) {
  env_.unregister_interrupt(vp, vector);
}

#if defined(__x86_64__)

CpuidResult X86HvPlatform::Cpuid(uint32_t leaf) {
  CpuidResult r;
  asm volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx) : "a"(leaf), "c"(0));
  return r;
}

absl::StatusOr<uint64_t> X86HvPlatform::ReadMsr(uint32_t vp, uint32_t msr) {
  if (absl::Status s = CheckVp(vp); !s.ok()) return s;
  uint32_t low = 0;
  uint32_t high = 0;
  asm volatile("rdmsr" : "=a"(low), "=d"(high) : "c"(msr));
  return uint64_t{high} << 32 | low;
}

absl::Status X86HvPlatform::WriteMsr(uint32_t vp, uint32_t msr, uint64_t value) {
  if (absl::Status s = CheckVp(vp); !s.ok()) return s;
  // "memory": a page MSR write hands the hypervisor memory the compiler must have written.
  asm volatile("wrmsr"
               :
               : "c"(msr), "a"(static_cast<uint32_t>(value)),
                 "d"(static_cast<uint32_t>(value >> 32))
               : "memory");
  return absl::OkStatus();
}

uint64_t X86HvPlatform::Hypercall(uint64_t control, uint64_t input_gpa, uint64_t output_gpa) {
  if (hypercall_code_ == nullptr) return HypercallResult(kHvStatusInvalidPartitionState);
  uint64_t result;
  // R8 is loaded inside the statement (and declared clobbered) rather than bound to a
  // register variable. The CALL pushes a return address below the stack pointer: step over
  // the 128-byte red zone the compiler may be using there. "memory": the hypervisor reads the
  // input block and writes the output block.
  asm volatile(
      "mov %[r8_value], %%r8\n\t"
      "sub $128, %%rsp\n\t"
      "call *%[code]\n\t"
      "add $128, %%rsp"
      : "=a"(result), "+c"(control), "+d"(input_gpa)
      : [r8_value] "r"(output_gpa), [code] "r"(hypercall_code_)
      : "cc", "memory", "r8", "r9", "r10", "r11");
  return result;
}

uint64_t X86HvPlatform::FastHypercall(uint64_t control, uint64_t in0, uint64_t in1) {
  // The fast form passes the same registers (RCX control, RDX and R8 the two input values):
  // only the fast bit in `control` tells the hypervisor they hold values, not GPAs.
  return Hypercall(control, in0, in1);
}

#else  // !defined(__x86_64__): Create never succeeds, so none of these can be reached.

CpuidResult X86HvPlatform::Cpuid(uint32_t) { return CpuidResult{}; }

absl::StatusOr<uint64_t> X86HvPlatform::ReadMsr(uint32_t, uint32_t) {
  return absl::UnimplementedError("X86HvPlatform runs only on x86-64");
}

absl::Status X86HvPlatform::WriteMsr(uint32_t, uint32_t, uint64_t) {
  return absl::UnimplementedError("X86HvPlatform runs only on x86-64");
}

uint64_t X86HvPlatform::Hypercall(uint64_t, uint64_t, uint64_t) {
  return HypercallResult(kHvStatusFeatureUnavailable);
}

uint64_t X86HvPlatform::FastHypercall(uint64_t, uint64_t, uint64_t) {
  return HypercallResult(kHvStatusFeatureUnavailable);
}

#endif

}  // namespace vbus::hyperv
