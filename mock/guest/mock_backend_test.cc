// MockBackend against (a) the real mock host in-process and (b) scripted GuestLink servers
// that misbehave on purpose (silent, refusing, sending junk, hanging up), plus a hand-written
// GuestLinkOpener. Every wait is a condition wait with a deadline.
#include "mock/guest/mock_backend.h"

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/data/event_page.h"
#include "core/data/protocol.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "mock/host/mock_host.h"
#include "mock/testing/recording_listener.h"

namespace vbus::mock {
namespace {

using ::testing::HasSubstr;

absl::Time Deadline() { return absl::Now() + RecordingListener::kWait; }

using Recorder = RecordingListener;

v1::ControlMessage Contact(uint32_t version) {
  v1::ControlMessage m;
  m.mutable_initiate_contact()->set_version_requested(version);
  m.mutable_initiate_contact()->set_message_sint(2);
  return m;
}

// ---------------------------------------------------------------------------------------------
// Against the real mock host
// ---------------------------------------------------------------------------------------------

class MockBackendHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MockHostOptions options;
    options.log = [](absl::string_view) {};
    absl::StatusOr<std::unique_ptr<MockHostServer>> server =
        MockHostServer::Start(std::move(options), "");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  void TearDown() override {
    backend_.reset();
    server_->Shutdown();
  }
  void MakeBackend(MockBackendOptions options = {}) {
    options.memory_bytes = 4 << 20;
    options.log = [](absl::string_view) {};
    absl::StatusOr<std::unique_ptr<MockBackend>> backend =
        MockBackend::Connect(server_->InProcessChannel(), options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
  }

  std::unique_ptr<MockHostServer> server_;
  Recorder recorder_;
  std::unique_ptr<MockBackend> backend_;
};

TEST_F(MockBackendHostTest, AttachesAndCarriesControlMessagesBothWays) {
  MockBackendOptions options;
  options.guest_name = "agent-7";
  MakeBackend(options);
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  EXPECT_FALSE(backend_->guest_id().empty());
  EXPECT_EQ(backend_->Start(&recorder_).code(), absl::StatusCode::kFailedPrecondition);
  const ContactInfo contact = backend_->contact_info();
  EXPECT_EQ(contact.monitor_page1_gpa,
            backend_->memory().layout().monitor_page1_pfn * protocol::kPageSize);
  EXPECT_EQ(contact.monitor_page2_gpa,
            backend_->memory().layout().monitor_page2_pfn * protocol::kPageSize);

  ASSERT_TRUE(backend_->PostMessage(Contact(protocol::kVersion5_3)).ok());
  ASSERT_TRUE(recorder_.WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) {
    return recorder_.messages_.size() == 1;
  }));
  EXPECT_TRUE(recorder_.messages()[0].version_response().version_supported());
  v1::ControlMessage request;
  request.mutable_request_offers();
  ASSERT_TRUE(backend_->PostMessage(request).ok());
  ASSERT_TRUE(recorder_.WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) {
    return recorder_.messages_.size() == 2;
  }));
  EXPECT_TRUE(recorder_.messages()[1].has_all_offers_delivered());

  // A hot-added device reaches the guest as an Offer.
  v1::OfferRequest offer;
  offer.set_guest("agent-7");
  offer.mutable_spec()->set_device("echo");
  absl::StatusOr<v1::OfferResponse> offered = server_->host().Offer(offer);
  ASSERT_TRUE(offered.ok()) << offered.status();
  ASSERT_TRUE(recorder_.WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) {
    return recorder_.messages_.size() == 3;
  }));
  EXPECT_EQ(recorder_.messages()[2].offer().child_relid(), offered->child_relid());

  v1::ListGuestsResponse guests = server_->host().ListGuests();
  ASSERT_EQ(guests.guests_size(), 1);
  EXPECT_EQ(guests.guests(0).guest_name(), "agent-7");
  EXPECT_EQ(guests.guests(0).memory_path(), backend_->memory().path());

  backend_->Stop();
  EXPECT_EQ(backend_->PostMessage(request).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(recorder_.lost().empty());  // a local Stop is not a lost host
  EXPECT_EQ(backend_->stats().messages_posted, 2u);
  EXPECT_EQ(backend_->stats().messages_delivered, 3u);
}

