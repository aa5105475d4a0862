// End to end, per integration component: the guest's IC drivers (drivers/) on a ChannelBus over
// MockBackend or HyperVBackend against the mock host's IC emulators (mock/host/ic_host.h), in
// this process and as a separate //mock:mock_host process (e2e_params.h). The test plays the
// operator through HostControl (RequestShutdown, KvpExchange, TimeSync, IcStatus, ConfigureIc) and
// checks both ends.
//
// Usage: ic_e2e_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/data/device_classes.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/sync.h"
#include "drivers/heartbeat/heartbeat.h"
#include "drivers/kvp/kvp.h"
#include "drivers/shutdown/shutdown.h"
#include "drivers/timesync/timesync.h"
#include "gtest/gtest.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/e2e_params.h"
#include "test/e2e/eventually.h"

namespace vbus::e2e {
namespace {

absl::Time Deadline(absl::Duration d = absl::Seconds(30)) { return absl::Now() + d; }

// A heartbeat driver that answers with the sequence unchanged: every beat is missed.
class WrongBeatDriver final : public ic::IcDriver {
 public:
  WrongBeatDriver() : IcDriver("wrong-beat", {}) {}
  ic::MessageType type() const override { return ic::MessageType::kHeartbeat; }
  absl::Span<const ic::IcVersion> message_versions() const override {
    return ic::kHeartbeatVersions;
  }
  absl::StatusOr<ic::IcAnswer> Handle(ic::IcVersion, absl::Span<const uint8_t> body) override {
    ic::IcAnswer a;
    a.body.assign(body.begin(), body.end());
    return a;
  }
};

// A shutdown driver that speaks only a version no host offers.
class FutureShutdownDriver final : public ic::IcDriver {
 public:
  FutureShutdownDriver() : IcDriver("future-shutdown", {}) {}
  ic::MessageType type() const override { return ic::MessageType::kShutdown; }
  absl::Span<const ic::IcVersion> message_versions() const override { return versions_; }
  absl::StatusOr<ic::IcAnswer> Handle(ic::IcVersion, absl::Span<const uint8_t>) override {
    return ic::IcAnswer{};
  }

 private:
  const ic::IcVersion versions_[1] = {{9, 0}};
};

class IcE2eTest : public ::testing::TestWithParam<E2eParam> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<E2eHost>> host = E2eHost::Start(ModeOf(GetParam()), Deadline());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    // Fast beats, so that the test sees several in well under a second.
    v1::ConfigureIcRequest configure;
    configure.mutable_settings()->set_heartbeat_interval_ms(50);
    configure.mutable_settings()->set_timesync_sample_interval_ms(0);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::IcSettings settings;
    grpc::Status s = host_->control().ConfigureIc(&context, configure, &settings);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  void TearDown() override {
    guest_.reset();
    if (HasFailure() && host_ != nullptr) std::cerr << "mock_host log:\n" << host_->log() << "\n";
    host_.reset();
  }

  // Registers the four drivers (or the given replacements), attaches and offers the kinds.
  void Start(bool wrong_beats = false, bool future_shutdown = false) {
    auto log = [](absl::string_view line) { std::cerr << "guest: " << line << "\n"; };
    ic::IcDriverOptions ic_options;
    ic_options.log = log;
    if (wrong_beats) {
      ASSERT_TRUE(
          drivers_
              .Register({"heartbeat", device_class::kHeartbeat,
                         [](const OfferInfo&) { return std::make_unique<WrongBeatDriver>(); }})
              .ok());
    } else {
      ASSERT_TRUE(drivers_
                      .Register({"heartbeat", device_class::kHeartbeat,
                                 [this, ic_options](const OfferInfo&) {
                                   auto d = std::make_unique<ic::HeartbeatDriver>(ic_options);
                                   std::lock_guard<std::mutex> lock(mu_);
                                   heartbeat_ = d.get();
                                   return d;
                                 }})
                      .ok());
    }
    if (future_shutdown) {
      ASSERT_TRUE(
          drivers_
              .Register({"shutdown", device_class::kShutdown,
                         [](const OfferInfo&) { return std::make_unique<FutureShutdownDriver>(); }})
              .ok());
    } else {
      ASSERT_TRUE(drivers_
                      .Register({"shutdown", device_class::kShutdown,
                                 [this, ic_options](const OfferInfo&) {
                                   ic::ShutdownDriverOptions o;
                                   o.ic = ic_options;
                                   o.on_accepted = [this](const ic::ShutdownRequest& r) {
                                     {
                                       std::lock_guard<std::mutex> lock(mu_);
                                       accepted_ = r;
                                     }
                                     shutdown_accepted_.Notify();
                                   };
                                   return std::make_unique<ic::ShutdownDriver>(o);
                                 }})
                      .ok());
    }
    ASSERT_TRUE(drivers_
                    .Register({"timesync", device_class::kTimeSync,
                               [this, ic_options](const OfferInfo&) {
                                 ic::TimeSyncDriverOptions o;
                                 o.ic = ic_options;
                                 auto d = std::make_unique<ic::TimeSyncDriver>(o);
                                 std::lock_guard<std::mutex> lock(mu_);
                                 timesync_ = d.get();
                                 return d;
                               }})
                    .ok());
    ASSERT_TRUE(drivers_
                    .Register({"kvp", device_class::kKvp,
                               [this, ic_options](const OfferInfo&) {
                                 ic::KvpDriverOptions o;
                                 o.ic = ic_options;
                                 o.store = store_;
                                 return std::make_unique<ic::KvpDriver>(o);
                               }})
                    .ok());
    ChannelBusOptions options;
    options.drivers = &drivers_;
    options.log = log;
    E2eGuestOptions guest_options;
    guest_options.backend = BackendOf(GetParam());
    absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
        E2eGuest::Attach(*host_, kGuest, options, std::move(guest_options));
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = std::move(*guest);
    for (const char* kind : {"heartbeat", "shutdown", "timesync", "kvp"}) {
      absl::StatusOr<v1::OfferResponse> offered = host_->Offer(kGuest, kind);
      ASSERT_TRUE(offered.ok()) << offered.status();
    }
    ASSERT_TRUE(guest_->bus().Connect(Deadline()).ok());
  }

