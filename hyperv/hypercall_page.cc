#include "hyperv/hypercall_page.h"

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "core/data/protocol.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv {

namespace {

// The HYPERCALL write and its read-back, once GUEST_OS_ID is set.
absl::Status EnableAfterGuestOsId(HvPlatform& platform, uint32_t vp, uint64_t before,
                                  uint64_t page_gpa) {
  const uint64_t value = (before & kHypercallMsrPreserve) | page_gpa | kHypercallMsrEnable;
  if (absl::Status s = platform.WriteMsr(vp, kMsrHypercall, value); !s.ok()) return s;
  absl::StatusOr<uint64_t> after = platform.ReadMsr(vp, kMsrHypercall);
  if (!after.ok()) return after.status();
  if ((*after & kHypercallMsrEnable) == 0 || (*after & kMsrPfnMask) != page_gpa) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "hypercall page: wrote HYPERCALL = 0x%X but it reads 0x%X (not enabled at GPA 0x%X)", value,
        after.value(), page_gpa));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status EnableHypercallPage(HvPlatform& platform, uint32_t vp, uint64_t guest_os_id,
                                 uint64_t page_gpa) {
  if (guest_os_id == 0) {
    return absl::InvalidArgumentError(
        "hypercall page: GUEST_OS_ID 0 means no guest OS; the page could not be enabled");
  }
  if (page_gpa % protocol::kPageSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("hypercall page: GPA 0x%X is not page-aligned", page_gpa));
  }
  absl::StatusOr<uint64_t> before = platform.ReadMsr(vp, kMsrHypercall);
  if (!before.ok()) return before.status();
  if ((*before & kHypercallMsrLocked) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "hypercall page: the HYPERCALL MSR is locked (0x%X); its page is not vbus's", *before));
  }
  if (absl::Status s = platform.WriteMsr(vp, kMsrGuestOsId, guest_os_id); !s.ok()) return s;
  absl::Status enabled = EnableAfterGuestOsId(platform, vp, *before, page_gpa);
  // Leave nothing half done: the partition goes back to "no guest OS, no page".
  if (!enabled.ok()) DisableHypercallPage(platform, vp).IgnoreError();
  return enabled;
}

absl::Status DisableHypercallPage(HvPlatform& platform, uint32_t vp) {
  absl::Status first = platform.WriteMsr(vp, kMsrGuestOsId, 0);
  absl::StatusOr<uint64_t> hypercall = platform.ReadMsr(vp, kMsrHypercall);
  absl::Status second = hypercall.status();
  if (hypercall.ok()) {
    second = platform.WriteMsr(vp, kMsrHypercall, *hypercall & kHypercallMsrPreserve);
  }
  return first.ok() ? second : first;
}

}  // namespace vbus::hyperv
