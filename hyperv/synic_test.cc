// The guest's SynIC against the FakeHypervisor: the enable and disable sequences (the fake
// records every MSR write in order, and faults on lost reserved bits), rollback of a failed
// enable, the message-slot protocol with MessagePending and EOM (nothing lost, nothing
// reordered, on one VP and on several, with interrupts on the fake's per-VP threads), and the
// SINT2 event flags. Every wait has a deadline; nothing sleeps.
#include "hyperv/synic.h"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hyperv/testing/fake_hypervisor.h"
#include "hyperv/testing/msr_fault_platform.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv {
namespace {

using ::testing::ElementsAre;
using testing::FakeHypervisor;
using testing::FakeHypervisorOptions;
using testing::FakeMsrWrite;
using testing::FakePartition;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint8_t kVector = 0x50;
constexpr uint32_t kSint2 = MsrSint(2);

absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

// What the interrupt handlers saw, shared with the test thread.
class Inbox {
 public:
  struct Received {
    uint32_t vp;
    std::string payload;
    std::thread::id thread;
  };
  void Interrupt() {
    std::lock_guard<std::mutex> lock(mu_);
    ++interrupts_;
    cv_.notify_all();
  }
  void Add(uint32_t vp, const SynicMessage& m) {
    std::lock_guard<std::mutex> lock(mu_);
    received_.push_back(
        {vp, std::string(m.bytes().begin(), m.bytes().end()), std::this_thread::get_id()});
    cv_.notify_all();
  }
  void Error() {
    std::lock_guard<std::mutex> lock(mu_);
    ++errors_;
  }
  bool WaitForInterrupts(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, absl::ToChronoTime(Deadline()), [&] { return interrupts_ >= n; });
  }
  bool WaitForMessages(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, absl::ToChronoTime(Deadline()),
                          [&] { return received_.size() >= n; });
  }
  int interrupts() {
    std::lock_guard<std::mutex> lock(mu_);
    return interrupts_;
  }
  int errors() {
    std::lock_guard<std::mutex> lock(mu_);
    return errors_;
  }
  std::vector<Received> received() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int interrupts_ = 0;
  int errors_ = 0;
  std::vector<Received> received_;
};

class SynicTest : public ::testing::Test {
 protected:
  void Start(FakeHypervisorOptions options = FakeHypervisorOptions(), uint8_t vector = kVector) {
    hv_ = std::make_unique<FakeHypervisor>(options);
    absl::StatusOr<std::unique_ptr<Synic>> synic = Synic::Create(*hv_, {vector, true, 2});
    ASSERT_TRUE(synic.ok()) << synic.status();
    synic_ = *std::move(synic);
  }
  void TearDown() override {
    if (synic_ != nullptr) {
      for (uint32_t vp = 0; vp < hv_->vp_count(); ++vp) EXPECT_TRUE(synic_->Disable(vp).ok());
      EXPECT_TRUE(hv_->WaitForIdle(Deadline()));
      EXPECT_THAT(hv_->TakeFaults(), IsEmpty());
    }
  }
  // A handler that takes every message in the slot, as a backend's would.
  std::function<void()> Taking(uint32_t vp) {
    return [this, vp] {
      inbox_.Interrupt();
      for (;;) {
        absl::StatusOr<std::optional<SynicMessage>> m = synic_->TakeMessage(vp);
        if (!m.ok()) {
          inbox_.Error();
          continue;
        }
        if (!m->has_value()) return;
        inbox_.Add(vp, **m);
      }
    };
  }
  std::function<void()> Counting() {
    return [this] { inbox_.Interrupt(); };
  }
  // The SINT2 slot of `vp`'s message page, as the host sees it.
  HvMessage* Slot(uint32_t vp) {
    absl::StatusOr<absl::Span<uint8_t>> page =
        hv_->HostView(synic_->message_page_gpa(vp), protocol::kPageSize);
    return reinterpret_cast<HvMessage*>(page->data()) + 2;
  }

  Inbox inbox_;
  std::unique_ptr<FakeHypervisor> hv_;
  std::unique_ptr<Synic> synic_;
};

