// Sub-channels as a driver uses them, over TestHost: the driver asks for them through its device
// protocol on the open primary, the host hot-adds them, the driver hears of each on its device's
// strand (Driver::SubChannelOffered) and opens it; they are closed before their primary on every
// path (the primary's Close, shutdown, the primary's rescind) and a rescinded one is reported
// (Driver::SubChannelRemoved). Every wait has a deadline; nothing sleeps.
#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/runtime/channel.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/channel_bus_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

using testing::Deadline;
using ::testing::ElementsAre;
using testing::kInstance1;
using testing::kTestClass;
using testing::TestHost;

ChannelOpenOptions SmallRings() {
  ChannelOpenOptions o;
  o.outbound_ring_pages = 4;
  o.inbound_ring_pages = 4;
  return o;
}

struct Log {
  Mutex mu;
  std::vector<std::string> events ABSL_GUARDED_BY(mu);
  std::vector<std::thread::id> threads ABSL_GUARDED_BY(mu);
  void Add(std::string e) {
    MutexLock lock(&mu);
    events.push_back(std::move(e));
    threads.push_back(std::this_thread::get_id());
  }
  std::vector<std::string> Events() {
    MutexLock lock(&mu);
    return events;
  }
  bool Has(absl::string_view prefix) {
    MutexLock lock(&mu);
    return std::any_of(events.begin(), events.end(),
                       [&](const std::string& e) { return absl::StartsWith(e, prefix); });
  }
  bool OneThread() {
    std::vector<std::thread::id> seen;
    {
      MutexLock lock(&mu);
      seen = threads;
    }
    return std::all_of(seen.begin(), seen.end(),
                       [&](std::thread::id t) { return t == seen.front(); });
  }
};

// Opens its primary in Probe and asks for sub-channels with a packet (what the request means is
// the device's business: here TestHost's test body plays the device and offers them); opens
// every sub-channel it is told of.
class MultiQueueDriver : public Driver {
 public:
  explicit MultiQueueDriver(Log* log) : log_(log) {}
  absl::Status Probe(Channel& channel) override {
    primary_ = &channel;
    if (absl::Status s = channel.Open(SmallRings(), Deadline()); !s.ok()) return s;
    const uint8_t request[8] = {'S', 'U', 'B', 'S', 2, 0, 0, 0};
    absl::Status sent = channel.Send(request);
    log_->Add(absl::StrCat("probe ", channel.relid(), " ", sent.ToString()));
    return sent;
  }
  void SubChannelOffered(Channel& sub) override {
    const absl::Status s = sub.Open(SmallRings(), Deadline());
    log_->Add(absl::StrCat("sub ", sub.relid(), " index ", sub.offer().sub_channel_index, " ",
                           s.ToString()));
  }
  void SubChannelRemoved(Channel& sub, const absl::Status& reason) override {
    log_->Add(absl::StrCat("sub removed ", sub.relid(), " ", sub.is_open() ? "open" : "closed", " ",
                           absl::StatusCodeToString(reason.code())));
    const absl::Status s = sub.Close(Deadline());  // closed already: OK at once
    log_->Add(absl::StrCat("sub close ", sub.relid(), " ", s.ToString()));
  }
  void Remove() override {
    log_->Add(absl::StrCat("remove ", primary_->relid()));
    primary_->Close(Deadline()).IgnoreError();
  }

 private:
  Log* log_;
  Channel* primary_ = nullptr;
};

class SubChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_
                    .Register({"multiqueue", kTestClass,
                               [this](const OfferInfo&) {
                                 return std::make_unique<MultiQueueDriver>(&log_);
                               }})
                    .ok());
    host_.AddOffer(3, kTestClass, kInstance1);
    ChannelBusOptions options;
    options.drivers = &registry_;
    absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&host_, options);
    ASSERT_TRUE(bus.ok()) << bus.status();
    bus_ = std::move(*bus);
    ASSERT_TRUE(bus_->Connect(Deadline()).ok());
    // The device protocol: the driver's request arrives on the primary; the host answers it by
    // hot-adding two sub-channels.
    ASSERT_TRUE(host_.WaitFor([&] { return log_.Has("probe 3"); }, Deadline()));
    absl::StatusOr<std::vector<testing::HostPacket>> request = host_.ReadFromGuest(3);
    ASSERT_TRUE(request.ok()) << request.status();
    ASSERT_EQ(request->size(), 1u);
    EXPECT_EQ((*request)[0].payload[4], 2);
    host_.AddOffer(4, kTestClass, kInstance1, 1);
    host_.AddOffer(5, kTestClass, kInstance1, 2);
    ASSERT_TRUE(host_.WaitFor([&] { return log_.Has("sub 5"); }, Deadline()));
    ASSERT_TRUE(host_.IsOpen(4) && host_.IsOpen(5));
  }

  // The relids of the CloseChannel messages the guest sent, in order.
  std::vector<uint32_t> Closes() const {
    std::vector<uint32_t> relids;
    for (const v1::ControlMessage& m : host_.Posted()) {
      if (m.has_close_channel()) relids.push_back(m.close_channel().child_relid());
    }
    return relids;
  }

  TestHost host_;
  Log log_;
  DriverRegistry registry_;
  std::unique_ptr<ChannelBus> bus_;
};

