// End to end: a post the backend cannot make fails the one request that sent it, and the bus
// goes on (docs/protocol.md §5). A guest's ChannelBus runs over MockBackend against the mock
// host, in this process and as a separate //mock:mock_host process, with a PostFaultBackend
// between them failing chosen posts the way a Hyper-V backend reports them
// (ResourceExhausted: host message buffers still full; InvalidArgument: cannot encode).
//
// Usage: post_failure_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "backends/testing/post_fault_backend.h"
#include "core/runtime/channel_bus.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/guest/mock_backend.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/echo_stream.h"

namespace vbus::e2e {
namespace {

using ::testing::HasSubstr;
using Mode = E2eHost::Mode;

const absl::Status kFull = absl::ResourceExhaustedError("host message buffers full");
const absl::Status kCannotEncode = absl::InvalidArgumentError("message cannot be encoded");

class PostFailureTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<E2eHost>> host = E2eHost::Start(GetParam(), Deadline());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    mock::MockBackendOptions backend_options;
    backend_options.guest_name = kGuest;
    backend_options.vp_count = 2;
    absl::StatusOr<std::unique_ptr<mock::MockBackend>> backend =
        mock::MockBackend::Connect(host_->channel(), backend_options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    faults_ = std::make_unique<testing::PostFaultBackend>(backend_.get());
    ChannelBusOptions options;
    options.log = [](absl::string_view line) { std::cerr << "guest: " << line << "\n"; };
    absl::StatusOr<std::unique_ptr<ChannelBus>> bus =
        ChannelBus::Create(faults_.get(), std::move(options));
    ASSERT_TRUE(bus.ok()) << bus.status();
    bus_ = std::move(*bus);
  }
  void TearDown() override {
    bus_.reset();
    faults_.reset();
    backend_.reset();
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
  std::unique_ptr<mock::MockBackend> backend_;
  std::unique_ptr<testing::PostFaultBackend> faults_;
  std::unique_ptr<ChannelBus> bus_;
};

TEST_P(PostFailureTest, EachFailedPostFailsItsRequestAndTheBusCarriesOn) {
  const uint32_t a = OfferEcho();
  const uint32_t b = OfferEcho();
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  std::shared_ptr<Channel> ca = bus_->FindChannel(a);
  std::shared_ptr<Channel> cb = bus_->FindChannel(b);
  ASSERT_TRUE(ca != nullptr && cb != nullptr);
  const size_t free_pages = backend_->pool().free_pages();
  EchoStream sa(1);
  EchoStream sb(2);

  // The ring GPADL never reaches the host: the open fails, its pages come back at once.
  faults_->FailNext("gpadl_create", kFull);
  absl::Status s = ca->Open(EchoOptions(&sa), Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(absl::StrCat("open of relid ", a, ": posting GpadlCreate failed")));
  EXPECT_EQ(backend_->pool().free_pages(), free_pages);
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
  ASSERT_TRUE(Eventually([&] { return backend_->pool().free_pages() == free_pages; }));
}

// The host never hears of the close: it may still hold the channel open, so the guest keeps
// the rings mapped until the host lets the channel go (here by rescinding it).
TEST_P(PostFailureTest, AFailedCloseKeepsTheRingsUntilTheHostRescinds) {
  const uint32_t a = OfferEcho();
  const uint32_t b = OfferEcho();
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  std::shared_ptr<Channel> ca = bus_->FindChannel(a);
  std::shared_ptr<Channel> cb = bus_->FindChannel(b);
  const size_t free_pages = backend_->pool().free_pages();
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
  ASSERT_TRUE(Eventually([&] { return backend_->pool().free_pages() == free_pages; }));
  EXPECT_EQ(bus_->phase(), BusPhase::kConnected);
}

INSTANTIATE_TEST_SUITE_P(Hosts, PostFailureTest,
                         ::testing::Values(Mode::kInProcess, Mode::kProcess),
                         E2eHost::ModeTestName());

}  // namespace
}  // namespace vbus::e2e
