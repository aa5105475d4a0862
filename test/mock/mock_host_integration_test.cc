// mock_host as a separate process: two raw test guests attach with real shared-memory files,
// open echo channels and move packets through the rings with futex doorbells (no RPC on the
// data path); every byte is checked. The second guest must not notice anything the first one
// does (traffic, a rescind, disconnecting).
//
// The binary comes in as the first argument: $(rootpath //mock:mock_host).
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "mock/guest_memory.h"
#include "mock/host/device_kinds.h"
#include "mock/testing/raw_guest_client.h"
#include "proto/mock_host.grpc.pb.h"
#include "test/mock/mock_host_process.h"

namespace vbus::mock {
namespace {

using testing::GuestRings;
using ::testing::HasSubstr;
using testing::MockHostProcess;
using testing::RawGuestClient;
using testing::ReceivedPacket;
using ::testing::SizeIs;

std::string g_binary;  // set by main from argv[1]

constexpr uint32_t k5_3 = 0x00050003;

absl::Time Deadline() { return absl::Now() + absl::Seconds(60); }

// The bytes of packet `i` of stream `seed`: sizes from 1 to 3000 bytes, contents that differ
// per packet and per stream.
std::vector<uint8_t> PacketBytes(uint32_t seed, uint32_t i) {
  std::vector<uint8_t> b(1 + (i * 2654435761u + seed) % 3000);
  uint32_t x = seed * 7919u + i * 104729u + 1;
  for (uint8_t& byte : b) {
    x = x * 1103515245u + 12345u;
    byte = static_cast<uint8_t>(x >> 16);
  }
  return b;
}

// Sends `count` packets and checks each echo; returns the first failure.
absl::Status Exchange(GuestRings& rings, uint32_t seed, uint32_t count) {
  for (uint32_t i = 0; i < count; ++i) {
    std::vector<uint8_t> sent = PacketBytes(seed, i);
    const uint16_t flags = i % 5 == 0 ? kCompletionRequested : 0;
    absl::StatusOr<bool> s = rings.SendWaiting(PacketType::kDataInband, flags,
                                               uint64_t{seed} << 32 | i, sent, Deadline());
    if (!s.ok())
      return absl::Status(s.status().code(), absl::StrCat("send ", i, ": ", s.status().message()));
    absl::StatusOr<ReceivedPacket> echo = rings.WaitForPacket(Deadline());
    if (!echo.ok()) {
      return absl::Status(echo.status().code(),
                          absl::StrCat("echo ", i, ": ", echo.status().message()));
    }
    sent.resize((sent.size() + 7) / 8 * 8, 0);
    if (echo->trans_id != (uint64_t{seed} << 32 | i)) {
      return absl::DataLossError(absl::StrCat("echo ", i, ": transaction id ", echo->trans_id));
    }
    if (echo->type != (flags != 0 ? 11 : 6)) {
      return absl::DataLossError(absl::StrCat("echo ", i, ": type ", echo->type));
    }
    if (echo->payload != sent) {
      return absl::DataLossError(absl::StrCat("echo ", i, ": the bytes differ"));
    }
  }
  return absl::OkStatus();
}

class MockHostIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(g_binary.empty()) << "pass $(rootpath //mock:mock_host) as the first argument";
    auto host = MockHostProcess::Start(g_binary, {"--offer=echo,echo"}, Deadline());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    channel_ = grpc::CreateChannel(host_->target(), grpc::InsecureChannelCredentials());
    control_ = v1::HostControl::NewStub(channel_);
  }

  v1::ListChannelsResponse Channels(const std::string& guest) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(Deadline()));
    v1::ListChannelsRequest req;
    req.set_guest(guest);
    v1::ListChannelsResponse r;
    grpc::Status s = control_->ListChannels(&ctx, req, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r;
  }

  std::unique_ptr<MockHostProcess> host_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::HostControl::Stub> control_;
};

