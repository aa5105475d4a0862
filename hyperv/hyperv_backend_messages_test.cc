// HyperVBackend's control messages against the FakeHypervisor, both ways. Guest → host: the
// connection each message goes to (InitiateContact on 4 from 5.0 and on 1 below, the rest on
// the negotiated one), the statuses the Backend contract defines (NotFound only for a
// rejected InitiateContact, ResourceExhausted for buffers that stay full, InvalidArgument for
// what cannot be encoded), retries on an injected clock, and a GpadlCreate's parts, which the
// host's own decoder reassembles. Host → guest: decoding, order, a message that does not
// decode, pausing (from another thread and from inside OnHostMessage) and Stop. The host side
// is the fake's, with every message through hyperv/wire.h. No test sleeps.
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/data/protocol.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "hyperv/hyperv_backend.h"
#include "hyperv/hyperv_backend_testing.h"
#include "hyperv/testing/fake_hypervisor.h"
#include "hyperv/tlfs.h"
#include "hyperv/wire.h"

namespace vbus::hyperv {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using testing::Deadline;
using ::testing::ElementsAre;
using testing::FakeClock;
using testing::FakeHypervisor;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::PostedMessage;
using testing::RecordingListener;
using testing::TestOptions;

v1::ControlMessage Contact(uint32_t version) {
  v1::ControlMessage m;
  v1::InitiateContact* c = m.mutable_initiate_contact();
  c->set_version_requested(version);
  if (protocol::UsesReturnedConnectionId(version)) {
    c->set_message_sint(kVmbusMessageSint);
  } else {
    c->set_interrupt_page(0x123000);
  }
  return m;
}

v1::ControlMessage RequestOffers() {
  v1::ControlMessage m;
  m.mutable_request_offers();
  return m;
}

v1::ControlMessage Torndown(uint32_t gpadl) {
  v1::ControlMessage m;
  m.mutable_gpadl_torndown()->set_gpadl(gpadl);
  return m;
}

// The one wire message of `message`.
WireMessage Wire(const v1::ControlMessage& message) {
  absl::StatusOr<std::vector<WireMessage>> parts = EncodeMessage(message);
  EXPECT_TRUE(parts.ok() && parts->size() == 1) << parts.status();
  return parts.ok() ? parts->front() : WireMessage();
}

// What the host got: each posted part decoded on its own.
v1::ControlMessage Decoded(const PostedMessage& posted) {
  absl::StatusOr<DecodedMessage> d = DecodeMessage(posted.payload);
  EXPECT_TRUE(d.ok()) << d.status();
  const v1::ControlMessage* m = d.ok() ? std::get_if<v1::ControlMessage>(&*d) : nullptr;
  return m != nullptr ? *m : v1::ControlMessage();
}

class MessagesTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(TestOptions(&clock_)); }
  void Start(HyperVBackendOptions options) {
    if (backend_ != nullptr) backend_->Stop();
    backend_.reset();
    absl::StatusOr<std::unique_ptr<HyperVBackend>> backend =
        HyperVBackend::Create(hv_, std::move(options));
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
    listener_.backend = backend_.get();
    ASSERT_TRUE(backend_->Start(&listener_).ok());
  }
  void TearDown() override {
    backend_->Stop();
    EXPECT_TRUE(hv_.WaitForIdle(Deadline()));
    EXPECT_THAT(hv_.TakeFaults(), IsEmpty());
  }
  // Host → guest, on the message VP's SINT 2.
  void Send(const v1::ControlMessage& message) {
    ASSERT_TRUE(hv_.QueueMessage(0, kVmbusMessageSint, kVmbusMessageType, Wire(message)).ok());
  }

  FakeClock clock_;
  FakeHypervisor hv_{{.vp_count = 2}};
  RecordingListener listener_;
  std::unique_ptr<HyperVBackend> backend_;
};

// ---- Guest → host: connections -------------------------------------------------------------

