// MockHostServer in-process on a loopback port: real gRPC, real shared memory, real doorbell
// threads. Raw test guests (mock/testing/raw_guest_client.h) drive GuestLink; the generated
// HostControl stub drives the rest.
#include "mock/host/mock_host.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/data/protocol.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "mock/host/sub_channel_request.h"
#include "mock/testing/raw_guest_client.h"

namespace vbus::mock {
namespace {

using testing::GuestRings;
using ::testing::HasSubstr;
using testing::RawGuestClient;
using testing::ReceivedPacket;
using ::testing::SizeIs;

constexpr uint64_t kMemory = 4 << 20;

absl::Time Deadline() { return absl::Now() + absl::Seconds(20); }

std::chrono::system_clock::time_point RpcDeadline() {
  return absl::ToChronoTime(absl::Now() + absl::Seconds(20));
}

std::vector<uint8_t> Padded(std::vector<uint8_t> b) {
  b.resize((b.size() + 7) / 8 * 8, 0);
  return b;
}

class MockHostTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({"echo"}); }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  void Start(const std::vector<std::string>& default_offers) {
    MockHostOptions options;
    for (const std::string& kind : default_offers) {
      options.engine.default_offers.emplace_back().set_device(kind);
    }
    options.log = [this](absl::string_view line) {
      MutexLock lock(&log_mu_);
      log_.emplace_back(line);
    };
    auto server = MockHostServer::Start(std::move(options), "127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials());
    control_ = v1::HostControl::NewStub(channel_);
  }

  std::unique_ptr<RawGuestClient> AttachGuest(const std::string& name) {
    auto guest = RawGuestClient::Attach(channel_, name, kMemory, Deadline());
    EXPECT_TRUE(guest.ok()) << guest.status();
    return guest.ok() ? std::move(*guest) : nullptr;
  }

  v1::ListGuestsResponse ListGuests() {
    grpc::ClientContext ctx;
    ctx.set_deadline(RpcDeadline());
    v1::ListGuestsResponse r;
    grpc::Status s = control_->ListGuests(&ctx, {}, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r;
  }

  v1::ChannelInfo ChannelOf(const std::string& guest, uint32_t relid) {
    grpc::ClientContext ctx;
    ctx.set_deadline(RpcDeadline());
    v1::ListChannelsRequest req;
    req.set_guest(guest);
    v1::ListChannelsResponse r;
    grpc::Status s = control_->ListChannels(&ctx, req, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (const auto& c : r.channels()) {
      if (c.child_relid() == relid) return c;
    }
    ADD_FAILURE() << "no relid " << relid;
    return {};
  }

  // A WatchEvents stream that is registered when this returns (initial metadata received).
  struct EventWatch {
    std::unique_ptr<grpc::ClientContext> ctx = std::make_unique<grpc::ClientContext>();
    std::unique_ptr<grpc::ClientReader<v1::ProtocolEvent>> reader;
    // Reads until an event satisfying `pred` arrives; false if the stream ends first.
    template <typename Pred>
    bool ReadUntil(Pred pred, v1::ProtocolEvent* out = nullptr) {
      v1::ProtocolEvent e;
      while (reader->Read(&e)) {
        if (pred(e)) {
          if (out != nullptr) *out = e;
          return true;
        }
      }
      return false;
    }
  };
  EventWatch WatchEvents(const std::string& text_request) {
    EventWatch w;
    v1::WatchEventsRequest req;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text_request, &req));
    w.ctx->set_deadline(RpcDeadline());
    w.reader = control_->WatchEvents(w.ctx.get(), req);
    w.reader->WaitForInitialMetadata();
    return w;
  }

  grpc::Status Call(const std::string& method, const std::string& text_request) {
    grpc::ClientContext ctx;
    ctx.set_deadline(RpcDeadline());
    if (method == "InjectFault") {
      v1::InjectFaultRequest req;
      EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text_request, &req));
      v1::InjectFaultResponse r;
      return control_->InjectFault(&ctx, req, &r);
    }
    ADD_FAILURE() << method;
    return grpc::Status::CANCELLED;
  }

  std::unique_ptr<MockHostServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::HostControl::Stub> control_;
  Mutex log_mu_;
  std::vector<std::string> log_ ABSL_GUARDED_BY(log_mu_);
};

