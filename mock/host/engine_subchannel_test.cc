// HostEngine::OfferSubChannels driven by a scripted raw guest (mock/testing/engine_harness.h):
// a device asked for sub-channels of its open primary; the engine hot-adds the missing ones
// with the primary's offer fields, and refuses what it cannot do without offering anything.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "mock/host/engine.h"
#include "mock/host/engine_test_util.h"
#include "mock/testing/engine_harness.h"
#include "mock/testing/proto_matchers.h"

namespace vbus::mock {
namespace {

using ::testing::ElementsAre;
using testing::EngineHarness;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::kGpadl;
using testing::OfKind;
using testing::ScriptedGuest;
using ::testing::SizeIs;

// A monitored echo primary with every offer field set, so that a copy is visible.
constexpr char kPrimarySpec[] = R"pb(
  device: "echo"
  interface_type { value: "57164f39-9115-4e78-ab55-382f3bd5422d" }
  interface_instance { value: "00000000-1111-2222-3333-444444444444" }
  user_defined: "pipe"
  flags: 0x10
  mmio_megabytes: 7
  monitored: true
  dedicated_interrupt: true
  interrupt_latency: 0x1122334455667788
  reserved: 9
  mmio_megabytes_optional: 3
  monitor_allocated_reserved_bits: 5
  dedicated_interrupt_reserved_bits: 6
)pb";

class EngineSubChannelTest : public ::testing::Test {
 protected:
  EngineSubChannelTest() : g_(h_, "vm") {}

  void SetUp() override {
    g_.Connect();
    absl::StatusOr<v1::OfferResponse> r = h_.Offer("vm", kPrimarySpec);
    ASSERT_TRUE(r.ok()) << r.status();
    primary_ = r->child_relid();
    std::vector<v1::HostToGuest> inbox = g_.Inbox();
    ASSERT_THAT(inbox, SizeIs(1));
    primary_offer_ = inbox[0].control().offer();
    g_.CreateGpadl(primary_, kGpadl, 10, 8);
    g_.Open(primary_, kGpadl, 4);
    h_.TakeEvents();
  }

  // OfferSubChannels at now(), its Actions run by the harness. A refusal emits nothing.
  absl::StatusOr<std::vector<uint32_t>> Request(uint32_t relid, uint32_t count,
                                                const std::string& guest = "") {
    Actions out;
    absl::StatusOr<std::vector<uint32_t>> r =
        h_.engine().OfferSubChannels(guest.empty() ? g_.id() : guest, relid, count, h_.now(), &out);
    if (!r.ok()) {
      EXPECT_THAT(out, IsEmpty()) << r.status();
    }
    h_.Run(std::move(out));
    return r;
  }

  // The offers the guest received since the last look.
  std::vector<v1::Offer> NewOffers() {
    std::vector<v1::Offer> offers;
    for (const v1::HostToGuest& m : g_.Inbox()) {
      EXPECT_TRUE(m.control().has_offer()) << m.ShortDebugString();
      offers.push_back(m.control().offer());
    }
    return offers;
  }

  int ChannelCount() { return h_.engine().ListChannels("vm")->channels_size(); }

  EngineHarness h_;
  ScriptedGuest g_;
  uint32_t primary_ = 0;
  v1::Offer primary_offer_;
};

TEST_F(EngineSubChannelTest, OffersIndexesOneToNWithThePrimarysFields) {
  absl::StatusOr<std::vector<uint32_t>> r = Request(primary_, 3);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(*r, ElementsAre(2u, 3u, 4u));
  std::vector<v1::Offer> offers = NewOffers();
  ASSERT_THAT(offers, SizeIs(3));
  for (uint32_t i = 0; i < 3; ++i) {
    // The primary's offer, but for the relid, its connection id, the index and the monitor id.
    v1::Offer expected = primary_offer_;
    expected.set_child_relid(2 + i);
    expected.set_connection_id(kChannelConnectionIdBase + 2 + i);
    expected.set_sub_channel_index(i + 1);
    expected.set_monitor_id(i + 1);  // the primary has monitor id 0
    std::string diff;
    google::protobuf::util::MessageDifferencer differ;
    differ.ReportDifferencesToString(&diff);
    EXPECT_TRUE(differ.Compare(expected, offers[i])) << i << ": " << diff;

    absl::StatusOr<HostEngine::ChannelSnapshot> c = h_.engine().FindChannel(g_.id(), 2 + i);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->primary_relid, primary_);
    EXPECT_EQ(c->device, "echo");
    EXPECT_EQ(c->state, HostEngine::ChannelState::kOffered);
    EXPECT_TRUE(c->offer_sent);
    EXPECT_EQ(c->monitor_id.value_or(999), i + 1);
  }
  // The events the Offer path emits: one HOST_MESSAGE per offer.
  std::vector<v1::ProtocolEvent> sent = OfKind(h_.TakeEvents(), v1::EVENT_KIND_HOST_MESSAGE);
  ASSERT_THAT(sent, SizeIs(3));
  EXPECT_EQ(sent[2].child_relid(), 4u);
  EXPECT_TRUE(sent[2].message().has_offer());
  // A rescind of the primary takes its new sub-channels first.
  absl::StatusOr<v1::RescindResponse> rescinded = h_.Rescind("vm", primary_);
  ASSERT_TRUE(rescinded.ok());
  EXPECT_THAT(rescinded->rescinded_relids(), ElementsAre(2u, 3u, 4u, primary_));
}