TEST_F(MessagesTest, InitiateContactGoesToConnection4From5_0And1Below) {
  hv_.AddMessageConnection(kVmbusMessageConnectionId);
  hv_.AddMessageConnection(kVmbusMessageConnectionIdV5);
  for (uint32_t version : {protocol::kVersion5_3, protocol::kVersion5_0, protocol::kVersion4_1,
                           protocol::kVersion2_4}) {
    ASSERT_TRUE(backend_->PostMessage(Contact(version)).ok()) << version;
  }
  std::vector<PostedMessage> posted = hv_.TakePosted();
  ASSERT_EQ(posted.size(), 4u);
  const uint32_t expected[] = {4, 4, 1, 1};
  for (size_t i = 0; i < posted.size(); ++i) {
    EXPECT_EQ(posted[i].connection_id, expected[i]) << i;
    EXPECT_EQ(posted[i].message_type, kVmbusMessageType);
    EXPECT_TRUE(
        MessageDifferencer::Equals(Decoded(posted[i]), Contact(i == 0   ? protocol::kVersion5_3
                                                               : i == 1 ? protocol::kVersion5_0
                                                               : i == 2 ? protocol::kVersion4_1
                                                                        : protocol::kVersion2_4)));
  }
  EXPECT_EQ(backend_->stats().messages_posted, 4u);
}

TEST_F(MessagesTest, ARejected5xInitiateContactIsNotFoundAfterOneAttempt) {
  hv_.AddMessageConnection(kVmbusMessageConnectionId);  // an old host: no connection 4
  const uint64_t hypercalls = hv_.hypercall_count();
  absl::Status s = backend_->PostMessage(Contact(protocol::kVersion5_3));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("HV_STATUS_INVALID_CONNECTION_ID"));
  EXPECT_THAT(s.message(), HasSubstr("initiate_contact"));
  EXPECT_EQ(hv_.hypercall_count(), hypercalls + 1);
  EXPECT_THAT(clock_.waits(), IsEmpty());
  // The next older version's connection is there.
  ASSERT_TRUE(backend_->PostMessage(Contact(protocol::kVersion4_1)).ok());
  EXPECT_EQ(hv_.TakePosted().size(), 1u);
}

TEST_F(MessagesTest, LaterMessagesGoToTheNegotiatedConnection) {
  hv_.AddMessageConnection(kVmbusMessageConnectionId);
  hv_.AddMessageConnection(0x77);
  ASSERT_TRUE(backend_->PostMessage(RequestOffers()).ok());  // no connection yet: 1
  backend_->SetConnection({protocol::kVersion5_3, 0x77});
  ASSERT_TRUE(backend_->PostMessage(RequestOffers()).ok());
  backend_->SetConnection({protocol::kVersion4_1, 0});
  ASSERT_TRUE(backend_->PostMessage(RequestOffers()).ok());
  std::vector<uint32_t> connections;
  for (const PostedMessage& p : hv_.TakePosted()) connections.push_back(p.connection_id);
  EXPECT_THAT(connections, ElementsAre(1u, 0x77u, 1u));
  ASSERT_TRUE(backend_->connection().has_value());
  EXPECT_EQ(backend_->connection()->version, protocol::kVersion4_1);
}

TEST_F(MessagesTest, AMissingNegotiatedConnectionIsRetriedButNeverNotFound) {
  HyperVBackendOptions options = TestOptions(&clock_);
  options.post_retry.max_attempts = 3;
  Start(std::move(options));
  backend_->SetConnection({protocol::kVersion5_3, 0x99});  // the host has no 0x99
  absl::Status s = backend_->PostMessage(RequestOffers());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("after 3 attempts"));
  EXPECT_EQ(clock_.waits().size(), 2u);
  EXPECT_EQ(backend_->stats().post_retries, 2u);
}

TEST_F(MessagesTest, NotFoundIsReservedForInitiateContact) {
  hv_.AddMessageConnection(kVmbusMessageConnectionId);
  hv_.AddMessageConnection(kVmbusMessageConnectionIdV5);
  // HV_STATUS_INVALID_PORT_ID is final and maps to NotFound (docs/hyperv.md §9): "try the
  // next version" for InitiateContact, a state the host must fix for anything else.
  hv_.InjectPostMessageStatus(1, kHvStatusInvalidPortId);
  EXPECT_EQ(backend_->PostMessage(Contact(protocol::kVersion5_3)).code(),
            absl::StatusCode::kNotFound);
  hv_.InjectPostMessageStatus(1, kHvStatusInvalidPortId);
  absl::Status s = backend_->PostMessage(RequestOffers());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("HV_STATUS_INVALID_PORT_ID"));
  EXPECT_THAT(hv_.TakePosted(), IsEmpty());
}

