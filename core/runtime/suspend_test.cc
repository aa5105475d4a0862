// ChannelBus::Suspend / Resume over TestHost: drivers are suspended (their channels closed),
// the bus unloads, and after the resume every device the host offers again — under whatever
// relid and connection id — is the same Channel object with the same driver, reopened and
// carrying data; a device not offered again is removed, a new one probed; a driver that fails
// its Suspend aborts it; a host that refuses the version or stops answering leaves the bus
// suspended; a multi-queue driver's sub-channels are removed at the suspend and, asked for
// again by its Resume, come back as new channels. Every wait has a deadline; nothing sleeps.
#include <map>
#include <memory>
#include <string>
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
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::kInstance1;
using testing::kInstance2;
using testing::kInstance3;
using testing::kOtherClass;
using testing::kTestClass;
using testing::TestHost;

// What the drivers did, shared by all of them.
struct Journal {
  Mutex mu;
  std::map<Guid, std::vector<std::string>> calls ABSL_GUARDED_BY(mu);
  std::map<Guid, Channel*> channels ABSL_GUARDED_BY(mu);
  std::map<Guid, uint64_t> received ABSL_GUARDED_BY(mu);
  CondVar changed;
  bool fail_suspend_of_instance2 = false;  // set before the bus starts

  void Note(const Guid& instance, std::string call) {
    MutexLock lock(&mu);
    calls[instance].push_back(std::move(call));
    changed.SignalAll();
  }
  std::vector<std::string> Calls(const Guid& instance) {
    MutexLock lock(&mu);
    return calls[instance];
  }
  Channel* ChannelOf(const Guid& instance) {
    MutexLock lock(&mu);
    return channels[instance];
  }
  bool WaitReceived(const Guid& instance, uint64_t n) {
    MutexLock lock(&mu);
    return changed.AwaitWithDeadline(&mu, Deadline(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return received[instance] >= n;
    });
  }
};

// Opens its channel in callback mode and counts what arrives; keeps a counter of its own
// (its state) that must survive the suspend; uses the default Suspend/Resume.
class CountingDriver : public Driver {
 public:
  explicit CountingDriver(Journal* journal) : journal_(journal) {}
  absl::Status Probe(Channel& channel) override {
    instance_ = channel.offer().interface_instance;
    {
      MutexLock lock(&journal_->mu);
      journal_->channels[instance_] = &channel;
    }
    journal_->Note(instance_, "probe");
    ChannelOpenOptions options;
    options.outbound_ring_pages = 4;
    options.inbound_ring_pages = 4;
    Journal* journal = journal_;
    const Guid instance = instance_;
    options.on_packet = [journal, instance](const PacketView&) {
      MutexLock lock(&journal->mu);
      ++journal->received[instance];
      journal->changed.SignalAll();
    };
    return channel.Open(options, Deadline());
  }
  absl::Status Suspend(Channel& channel, absl::Time deadline) override {
    ++cycles_;
    journal_->Note(instance_, absl::StrCat("suspend ", cycles_, " relid ", channel.relid()));
    if (journal_->fail_suspend_of_instance2 && instance_ == kInstance2) {
      return absl::AbortedError("device busy");
    }
    return Driver::Suspend(channel, deadline);
  }
  absl::Status Resume(Channel& channel, absl::Time deadline) override {
    journal_->Note(instance_, absl::StrCat("resume ", cycles_, " relid ", channel.relid()));
    return Driver::Resume(channel, deadline);
  }
  void Remove() override { journal_->Note(instance_, "remove"); }

 private:
  Journal* const journal_;
  Guid instance_;
  int cycles_ = 0;
};