TEST_F(EngineSubChannelTest, UnmonitoredPrimaryGetsUnmonitoredSubChannels) {
  ASSERT_TRUE(h_.Offer("vm", "device: 'echo'").ok());  // relid 2
  g_.Inbox();
  g_.CreateGpadl(2, kGpadl + 1, 20, 8);
  g_.Open(2, kGpadl + 1, 4);
  ASSERT_TRUE(Request(2, 1).ok());
  std::vector<v1::Offer> offers = NewOffers();
  ASSERT_THAT(offers, SizeIs(1));
  EXPECT_FALSE(offers[0].monitor_allocated());
  EXPECT_EQ(offers[0].monitor_id(), 0u);
  EXPECT_EQ(offers[0].sub_channel_index(), 1u);
  EXPECT_FALSE(h_.engine().FindChannel(g_.id(), offers[0].child_relid())->monitor_id.has_value());
}

TEST_F(EngineSubChannelTest, ARepeatedRequestOffersNothing) {
  ASSERT_TRUE(Request(primary_, 3).ok());
  NewOffers();
  h_.TakeEvents();
  for (uint32_t count : {3u, 2u, 1u}) {
    absl::StatusOr<std::vector<uint32_t>> again = Request(primary_, count);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_THAT(*again, IsEmpty()) << count;
  }
  EXPECT_THAT(NewOffers(), IsEmpty());
  EXPECT_THAT(h_.TakeEvents(), IsEmpty());
  EXPECT_EQ(ChannelCount(), 4);
}

TEST_F(EngineSubChannelTest, ARaisedCountOffersOnlyTheMissingLowestIndexes) {
  ASSERT_TRUE(Request(primary_, 2).ok());
  ASSERT_THAT(NewOffers(), SizeIs(2));
  absl::StatusOr<std::vector<uint32_t>> more = Request(primary_, 4);
  ASSERT_TRUE(more.ok());
  EXPECT_THAT(*more, ElementsAre(4u, 5u));
  std::vector<v1::Offer> offers = NewOffers();
  ASSERT_THAT(offers, SizeIs(2));
  EXPECT_EQ(offers[0].sub_channel_index(), 3u);
  EXPECT_EQ(offers[1].sub_channel_index(), 4u);

  // A rescinded sub-channel (index 1, relid 2) is not live: its index is offered again, under
  // a new relid (relid 2 stays taken until the guest releases it).
  ASSERT_TRUE(h_.Rescind("vm", 2).ok());
  g_.Inbox();
  absl::StatusOr<std::vector<uint32_t>> refill = Request(primary_, 4);
  ASSERT_TRUE(refill.ok());
  EXPECT_THAT(*refill, ElementsAre(6u));
  offers = NewOffers();
  ASSERT_THAT(offers, SizeIs(1));
  EXPECT_EQ(offers[0].sub_channel_index(), 1u);
  EXPECT_EQ(offers[0].child_relid(), 6u);
}