TEST_F(MessagesTest, StopEndsAPostThatWaitsToRetry) {
  HyperVBackendOptions options = TestOptions(&clock_);
  options.post_retry.wait = nullptr;  // the backend's own wait, which Stop cuts short
  options.post_retry.first_backoff = absl::Seconds(20);
  options.post_retry.max_backoff = absl::Seconds(20);
  options.post_timeout = absl::Minutes(5);
  std::atomic<int> clock_reads{0};
  Notification retrying;
  options.post_retry.now = [&] {
    // The first read sets the post's deadline; the second comes after a failed attempt.
    if (clock_reads.fetch_add(1) + 1 >= 2) retrying.Notify();
    return absl::Now();
  };
  Start(std::move(options));
  hv_.AddMessageConnection(kVmbusMessageConnectionId);
  hv_.InjectPostMessageStatus(std::nullopt);
  absl::Status posted;
  std::thread poster([&] { posted = backend_->PostMessage(RequestOffers()); });
  ASSERT_TRUE(retrying.WaitForNotificationWithDeadline(Deadline()));
  const absl::Time stop = absl::Now();
  backend_->Stop();
  poster.join();
  EXPECT_LT(absl::Now() - stop, absl::Seconds(10));  // not the 20 s back-off
  EXPECT_EQ(posted.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(posted.message(), HasSubstr("stopped while posting request_offers"));
}

// ---- Guest → host: GPADL parts, retries, encoding ----------------------------------------

TEST_F(MessagesTest, AGpadlCreateOf60PfnsArrivesAsHeaderAndBodiesThatReassemble) {
  hv_.AddMessageConnection(kVmbusMessageConnectionId);
  v1::ControlMessage create;
  v1::GpadlCreate* g = create.mutable_gpadl_create();
  g->set_child_relid(7);
  g->set_gpadl(0xE1E10);
  g->set_byte_count(60 * protocol::kPageSize);
  for (uint64_t i = 0; i < 60; ++i) g->add_pfns(0x4000 + 3 * i);
  ASSERT_TRUE(backend_->PostMessage(create).ok());

  std::vector<PostedMessage> posted = hv_.TakePosted();
  ASSERT_EQ(posted.size(), 3u);  // 26 + 28 + 6 PFNs (docs/protocol.md §6)
  WireDecoder host;
  std::optional<v1::ControlMessage> whole;
  const WireType types[] = {WireType::kGpadlHeader, WireType::kGpadlBody, WireType::kGpadlBody};
  for (size_t i = 0; i < posted.size(); ++i) {
    ASSERT_GE(posted[i].payload.size(), 4u);
    EXPECT_EQ(posted[i].payload[0], static_cast<uint8_t>(types[i])) << i;
    absl::StatusOr<std::optional<v1::ControlMessage>> part = host.Decode(posted[i].payload);
    ASSERT_TRUE(part.ok()) << part.status();
    EXPECT_EQ(part->has_value(), i == 2) << i;
    if (part->has_value()) whole = **part;
  }
  ASSERT_TRUE(whole.has_value());
  EXPECT_TRUE(MessageDifferencer::Equals(*whole, create));
  EXPECT_EQ(backend_->stats().parts_posted, 3u);
  EXPECT_EQ(backend_->stats().messages_posted, 1u);
}

TEST_F(MessagesTest, InsufficientBuffersTwiceThenSuccess) {
  hv_.AddMessageConnection(kVmbusMessageConnectionId);
  hv_.InjectPostMessageStatus(2);
  ASSERT_TRUE(backend_->PostMessage(RequestOffers()).ok());
  // Linux's back-off, on the injected clock (hypercalls.h): 10 µs, then 20 µs.
  EXPECT_THAT(clock_.waits(), ElementsAre(absl::Microseconds(10), absl::Microseconds(20)));
  EXPECT_EQ(backend_->stats().post_retries, 2u);
  EXPECT_EQ(hv_.TakePosted().size(), 1u);
}

TEST_F(MessagesTest, BuffersThatStayFullAreResourceExhaustedAndNothingReachesTheHost) {
  HyperVBackendOptions options = TestOptions(&clock_);
  options.post_retry.max_attempts = 4;
  Start(std::move(options));
  hv_.AddMessageConnection(kVmbusMessageConnectionId);
  hv_.InjectPostMessageStatus(std::nullopt);
  absl::Status s = backend_->PostMessage(RequestOffers());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("HV_STATUS_INSUFFICIENT_BUFFERS (0x13) after 4 attempts"));
  EXPECT_THAT(s.message(), HasSubstr("request_offers"));
  EXPECT_THAT(hv_.TakePosted(), IsEmpty());
  // InitiateContact is not retried at all (PostRetryPolicy::NoRetry).
  hv_.AddMessageConnection(kVmbusMessageConnectionIdV5);
  EXPECT_EQ(backend_->PostMessage(Contact(protocol::kVersion5_3)).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(backend_->stats().post_retries, 3u);
  EXPECT_EQ(backend_->stats().post_failures, 2u);
  hv_.ClearPostMessageStatus();
  EXPECT_TRUE(backend_->PostMessage(RequestOffers()).ok());
}

TEST_F(MessagesTest, PostTimeoutEndsTheRetries) {
  HyperVBackendOptions options = TestOptions(&clock_);
  options.post_timeout = absl::Microseconds(25);
  Start(std::move(options));
  hv_.AddMessageConnection(kVmbusMessageConnectionId);
  hv_.InjectPostMessageStatus(std::nullopt);
  absl::Status s = backend_->PostMessage(RequestOffers());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("at the deadline"));
  // 10 µs, then what is left of the 25 (never past the deadline).
  EXPECT_THAT(clock_.waits(), ElementsAre(absl::Microseconds(10), absl::Microseconds(15)));
}

