// HyperVBackend against the FakeHypervisor: the option checks, Start's set-up and Stop's
// teardown in their exact MSR order (and what a failed Start leaves: nothing), a hypercall
// page the platform owns, detection errors, contact info, the event flags and the order of
// events and messages in one interrupt, pages, and every kind of SignalHost. Every wait has a
// deadline; nothing sleeps.
#include "hyperv/hyperv_backend.h"

#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hyperv/hypercall_page.h"
#include "hyperv/hyperv_backend_testing.h"
#include "hyperv/testing/fake_hypervisor.h"
#include "hyperv/testing/msr_fault_platform.h"
#include "hyperv/tlfs.h"
#include "hyperv/wire.h"

namespace vbus::hyperv {
namespace {

using ::testing::ElementsAre;
using testing::FakeClock;
using testing::FakeHypervisor;
using testing::FakeHypervisorOptions;
using testing::FakeMsrWrite;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::ListenerCall;
using testing::RecordingListener;
using testing::TestOptions;

// (VP, MSR) of each write, in order.
std::vector<std::pair<uint32_t, uint32_t>> Msrs(const std::vector<FakeMsrWrite>& writes) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (const FakeMsrWrite& w : writes) out.emplace_back(w.vp, w.msr);
  return out;
}

class HyperVBackendTest : public ::testing::Test {
 protected:
  void Make(HyperVBackendOptions options, FakeHypervisorOptions fake = {.vp_count = 2}) {
    hv_ = std::make_unique<FakeHypervisor>(fake);
    absl::StatusOr<std::unique_ptr<HyperVBackend>> backend =
        HyperVBackend::Create(*hv_, std::move(options));
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
    listener_.backend = backend_.get();
  }
  void MakeAndStart(HyperVBackendOptions options) {
    Make(std::move(options));
    ASSERT_TRUE(backend_->Start(&listener_).ok());
  }
  void TearDown() override {
    if (backend_ != nullptr) backend_->Stop();
    if (hv_ != nullptr) {
      EXPECT_TRUE(hv_->WaitForIdle(testing::Deadline()));
      EXPECT_THAT(hv_->TakeFaults(), IsEmpty());
    }
  }

  FakeClock clock_;
  std::unique_ptr<FakeHypervisor> hv_;
  std::unique_ptr<HyperVBackend> backend_;
  RecordingListener listener_;
};

// ---- Options and lifecycle ----------------------------------------------------------------

TEST_F(HyperVBackendTest, CreateRefusesOptionsThePlatformCannotMeet) {
  FakeHypervisor hv({.vp_count = 2});
  auto refused = [&](std::function<void(HyperVBackendOptions&)> change, const char* named) {
    HyperVBackendOptions options = TestOptions(&clock_);
    change(options);
    absl::StatusOr<std::unique_ptr<HyperVBackend>> b = HyperVBackend::Create(hv, options);
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument) << named;
    EXPECT_THAT(b.status().message(), HasSubstr(named));
  };
  refused([](HyperVBackendOptions& o) { o.vector = 15; }, "vector");
  refused([](HyperVBackendOptions& o) { o.vp_count = 0; }, "vp_count");
  refused([](HyperVBackendOptions& o) { o.vp_count = 3; }, "vp_count");
  refused([](HyperVBackendOptions& o) { o.message_vp = 2; }, "message_vp");
  refused([](HyperVBackendOptions& o) { o.post_retry.max_attempts = 0; }, "max_attempts");
  refused([](HyperVBackendOptions& o) { o.post_timeout = absl::ZeroDuration(); }, "post_timeout");
  EXPECT_TRUE(HyperVBackend::Create(hv, TestOptions(&clock_)).ok());
}