TEST_F(MockHostTest, AttachListAndDetachOnDisconnect) {
  EventWatch watch = WatchEvents("kinds: EVENT_KIND_GUEST_DETACHED");
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm-1");
  ASSERT_NE(guest, nullptr);
  EXPECT_EQ(guest->guest_id(), "guest-1");
  v1::ListGuestsResponse list = ListGuests();
  ASSERT_THAT(list.guests(), SizeIs(1));
  EXPECT_EQ(list.guests(0).guest_name(), "vm-1");
  EXPECT_EQ(list.guests(0).memory_path(), guest->memory().path());
  EXPECT_EQ(list.guests(0).channel_count(), 1u);  // the default echo offer
  guest.reset();                                  // cancels the stream
  v1::ProtocolEvent detached;
  ASSERT_TRUE(watch.ReadUntil([](const auto&) { return true; }, &detached));
  EXPECT_EQ(detached.guest_id(), "guest-1");
  EXPECT_THAT(ListGuests().guests(), SizeIs(0));
  MutexLock lock(&log_mu_);
  ASSERT_THAT(log_, SizeIs(2));
  EXPECT_THAT(log_[0], HasSubstr("guest-1 attached"));
  EXPECT_THAT(log_[1], HasSubstr("guest-1 detached"));
}

TEST_F(MockHostTest, RefusedAttaches) {
  // The first message is not an attach.
  auto memory = GuestMemory::Create("", kMemory);
  ASSERT_TRUE(memory.ok());
  v1::GuestToHost control;
  control.mutable_control()->mutable_request_offers();
  auto r = RawGuestClient::AttachWith(channel_, std::move(*memory), control, Deadline());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();

  // The memory file does not exist / has another size.
  memory = GuestMemory::Create("", kMemory);
  ASSERT_TRUE(memory.ok());
  v1::GuestToHost attach;
  attach.mutable_attach()->set_guest_name("vm");
  attach.mutable_attach()->set_memory_path("/dev/shm/vbus-no-such-file");
  attach.mutable_attach()->set_memory_size_bytes(kMemory);
  *attach.mutable_attach()->mutable_layout() = LayoutToProto({});
  r = RawGuestClient::AttachWith(channel_, std::move(*memory), attach, Deadline());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  memory = GuestMemory::Create("", kMemory);
  ASSERT_TRUE(memory.ok());
  attach.mutable_attach()->set_memory_path((*memory)->path());
  attach.mutable_attach()->set_memory_size_bytes(2 * kMemory);
  r = RawGuestClient::AttachWith(channel_, std::move(*memory), attach, Deadline());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();

  // A name already attached.
  std::unique_ptr<RawGuestClient> first = AttachGuest("taken");
  auto second = RawGuestClient::Attach(channel_, "taken", kMemory, Deadline());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists) << second.status();
  EXPECT_THAT(ListGuests().guests(), SizeIs(1));
}

TEST_F(MockHostTest, EchoThroughRingsAndDoorbells) {
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  auto offers = guest->Connect(protocol::kVersion5_3, Deadline());
  ASSERT_TRUE(offers.ok()) << offers.status();
  ASSERT_THAT(*offers, SizeIs(1));
  const uint32_t relid = (*offers)[0].child_relid();
  auto rings = guest->OpenChannel(relid, 8, 8, Deadline());
  ASSERT_TRUE(rings.ok()) << rings.status();
  constexpr int kPackets = 2000;
  for (int i = 0; i < kPackets; ++i) {
    std::vector<uint8_t> b(static_cast<size_t>(1 + (i * 131) % 4000));
    for (size_t j = 0; j < b.size(); ++j) b[j] = static_cast<uint8_t>(i * 7 + j);
    const uint16_t flags = i % 3 == 0 ? kCompletionRequested : 0;
    ASSERT_TRUE(
        (*rings)
            ->SendWaiting(PacketType::kDataInband, flags, static_cast<uint64_t>(i), b, Deadline())
            .ok());
    absl::StatusOr<ReceivedPacket> p = (*rings)->WaitForPacket(Deadline());
    ASSERT_TRUE(p.ok()) << i << ": " << p.status();
    ASSERT_EQ(p->trans_id, static_cast<uint64_t>(i));
    ASSERT_EQ(p->type, flags != 0 ? 11 : 6);
    ASSERT_EQ(p->payload, Padded(b)) << i;
  }
  v1::ChannelInfo info = ChannelOf("vm", relid);
  EXPECT_EQ(info.state(), v1::CHANNEL_STATE_OPEN);
  EXPECT_EQ(info.packets_from_guest(), static_cast<uint64_t>(kPackets));
  EXPECT_EQ(info.packets_to_guest(), static_cast<uint64_t>(kPackets));
  EXPECT_GT(info.signals_from_guest(), 0u);
  EXPECT_GT(info.signals_to_guest(), 0u);
}

