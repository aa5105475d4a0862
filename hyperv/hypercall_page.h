// Enabling and disabling the hypercall page, once per partition (docs/hyperv.md §4).
//
// Before the first hypercall the guest tells the hypervisor who it is (GUEST_OS_ID, non-zero)
// and then where to place the hypercall page (HYPERCALL MSR: the page's PFN and the enable
// bit). The hypervisor overlays that guest page with its calling sequence (VMCALL or VMMCALL
// and a return); the guest then calls into it (platform.h's Hypercall). The order matters:
// the enable bit does not stick while GUEST_OS_ID is 0. Teardown is the reverse: GUEST_OS_ID
// back to 0 (which alone disables the page), then the HYPERCALL enable bit cleared.
//
// X86HvPlatform::Create runs EnableHypercallPage on the page its environment maps executable;
// a test runs it on the FakeHypervisor. Both MSRs are partition-wide: `vp` is only the VP the
// caller runs on (platform.h).
//
// Example:
//   absl::StatusOr<Pages> page = platform.AllocatePages(1);
//   absl::Status s = EnableHypercallPage(platform, /*vp=*/0,
//                                        OpenSourceGuestOsId(kGuestOsTypeLinux, 0, 0, 0),
//                                        page->pfns()[0] << kMsrPfnShift);
#ifndef VBUS_HYPERV_HYPERCALL_PAGE_H_
#define VBUS_HYPERV_HYPERCALL_PAGE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "hyperv/platform.h"

namespace vbus::hyperv {

// EnableHypercallPage
// Writes GUEST_OS_ID = `guest_os_id`, then HYPERCALL = page PFN | enable (bits 11:2 as read),
// and reads HYPERCALL back. InvalidArgument for a guest OS id of 0 or a GPA that is not
// page-aligned; FailedPrecondition if the HYPERCALL MSR is locked (another component owns the
// page; nothing is written) or the read-back does not show the page enabled; the platform's
// error if an access fails. A failure after GUEST_OS_ID was written runs DisableHypercallPage,
// so nothing is left half enabled.
absl::Status EnableHypercallPage(HvPlatform& platform, uint32_t vp, uint64_t guest_os_id,
                                 uint64_t page_gpa);

// DisableHypercallPage
// Writes GUEST_OS_ID = 0, then clears HYPERCALL's enable bit and PFN (bits 11:2 as read).
// Both writes are tried; the first failure is returned. No hypercall may be in progress or
// made afterwards.
absl::Status DisableHypercallPage(HvPlatform& platform, uint32_t vp);

}  // namespace vbus::hyperv

#endif  // VBUS_HYPERV_HYPERCALL_PAGE_H_
