// ChannelBus tests over TestHost (a FakeBackend plus a rule-driven host thread): connection,
// offers, drivers, hot-add, rescind, relid reuse, refusals, deadlines, link loss, shutdown.
// Every wait is a condition wait with a deadline; nothing sleeps.
#include "core/runtime/channel_bus.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "core/runtime/channel_bus_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

using testing::Deadline;
using ::testing::HasSubstr;
using testing::kInstance1;
using testing::kInstance2;
using testing::kInstance3;
using testing::kOtherClass;
using testing::kTestClass;
using testing::TestHost;

ChannelOpenOptions SmallRings() {
  ChannelOpenOptions o;
  o.outbound_ring_pages = 4;
  o.inbound_ring_pages = 4;
  return o;
}

// A driver that opens its channel in Probe and records Remove.
struct DriverLog {
  Mutex mu;
  std::vector<std::string> events ABSL_GUARDED_BY(mu);
  void Add(std::string e) {
    MutexLock lock(&mu);
    events.push_back(std::move(e));
  }
  std::vector<std::string> Get() {
    MutexLock lock(&mu);
    return events;
  }
};

class OpeningDriver : public Driver {
 public:
  explicit OpeningDriver(DriverLog* log) : log_(log) {}
  absl::Status Probe(Channel& channel) override {
    channel_ = &channel;
    absl::Status s = channel.Open(SmallRings(), Deadline());
    log_->Add(absl::StrCat("probe ", channel.relid(), " ", s.ok() ? "open" : s.ToString()));
    return s;
  }
  void Remove() override {
    // The channel is retired already: no callback runs, sends fail.
    log_->Add(
        absl::StrCat("remove ", channel_->relid(), channel_->is_open() ? " open" : " closed"));
    absl::Status s = channel_->Close(Deadline());
    log_->Add(absl::StrCat("close ", channel_->relid(), " ", s.ok() ? "ok" : s.ToString()));
  }

 private:
  DriverLog* log_;
  Channel* channel_ = nullptr;
};

class ChannelBusTest : public ::testing::Test {
 protected:
  void Register(const Guid& type = kTestClass) {
    ASSERT_TRUE(
        registry_
            .Register({"opening", type,
                       [this](const OfferInfo&) { return std::make_unique<OpeningDriver>(&log_); }})
            .ok());
  }
  void MakeBus(ChannelBusOptions options = {}) {
    if (options.drivers == nullptr) options.drivers = &registry_;
    options.log = [this](absl::string_view line) {
      MutexLock lock(&log_mu_);
      logs_.emplace_back(line);
    };
    absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&host_, options);
    ASSERT_TRUE(bus.ok()) << bus.status();
    bus_ = std::move(*bus);
  }
  void ConnectBus() {
    MakeBus();
    ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  }
  // Waits for the bus's own state (not the host's): a bounded poll on the condition.
  bool Eventually(const std::function<bool()>& condition) {
    return host_.WaitFor(condition, Deadline());
  }
  std::vector<std::string> Logs() {
    MutexLock lock(&log_mu_);
    return logs_;
  }

  TestHost host_;
  DriverRegistry registry_;
  DriverLog log_;
  Mutex log_mu_;
  std::vector<std::string> logs_ ABSL_GUARDED_BY(log_mu_);
  std::unique_ptr<ChannelBus> bus_;  // destroyed before host_ (declared after it)
};

TEST_F(ChannelBusTest, ConnectNegotiatesNewestVersionAndListsOffers) {
  host_.AddOffer(3, kTestClass, kInstance1);
  host_.AddOffer(9, kOtherClass, kInstance2);
  ConnectBus();
  EXPECT_EQ(bus_->version(), protocol::kVersion5_3);
  EXPECT_EQ(bus_->phase(), BusPhase::kConnected);
  std::vector<OfferInfo> offers = bus_->Offers();
  ASSERT_EQ(offers.size(), 2u);
  EXPECT_EQ(offers[0].relid, 3u);
  EXPECT_EQ(offers[0].interface_type, kTestClass);
  EXPECT_EQ(offers[1].relid, 9u);
  EXPECT_EQ(offers[1].interface_instance, kInstance2);
  ASSERT_TRUE(host_.fake().connection().has_value());
  EXPECT_EQ(host_.fake().connection()->message_connection_id, 4u);
  EXPECT_EQ(host_.CountPosted("initiate_contact"), 1u);
  EXPECT_EQ(host_.CountPosted("request_offers"), 1u);
  ASSERT_NE(bus_->FindChannel(3), nullptr);
  EXPECT_EQ(bus_->FindChannel(kInstance2)->relid(), 9u);
  EXPECT_EQ(bus_->FindChannel(4), nullptr);
  // Unmatched offers stay listed.
  std::vector<DeviceEntry> devices = bus_->Devices();
  ASSERT_EQ(devices.size(), 2u);
  EXPECT_EQ(devices[0].binding, Binding::kUnmatched);
  EXPECT_EQ(bus_->stats().offers_added, 2u);
}

