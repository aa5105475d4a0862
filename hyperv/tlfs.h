// Hyper-V's hypervisor interface as vbus uses it (x86-64): CPUID leaves, synthetic MSRs, the
// SynIC message and event-flags pages, the hypercall ABI and status codes, the HvPostMessage
// and HvSignalEvent input blocks, the monitor page, and VMBus's fixed SynIC resources.
//
// Every number here is explained, with where it matters and what vbus decided where the
// sources disagree, in docs/hyperv.md (cited by section below). This header is the one
// definition both sides include: the guest code (detect, synic, hypercalls, x86_platform) and
// the FakeHypervisor that plays the hypervisor in tests.
//
// Layouts are plain structs whose fields are naturally aligned, so they have no padding: the
// static_asserts pin every size and offset to the numbers of docs/hyperv.md. All fields are
// little-endian, as on x86-64. Memory the hypervisor shares with the guest (message slots,
// event flags, monitor pages) is never read through these structs with plain loads where the
// other side may write concurrently: see synic.h for the access rules.
//
// Example:
//   uint64_t control = HypercallControl(kHvCallSignalEvent, /*fast=*/true);
//   uint64_t result = platform.FastHypercall(control, SignalEventFastInput(conn, 0), 0);
//   absl::Status s = HvStatusToStatus(HypercallResultStatus(result), "HvSignalEvent");
#ifndef VBUS_HYPERV_TLFS_H_
#define VBUS_HYPERV_TLFS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/data/protocol.h"

