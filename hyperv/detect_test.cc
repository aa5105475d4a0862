// DetectHyperV against the FakeHypervisor's CPUID: a Hyper-V partition, a machine with no
// hypervisor, another hypervisor, and partitions missing a privilege vbus needs.
#include "hyperv/detect.h"

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hyperv/testing/fake_hypervisor.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv {
namespace {

using ::testing::AllOf;
using testing::FakeHypervisor;
using testing::FakeHypervisorOptions;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(DetectTest, FindsHyperVAndDecodesTheLeaves) {
  FakeHypervisorOptions options;
  options.vp_count = 3;
  FakeHypervisor hv(options);
  absl::StatusOr<HyperVInfo> info = DetectHyperV(hv);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->vendor, "Microsoft Hv");
  EXPECT_EQ(info->max_leaf, kCpuidLeafHardwareFeatures);
  EXPECT_EQ(info->major_version, 10);
  EXPECT_EQ(info->minor_version, 0);
  EXPECT_EQ(info->build, 20348u);
  EXPECT_TRUE(info->HasPrivilege(kPrivilegesVbusNeeds));
  EXPECT_EQ(info->max_vps, 3u);
  EXPECT_EQ(info->spinlock_retries, kSpinlockRetriesNever);
  EXPECT_EQ(info->physical_address_bits, 48u);
  EXPECT_FALSE(info->deprecate_auto_eoi());
  EXPECT_FALSE(info->HasFeature(kFeatureSintPolling));
  // Detection only reads CPUID.
  EXPECT_THAT(hv.TakeMsrWrites(), IsEmpty());
  EXPECT_EQ(hv.hypercall_count(), 0u);
}

TEST(DetectTest, DecodesVersionFieldsAndRecommendations) {
  FakeHypervisorOptions options;
  options.deprecate_auto_eoi = true;
  options.sint_polling_available = true;
  FakeHypervisor hv(options);
  hv.SetCpuid(kCpuidLeafVersion, {0x4A61, 0x00060003, 2, 0x05ABCDEF});
  absl::StatusOr<HyperVInfo> info = DetectHyperV(hv);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->build, 0x4A61u);
  EXPECT_EQ(info->major_version, 6);
  EXPECT_EQ(info->minor_version, 3);
  EXPECT_EQ(info->service_pack, 2u);
  EXPECT_EQ(info->service_branch, 0x05);
  EXPECT_EQ(info->service_number, 0xABCDEFu);
  EXPECT_TRUE(info->deprecate_auto_eoi());
  EXPECT_TRUE(info->HasFeature(kFeatureSintPolling));
}

TEST(DetectTest, NoHypervisorBitIsNotFound) {
  FakeHypervisor hv;
  hv.SetCpuid(kCpuidLeafProcessorFeatures, {0, 0, 0, 0});
  absl::StatusOr<HyperVInfo> info = DetectHyperV(hv);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(info.status().message(), HasSubstr("CPUID.1:ECX bit 31"));
}

TEST(DetectTest, AnotherHypervisorIsNotFound) {
  FakeHypervisor hv;
  // "KVMKVMKVM\0\0\0" without the Hv#1 interface.
  hv.SetCpuid(kCpuidLeafVendor, {0x40000001, 0x4B4D564B, 0x564B4D56, 0x0000004D});
  hv.SetCpuid(kCpuidLeafInterface, {0, 0, 0, 0});
  absl::StatusOr<HyperVInfo> info = DetectHyperV(hv);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(info.status().message(), AllOf(HasSubstr("KVMKVMKVM"), HasSubstr("0x40000001")));

  hv.SetCpuid(kCpuidLeafVendor, {0x40000005, 0x4B4D564B, 0x564B4D56, 0x0000004D});
  info = DetectHyperV(hv);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(info.status().message(), HasSubstr("not \"Hv#1\""));
}

TEST(DetectTest, HighestLeafAboveTheRangeIsNotFound) {
  FakeHypervisor hv;
  hv.SetCpuid(kCpuidLeafVendor, {0x40010000, kCpuidVendorEbx, kCpuidVendorEcx, kCpuidVendorEdx});
  EXPECT_EQ(DetectHyperV(hv).status().code(), absl::StatusCode::kNotFound);
}

// Compatibility rests on "Hv#1", not on the vendor string.
TEST(DetectTest, OtherVendorWithTheHyperVInterfaceIsFound) {
  FakeHypervisor hv;
  hv.SetCpuid(kCpuidLeafVendor, {0x40000005, 0x4B4D564B, 0x564B4D56, 0x0000004D});
  absl::StatusOr<HyperVInfo> info = DetectHyperV(hv);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->vendor, std::string("KVMKVMKVM\0\0\0", 12));
}

TEST(DetectTest, MissingPrivilegeIsFailedPreconditionNamingIt) {
  FakeHypervisor hv;
  const uint64_t privileges = kPrivilegesVbusNeeds & ~kPrivilegePostMessages;
  hv.SetCpuid(kCpuidLeafFeatures,
              {static_cast<uint32_t>(privileges), static_cast<uint32_t>(privileges >> 32), 0, 0});
  absl::StatusOr<HyperVInfo> info = DetectHyperV(hv);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(info.status().message(), HasSubstr("PostMessages (CPUID 0x40000003 EBX bit 4)"));
}

TEST(DetectTest, EveryMissingPrivilegeIsNamed) {
  FakeHypervisor hv;
  const uint64_t privileges =
      kPrivilegesVbusNeeds & ~(kPrivilegeAccessSynicRegs | kPrivilegeSignalEvents);
  hv.SetCpuid(kCpuidLeafFeatures,
              {static_cast<uint32_t>(privileges), static_cast<uint32_t>(privileges >> 32), 0, 0});
  absl::StatusOr<HyperVInfo> info = DetectHyperV(hv);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(info.status().message(),
              AllOf(HasSubstr("AccessSynicRegs (CPUID 0x40000003 EAX bit 2)"),
                    HasSubstr("SignalEvents (CPUID 0x40000003 EBX bit 5)")));
  EXPECT_THAT(info.status().message(), ::testing::Not(HasSubstr("PostMessages")));
}

TEST(DetectTest, EachNeededPrivilegeIsRequired) {
  for (uint64_t bit : {kPrivilegeAccessSynicRegs, kPrivilegeAccessHypercallMsrs,
                       kPrivilegeAccessVpIndex, kPrivilegePostMessages, kPrivilegeSignalEvents}) {
    SCOPED_TRACE(PrivilegeName(bit));
    FakeHypervisor hv;
    const uint64_t privileges = kPrivilegesVbusNeeds & ~bit;
    hv.SetCpuid(kCpuidLeafFeatures,
                {static_cast<uint32_t>(privileges), static_cast<uint32_t>(privileges >> 32), 0, 0});
    absl::StatusOr<HyperVInfo> info = DetectHyperV(hv);
    EXPECT_EQ(info.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(info.status().message(), HasSubstr(PrivilegeName(bit)));
  }
}

}  // namespace
}  // namespace vbus::hyperv