TEST_F(MockBackendHostTest, HostShutdownIsALostLink) {
  MakeBackend();
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  server_->Shutdown();
  ASSERT_TRUE(recorder_.WaitFor(
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) { return !recorder_.lost_.empty(); }));
  std::vector<absl::Status> lost = recorder_.lost();
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].code(), absl::StatusCode::kUnavailable) << lost[0];
  EXPECT_EQ(backend_->PostMessage(Contact(protocol::kVersion5_3)).code(),
            absl::StatusCode::kUnavailable);
  ChannelSignal signal;
  signal.relid = 3;
  EXPECT_EQ(backend_->SignalHost(signal).code(), absl::StatusCode::kUnavailable);
}

TEST_F(MockBackendHostTest, DuplicateGuestNameIsRefused) {
  MakeBackend();
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  MockBackendOptions options;
  options.memory_bytes = 4 << 20;
  options.log = [](absl::string_view) {};
  auto second = MockBackend::Connect(server_->InProcessChannel(), options);
  ASSERT_TRUE(second.ok());
  Recorder other;
  absl::Status s = (*second)->Start(&other);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("vbus-guest"));
}

TEST_F(MockBackendHostTest, PagesComeFromTheSharedFile) {
  MakeBackend();
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  absl::StatusOr<Pages> pages = backend_->AllocatePages(3, PageSharing::kDefault);
  ASSERT_TRUE(pages.ok());
  const MemoryLayout& layout = backend_->memory().layout();
  EXPECT_GE(pages->pfns()[0], layout.first_data_pfn);
  EXPECT_EQ(*backend_->memory().Translate(pages->pfns()[2]), pages->page(2));
  EXPECT_EQ(backend_->AllocatePages(backend_->memory().page_count(), PageSharing::kDefault)
                .status()
                .code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(backend_->ReceiveEventFlags(0).data(), backend_->memory().GuestEventPage());
  EXPECT_EQ(backend_->ReceiveEventFlags(0).size(), kEventFlagBytes);
}

TEST_F(MockBackendHostTest, RingsOfTheSharedFileCanBeMappedMirrored) {
  MakeBackend();
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  absl::StatusOr<Pages> pages = backend_->AllocatePages(2 + 3, PageSharing::kDefault);
  ASSERT_TRUE(pages.ok());
  // The second ring of the allocation: 3 pages from page 2 (control page + 2 data pages).
  absl::StatusOr<MirroredMapping> m = backend_->MapRingMirrored(*pages, 2, 3);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->memory().size(), (3 + 2) * protocol::kPageSize);
  // Both copies of the data area alias the allocation's own pages.
  pages->page(3)[10] = 0x5A;
  EXPECT_EQ(m->memory()[protocol::kPageSize + 10], 0x5A);
  EXPECT_EQ(m->memory()[3 * protocol::kPageSize + 10], 0x5A);
  m->memory()[4 * protocol::kPageSize + 1] = 0xA5;  // mirror of data page 2 = pages page 4
  EXPECT_EQ(pages->page(4)[1], 0xA5);
  EXPECT_EQ(backend_->MapRingMirrored(*pages, 3, 3).status().code(),
            absl::StatusCode::kInvalidArgument);  // past the allocation
  EXPECT_EQ(backend_->MapRingMirrored(*pages, 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);  // not a ring
}

TEST(MockBackendDialTest, UnreachableHostIsUnavailable) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  MockBackendOptions options;
  options.memory_bytes = 1 << 20;
  options.log = [](absl::string_view) {};
  auto backend = MockBackend::Dial(
      absl::StrCat("unix:", tmp == nullptr ? "/tmp" : tmp, "/no-such-host.sock"), options);
  ASSERT_TRUE(backend.ok());
  Recorder recorder;
  const absl::Time start = absl::Now();
  absl::Status s = (*backend)->Start(&recorder);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

// ---------------------------------------------------------------------------------------------
// Against scripted GuestLink servers
// ---------------------------------------------------------------------------------------------

using Stream = grpc::ServerReaderWriter<v1::HostToGuest, v1::GuestToHost>;

// A GuestLink whose Connect runs a test's script.
class ScriptedLink final : public v1::GuestLink::Service {
 public:
  explicit ScriptedLink(std::function<grpc::Status(grpc::ServerContext*, Stream*)> script)
      : script_(std::move(script)) {}
  grpc::Status Connect(grpc::ServerContext* context, Stream* stream) override {
    return script_(context, stream);
  }

 private:
  std::function<grpc::Status(grpc::ServerContext*, Stream*)> script_;
};

// Reads the guest's attach and answers `attached`.
bool AcceptAttach(Stream* stream) {
  v1::GuestToHost first;
  if (!stream->Read(&first) || !first.has_attach()) return false;
  v1::HostToGuest attached;
  attached.mutable_attached()->set_guest_id("guest-9");
  return stream->Write(attached);
}

// Reads until the guest goes away.
void DrainUntilGone(Stream* stream) {
  v1::GuestToHost ignored;
  while (stream->Read(&ignored)) {
  }
}

class MockBackendScriptTest : public ::testing::Test {
 protected:
  void Serve(std::function<grpc::Status(grpc::ServerContext*, Stream*)> script) {
    service_ = std::make_unique<ScriptedLink>(std::move(script));
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    MockBackendOptions options;
    options.memory_bytes = 1 << 20;
    options.attach_timeout = attach_timeout_;
    options.log = [this](absl::string_view line) {
      MutexLock lock(&log_mu_);
      logs_.emplace_back(line);
    };
    auto backend =
        MockBackend::Connect(server_->InProcessChannel(grpc::ChannelArguments()), options);
    ASSERT_TRUE(backend.ok());
    backend_ = std::move(*backend);
  }
  void TearDown() override {
    if (backend_) backend_->Stop();
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  }
  std::vector<std::string> Logs() {
    MutexLock lock(&log_mu_);
    return logs_;
  }

  absl::Duration attach_timeout_ = absl::Seconds(10);
  std::unique_ptr<ScriptedLink> service_;
  std::unique_ptr<grpc::Server> server_;
  Recorder recorder_;
  std::unique_ptr<MockBackend> backend_;
  Mutex log_mu_;
  std::vector<std::string> logs_ ABSL_GUARDED_BY(log_mu_);
};

TEST_F(MockBackendScriptTest, RefusedAttachNamesTheReason) {
  Serve([](grpc::ServerContext*, Stream*) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "memory layout revision 9 unknown");
  });
  absl::Status s = backend_->Start(&recorder_);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("memory layout revision 9 unknown"));
  EXPECT_TRUE(recorder_.lost().empty());
}

