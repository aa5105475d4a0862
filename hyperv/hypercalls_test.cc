// HvPostMessage, HvSignalEvent and the hypercall page against the FakeHypervisor: success,
// retries with the injected back-off (a fake clock: nothing sleeps), persistent failures,
// no-retry mode, and every argument check made before any hypercall.
#include "hyperv/hypercalls.h"

#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hyperv/hypercall_page.h"
#include "hyperv/testing/fake_hypervisor.h"
#include "hyperv/testing/msr_fault_platform.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv {
namespace {

using ::testing::ElementsAre;
using testing::FakeFault;
using testing::FakeHypervisor;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::PostedMessage;
using testing::SignalledEvent;

constexpr uint64_t kGuestOsId = OpenSourceGuestOsId(kGuestOsTypeLinux, 0, 0x060100, 0);
constexpr uint32_t kConnection = kVmbusMessageConnectionIdV5;

std::vector<uint8_t> Pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + 1);
  return v;
}

// A fake clock: `wait` records each wait and advances the time by it.
struct FakeClock {
  absl::Time now = absl::UnixEpoch() + absl::Hours(1);
  std::vector<absl::Duration> waits;

  PostRetryPolicy Policy(int max_attempts) {
    PostRetryPolicy policy;
    policy.max_attempts = max_attempts;
    policy.now = [this] { return now; };
    policy.wait = [this](absl::Duration d) {
      waits.push_back(d);
      now += d;
    };
    return policy;
  }
};

class HypercallsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Pages> code = hv_.AllocatePages(1);
    ASSERT_TRUE(code.ok());
    code_page_ = *std::move(code);
    ASSERT_TRUE(EnableHypercallPage(hv_, 0, kGuestOsId, code_page_.pfns()[0] * 4096).ok());
    absl::StatusOr<Pages> input = hv_.AllocatePages(1);
    ASSERT_TRUE(input.ok());
    input_page_ = *std::move(input);
    hv_.AddMessageConnection(kConnection,
                             [this](const PostedMessage& m) { handled_.push_back(m); });
    hv_.TakeMsrWrites();
  }

  FakeHypervisor hv_;
  Pages code_page_;
  Pages input_page_;
  std::vector<PostedMessage> handled_;  // the handler runs on the posting (test) thread
  FakeClock clock_;
};

// ---- The hypercall page --------------------------------------------------------------------

TEST(HypercallPageTest, GuestOsIdFirstThenHypercallMsrKeepingPreservedBits) {
  FakeHypervisor hv;
  absl::StatusOr<Pages> page = hv.AllocatePages(1);
  ASSERT_TRUE(page.ok());
  const uint64_t gpa = page->pfns()[0] * 4096;
  ASSERT_TRUE(EnableHypercallPage(hv, 0, kGuestOsId, gpa).ok());
  std::vector<testing::FakeMsrWrite> writes = hv.TakeMsrWrites();
  ASSERT_EQ(writes.size(), 2u);
  EXPECT_EQ(writes[0].msr, kMsrGuestOsId);
  EXPECT_EQ(writes[0].value, kGuestOsId);
  EXPECT_EQ(writes[1].msr, kMsrHypercall);
  EXPECT_EQ(writes[1].value, testing::FakePartition::kPageMsrPattern | gpa | kHypercallMsrEnable);
  EXPECT_THAT(hv.TakeFaults(), IsEmpty());

  ASSERT_TRUE(DisableHypercallPage(hv, 0).ok());
  writes = hv.TakeMsrWrites();
  ASSERT_EQ(writes.size(), 2u);
  EXPECT_EQ(writes[0].msr, kMsrGuestOsId);
  EXPECT_EQ(writes[0].value, 0u);
  EXPECT_EQ(writes[1].msr, kMsrHypercall);
  EXPECT_EQ(writes[1].value, testing::FakePartition::kPageMsrPattern);
  EXPECT_THAT(hv.TakeFaults(), IsEmpty());
  // No page, no hypercalls: the fake answers INVALID_PARTITION_STATE and records a fault.
  EXPECT_EQ(HvSignalEvent(hv, 2).code(), absl::StatusCode::kFailedPrecondition);
  std::vector<FakeFault> faults = hv.TakeFaults();
  ASSERT_EQ(faults.size(), 1u);
  EXPECT_EQ(faults[0].kind, FakeFault::Kind::kHypercallPageDisabled);
}