  // IcStatus of the guest's channel of `kind`, once `done` holds for it (or the last seen).
  v1::IcChannelStatus AwaitIc(const std::string& kind,
                              const std::function<bool(const v1::IcChannelStatus&)>& done) {
    v1::IcChannelStatus last;
    const bool reached = Eventually(
        [&] {
          v1::IcStatusRequest request;
          request.set_guest(kGuest);
          v1::IcStatusResponse response;
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
          if (!host_->control().IcStatus(&context, request, &response).ok()) return false;
          for (const v1::IcChannelStatus& c : response.channels()) {
            if (c.device() != kind) continue;
            last = c;
            if (done(c)) return true;
          }
          return false;
        },
        absl::Seconds(20));
    if (!reached) {
      ADD_FAILURE() << kind << " never reached the expected state; last: " << last.DebugString();
    }
    return last;
  }
  static bool Ready(const v1::IcChannelStatus& c) { return c.state() == "ready"; }

  template <typename Req, typename Resp>
  grpc::Status Rpc(grpc::Status (v1::HostControl::StubInterface::*method)(grpc::ClientContext*,
                                                                          const Req&, Resp*),
                   const Req& request, Resp* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return (host_->control().*method)(&context, request, response);
  }

  static constexpr char kGuest[] = "ic-guest";
  std::unique_ptr<E2eHost> host_;
  DriverRegistry drivers_;
  std::unique_ptr<E2eGuest> guest_;
  std::shared_ptr<ic::MemoryKvpStore> store_ = std::make_shared<ic::MemoryKvpStore>();
  std::mutex mu_;
  ic::HeartbeatDriver* heartbeat_ = nullptr;
  ic::TimeSyncDriver* timesync_ = nullptr;
  std::optional<ic::ShutdownRequest> accepted_;
  Notification shutdown_accepted_;
};

TEST_P(IcE2eTest, HeartbeatsAreAnsweredWithSequencePlusOne) {
  Start();
  v1::IcChannelStatus s =
      AwaitIc("heartbeat", [](const v1::IcChannelStatus& c) { return c.beats() >= 3; });
  EXPECT_EQ(s.state(), "ready");
  EXPECT_EQ(s.framework_version(), "3.0");
  EXPECT_EQ(s.message_version(), "3.0");
  EXPECT_EQ(s.missed_beats(), 0u);
  EXPECT_GT(s.last_beat_unix_nanos(), 0);
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_NE(heartbeat_, nullptr);
  EXPECT_GE(heartbeat_->status().beats, 3u);
}

TEST_P(IcE2eTest, WrongAnswersAreMissedBeats) {
  Start(/*wrong_beats=*/true);
  v1::IcChannelStatus s =
      AwaitIc("heartbeat", [](const v1::IcChannelStatus& c) { return c.missed_beats() >= 2; });
  EXPECT_EQ(s.beats(), 0u);
  EXPECT_NE(s.detail().find("expected"), std::string::npos) << s.detail();
}

TEST_P(IcE2eTest, ShutdownAcceptedAndRefused) {
  Start();
  AwaitIc("shutdown", Ready);
  v1::GuestShutdownRequest request;
  request.set_guest(kGuest);
  request.set_kind(v1::GuestShutdownRequest::KIND_HIBERNATE);  // the default driver refuses it
  v1::GuestShutdownResponse response;
  grpc::Status s = Rpc(&v1::HostControl::StubInterface::RequestShutdown, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(response.accepted());
  EXPECT_EQ(response.status_name(), "E_FAIL");

  request.set_kind(v1::GuestShutdownRequest::KIND_REBOOT);
  request.set_force(true);
  request.set_message("planned maintenance");
  s = Rpc(&v1::HostControl::StubInterface::RequestShutdown, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(response.accepted());
  EXPECT_EQ(response.status(), 0u);
  ASSERT_TRUE(shutdown_accepted_.WaitForNotificationWithDeadline(Deadline()));
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(accepted_->kind, ic::ShutdownKind::kReboot);
  EXPECT_TRUE(accepted_->force);
  EXPECT_EQ(accepted_->message, "planned maintenance");
}

TEST_P(IcE2eTest, TimeSyncReportsTheHostSkew) {
  Start();
  AwaitIc("timesync", Ready);
  v1::TimeSyncRequest request;
  request.set_guest(kGuest);
  request.set_skew_ms(5000);
  v1::TimeSyncResponse response;
  grpc::Status s = Rpc(&v1::HostControl::StubInterface::TimeSync, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.status_name(), "S_OK");
  EXPECT_EQ(response.message_version(), "4.0");
  EXPECT_EQ(response.skew_ms(), 5000);
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_NE(timesync_, nullptr);
  std::optional<ic::TimeSample> sample = timesync_->last_sample();
  ASSERT_TRUE(sample.has_value());
  EXPECT_EQ(sample->kind, ic::TimeSyncFlag::kSync);
  // The guest sees the host 5 s ahead (plus the little time the message took).
  EXPECT_GE(sample->offset, absl::Milliseconds(4900));
  EXPECT_LE(sample->offset, absl::Milliseconds(6000));
}

TEST_P(IcE2eTest, KvpSetGetEnumerateDelete) {
  Start();
  AwaitIc("kvp", Ready);
  v1::KvpRequest request;
  request.set_guest(kGuest);
  request.set_op(v1::KVP_OP_SET);
  request.set_pool(0);
  request.mutable_item()->set_key("color");
  request.mutable_item()->set_value("blau \xC3\xBC");
  v1::KvpResponse response;
  grpc::Status s = Rpc(&v1::HostControl::StubInterface::KvpExchange, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.status_name(), "S_OK");
  absl::StatusOr<std::optional<ic::KvpRecord>> stored = store_->Get(0, "color");
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->value, "blau \xC3\xBC");

  request.set_op(v1::KVP_OP_GET);
  s = Rpc(&v1::HostControl::StubInterface::KvpExchange, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(response.items_size(), 1);
  EXPECT_EQ(response.items(0).value(), "blau \xC3\xBC");

  v1::KvpRequest enumerate;
  enumerate.set_guest(kGuest);
  enumerate.set_op(v1::KVP_OP_ENUMERATE);
  enumerate.set_pool(2);  // AUTO: the guest's facts
  s = Rpc(&v1::HostControl::StubInterface::KvpExchange, enumerate, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.status_name(), "S_CONT");
  ASSERT_EQ(response.items_size(), 10);
  EXPECT_EQ(response.items(1).key(), "IntegrationServicesVersion");
  EXPECT_EQ(response.items(1).value(), "vbus 1.0");

  request.set_op(v1::KVP_OP_DELETE);
  s = Rpc(&v1::HostControl::StubInterface::KvpExchange, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.status_name(), "S_OK");
  request.set_op(v1::KVP_OP_GET);
  s = Rpc(&v1::HostControl::StubInterface::KvpExchange, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.status_name(), "E_FAIL");
  EXPECT_EQ(response.items_size(), 0);
}

TEST_P(IcE2eTest, NegotiationWithNoCommonVersionFailsTheChannel) {
  Start(/*wrong_beats=*/false, /*future_shutdown=*/true);
  v1::IcChannelStatus s =
      AwaitIc("shutdown", [](const v1::IcChannelStatus& c) { return c.state() == "failed"; });
  EXPECT_NE(s.detail().find("negotiation failed"), std::string::npos) << s.detail();
  v1::GuestShutdownRequest request;
  request.set_guest(kGuest);
  v1::GuestShutdownResponse response;
  grpc::Status r = Rpc(&v1::HostControl::StubInterface::RequestShutdown, request, &response);
  EXPECT_EQ(r.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << r.error_message();
  // The other ICs are unaffected.
  AwaitIc("kvp", Ready);
}

TEST_P(IcE2eTest, RequestsForAGuestWithoutTheChannelAreNotFound) {
  Start();
  v1::TimeSyncRequest request;
  request.set_guest("nobody");
  v1::TimeSyncResponse response;
  EXPECT_EQ(Rpc(&v1::HostControl::StubInterface::TimeSync, request, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

INSTANTIATE_TEST_SUITE_P(Hosts, IcE2eTest, AllHostsAndBackends(), E2eParamName());

}  // namespace
}  // namespace vbus::e2e