TEST_F(MockBackendScriptTest, SilentHostTimesOut) {
  attach_timeout_ = absl::Milliseconds(200);
  Serve([](grpc::ServerContext*, Stream* stream) {
    DrainUntilGone(stream);  // never answers
    return grpc::Status::OK;
  });
  absl::Status s = backend_->Start(&recorder_);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
}

TEST_F(MockBackendScriptTest, JunkFromTheHostIsIgnoredAndTheLinkLossReported) {
  Serve([](grpc::ServerContext*, Stream* stream) {
    v1::HostToGuest early;
    early.mutable_control()->mutable_all_offers_delivered();
    stream->Write(early);  // before `attached`: ignored
    if (!AcceptAttach(stream)) return grpc::Status::CANCELLED;
    stream->Write(v1::HostToGuest());  // empty
    v1::HostToGuest error;
    error.mutable_error()->set_code(3);
    error.mutable_error()->set_message("open_channel: unknown relid 99");
    stream->Write(error);
    v1::HostToGuest bad_signal;
    bad_signal.mutable_signal()->set_child_relid(5000);
    stream->Write(bad_signal);
    v1::HostToGuest signal;
    signal.mutable_signal()->set_child_relid(9);
    stream->Write(signal);
    v1::HostToGuest control;
    control.mutable_control()->mutable_version_response()->set_version_supported(true);
    stream->Write(control);
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "host restarting");
  });
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  EXPECT_EQ(backend_->guest_id(), "guest-9");
  ASSERT_TRUE(recorder_.WaitFor(
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) { return !recorder_.lost_.empty(); }));
  // Only the control message after `attached` was delivered, before the loss.
  std::vector<v1::ControlMessage> messages = recorder_.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_TRUE(messages[0].has_version_response());
  ASSERT_EQ(recorder_.lost().size(), 1u);
  EXPECT_EQ(recorder_.lost()[0].code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(recorder_.lost()[0].message()), HasSubstr("host restarting"));
  // The stream signal set relid 9's bit and raised an event; relid 5000 was refused.
  absl::StatusOr<EventPage> page = EventPage::Attach(backend_->ReceiveEventFlags(0));
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->IsSet(9));
  EXPECT_GE(recorder_.events(), 1);
  MockBackendStats stats = backend_->stats();
  EXPECT_EQ(stats.protocol_errors, 1u);
  EXPECT_EQ(stats.stream_signals, 2u);
  EXPECT_THAT(Logs(), ::testing::Contains(HasSubstr("unknown relid 99")));
}