TEST_F(MockHostTest, RawChannelSendPacketAndWatchPackets) {
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  ASSERT_TRUE(guest->Connect(protocol::kVersion5_3, Deadline()).ok());
  // Hot-add a raw channel.
  v1::OfferRequest offer;
  offer.mutable_spec()->set_device("raw");
  v1::OfferResponse offered;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(RpcDeadline());
    ASSERT_TRUE(control_->Offer(&ctx, offer, &offered).ok());
  }
  auto hot = guest->ReceiveControl(Deadline());
  ASSERT_TRUE(hot.ok()) << hot.status();
  ASSERT_EQ(hot->offer().child_relid(), offered.child_relid());
  const uint32_t relid = offered.child_relid();

  // SendPacket into a channel that is not open yet.
  v1::SendPacketRequest send;
  send.set_child_relid(relid);
  send.set_payload("from the host");
  send.set_transaction_id(99);
  v1::SendPacketResponse sent;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(RpcDeadline());
    EXPECT_EQ(control_->SendPacket(&ctx, send, &sent).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  auto rings = guest->OpenChannel(relid, 4, 4, Deadline());
  ASSERT_TRUE(rings.ok()) << rings.status();
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(RpcDeadline());
    ASSERT_TRUE(control_->SendPacket(&ctx, send, &sent).ok());
    EXPECT_TRUE(sent.signalled());
  }
  absl::StatusOr<ReceivedPacket> p = (*rings)->WaitForPacket(Deadline());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->trans_id, 99u);
  EXPECT_EQ(std::string(p->payload.begin(), p->payload.begin() + 13), "from the host");

  // What the guest writes reaches a WatchPackets stream.
  grpc::ClientContext watch_ctx;
  watch_ctx.set_deadline(RpcDeadline());
  v1::WatchPacketsRequest watch;
  watch.set_guest("vm");
  watch.set_child_relid(relid);
  auto reader = control_->WatchPackets(&watch_ctx, watch);
  reader->WaitForInitialMetadata();
  const std::vector<uint8_t> hello = {'h', 'i', '!', 0, 0, 0, 0, 0};
  ASSERT_TRUE((*rings)->Send(PacketType::kDataInband, 0, 5, hello).ok());
  v1::GuestPacket packet;
  ASSERT_TRUE(reader->Read(&packet));
  EXPECT_EQ(packet.guest_id(), guest->guest_id());
  EXPECT_EQ(packet.child_relid(), relid);
  EXPECT_EQ(packet.type(), 6u);
  EXPECT_EQ(packet.transaction_id(), 5u);
  EXPECT_EQ(packet.payload(), std::string("hi!\0\0\0\0\0", 8));
}

TEST_F(MockHostTest, ProtocolErrorsTravelOnTheStream) {
  EventWatch watch = WatchEvents("kinds: EVENT_KIND_ERROR");
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  v1::ControlMessage early;
  early.mutable_request_offers();
  ASSERT_TRUE(guest->Send(early).ok());
  absl::StatusOr<v1::HostToGuest> m = guest->Receive(Deadline());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  v1::ProtocolEvent e;
  ASSERT_TRUE(watch.ReadUntil([](const auto&) { return true; }, &e));
  EXPECT_THAT(e.detail(), HasSubstr("before a successful InitiateContact"));
  // The guest carries on.
  EXPECT_TRUE(guest->Connect(protocol::kVersion5_3, Deadline()).ok());
}

