// HostEngine refusing what a real host refuses, and guests refusing offers:
// - wire limits (core/data/protocol.h, docs/protocol.md §6, §7, §16), each at the limit and one
//   past it: a refusal is a non-zero status (never a crash), counted and reported as an ERROR
//   event naming the limit, with nothing recorded;
// - a guest's RelidReleased for an offer it refused (docs/protocol.md §8): the relid, monitor
//   id and instance are free again and the next offer reuses the relid.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/host/engine.h"
#include "mock/host/engine_test_util.h"
#include "mock/testing/engine_harness.h"

namespace vbus::mock {
namespace {

using testing::Channel;
using testing::EngineHarness;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::kGpadl;
using testing::OfKind;
using testing::ScriptedGuest;
using ::testing::SizeIs;
using testing::WithOffers;

// Memory for two of the largest GPADLs (the engine only checks numbers; no file exists).
constexpr uint64_t kBigGuestPages = 2 * protocol::kMaxGpadlPages + 64;
constexpr uint64_t kFirstPfn = 10;

std::vector<uint64_t> PfnRun(uint64_t first, size_t count) {
  std::vector<uint64_t> pfns(count);
  for (size_t i = 0; i < count; ++i) pfns[i] = first + i;
  return pfns;
}

class EngineLimitsTest : public ::testing::Test {
 protected:
  EngineLimitsTest() : h_(WithOffers({"echo"})), g_(h_, "vm", kBigGuestPages) {}
  void SetUp() override {
    ASSERT_THAT(g_.Connect(protocol::kVersion5_3), SizeIs(1));
    h_.TakeEvents();
  }
  uint32_t GpadlStatus(const v1::ControlMessage& create) {
    std::vector<v1::HostToGuest> r = g_.Send(create);
    EXPECT_THAT(r, SizeIs(1));
    return r.empty() ? 0 : r[0].control().gpadl_created().creation_status();
  }
  uint32_t OpenStatus(const v1::ControlMessage& open) {
    std::vector<v1::HostToGuest> r = g_.Send(open);
    EXPECT_THAT(r, SizeIs(1));
    return r.empty() ? 0 : r[0].control().open_result().status();
  }
  // The detail of the one ERROR event since the last call.
  std::string OneError() {
    std::vector<v1::ProtocolEvent> errors = OfKind(h_.TakeEvents(), v1::EVENT_KIND_ERROR);
    EXPECT_THAT(errors, SizeIs(1));
    return errors.empty() ? "" : errors[0].detail();
  }

  EngineHarness h_;
  ScriptedGuest g_;
};

TEST_F(EngineLimitsTest, AGpadlOfOnePageMoreThanAHostCanReceiveIsRefused) {
  EXPECT_EQ(GpadlStatus(testing::GpadlCreateMsg(1, kGpadl,
                                                PfnRun(kFirstPfn, protocol::kMaxGpadlPages + 1))),
            protocol::kStatusUnsuccessful);
  EXPECT_THAT(OneError(), HasSubstr("GPADL 0xe1e10 lists 8191 pages, more than the 8190 one "
                                    "GPADL holds"));
  EXPECT_EQ(h_.engine().counters().requests_refused, 1u);
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->size(), 0u);
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->page_count(), 0u);
  // At the limit it is created, under the same handle.
  EXPECT_EQ(
      GpadlStatus(testing::GpadlCreateMsg(1, kGpadl, PfnRun(kFirstPfn, protocol::kMaxGpadlPages))),
      protocol::kStatusSuccess);
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->page_count(), protocol::kMaxGpadlPages);
  EXPECT_EQ(h_.engine().counters().requests_refused, 1u);
  EXPECT_EQ(h_.engine().counters().protocol_errors, 0u);
}