TEST_F(MockBackendScriptTest, SignalsSetBitsAndRingTheHostDoorbellOnce) {
  Serve([](grpc::ServerContext*, Stream* stream) {
    if (AcceptAttach(stream)) DrainUntilGone(stream);
    return grpc::Status::OK;
  });
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  GuestMemory& memory = backend_->memory();
  const uint32_t rings_before = memory.DoorbellValue(Doorbell::kHost);
  ChannelSignal signal;
  signal.relid = 5;
  ASSERT_TRUE(backend_->SignalHost(signal).ok());
  ASSERT_TRUE(backend_->SignalHost(signal).ok());  // the host has not scanned: coalesced
  absl::StatusOr<EventPage> host_page =
      EventPage::Attach(absl::MakeSpan(memory.HostEventPage(), EventPage::kBytes));
  ASSERT_TRUE(host_page.ok());
  EXPECT_TRUE(host_page->IsSet(5));
  EXPECT_EQ(memory.DoorbellValue(Doorbell::kHost), rings_before + 1);
  // Monitored channels set their interrupt bit too, then the monitor trigger instead of the
  // doorbell (docs/protocol.md §12).
  ChannelSignal monitored;
  monitored.relid = 6;
  monitored.monitor_allocated = true;
  monitored.monitor_id = 35;
  ASSERT_TRUE(backend_->SignalHost(monitored).ok());
  EXPECT_EQ(memory.TakeMonitorTriggers(1), 1u << 3);
  EXPECT_TRUE(host_page->IsSet(6));
  EXPECT_EQ(memory.DoorbellValue(Doorbell::kHost), rings_before + 1);
  MockBackendStats stats = backend_->stats();
  EXPECT_EQ(stats.host_doorbells, 1u);
  EXPECT_EQ(stats.signals_coalesced, 1u);
  EXPECT_EQ(stats.monitor_signals, 1u);
  signal.relid = 0;
  EXPECT_EQ(backend_->SignalHost(signal).code(), absl::StatusCode::kInvalidArgument);
  signal.relid = protocol::kRelidCount;
  EXPECT_EQ(backend_->SignalHost(signal).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(MockBackendScriptTest, GuestDoorbellRaisesEvents) {
  Serve([](grpc::ServerContext*, Stream* stream) {
    if (AcceptAttach(stream)) DrainUntilGone(stream);
    return grpc::Status::OK;
  });
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  // The first scan.
  ASSERT_TRUE(recorder_.WaitFor(
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) { return recorder_.events_ >= 1; }));
  const int before = recorder_.events();
  // What the host does: set the bit, ring the guest's doorbell.
  absl::StatusOr<EventPage> page = EventPage::Attach(backend_->ReceiveEventFlags(0));
  ASSERT_TRUE(page.ok());
  ASSERT_TRUE(page->Set(11).ok());
  backend_->memory().Ring(Doorbell::kGuest);
  ASSERT_TRUE(recorder_.WaitFor(
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) { return recorder_.events_ > before; }));
  EXPECT_GE(backend_->stats().doorbell_wakeups, 1u);
}