class SuspendTest : public ::testing::Test {
 protected:
  void Start(absl::Duration resume_offer_wait = absl::Seconds(10)) {
    ASSERT_TRUE(registry_
                    .Register({"counting", kTestClass,
                               [this](const OfferInfo&) {
                                 return std::make_unique<CountingDriver>(&journal_);
                               }})
                    .ok());
    host_.AddOffer(5, kTestClass, kInstance1);
    host_.AddOffer(6, kTestClass, kInstance2);
    host_.Update([](TestHost::Rules& r) { r.echo = true; });
    ChannelBusOptions options;
    options.drivers = &registry_;
    options.resume_offer_wait = resume_offer_wait;
    options.on_offer_removed = [this](const OfferInfo& offer, const absl::Status& reason) {
      journal_.Note(offer.interface_instance, absl::StrCat("removed ", reason.ToString()));
    };
    options.log = [](absl::string_view) {};
    absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&host_, options);
    ASSERT_TRUE(bus.ok()) << bus.status();
    bus_ = *std::move(bus);
    ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  }

  // Sends one packet on `instance`'s channel and waits for the host's echo.
  void Echo(const Guid& instance, uint64_t* received_so_far) {
    Channel* channel = journal_.ChannelOf(instance);
    ASSERT_NE(channel, nullptr);
    const uint8_t payload[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ASSERT_TRUE(channel->Send(payload).ok()) << channel->relid();
    ++*received_so_far;
    ASSERT_TRUE(journal_.WaitReceived(instance, *received_so_far)) << channel->relid();
  }

  // The host offers the two devices again, each under a relid of the test's choice.
  void Reoffer(uint32_t relid1, uint32_t relid2) {
    host_.ClearOffers();
    if (relid1 != 0) host_.AddOffer(relid1, kTestClass, kInstance1);
    if (relid2 != 0) host_.AddOffer(relid2, kTestClass, kInstance2);
  }

  Journal journal_;
  DriverRegistry registry_;
  TestHost host_;
  std::unique_ptr<ChannelBus> bus_;
};

TEST_F(SuspendTest, DevicesComeBackUnderPermutedRelidsAsTheSameChannelsAndDrivers) {
  Start();
  uint64_t got1 = 0, got2 = 0;
  Echo(kInstance1, &got1);
  Echo(kInstance2, &got2);
  Channel* channel1 = journal_.ChannelOf(kInstance1);
  Channel* channel2 = journal_.ChannelOf(kInstance2);

  ASSERT_TRUE(bus_->Suspend(Deadline()).ok());
  EXPECT_EQ(bus_->phase(), BusPhase::kSuspended);
  EXPECT_THAT(bus_->Offers(), IsEmpty());
  EXPECT_EQ(host_.CountPosted("unload"), 1u);
  EXPECT_FALSE(host_.IsOpen(5));
  EXPECT_FALSE(channel1->is_open());
  EXPECT_EQ(host_.LiveGpadls(), 0u);
  // Channel calls wait for the resume.
  EXPECT_EQ(channel1->Reopen(Deadline()).code(), absl::StatusCode::kFailedPrecondition);

  Reoffer(/*relid1=*/6, /*relid2=*/5);  // swapped: each relid now names the other device
  ASSERT_TRUE(bus_->Resume(Deadline()).ok());
  EXPECT_EQ(bus_->phase(), BusPhase::kConnected);
  EXPECT_EQ(bus_->FindChannel(6).get(), channel1);
  EXPECT_EQ(bus_->FindChannel(5).get(), channel2);
  EXPECT_EQ(channel1->relid(), 6u);
  EXPECT_EQ(channel1->offer().connection_id, 0x10006u);
  EXPECT_TRUE(channel1->is_open());
  EXPECT_TRUE(host_.IsOpen(6));
  Echo(kInstance1, &got1);
  Echo(kInstance2, &got2);
  // The host heard each device on its new relid.
  EXPECT_GT(host_.EchoedPackets(6) + host_.SignalsFrom(6), 0u);
  EXPECT_THAT(journal_.Calls(kInstance1),
              ::testing::ElementsAre("probe", "suspend 1 relid 5", "resume 1 relid 6"));
  EXPECT_EQ(bus_->stats().offers_resumed, 2u);
  for (const DeviceEntry& device : bus_->Devices()) {
    EXPECT_EQ(device.binding, Binding::kBound);
    EXPECT_EQ(device.offer.relid, device.offer.interface_instance == kInstance1 ? 6u : 5u);
  }
}

TEST_F(SuspendTest, ADeviceNotOfferedAgainIsRemovedAndANewOneProbed) {
  Start(/*resume_offer_wait=*/absl::Milliseconds(50));
  host_.ClearOffers();
  ASSERT_TRUE(bus_->Suspend(Deadline()).ok());
  host_.AddOffer(9, kTestClass, kInstance1);
  host_.AddOffer(10, kTestClass, kInstance3);
  ASSERT_TRUE(bus_->Resume(Deadline()).ok());
  EXPECT_THAT(journal_.Calls(kInstance2),
              ::testing::ElementsAre("probe", "suspend 1 relid 6", "remove",
                                     HasSubstr("removed NOT_FOUND: the device was not offered "
                                               "again after the resume")));
  EXPECT_THAT(journal_.Calls(kInstance3), ::testing::ElementsAre("probe"));
  uint64_t got1 = 0, got3 = 0;
  Echo(kInstance1, &got1);
  Echo(kInstance3, &got3);
  EXPECT_EQ(bus_->Offers().size(), 2u);
}

