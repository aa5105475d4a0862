// The FakePartition's TLFS rules, step by step and without threads: MSR reset values, #GP
// cases, preserved bits, the hypercall-page rule, the message queue behind a busy slot
// (MessagePending, EOM, EOI), masked SINTs and event flags. The test plays the guest by
// touching the slot directly.
#include "hyperv/testing/fake_partition.h"

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr uint8_t kVector = 0x40;

class FakePartitionTest : public ::testing::Test {
 protected:
  explicit FakePartitionTest(bool pattern = true)
      : memory_(16), partition_(Config(pattern), &memory_) {}

  static FakePartition::Config Config(bool pattern) {
    FakePartition::Config config;
    config.vp_count = 2;
    config.reserved_bit_pattern = pattern;
    return config;
  }
  uint64_t PageGpa(int i) const { return memory_.first_gpa() + i * protocol::kPageSize; }

  // Enables the SynIC of `vp` with SINT2 on kVector: SIMP at page 2 * vp, SIEFP at 2 * vp + 1.
  void EnableSynic(uint32_t vp, bool auto_eoi = true) {
    const uint64_t keep = FakePartition::kPageMsrPattern;
    ASSERT_TRUE(partition_.WriteMsr(vp, kMsrSimp, keep | PageGpa(2 * vp) | 1).ok());
    ASSERT_TRUE(partition_.WriteMsr(vp, kMsrSiefp, keep | PageGpa(2 * vp + 1) | 1).ok());
    ASSERT_TRUE(partition_
                    .WriteMsr(vp, MsrSint(2),
                              FakePartition::kSintPattern | kVector | (auto_eoi ? kSintAutoEoi : 0))
                    .ok());
    ASSERT_TRUE(partition_.WriteMsr(vp, kMsrScontrol, FakePartition::kScontrolPattern | 1).ok());
  }
  HvMessage* Slot(uint32_t vp, uint32_t sint = 2) {
    return reinterpret_cast<HvMessage*>(memory_.Translate(PageGpa(2 * vp), 4096)) + sint;
  }
  uint32_t Type(uint32_t vp) {
    return std::atomic_ref<uint32_t>(Slot(vp)->header.message_type).load(std::memory_order_relaxed);
  }
  uint8_t Flags(uint32_t vp) {
    return std::atomic_ref<uint8_t>(Slot(vp)->header.message_flags).load(std::memory_order_relaxed);
  }
  std::string Payload(uint32_t vp) {
    const HvMessage* m = Slot(vp);
    return std::string(m->payload, m->payload + m->header.payload_size);
  }
  // The guest empties the slot (without EOM).
  void Empty(uint32_t vp) {
    std::atomic_ref<uint32_t>(Slot(vp)->header.message_type).store(0, std::memory_order_relaxed);
  }
  absl::Status Queue(uint32_t vp, const std::string& text) {
    return partition_.QueueMessage(vp, 2, 1,
                                   {reinterpret_cast<const uint8_t*>(text.data()), text.size()}, 0);
  }

  FakeGuestMemory memory_;
  FakePartition partition_;
};

class FakePartitionZeroResetTest : public FakePartitionTest {
 protected:
  FakePartitionZeroResetTest() : FakePartitionTest(false) {}
};

TEST_F(FakePartitionZeroResetTest, ResetValuesAreTheTlfsOnes) {
  EXPECT_EQ(partition_.ReadMsr(0, kMsrGuestOsId).value(), 0u);
  EXPECT_EQ(partition_.ReadMsr(0, kMsrHypercall).value(), 0u);
  EXPECT_EQ(partition_.ReadMsr(0, kMsrScontrol).value(), 0u);
  EXPECT_EQ(partition_.ReadMsr(0, kMsrSimp).value(), 0u);
  EXPECT_EQ(partition_.ReadMsr(0, kMsrSiefp).value(), 0u);
  for (uint32_t n = 0; n < kSintCount; ++n) {
    EXPECT_EQ(partition_.ReadMsr(1, MsrSint(n)).value(), 0x10000u);
  }
}