TEST_F(MockBackendScriptTest, PausedMessagesAreHeldThenDeliveredInOrder) {
  Serve([](grpc::ServerContext*, Stream* stream) {
    if (!AcceptAttach(stream)) return grpc::Status::CANCELLED;
    v1::GuestToHost in;
    while (stream->Read(&in)) {
      if (!in.control().has_request_offers()) continue;
      for (uint32_t relid : {4u, 5u, 6u}) {
        v1::HostToGuest out;
        out.mutable_control()->mutable_offer()->set_child_relid(relid);
        stream->Write(out);
      }
    }
    return grpc::Status::OK;
  });
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  backend_->PauseDelivery();
  v1::ControlMessage request;
  request.mutable_request_offers();
  ASSERT_TRUE(backend_->PostMessage(request).ok());
  // Wait (bounded) until all three are held back by the backend.
  const absl::Time deadline = Deadline();
  while (backend_->held_messages() < 3 && absl::Now() < deadline) {
    MutexLock lock(&recorder_.mu_);
    recorder_.cv_.WaitWithDeadline(&recorder_.mu_, absl::Now() + absl::Milliseconds(5));
  }
  ASSERT_EQ(backend_->held_messages(), 3u);
  EXPECT_EQ(recorder_.message_count(), 0u);
  backend_->ResumeDelivery();
  ASSERT_TRUE(recorder_.WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) {
    return recorder_.messages_.size() == 3;
  }));
  std::vector<v1::ControlMessage> m = recorder_.messages();
  EXPECT_EQ(m[0].offer().child_relid(), 4u);
  EXPECT_EQ(m[1].offer().child_relid(), 5u);
  EXPECT_EQ(m[2].offer().child_relid(), 6u);
}

TEST_F(MockBackendScriptTest, HostBatchesAreDeliveredInOrderAndMalformedOnesDropped) {
  Serve([](grpc::ServerContext*, Stream* stream) {
    v1::HostToGuest early;
    early.mutable_batch()->add_messages()->mutable_all_offers_delivered();
    stream->Write(early);  // before `attached`: ignored
    if (!AcceptAttach(stream)) return grpc::Status::CANCELLED;
    v1::HostToGuest batch;
    for (uint32_t relid : {4u, 5u, 6u}) {
      batch.mutable_batch()->add_messages()->mutable_offer()->set_child_relid(relid);
    }
    stream->Write(batch);
    v1::HostToGuest single;
    single.mutable_control()->mutable_offer()->set_child_relid(7);
    stream->Write(single);
    v1::HostToGuest empty;
    empty.mutable_batch();
    stream->Write(empty);  // malformed: dropped
    v1::HostToGuest too_long;
    for (int i = 0; i <= v1::CONTROL_BATCH_MAX_MESSAGES; ++i) {
      too_long.mutable_batch()->add_messages()->mutable_offer()->set_child_relid(100);
    }
    stream->Write(too_long);  // malformed: dropped whole
    v1::HostToGuest last;
    last.mutable_batch()->add_messages()->mutable_offer()->set_child_relid(8);
    last.mutable_batch()->add_messages()->mutable_all_offers_delivered();
    stream->Write(last);
    DrainUntilGone(stream);
    return grpc::Status::OK;
  });
  ASSERT_TRUE(backend_->Start(&recorder_).ok());
  ASSERT_TRUE(recorder_.WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder_.mu_) {
    return recorder_.messages_.size() == 6;
  }));
  std::vector<v1::ControlMessage> m = recorder_.messages();
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(m[i].offer().child_relid(), 4 + i) << i;
  EXPECT_TRUE(m[5].has_all_offers_delivered());
  backend_->Stop();  // the reader has finished: the counters are final
  MockBackendStats stats = backend_->stats();
  EXPECT_EQ(stats.batches_received, 2u);
  EXPECT_EQ(stats.batches_refused, 2u);
  EXPECT_EQ(stats.messages_delivered, 6u);
  EXPECT_THAT(Logs(), ::testing::Contains(HasSubstr("before `attached`")));
  EXPECT_THAT(Logs(), ::testing::Contains(HasSubstr("empty control batch")));
  EXPECT_THAT(Logs(), ::testing::Contains(HasSubstr("batch of 257 messages")));
}

// ---------------------------------------------------------------------------------------------
// Against a fake stream whose writes can be held back (to queue posts deterministically)
// ---------------------------------------------------------------------------------------------

// The host end of a FakeStream: what the guest wrote, what it will read, and a gate that
// holds every write after the attach while closed.
struct FakeLink {
  Mutex mu;
  CondVar cv;
  std::deque<v1::HostToGuest> to_guest ABSL_GUARDED_BY(mu);
  std::vector<v1::GuestToHost> from_guest ABSL_GUARDED_BY(mu);
  bool gate_open ABSL_GUARDED_BY(mu) = true;
  int held_writes ABSL_GUARDED_BY(mu) = 0;
  bool closed ABSL_GUARDED_BY(mu) = false;

