#include "hyperv/detect.h"

#include <array>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace vbus::hyperv {

namespace {

// The privileges vbus needs, with the register and bit CPUID 0x40000003 reports them in, for
// the error message (docs/hyperv.md §2).
struct NeededPrivilege {
  uint64_t bit;
  const char* where;
};
constexpr std::array<NeededPrivilege, 5> kNeeded = {{
    {kPrivilegeAccessSynicRegs, "EAX bit 2"},
    {kPrivilegeAccessHypercallMsrs, "EAX bit 5"},
    {kPrivilegeAccessVpIndex, "EAX bit 6"},
    {kPrivilegePostMessages, "EBX bit 4"},
    {kPrivilegeSignalEvents, "EBX bit 5"},
}};
static_assert((kNeeded[0].bit | kNeeded[1].bit | kNeeded[2].bit | kNeeded[3].bit |
               kNeeded[4].bit) == kPrivilegesVbusNeeds);

std::string VendorString(const CpuidResult& leaf) {
  char text[12];
  std::memcpy(text, &leaf.ebx, 4);
  std::memcpy(text + 4, &leaf.ecx, 4);
  std::memcpy(text + 8, &leaf.edx, 4);
  return std::string(text, sizeof(text));
}

}  // namespace

absl::StatusOr<HyperVInfo> DetectHyperV(HvPlatform& platform) {
  if ((platform.Cpuid(kCpuidLeafProcessorFeatures).ecx & kCpuidEcxHypervisorPresent) == 0) {
    return absl::NotFoundError("no hypervisor: CPUID.1:ECX bit 31 is clear");
  }
  HyperVInfo info;
  const CpuidResult vendor = platform.Cpuid(kCpuidLeafVendor);
  info.max_leaf = vendor.eax;
  info.vendor = VendorString(vendor);
  if (info.max_leaf < kCpuidMinMaxLeaf || info.max_leaf > kCpuidMaxMaxLeaf) {
    return absl::NotFoundError(absl::StrFormat(
        "not Hyper-V: hypervisor \"%s\" reports highest leaf 0x%08X, outside 0x%08X..0x%08X",
        absl::CHexEscape(info.vendor), info.max_leaf, kCpuidMinMaxLeaf, kCpuidMaxMaxLeaf));
  }
  const uint32_t interface = platform.Cpuid(kCpuidLeafInterface).eax;
  if (interface != kCpuidInterfaceHv1) {
    return absl::NotFoundError(absl::StrFormat(
        "not Hyper-V: hypervisor \"%s\" has interface signature 0x%08X, not \"Hv#1\" (0x%08X)",
        absl::CHexEscape(info.vendor), interface, kCpuidInterfaceHv1));
  }

  const CpuidResult version = platform.Cpuid(kCpuidLeafVersion);
  info.build = version.eax;
  info.major_version = static_cast<uint16_t>(version.ebx >> 16);
  info.minor_version = static_cast<uint16_t>(version.ebx & 0xFFFF);
  info.service_pack = version.ecx;
  info.service_branch = static_cast<uint8_t>(version.edx >> 24);
  info.service_number = version.edx & 0x00FFFFFF;

  const CpuidResult features = platform.Cpuid(kCpuidLeafFeatures);
  info.privileges = uint64_t{features.ebx} << 32 | features.eax;
  info.features = features.edx;

  const CpuidResult recommendations = platform.Cpuid(kCpuidLeafRecommendations);
  info.recommendations = recommendations.eax;
  info.spinlock_retries = recommendations.ebx;
  info.physical_address_bits = recommendations.ecx & kPhysicalAddressBitsMask;

  const CpuidResult limits = platform.Cpuid(kCpuidLeafLimits);
  info.max_vps = limits.eax;
  info.max_logical_processors = limits.ebx;

  std::vector<std::string> missing;
  for (const NeededPrivilege& p : kNeeded) {
    if (!info.HasPrivilege(p.bit)) {
      missing.push_back(absl::StrFormat("%s (CPUID 0x%08X %s)", PrivilegeName(p.bit),
                                        kCpuidLeafFeatures, p.where));
    }
  }
  if (!missing.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Hyper-V partition lacks privileges vbus needs: ", absl::StrJoin(missing, ", ")));
  }
  return info;
}

}  // namespace vbus::hyperv