TEST_F(EngineLimitsTest, TheLargestRingGpadlOpensSplitAnywhereThatLeavesTwoRings) {
  g_.CreateGpadl(1, kGpadl, kFirstPfn, protocol::kMaxRingPairPages);
  // One page short of a ring on either side, or past the end: refused.
  for (uint32_t offset : {0u, 1u, protocol::kMaxRingPages + 1, protocol::kMaxRingPairPages,
                          protocol::kMaxRingPairPages + 1}) {
    EXPECT_EQ(OpenStatus(testing::OpenChannelMsg(1, kGpadl, offset)), protocol::kStatusUnsuccessful)
        << offset;
    EXPECT_THAT(OneError(), HasSubstr(absl::StrCat("downstream_ring_page_offset ", offset,
                                                   " does not split the 8190-page GPADL into "
                                                   "two rings of at least 2 pages")));
  }
  EXPECT_THAT(h_.map_requests(), IsEmpty());
  EXPECT_EQ(h_.engine().counters().requests_refused, 5u);
  // The largest outbound ring, then the largest inbound ring.
  g_.Open(1, kGpadl, protocol::kMaxRingPages);
  ASSERT_THAT(h_.map_requests(), SizeIs(1));
  EXPECT_EQ(h_.map_requests()[0].outbound_pfns.size(), 8188u);
  EXPECT_EQ(h_.map_requests()[0].inbound_pfns.size(), 2u);
  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(1)), IsEmpty());
  g_.Open(1, kGpadl, protocol::kMinRingPages);
  ASSERT_THAT(h_.map_requests(), SizeIs(2));
  EXPECT_EQ(h_.map_requests()[1].inbound_pfns.size(), 8188u);
  EXPECT_EQ(h_.action_violations(), 0);
}

TEST_F(EngineLimitsTest, ARingGpadlMustCoverItsPagesWhole) {
  v1::ControlMessage partial = testing::GpadlCreateMsg(1, kGpadl, PfnRun(kFirstPfn, 4));
  partial.mutable_gpadl_create()->set_byte_count(4 * protocol::kPageSize - 8);  // a fine GPADL
  ASSERT_EQ(GpadlStatus(partial), protocol::kStatusSuccess);
  EXPECT_EQ(OpenStatus(testing::OpenChannelMsg(1, kGpadl, 2)), protocol::kStatusUnsuccessful);
  EXPECT_THAT(OneError(), HasSubstr("ring GPADL 0xe1e10 covers 16376 bytes, not its 4 pages "
                                    "whole"));
  EXPECT_THAT(h_.map_requests(), IsEmpty());
}

TEST_F(EngineLimitsTest, UserDataFillsItsFieldButNoMore) {
  g_.CreateGpadl(1, kGpadl, kFirstPfn, 4);
  v1::ControlMessage over = testing::OpenChannelMsg(1, kGpadl, 2);
  over.mutable_open_channel()->set_user_data(std::string(protocol::kUserDefinedBytes + 1, 'u'));
  EXPECT_EQ(OpenStatus(over), protocol::kStatusUnsuccessful);
  EXPECT_THAT(OneError(), HasSubstr("user_data has 121 bytes; at most 120"));
  v1::ControlMessage full = testing::OpenChannelMsg(1, kGpadl, 2);
  full.mutable_open_channel()->set_user_data(std::string(protocol::kUserDefinedBytes, 'u'));
  EXPECT_EQ(OpenStatus(full), protocol::kStatusSuccess);
  EXPECT_EQ(h_.engine().counters().requests_refused, 1u);
}