TEST(HypercallPageTest, RefusesGuestOsIdZeroAndUnalignedPagesWithoutWriting) {
  FakeHypervisor hv;
  EXPECT_EQ(EnableHypercallPage(hv, 0, 0, 0x100000).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EnableHypercallPage(hv, 0, kGuestOsId, 0x100008).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(hv.TakeMsrWrites(), IsEmpty());
}

TEST(HypercallPageTest, LockedMsrIsFailedPreconditionAndNothingIsWritten) {
  FakeHypervisor hv;
  ASSERT_TRUE(
      hv.WriteMsr(0, kMsrHypercall, testing::FakePartition::kPageMsrPattern | kHypercallMsrLocked)
          .ok());
  hv.TakeMsrWrites();
  absl::Status s = EnableHypercallPage(hv, 0, kGuestOsId, 0x100000);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("locked"));
  EXPECT_THAT(hv.TakeMsrWrites(), IsEmpty());
}

TEST(HypercallPageTest, PageOutsideGuestMemoryIsAFault) {
  FakeHypervisor hv;
  ASSERT_TRUE(EnableHypercallPage(hv, 0, kGuestOsId, 0x10000).ok());  // below guest memory
  std::vector<FakeFault> faults = hv.TakeFaults();
  ASSERT_EQ(faults.size(), 1u);
  EXPECT_EQ(faults[0].kind, FakeFault::Kind::kUnbackedPage);
}

// A hypervisor that does not take the HYPERCALL write: the read-back catches it and
// GUEST_OS_ID goes back to 0.
TEST(HypercallPageTest, ReadBackFailureUndoesGuestOsId) {
  FakeHypervisor hv;
  testing::MsrFaultPlatform platform(hv);
  platform.IgnoreWrites(kMsrHypercall);
  absl::Status s = EnableHypercallPage(platform, 0, kGuestOsId, 0x100000);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("not enabled at GPA 0x100000"));
  std::vector<testing::FakeMsrWrite> writes = hv.TakeMsrWrites();
  ASSERT_EQ(writes.size(), 2u);
  EXPECT_EQ(writes[0].msr, kMsrGuestOsId);
  EXPECT_EQ(writes[0].value, kGuestOsId);
  EXPECT_EQ(writes[1].msr, kMsrGuestOsId);
  EXPECT_EQ(writes[1].value, 0u);
}

// ---- HvPostMessage -------------------------------------------------------------------------

TEST_F(HypercallsTest, PostsTheMessage) {
  const std::vector<uint8_t> payload = Pattern(40);
  ASSERT_TRUE(
      HvPostMessage(hv_, InputPageOf(input_page_), kConnection, kVmbusMessageType, payload).ok());
  std::vector<PostedMessage> posted = hv_.TakePosted();
  ASSERT_EQ(posted.size(), 1u);
  EXPECT_EQ(posted[0].connection_id, kConnection);
  EXPECT_EQ(posted[0].message_type, kVmbusMessageType);
  EXPECT_EQ(posted[0].payload, payload);
  ASSERT_EQ(handled_.size(), 1u);
  EXPECT_EQ(handled_[0].payload, payload);
  EXPECT_EQ(hv_.hypercall_count(), 1u);
}

TEST_F(HypercallsTest, PostsTheLargestAndAnEmptyPayload) {
  ASSERT_TRUE(HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, Pattern(240)).ok());
  ASSERT_TRUE(HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, {}).ok());
  std::vector<PostedMessage> posted = hv_.TakePosted();
  ASSERT_EQ(posted.size(), 2u);
  EXPECT_EQ(posted[0].payload, Pattern(240));
  EXPECT_THAT(posted[1].payload, IsEmpty());
}

