// MockBackend against a host that writes raw bytes (mock/testing/raw_host_link.h): messages
// that do not parse (malformed protobuf, invalid UTF-8 in a string field) in every place the
// guest reads them — control messages, control batches, the attach handshake — and hostile
// text (control characters, megabytes) in what the guest logs or reports. Nothing may wedge
// the link, and host text reaches log lines and Status messages escaped and bounded.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/guest/mock_backend.h"
#include "mock/testing/raw_host_link.h"
#include "mock/testing/recording_listener.h"

namespace vbus::mock {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

// Four bytes that are not UTF-8 (0xC0 0x80 is an overlong NUL).
const std::string kNotUtf8("\xff\xfe\xc0\x80", 4);
constexpr absl::string_view kMarker = "@@@@";

// A control message whose offer's instance GUID text is not UTF-8.
std::string OfferWithBadInstance(uint32_t relid) {
  v1::HostToGuest m;
  v1::Offer* offer = m.mutable_control()->mutable_offer();
  offer->set_child_relid(relid);
  offer->mutable_interface_instance()->set_value(std::string(kMarker));
  return OverwriteInFrame(RawFrame(m), kMarker, kNotUtf8);
}

// A batch of two offers whose second one's class GUID text is not UTF-8.
std::string BatchWithBadSecondMessage() {
  v1::HostToGuest m;
  m.mutable_batch()->add_messages()->mutable_offer()->set_child_relid(5);
  v1::Offer* bad = m.mutable_batch()->add_messages()->mutable_offer();
  bad->set_child_relid(6);
  bad->mutable_interface_type()->set_value(std::string(kMarker));
  return OverwriteInFrame(RawFrame(m), kMarker, kNotUtf8);
}

std::string ControlFrame(const v1::ControlMessage& control) {
  v1::HostToGuest m;
  *m.mutable_control() = control;
  return RawFrame(m);
}

class MockBackendHostBytesTest : public ::testing::Test {
 protected:
  void Serve(RawHostScript script) {
    absl::StatusOr<std::unique_ptr<RawHostLink>> link = RawHostLink::Start(std::move(script));
    ASSERT_TRUE(link.ok()) << link.status();
    link_ = std::move(*link);
    MockBackendOptions options;
    options.memory_bytes = 1 << 20;
    options.attach_timeout = attach_timeout_;
    options.log = [this](absl::string_view line) {
      MutexLock lock(&log_mu_);
      logs_.emplace_back(line);
    };
    absl::StatusOr<std::unique_ptr<MockBackend>> backend =
        MockBackend::Connect(link_->InProcessChannel(), options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
  }
  void TearDown() override {
    if (backend_) backend_->Stop();
    backend_.reset();
    link_.reset();
  }
  std::vector<std::string> Logs() {
    MutexLock lock(&log_mu_);
    return logs_;
  }

  absl::Duration attach_timeout_ = absl::Seconds(10);
  std::unique_ptr<RawHostLink> link_;
  RecordingListener recorder_;
  std::unique_ptr<MockBackend> backend_;
  Mutex log_mu_;
  std::vector<std::string> logs_ ABSL_GUARDED_BY(log_mu_);
};

TEST_F(MockBackendHostBytesTest, MessagesThatDoNotParseAreCountedAndDroppedAndTheLinkGoesOn) {
  v1::ControlMessage supported;
  supported.mutable_version_response()->set_version_supported(true);
  RawHostScript script;
  script.after_attach = {
      RawFrame(AttachedMessage("guest-1")),
      std::string("\x12\x7f\x01", 3),  // `control` of 127 bytes, 1 present: malformed
      OfferWithBadInstance(4),
      BatchWithBadSecondMessage(),
      ControlFrame(supported),
  };
  // Every later guest control message is answered with AllOffersDelivered.
  script.answer = [](const v1::GuestToHost& from_guest) -> std::vector<std::string> {
    if (!from_guest.has_control()) return {};
    v1::ControlMessage done;
    done.mutable_all_offers_delivered();
    return {ControlFrame(done)};
  };
  Serve(std::move(script));
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  EXPECT_EQ(backend_->guest_id(), "guest-1");

  // The good message after the three bad ones arrives; nothing of the bad ones does.
  ASSERT_TRUE(recorder_.WaitFor(
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) { return !recorder_.messages_.empty(); },
      absl::Seconds(10)));
  ASSERT_TRUE(recorder_.messages()[0].has_version_response());
  // The link still works both ways.
  v1::ControlMessage request;
  request.mutable_request_offers();
  ASSERT_TRUE(backend_->PostMessage(request).ok());
  ASSERT_TRUE(recorder_.WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) {
    return recorder_.messages_.size() == 2;
  }));
  EXPECT_TRUE(recorder_.messages()[1].has_all_offers_delivered());
  EXPECT_TRUE(recorder_.lost().empty());

  backend_->Stop();  // the reader has finished: the counters are final
  const MockBackendStats stats = backend_->stats();
  EXPECT_EQ(stats.messages_unparsable, 3u);
  EXPECT_EQ(stats.messages_delivered, 2u);
  EXPECT_EQ(stats.batches_received, 0u);
  const std::vector<std::string> logs = Logs();
  EXPECT_THAT(logs, Contains(HasSubstr("control: ")));
  EXPECT_THAT(logs, Contains(HasSubstr("control.offer.interface_instance.value: not UTF-8")));
  EXPECT_THAT(logs, Contains(HasSubstr("batch.messages[1].offer.interface_type.value: not UTF-8")));
  for (const std::string& line : logs) EXPECT_LT(line.size(), 1000u) << line;
}