TEST_F(ChannelBusTest, ConnectFallsBackToTheHostsVersion) {
  host_.Update([](TestHost::Rules& r) { r.max_version = protocol::kVersion4_1; });
  ConnectBus();
  EXPECT_EQ(bus_->version(), protocol::kVersion4_1);
  // 5.3, 5.2, 5.1, 5.0 refused, then 4.1.
  EXPECT_EQ(host_.CountPosted("initiate_contact"), 5u);
  EXPECT_EQ(host_.fake().connection()->message_connection_id, 0u);
}

TEST_F(ChannelBusTest, ConnectHonoursMaxVersion) {
  ChannelBusOptions options;
  options.max_version = protocol::kVersion3_0;
  MakeBus(options);
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  EXPECT_EQ(bus_->version(), protocol::kVersion3_0);
  EXPECT_EQ(host_.Posted()[0].initiate_contact().version_requested(), protocol::kVersion3_0);
}

TEST_F(ChannelBusTest, CreateRejectsTooOldMaxVersion) {
  ChannelBusOptions options;
  options.max_version = 0x00010001;
  EXPECT_EQ(ChannelBus::Create(&host_, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ChannelBusTest, ConnectDeadlineWhenTheHostIsSilent) {
  host_.Update([](TestHost::Rules& r) { r.answer_contact = false; });
  MakeBus();
  absl::Status s = bus_->Connect(absl::Now() + absl::Milliseconds(200));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_EQ(bus_->phase(), BusPhase::kDisconnected);
  // The bus stays usable: the host answers now.
  host_.Update([](TestHost::Rules& r) { r.answer_contact = true; });
  EXPECT_TRUE(bus_->Connect(Deadline()).ok());
  EXPECT_EQ(bus_->phase(), BusPhase::kConnected);
  EXPECT_FALSE(bus_->Connect(Deadline()).ok());  // already connected
}

TEST_F(ChannelBusTest, DriversAreProbedBeforeConnectReturns) {
  Register();
  host_.AddOffer(3, kTestClass, kInstance1);
  host_.AddOffer(4, kOtherClass, kInstance2);
  ConnectBus();
  // Probe opened relid 3 (the driver waited for the host while the control thread ran).
  EXPECT_THAT(log_.Get(), ::testing::ElementsAre("probe 3 open"));
  EXPECT_TRUE(bus_->FindChannel(3)->is_open());
  EXPECT_TRUE(host_.IsOpen(3));
  std::vector<DeviceEntry> devices = bus_->Devices();
  ASSERT_EQ(devices.size(), 2u);
  EXPECT_EQ(devices[0].binding, Binding::kBound);
  EXPECT_EQ(devices[0].driver, "opening");
  EXPECT_EQ(devices[1].binding, Binding::kUnmatched);
}

TEST_F(ChannelBusTest, LateRegisteredDriverBindsWithBindDrivers) {
  host_.AddOffer(5, kTestClass, kInstance1);
  ConnectBus();
  EXPECT_EQ(bus_->Devices()[0].binding, Binding::kUnmatched);
  Register();
  ASSERT_TRUE(bus_->BindDrivers(Deadline()).ok());
  EXPECT_EQ(bus_->Devices()[0].binding, Binding::kBound);
  EXPECT_TRUE(bus_->FindChannel(5)->is_open());
}

TEST_F(ChannelBusTest, FailedProbeLeavesTheOfferListed) {
  host_.AddOffer(5, kTestClass, kInstance1);
  host_.Update([](TestHost::Rules& r) { r.open_status = protocol::kStatusUnsuccessful; });
  Register();
  ConnectBus();
  std::vector<DeviceEntry> devices = bus_->Devices();
  ASSERT_EQ(devices.size(), 1u);
  EXPECT_EQ(devices[0].binding, Binding::kProbeFailed);
  EXPECT_THAT(std::string(devices[0].probe_error.message()), HasSubstr("refused by host"));
  EXPECT_EQ(bus_->stats().errors, 1u);
}

TEST_F(ChannelBusTest, HotAddProbesAndCallsOnOffer) {
  Register();
  std::atomic<int> offered{0};
  ChannelBusOptions options;
  options.on_offer = [&](const std::shared_ptr<Channel>& c) {
    if (c->relid() == 12) offered.fetch_add(1);
  };
  MakeBus(options);
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  EXPECT_TRUE(bus_->Offers().empty());
  host_.AddOffer(12, kTestClass, kInstance3);
  ASSERT_TRUE(Eventually([&] { return offered.load() == 1; }));
  // on_offer runs after the driver's probe, on the same thread.
  EXPECT_THAT(log_.Get(), ::testing::ElementsAre("probe 12 open"));
  EXPECT_TRUE(host_.IsOpen(12));
  EXPECT_EQ(bus_->Offers().size(), 1u);
  bus_.reset();  // its callbacks refer to this frame
}

TEST_F(ChannelBusTest, RescindRemovesTheDriverThenReleasesTheRelid) {
  Register();
  host_.AddOffer(6, kTestClass, kInstance1);
  std::atomic<int> removed{0};
  ChannelBusOptions options;
  options.on_offer_removed = [&](const OfferInfo& offer, const absl::Status& why) {
    if (offer.relid == 6 && why.code() == absl::StatusCode::kUnavailable) removed.fetch_add(1);
  };
  MakeBus(options);
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  std::shared_ptr<Channel> channel = bus_->FindChannel(6);
  ASSERT_TRUE(channel->is_open());
  host_.Rescind(6);
  ASSERT_TRUE(host_.WaitFor([&] { return host_.Released().size() == 1; }, Deadline()));
  EXPECT_EQ(host_.Released()[0], 6u);
  EXPECT_EQ(removed.load(), 1);
  // Remove saw a retired channel; Close of a rescinded channel is OK at once, and nothing
  // more was posted for it (the host already forgot it).
  EXPECT_THAT(log_.Get(), ::testing::ElementsAre("probe 6 open", "remove 6 closed", "close 6 ok"));
  EXPECT_EQ(host_.CountPosted("close_channel"), 0u);
  EXPECT_TRUE(bus_->Offers().empty());
  EXPECT_TRUE(bus_->Devices().empty());
  EXPECT_EQ(channel->removed_status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(channel->Send(std::vector<uint8_t>{1, 2, 3}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(bus_->GetChannel(channel->id()), nullptr);  // released
  // The ring memory went back to the backend.
  EXPECT_TRUE(Eventually(
      [&] { return host_.fake().pool().free_pages() == host_.fake().pool().total_pages(); }));
  bus_.reset();  // its callbacks refer to this frame
}

TEST_F(ChannelBusTest, RelidReuseMakesANewChannel) {
  host_.AddOffer(5, kTestClass, kInstance1);
  ConnectBus();
  std::shared_ptr<Channel> first = bus_->FindChannel(5);
  ASSERT_TRUE(first->Open(SmallRings(), Deadline()).ok());
  host_.Rescind(5);
  ASSERT_TRUE(host_.WaitFor([&] { return host_.Released().size() == 1; }, Deadline()));
  host_.AddOffer(5, kTestClass, kInstance2);  // the host reuses relid 5 for a new device
  ASSERT_TRUE(Eventually([&] { return bus_->FindChannel(5) != nullptr; }));
  std::shared_ptr<Channel> second = bus_->FindChannel(5);
  EXPECT_NE(second.get(), first.get());
  EXPECT_NE(second->id(), first->id());
  EXPECT_EQ(second->offer().interface_instance, kInstance2);
  ASSERT_TRUE(second->Open(SmallRings(), Deadline()).ok());
  // The old channel stays dead even though its relid lives again.
  EXPECT_EQ(first->Open(SmallRings(), Deadline()).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(second->is_open());
}

TEST_F(ChannelBusTest, RefusedOpenNamesTheStatusAndTheBusStaysUsable) {
  host_.AddOffer(7, kTestClass, kInstance1);
  ConnectBus();
  host_.Update([](TestHost::Rules& r) { r.open_status = protocol::kStatusUnsuccessful; });
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  absl::Status s = channel->Open(SmallRings(), Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("refused by host"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("0xC0000001"));
  EXPECT_FALSE(channel->is_open());
  // The refused open's ring GPADL is torn down and its memory freed.
  ASSERT_TRUE(host_.WaitFor([&] { return host_.CountPosted("gpadl_teardown") == 1; }, Deadline()));
  EXPECT_TRUE(Eventually(
      [&] { return host_.fake().pool().free_pages() == host_.fake().pool().total_pages(); }));
  host_.Update([](TestHost::Rules& r) { r.open_status = 0; });
  ASSERT_TRUE(channel->Open(SmallRings(), Deadline()).ok());
  EXPECT_TRUE(channel->is_open());
}

TEST_F(ChannelBusTest, OpenDeadlineWhenTheHostNeverAnswers) {
  host_.AddOffer(7, kTestClass, kInstance1);
  ConnectBus();
  host_.Update([](TestHost::Rules& r) { r.answer_open = false; });
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  absl::Status s = channel->Open(SmallRings(), absl::Now() + absl::Milliseconds(200));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_FALSE(channel->is_open());
  host_.Update([](TestHost::Rules& r) { r.answer_open = true; });
  // After the abandoned open is cleaned up, a new one succeeds.
  ASSERT_TRUE(Eventually([&] { return channel->Open(SmallRings(), Deadline()).ok(); }));
}

TEST_F(ChannelBusTest, OpenTwiceAndBadOptions) {
  host_.AddOffer(7, kTestClass, kInstance1);
  ConnectBus();
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  ChannelOpenOptions bad = SmallRings();
  bad.inbound_ring_pages = 1;
  EXPECT_EQ(channel->Open(bad, Deadline()).code(), absl::StatusCode::kInvalidArgument);
  bad = SmallRings();
  bad.user_data = std::string(121, 'x');
  EXPECT_EQ(channel->Open(bad, Deadline()).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(channel->Open(SmallRings(), Deadline()).ok());
  EXPECT_EQ(channel->Open(SmallRings(), Deadline()).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(channel->Close(Deadline()).ok());
  EXPECT_TRUE(channel->Close(Deadline()).ok());  // already closed: OK
  EXPECT_EQ(host_.CountPosted("close_channel"), 1u);
}

TEST_F(ChannelBusTest, OpenBeforeConnectFails) {
  MakeBus();
  host_.AddOffer(7, kTestClass, kInstance1);
  // No offers before Connect.
  EXPECT_TRUE(bus_->Offers().empty());
  EXPECT_EQ(bus_->FindChannel(7), nullptr);
}

TEST_F(ChannelBusTest, CloseTearsDownInOrderAndFreesMemory) {
  host_.AddOffer(7, kTestClass, kInstance1);
  ConnectBus();
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  const size_t free_before = host_.fake().pool().free_pages();
  ASSERT_TRUE(channel->Open(SmallRings(), Deadline()).ok());
  EXPECT_EQ(host_.fake().pool().free_pages(), free_before - 8);
  ASSERT_TRUE(channel->Close(Deadline()).ok());
  EXPECT_FALSE(host_.IsOpen(7));
  std::vector<std::string> kinds;
  for (const v1::ControlMessage& m : host_.Posted()) {
    if (m.has_open_channel()) kinds.push_back("open");
    if (m.has_close_channel()) kinds.push_back("close");
    if (m.has_gpadl_create()) kinds.push_back("gpadl_create");
    if (m.has_gpadl_teardown()) kinds.push_back("gpadl_teardown");
  }
  EXPECT_THAT(kinds, ::testing::ElementsAre("gpadl_create", "open", "close", "gpadl_teardown"));
  EXPECT_EQ(host_.fake().pool().free_pages(), free_before);
}

TEST_F(ChannelBusTest, GpadlCreateAndTeardown) {
  host_.AddOffer(7, kTestClass, kInstance1);
  ConnectBus();
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  ASSERT_TRUE(channel->Open(SmallRings(), Deadline()).ok());
  absl::StatusOr<GpadlBuffer> buffer = channel->CreateGpadl(3, Deadline());
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  EXPECT_GE(buffer->handle, protocol::kFirstGpadlHandle);
  EXPECT_EQ(buffer->memory.size(), 3 * protocol::kPageSize);
  EXPECT_EQ(buffer->pfns.size(), 3u);
  buffer->memory[0] = 0xAB;  // writable
  std::vector<v1::ControlMessage> posted = host_.Posted();
  const v1::GpadlCreate& g = posted.back().gpadl_create();
  EXPECT_EQ(g.gpadl(), buffer->handle);
  EXPECT_EQ(g.pfns_size(), 3);
  EXPECT_EQ(g.pfns(0), buffer->pfns[0]);
  ASSERT_TRUE(channel->TeardownGpadl(buffer->handle, Deadline()).ok());
  EXPECT_EQ(channel->TeardownGpadl(0x1234, Deadline()).code(), absl::StatusCode::kNotFound);
}

TEST_F(ChannelBusTest, SetTargetVp) {
  host_.AddOffer(7, kTestClass, kInstance1);
  ConnectBus();
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  EXPECT_FALSE(channel->SetTargetVp(0, Deadline()).ok());  // not open
  ASSERT_TRUE(channel->Open(SmallRings(), Deadline()).ok());
  ASSERT_TRUE(channel->SetTargetVp(0, Deadline()).ok());
  EXPECT_EQ(host_.Posted().back().modify_channel().target_vp(), 0u);
  // The backend takes events on VP 0 only: VP 1 would never be scanned.
  const size_t posted = host_.Posted().size();
  absl::Status s = channel->SetTargetVp(1, Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("target VP 1"));
  EXPECT_EQ(host_.Posted().size(), posted);  // nothing was sent
}

TEST_F(ChannelBusTest, LinkLostMidOpenFailsWithUnavailableAndRemovesDrivers) {
  Register(kOtherClass);
  host_.AddOffer(7, kTestClass, kInstance1);
  host_.AddOffer(8, kOtherClass, kInstance2);
  std::atomic<int> lost{0};
  ChannelBusOptions options;
  options.on_host_lost = [&](const absl::Status& s) {
    if (s.code() == absl::StatusCode::kUnavailable) lost.fetch_add(1);
  };
  MakeBus(options);
  ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  host_.Update([](TestHost::Rules& r) { r.answer_open = false; });
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  absl::Status opened;
  std::thread opener([&] { opened = channel->Open(SmallRings(), Deadline(absl::Seconds(60))); });
  ASSERT_TRUE(host_.WaitFor([&] { return host_.CountPosted("open_channel") == 2; }, Deadline()));
  const absl::Time lost_at = absl::Now();
  host_.LoseHost(absl::UnavailableError("host went away"));
  opener.join();
  EXPECT_EQ(opened.code(), absl::StatusCode::kUnavailable) << opened;
  EXPECT_LT(absl::Now() - lost_at, absl::Seconds(10));  // no hang until the deadline
  ASSERT_TRUE(Eventually([&] { return lost.load() == 1; }));
  // The bound driver of relid 8 was removed; nothing is listed any more.
  EXPECT_THAT(log_.Get(), ::testing::ElementsAre("probe 8 open", "remove 8 closed", "close 8 ok"));
  EXPECT_TRUE(bus_->Offers().empty());
  EXPECT_EQ(bus_->phase(), BusPhase::kDisconnected);
  EXPECT_EQ(bus_->Connect(Deadline()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(channel->Open(SmallRings(), Deadline()).code(), absl::StatusCode::kUnavailable);
  bus_.reset();  // its callbacks refer to this frame
}

TEST_F(ChannelBusTest, PostFailureEndsTheConnection) {
  host_.AddOffer(7, kTestClass, kInstance1);
  ConnectBus();
  host_.fake().FailNextPost(absl::UnavailableError("transport down"));
  absl::Status s = bus_->FindChannel(7)->Open(SmallRings(), Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(bus_->stats().post_failures, 1u);
  EXPECT_EQ(bus_->phase(), BusPhase::kDisconnected);
}

TEST_F(ChannelBusTest, ShutdownClosesUnloadsAndRemovesDrivers) {
  Register();
  host_.AddOffer(3, kTestClass, kInstance1);
  host_.AddOffer(4, kTestClass, kInstance2);
  ConnectBus();
  ASSERT_TRUE(host_.IsOpen(3) && host_.IsOpen(4));
  std::shared_ptr<Channel> channel = bus_->FindChannel(3);
  ASSERT_TRUE(bus_->Shutdown(Deadline()).ok());
  EXPECT_EQ(host_.CountPosted("close_channel"), 2u);
  EXPECT_EQ(host_.CountPosted("gpadl_teardown"), 2u);
  EXPECT_EQ(host_.CountPosted("unload"), 1u);
  std::vector<std::string> events = log_.Get();
  EXPECT_THAT(events, ::testing::Contains("remove 3 closed"));
  EXPECT_THAT(events, ::testing::Contains("remove 4 closed"));
  EXPECT_EQ(host_.fake().pool().free_pages(), host_.fake().pool().total_pages());
  EXPECT_EQ(channel->Send(std::vector<uint8_t>{1}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(bus_->Connect(Deadline()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(bus_->Shutdown(Deadline()).ok());  // idempotent
}

TEST_F(ChannelBusTest, ShutdownClosesSubChannelsBeforeTheirPrimary) {
  host_.AddOffer(3, kTestClass, kInstance1);
  host_.AddOffer(5, kTestClass, kInstance1, /*sub_channel_index=*/1);
  ConnectBus();
  ASSERT_TRUE(bus_->FindChannel(3)->Open(SmallRings(), Deadline()).ok());
  ASSERT_TRUE(bus_->FindChannel(5)->Open(SmallRings(), Deadline()).ok());
  ASSERT_TRUE(bus_->Shutdown(Deadline()).ok());
  std::vector<uint32_t> closed;
  for (const v1::ControlMessage& m : host_.Posted()) {
    if (m.has_close_channel()) closed.push_back(m.close_channel().child_relid());
  }
  EXPECT_EQ(closed, (std::vector<uint32_t>{5, 3}));
}

TEST_F(ChannelBusTest, ShutdownBelowVersion3DropsOffersLocally) {
  Register();
  host_.AddOffer(3, kTestClass, kInstance1);
  host_.Update([](TestHost::Rules& r) { r.max_version = protocol::kVersion2_4; });
  ConnectBus();
  ASSERT_EQ(bus_->version(), protocol::kVersion2_4);
  ASSERT_TRUE(bus_->Shutdown(Deadline()).ok());
  EXPECT_EQ(host_.CountPosted("unload"), 0u);
  EXPECT_EQ(host_.CountPosted("close_channel"), 1u);
  EXPECT_THAT(log_.Get(), ::testing::Contains("remove 3 closed"));
}

TEST_F(ChannelBusTest, DestructorShutsDown) {
  Register();
  host_.AddOffer(3, kTestClass, kInstance1);
  ConnectBus();
  bus_.reset();
  EXPECT_EQ(host_.CountPosted("unload"), 1u);
  EXPECT_THAT(log_.Get(), ::testing::Contains("remove 3 closed"));
}

TEST_F(ChannelBusTest, HostileInputIsCountedAndTheBusGoesOn) {
  host_.AddOffer(7, kTestClass, kInstance1);
  ConnectBus();
  v1::ControlMessage bogus;
  bogus.mutable_open_result()->set_child_relid(99);
  host_.SendToGuest(bogus);
  v1::ControlMessage torn;
  torn.mutable_gpadl_torndown()->set_gpadl(0x42);
  host_.SendToGuest(torn);
  v1::ControlMessage bad_offer;
  bad_offer.mutable_offer()->set_child_relid(4000);
  host_.SendToGuest(bad_offer);
  ASSERT_TRUE(Eventually([&] { return bus_->stats().host_inputs_ignored == 3; }));
  // An event for a relid with no open channel: spurious, counted.
  ASSERT_TRUE(host_.RaiseEvent(55).ok());
  EXPECT_EQ(bus_->stats().spurious_events, 1u);
  EXPECT_TRUE(bus_->FindChannel(7)->Open(SmallRings(), Deadline()).ok());
  EXPECT_FALSE(Logs().empty());
}

TEST_F(ChannelBusTest, BlockingCallsFromTheControlThreadFailFast) {
  host_.AddOffer(7, kTestClass, kInstance1);
  ConnectBus();
  std::shared_ptr<Channel> channel = bus_->FindChannel(7);
  Mutex mu;
  CondVar cv;
  bool done = false;
  absl::Status inner;
  channel->OpenAsync(SmallRings(), Deadline(), [&](absl::Status s) {
    EXPECT_TRUE(s.ok()) << s;
    // This runs on the control thread: a blocking call here would wait for itself.
    absl::Status closed = channel->Close(Deadline());
    MutexLock lock(&mu);
    inner = closed;
    done = true;
    cv.SignalAll();
  });
  MutexLock lock(&mu);
  ASSERT_TRUE(cv.AwaitWithDeadline(&mu, Deadline(), [&] { return done; }));
  EXPECT_EQ(inner.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(inner.message()), HasSubstr("deadlock"));
}

}  // namespace
}  // namespace vbus