TEST_F(FakePartitionTest, ReadOnlyAndIdentityMsrs) {
  EXPECT_EQ(partition_.ReadMsr(0, kMsrVpIndex).value(), 0u);
  EXPECT_EQ(partition_.ReadMsr(1, kMsrVpIndex).value(), 1u);
  EXPECT_EQ(partition_.ReadMsr(0, kMsrSversion).value(), 1u);
  EXPECT_EQ(partition_.ReadMsr(0, kMsrEom).value(), 0u);
  EXPECT_EQ(partition_.ReadMsr(0, MsrSint(5)).value(), kSintMasked | FakePartition::kSintPattern);
}

TEST_F(FakePartitionTest, GeneralProtectionFaultsAreRefusedAndRecorded) {
  struct Case {
    uint32_t msr;
    uint64_t value;
    const char* why;
  };
  const Case cases[] = {
      {kMsrVpIndex, 3, "read-only"},
      {kMsrSversion, 2, "read-only"},
      {0x40000070, 1, "unknown MSR"},
      {MsrSint(2), 15, "vector 15 is below 16"},
      {MsrSint(3), kSintPolling | kSintMasked, "polling bit"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.why);
    const uint64_t before = c.msr == 0x40000070 ? 0 : partition_.ReadMsr(0, c.msr).value();
    absl::Status s = partition_.WriteMsr(0, c.msr, c.value);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("#GP"));
    EXPECT_THAT(s.message(), HasSubstr(c.why));
    std::vector<FakeFault> faults = partition_.TakeFaults();
    ASSERT_THAT(faults, SizeIs(1));
    EXPECT_EQ(faults[0].kind, FakeFault::Kind::kGeneralProtection);
    std::vector<FakeMsrWrite> writes = partition_.TakeMsrWrites();
    ASSERT_THAT(writes, SizeIs(1));
    EXPECT_TRUE(writes[0].faulted);
    if (c.msr != 0x40000070) {
      EXPECT_EQ(partition_.ReadMsr(0, c.msr).value(), before);
    }
  }
  EXPECT_EQ(partition_.ReadMsr(0, 0x40000070).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(partition_.TakeFaults(), SizeIs(1));
}

TEST_F(FakePartitionTest, LowVectorIsFineWhileMasked) {
  EXPECT_TRUE(
      partition_.WriteMsr(0, MsrSint(2), FakePartition::kSintPattern | kSintMasked | 5).ok());
  EXPECT_THAT(partition_.TakeFaults(), IsEmpty());
}

TEST_F(FakePartitionTest, PollingIsAllowedWhenCpuidOffersIt) {
  FakePartition::Config config = Config(true);
  config.sint_polling_available = true;
  FakePartition polling(config, &memory_);
  EXPECT_TRUE(
      polling.WriteMsr(0, MsrSint(3), FakePartition::kSintPattern | kSintMasked | kSintPolling)
          .ok());
  EXPECT_THAT(polling.TakeFaults(), IsEmpty());
}

TEST_F(FakePartitionTest, ChangedPreservedBitsAreRecordedAsFaults) {
  for (uint32_t msr : {kMsrSimp, kMsrSiefp, kMsrScontrol, MsrSint(2), kMsrHypercall}) {
    SCOPED_TRACE(MsrName(msr));
    ASSERT_TRUE(partition_.WriteMsr(0, msr, msr == MsrSint(2) ? kSintMasked : 0).ok());
    std::vector<FakeFault> faults = partition_.TakeFaults();
    ASSERT_THAT(faults, SizeIs(1));
    EXPECT_EQ(faults[0].kind, FakeFault::Kind::kReservedBitsChanged);
    EXPECT_THAT(faults[0].what, HasSubstr(MsrName(msr)));
  }
}