  void SetGate(bool open) {
    MutexLock lock(&mu);
    gate_open = open;
    cv.SignalAll();
  }
  bool WaitFor(const std::function<bool()>& pred) {
    MutexLock lock(&mu);
    return cv.AwaitWithDeadline(&mu, Deadline(), pred);
  }
  std::vector<v1::GuestToHost> written() {
    MutexLock lock(&mu);
    return from_guest;
  }
};

class FakeStream final : public GuestLinkStream {
 public:
  explicit FakeStream(std::shared_ptr<FakeLink> link) : link_(std::move(link)) {}
  void WaitForInitialMetadata() override {}
  bool NextMessageSize(uint32_t* size) override {
    *size = UINT32_MAX;
    return true;
  }
  bool Read(grpc::ByteBuffer* bytes) override {
    MutexLock lock(&link_->mu);
    link_->cv.AwaitWithDeadline(&link_->mu, Deadline(),
                                [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu) {
                                  return !link_->to_guest.empty() || link_->closed;
                                });
    if (link_->to_guest.empty()) return false;
    grpc::Slice slice(link_->to_guest.front().SerializeAsString());
    *bytes = grpc::ByteBuffer(&slice, 1);
    link_->to_guest.pop_front();
    return true;
  }
  bool Write(const v1::GuestToHost& message, grpc::WriteOptions) override {
    MutexLock lock(&link_->mu);
    if (!message.has_attach()) {
      ++link_->held_writes;
      link_->cv.SignalAll();
      link_->cv.AwaitWithDeadline(&link_->mu, Deadline(),
                                  [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu) {
                                    return link_->gate_open || link_->closed;
                                  });
      --link_->held_writes;
    }
    if (link_->closed) return false;
    link_->from_guest.push_back(message);
    link_->cv.SignalAll();
    return true;
  }
  bool WritesDone() override {
    MutexLock lock(&link_->mu);
    link_->closed = true;
    link_->cv.SignalAll();
    return true;
  }
  grpc::Status Finish() override { return grpc::Status::OK; }

 private:
  std::shared_ptr<FakeLink> link_;
};

// Opens FakeStreams on `link`.
GuestLinkOpener FakeOpener(std::shared_ptr<FakeLink> link) {
  return [link](grpc::ClientContext*) { return std::make_unique<FakeStream>(link); };
}

v1::ControlMessage Released(uint32_t relid) {
  v1::ControlMessage m;
  m.mutable_relid_released()->set_child_relid(relid);
  return m;
}

class MockBackendFakeStreamTest : public ::testing::Test {
 protected:
  // Starts a backend on a FakeLink whose `attached` says `host_batches`.
  void StartBackend(bool host_batches) {
    v1::HostToGuest attached;
    attached.mutable_attached()->set_guest_id("guest-3");
    attached.mutable_attached()->set_accepts_batches(host_batches);
    {
      MutexLock lock(&link_->mu);
      link_->to_guest.push_back(attached);
    }
    MockBackendOptions options;
    options.memory_bytes = 1 << 20;
    options.log = [](absl::string_view) {};
    auto backend = MockBackend::Create(FakeOpener(link_), options);
    ASSERT_TRUE(backend.ok());
    backend_ = std::move(*backend);
    ASSERT_TRUE(backend_->Start(&recorder_).ok());
  }
  void TearDown() override {
    link_->SetGate(true);
    if (backend_) backend_->Stop();
  }
  // Holds the writer inside the write of one first message, then posts `messages` behind it
  // and lets everything go; returns what reached the host after the attach.
  std::vector<v1::GuestToHost> PostBehindAHeldWrite(const std::vector<v1::ControlMessage>& later) {
    link_->SetGate(false);
    EXPECT_TRUE(backend_->PostMessage(Released(1)).ok());
    EXPECT_TRUE(link_->WaitFor(
        [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu) { return link_->held_writes == 1; }));
    for (const v1::ControlMessage& m : later) EXPECT_TRUE(backend_->PostMessage(m).ok());
    link_->SetGate(true);
    // Wait until every posted message has reached the host (counting a batch's members), then
    // stop the backend so its counters are final.
    const size_t total = 1 + later.size();
    EXPECT_TRUE(link_->WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu) {
      size_t seen = 0;
      for (const v1::GuestToHost& m : link_->from_guest) {
        if (m.has_batch()) seen += static_cast<size_t>(m.batch().messages_size());
        if (m.has_control()) ++seen;
      }
      return seen == total;
    }));
    backend_->Stop();
    EXPECT_EQ(backend_->stats().messages_posted, total);
    std::vector<v1::GuestToHost> written = link_->written();
    EXPECT_FALSE(written.empty());
    if (written.empty()) return {};
    EXPECT_TRUE(written[0].attach().accepts_batches());
    written.erase(written.begin());
    return written;
  }

  std::shared_ptr<FakeLink> link_ = std::make_shared<FakeLink>();
  Recorder recorder_;
  std::unique_ptr<MockBackend> backend_;
};

