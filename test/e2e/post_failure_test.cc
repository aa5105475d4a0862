// End to end: a post the backend cannot make fails the one request that sent it, and the bus
// goes on (docs/protocol.md §5). A guest's ChannelBus runs over MockBackend or HyperVBackend
// against the mock host, in this process and as a separate //mock:mock_host process
// (e2e_params.h), with a PostFaultBackend between bus and backend failing chosen posts the way
// a Hyper-V backend reports them (ResourceExhausted: host message buffers still full;
// InvalidArgument: cannot encode).
//
// Usage: post_failure_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "backends/testing/post_fault_backend.h"
#include "core/runtime/channel_bus.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/e2e_params.h"
#include "test/e2e/echo_stream.h"

namespace vbus::e2e {
namespace {

using ::testing::HasSubstr;

const absl::Status kFull = absl::ResourceExhaustedError("host message buffers full");
const absl::Status kCannotEncode = absl::InvalidArgumentError("message cannot be encoded");

class PostFailureTest : public ::testing::TestWithParam<E2eParam> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<E2eHost>> host = E2eHost::Start(ModeOf(GetParam()), Deadline());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    E2eGuestOptions guest_options;
    guest_options.backend = BackendOf(GetParam());
    guest_options.vp_count = 2;
    guest_options.wrap = [this](Backend* backend) {
      auto faults = std::make_unique<testing::PostFaultBackend>(backend);
      faults_ = faults.get();
      return faults;
    };
    ChannelBusOptions options;
    options.log = [](absl::string_view line) { std::cerr << "guest: " << line << "\n"; };
    absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
        E2eGuest::Attach(*host_, kGuest, std::move(options), std::move(guest_options));
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = std::move(*guest);
    bus_ = &guest_->bus();
  }
  void TearDown() override {
    bus_ = nullptr;
    faults_ = nullptr;
    guest_.reset();
    if (HasFailure() && host_ != nullptr) std::cerr << "mock_host log:\n" << host_->log() << "\n";
    host_.reset();
  }
  uint32_t OfferEcho() {
    absl::StatusOr<v1::OfferResponse> offered = host_->Offer(kGuest, "echo");
    EXPECT_TRUE(offered.ok()) << offered.status();
    return offered.ok() ? offered->child_relid() : 0;
  }
  // The host's view of one channel: state and ring GPADL.
  bool HostSees(uint32_t relid, v1::ChannelState state, bool ring) {
    absl::StatusOr<v1::ChannelInfo> info = host_->Channel(kGuest, relid);
    return info.ok() && info->state() == state && (info->ring_gpadl() != 0) == ring;
  }
  // Echo traffic on an open channel: every packet back, intact.
  void ExpectEcho(Channel& channel, EchoStream& stream, uint64_t count) {
    const uint64_t first = stream.sent();
    ASSERT_TRUE(stream.SendRange(channel, first, count).ok());
    ASSERT_TRUE(stream.WaitFor(first + count, Deadline()));
    EXPECT_EQ(stream.bad(), 0u);
  }

  static constexpr char kGuest[] = "post-failure-guest";
  std::unique_ptr<E2eHost> host_;
  std::unique_ptr<E2eGuest> guest_;
  testing::PostFaultBackend* faults_ = nullptr;  // the guest's
  ChannelBus* bus_ = nullptr;
};