TEST_F(EngineLimitsTest, AnOfferSpecsUserDefinedBytesFitTheOffer) {
  EXPECT_TRUE(
      h_.Offer("vm", absl::StrCat("device: 'echo' user_defined: '", std::string(120, 'u'), "'"))
          .ok());
  EXPECT_EQ(
      h_.Offer("vm", absl::StrCat("device: 'echo' user_defined: '", std::string(121, 'u'), "'"))
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

// --- Offers the guest refuses -----------------------------------------------------------------

TEST(EngineRefusedOfferTest, TheRelidOfARefusedOfferIsReusedByTheNextOffer) {
  EngineHarness h(WithOffers({"echo"}));
  ScriptedGuest g(h, "vm");
  std::vector<v1::Offer> offers = g.Connect();
  ASSERT_THAT(offers, SizeIs(1));
  ASSERT_EQ(offers[0].child_relid(), 1u);
  ASSERT_TRUE(h.Offer("vm", "device: 'sink' monitored: true").ok());  // relid 2, monitor id 0
  g.Inbox();
  h.TakeEvents();
  // The guest refuses relid 2 (say its monitor id was bad) and releases it: no answer.
  EXPECT_THAT(g.Send(testing::RelidReleasedMsg(2)), IsEmpty());
  std::vector<v1::ProtocolEvent> errors = OfKind(h.TakeEvents(), v1::EVENT_KIND_ERROR);
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_EQ(errors[0].detail(),
            "relid_released: the guest refused the offer of relid 2 (sink); the relid is free "
            "again");
  EXPECT_EQ(h.engine().counters().offers_refused_by_guest, 1u);
  EXPECT_EQ(h.engine().counters().protocol_errors, 0u);
  EXPECT_EQ(h.engine().FindChannel(g.id(), 2).status().code(), absl::StatusCode::kNotFound);
  // The next device gets relid 2 and monitor id 0 again, and the guest hears of it.
  absl::StatusOr<v1::OfferResponse> again = h.Offer("vm", "device: 'sink' monitored: true");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->child_relid(), 2u);
  std::vector<v1::HostToGuest> inbox = g.Inbox();
  ASSERT_THAT(inbox, SizeIs(1));
  EXPECT_EQ(inbox[0].control().offer().child_relid(), 2u);
  EXPECT_EQ(inbox[0].control().offer().monitor_id(), 0u);
  // The refused relid's neighbour was untouched.
  EXPECT_EQ(Channel(h, "vm", 1).state(), v1::CHANNEL_STATE_OFFERED);
}

TEST(EngineRefusedOfferTest, ARefusedPrimarysSubChannelsWaitForTheirOwnRelease) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  g.Connect();
  absl::StatusOr<v1::OfferResponse> r = h.Offer("vm", "device: 'echo' sub_channel_count: 2");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->child_relid(), 1u);
  ASSERT_THAT(g.Inbox(), SizeIs(3));
  EXPECT_THAT(g.Send(testing::RelidReleasedMsg(1)), IsEmpty());
  absl::StatusOr<HostEngine::ChannelSnapshot> sub = h.engine().FindChannel(g.id(), 2);
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ(sub->primary_relid, 0u);  // unlinked from the forgotten primary
  // The same instance may be offered again at once; it takes the free relid 1.
  absl::StatusOr<v1::OfferResponse> again =
      h.Offer("vm", absl::StrCat("device: 'echo' interface_instance { value: '",
                                 r->interface_instance().value(), "' }"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->child_relid(), 1u);
  g.Inbox();
  // The guest refuses the old sub-channels too (no primary when they came): both freed.
  EXPECT_THAT(g.Send(testing::RelidReleasedMsg(2)), IsEmpty());
  EXPECT_THAT(g.Send(testing::RelidReleasedMsg(3)), IsEmpty());
  EXPECT_EQ(h.engine().counters().offers_refused_by_guest, 3u);
  EXPECT_EQ(h.engine().counters().protocol_errors, 0u);
  absl::StatusOr<v1::ListChannelsResponse> list = h.engine().ListChannels("vm");
  ASSERT_TRUE(list.ok());
  ASSERT_THAT(list->channels(), SizeIs(1));
  EXPECT_EQ(list->channels(0).child_relid(), 1u);
  // A rescind of the new primary is unaffected by the old sub-channels.
  absl::StatusOr<v1::RescindResponse> rescinded = h.Rescind("vm", 1);
  ASSERT_TRUE(rescinded.ok());
  EXPECT_THAT(rescinded->rescinded_relids(), ::testing::ElementsAre(1u));
}

}  // namespace
}  // namespace vbus::mock