TEST_F(MockBackendFakeStreamTest, PostsQueuedTogetherLeaveAsBatchesInOrder) {
  StartBackend(/*host_batches=*/true);
  std::vector<v1::ControlMessage> later;
  for (uint32_t relid = 2; relid <= 301; ++relid) later.push_back(Released(relid));
  std::vector<v1::GuestToHost> w = PostBehindAHeldWrite(later);
  // The held one alone, then the 300 queued behind it as a full batch and the rest.
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].control().relid_released().child_relid(), 1u);
  ASSERT_EQ(w[1].batch().messages_size(), v1::CONTROL_BATCH_MAX_MESSAGES);
  ASSERT_EQ(w[2].batch().messages_size(), 300 - v1::CONTROL_BATCH_MAX_MESSAGES);
  uint32_t next = 2;
  for (int b = 1; b <= 2; ++b) {
    for (const v1::ControlMessage& m : w[b].batch().messages()) {
      EXPECT_EQ(m.relid_released().child_relid(), next++);
    }
  }
  EXPECT_EQ(backend_->stats().batches_posted, 2u);
}

TEST_F(MockBackendFakeStreamTest, WithoutHostBatchesPostsGoAlone) {
  StartBackend(/*host_batches=*/false);
  std::vector<v1::ControlMessage> later;
  for (uint32_t relid = 2; relid <= 40; ++relid) later.push_back(Released(relid));
  std::vector<v1::GuestToHost> w = PostBehindAHeldWrite(later);
  ASSERT_EQ(w.size(), 40u);
  for (size_t i = 0; i < w.size(); ++i) {
    ASSERT_TRUE(w[i].has_control()) << i;
    EXPECT_EQ(w[i].control().relid_released().child_relid(), i + 1);
  }
  EXPECT_EQ(backend_->stats().batches_posted, 0u);
}

TEST_F(MockBackendFakeStreamTest, BatchesStopGrowingAtAboutAMebibyte) {
  StartBackend(/*host_batches=*/true);
  // Three GPADLs of 100,000 pages: ~600 kB each on the wire.
  v1::ControlMessage big;
  v1::GpadlCreate* gpadl = big.mutable_gpadl_create();
  gpadl->set_child_relid(3);
  for (uint64_t i = 0; i < 100000; ++i) gpadl->add_pfns((uint64_t{1} << 40) + i);
  ASSERT_GT(big.ByteSizeLong(), 500000u);
  std::vector<v1::GuestToHost> w = PostBehindAHeldWrite({big, big, big});
  // Two fill a batch past 1 MiB; the third goes alone.
  ASSERT_EQ(w.size(), 3u);
  EXPECT_TRUE(w[0].has_control());
  ASSERT_EQ(w[1].batch().messages_size(), 2);
  EXPECT_EQ(w[1].batch().messages(1).gpadl_create().pfns_size(), 100000);
  ASSERT_TRUE(w[2].has_control());
  EXPECT_EQ(w[2].control().gpadl_create().pfns_size(), 100000);
}

// The opener is the seam that lets a test replace the transport entirely.
TEST(MockBackendOpenerTest, AnOpenerWithoutAStreamIsUnavailable) {
  MockBackendOptions options;
  options.memory_bytes = 1 << 20;
  auto backend = MockBackend::Create([](grpc::ClientContext*) { return nullptr; }, options);
  ASSERT_TRUE(backend.ok());
  Recorder recorder;
  EXPECT_EQ((*backend)->Start(&recorder).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(MockBackend::Create(nullptr, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MockBackend::Connect(nullptr, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vbus::mock