TEST_F(SuspendTest, ADriverThatCannotSuspendAbortsItAndTheBusStaysConnected) {
  journal_.fail_suspend_of_instance2 = true;
  Start();
  const absl::Status s = bus_->Suspend(Deadline());
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(s.message(), HasSubstr("driver counting (relid 6) failed to suspend: device busy"));
  EXPECT_EQ(bus_->phase(), BusPhase::kConnected);
  EXPECT_EQ(host_.CountPosted("unload"), 0u);
  // The device that had suspended is open again, on its relid.
  uint64_t got1 = 0, got2 = 0;
  Echo(kInstance1, &got1);
  Echo(kInstance2, &got2);
  EXPECT_THAT(journal_.Calls(kInstance1),
              ::testing::ElementsAre("probe", "suspend 1 relid 5", "resume 1 relid 5"));
}

TEST_F(SuspendTest, AHostThatRefusesTheOldVersionLeavesTheBusSuspendedUntilItAccepts) {
  Start();
  ASSERT_TRUE(bus_->Suspend(Deadline()).ok());
  host_.Update([](TestHost::Rules& r) { r.max_version = protocol::kVersion5_2; });
  const absl::Status refused = bus_->Resume(Deadline());
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("refused version 5.3"));
  EXPECT_EQ(bus_->phase(), BusPhase::kSuspended);
  host_.Update([](TestHost::Rules& r) { r.max_version = protocol::kVersion5_3; });
  ASSERT_TRUE(bus_->Resume(Deadline()).ok());
  uint64_t got1 = 0;
  Echo(kInstance1, &got1);
}

TEST_F(SuspendTest, ASuspendTheHostNeverAnswersEndsSuspendedWithDeadlineExceeded) {
  Start();
  host_.Update([](TestHost::Rules& r) { r.answer_unload = false; });
  const absl::Status s = bus_->Suspend(absl::Now() + absl::Milliseconds(200));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(bus_->phase(), BusPhase::kSuspended);
  host_.Update([](TestHost::Rules& r) { r.answer_unload = true; });
  ASSERT_TRUE(bus_->Resume(Deadline()).ok());
  uint64_t got2 = 0;
  Echo(kInstance2, &got2);
}

TEST_F(SuspendTest, ChannelsWithoutADriverThatWereOpenAreReopenedByTheBus) {
  host_.AddOffer(3, testing::kOtherClass, kInstance3);
  Start();
  std::shared_ptr<Channel> plain = bus_->FindChannel(3);
  ASSERT_NE(plain, nullptr);
  ChannelOpenOptions options;
  options.outbound_ring_pages = 4;
  options.inbound_ring_pages = 4;
  ASSERT_TRUE(plain->Open(options, Deadline()).ok());
  ASSERT_TRUE(bus_->Suspend(Deadline()).ok());
  host_.ClearOffers();
  host_.AddOffer(12, testing::kOtherClass, kInstance3);
  host_.AddOffer(5, kTestClass, kInstance1);
  host_.AddOffer(6, kTestClass, kInstance2);
  ASSERT_TRUE(bus_->Resume(Deadline()).ok());
  EXPECT_EQ(plain->relid(), 12u);
  EXPECT_TRUE(plain->is_open());
  EXPECT_TRUE(host_.IsOpen(12));
}

TEST_F(SuspendTest, TwentyCyclesWithRotatingRelidsCarryDataAcrossEach) {
  Start();
  uint64_t got1 = 0, got2 = 0;
  Channel* channel1 = journal_.ChannelOf(kInstance1);
  for (uint32_t cycle = 0; cycle < 20; ++cycle) {
    ASSERT_TRUE(bus_->Suspend(Deadline()).ok()) << cycle;
    const uint32_t relid1 = 20 + (cycle * 7) % 30;
    const uint32_t relid2 = 60 + (cycle * 11) % 30;
    Reoffer(relid1, relid2);
    ASSERT_TRUE(bus_->Resume(Deadline()).ok()) << cycle;
    ASSERT_EQ(channel1->relid(), relid1);
    Echo(kInstance1, &got1);
    Echo(kInstance2, &got2);
  }
  EXPECT_EQ(bus_->stats().offers_resumed, 40u);
  EXPECT_EQ(journal_.Calls(kInstance1).size(), 1u + 2 * 20);
}

// --- Sub-channels across a suspend ------------------------------------------------------

// What the multi-queue driver did, in order, and what each channel received (by relid).
struct QueueLog {
  Mutex mu;
  CondVar changed;
  std::vector<std::string> events ABSL_GUARDED_BY(mu);
  std::map<uint32_t, uint64_t> received ABSL_GUARDED_BY(mu);