TEST_F(HyperVBackendTest, StartSetsUpInTlfsOrderAndStopUndoesItInReverse) {
  Make(TestOptions(&clock_));
  EXPECT_EQ(backend_->vp_count(), 2u);  // valid before Start
  ASSERT_TRUE(backend_->Start(&listener_).ok());
  EXPECT_TRUE(backend_->owns_hypercall_page());
  const uint32_t sint2 = MsrSint(kVmbusMessageSint);
  // docs/hyperv.md §4: GUEST_OS_ID, HYPERCALL; then per VP SIMP, SIEFP, SINT2, SCONTROL.
  EXPECT_THAT(
      Msrs(hv_->TakeMsrWrites()),
      ElementsAre(std::pair(0u, kMsrGuestOsId), std::pair(0u, kMsrHypercall),
                  std::pair(0u, kMsrSimp), std::pair(0u, kMsrSiefp), std::pair(0u, sint2),
                  std::pair(0u, kMsrScontrol), std::pair(1u, kMsrSimp), std::pair(1u, kMsrSiefp),
                  std::pair(1u, sint2), std::pair(1u, kMsrScontrol)));
  EXPECT_EQ(*hv_->ReadMsr(0, kMsrGuestOsId), testing::kTestGuestOsId);

  backend_->Stop();
  // The last VP first, each in reverse; then the hypercall page.
  EXPECT_THAT(
      Msrs(hv_->TakeMsrWrites()),
      ElementsAre(std::pair(1u, kMsrScontrol), std::pair(1u, sint2), std::pair(1u, kMsrSiefp),
                  std::pair(1u, kMsrSimp), std::pair(0u, kMsrScontrol), std::pair(0u, sint2),
                  std::pair(0u, kMsrSiefp), std::pair(0u, kMsrSimp), std::pair(0u, kMsrGuestOsId),
                  std::pair(0u, kMsrHypercall)));
  EXPECT_EQ(*hv_->ReadMsr(0, kMsrHypercall) & kHypercallMsrEnable, 0u);

  backend_->Stop();  // idempotent: nothing more is written
  EXPECT_THAT(hv_->TakeMsrWrites(), IsEmpty());
  EXPECT_EQ(backend_->Start(&listener_).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend_->PostMessage(v1::ControlMessage()).code(),
            absl::StatusCode::kInvalidArgument);  // encoding is checked first
  v1::ControlMessage offers;
  offers.mutable_request_offers();
  EXPECT_EQ(backend_->PostMessage(offers).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(backend_->SignalHost({.relid = 5, .connection_id = 9}).code(),
            absl::StatusCode::kUnavailable);
  // The event flags stay valid for the backend's life (backends/backend.h).
  EXPECT_EQ(backend_->ReceiveEventFlags(1).size(), kEventFlagBytes);
}

TEST_F(HyperVBackendTest, EverythingBeforeStartIsRefusedOrEmpty) {
  Make(TestOptions(&clock_));
  v1::ControlMessage offers;
  offers.mutable_request_offers();
  EXPECT_EQ(backend_->PostMessage(offers).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend_->SignalHost({.relid = 5, .connection_id = 9}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(backend_->ReceiveEventFlags(0).empty());
  EXPECT_EQ(backend_->contact_info().interrupt_page_gpa, 0u);
  EXPECT_EQ(backend_->Start(nullptr).code(), absl::StatusCode::kInvalidArgument);
  backend_->Stop();  // harmless before Start
  EXPECT_THAT(hv_->TakeMsrWrites(), IsEmpty());
  ASSERT_TRUE(backend_->Start(&listener_).ok());
  EXPECT_EQ(backend_->Start(&listener_).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(HyperVBackendTest, UsesAHypercallPageThePlatformEnabledAndLeavesItAlone) {
  HyperVBackendOptions options = TestOptions(&clock_);
  options.guest_os_id = 0;  // not needed: the page is the platform's
  Make(std::move(options));
  absl::StatusOr<Pages> page = hv_->AllocatePages(1);
  ASSERT_TRUE(page.ok());
  const uint64_t gpa = page->pfns()[0] * protocol::kPageSize;
  ASSERT_TRUE(EnableHypercallPage(*hv_, 0, testing::kTestGuestOsId, gpa).ok());
  hv_->TakeMsrWrites();

  ASSERT_TRUE(backend_->Start(&listener_).ok());
  EXPECT_FALSE(backend_->owns_hypercall_page());
  backend_->Stop();
  for (const FakeMsrWrite& w : hv_->TakeMsrWrites()) {
    EXPECT_NE(w.msr, kMsrGuestOsId);
    EXPECT_NE(w.msr, kMsrHypercall);
  }
  EXPECT_EQ(*hv_->ReadMsr(0, kMsrHypercall) & (kMsrPfnMask | kHypercallMsrEnable),
            gpa | kHypercallMsrEnable);
  ASSERT_TRUE(DisableHypercallPage(*hv_, 0).ok());
}

TEST_F(HyperVBackendTest, EnablingTheHypercallPageNeedsAGuestOsId) {
  HyperVBackendOptions options = TestOptions(&clock_);
  options.guest_os_id = 0;
  Make(std::move(options));
  absl::Status s = backend_->Start(&listener_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("guest_os_id"));
  EXPECT_THAT(hv_->TakeMsrWrites(), IsEmpty());
}

TEST_F(HyperVBackendTest, NotHyperVIsUnavailable) {
  Make(TestOptions(&clock_));
  hv_->SetCpuid(kCpuidLeafProcessorFeatures, {});  // no hypervisor present
  absl::Status s = backend_->Start(&listener_);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("not running on Hyper-V"));
  EXPECT_THAT(hv_->TakeMsrWrites(), IsEmpty());
}

TEST_F(HyperVBackendTest, AMissingPrivilegeIsNamed) {
  Make(TestOptions(&clock_));
  const uint64_t without = kPrivilegesVbusNeeds & ~kPrivilegePostMessages;
  hv_->SetCpuid(kCpuidLeafFeatures,
                {static_cast<uint32_t>(without), static_cast<uint32_t>(without >> 32), 0, 0});
  absl::Status s = backend_->Start(&listener_);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("PostMessages"));
  EXPECT_THAT(hv_->TakeMsrWrites(), IsEmpty());
}

TEST_F(HyperVBackendTest, AFailedStartLeavesNothingEnabled) {
  FakeHypervisor hv({.vp_count = 2});
  testing::MsrFaultPlatform platform(hv);
  platform.FailWrites(kMsrScontrol, absl::InternalError("injected"));
  absl::StatusOr<std::unique_ptr<HyperVBackend>> backend =
      HyperVBackend::Create(platform, TestOptions(&clock_));
  ASSERT_TRUE(backend.ok());
  absl::Status s = (*backend)->Start(&listener_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr("SCONTROL"));
  for (uint32_t msr : {kMsrSimp, kMsrSiefp}) EXPECT_EQ(*hv.ReadMsr(0, msr) & kSynicPageEnable, 0u);
  EXPECT_NE(*hv.ReadMsr(0, MsrSint(kVmbusMessageSint)) & kSintMasked, 0u);
  EXPECT_EQ(*hv.ReadMsr(0, kMsrGuestOsId), 0u);
  EXPECT_EQ(*hv.ReadMsr(0, kMsrHypercall) & kHypercallMsrEnable, 0u);
  // Stopped for good: nothing is posted, nothing delivered.
  v1::ControlMessage offers;
  offers.mutable_request_offers();
  EXPECT_EQ((*backend)->PostMessage(offers).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*backend)->Start(&listener_).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(hv.SetEventFlag(0, kVmbusMessageSint, 5).ok());  // the SynIC is off
  backend->reset();
  EXPECT_TRUE(hv.WaitForIdle(testing::Deadline()));
  EXPECT_THAT(hv.TakeFaults(), IsEmpty());
  EXPECT_TRUE(listener_.calls().empty());
}

TEST_F(HyperVBackendTest, RunsEachVpsSetUpAndTeardownOnThatVp) {
  HyperVBackendOptions options = TestOptions(&clock_);
  Mutex mu;
  std::vector<uint32_t> ran;
  options.run_on_vp = [&](uint32_t vp, const std::function<absl::Status()>& work) {
    {
      MutexLock lock(&mu);
      ran.push_back(vp);
    }
    return work();
  };
  MakeAndStart(std::move(options));
  backend_->Stop();
  MutexLock lock(&mu);
  // HYPERCALL read and enable on the message VP, SynIC enable on 0 and 1; then disable on 1
  // and 0, and the hypercall page.
  EXPECT_THAT(ran, ElementsAre(0u, 0u, 0u, 1u, 1u, 0u, 0u));
}

// ---- Contact info, event flags, pages ------------------------------------------------------

TEST_F(HyperVBackendTest, ContactInfoNamesTheMessageVpAndThreeZeroedGuestPages) {
  HyperVBackendOptions options = TestOptions(&clock_);
  options.message_vp = 1;
  MakeAndStart(std::move(options));
  const ContactInfo c = backend_->contact_info();
  EXPECT_EQ(c.target_vcpu, 1u);
  EXPECT_EQ(c.message_sint, kVmbusMessageSint);
  EXPECT_EQ(c.message_vtl, 0u);
  const std::vector<uint64_t> gpas = {c.interrupt_page_gpa, c.monitor_page1_gpa,
                                      c.monitor_page2_gpa};
  for (size_t i = 0; i < gpas.size(); ++i) {
    EXPECT_NE(gpas[i], 0u);
    EXPECT_EQ(gpas[i] % protocol::kPageSize, 0u);
    for (size_t j = 0; j < i; ++j) EXPECT_NE(gpas[i], gpas[j]);
    absl::StatusOr<absl::Span<uint8_t>> page = hv_->HostView(gpas[i], protocol::kPageSize);
    ASSERT_TRUE(page.ok());
    for (uint8_t byte : *page) ASSERT_EQ(byte, 0);
  }
}

TEST_F(HyperVBackendTest, ReceiveEventFlagsAreEachVpsSint2Block) {
  MakeAndStart(TestOptions(&clock_));
  EXPECT_TRUE(backend_->ReceiveEventFlags(2).empty());
  for (uint32_t vp = 0; vp < 2; ++vp) {
    absl::Span<uint8_t> flags = backend_->ReceiveEventFlags(vp);
    ASSERT_EQ(flags.size(), kEventFlagBytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(flags.data()) % 8, 0u);
  }
  // The host's signal on VP 1: the bit lands in VP 1's flags and OnEventsPending(1) follows.
  ASSERT_TRUE(hv_->SetEventFlag(1, kVmbusMessageSint, 77).ok());
  ASSERT_TRUE(listener_.WaitForEvents(1));
  EXPECT_EQ(backend_->ReceiveEventFlags(1)[77 / 8], 1 << (77 % 8));
  EXPECT_EQ(backend_->ReceiveEventFlags(0)[77 / 8], 0);
  EXPECT_GE(backend_->stats().events_raised, 1u);
}

TEST_F(HyperVBackendTest, EventsAreReportedBeforeTheMessagesOfTheSameInterrupt) {
  // Messages on VP 1 here, so that both arrive on VP 1's interrupt.
  HyperVBackendOptions options = TestOptions(&clock_);
  options.message_vp = 1;
  Notification entered;
  Notification release;
  listener_.on_events = [&](uint32_t) {
    if (entered.HasBeenNotified()) return;
    entered.Notify();
    release.WaitForNotificationWithDeadline(testing::Deadline());
  };
  MakeAndStart(std::move(options));
  // Interrupt 1 (an event) is held inside OnEventsPending while the host queues a message
  // and sets another flag: the handler must report the events before it takes the message,
  // so the message is delivered in interrupt 1, after its OnEventsPending.
  ASSERT_TRUE(hv_->SetEventFlag(1, kVmbusMessageSint, 9).ok());
  ASSERT_TRUE(entered.WaitForNotificationWithDeadline(testing::Deadline()));
  v1::ControlMessage done;
  done.mutable_all_offers_delivered();
  absl::StatusOr<std::vector<WireMessage>> wire = EncodeMessage(done);
  ASSERT_TRUE(wire.ok());
  ASSERT_TRUE(hv_->QueueMessage(1, kVmbusMessageSint, kVmbusMessageType, wire->front()).ok());
  ASSERT_TRUE(hv_->SetEventFlag(1, kVmbusMessageSint, 10).ok());
  release.Notify();
  ASSERT_TRUE(listener_.WaitForMessages(1));
  ASSERT_TRUE(hv_->WaitForIdle(testing::Deadline()));
  // Every message follows an OnEventsPending(1) of the same interrupt.
  const std::vector<ListenerCall> calls = listener_.calls();
  for (size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].kind != ListenerCall::Kind::kMessage) continue;
    bool events_first = false;
    for (size_t j = 0; j < i; ++j) {
      events_first = events_first || (calls[j].kind == ListenerCall::Kind::kEvents &&
                                      calls[j].vp == 1 && calls[j].interrupt == calls[i].interrupt);
    }
    EXPECT_TRUE(events_first) << "message " << i << " of interrupt " << calls[i].interrupt;
  }
  backend_->Stop();  // before the hook's notifications go
}

TEST_F(HyperVBackendTest, AllocatesThePlatformsPagesButCannotShareThemExplicitly) {
  MakeAndStart(TestOptions(&clock_));
  absl::StatusOr<Pages> pages = backend_->AllocatePages(3, PageSharing::kDefault);
  ASSERT_TRUE(pages.ok());
  EXPECT_EQ(pages->page_count(), 3u);
  // The host reaches them at their PFNs.
  pages->page(2)[7] = 0xAB;
  absl::StatusOr<absl::Span<uint8_t>> host =
      hv_->HostView(pages->pfns()[2] * protocol::kPageSize, protocol::kPageSize);
  ASSERT_TRUE(host.ok());
  EXPECT_EQ((*host)[7], 0xAB);

  absl::StatusOr<Pages> shared = backend_->AllocatePages(1, PageSharing::kHostVisible);
  EXPECT_EQ(shared.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(shared.status().message(), HasSubstr("isolated guests are not supported"));
  EXPECT_EQ(backend_->AllocatePages(0, PageSharing::kDefault).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->AllocatePages(100000, PageSharing::kDefault).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(HyperVBackendTest, HostVisiblePagesWhenTheOptionsSaySo) {
  HyperVBackendOptions options = TestOptions(&clock_);
  options.pages_host_visible = true;
  MakeAndStart(std::move(options));
  EXPECT_TRUE(backend_->AllocatePages(1, PageSharing::kHostVisible).ok());
}

// ---- SignalHost (docs/protocol.md §12) -----------------------------------------------------

class SignalHostTest : public HyperVBackendTest {
 protected:
  void SetUp() override {
    MakeAndStart(TestOptions(&clock_));
    hv_->AddEventConnection(kConnection);
    contact_ = backend_->contact_info();
  }
  std::vector<uint32_t> InterruptBits() {
    return *hv_->TakeInterruptPageBits(contact_.interrupt_page_gpa);
  }
  std::vector<uint32_t> Triggers() { return *hv_->TakeMonitorTriggers(contact_.monitor_page2_gpa); }

  static constexpr uint32_t kConnection = 0x2005;
  ContactInfo contact_;
};

TEST_F(SignalHostTest, UnmonitoredSetsTheSendHalfBitAndSignalsTheConnection) {
  ASSERT_TRUE(backend_->SignalHost({.relid = 5, .connection_id = kConnection}).ok());
  EXPECT_THAT(InterruptBits(), ElementsAre(5u));
  std::vector<testing::SignalledEvent> signals = hv_->TakeSignals();
  ASSERT_EQ(signals.size(), 1u);
  EXPECT_EQ(signals[0].connection_id, kConnection);
  EXPECT_EQ(signals[0].flag_number, 0);
  EXPECT_THAT(Triggers(), IsEmpty());
  EXPECT_EQ(backend_->stats().signals_event, 1u);
}

TEST_F(SignalHostTest, MonitoredSetsTheBitAndTheTriggerAndMakesNoHypercall) {
  const uint64_t hypercalls = hv_->hypercall_count();
  ASSERT_TRUE(backend_
                  ->SignalHost({.relid = 6,
                                .connection_id = kConnection,
                                .monitor_allocated = true,
                                .monitor_id = 37})
                  .ok());
  EXPECT_THAT(InterruptBits(), ElementsAre(6u));
  EXPECT_THAT(Triggers(), ElementsAre(37u));
  EXPECT_THAT(hv_->TakeSignals(), IsEmpty());
  EXPECT_EQ(hv_->hypercall_count(), hypercalls);
  EXPECT_EQ(backend_->stats().signals_monitor, 1u);
}

TEST_F(SignalHostTest, DedicatedInterruptSetsNoBit) {
  ASSERT_TRUE(
      backend_->SignalHost({.relid = 7, .connection_id = kConnection, .dedicated_interrupt = true})
          .ok());
  EXPECT_THAT(InterruptBits(), IsEmpty());
  EXPECT_EQ(hv_->TakeSignals().size(), 1u);
  EXPECT_EQ(backend_->stats().signals_dedicated, 1u);
}

TEST_F(SignalHostTest, HighRelidsAndMonitorIdsLandInTheirWords) {
  ASSERT_TRUE(backend_
                  ->SignalHost({.relid = 2047,
                                .connection_id = kConnection,
                                .monitor_allocated = true,
                                .monitor_id = 127})
                  .ok());
  ASSERT_TRUE(backend_->SignalHost({.relid = 64, .connection_id = kConnection}).ok());
  EXPECT_THAT(InterruptBits(), ElementsAre(64u, 2047u));
  EXPECT_THAT(Triggers(), ElementsAre(127u));
}

TEST_F(SignalHostTest, RefusesRelidsAndMonitorIdsOutOfRange) {
  EXPECT_EQ(backend_->SignalHost({.relid = 0, .connection_id = kConnection}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->SignalHost({.relid = 2048, .connection_id = kConnection}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_
                ->SignalHost({.relid = 5,
                              .connection_id = kConnection,
                              .monitor_allocated = true,
                              .monitor_id = 128})
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(InterruptBits(), IsEmpty());
  EXPECT_THAT(hv_->TakeSignals(), IsEmpty());
  EXPECT_EQ(backend_->stats().signal_failures, 3u);
}

TEST_F(SignalHostTest, AConnectionTheHostDoesNotHaveIsNotFound) {
  absl::Status s = backend_->SignalHost({.relid = 5, .connection_id = 0x3333});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("HV_STATUS_INVALID_CONNECTION_ID"));
}

}  // namespace
}  // namespace vbus::hyperv