TEST_F(EngineSubChannelTest, PrimaryMustBeOpen) {
  ASSERT_TRUE(h_.Offer("vm", "device: 'echo'").ok());  // relid 2: offered, never opened
  g_.Inbox();
  absl::StatusOr<std::vector<uint32_t>> r = Request(2, 1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("relid 2 is not open"));
  // Closed again.
  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(primary_)), IsEmpty());
  EXPECT_EQ(Request(primary_, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(NewOffers(), IsEmpty());
  EXPECT_EQ(ChannelCount(), 2);
}

TEST_F(EngineSubChannelTest, ASubChannelIsNotAPrimary) {
  ASSERT_TRUE(Request(primary_, 1).ok());
  NewOffers();
  g_.CreateGpadl(2, kGpadl + 1, 20, 8);
  g_.Open(2, kGpadl + 1, 4);  // open, yet a sub-channel
  absl::StatusOr<std::vector<uint32_t>> r = Request(2, 2);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("relid 2 is sub-channel 1, not a primary"));
  EXPECT_EQ(ChannelCount(), 2);
}

TEST_F(EngineSubChannelTest, ARescindedPrimaryIsRefused) {
  ASSERT_TRUE(h_.Rescind("vm", primary_).ok());
  g_.Inbox();
  absl::StatusOr<std::vector<uint32_t>> r = Request(primary_, 1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("is rescinded"));
  EXPECT_THAT(NewOffers(), IsEmpty());
}

TEST_F(EngineSubChannelTest, BadCountsAndUnknownNames) {
  for (uint32_t count : {0u, kMaxSubChannels + 1}) {
    absl::StatusOr<std::vector<uint32_t>> r = Request(primary_, count);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << count;
    EXPECT_THAT(r.status().message(),
                HasSubstr(absl::StrCat("count ", count, " is outside 1..64")));
  }
  EXPECT_EQ(Request(primary_, 1, "guest-9").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Request(99, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(NewOffers(), IsEmpty());
  EXPECT_EQ(ChannelCount(), 1);
  // The full 64 is fine.
  absl::StatusOr<std::vector<uint32_t>> all = Request(primary_, kMaxSubChannels);
  ASSERT_TRUE(all.ok());
  EXPECT_THAT(*all, SizeIs(kMaxSubChannels));
  EXPECT_EQ(NewOffers().back().sub_channel_index(), kMaxSubChannels);
}

TEST_F(EngineSubChannelTest, RunningOutOfRelidsOffersNothing) {
  for (int i = 0; i < 31; ++i) {
    ASSERT_TRUE(h_.Offer("vm", "device: 'raw' sub_channel_count: 64").ok()) << i;  // 31 * 65
  }
  ASSERT_TRUE(h_.Offer("vm", "device: 'raw' sub_channel_count: 29").ok());  // 2046 in all
  g_.Inbox();
  const int before = ChannelCount();
  ASSERT_EQ(before, static_cast<int>(protocol::kMaxRelid) - 1);
  absl::StatusOr<std::vector<uint32_t>> r = Request(primary_, 2);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("needs 2 relids; 1 are free"));
  EXPECT_THAT(NewOffers(), IsEmpty());
  EXPECT_EQ(ChannelCount(), before);
  // The one free relid (and the monitor ids) did not leak: one sub-channel still fits.
  ASSERT_TRUE(Request(primary_, 1).ok());
  EXPECT_THAT(NewOffers(), SizeIs(1));
}

TEST_F(EngineSubChannelTest, RunningOutOfMonitorIdsOffersNothing) {
  // The primary holds monitor id 0; these take 64 + 62 more: one is left of 128.
  ASSERT_TRUE(h_.Offer("vm", "device: 'raw' monitored: true sub_channel_count: 63").ok());
  ASSERT_TRUE(h_.Offer("vm", "device: 'raw' monitored: true sub_channel_count: 61").ok());
  g_.Inbox();
  const int before = ChannelCount();
  absl::StatusOr<std::vector<uint32_t>> r = Request(primary_, 3);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("needs 3 monitor ids; 1 are free"));
  EXPECT_THAT(NewOffers(), IsEmpty());
  EXPECT_EQ(ChannelCount(), before);
  // No relid leaked either: the next one is the lowest free.
  absl::StatusOr<std::vector<uint32_t>> one = Request(primary_, 1);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_THAT(*one, ElementsAre(static_cast<uint32_t>(before) + 1));
  std::vector<v1::Offer> offers = NewOffers();
  ASSERT_THAT(offers, SizeIs(1));
  EXPECT_EQ(offers[0].monitor_id(), 127u);
}

}  // namespace
}  // namespace vbus::mock