  void Add(std::string event) {
    MutexLock lock(&mu);
    events.push_back(std::move(event));
    changed.SignalAll();
  }
  std::vector<std::string> Events() {
    MutexLock lock(&mu);
    return events;
  }
  // Waits until an event starts with `prefix`.
  bool WaitFor(absl::string_view prefix) {
    MutexLock lock(&mu);
    return changed.AwaitWithDeadline(&mu, Deadline(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      for (const std::string& e : events) {
        if (absl::StartsWith(e, prefix)) return true;
      }
      return false;
    });
  }
  bool WaitReceived(uint32_t relid, uint64_t n) {
    MutexLock lock(&mu);
    return changed.AwaitWithDeadline(
        &mu, Deadline(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return received[relid] >= n; });
  }
};

// Opens its primary in Probe and asks for two sub-channels with a packet (the test body plays
// the device: it reads the request and offers them), opens every sub-channel it is told of,
// and after a resume reopens the primary (the default Resume) and asks again.
class MultiQueueDriver : public Driver {
 public:
  explicit MultiQueueDriver(QueueLog* log) : log_(log) {}
  absl::Status Probe(Channel& channel) override {
    primary_ = &channel;
    if (absl::Status s = channel.Open(Rings(channel), Deadline()); !s.ok()) return s;
    return AskForSubChannels(channel, "probe");
  }
  void SubChannelOffered(Channel& sub) override {
    const absl::Status s = sub.Open(Rings(sub), Deadline());
    log_->Add(absl::StrCat("sub ", sub.relid(), " index ", sub.offer().sub_channel_index, " ",
                           s.ToString()));
  }
  void SubChannelRemoved(Channel& sub, const absl::Status& reason) override {
    log_->Add(absl::StrCat("sub removed ", sub.relid(), " ", sub.is_open() ? "open" : "closed", " ",
                           absl::StatusCodeToString(reason.code())));
  }
  absl::Status Suspend(Channel& channel, absl::Time deadline) override {
    log_->Add(absl::StrCat("suspend ", channel.relid()));
    return Driver::Suspend(channel, deadline);
  }
  absl::Status Resume(Channel& channel, absl::Time deadline) override {
    if (absl::Status s = Driver::Resume(channel, deadline); !s.ok()) return s;
    return AskForSubChannels(channel, "resume");
  }
  void Remove() override { primary_->Close(Deadline()).IgnoreError(); }

 private:
  // Small rings whose callback counts packets under the channel's relid (the one it has when
  // they arrive: a reopen after a resume keeps these options).
  ChannelOpenOptions Rings(Channel& channel) {
    ChannelOpenOptions o;
    o.outbound_ring_pages = 4;
    o.inbound_ring_pages = 4;
    QueueLog* log = log_;
    Channel* counted = &channel;
    o.on_packet = [log, counted](const PacketView&) {
      MutexLock lock(&log->mu);
      ++log->received[counted->relid()];
      log->changed.SignalAll();
    };
    return o;
  }
  absl::Status AskForSubChannels(Channel& channel, absl::string_view when) {
    const uint8_t request[8] = {'S', 'U', 'B', 'S', 2, 0, 0, 0};
    const absl::Status sent = channel.Send(request);
    log_->Add(absl::StrCat(when, " ", channel.relid(), " ", sent.ToString()));
    return sent;
  }

  QueueLog* const log_;
  Channel* primary_ = nullptr;
};

class SuspendSubChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_
                    .Register({"multiqueue", kOtherClass,
                               [this](const OfferInfo&) {
                                 return std::make_unique<MultiQueueDriver>(&log_);
                               }})
                    .ok());
    host_.AddOffer(3, kOtherClass, kInstance3);
    ChannelBusOptions options;
    options.drivers = &registry_;
    options.log = [](absl::string_view) {};
    absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&host_, options);
    ASSERT_TRUE(bus.ok()) << bus.status();
    bus_ = *std::move(bus);
    ASSERT_TRUE(bus_->Connect(Deadline()).ok());
  }

  // The device's side of the request on `primary`: read it, then offer the two sub-channels
  // under `sub1` and `sub2`, and wait until the driver has opened both.
  void OfferSubChannels(uint32_t primary, uint32_t sub1, uint32_t sub2) {
    absl::StatusOr<std::vector<testing::HostPacket>> request = host_.ReadFromGuest(primary);
    ASSERT_TRUE(request.ok()) << request.status();
    ASSERT_EQ(request->size(), 1u);
    EXPECT_EQ((*request)[0].payload[4], 2);
    host_.AddOffer(sub1, kOtherClass, kInstance3, 1);
    host_.AddOffer(sub2, kOtherClass, kInstance3, 2);
    ASSERT_TRUE(log_.WaitFor(absl::StrCat("sub ", sub2, " ")));
    EXPECT_TRUE(host_.IsOpen(sub1));
    EXPECT_TRUE(host_.IsOpen(sub2));
  }

  // One packet each way on the channel of `index`, which the host knows as `relid`.
  void ExpectTraffic(uint16_t index, uint32_t relid) {
    std::shared_ptr<Channel> channel = bus_->FindChannel(kInstance3, index);
    ASSERT_NE(channel, nullptr) << index;
    EXPECT_EQ(channel->relid(), relid);
    ASSERT_TRUE(channel->is_open()) << relid;
    const uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ASSERT_TRUE(channel->Send(data).ok()) << relid;
    absl::StatusOr<std::vector<testing::HostPacket>> got = host_.ReadFromGuest(relid);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->size(), 1u) << relid;
    uint64_t before;
    {
      MutexLock lock(&log_.mu);
      before = log_.received[relid];
    }
    ASSERT_TRUE(host_.WriteToGuest(relid, PacketType::kDataInband, 0, 1, data).ok());
    EXPECT_TRUE(log_.WaitReceived(relid, before + 1)) << relid;
  }

  // The relids of the CloseChannel messages the guest sent, in order.
  std::vector<uint32_t> Closes() const {
    std::vector<uint32_t> relids;
    for (const v1::ControlMessage& m : host_.Posted()) {
      if (m.has_close_channel()) relids.push_back(m.close_channel().child_relid());
    }
    return relids;
  }

  QueueLog log_;
  DriverRegistry registry_;
  TestHost host_;
  std::unique_ptr<ChannelBus> bus_;
};

TEST_F(SuspendSubChannelTest, SubChannelsAreRemovedAtTheSuspendAndAskedForAgainAtTheResume) {
  ASSERT_TRUE(log_.WaitFor("probe 3"));
  OfferSubChannels(3, 4, 5);
  ExpectTraffic(1, 4);
  ExpectTraffic(2, 5);
  std::shared_ptr<Channel> old_sub = bus_->FindChannel(kInstance3, 1);
  Channel* primary = bus_->FindChannel(kInstance3).get();

  ASSERT_TRUE(bus_->Suspend(Deadline()).ok());
  // Closed sub-channels first, then the primary; the sub-channels are gone, reported to the
  // driver; the primary is parked.
  EXPECT_THAT(Closes(), ::testing::ElementsAre(4, 5, 3));
  ASSERT_TRUE(log_.WaitFor("sub removed 5"));
  EXPECT_EQ(bus_->FindChannel(kInstance3, 1), nullptr);
  EXPECT_EQ(bus_->FindChannel(kInstance3, 2), nullptr);
  EXPECT_EQ(old_sub->removed_status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(old_sub->is_open());
  EXPECT_EQ(host_.LiveGpadls(), 0u);

  // The host offers the primary again under another relid, and the sub-channels once asked.
  host_.ClearOffers();
  host_.AddOffer(13, kOtherClass, kInstance3);
  ASSERT_TRUE(bus_->Resume(Deadline()).ok());
  ASSERT_TRUE(log_.WaitFor("resume 13"));
  EXPECT_EQ(bus_->FindChannel(kInstance3).get(), primary);
  OfferSubChannels(13, 14, 15);
  std::shared_ptr<Channel> new_sub = bus_->FindChannel(kInstance3, 1);
  ASSERT_NE(new_sub, nullptr);
  EXPECT_NE(new_sub, old_sub);  // a new offer: a new channel
  ExpectTraffic(0, 13);
  ExpectTraffic(1, 14);
  ExpectTraffic(2, 15);
  EXPECT_THAT(log_.Events(), ::testing::ElementsAre(
                                 "probe 3 OK", "sub 4 index 1 OK", "sub 5 index 2 OK", "suspend 3",
                                 "sub removed 4 closed CANCELLED", "sub removed 5 closed CANCELLED",
                                 "resume 13 OK", "sub 14 index 1 OK", "sub 15 index 2 OK"));
  for (const DeviceEntry& device : bus_->Devices()) {
    EXPECT_EQ(device.binding,
              device.offer.sub_channel_index == 0 ? Binding::kBound : Binding::kSubChannel);
  }
  EXPECT_EQ(bus_->Devices().size(), 3u);
  ASSERT_TRUE(bus_->Shutdown(Deadline()).ok());
  EXPECT_THAT(Closes(), ::testing::ElementsAre(4, 5, 3, 14, 15, 13));
}

}  // namespace
}  // namespace vbus