TEST_F(MockHostTest, WatchEventsFiltersByKindAndRelid) {
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  ASSERT_TRUE(guest->Connect(protocol::kVersion5_3, Deadline()).ok());
  EventWatch watch = WatchEvents("guest: 'vm' kinds: EVENT_KIND_CHANNEL_OPENED child_relid: 1");
  auto rings = guest->OpenChannel(1, 4, 4, Deadline());
  ASSERT_TRUE(rings.ok()) << rings.status();
  v1::ProtocolEvent e;
  ASSERT_TRUE(watch.reader->Read(&e));
  EXPECT_EQ(e.kind(), v1::EVENT_KIND_CHANNEL_OPENED);
  EXPECT_EQ(e.child_relid(), 1u);
  EXPECT_GT(e.sequence(), 0u);
  EXPECT_THAT(e.detail(), HasSubstr("echo on GPADL 0xe1e10"));

  grpc::ClientContext ctx;
  ctx.set_deadline(RpcDeadline());
  v1::WatchEventsRequest bad;
  bad.add_kinds(static_cast<v1::EventKind>(77));
  auto reader = control_->WatchEvents(&ctx, bad);
  v1::ProtocolEvent ignored;
  EXPECT_FALSE(reader->Read(&ignored));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(MockHostTest, DisconnectFault) {
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  ASSERT_TRUE(guest->Connect(protocol::kVersion5_3, Deadline()).ok());
  ASSERT_TRUE(guest->OpenChannel(1, 4, 4, Deadline()).ok());
  ASSERT_TRUE(Call("InjectFault", "guest: 'vm' disconnect: true").ok());
  absl::StatusOr<grpc::Status> end = guest->WaitForEnd(Deadline());
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(end->error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(end->error_message(), HasSubstr("injected fault"));
  EXPECT_THAT(ListGuests().guests(), SizeIs(0));
}

TEST_F(MockHostTest, DelayFaultIsReleasedByTheTimer) {
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  ASSERT_TRUE(Call("InjectFault",
                   "guest: 'vm' message { message_type: 'version_response' action: ACTION_DELAY "
                   "delay_ms: 50 }")
                  .ok());
  const absl::Time sent = absl::Now();
  auto offers = guest->Connect(protocol::kVersion5_3, Deadline());
  ASSERT_TRUE(offers.ok()) << offers.status();
  EXPECT_GE(absl::Now() - sent, absl::Milliseconds(50));
}

// InjectFault{ring} over gRPC: carried out on the guest's data plane, its result in the
// response, a FAULT_FIRED event published; refused for channels that are not open.
TEST_F(MockHostTest, RingFaultsActOnOpenChannelsOnly) {
  EventWatch fired = WatchEvents("kinds: EVENT_KIND_FAULT_FIRED");
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  ASSERT_TRUE(guest->Connect(protocol::kVersion5_3, Deadline()).ok());
  EXPECT_EQ(
      Call("InjectFault", "guest: 'vm' ring { child_relid: 1 reading: READING_STOP }").error_code(),
      grpc::StatusCode::FAILED_PRECONDITION);  // offered, not open
  EXPECT_EQ(
      Call("InjectFault", "guest: 'vm' ring { child_relid: 9 reading: READING_STOP }").error_code(),
      grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Call("InjectFault", "guest: 'nobody' ring { event_storm { relids: 5 } }").error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Call("InjectFault", "guest: 'vm' ring { child_relid: 1 }").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  auto rings = guest->OpenChannel(1, 4, 4, Deadline());
  ASSERT_TRUE(rings.ok()) << rings.status();
  grpc::ClientContext ctx;
  ctx.set_deadline(RpcDeadline());
  v1::InjectFaultRequest req;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      "guest: 'vm' ring { child_relid: 1 field_write { ring: RING_INBOUND field: "
      "FIELD_WRITE_INDEX add: 4 signal: true } }",
      &req));
  v1::InjectFaultResponse response;
  grpc::Status s = control_->InjectFault(&ctx, req, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.ring().data_size(), 3 * protocol::kPageSize);
  EXPECT_EQ(response.ring().value_after(), 4u);
  EXPECT_EQ((*rings)->inbound_control()->write_index, 4u);
  v1::ProtocolEvent e;
  ASSERT_TRUE(fired.ReadUntil([](const auto&) { return true; }, &e));
  EXPECT_EQ(e.child_relid(), 1u);
  EXPECT_THAT(e.detail(), HasSubstr("FIELD_WRITE_INDEX of RING_INBOUND"));
  // The guest's reader refuses the misaligned index it was signalled for.
  absl::StatusOr<ReceivedPacket> p = (*rings)->WaitForPacket(Deadline());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(p.status().message(), HasSubstr("write_index 4 is not 8-byte aligned"));
}

TEST_F(MockHostTest, SlowPathSignalDrainsTheChannel) {
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  ASSERT_TRUE(guest->Connect(protocol::kVersion5_3, Deadline()).ok());
  auto rings = guest->OpenChannel(1, 4, 4, Deadline());
  ASSERT_TRUE(rings.ok());
  (*rings)->outbound_control()->interrupt_mask = 1;  // the ring says: do not signal
  ASSERT_FALSE(*(*rings)->Send(PacketType::kDataInband, 0, 3, std::vector<uint8_t>(8, 1)));
  v1::GuestToHost signal;
  signal.mutable_signal()->set_child_relid(1);
  ASSERT_TRUE(guest->SendRaw(signal).ok());
  absl::StatusOr<ReceivedPacket> p = (*rings)->WaitForPacket(Deadline());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->trans_id, 3u);
}