TEST_F(MockBackendHostBytesTest, ABatchThatDoesNotParseIsDroppedWhole) {
  v1::HostToGuest good;
  good.mutable_batch()->add_messages()->mutable_offer()->set_child_relid(7);
  good.mutable_batch()->add_messages()->mutable_all_offers_delivered();
  RawHostScript script;
  script.after_attach = {RawFrame(AttachedMessage("guest-2")), BatchWithBadSecondMessage(),
                         std::string("\x2a\x03\x0a\x05\x22", 5),  // batch.messages[0] truncated
                         RawFrame(good)};
  Serve(std::move(script));
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  ASSERT_TRUE(recorder_.WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(
                                    recorder_.mu_) { return recorder_.messages_.size() == 2; },
                                absl::Seconds(10)));
  std::vector<v1::ControlMessage> m = recorder_.messages();
  EXPECT_EQ(m[0].offer().child_relid(), 7u);  // nothing of the bad batches (relid 5) came
  EXPECT_TRUE(m[1].has_all_offers_delivered());
  backend_->Stop();
  EXPECT_EQ(backend_->stats().messages_unparsable, 2u);
  EXPECT_EQ(backend_->stats().batches_received, 1u);
  EXPECT_THAT(Logs(), Contains(HasSubstr("batch.messages[0]")));
}

// The attach handshake: an `attached` that does not parse ends the attach at once, naming
// what was wrong (not a timeout).
class AttachedThatDoesNotParseTest : public MockBackendHostBytesTest,
                                     public ::testing::WithParamInterface<std::string> {};

TEST_P(AttachedThatDoesNotParseTest, FailsTheAttachAtOnce) {
  attach_timeout_ = absl::Seconds(8);
  RawHostScript script;
  script.after_attach = {GetParam()};
  Serve(std::move(script));
  const absl::Time start = absl::Now();
  absl::Status s = backend_->Start(&recorder_);
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("`attached` does not parse"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("attached.guest_id"));
  EXPECT_TRUE(recorder_.lost().empty());
  EXPECT_EQ(backend_->stats().messages_unparsable, 1u);
}

INSTANTIATE_TEST_SUITE_P(
    Frames, AttachedThatDoesNotParseTest,
    ::testing::Values(OverwriteInFrame(RawFrame(AttachedMessage(std::string(kMarker))), kMarker,
                                       kNotUtf8),
                      std::string("\x0a\x04\x0a\x05"
                                  "ab",
                                  6)));  // guest_id truncated

TEST_F(MockBackendHostBytesTest, HostTextIsEscapedAndBoundedInLogsAndInTheLostStatus) {
  v1::HostToGuest error;
  error.mutable_error()->set_code(3);
  error.mutable_error()->set_message("line one\nforged line\x1b[31m" + std::string(100000, 'x'));
  RawHostScript script;
  script.after_attach = {RawFrame(AttachedMessage("guest-3")), RawFrame(error)};
  script.end =
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "going\naway\x07" + std::string(3000, 'y'));
  Serve(std::move(script));
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  ASSERT_TRUE(recorder_.WaitFor(
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) { return !recorder_.lost_.empty(); }));
  const absl::Status lost = recorder_.lost()[0];
  EXPECT_EQ(lost.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(lost.message()), HasSubstr("going\\x0aaway\\x07yyy"));
  EXPECT_LT(lost.message().size(), 1000u);
  const std::vector<std::string> logs = Logs();
  EXPECT_THAT(logs, Contains(HasSubstr("line one\\x0aforged line\\x1b[31mxxx")));
  for (const std::string& line : logs) {
    EXPECT_LT(line.size(), 1000u) << line.substr(0, 200);
    EXPECT_THAT(line, Not(HasSubstr("\n")));
  }
  EXPECT_EQ(backend_->stats().protocol_errors, 1u);
}

TEST_F(MockBackendHostBytesTest, ARefusedAttachReportsTheHostTextEscapedAndBounded) {
  RawHostScript script;
  script.end =
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no\r\nroom" + std::string(5000, 'z'));
  Serve(std::move(script));
  absl::Status s = backend_->Start(&recorder_);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("no\\x0d\\x0aroom"));
  EXPECT_LT(s.message().size(), 1000u);
}

}  // namespace
}  // namespace vbus::mock