TEST_F(HypercallsTest, RetriesInsufficientBuffersWithDoublingBackoffThenSucceeds) {
  hv_.InjectPostMessageStatus(3);
  ASSERT_TRUE(
      HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, Pattern(8), clock_.Policy(100))
          .ok());
  EXPECT_EQ(hv_.hypercall_count(), 4u);
  EXPECT_THAT(clock_.waits,
              ElementsAre(absl::Microseconds(10), absl::Microseconds(20), absl::Microseconds(40)));
  EXPECT_EQ(hv_.TakePosted().size(), 1u);  // delivered once, by the attempt that succeeded
}

TEST_F(HypercallsTest, RetriesInsufficientMemory) {
  hv_.InjectPostMessageStatus(2, kHvStatusInsufficientMemory);
  ASSERT_TRUE(
      HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, Pattern(8), clock_.Policy(100))
          .ok());
  EXPECT_EQ(hv_.hypercall_count(), 3u);
}

TEST_F(HypercallsTest, BackoffStopsGrowingAtTheMaximum) {
  hv_.InjectPostMessageStatus(5);
  PostRetryPolicy policy = clock_.Policy(100);
  policy.max_backoff = absl::Microseconds(25);
  ASSERT_TRUE(HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, {}, policy).ok());
  EXPECT_THAT(clock_.waits,
              ElementsAre(absl::Microseconds(10), absl::Microseconds(20), absl::Microseconds(25),
                          absl::Microseconds(25), absl::Microseconds(25)));
}

TEST_F(HypercallsTest, PersistentInsufficientBuffersIsResourceExhaustedNamingTheStatus) {
  hv_.InjectPostMessageStatus(std::nullopt);
  absl::Status s =
      HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, Pattern(8), clock_.Policy(5));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "HvPostMessage: HV_STATUS_INSUFFICIENT_BUFFERS (0x13) after 5 attempts");
  EXPECT_EQ(hv_.hypercall_count(), 5u);
  EXPECT_EQ(clock_.waits.size(), 4u);
  EXPECT_THAT(hv_.TakePosted(), IsEmpty());  // the host never saw it
  hv_.ClearPostMessageStatus();
  EXPECT_TRUE(HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, {}).ok());
}

TEST_F(HypercallsTest, NeverWaitsPastTheDeadline) {
  hv_.InjectPostMessageStatus(std::nullopt);
  PostRetryPolicy policy = clock_.Policy(100);
  policy.deadline = clock_.now + absl::Microseconds(25);
  absl::Status s = HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, {}, policy);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("HV_STATUS_INSUFFICIENT_BUFFERS (0x13) at the deadline"));
  // 10 µs, then only the 15 µs left, then the deadline has passed after attempt 3.
  EXPECT_THAT(clock_.waits, ElementsAre(absl::Microseconds(10), absl::Microseconds(15)));
  EXPECT_EQ(hv_.hypercall_count(), 3u);
}

TEST_F(HypercallsTest, NoRetryMakesOneAttempt) {
  hv_.InjectPostMessageStatus(1);
  PostRetryPolicy policy = PostRetryPolicy::NoRetry();
  policy.wait = [this](absl::Duration d) { clock_.waits.push_back(d); };
  absl::Status s = HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, {}, policy);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "HvPostMessage: HV_STATUS_INSUFFICIENT_BUFFERS (0x13) after 1 attempt");
  EXPECT_EQ(hv_.hypercall_count(), 1u);
  EXPECT_THAT(clock_.waits, IsEmpty());
}

// InitiateContact on a 5.x connection the host does not offer: NotFound, at once, so the bus
// tries the next version.
TEST_F(HypercallsTest, NoRetryInvalidConnectionIdIsNotFound) {
  hv_.RemoveMessageConnection(kConnection);
  absl::Status s = HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, Pattern(40),
                                 PostRetryPolicy::NoRetry());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "HvPostMessage: HV_STATUS_INVALID_CONNECTION_ID (0x12)");
  EXPECT_EQ(hv_.hypercall_count(), 1u);
}

TEST_F(HypercallsTest, InvalidConnectionIdIsRetriedByDefault) {
  hv_.RemoveMessageConnection(kConnection);
  absl::Status s =
      HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, {}, clock_.Policy(3));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("HV_STATUS_INVALID_CONNECTION_ID (0x12) after 3 attempts"));
  EXPECT_EQ(hv_.hypercall_count(), 3u);
}

