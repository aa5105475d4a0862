// The TLFS numbers of hyperv/tlfs.h against docs/hyperv.md, written out again here by hand
// (layouts at compile time, encodings and names at run time), and HvStatusToStatus's names,
// hex values and codes for every status.
#include "hyperv/tlfs.h"

#include <cstddef>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace vbus::hyperv {
namespace {

// ---- Layouts (docs/hyperv.md §5, §6, §8, §10) ------------------------------------------------
static_assert(sizeof(HvMessage) == 256 && offsetof(HvMessage, payload) == 16);
static_assert(offsetof(HvMessage, header) + offsetof(HvMessageHeader, payload_size) == 4);
static_assert(offsetof(HvMessage, header) + offsetof(HvMessageHeader, message_flags) == 5);
static_assert(offsetof(HvMessage, header) + offsetof(HvMessageHeader, sender) == 8);
static_assert(16 * sizeof(HvMessage) == 4096);
static_assert(16 * kEventFlagsBlockBytes == 4096 && kEventFlagsPerSint == 2048);
static_assert(sizeof(HvPostMessageInput) == 256);
static_assert(offsetof(HvPostMessageInput, message_type) == 8);
static_assert(offsetof(HvPostMessageInput, payload_size) == 12);
static_assert(offsetof(HvPostMessageInput, payload) == 16);
static_assert(sizeof(HvSignalEventInput) == 8 && offsetof(HvSignalEventInput, flag_number) == 4);
static_assert(sizeof(HvMonitorPage) == 4096);
static_assert(offsetof(HvMonitorPage, trigger_group) + 3 * sizeof(HvMonitorTriggerGroup) == 0x20);
static_assert(offsetof(HvMonitorPage, next_checktime) == 0x40);
static_assert(offsetof(HvMonitorPage, latency) == 0x240);
static_assert(offsetof(HvMonitorPage, parameter) == 0x440);
static_assert(offsetof(HvMonitorPage, parameter) + 4 * 32 * 8 == 0x840);

// ---- MSRs (docs/hyperv.md §3) --------------------------------------------------------------
static_assert(kMsrGuestOsId == 0x40000000 && kMsrHypercall == 0x40000001 &&
              kMsrVpIndex == 0x40000002);
static_assert(kMsrScontrol == 0x40000080 && kMsrSversion == 0x40000081 && kMsrSiefp == 0x40000082 &&
              kMsrSimp == 0x40000083 && kMsrEom == 0x40000084);
static_assert(MsrSint(0) == 0x40000090 && MsrSint(2) == 0x40000092 && MsrSint(15) == 0x4000009F);
static_assert(kSintMasked == 0x10000 && kSintAutoEoi == 0x20000 && kSintPolling == 0x40000);
static_assert(kSintResetValue == 0x10000);
// SINT preserve bits: 15:8, 19 and 63:21.
static_assert(kSintPreserve == (0xFF00ull | 1ull << 19 | ~((1ull << 21) - 1)));
static_assert(kSynicPagePreserve == 0xFFE && kHypercallMsrPreserve == 0xFFC);

// ---- CPUID (docs/hyperv.md §2) -------------------------------------------------------------
static_assert(kPrivilegesVbusNeeds == (0x64ull | 0x30ull << 32));

TEST(TlfsTest, CpuidSignaturesSpellTheirText) {
  char vendor[13] = {};
  const uint32_t regs[3] = {kCpuidVendorEbx, kCpuidVendorEcx, kCpuidVendorEdx};
  for (int i = 0; i < 12; ++i) vendor[i] = static_cast<char>(regs[i / 4] >> (8 * (i % 4)));
  EXPECT_EQ(std::string(vendor), "Microsoft Hv");
  char interface[5] = {};
  for (int i = 0; i < 4; ++i) interface[i] = static_cast<char>(kCpuidInterfaceHv1 >> (8 * i));
  EXPECT_EQ(std::string(interface), "Hv#1");
}

TEST(TlfsTest, HypercallControlEncodesEveryField) {
  EXPECT_EQ(HypercallControl(kHvCallPostMessage, false), 0x005Cu);
  EXPECT_EQ(HypercallControl(kHvCallSignalEvent, true), 0x1005Du);
  EXPECT_EQ(HypercallControl(0x0003, false, /*rep_count=*/5, /*rep_start=*/2), 0x0002000500000003u);
  // Reserved-zero: 31:27, 47:44, 63:60 (bit 31, "nested", counts as reserved: §7).
  EXPECT_EQ(kHypercallRsvdZ, 0xF000F000F8000000u);
  EXPECT_EQ(kHypercallVarHeaderMask, 0x07FE0000u);
}

TEST(TlfsTest, HypercallResultDecodes) {
  EXPECT_EQ(HypercallResultStatus(0x0000000700000013u), 0x13);
  EXPECT_EQ(HypercallResultRepsCompleted(0x0000000700000013u), 7);
  EXPECT_EQ(HypercallResult(kHvStatusInvalidAlignment, 3), 0x0000000300000004u);
}

TEST(TlfsTest, SignalEventFastInputPacksConnectionAndFlag) {
  EXPECT_EQ(SignalEventFastInput(0x12345, 7), 0x0000000700012345u);
}

TEST(TlfsTest, GuestOsIdLayout) {
  EXPECT_EQ(OpenSourceGuestOsId(kGuestOsTypeLinux, 0, 0x060100, 0), 0x8100000601000000u);
  EXPECT_EQ(OpenSourceGuestOsId(kGuestOsTypeFreeBsd, 3, 0, 0x1234) >> 48, 0x8203u);
  EXPECT_EQ(OpenSourceGuestOsId(kGuestOsTypeFreeBsd, 3, 0, 0x1234) & 0xFFFF, 0x1234u);
}

TEST(TlfsTest, VmbusConnectionIdsByVersion) {
  EXPECT_EQ(InitiateContactConnectionId(protocol::kVersion5_3), 4u);
  EXPECT_EQ(InitiateContactConnectionId(protocol::kVersion5_0), 4u);
  EXPECT_EQ(InitiateContactConnectionId(protocol::kVersion4_1), 1u);
  EXPECT_EQ(InitiateContactConnectionId(protocol::kVersion2_4), 1u);
  EXPECT_EQ(kVmbusMessageSint, 2u);
  EXPECT_EQ(kVmbusEventConnectionId, 2u);
  EXPECT_EQ(kVmbusMonitorConnectionId, 3u);
}

TEST(TlfsTest, MsrAndPrivilegeNames) {
  EXPECT_EQ(MsrName(kMsrSimp), "SIMP");
  EXPECT_EQ(MsrName(MsrSint(2)), "SINT2");
  EXPECT_EQ(MsrName(MsrSint(15)), "SINT15");
  EXPECT_EQ(MsrName(0x40000070), "MSR 0x40000070");
  EXPECT_EQ(PrivilegeName(kPrivilegePostMessages), "PostMessages");
  EXPECT_EQ(PrivilegeName(kPrivilegeAccessSynicRegs), "AccessSynicRegs");
  EXPECT_EQ(PrivilegeName(uint64_t{1} << 40), "privilege bit 40");
}

TEST(TlfsTest, SuccessIsOk) {
  EXPECT_TRUE(HvStatusToStatus(kHvStatusSuccess, "HvPostMessage").ok());
}

TEST(TlfsTest, StatusMessageNamesCallStatusAndHexValue) {
  absl::Status s = HvStatusToStatus(kHvStatusInsufficientBuffers, "HvPostMessage");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "HvPostMessage: HV_STATUS_INSUFFICIENT_BUFFERS (0x13)");
  absl::Status unknown = HvStatusToStatus(0x7F, "HvSignalEvent");
  EXPECT_EQ(unknown.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(unknown.message(), "HvSignalEvent: unknown HV_STATUS (0x7F)");
}

// Every status of docs/hyperv.md §9, its name and its code.
TEST(TlfsTest, EveryStatusHasItsNameAndCode) {
  struct Row {
    uint16_t value;
    const char* name;
    absl::StatusCode code;
  };
  using C = absl::StatusCode;
  const Row rows[] = {
      {0x02, "HV_STATUS_INVALID_HYPERCALL_CODE", C::kInvalidArgument},
      {0x03, "HV_STATUS_INVALID_HYPERCALL_INPUT", C::kInvalidArgument},
      {0x04, "HV_STATUS_INVALID_ALIGNMENT", C::kInvalidArgument},
      {0x05, "HV_STATUS_INVALID_PARAMETER", C::kInvalidArgument},
      {0x06, "HV_STATUS_ACCESS_DENIED", C::kPermissionDenied},
      {0x07, "HV_STATUS_INVALID_PARTITION_STATE", C::kFailedPrecondition},
      {0x08, "HV_STATUS_OPERATION_DENIED", C::kFailedPrecondition},
      {0x0B, "HV_STATUS_INSUFFICIENT_MEMORY", C::kResourceExhausted},
      {0x0D, "HV_STATUS_INVALID_PARTITION_ID", C::kInvalidArgument},
      {0x0E, "HV_STATUS_INVALID_VP_INDEX", C::kInvalidArgument},
      {0x10, "HV_STATUS_NOT_FOUND", C::kNotFound},
      {0x11, "HV_STATUS_INVALID_PORT_ID", C::kNotFound},
      {0x12, "HV_STATUS_INVALID_CONNECTION_ID", C::kNotFound},
      {0x13, "HV_STATUS_INSUFFICIENT_BUFFERS", C::kResourceExhausted},
      {0x14, "HV_STATUS_NOT_ACKNOWLEDGED", C::kUnknown},
      {0x15, "HV_STATUS_INVALID_VP_STATE", C::kFailedPrecondition},
      {0x16, "HV_STATUS_ACKNOWLEDGED", C::kFailedPrecondition},
      {0x17, "HV_STATUS_INVALID_SAVE_RESTORE_STATE", C::kFailedPrecondition},
      {0x18, "HV_STATUS_INVALID_SYNIC_STATE", C::kFailedPrecondition},
      {0x19, "HV_STATUS_OBJECT_IN_USE", C::kFailedPrecondition},
      {0x1B, "HV_STATUS_NO_DATA", C::kNotFound},
      {0x1C, "HV_STATUS_INACTIVE", C::kFailedPrecondition},
      {0x1D, "HV_STATUS_NO_RESOURCES", C::kResourceExhausted},
      {0x1E, "HV_STATUS_FEATURE_UNAVAILABLE", C::kUnimplemented},
      {0x33, "HV_STATUS_INSUFFICIENT_BUFFER", C::kInvalidArgument},
      {0x78, "HV_STATUS_TIME_OUT", C::kDeadlineExceeded},
  };
  std::set<std::string> names;
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    EXPECT_EQ(HvStatusName(row.value), row.name);
    absl::Status s = HvStatusToStatus(row.value, "Call");
    EXPECT_EQ(s.code(), row.code);
    char hex[8];
    std::snprintf(hex, sizeof(hex), "0x%02X", row.value);
    EXPECT_EQ(s.message(), std::string("Call: ") + row.name + " (" + hex + ")");
    names.insert(row.name);
  }
  EXPECT_EQ(names.size(), std::size(rows));
  EXPECT_EQ(HvStatusName(kHvStatusSuccess), "HV_STATUS_SUCCESS");
  EXPECT_EQ(HvStatusName(0x01), "unknown HV_STATUS");
}

}  // namespace
}  // namespace vbus::hyperv