TEST(SynicCreateTest, RefusesLowVectorsAndUnknownSints) {
  FakeHypervisor hv;
  EXPECT_EQ(Synic::Create(hv, {15, true, 2}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Synic::Create(hv, {kVector, true, 16}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(hv.TakeMsrWrites(), IsEmpty());
}

TEST(SynicCreateTest, AutoEoiFollowsTheRecommendation) {
  HyperVInfo info;
  EXPECT_TRUE(SynicOptionsFor(info, kVector).auto_eoi);
  info.recommendations = kRecommendDeprecateAutoEoi;
  EXPECT_FALSE(SynicOptionsFor(info, kVector).auto_eoi);
  EXPECT_EQ(SynicOptionsFor(info, kVector).vector, kVector);
  EXPECT_EQ(SynicOptionsFor(info, kVector).sint, 2u);
}

TEST_F(SynicTest, EnableWritesSimpSiefpSint2ScontrolKeepingPreservedBits) {
  Start();
  ASSERT_TRUE(synic_->Enable(0, Counting()).ok());
  const uint64_t simp = synic_->message_page_gpa(0);
  const uint64_t siefp = synic_->event_flags_page_gpa(0);
  std::vector<FakeMsrWrite> writes = hv_->TakeMsrWrites();
  ASSERT_EQ(writes.size(), 4u);
  EXPECT_EQ(writes[0].msr, kMsrSimp);
  EXPECT_EQ(writes[0].value, FakePartition::kPageMsrPattern | simp | kSynicPageEnable);
  EXPECT_EQ(writes[1].msr, kMsrSiefp);
  EXPECT_EQ(writes[1].value, FakePartition::kPageMsrPattern | siefp | kSynicPageEnable);
  EXPECT_EQ(writes[2].msr, kSint2);
  EXPECT_EQ(writes[2].value, FakePartition::kSintPattern | kVector | kSintAutoEoi);
  EXPECT_EQ(writes[3].msr, kMsrScontrol);
  EXPECT_EQ(writes[3].value, FakePartition::kScontrolPattern | kScontrolEnable);
  EXPECT_TRUE(synic_->enabled(0));
  EXPECT_THAT(hv_->TakeFaults(), IsEmpty());
}

TEST_F(SynicTest, DisableUndoesTheStepsInReverse) {
  Start();
  ASSERT_TRUE(synic_->Enable(0, Counting()).ok());
  hv_->TakeMsrWrites();
  ASSERT_TRUE(synic_->Disable(0).ok());
  std::vector<FakeMsrWrite> writes = hv_->TakeMsrWrites();
  ASSERT_EQ(writes.size(), 4u);
  EXPECT_EQ(writes[0].msr, kMsrScontrol);
  EXPECT_EQ(writes[0].value, FakePartition::kScontrolPattern);
  EXPECT_EQ(writes[1].msr, kSint2);
  EXPECT_EQ(writes[1].value, FakePartition::kSintPattern | kSintMasked | kVector | kSintAutoEoi);
  EXPECT_EQ(writes[2].msr, kMsrSiefp);
  EXPECT_EQ(writes[2].value, FakePartition::kPageMsrPattern);
  EXPECT_EQ(writes[3].msr, kMsrSimp);
  EXPECT_EQ(writes[3].value, FakePartition::kPageMsrPattern);
  EXPECT_FALSE(synic_->enabled(0));
  // Nothing reaches the VP any more: messages wait, event flags are refused.
  ASSERT_TRUE(hv_->QueueMessage(0, 2, 1, Bytes("late")).ok());
  EXPECT_EQ(hv_->queued_messages(0, 2), 1u);
  EXPECT_EQ(hv_->SetEventFlag(0, 2, 5).status().code(), absl::StatusCode::kFailedPrecondition);
  // The handler is gone: the vector can be registered again.
  EXPECT_TRUE(hv_->RegisterInterrupt(0, kVector, [] {}).ok());
  hv_->UnregisterInterrupt(0, kVector);
  EXPECT_TRUE(synic_->Disable(0).ok());  // again: nothing to do
  EXPECT_THAT(hv_->TakeMsrWrites(), IsEmpty());
}

TEST_F(SynicTest, WithoutAutoEoiTheSintLacksItAndMessagesStillFlow) {
  FakeHypervisorOptions options;
  options.deprecate_auto_eoi = true;
  Start(options);
  absl::StatusOr<HyperVInfo> info = DetectHyperV(*hv_);
  ASSERT_TRUE(info.ok());
  absl::StatusOr<std::unique_ptr<Synic>> synic = Synic::Create(*hv_, SynicOptionsFor(*info, 0x60));
  ASSERT_TRUE(synic.ok());
  synic_ = *std::move(synic);
  ASSERT_TRUE(synic_->Enable(0, Taking(0)).ok());
  std::vector<FakeMsrWrite> writes = hv_->TakeMsrWrites();
  ASSERT_EQ(writes.size(), 4u);
  EXPECT_EQ(writes[2].value, FakePartition::kSintPattern | 0x60);
  for (const char* text : {"one", "two", "three"}) {
    ASSERT_TRUE(hv_->QueueMessage(0, 2, 1, Bytes(text)).ok());
  }
  ASSERT_TRUE(inbox_.WaitForMessages(3));
  std::vector<Inbox::Received> got = inbox_.received();
  EXPECT_EQ(got[0].payload, "one");
  EXPECT_EQ(got[2].payload, "three");
}

TEST_F(SynicTest, FailedEnableUndoesTheStepsDone) {
  hv_ = std::make_unique<FakeHypervisor>();
  testing::MsrFaultPlatform platform(*hv_);
  platform.FailWrites(kSint2, absl::InternalError("injected"));
  absl::StatusOr<std::unique_ptr<Synic>> synic = Synic::Create(platform, {kVector, true, 2});
  ASSERT_TRUE(synic.ok());
  absl::Status s = (*synic)->Enable(0, Counting());
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr("SynIC on VP 0, writing SINT2"));
  EXPECT_FALSE((*synic)->enabled(0));
  std::vector<FakeMsrWrite> writes = hv_->TakeMsrWrites();
  ASSERT_EQ(writes.size(), 4u);
  EXPECT_EQ(writes[0].msr, kMsrSimp);
  EXPECT_EQ(writes[1].msr, kMsrSiefp);
  EXPECT_EQ(writes[2].msr, kMsrSiefp);  // undone, in reverse
  EXPECT_EQ(writes[2].value, FakePartition::kPageMsrPattern);
  EXPECT_EQ(writes[3].msr, kMsrSimp);
  EXPECT_EQ(writes[3].value, FakePartition::kPageMsrPattern);
  // The handler registration was undone too.
  EXPECT_TRUE(hv_->RegisterInterrupt(0, kVector, [] {}).ok());
  hv_->UnregisterInterrupt(0, kVector);
  EXPECT_THAT(hv_->TakeFaults(), IsEmpty());
}

TEST_F(SynicTest, EnableFailsWhenTheVectorHasAHandlerAndWritesNothing) {
  Start();
  ASSERT_TRUE(hv_->RegisterInterrupt(0, kVector, [] {}).ok());
  EXPECT_EQ(synic_->Enable(0, Counting()).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(hv_->TakeMsrWrites(), IsEmpty());
  hv_->UnregisterInterrupt(0, kVector);
  EXPECT_EQ(synic_->Enable(7, Counting()).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(synic_->Enable(0, Counting()).ok());
  EXPECT_EQ(synic_->Enable(0, Counting()).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SynicTest, DeliversAMessageToTheHandler) {
  Start();
  ASSERT_TRUE(synic_->Enable(0, Taking(0)).ok());
  ASSERT_TRUE(hv_->QueueMessage(0, 2, kVmbusMessageType, Bytes("hello"), 0x77).ok());
  ASSERT_TRUE(inbox_.WaitForMessages(1));
  EXPECT_EQ(inbox_.received()[0].payload, "hello");
  EXPECT_NE(inbox_.received()[0].thread, std::this_thread::get_id());
  ASSERT_TRUE(hv_->WaitForIdle(Deadline()));
  EXPECT_EQ(std::atomic_ref<uint32_t>(Slot(0)->header.message_type).load(std::memory_order_relaxed),
            kMessageTypeNone);
}

TEST_F(SynicTest, MessagesQueuedBeforeEnableArriveAfterIt) {
  Start();
  ASSERT_TRUE(hv_->QueueMessage(0, 2, 1, Bytes("early")).ok());
  ASSERT_TRUE(hv_->QueueMessage(0, 2, 1, Bytes("earlier still waiting")).ok());
  ASSERT_TRUE(synic_->Enable(0, Taking(0)).ok());
  ASSERT_TRUE(inbox_.WaitForMessages(2));
  EXPECT_EQ(inbox_.received()[0].payload, "early");
  EXPECT_EQ(inbox_.received()[1].payload, "earlier still waiting");
}

// The slot holds one message. A second one waits behind it with MessagePending set and no
// interrupt; taking the first finds MessagePending and writes EOM, which brings the second.
TEST_F(SynicTest, SecondMessageWaitsForTheSlotAndArrivesAfterEom) {
  Start();
  ASSERT_TRUE(synic_->Enable(0, Counting()).ok());
  ASSERT_TRUE(hv_->QueueMessage(0, 2, 1, Bytes("first"), 1).ok());
  ASSERT_TRUE(inbox_.WaitForInterrupts(1));
  ASSERT_TRUE(hv_->QueueMessage(0, 2, 1, Bytes("second"), 2).ok());
  ASSERT_TRUE(hv_->WaitForIdle(Deadline()));
  EXPECT_EQ(inbox_.interrupts(), 1);
  EXPECT_EQ(hv_->queued_messages(0, 2), 1u);
  EXPECT_EQ(
      std::atomic_ref<uint8_t>(Slot(0)->header.message_flags).load(std::memory_order_relaxed) &
          kMessageFlagPending,
      kMessageFlagPending);
  hv_->TakeMsrWrites();

  absl::StatusOr<std::optional<SynicMessage>> first = synic_->TakeMessage(0);
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ(std::string((*first)->bytes().begin(), (*first)->bytes().end()), "first");
  EXPECT_EQ((*first)->sender, 1u);
  EXPECT_EQ((*first)->message_type, 1u);
  std::vector<FakeMsrWrite> writes = hv_->TakeMsrWrites();
  ASSERT_EQ(writes.size(), 1u);
  EXPECT_EQ(writes[0].msr, kMsrEom);

  ASSERT_TRUE(inbox_.WaitForInterrupts(2));  // the EOM delivered the second: a new interrupt
  absl::StatusOr<std::optional<SynicMessage>> second = synic_->TakeMessage(0);
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ(std::string((*second)->bytes().begin(), (*second)->bytes().end()), "second");
  EXPECT_THAT(hv_->TakeMsrWrites(), IsEmpty());  // nothing was pending: no EOM
  absl::StatusOr<std::optional<SynicMessage>> none = synic_->TakeMessage(0);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_EQ(hv_->queued_messages(0, 2), 0u);
}

// The host keeps queueing while the VP drains: every message arrives once, in order.
TEST_F(SynicTest, ManyMessagesArriveOnceAndInOrder) {
  Start();
  ASSERT_TRUE(synic_->Enable(0, Taking(0)).ok());
  constexpr int kCount = 300;
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(hv_->QueueMessage(0, 2, 1, Bytes("m" + std::to_string(i))).ok());
  }
  ASSERT_TRUE(inbox_.WaitForMessages(kCount));
  ASSERT_TRUE(hv_->WaitForIdle(Deadline()));
  std::vector<Inbox::Received> got = inbox_.received();
  ASSERT_EQ(got.size(), static_cast<size_t>(kCount));
  for (int i = 0; i < kCount; ++i) EXPECT_EQ(got[i].payload, "m" + std::to_string(i));
  EXPECT_EQ(inbox_.errors(), 0);
  EXPECT_EQ(hv_->queued_messages(0, 2), 0u);
}

TEST_F(SynicTest, MessagesToSeveralVpsArriveOnTheirOwnVps) {
  FakeHypervisorOptions options;
  options.vp_count = 3;
  Start(options);
  for (uint32_t vp = 0; vp < 3; ++vp) ASSERT_TRUE(synic_->Enable(vp, Taking(vp)).ok());
  for (int round = 0; round < 20; ++round) {
    for (uint32_t vp = 0; vp < 3; ++vp) {
      ASSERT_TRUE(hv_->QueueMessage(vp, 2, 1, Bytes(std::to_string(vp * 100 + round))).ok());
    }
  }
  ASSERT_TRUE(inbox_.WaitForMessages(60));
  std::vector<Inbox::Received> got = inbox_.received();
  std::vector<int> next(3, 0);
  std::vector<std::set<std::thread::id>> threads(3);
  for (const Inbox::Received& r : got) {
    EXPECT_EQ(r.payload, std::to_string(r.vp * 100 + next[r.vp]));
    ++next[r.vp];
    threads[r.vp].insert(r.thread);
  }
  EXPECT_THAT(next, ElementsAre(20, 20, 20));
  for (uint32_t vp = 0; vp < 3; ++vp) EXPECT_EQ(threads[vp].size(), 1u);
  EXPECT_NE(*threads[0].begin(), *threads[1].begin());
  EXPECT_NE(*threads[1].begin(), *threads[2].begin());
}

// A host writing a payload size over 240 into the slot: the message is refused, and the slot
// is released anyway (EOM included), so the next message still arrives.
TEST_F(SynicTest, OversizedPayloadIsRefusedAndTheSlotReleased) {
  Start();
  ASSERT_TRUE(synic_->Enable(0, Counting()).ok());
  ASSERT_TRUE(hv_->QueueMessage(0, 2, 1, Bytes("x")).ok());
  ASSERT_TRUE(hv_->QueueMessage(0, 2, 1, Bytes("next")).ok());
  ASSERT_TRUE(hv_->WaitForIdle(Deadline()));
  Slot(0)->header.payload_size = 241;  // the host corrupts the message in its slot
  absl::StatusOr<std::optional<SynicMessage>> bad = synic_->TakeMessage(0);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("payload_size 241"));
  ASSERT_TRUE(inbox_.WaitForInterrupts(2));
  absl::StatusOr<std::optional<SynicMessage>> next = synic_->TakeMessage(0);
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ(std::string((*next)->bytes().begin(), (*next)->bytes().end()), "next");
}

TEST_F(SynicTest, EventFlagsAreTheSint2BlockOfTheSiefPage) {
  Start();
  absl::Span<uint8_t> flags = synic_->EventFlags(0);
  EXPECT_EQ(flags.size(), 256u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(flags.data()) % 8, 0u);
  absl::StatusOr<absl::Span<uint8_t>> host =
      hv_->HostView(synic_->event_flags_page_gpa(0) + 2 * 256, 256);
  ASSERT_TRUE(host.ok());
  EXPECT_EQ(flags.data(), host->data());
  EXPECT_TRUE(synic_->EventFlags(1).empty());
}

TEST_F(SynicTest, EventFlagInterruptsOnlyWhenItGoesFromZeroToOne) {
  Start();
  ASSERT_TRUE(synic_->Enable(0, Counting()).ok());
  absl::Span<uint8_t> flags = synic_->EventFlags(0);
  ASSERT_EQ(hv_->SetEventFlag(0, 2, 7).value(), true);
  ASSERT_TRUE(inbox_.WaitForInterrupts(1));
  EXPECT_EQ(std::atomic_ref<uint8_t>(flags[0]).load(std::memory_order_relaxed) & 0x80,
            0x80);                                         // flag 7: byte 0, bit 7
  EXPECT_EQ(hv_->SetEventFlag(0, 2, 7).value(), false);    // already set: no interrupt
  ASSERT_EQ(hv_->SetEventFlag(0, 2, 1000).value(), true);  // another bit: interrupt
  ASSERT_TRUE(inbox_.WaitForInterrupts(2));
  EXPECT_EQ(std::atomic_ref<uint8_t>(flags[125]).load(std::memory_order_relaxed) & 0x01, 0x01);
  ASSERT_TRUE(hv_->WaitForIdle(Deadline()));
  EXPECT_EQ(inbox_.interrupts(), 2);
  // The guest consumes bit 7 (relaxed: this test reads nothing the host wrote before it).
  std::atomic_ref<uint8_t>(flags[0]).fetch_and(static_cast<uint8_t>(~0x80),
                                               std::memory_order_relaxed);
  ASSERT_EQ(hv_->SetEventFlag(0, 2, 7).value(), true);
  ASSERT_TRUE(inbox_.WaitForInterrupts(3));
}

}  // namespace
}  // namespace vbus::hyperv