TEST_F(FakePartitionTest, HypercallPageNeedsAGuestOsId) {
  const uint64_t page = FakePartition::kPageMsrPattern | PageGpa(0) | kHypercallMsrEnable;
  ASSERT_TRUE(partition_.WriteMsr(0, kMsrHypercall, page).ok());
  EXPECT_FALSE(partition_.hypercall_page_enabled());
  EXPECT_EQ(partition_.ReadMsr(0, kMsrHypercall).value(), page & ~kHypercallMsrEnable);
  ASSERT_TRUE(partition_.WriteMsr(0, kMsrGuestOsId, 0x8100000000000000).ok());
  ASSERT_TRUE(partition_.WriteMsr(1, kMsrHypercall, page).ok());  // partition-wide: any VP
  EXPECT_TRUE(partition_.hypercall_page_enabled());
  ASSERT_TRUE(partition_.WriteMsr(0, kMsrGuestOsId, 0).ok());  // disables the page
  EXPECT_FALSE(partition_.hypercall_page_enabled());
  EXPECT_THAT(partition_.TakeFaults(), IsEmpty());
}

TEST_F(FakePartitionTest, LockedHypercallMsrIgnoresWrites) {
  ASSERT_TRUE(partition_.WriteMsr(0, kMsrGuestOsId, 1).ok());
  const uint64_t locked =
      FakePartition::kPageMsrPattern | PageGpa(0) | kHypercallMsrEnable | kHypercallMsrLocked;
  ASSERT_TRUE(partition_.WriteMsr(0, kMsrHypercall, locked).ok());
  ASSERT_TRUE(partition_.WriteMsr(0, kMsrHypercall, FakePartition::kPageMsrPattern).ok());
  EXPECT_EQ(partition_.ReadMsr(0, kMsrHypercall).value(), locked);
}

TEST_F(FakePartitionTest, PagesOutsideGuestMemoryAreFaults) {
  ASSERT_TRUE(partition_.WriteMsr(0, kMsrSimp, FakePartition::kPageMsrPattern | 0x1000 | 1).ok());
  std::vector<FakeFault> faults = partition_.TakeFaults();
  ASSERT_THAT(faults, SizeIs(1));
  EXPECT_EQ(faults[0].kind, FakeFault::Kind::kUnbackedPage);
}

TEST_F(FakePartitionTest, MessagesWaitUntilTheSynicIsEnabled) {
  ASSERT_TRUE(Queue(0, "early").ok());
  EXPECT_EQ(partition_.queued_messages(0, 2), 1u);
  EXPECT_THAT(partition_.TakeInterrupts(), IsEmpty());
  EnableSynic(0);
  EXPECT_EQ(partition_.queued_messages(0, 2), 0u);
  EXPECT_EQ(Type(0), 1u);
  EXPECT_EQ(Payload(0), "early");
  EXPECT_EQ(Flags(0), 0);
  std::vector<FakeInterrupt> raised = partition_.TakeInterrupts();
  ASSERT_THAT(raised, SizeIs(1));
  EXPECT_EQ(raised[0].vp, 0u);
  EXPECT_EQ(raised[0].vector, kVector);
}

TEST_F(FakePartitionTest, BusySlotSetsMessagePendingAndEomDeliversTheNext) {
  EnableSynic(0);
  ASSERT_TRUE(Queue(0, "A").ok());
  EXPECT_THAT(partition_.TakeInterrupts(), SizeIs(1));
  ASSERT_TRUE(Queue(0, "B").ok());
  ASSERT_TRUE(Queue(0, "C").ok());
  EXPECT_THAT(partition_.TakeInterrupts(), IsEmpty());  // busy: no interrupt
  EXPECT_EQ(Flags(0), kMessageFlagPending);
  EXPECT_EQ(partition_.queued_messages(0, 2), 2u);

  Empty(0);  // the guest took A but has not written EOM: nothing happens yet
  EXPECT_EQ(Type(0), 0u);
  ASSERT_TRUE(partition_.WriteMsr(0, kMsrEom, 0).ok());
  EXPECT_EQ(Payload(0), "B");
  EXPECT_EQ(Flags(0), kMessageFlagPending);  // C waits behind B
  EXPECT_THAT(partition_.TakeInterrupts(), SizeIs(1));

  Empty(0);
  ASSERT_TRUE(partition_.WriteMsr(0, kMsrEom, 0).ok());
  EXPECT_EQ(Payload(0), "C");
  EXPECT_EQ(Flags(0), 0);  // nothing behind C
  EXPECT_THAT(partition_.TakeInterrupts(), SizeIs(1));
  EXPECT_EQ(partition_.queued_messages(0, 2), 0u);

  // An EOM with the slot still busy changes nothing.
  ASSERT_TRUE(partition_.WriteMsr(0, kMsrEom, 0).ok());
  EXPECT_EQ(Payload(0), "C");
  EXPECT_THAT(partition_.TakeInterrupts(), IsEmpty());
}