// A guest driver asks its open echo primary for sub-channels (mock/host/sub_channel_request.h):
// the device answers, then the host hot-adds them on the control stream.
TEST_F(MockHostTest, EchoSubChannelRequestHotAddsTheSubChannels) {
  EventWatch errors = WatchEvents("kinds: EVENT_KIND_ERROR");
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  auto offers = guest->Connect(protocol::kVersion5_3, Deadline());
  ASSERT_TRUE(offers.ok()) << offers.status();
  ASSERT_THAT(*offers, SizeIs(1));
  const v1::Offer primary = (*offers)[0];
  auto rings = guest->OpenChannel(primary.child_relid(), 4, 4, Deadline());
  ASSERT_TRUE(rings.ok()) << rings.status();
  ASSERT_TRUE(
      (*rings)
          ->Send(PacketType::kDataInband, kCompletionRequested, 21, EncodeSubChannelRequest(3))
          .ok());
  absl::StatusOr<ReceivedPacket> answer = (*rings)->WaitForPacket(Deadline());
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->type, static_cast<uint16_t>(PacketType::kCompletion));
  EXPECT_EQ(answer->trans_id, 21u);
  absl::StatusOr<SubChannelAnswer> parsed = ParseSubChannelAnswer(answer->payload);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->status, 0u);
  EXPECT_EQ(parsed->count, 3u);
  std::vector<uint32_t> sub_relids;
  for (uint32_t index = 1; index <= 3; ++index) {
    absl::StatusOr<v1::ControlMessage> m = guest->ReceiveControl(Deadline());
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_TRUE(m->has_offer()) << m->ShortDebugString();
    EXPECT_EQ(m->offer().sub_channel_index(), index);
    EXPECT_EQ(m->offer().interface_type().value(), primary.interface_type().value());
    EXPECT_EQ(m->offer().interface_instance().value(), primary.interface_instance().value());
    sub_relids.push_back(m->offer().child_relid());
  }
  EXPECT_EQ(ChannelOf("vm", sub_relids[2]).sub_channel_index(), 3u);

  // A sub-channel is no primary: its echo takes the request, the host reports the refusal.
  auto sub_rings = guest->OpenChannel(sub_relids[0], 4, 4, Deadline());
  ASSERT_TRUE(sub_rings.ok()) << sub_rings.status();
  ASSERT_TRUE((*sub_rings)->Send(PacketType::kDataInband, 0, 22, EncodeSubChannelRequest(1)).ok());
  ASSERT_TRUE((*sub_rings)->WaitForPacket(Deadline()).ok());
  v1::ProtocolEvent error;
  ASSERT_TRUE(errors.ReadUntil([](const auto&) { return true; }, &error));
  EXPECT_EQ(error.child_relid(), sub_relids[0]);
  EXPECT_THAT(error.detail(), HasSubstr("not a primary"));
}