TEST_F(HypercallsTest, OtherStatusesFailAtOnce) {
  hv_.InjectPostMessageStatus(std::nullopt, kHvStatusAccessDenied);
  absl::Status s =
      HvPostMessage(hv_, InputPageOf(input_page_), kConnection, 1, {}, clock_.Policy(100));
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "HvPostMessage: HV_STATUS_ACCESS_DENIED (0x06)");
  EXPECT_EQ(hv_.hypercall_count(), 1u);
}

TEST_F(HypercallsTest, RefusesBadArgumentsBeforeAnyHypercall) {
  const HypercallInputPage page = InputPageOf(input_page_);
  struct Case {
    const char* name;
    absl::Status status;
    const char* message;
  };
  HypercallInputPage misaligned = page;
  misaligned.bytes = page.bytes.subspan(4);
  misaligned.gpa += 4;
  // 256 bytes starting 248 bytes before the end of the first of two pages.
  Pages two = hv_.AllocatePages(2).value();
  HypercallInputPage crossing{two.bytes().subspan(3848, 256), two.pfns()[0] * 4096 + 3848};
  HypercallInputPage short_page = page;
  short_page.bytes = page.bytes.subspan(0, 255);
  PostRetryPolicy zero_attempts;
  zero_attempts.max_attempts = 0;
  const Case cases[] = {
      {"payload 241", HvPostMessage(hv_, page, kConnection, 1, Pattern(241)), "241 bytes"},
      {"type 0", HvPostMessage(hv_, page, kConnection, 0, {}), "message type 0x0"},
      {"hypervisor type", HvPostMessage(hv_, page, kConnection, 0x80000001, {}), "0x80000001"},
      {"wide connection", HvPostMessage(hv_, page, 0x1000004, 1, {}), "24 bits"},
      {"misaligned", HvPostMessage(hv_, misaligned, kConnection, 1, {}), "8-byte aligned"},
      {"crossing", HvPostMessage(hv_, crossing, kConnection, 1, {}), "crosses a page"},
      {"short", HvPostMessage(hv_, short_page, kConnection, 1, {}), "shorter than"},
      {"attempts", HvPostMessage(hv_, page, kConnection, 1, {}, zero_attempts), "max_attempts"},
      {"signal", HvSignalEvent(hv_, 0x1000002), "24 bits"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(c.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status.message(), HasSubstr(c.message));
  }
  EXPECT_EQ(hv_.hypercall_count(), 0u);
}

// ---- HvSignalEvent -------------------------------------------------------------------------

TEST_F(HypercallsTest, SignalsTheConnection) {
  std::vector<SignalledEvent> handled;
  hv_.AddEventConnection(0x2A, 2, [&](const SignalledEvent& e) { handled.push_back(e); });
  ASSERT_TRUE(HvSignalEvent(hv_, 0x2A).ok());
  ASSERT_TRUE(HvSignalEvent(hv_, 0x2A, 1).ok());
  std::vector<SignalledEvent> signals = hv_.TakeSignals();
  ASSERT_EQ(signals.size(), 2u);
  EXPECT_EQ(signals[0].connection_id, 0x2Au);
  EXPECT_EQ(signals[0].flag_number, 0);
  EXPECT_EQ(signals[1].flag_number, 1);
  EXPECT_EQ(handled.size(), 2u);
}

TEST_F(HypercallsTest, SignalFailuresCarryTheirStatus) {
  hv_.AddEventConnection(0x2A);
  absl::Status unknown = HvSignalEvent(hv_, 0x2B);
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(unknown.message(), "HvSignalEvent: HV_STATUS_INVALID_CONNECTION_ID (0x12)");
  absl::Status flag = HvSignalEvent(hv_, 0x2A, 1);
  EXPECT_EQ(flag.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(flag.message(), "HvSignalEvent: HV_STATUS_INVALID_PARAMETER (0x05)");
  EXPECT_THAT(hv_.TakeSignals(), IsEmpty());
}

}  // namespace
}  // namespace vbus::hyperv