TEST_F(MockHostIntegrationTest, TenThousandEchoPacketsWhileASecondGuestIsUnaffected) {
  auto a = RawGuestClient::Attach(channel_, "guest-a", 8 << 20, Deadline());
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = RawGuestClient::Attach(channel_, "guest-b", 8 << 20, Deadline());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE((*a)->memory().path(), (*b)->memory().path());

  auto offers_a = (*a)->Connect(k5_3, Deadline());
  auto offers_b = (*b)->Connect(k5_3, Deadline());
  ASSERT_TRUE(offers_a.ok() && offers_b.ok());
  ASSERT_THAT(*offers_a, SizeIs(2));
  ASSERT_THAT(*offers_b, SizeIs(2));
  // Each guest has its own relid space: both got relids 1 and 2.
  EXPECT_EQ((*offers_a)[0].child_relid(), (*offers_b)[0].child_relid());

  auto rings_a = (*a)->OpenChannel(1, 8, 8, Deadline());
  auto rings_a2 = (*a)->OpenChannel(2, 4, 4, Deadline());
  auto rings_b = (*b)->OpenChannel(1, 8, 8, Deadline());
  ASSERT_TRUE(rings_a.ok()) << rings_a.status();
  ASSERT_TRUE(rings_a2.ok()) << rings_a2.status();
  ASSERT_TRUE(rings_b.ok()) << rings_b.status();

  // Guest B runs its own traffic at the same time as guest A's 10,000 packets.
  absl::Status b_result;
  std::thread b_traffic([&] { b_result = Exchange(**rings_b, 2, 3000); });
  absl::Status a_result = Exchange(**rings_a, 1, 10000);
  b_traffic.join();
  ASSERT_TRUE(a_result.ok()) << a_result;
  ASSERT_TRUE(b_result.ok()) << b_result;

  v1::ListChannelsResponse channels_a = Channels("guest-a");
  ASSERT_THAT(channels_a.channels(), SizeIs(2));
  EXPECT_EQ(channels_a.channels(0).packets_from_guest(), 10000u);
  EXPECT_EQ(channels_a.channels(0).packets_to_guest(), 10000u);
  v1::ListChannelsResponse channels_b = Channels("guest-b");
  ASSERT_THAT(channels_b.channels(), SizeIs(2));
  EXPECT_EQ(channels_b.channels(0).packets_from_guest(), 3000u);

  // A's second channel is rescinded while open; then A disconnects. B carries on.
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(Deadline()));
  v1::RescindRequest rescind;
  rescind.set_guest("guest-a");
  rescind.set_child_relid(2);
  v1::RescindResponse rescinded;
  ASSERT_TRUE(control_->Rescind(&ctx, rescind, &rescinded).ok());
  auto m = (*a)->ReceiveControl(Deadline());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rescind_offer().child_relid(), 2u);
  a->reset();

  ASSERT_TRUE(Exchange(**rings_b, 3, 500).ok());
  channels_b = Channels("guest-b");
  for (const auto& c : channels_b.channels()) {
    EXPECT_NE(c.state(), v1::CHANNEL_STATE_RESCINDED) << c.ShortDebugString();
  }
  EXPECT_EQ(channels_b.channels(0).state(), v1::CHANNEL_STATE_OPEN);

  // Clean shutdown: B's stream ends with UNAVAILABLE, the process exits 0, and the log has one
  // line per attach and detach.
  absl::StatusOr<int> code = host_->Stop(Deadline());
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << host_->log();
  absl::StatusOr<grpc::Status> end = (*b)->WaitForEnd(Deadline());
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(end->error_code(), grpc::StatusCode::UNAVAILABLE);
  const std::string log = host_->log();
  EXPECT_THAT(log, HasSubstr("guest-1 attached: name \"guest-a\""));
  EXPECT_THAT(log, HasSubstr("guest-2 attached: name \"guest-b\""));
  EXPECT_THAT(log, HasSubstr("guest-1 detached"));
  EXPECT_THAT(log, HasSubstr("guest-2 detached"));
  EXPECT_THAT(log, HasSubstr("shutting down"));
}

TEST_F(MockHostIntegrationTest, AGuestThatDiesIsCleanedUp) {
  auto a = RawGuestClient::Attach(channel_, "short-lived", 8 << 20, Deadline());
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE((*a)->Connect(k5_3, Deadline()).ok());
  ASSERT_TRUE((*a)->OpenChannel(1, 4, 4, Deadline()).ok());
  // Watch for the detach, registered before the guest goes.
  grpc::ClientContext watch_ctx;
  watch_ctx.set_deadline(absl::ToChronoTime(Deadline()));
  v1::WatchEventsRequest watch;
  watch.add_kinds(v1::EVENT_KIND_GUEST_DETACHED);
  auto reader = control_->WatchEvents(&watch_ctx, watch);
  reader->WaitForInitialMetadata();
  a->reset();
  v1::ProtocolEvent e;
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(e.guest_id(), "guest-1");
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(Deadline()));
  v1::ListGuestsResponse guests;
  ASSERT_TRUE(control_->ListGuests(&ctx, {}, &guests).ok());
  EXPECT_THAT(guests.guests(), SizeIs(0));
  // The name is free again.
  auto again = RawGuestClient::Attach(channel_, "short-lived", 8 << 20, Deadline());
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST(MockHostConfigTest, ConfigFileSetsDefaultOffersAndSettings) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/host.textproto");
  {
    std::ofstream config(path);
    config << "default_offers { device: \"sink\" sub_channel_count: 1 }\n"
              "settings { max_version: 0x00040001 }\n";
  }
  auto host = MockHostProcess::Start(g_binary, {"--config=" + path, "--offer=raw"}, Deadline());
  ASSERT_TRUE(host.ok()) << host.status();
  auto channel = grpc::CreateChannel((*host)->target(), grpc::InsecureChannelCredentials());
  auto guest = RawGuestClient::Attach(channel, "configured", 4 << 20, Deadline());
  ASSERT_TRUE(guest.ok()) << guest.status();
  EXPECT_EQ((*guest)->Connect(k5_3, Deadline()).status().code(),
            absl::StatusCode::kFailedPrecondition);  // above the configured maximum
  auto offers = (*guest)->Connect(0x00040001, Deadline());
  ASSERT_TRUE(offers.ok()) << offers.status();
  ASSERT_THAT(*offers, SizeIs(3));  // sink, its sub-channel, then --offer's raw
  EXPECT_EQ((*offers)[1].sub_channel_index(), 1u);
  EXPECT_EQ((*offers)[2].interface_type().value(), kRawDeviceClass.ToString());
  guest->reset();
  absl::StatusOr<int> code = (*host)->Stop(Deadline());
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);

  // A malformed config is refused at start-up.
  {
    std::ofstream config(path);
    config << "default_offers { device: \"toaster\" }\n";
  }
  auto bad = MockHostProcess::Start(g_binary, {"--config=" + path}, Deadline());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kUnavailable) << bad.status();
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("toaster"));
}

}  // namespace
}  // namespace vbus::mock

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc > 1) vbus::mock::g_binary = argv[1];
  return RUN_ALL_TESTS();
}