// Requests still queued when the host shuts down are dropped: no hang, no crash.
TEST_F(MockHostTest, ShutdownWithSubChannelRequestsQueued) {
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  ASSERT_TRUE(guest->Connect(protocol::kVersion5_3, Deadline()).ok());
  auto rings = guest->OpenChannel(1, 8, 8, Deadline());
  ASSERT_TRUE(rings.ok()) << rings.status();
  for (uint64_t i = 0; i < 20; ++i) {
    ASSERT_TRUE((*rings)->Send(PacketType::kDataInband, 0, i, EncodeSubChannelRequest(64)).ok());
  }
  server_->Shutdown();
  absl::StatusOr<grpc::Status> end = guest->WaitForEnd(Deadline());
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(end->error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(MockHostTest, MonitoredChannelIsScannedAtTheConfiguredLatency) {
  grpc::ClientContext ctx;
  ctx.set_deadline(RpcDeadline());
  v1::ConfigureRequest configure;
  configure.mutable_settings()->set_monitor_latency_us(200);
  v1::HostSettings settings;
  ASSERT_TRUE(control_->Configure(&ctx, configure, &settings).ok());
  EXPECT_EQ(settings.monitor_latency_us(), 200u);
  EXPECT_EQ(settings.max_version(), protocol::kVersion5_3);

  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  v1::OfferRequest offer;
  offer.mutable_spec()->set_device("echo");
  offer.mutable_spec()->set_monitored(true);
  v1::OfferResponse offered;
  grpc::ClientContext offer_ctx;
  offer_ctx.set_deadline(RpcDeadline());
  ASSERT_TRUE(control_->Offer(&offer_ctx, offer, &offered).ok());
  auto offers = guest->Connect(protocol::kVersion5_3, Deadline());
  ASSERT_TRUE(offers.ok());
  ASSERT_THAT(*offers, SizeIs(2));
  ASSERT_TRUE((*offers)[1].monitor_allocated());
  auto rings = guest->OpenChannel(offered.child_relid(), 4, 4, Deadline());
  ASSERT_TRUE(rings.ok());
  (*rings)->outbound_control()->interrupt_mask = 1;  // no event bit, no doorbell
  ASSERT_FALSE(*(*rings)->Send(PacketType::kDataInband, 0, 8, std::vector<uint8_t>(8, 2)));
  ASSERT_TRUE(guest->memory().SignalChannel(offered.child_relid(), (*offers)[1].monitor_id()).ok());
  absl::StatusOr<ReceivedPacket> p = (*rings)->WaitForPacket(Deadline());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->trans_id, 8u);
}

TEST_F(MockHostTest, RescindWhileOpenOverGrpc) {
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  ASSERT_TRUE(guest->Connect(protocol::kVersion5_3, Deadline()).ok());
  auto rings = guest->OpenChannel(1, 4, 4, Deadline());
  ASSERT_TRUE(rings.ok());
  grpc::ClientContext ctx;
  ctx.set_deadline(RpcDeadline());
  v1::RescindRequest rescind;
  rescind.set_child_relid(1);
  v1::RescindResponse rescinded;
  ASSERT_TRUE(control_->Rescind(&ctx, rescind, &rescinded).ok());
  auto m = guest->ReceiveControl(Deadline());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->rescind_offer().child_relid(), 1u);
  EXPECT_EQ(ChannelOf("vm", 1).state(), v1::CHANNEL_STATE_RESCINDED);
  // The host no longer reads the rings: a packet now stays unanswered (and causes no error).
  ASSERT_TRUE((*rings)->Send(PacketType::kDataInband, 0, 1, std::vector<uint8_t>(8)).ok());
  // The release travels on the guest's stream, the rescind below on another call: wait until
  // the host has handled the release (its GUEST_MESSAGE event) before rescinding again.
  EventWatch watch = WatchEvents("kinds: EVENT_KIND_GUEST_MESSAGE");
  v1::ControlMessage release;
  release.mutable_relid_released()->set_child_relid(1);
  ASSERT_TRUE(guest->Send(release).ok());
  ASSERT_TRUE(
      watch.ReadUntil([](const v1::ProtocolEvent& e) { return e.message().has_relid_released(); }));
  // Errors for unknown relids and guests, with gRPC codes.
  grpc::ClientContext ctx2;
  ctx2.set_deadline(RpcDeadline());
  EXPECT_EQ(control_->Rescind(&ctx2, rescind, &rescinded).error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext ctx3;
  ctx3.set_deadline(RpcDeadline());
  rescind.set_guest("nobody");
  EXPECT_EQ(control_->Rescind(&ctx3, rescind, &rescinded).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(MockHostTest, ShutdownEndsGuestsAndWatches) {
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  ASSERT_TRUE(guest->Connect(protocol::kVersion5_3, Deadline()).ok());
  ASSERT_TRUE(guest->OpenChannel(1, 4, 4, Deadline()).ok());
  EventWatch watch = WatchEvents("");
  server_->Shutdown();
  absl::StatusOr<grpc::Status> end = guest->WaitForEnd(Deadline());
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(end->error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_FALSE(watch.ReadUntil([](const auto&) { return false; }));
  EXPECT_EQ(watch.reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

// --- Control batches ------------------------------------------------------------------------

v1::ControlMessage ContactMsg() {
  v1::ControlMessage m;
  m.mutable_initiate_contact()->set_version_requested(protocol::kVersion5_3);
  return m;
}

v1::ControlMessage RequestOffersMsg() {
  v1::ControlMessage m;
  m.mutable_request_offers();
  return m;
}

v1::GuestToHost Batch(const std::vector<v1::ControlMessage>& messages) {
  v1::GuestToHost out;
  v1::ControlBatch* batch = out.mutable_batch();
  for (const v1::ControlMessage& m : messages) *batch->add_messages() = m;
  return out;
}

// A raw guest whose Attach says it accepts batches.
std::unique_ptr<RawGuestClient> AttachBatchingGuest(std::shared_ptr<grpc::Channel> channel,
                                                    const std::string& name) {
  auto memory = GuestMemory::Create("", kMemory);
  EXPECT_TRUE(memory.ok()) << memory.status();
  if (!memory.ok()) return nullptr;
  v1::GuestToHost attach;
  v1::Attach* a = attach.mutable_attach();
  a->set_guest_name(name);
  a->set_memory_path((*memory)->path());
  a->set_memory_size_bytes(kMemory);
  *a->mutable_layout() = LayoutToProto((*memory)->layout());
  a->set_accepts_batches(true);
  auto guest = RawGuestClient::AttachWith(channel, std::move(*memory), attach, Deadline());
  EXPECT_TRUE(guest.ok()) << guest.status();
  return guest.ok() ? std::move(*guest) : nullptr;
}

TEST_F(MockHostTest, AGuestWithoutBatchesGetsSingleMessages) {
  // Raw guests, Python clients: they may send batches (the host accepts them) but did not ask
  // for any, so the answers come one by one, in order.
  std::unique_ptr<RawGuestClient> guest = AttachGuest("plain");
  ASSERT_NE(guest, nullptr);
  ASSERT_TRUE(guest->SendRaw(Batch({ContactMsg(), RequestOffersMsg()})).ok());
  std::vector<v1::HostToGuest> got;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<v1::HostToGuest> m = guest->Receive(Deadline());
    ASSERT_TRUE(m.ok()) << m.status();
    got.push_back(*m);
  }
  ASSERT_TRUE(got[0].has_control()) << got[0].ShortDebugString();
  EXPECT_TRUE(got[0].control().version_response().version_supported());
  ASSERT_TRUE(got[1].has_control()) << got[1].ShortDebugString();
  EXPECT_TRUE(got[1].control().has_offer());
  ASSERT_TRUE(got[2].has_control()) << got[2].ShortDebugString();
  EXPECT_TRUE(got[2].control().has_all_offers_delivered());
}

TEST_F(MockHostTest, AGuestWithBatchesGetsTheAnswersToOneMessageTogether) {
  // 300 offers held until the guest requests them: its one batch (contact + request) draws
  // 302 answers, which leave as a full batch of 256 and one of the other 46, in order.
  std::unique_ptr<RawGuestClient> guest = AttachBatchingGuest(channel_, "batching");
  ASSERT_NE(guest, nullptr);
  for (int i = 0; i < 299; ++i) {  // + the default echo offer = 300
    v1::OfferRequest offer;
    offer.set_guest("batching");
    offer.mutable_spec()->set_device("sink");
    ASSERT_TRUE(server_->host().Offer(offer).ok());
  }
  ASSERT_TRUE(guest->SendRaw(Batch({ContactMsg(), RequestOffersMsg()})).ok());
  absl::StatusOr<v1::HostToGuest> first = guest->Receive(Deadline());
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->has_batch()) << first->ShortDebugString();
  ASSERT_EQ(first->batch().messages_size(), v1::CONTROL_BATCH_MAX_MESSAGES);
  absl::StatusOr<v1::HostToGuest> second = guest->Receive(Deadline());
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(second->has_batch()) << second->ShortDebugString();
  ASSERT_EQ(second->batch().messages_size(), 302 - v1::CONTROL_BATCH_MAX_MESSAGES);
  std::vector<v1::ControlMessage> all(first->batch().messages().begin(),
                                      first->batch().messages().end());
  all.insert(all.end(), second->batch().messages().begin(), second->batch().messages().end());
  EXPECT_TRUE(all.front().version_response().version_supported());
  EXPECT_TRUE(all.back().has_all_offers_delivered());
  for (size_t i = 1; i + 1 < all.size(); ++i) {
    ASSERT_TRUE(all[i].has_offer()) << i;
    EXPECT_EQ(all[i].offer().child_relid(), i) << "offers in creation order";
  }
  // A later lone answer still goes alone.
  ASSERT_TRUE(guest->Send(ContactMsg()).ok());
  absl::StatusOr<v1::HostToGuest> refused = guest->Receive(Deadline());
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
}

TEST_F(MockHostTest, MalformedBatchesAreRefusedAndTheGuestStaysAttached) {
  std::unique_ptr<RawGuestClient> guest = AttachGuest("vm");
  ASSERT_NE(guest, nullptr);
  // Empty.
  ASSERT_TRUE(guest->SendRaw(Batch({})).ok());
  absl::StatusOr<v1::HostToGuest> m = guest->Receive(Deadline());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(m->error().message(), HasSubstr("empty control batch"));
  // Over-long: refused whole, none of its messages handled.
  ASSERT_TRUE(guest
                  ->SendRaw(Batch(std::vector<v1::ControlMessage>(
                      v1::CONTROL_BATCH_MAX_MESSAGES + 1, ContactMsg())))
                  .ok());
  m = guest->Receive(Deadline());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(m->error().message(), HasSubstr("exceeds the limit of 256"));
  // A bad member is refused alone; the others are handled in order.
  ASSERT_TRUE(guest->SendRaw(Batch({ContactMsg(), v1::ControlMessage(), RequestOffersMsg()})).ok());
  m = guest->Receive(Deadline());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->control().version_response().version_supported())
      << "the over-long batch's contacts were not handled: " << m->ShortDebugString();
  m = guest->Receive(Deadline());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  m = guest->Receive(Deadline());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->control().has_offer());
  m = guest->Receive(Deadline());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->control().has_all_offers_delivered());
  v1::ListGuestsResponse list = ListGuests();
  ASSERT_THAT(list.guests(), SizeIs(1));
  EXPECT_EQ(list.guests(0).state(), v1::GUEST_STATE_OFFERS_DELIVERED);
}

TEST(MockHostServerTest, StartFailuresAreStatuses) {
  MockHostOptions bad;
  bad.engine.default_offers.emplace_back().set_device("toaster");
  EXPECT_EQ(MockHostServer::Start(bad, "127.0.0.1:0").status().code(),
            absl::StatusCode::kInvalidArgument);
  MockHostOptions quiet;
  quiet.log = [](absl::string_view) {};
  EXPECT_EQ(MockHostServer::Start(quiet, "unix:/nonexistent-dir/x.sock").status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(MockHostServerTest, InProcessChannelServesBothServices) {
  auto server = MockHostServer::Start({}, "");
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->target(), "");
  auto channel = (*server)->InProcessChannel();
  auto guest = RawGuestClient::Attach(channel, "in-process", kMemory, Deadline());
  ASSERT_TRUE(guest.ok()) << guest.status();
  auto control = v1::HostControl::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(RpcDeadline());
  v1::ListGuestsResponse r;
  ASSERT_TRUE(control->ListGuests(&ctx, {}, &r).ok());
  ASSERT_THAT(r.guests(), SizeIs(1));
  EXPECT_EQ(r.guests(0).guest_name(), "in-process");
}

}  // namespace
}  // namespace vbus::mock