TEST_F(FakePartitionTest, EoiRetriesDeliveryOnSintsWithoutAutoEoi) {
  EnableSynic(0, /*auto_eoi=*/false);
  ASSERT_TRUE(Queue(0, "A").ok());
  ASSERT_TRUE(Queue(0, "B").ok());
  partition_.TakeInterrupts();
  Empty(0);
  partition_.EndOfInterrupt(0, kVector);
  EXPECT_EQ(Payload(0), "B");
  EXPECT_THAT(partition_.TakeInterrupts(), SizeIs(1));
}

TEST_F(FakePartitionTest, EoiDoesNotRetryAutoEoiSints) {
  EnableSynic(0, /*auto_eoi=*/true);
  ASSERT_TRUE(Queue(0, "A").ok());
  ASSERT_TRUE(Queue(0, "B").ok());
  partition_.TakeInterrupts();
  Empty(0);
  partition_.EndOfInterrupt(0, kVector);
  EXPECT_EQ(Type(0), 0u);
  EXPECT_EQ(partition_.queued_messages(0, 2), 1u);
}

TEST_F(FakePartitionTest, MaskedSintLosesTheInterruptButKeepsTheMessage) {
  EnableSynic(0);
  ASSERT_TRUE(partition_
                  .WriteMsr(0, MsrSint(2),
                            FakePartition::kSintPattern | kSintMasked | kVector | kSintAutoEoi)
                  .ok());
  ASSERT_TRUE(Queue(0, "quiet").ok());
  EXPECT_EQ(Payload(0), "quiet");
  EXPECT_THAT(partition_.TakeInterrupts(), IsEmpty());
}

TEST_F(FakePartitionTest, VpsHaveTheirOwnSlots) {
  EnableSynic(0);
  EnableSynic(1);
  ASSERT_TRUE(Queue(1, "for one").ok());
  EXPECT_EQ(Type(0), 0u);
  EXPECT_EQ(Payload(1), "for one");
  std::vector<FakeInterrupt> raised = partition_.TakeInterrupts();
  ASSERT_THAT(raised, SizeIs(1));
  EXPECT_EQ(raised[0].vp, 1u);
}

TEST_F(FakePartitionTest, QueueRefusesWhatNoSlotCanHold) {
  std::string big(241, 'x');
  EXPECT_EQ(Queue(0, big).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(partition_.QueueMessage(2, 2, 1, {}, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(partition_.QueueMessage(0, 16, 1, {}, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(partition_.QueueMessage(0, 2, 0, {}, 0).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FakePartitionTest, EventFlagRaisesOnlyOnZeroToOne) {
  EXPECT_EQ(partition_.SetEventFlag(0, 2, 3).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(partition_.SetEventFlag(0, 2, 3).status().message(),
              HasSubstr("HV_STATUS_INVALID_SYNIC_STATE"));
  EnableSynic(0);
  EXPECT_EQ(partition_.SetEventFlag(0, 2, 3).value(), true);
  EXPECT_THAT(partition_.TakeInterrupts(), SizeIs(1));
  EXPECT_EQ(partition_.SetEventFlag(0, 2, 3).value(), false);
  EXPECT_THAT(partition_.TakeInterrupts(), IsEmpty());
  uint8_t* block = memory_.Translate(PageGpa(1) + 2 * 256, 256);
  EXPECT_EQ(block[0], 0x08);
  std::atomic_ref<uint8_t>(block[0]).store(0, std::memory_order_relaxed);  // the guest consumed it
  EXPECT_EQ(partition_.SetEventFlag(0, 2, 3).value(), true);
  EXPECT_THAT(partition_.TakeInterrupts(), SizeIs(1));
  EXPECT_EQ(partition_.SetEventFlag(0, 2, 2048).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vbus::hyperv::testing
