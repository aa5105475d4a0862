// MsrFaultPlatform (testonly): an HvPlatform that forwards to another one, except that writes
// to chosen MSRs fail with a chosen Status or are silently dropped (as a hypervisor that
// ignores them would). For testing what guest code does when a step of an MSR sequence does
// not take: rollbacks, read-back checks.
//
// Example:
//   FakeHypervisor hv;
//   MsrFaultPlatform platform(hv);
//   platform.FailWrites(MsrSint(2), absl::InternalError("injected"));
//   synic over `platform` → Enable fails at SINT2 and undoes SIEFP and SIMP.
//
// Thread safety: configure before use; then as thread-safe as the platform it wraps.
#ifndef VBUS_HYPERV_TESTING_MSR_FAULT_PLATFORM_H_
#define VBUS_HYPERV_TESTING_MSR_FAULT_PLATFORM_H_

#include <map>
#include <set>
#include <utility>

#include "hyperv/platform.h"

namespace vbus::hyperv::testing {

class MsrFaultPlatform final : public HvPlatform {
 public:
  explicit MsrFaultPlatform(HvPlatform& inner) : inner_(inner) {}

  // Writes to `msr` return `status` and do not reach the inner platform.
  void FailWrites(uint32_t msr, absl::Status status) { fail_[msr] = std::move(status); }
  // Writes to `msr` return OK and do not reach the inner platform.
  void IgnoreWrites(uint32_t msr) { ignore_.insert(msr); }

  uint32_t vp_count() const override { return inner_.vp_count(); }
  CpuidResult Cpuid(uint32_t leaf) override { return inner_.Cpuid(leaf); }
  absl::StatusOr<uint64_t> ReadMsr(uint32_t vp, uint32_t msr) override {
    return inner_.ReadMsr(vp, msr);
  }
  absl::Status WriteMsr(uint32_t vp, uint32_t msr, uint64_t value) override {
    if (auto it = fail_.find(msr); it != fail_.end()) return it->second;
    if (ignore_.count(msr) != 0) return absl::OkStatus();
    return inner_.WriteMsr(vp, msr, value);
  }
  uint64_t Hypercall(uint64_t control, uint64_t input_gpa, uint64_t output_gpa) override {
    return inner_.Hypercall(control, input_gpa, output_gpa);
  }
  uint64_t FastHypercall(uint64_t control, uint64_t in0, uint64_t in1) override {
    return inner_.FastHypercall(control, in0, in1);
  }
  absl::StatusOr<Pages> AllocatePages(size_t count) override { return inner_.AllocatePages(count); }
  absl::Status RegisterInterrupt(uint32_t vp, uint8_t vector,
                                 std::function<void()> handler) override {
    return inner_.RegisterInterrupt(vp, vector, std::move(handler));
  }
  void UnregisterInterrupt(uint32_t vp, uint8_t vector) override {
    inner_.UnregisterInterrupt(vp, vector);
  }

 private:
  HvPlatform& inner_;
  std::map<uint32_t, absl::Status> fail_;
  std::set<uint32_t> ignore_;
};

}  // namespace vbus::hyperv::testing

#endif  // VBUS_HYPERV_TESTING_MSR_FAULT_PLATFORM_H_