namespace vbus::hyperv {

// ---- CPUID (docs/hyperv.md §2) -----------------------------------------------------------

// CPUID.1:ECX bit 31: a hypervisor is present.
inline constexpr uint32_t kCpuidLeafProcessorFeatures = 0x00000001;
inline constexpr uint32_t kCpuidEcxHypervisorPresent = uint32_t{1} << 31;

// The hypervisor leaves.
inline constexpr uint32_t kCpuidLeafVendor = 0x40000000;            // EAX max leaf, vendor
inline constexpr uint32_t kCpuidLeafInterface = 0x40000001;         // EAX "Hv#1"
inline constexpr uint32_t kCpuidLeafVersion = 0x40000002;           // build, version, SP
inline constexpr uint32_t kCpuidLeafFeatures = 0x40000003;          // privileges, features
inline constexpr uint32_t kCpuidLeafRecommendations = 0x40000004;   // what the guest should do
inline constexpr uint32_t kCpuidLeafLimits = 0x40000005;            // max VPs / LPs
inline constexpr uint32_t kCpuidLeafHardwareFeatures = 0x40000006;  // not read by vbus
// The highest hypervisor leaf (0x40000000's EAX) must lie in this range.
inline constexpr uint32_t kCpuidMinMaxLeaf = 0x40000005;
inline constexpr uint32_t kCpuidMaxMaxLeaf = 0x4000FFFF;

// 0x40000000 EBX, ECX, EDX: "Micr" "osof" "t Hv"; 0x40000001 EAX: "Hv#1".
inline constexpr uint32_t kCpuidVendorEbx = 0x7263694D;
inline constexpr uint32_t kCpuidVendorEcx = 0x666F736F;
inline constexpr uint32_t kCpuidVendorEdx = 0x76482074;
inline constexpr uint32_t kCpuidInterfaceHv1 = 0x31237648;

// The partition privilege mask of 0x40000003: bits 31:0 from EAX, 63:32 from EBX.
inline constexpr uint64_t kPrivilegeAccessSynicRegs = uint64_t{1} << 2;
inline constexpr uint64_t kPrivilegeAccessHypercallMsrs = uint64_t{1} << 5;
inline constexpr uint64_t kPrivilegeAccessVpIndex = uint64_t{1} << 6;
inline constexpr uint64_t kPrivilegePostMessages = uint64_t{1} << (32 + 4);
inline constexpr uint64_t kPrivilegeSignalEvents = uint64_t{1} << (32 + 5);
// What a vbus guest needs: SynIC registers, the hypercall MSRs, VP_INDEX, HvPostMessage and
// HvSignalEvent.
inline constexpr uint64_t kPrivilegesVbusNeeds =
    kPrivilegeAccessSynicRegs | kPrivilegeAccessHypercallMsrs | kPrivilegeAccessVpIndex |
    kPrivilegePostMessages | kPrivilegeSignalEvents;

// PrivilegeName
// "AccessSynicRegs", "PostMessages", … for one of the bits above; "privilege bit N" otherwise.
std::string PrivilegeName(uint64_t bit);

// 0x40000003 EDX: features.
inline constexpr uint32_t kFeatureXmmHypercallInput = uint32_t{1} << 4;
inline constexpr uint32_t kFeatureGuestCrashMsrs = uint32_t{1} << 10;
inline constexpr uint32_t kFeatureXmmHypercallOutput = uint32_t{1} << 15;
inline constexpr uint32_t kFeatureSintPolling = uint32_t{1} << 17;
inline constexpr uint32_t kFeatureHypercallMsrLock = uint32_t{1} << 18;

// 0x40000004: recommendations. EAX bits; EBX the spinlock retry count (never = all ones);
// ECX[6:0] the physical address bits.
inline constexpr uint32_t kRecommendRelaxedTiming = uint32_t{1} << 5;
inline constexpr uint32_t kRecommendDeprecateAutoEoi = uint32_t{1} << 9;
inline constexpr uint32_t kSpinlockRetriesNever = 0xFFFFFFFF;
inline constexpr uint32_t kPhysicalAddressBitsMask = 0x7F;

// ---- Synthetic MSRs (docs/hyperv.md §3) ---------------------------------------------------

inline constexpr uint32_t kMsrGuestOsId = 0x40000000;
inline constexpr uint32_t kMsrHypercall = 0x40000001;
inline constexpr uint32_t kMsrVpIndex = 0x40000002;
inline constexpr uint32_t kMsrScontrol = 0x40000080;
inline constexpr uint32_t kMsrSversion = 0x40000081;
inline constexpr uint32_t kMsrSiefp = 0x40000082;
inline constexpr uint32_t kMsrSimp = 0x40000083;
inline constexpr uint32_t kMsrEom = 0x40000084;
inline constexpr uint32_t kMsrSint0 = 0x40000090;
inline constexpr uint32_t kSintCount = 16;
// SINTn is at 0x40000090 + n (n < 16).
constexpr uint32_t MsrSint(uint32_t n) { return kMsrSint0 + n; }

// MsrName
// "SIMP", "SINT2", "GUEST_OS_ID", …; "MSR 0x…" for any other number.
std::string MsrName(uint32_t msr);

// Page-address MSRs (HYPERCALL, SIEFP, SIMP) hold a 4096-byte page's PFN in bits 63:12.
inline constexpr int kMsrPfnShift = 12;
inline constexpr uint64_t kMsrPfnMask = ~uint64_t{0xFFF};

// HYPERCALL: bit 0 enable, bit 1 locked (sticky until reset), bits 11:2 preserve.
inline constexpr uint64_t kHypercallMsrEnable = uint64_t{1} << 0;
inline constexpr uint64_t kHypercallMsrLocked = uint64_t{1} << 1;
inline constexpr uint64_t kHypercallMsrPreserve = 0xFFC;

// SCONTROL: bit 0 enable; bits 63:1 preserve.
inline constexpr uint64_t kScontrolEnable = uint64_t{1} << 0;
inline constexpr uint64_t kScontrolPreserve = ~kScontrolEnable;

// SIMP and SIEFP: bit 0 enable, bits 11:1 preserve, 63:12 PFN. Reset value 0.
inline constexpr uint64_t kSynicPageEnable = uint64_t{1} << 0;
inline constexpr uint64_t kSynicPagePreserve = 0xFFE;

// SINTn: 7:0 vector, 16 masked, 17 auto-EOI, 18 polling, 20 proxy; the other bits preserve.
// Reset value: masked. An unmasked SINT needs a vector of 16 or more (else #GP).
inline constexpr uint64_t kSintVectorMask = 0xFF;
inline constexpr uint64_t kSintMasked = uint64_t{1} << 16;
inline constexpr uint64_t kSintAutoEoi = uint64_t{1} << 17;
inline constexpr uint64_t kSintPolling = uint64_t{1} << 18;
inline constexpr uint64_t kSintProxy = uint64_t{1} << 20;
inline constexpr uint64_t kSintPreserve =
    ~(kSintVectorMask | kSintMasked | kSintAutoEoi | kSintPolling | kSintProxy);
inline constexpr uint64_t kSintResetValue = kSintMasked;
inline constexpr uint32_t kSintMinVector = 16;

// SVERSION reads 1.
inline constexpr uint64_t kSynicVersion = 1;

// GUEST_OS_ID for an open-source OS: bit 63 set, 62:56 OS type, 55:48 OS id, 47:16 kernel
// version, 15:0 build. 0 means "no guest OS": the hypercall page cannot be enabled.
inline constexpr uint64_t kGuestOsIdOpenSource = uint64_t{1} << 63;
inline constexpr uint8_t kGuestOsTypeLinux = 1;
inline constexpr uint8_t kGuestOsTypeFreeBsd = 2;
inline constexpr uint8_t kGuestOsTypeXen = 3;
inline constexpr uint8_t kGuestOsTypeIllumos = 4;
constexpr uint64_t OpenSourceGuestOsId(uint8_t os_type, uint8_t os_id, uint32_t kernel_version,
                                       uint16_t build) {
  return kGuestOsIdOpenSource | (uint64_t{os_type} & 0x7F) << 56 | uint64_t{os_id} << 48 |
         uint64_t{kernel_version} << 16 | build;
}
static_assert(OpenSourceGuestOsId(kGuestOsTypeLinux, 0, 0, 0) >> 56 == 0x81);

// ---- SynIC message page (docs/hyperv.md §5) -----------------------------------------------

// One 4096-byte page per VP: 16 slots of 256 bytes, slot n for SINTn.
inline constexpr size_t kMessageSlotBytes = 256;
inline constexpr size_t kMessagePayloadBytes = 240;

struct HvMessageHeader {
  uint32_t message_type;  // 0 = slot empty
  uint8_t payload_size;   // 0..240
  uint8_t message_flags;  // bit 0: MessagePending
  uint16_t reserved;
  uint64_t sender;  // port / sender id
};
static_assert(sizeof(HvMessageHeader) == 16);
static_assert(offsetof(HvMessageHeader, message_type) == 0);
static_assert(offsetof(HvMessageHeader, payload_size) == 4);
static_assert(offsetof(HvMessageHeader, message_flags) == 5);
static_assert(offsetof(HvMessageHeader, reserved) == 6);
static_assert(offsetof(HvMessageHeader, sender) == 8);

struct HvMessage {
  HvMessageHeader header;
  uint8_t payload[kMessagePayloadBytes];
};
static_assert(sizeof(HvMessage) == kMessageSlotBytes);
static_assert(offsetof(HvMessage, payload) == 16);
static_assert(kSintCount * kMessageSlotBytes == protocol::kPageSize);

// message_flags
inline constexpr uint8_t kMessageFlagPending = 0x01;

// message_type: 0 empty; guest-posted types have the top bit clear; hypervisor types set it.
inline constexpr uint32_t kMessageTypeNone = 0;
inline constexpr uint32_t kMessageTypeHypervisorBit = 0x80000000;
inline constexpr uint32_t kMessageTypeUnmappedGpa = 0x80000000;
inline constexpr uint32_t kMessageTypeTimerExpired = 0x80000010;

// ---- SynIC event flags page (docs/hyperv.md §6) -------------------------------------------

// One 4096-byte page per VP: 16 blocks of 256 bytes (2048 flags), block n for SINTn.
// Flag k is bit k % 8 of byte k / 8.
inline constexpr size_t kEventFlagsBlockBytes = 256;
inline constexpr uint32_t kEventFlagsPerSint = kEventFlagsBlockBytes * 8;
static_assert(kSintCount * kEventFlagsBlockBytes == protocol::kPageSize);
static_assert(kEventFlagsPerSint == protocol::kRelidCount);

// ---- Hypercalls (docs/hyperv.md §7) -------------------------------------------------------

// The control (input) value in RCX.
inline constexpr uint64_t kHypercallCodeMask = 0xFFFF;         // 15:0
inline constexpr uint64_t kHypercallFast = uint64_t{1} << 16;  // 16
inline constexpr int kHypercallVarHeaderShift = 17;            // 26:17, in qwords
inline constexpr uint64_t kHypercallVarHeaderMask = uint64_t{0x3FF} << 17;
inline constexpr uint64_t kHypercallNested = uint64_t{1} << 31;  // vbus never sets it (§7)
inline constexpr int kHypercallRepCountShift = 32;               // 43:32
inline constexpr uint64_t kHypercallRepCountMask = uint64_t{0xFFF} << 32;
inline constexpr int kHypercallRepStartShift = 48;  // 59:48
inline constexpr uint64_t kHypercallRepStartMask = uint64_t{0xFFF} << 48;
// Bits that must be zero. Bit 31 counts as reserved: vbus talks to a hypervisor directly,
// never as a nested one (docs/hyperv.md §7 for the sources' disagreement).
inline constexpr uint64_t kHypercallRsvdZ =
    ~(kHypercallCodeMask | kHypercallFast | kHypercallVarHeaderMask | kHypercallRepCountMask |
      kHypercallRepStartMask);

// HypercallControl
// The control value of a simple (rep count 0) or rep call.
constexpr uint64_t HypercallControl(uint16_t code, bool fast, uint16_t rep_count = 0,
                                    uint16_t rep_start = 0) {
  return uint64_t{code} | (fast ? kHypercallFast : 0) |
         (uint64_t{rep_count} << kHypercallRepCountShift & kHypercallRepCountMask) |
         (uint64_t{rep_start} << kHypercallRepStartShift & kHypercallRepStartMask);
}

// The result value in RAX: 15:0 status, 43:32 reps completed.
constexpr uint16_t HypercallResultStatus(uint64_t result) {
  return static_cast<uint16_t>(result & 0xFFFF);
}
constexpr uint16_t HypercallResultRepsCompleted(uint64_t result) {
  return static_cast<uint16_t>(result >> 32 & 0xFFF);
}
constexpr uint64_t HypercallResult(uint16_t status, uint16_t reps_completed = 0) {
  return uint64_t{status} | (uint64_t{reps_completed} & 0xFFF) << 32;
}

// Call codes.
inline constexpr uint16_t kHvCallPostMessage = 0x005C;
inline constexpr uint16_t kHvCallSignalEvent = 0x005D;

// HV_STATUS values (docs/hyperv.md §9).
inline constexpr uint16_t kHvStatusSuccess = 0x00;
inline constexpr uint16_t kHvStatusInvalidHypercallCode = 0x02;
inline constexpr uint16_t kHvStatusInvalidHypercallInput = 0x03;
inline constexpr uint16_t kHvStatusInvalidAlignment = 0x04;
inline constexpr uint16_t kHvStatusInvalidParameter = 0x05;
inline constexpr uint16_t kHvStatusAccessDenied = 0x06;
inline constexpr uint16_t kHvStatusInvalidPartitionState = 0x07;
inline constexpr uint16_t kHvStatusOperationDenied = 0x08;
inline constexpr uint16_t kHvStatusInsufficientMemory = 0x0B;
inline constexpr uint16_t kHvStatusInvalidPartitionId = 0x0D;
inline constexpr uint16_t kHvStatusInvalidVpIndex = 0x0E;
inline constexpr uint16_t kHvStatusNotFound = 0x10;
inline constexpr uint16_t kHvStatusInvalidPortId = 0x11;
inline constexpr uint16_t kHvStatusInvalidConnectionId = 0x12;
inline constexpr uint16_t kHvStatusInsufficientBuffers = 0x13;
inline constexpr uint16_t kHvStatusNotAcknowledged = 0x14;
inline constexpr uint16_t kHvStatusInvalidVpState = 0x15;
inline constexpr uint16_t kHvStatusAcknowledged = 0x16;
inline constexpr uint16_t kHvStatusInvalidSaveRestoreState = 0x17;
inline constexpr uint16_t kHvStatusInvalidSynicState = 0x18;
inline constexpr uint16_t kHvStatusObjectInUse = 0x19;
inline constexpr uint16_t kHvStatusNoData = 0x1B;
inline constexpr uint16_t kHvStatusInactive = 0x1C;
inline constexpr uint16_t kHvStatusNoResources = 0x1D;
inline constexpr uint16_t kHvStatusFeatureUnavailable = 0x1E;
inline constexpr uint16_t kHvStatusInsufficientBuffer = 0x33;
inline constexpr uint16_t kHvStatusTimeOut = 0x78;

// HvStatusName
// "HV_STATUS_INSUFFICIENT_BUFFERS" for 0x13, …; "unknown HV_STATUS" for a value not above.
std::string HvStatusName(uint16_t hv_status);

// HvStatusToStatus
// OK for HV_STATUS_SUCCESS; otherwise a Status whose message is `what`, the status name and
// its hex value: "HvPostMessage: HV_STATUS_INSUFFICIENT_BUFFERS (0x13)". The code carries the
// canonical retry meaning (docs/hyperv.md §9): ResourceExhausted for a lack of memory or
// buffers; InvalidArgument for a malformed call (code, input, alignment, parameter, VP index,
// partition id, a too-small output buffer); NotFound when an id names nothing (connection,
// port; NOT_FOUND, NO_DATA), which is what a backend reports for an InitiateContact posted on
// a connection the host does not offer; PermissionDenied for ACCESS_DENIED;
// FailedPrecondition for the wrong state (partition, VP, SynIC, save/restore; OPERATION_DENIED,
// OBJECT_IN_USE, INACTIVE, ACKNOWLEDGED); Unimplemented for FEATURE_UNAVAILABLE;
// DeadlineExceeded for TIME_OUT; Unknown for NOT_ACKNOWLEDGED and any value not listed.
absl::Status HvStatusToStatus(uint16_t hv_status, absl::string_view what);

// ---- HvPostMessage and HvSignalEvent inputs (docs/hyperv.md §8) ----------------------------

// Connection ids are 24 bits wide; bits 31:24 of the input field are reserved.
inline constexpr uint32_t kConnectionIdMask = 0x00FFFFFF;

struct HvPostMessageInput {
  uint32_t connection_id;
  uint32_t reserved;      // 0
  uint32_t message_type;  // non-zero, top bit clear
  uint32_t payload_size;  // 0..240
  uint8_t payload[kMessagePayloadBytes];
};
static_assert(sizeof(HvPostMessageInput) == 256);
static_assert(offsetof(HvPostMessageInput, connection_id) == 0);
static_assert(offsetof(HvPostMessageInput, reserved) == 4);
static_assert(offsetof(HvPostMessageInput, message_type) == 8);
static_assert(offsetof(HvPostMessageInput, payload_size) == 12);
static_assert(offsetof(HvPostMessageInput, payload) == 16);

struct HvSignalEventInput {
  uint32_t connection_id;
  uint16_t flag_number;
  uint16_t reserved;  // 0
};
static_assert(sizeof(HvSignalEventInput) == 8);
static_assert(offsetof(HvSignalEventInput, flag_number) == 4);
static_assert(offsetof(HvSignalEventInput, reserved) == 6);

// The fast form of HvSignalEvent carries the 8-byte input in RDX: connection id in bits 31:0,
// flag number in 47:32, reserved 63:48.
constexpr uint64_t SignalEventFastInput(uint32_t connection_id, uint16_t flag_number) {
  return uint64_t{connection_id} | uint64_t{flag_number} << 32;
}

// ---- Monitor page (docs/hyperv.md §10) -----------------------------------------------------

inline constexpr size_t kMonitorGroups = 4;
inline constexpr size_t kMonitorsPerGroup = 32;
static_assert(kMonitorGroups * kMonitorsPerGroup == protocol::kMonitorIdCount);

struct HvMonitorTriggerGroup {
  uint32_t pending;  // bit b: monitor id group * 32 + b has been triggered
  uint32_t armed;
};
struct HvMonitorParameter {
  uint32_t connection_id;
  uint16_t flag_number;
  uint16_t reserved;
};
struct HvMonitorPage {
  uint32_t trigger_state;
  uint32_t reserved1;
  HvMonitorTriggerGroup trigger_group[kMonitorGroups];
  uint64_t reserved2[3];
  int32_t next_checktime[kMonitorGroups][kMonitorsPerGroup];
  uint16_t latency[kMonitorGroups][kMonitorsPerGroup];
  uint64_t reserved3[32];
  HvMonitorParameter parameter[kMonitorGroups][kMonitorsPerGroup];
  uint8_t reserved4[1984];
};
static_assert(sizeof(HvMonitorTriggerGroup) == 8 && sizeof(HvMonitorParameter) == 8);
static_assert(sizeof(HvMonitorPage) == protocol::kPageSize);
static_assert(offsetof(HvMonitorPage, trigger_state) == 0x000);
static_assert(offsetof(HvMonitorPage, trigger_group) == 0x008);
static_assert(offsetof(HvMonitorPage, next_checktime) == 0x040);
static_assert(offsetof(HvMonitorPage, latency) == 0x240);
static_assert(offsetof(HvMonitorPage, parameter) == 0x440);

// ---- VMBus's fixed SynIC resources (docs/hyperv.md §11) ------------------------------------

// VMBus control messages arrive in SINT 2's slot and its events in SINT 2's flags block.
inline constexpr uint32_t kVmbusMessageSint = 2;
// The SynIC message type of a VMBus channel message (posted and received).
inline constexpr uint32_t kVmbusMessageType = 1;
// Connection ids: control messages below 5.0 (and every InitiateContact below 5.0), every
// InitiateContact from 5.0 (later messages use the id the host returns), events, monitor.
inline constexpr uint32_t kVmbusMessageConnectionId = 1;
inline constexpr uint32_t kVmbusMessageConnectionIdV5 = 4;
inline constexpr uint32_t kVmbusEventConnectionId = 2;
inline constexpr uint32_t kVmbusMonitorConnectionId = 3;
// The interrupt page's send half (guest → host) is its second 2048 bytes.
inline constexpr size_t kInterruptPageSendHalfOffset = protocol::kPageSize / 2;

// InitiateContactConnectionId
// The connection an InitiateContact requesting `version` is posted on: 4 from 5.0, else 1.
constexpr uint32_t InitiateContactConnectionId(uint32_t version) {
  return protocol::UsesReturnedConnectionId(version) ? kVmbusMessageConnectionIdV5
                                                     : kVmbusMessageConnectionId;
}

}  // namespace vbus::hyperv

#endif  // VBUS_HYPERV_TLFS_H_