TEST_P(PostFailureTest, EachFailedPostFailsItsRequestAndTheBusCarriesOn) {
  const uint32_t a = OfferEcho();
  const uint32_t b = OfferEcho();
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  std::shared_ptr<Channel> ca = bus_->FindChannel(a);
  std::shared_ptr<Channel> cb = bus_->FindChannel(b);
  ASSERT_TRUE(ca != nullptr && cb != nullptr);
  const size_t free_pages = guest_->free_pages();
  EchoStream sa(1);
  EchoStream sb(2);

  // The ring GPADL never reaches the host: the open fails, its pages come back at once.
  faults_->FailNext("gpadl_create", kFull);
  absl::Status s = ca->Open(EchoOptions(&sa), Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(absl::StrCat("open of relid ", a, ": posting GpadlCreate failed")));
  EXPECT_EQ(guest_->free_pages(), free_pages);
  EXPECT_TRUE(HostSees(a, v1::CHANNEL_STATE_OFFERED, /*ring=*/false));
  ASSERT_TRUE(ca->Open(EchoOptions(&sa), Deadline()).ok());
  ExpectEcho(*ca, sa, 1000);

  // The OpenChannel cannot be encoded: the open fails; the host tears the ring GPADL down.
  faults_->FailNext("open_channel", kCannotEncode);
  s = cb->Open(EchoOptions(&sb), Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(absl::StrCat("open of relid ", b, ": posting OpenChannel failed")));
  EXPECT_FALSE(cb->is_open());
  ASSERT_TRUE(Eventually([&] { return HostSees(b, v1::CHANNEL_STATE_OFFERED, false); }));
  ASSERT_TRUE(cb->Open(EchoOptions(&sb), Deadline()).ok());
  ExpectEcho(*cb, sb, 1000);

  // A ModifyChannel that never goes out fails alone; the channel keeps its VP and its traffic.
  faults_->FailNext("modify_channel", kFull);
  s = ca->SetTargetVp(1, Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  ExpectEcho(*ca, sa, 1000);
  ASSERT_TRUE(ca->SetTargetVp(1, Deadline()).ok());

  // A GPADL the host never heard of, then one whose teardown cannot be posted: it stays, and
  // a second teardown succeeds.
  faults_->FailNext("gpadl_create", kFull);
  EXPECT_EQ(ca->CreateGpadl(4, Deadline()).status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<GpadlBuffer> buffer = ca->CreateGpadl(4, Deadline());
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  faults_->FailNext("gpadl_teardown", kFull);
  EXPECT_EQ(ca->TeardownGpadl(buffer->handle, Deadline()).code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(ca->TeardownGpadl(buffer->handle, Deadline()).ok());

  // Through all of it the bus stayed connected, and both channels still echo.
  EXPECT_EQ(bus_->phase(), BusPhase::kConnected);
  EXPECT_EQ(bus_->stats().post_failures, 5u);
  ExpectEcho(*ca, sa, 1000);
  ExpectEcho(*cb, sb, 1000);
  ASSERT_TRUE(ca->Close(Deadline()).ok());
  ASSERT_TRUE(cb->Close(Deadline()).ok());
  ASSERT_TRUE(Eventually([&] { return guest_->free_pages() == free_pages; }));
}

// The host never hears of the close: it may still hold the channel open, so the guest keeps
// the rings mapped until the host lets the channel go (here by rescinding it).
TEST_P(PostFailureTest, AFailedCloseKeepsTheRingsUntilTheHostRescinds) {
  const uint32_t a = OfferEcho();
  const uint32_t b = OfferEcho();
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  std::shared_ptr<Channel> ca = bus_->FindChannel(a);
  std::shared_ptr<Channel> cb = bus_->FindChannel(b);
  const size_t free_pages = guest_->free_pages();
  EchoStream sa(3);
  EchoStream sb(4);
  ASSERT_TRUE(ca->Open(EchoOptions(&sa), Deadline()).ok());
  ASSERT_TRUE(cb->Open(EchoOptions(&sb), Deadline()).ok());
  faults_->FailNext("close_channel", kFull);
  absl::Status s = ca->Close(Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("stays mapped until the host rescinds"));
  EXPECT_FALSE(ca->is_open());
  EXPECT_TRUE(HostSees(a, v1::CHANNEL_STATE_OPEN, /*ring=*/true));  // it never heard
  ExpectEcho(*cb, sb, 1000);
  ASSERT_TRUE(host_->Rescind(kGuest, a).ok());
  ASSERT_TRUE(Eventually([&] { return !host_->Channel(kGuest, a).ok(); }));  // relid released
  ASSERT_TRUE(cb->Close(Deadline()).ok());
  ASSERT_TRUE(Eventually([&] { return guest_->free_pages() == free_pages; }));
  EXPECT_EQ(bus_->phase(), BusPhase::kConnected);
}

INSTANTIATE_TEST_SUITE_P(Hosts, PostFailureTest, AllHostsAndBackends(), E2eParamName());

}  // namespace
}  // namespace vbus::e2e
