#include "hyperv/tlfs.h"

#include <bit>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vbus::hyperv {

std::string PrivilegeName(uint64_t bit) {
  switch (bit) {
    case kPrivilegeAccessSynicRegs:
      return "AccessSynicRegs";
    case kPrivilegeAccessHypercallMsrs:
      return "AccessHypercallMsrs";
    case kPrivilegeAccessVpIndex:
      return "AccessVpIndex";
    case kPrivilegePostMessages:
      return "PostMessages";
    case kPrivilegeSignalEvents:
      return "SignalEvents";
  }
  return absl::StrCat("privilege bit ", std::countr_zero(bit));
}

std::string MsrName(uint32_t msr) {
  switch (msr) {
    case kMsrGuestOsId:
      return "GUEST_OS_ID";
    case kMsrHypercall:
      return "HYPERCALL";
    case kMsrVpIndex:
      return "VP_INDEX";
    case kMsrScontrol:
      return "SCONTROL";
    case kMsrSversion:
      return "SVERSION";
    case kMsrSiefp:
      return "SIEFP";
    case kMsrSimp:
      return "SIMP";
    case kMsrEom:
      return "EOM";
  }
  if (msr >= kMsrSint0 && msr < kMsrSint0 + kSintCount)
    return absl::StrCat("SINT", msr - kMsrSint0);
  return absl::StrFormat("MSR 0x%08X", msr);
}

std::string HvStatusName(uint16_t hv_status) {
  switch (hv_status) {
    case kHvStatusSuccess:
      return "HV_STATUS_SUCCESS";
    case kHvStatusInvalidHypercallCode:
      return "HV_STATUS_INVALID_HYPERCALL_CODE";
    case kHvStatusInvalidHypercallInput:
      return "HV_STATUS_INVALID_HYPERCALL_INPUT";
    case kHvStatusInvalidAlignment:
      return "HV_STATUS_INVALID_ALIGNMENT";
    case kHvStatusInvalidParameter:
      return "HV_STATUS_INVALID_PARAMETER";
    case kHvStatusAccessDenied:
      return "HV_STATUS_ACCESS_DENIED";
    case kHvStatusInvalidPartitionState:
      return "HV_STATUS_INVALID_PARTITION_STATE";
    case kHvStatusOperationDenied:
      return "HV_STATUS_OPERATION_DENIED";
    case kHvStatusInsufficientMemory:
      return "HV_STATUS_INSUFFICIENT_MEMORY";
    case kHvStatusInvalidPartitionId:
      return "HV_STATUS_INVALID_PARTITION_ID";
    case kHvStatusInvalidVpIndex:
      return "HV_STATUS_INVALID_VP_INDEX";
    case kHvStatusNotFound:
      return "HV_STATUS_NOT_FOUND";
    case kHvStatusInvalidPortId:
      return "HV_STATUS_INVALID_PORT_ID";
    case kHvStatusInvalidConnectionId:
      return "HV_STATUS_INVALID_CONNECTION_ID";
    case kHvStatusInsufficientBuffers:
      return "HV_STATUS_INSUFFICIENT_BUFFERS";
    case kHvStatusNotAcknowledged:
      return "HV_STATUS_NOT_ACKNOWLEDGED";
    case kHvStatusInvalidVpState:
      return "HV_STATUS_INVALID_VP_STATE";
    case kHvStatusAcknowledged:
      return "HV_STATUS_ACKNOWLEDGED";
    case kHvStatusInvalidSaveRestoreState:
      return "HV_STATUS_INVALID_SAVE_RESTORE_STATE";
    case kHvStatusInvalidSynicState:
      return "HV_STATUS_INVALID_SYNIC_STATE";
    case kHvStatusObjectInUse:
      return "HV_STATUS_OBJECT_IN_USE";
    case kHvStatusNoData:
      return "HV_STATUS_NO_DATA";
    case kHvStatusInactive:
      return "HV_STATUS_INACTIVE";
    case kHvStatusNoResources:
      return "HV_STATUS_NO_RESOURCES";
    case kHvStatusFeatureUnavailable:
      return "HV_STATUS_FEATURE_UNAVAILABLE";
    case kHvStatusInsufficientBuffer:
      return "HV_STATUS_INSUFFICIENT_BUFFER";
    case kHvStatusTimeOut:
      return "HV_STATUS_TIME_OUT";
  }
  return "unknown HV_STATUS";
}

namespace {

// The canonical code for a failing HV_STATUS (docs/hyperv.md §9).
absl::StatusCode CodeFor(uint16_t hv_status) {
  switch (hv_status) {
    case kHvStatusInsufficientMemory:
    case kHvStatusInsufficientBuffers:
    case kHvStatusNoResources:
      return absl::StatusCode::kResourceExhausted;
    case kHvStatusInvalidHypercallCode:
    case kHvStatusInvalidHypercallInput:
    case kHvStatusInvalidAlignment:
    case kHvStatusInvalidParameter:
    case kHvStatusInvalidPartitionId:
    case kHvStatusInvalidVpIndex:
    case kHvStatusInsufficientBuffer:  // the caller's output buffer is too small
      return absl::StatusCode::kInvalidArgument;
    case kHvStatusInvalidConnectionId:
    case kHvStatusInvalidPortId:
    case kHvStatusNotFound:
    case kHvStatusNoData:
      return absl::StatusCode::kNotFound;
    case kHvStatusAccessDenied:
      return absl::StatusCode::kPermissionDenied;
    case kHvStatusInvalidPartitionState:
    case kHvStatusInvalidVpState:
    case kHvStatusInvalidSynicState:
    case kHvStatusInvalidSaveRestoreState:
    case kHvStatusOperationDenied:
    case kHvStatusObjectInUse:
    case kHvStatusInactive:
    case kHvStatusAcknowledged:
      return absl::StatusCode::kFailedPrecondition;
    case kHvStatusFeatureUnavailable:
      return absl::StatusCode::kUnimplemented;
    case kHvStatusTimeOut:
      return absl::StatusCode::kDeadlineExceeded;
  }
  return absl::StatusCode::kUnknown;
}

}  // namespace

absl::Status HvStatusToStatus(uint16_t hv_status, absl::string_view what) {
  if (hv_status == kHvStatusSuccess) return absl::OkStatus();
  return absl::Status(CodeFor(hv_status),
                      absl::StrFormat("%s: %s (0x%02X)", what, HvStatusName(hv_status), hv_status));
}

}  // namespace vbus::hyperv
