// DetectHyperV: is this a Hyper-V partition vbus can run in, and what does it offer?
//
// Reads the hypervisor CPUID leaves through the platform (docs/hyperv.md §2): the
// hypervisor-present bit, the highest leaf and vendor signature, the "Hv#1" interface
// signature (what compatibility is based on: other hypervisors that implement Hyper-V's
// interface present it under their own vendor string), the version, the partition privilege
// mask and feature bits, the recommendations and the limits. It writes nothing: detection is
// safe before any set-up and on any VP.
//
// Example:
//   absl::StatusOr<HyperVInfo> hv = DetectHyperV(platform);
//   if (!hv.ok()) return hv.status();   // NotFound: not Hyper-V; FailedPrecondition: privilege
//   SynicOptions options = SynicOptionsFor(*hv, kVector);   // synic.h: auto-EOI or not
#ifndef VBUS_HYPERV_DETECT_H_
#define VBUS_HYPERV_DETECT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "hyperv/platform.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv {

// HyperVInfo
// What the CPUID leaves said, decoded. Raw masks are kept whole so later code can test bits
// vbus does not name yet.
struct HyperVInfo {
  // 0x40000000: the highest hypervisor leaf and the 12-character vendor string
  // ("Microsoft Hv" on Hyper-V).
  uint32_t max_leaf = 0;
  std::string vendor;
  // 0x40000002: build number, major.minor version, service pack, service branch and number.
  uint32_t build = 0;
  uint16_t major_version = 0;
  uint16_t minor_version = 0;
  uint32_t service_pack = 0;
  uint8_t service_branch = 0;
  uint32_t service_number = 0;
  // 0x40000003: the partition privilege mask (EBX:EAX) and the feature bits (EDX).
  uint64_t privileges = 0;
  uint32_t features = 0;
  // 0x40000004: recommendation bits (EAX), spinlock retry count (EBX), physical address bits
  // (ECX[6:0]).
  uint32_t recommendations = 0;
  uint32_t spinlock_retries = 0;
  uint32_t physical_address_bits = 0;
  // 0x40000005: the most virtual and logical processors the hypervisor supports.
  uint32_t max_vps = 0;
  uint32_t max_logical_processors = 0;

  bool HasPrivilege(uint64_t privilege) const { return (privileges & privilege) == privilege; }
  bool HasFeature(uint32_t feature) const { return (features & feature) == feature; }
  // The hypervisor asks guests not to use auto-EOI on SINTs (recommendation bit 9).
  bool deprecate_auto_eoi() const { return (recommendations & kRecommendDeprecateAutoEoi) != 0; }
};

// DetectHyperV
// Reads and decodes the leaves. NotFound, saying which test failed, when no hypervisor is
// present (CPUID.1:ECX bit 31 clear), the highest hypervisor leaf lies outside
// 0x40000005..0x4000FFFF, or the interface signature is not "Hv#1". FailedPrecondition,
// naming every missing privilege and its CPUID bit, when the partition lacks one vbus needs:
// AccessSynicRegs, AccessHypercallMsrs, AccessVpIndex, PostMessages, SignalEvents
// (kPrivilegesVbusNeeds).
absl::StatusOr<HyperVInfo> DetectHyperV(HvPlatform& platform);

}  // namespace vbus::hyperv

#endif  // VBUS_HYPERV_DETECT_H_