TEST_F(SubChannelTest, TheDriverHearsOfEachSubChannelOnItsStrandAfterProbeAndOpensIt) {
  EXPECT_THAT(log_.Events(), ElementsAre("probe 3 OK", "sub 4 index 1 OK", "sub 5 index 2 OK"));
  EXPECT_TRUE(log_.OneThread());  // the device's strand, shared by its sub-channels
  // The sub-channels carry data like any channel.
  std::shared_ptr<Channel> sub = bus_->FindChannel(kInstance1, 2);
  ASSERT_NE(sub, nullptr);
  const uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_TRUE(sub->Send(data).ok());
  absl::StatusOr<std::vector<testing::HostPacket>> got = host_.ReadFromGuest(5);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 1u);
}

TEST_F(SubChannelTest, ClosingThePrimaryClosesItsSubChannelsFirst) {
  std::shared_ptr<Channel> primary = bus_->FindChannel(kInstance1, 0);
  ASSERT_TRUE(primary->Close(Deadline()).ok());
  EXPECT_THAT(Closes(), ElementsAre(4, 5, 3));
  std::shared_ptr<Channel> sub = bus_->FindChannel(kInstance1, 1);
  EXPECT_FALSE(sub->is_open());
  EXPECT_TRUE(sub->Close(Deadline()).ok());  // closed with its primary: OK at once
  // A sub-channel cannot be opened while its primary is closed; it can once the primary is.
  EXPECT_EQ(sub->Open(SmallRings(), Deadline()).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(primary->Open(SmallRings(), Deadline()).ok());
  EXPECT_TRUE(sub->Open(SmallRings(), Deadline()).ok());
  EXPECT_TRUE(host_.WaitFor([&] { return host_.LiveGpadls() == 2; }, Deadline()));
}

TEST_F(SubChannelTest, ARescindedSubChannelIsReportedToTheDriverAndTheRestGoOn) {
  host_.Rescind(4);
  ASSERT_TRUE(host_.WaitFor(
      [&] {
        const std::vector<uint32_t> released = host_.Released();
        return std::find(released.begin(), released.end(), 4u) != released.end();
      },
      Deadline()));
  EXPECT_THAT(log_.Events(), ElementsAre("probe 3 OK", "sub 4 index 1 OK", "sub 5 index 2 OK",
                                         "sub removed 4 closed UNAVAILABLE", "sub close 4 OK"));
  EXPECT_TRUE(host_.IsOpen(3));
  EXPECT_TRUE(host_.IsOpen(5));
}

TEST_F(SubChannelTest, ShutdownClosesSubChannelsFirstAndReportsThemBeforeTheDevice) {
  ASSERT_TRUE(bus_->Shutdown(Deadline()).ok());
  std::vector<uint32_t> closes = Closes();
  ASSERT_EQ(closes.size(), 3u);
  EXPECT_EQ(closes.back(), 3u);
  EXPECT_THAT(log_.Events(),
              ElementsAre("probe 3 OK", "sub 4 index 1 OK", "sub 5 index 2 OK",
                          "sub removed 4 closed CANCELLED", "sub close 4 OK",
                          "sub removed 5 closed CANCELLED", "sub close 5 OK", "remove 3"));
}

TEST_F(SubChannelTest, TheRescindOfThePrimaryClosesItsSubChannelsAndRemovesTheDevice) {
  host_.Rescind(3);
  ASSERT_TRUE(host_.WaitFor([&] { return log_.Has("remove 3"); }, Deadline()));
  // The guest closed the sub-channels itself (the host had not rescinded them yet).
  EXPECT_THAT(Closes(), ElementsAre(4, 5));
  EXPECT_FALSE(bus_->FindChannel(kInstance1, 1)->is_open());
  // The host rescinds them afterwards; the device is gone, so nobody is told again.
  host_.Rescind(4);
  host_.Rescind(5);
  ASSERT_TRUE(host_.WaitFor([&] { return host_.Released().size() == 3; }, Deadline()));
  EXPECT_THAT(log_.Events(),
              ElementsAre("probe 3 OK", "sub 4 index 1 OK", "sub 5 index 2 OK", "remove 3"));
}

}  // namespace
}  // namespace vbus