TEST_F(MessagesTest, WhatCannotBeEncodedIsInvalidArgumentNamingTheMessage) {
  hv_.AddMessageConnection(kVmbusMessageConnectionId);
  const uint64_t hypercalls = hv_.hypercall_count();
  v1::ControlMessage open;
  open.mutable_open_channel()->set_child_relid(0);  // relids are 1..2047
  absl::Status s = backend_->PostMessage(open);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("open_channel"));
  s = backend_->PostMessage(v1::ControlMessage());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("empty"));
  EXPECT_EQ(hv_.hypercall_count(), hypercalls);
  EXPECT_EQ(backend_->stats().post_failures, 2u);
}

TEST_F(MessagesTest, PostsFromManyThreadsAreSerialisedWhole) {
  hv_.AddMessageConnection(kVmbusMessageConnectionId);
  constexpr int kThreads = 4;
  constexpr int kEach = 10;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        v1::ControlMessage create;
        v1::GpadlCreate* g = create.mutable_gpadl_create();
        g->set_child_relid(1 + t);
        g->set_gpadl(1000 * (t + 1) + i);
        g->set_byte_count(30 * protocol::kPageSize);
        for (uint64_t p = 0; p < 30; ++p) g->add_pfns(p + 1);
        EXPECT_TRUE(backend_->PostMessage(create).ok());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  // Every GPADL's header and body arrived back to back: one decoder reassembles them all.
  WireDecoder host;
  size_t complete = 0;
  for (const PostedMessage& p : hv_.TakePosted()) {
    absl::StatusOr<std::optional<v1::ControlMessage>> m = host.Decode(p.payload);
    ASSERT_TRUE(m.ok()) << m.status();
    complete += m->has_value() ? 1 : 0;
  }
  EXPECT_EQ(complete, size_t{kThreads * kEach});
}

// ---- Host → guest ----------------------------------------------------------------------------

TEST_F(MessagesTest, HostMessagesAreDecodedAndDeliveredInOrder) {
  std::vector<v1::ControlMessage> sent;
  for (uint32_t gpadl = 1; gpadl <= 5; ++gpadl) sent.push_back(Torndown(gpadl));
  for (const v1::ControlMessage& m : sent) Send(m);
  ASSERT_TRUE(listener_.WaitForMessages(sent.size()));
  std::vector<v1::ControlMessage> got = listener_.messages();
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) EXPECT_TRUE(MessageDifferencer::Equals(got[i], sent[i]));
  EXPECT_EQ(backend_->stats().messages_taken, sent.size());
}

TEST_F(MessagesTest, AMessageThatDoesNotDecodeIsDroppedCountedAndTheNextDelivered) {
  std::vector<std::string> log;
  Mutex log_mu;
  HyperVBackendOptions options = TestOptions(&clock_);
  options.log = [&](absl::string_view line) {
    MutexLock lock(&log_mu);
    log.emplace_back(line);
  };
  Start(std::move(options));
  const uint8_t bad_type[8] = {99};  // type 99 does not exist (docs/wire.md §2)
  ASSERT_TRUE(hv_.QueueMessage(0, kVmbusMessageSint, kVmbusMessageType, bad_type).ok());
  // A SynIC message that is not a VMBus message at all.
  ASSERT_TRUE(hv_.QueueMessage(0, kVmbusMessageSint, 2, Wire(Torndown(8))).ok());
  Send(Torndown(9));
  ASSERT_TRUE(listener_.WaitForMessages(1));
  ASSERT_TRUE(hv_.WaitForIdle(Deadline()));
  std::vector<v1::ControlMessage> got = listener_.messages();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].gpadl_torndown().gpadl(), 9u);
  EXPECT_EQ(backend_->stats().decode_errors, 1u);
  EXPECT_EQ(backend_->stats().messages_dropped, 2u);
  backend_->Stop();
  MutexLock lock(&log_mu);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_THAT(log[0], HasSubstr("type 99"));
  EXPECT_THAT(log[1], HasSubstr("not a VMBus message"));
}

TEST_F(MessagesTest, MessagesHeldWhilePausedComeInOrderOnResume) {
  backend_->PauseDelivery();
  backend_->PauseDelivery();  // pauses do not nest
  for (uint32_t gpadl = 1; gpadl <= 3; ++gpadl) Send(Torndown(gpadl));
  ASSERT_TRUE(hv_.WaitForIdle(Deadline()));
  EXPECT_EQ(backend_->held_messages(), 3u);
  EXPECT_EQ(listener_.message_count(), 0u);
  // Events keep flowing while paused.
  ASSERT_TRUE(hv_.SetEventFlag(0, kVmbusMessageSint, 5).ok());
  ASSERT_TRUE(listener_.WaitForEvents(0));

  backend_->ResumeDelivery();  // delivers what was held, on this thread
  std::vector<testing::ListenerCall> calls = listener_.calls();
  std::vector<uint32_t> order;
  for (const testing::ListenerCall& c : calls) {
    if (c.kind != testing::ListenerCall::Kind::kMessage) continue;
    order.push_back(c.message.gpadl_torndown().gpadl());
    EXPECT_EQ(c.thread, std::this_thread::get_id());
  }
  EXPECT_THAT(order, ElementsAre(1u, 2u, 3u));
  Send(Torndown(4));  // and new ones flow again
  ASSERT_TRUE(listener_.WaitForMessages(4));
  EXPECT_EQ(backend_->held_messages(), 0u);
}

TEST_F(MessagesTest, NothingIsDeliveredAfterStop) {
  backend_->PauseDelivery();
  Send(Torndown(1));
  Send(Torndown(2));
  ASSERT_TRUE(hv_.WaitForIdle(Deadline()));
  ASSERT_EQ(backend_->held_messages(), 2u);
  backend_->Stop();
  EXPECT_EQ(backend_->held_messages(), 0u);
  backend_->ResumeDelivery();
  // The host may still queue: the SynIC is off, so the message waits in the hypervisor.
  Send(Torndown(3));
  ASSERT_TRUE(hv_.WaitForIdle(Deadline()));
  EXPECT_EQ(hv_.queued_messages(0, kVmbusMessageSint), 1u);
  EXPECT_EQ(listener_.message_count(), 0u);
}

TEST_F(MessagesTest, PauseFromAnotherThreadWaitsForTheCallInProgress) {
  Notification inside;
  Notification release;
  listener_.on_message = [&](const v1::ControlMessage&) {
    inside.Notify();
    release.WaitForNotificationWithDeadline(Deadline());
  };
  Send(Torndown(1));
  ASSERT_TRUE(inside.WaitForNotificationWithDeadline(Deadline()));
  Notification pausing;
  bool in_call_after_pause = true;
  std::thread pauser([&] {
    pausing.Notify();
    backend_->PauseDelivery();
    in_call_after_pause = listener_.in_message();
  });
  ASSERT_TRUE(pausing.WaitForNotificationWithDeadline(Deadline()));
  release.Notify();
  pauser.join();
  EXPECT_FALSE(in_call_after_pause);
  Send(Torndown(2));
  ASSERT_TRUE(hv_.WaitForIdle(Deadline()));
  EXPECT_EQ(listener_.message_count(), 1u);
  EXPECT_EQ(backend_->held_messages(), 1u);
  backend_->Stop();  // before the hook's notifications go
}

TEST_F(MessagesTest, PauseFromInsideOnHostMessageTakesEffectWhenItReturns) {
  listener_.on_message = [this](const v1::ControlMessage& m) {
    if (m.gpadl_torndown().gpadl() == 1) backend_->PauseDelivery();
  };
  for (uint32_t gpadl = 1; gpadl <= 3; ++gpadl) Send(Torndown(gpadl));
  ASSERT_TRUE(listener_.WaitForMessages(1));
  ASSERT_TRUE(hv_.WaitForIdle(Deadline()));
  EXPECT_EQ(listener_.message_count(), 1u);
  EXPECT_EQ(backend_->held_messages(), 2u);
  backend_->ResumeDelivery();
  EXPECT_EQ(listener_.message_count(), 3u);
  backend_->Stop();
}

}  // namespace
}  // namespace vbus::hyperv
