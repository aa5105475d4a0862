// BusState's suspend and resume (UnloadMode::kSuspend, Resume, DropParked): primaries are
// parked across the unload and matched again by (type, instance) whatever relid the host gives
// them; the version is renegotiated exactly; what the host does not offer again is dropped.
#include <string>
#include <vector>

#include "core/data/protocol.h"
#include "core/state/bus_state.h"
#include "core/state/bus_state_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

inline constexpr Guid kInstanceC = Guid::Literal("cccccccc-0000-1111-2222-333333333333");
inline constexpr Guid kEchoClass2 = Guid::Literal("0e0b6031-5213-4934-818b-38d90ced39db");

RequestId Suspend(BusHarness& h, std::vector<std::string>* actions = nullptr) {
  RequestId id;
  std::vector<std::string> sent = h.Call(
      [](BusState& b, Actions* o) { return b.Unload(kDeadline, o, UnloadMode::kSuspend); }, &id);
  if (actions != nullptr) *actions = sent;
  return id;
}

RequestId Resume(BusHarness& h, std::vector<std::string>* actions = nullptr) {
  RequestId id;
  std::vector<std::string> sent =
      h.Call([](BusState& b, Actions* o) { return b.Resume(kDeadline, o); }, &id);
  if (actions != nullptr) *actions = sent;
  return id;
}

std::vector<uint32_t> ParkedRelids(const BusState& bus) {
  std::vector<uint32_t> relids;
  for (const OfferInfo& offer : bus.ParkedOffers()) relids.push_back(offer.relid);
  return relids;
}

// Two primaries (relids 5 and 6) and a sub-channel of the first (relid 7), at 5.2.
struct Suspended {
  BusHarness h;
  OfferId a, b, sub;
  Suspended() {
    h.Connected(protocol::kVersion5_2);
    a = h.Offered(5, kEchoClass, kInstanceA);
    b = h.Offered(6, kEchoClass, kInstanceB);
    sub = h.Offered(7, kEchoClass, kInstanceA, 1);
    RequestId unload = Suspend(h);
    EXPECT_THAT(h.Host(UnloadResponseMsg()),
                ElementsAre(HasSubstr("offer_removed offer=3 relid=7: CANCELLED: bus unloaded "
                                      "for a suspend"),
                            "offer_parked offer=1 relid=5", "offer_parked offer=2 relid=6",
                            HasSubstr("cancel_timer"), HasSubstr("unload: OK")));
    EXPECT_TRUE(h.CompletionOf(unload).status.ok());
  }
};

TEST(BusStateSuspendTest, TheUnloadParksPrimariesAndRemovesSubChannels) {
  Suspended s;
  EXPECT_EQ(s.h.bus().phase(), BusPhase::kSuspended);
  EXPECT_EQ(s.h.bus().suspended_version(), protocol::kVersion5_2);
  EXPECT_EQ(s.h.bus().version(), 0u);
  EXPECT_THAT(ParkedRelids(s.h.bus()), ElementsAre(5, 6));
  EXPECT_THAT(s.h.bus().Offers(), IsEmpty());
  EXPECT_FALSE(s.h.bus().FindOfferByRelid(5).has_value());
  EXPECT_EQ(s.h.bus().GetChannel(s.a)->offer_state, OfferState::kParked);
  // The sub-channel is released as any removed offer: no RelidReleased (the host forgot it).
  EXPECT_THAT(s.h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(s.sub, o).ok()); }),
              IsEmpty());
  // Connect is not the way back.
  EXPECT_THAT(s.h.Call([](BusState& b, Actions* o) { return b.Connect(kDeadline, o); }),
              ElementsAre(HasSubstr("FAILED_PRECONDITION: connect: the bus is suspended; Resume "
                                    "reconnects it")));
}

TEST(BusStateSuspendTest, ASuspendNeedsChannelsClosedAndGpadlsTornDown) {
  BusHarness h;
  h.Connected();
  const OfferId a = h.Offered(5);
  h.Opened(a);
  EXPECT_THAT(
      h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o, UnloadMode::kSuspend); }),
      ElementsAre(HasSubstr("FAILED_PRECONDITION: unload: channels of relids 5 are not "
                            "closed")));
  RequestId close;
  h.Call([&](BusState& b, Actions* o) { return b.Close(a, kDeadline, o); }, &close);
  h.Host(GpadlTorndownMsg(std::get<RetireChannel>(h.last().front()).relid == 5
                              ? h.bus().GetChannel(a)->gpadls.front()
                              : 0));
  ASSERT_TRUE(h.CompletionOf(close).status.ok());
  RequestId create;
  h.Call([&](BusState& b,
             Actions* o) { return b.CreateGpadl(a, {.pfns = Pfns(300, 2)}, kDeadline, o); },
         &create);
  const uint32_t handle = h.SentGpadl();
  h.Host(GpadlCreatedMsg(5, handle));
  EXPECT_THAT(
      h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o, UnloadMode::kSuspend); }),
      ElementsAre(HasSubstr("FAILED_PRECONDITION: suspend: GPADLs 0xe1e11 (relid 5) are "
                            "not torn down")));
  EXPECT_EQ(h.bus().phase(), BusPhase::kConnected);
}

TEST(BusStateSuspendTest, ResumeRenegotiatesTheSameVersionAndMatchesPrimariesByInstance) {
  Suspended s;
  std::vector<std::string> sent;
  const RequestId resume = Resume(s.h, &sent);
  ASSERT_THAT(sent, ElementsAre(HasSubstr("send InitiateContact{version=5.2"), HasSubstr("arm")));
  EXPECT_THAT(
      s.h.Host(VersionResponseMsg(true, 4)),
      ElementsAre("connection_ready version=5.2 message_connection_id=4", "send RequestOffers{}"));
  // The host swaps the relids and moves the connection ids; a new device appears too.
  v1::ControlMessage b_again = OfferMsg(5, kEchoClass, kInstanceB);
  b_again.mutable_offer()->set_connection_id(0x2005);
  b_again.mutable_offer()->set_monitor_allocated(true);
  b_again.mutable_offer()->set_monitor_id(9);
  EXPECT_THAT(s.h.Host(b_again),
              ElementsAre("offer_resumed offer=2 relid=6->5 connection_id=0x2005 monitor=9"));
  EXPECT_THAT(s.h.Host(OfferMsg(6, kEchoClass, kInstanceA)),
              ElementsAre(HasSubstr("offer_resumed offer=1 relid=5->6")));
  EXPECT_THAT(s.h.Host(OfferMsg(7, kEchoClass, kInstanceC)),
              ElementsAre(HasSubstr("offer_added offer=4 relid=7")));
  // A sub-channel offered again is a new offer of its (resumed) primary.
  EXPECT_THAT(s.h.Host(OfferMsg(8, kEchoClass, kInstanceA, 1)),
              ElementsAre(HasSubstr("offer_added offer=5 relid=8 type=")));
  EXPECT_THAT(s.h.Host(AllOffersDeliveredMsg()),
              ElementsAre(HasSubstr("cancel_timer"), HasSubstr("connect version=5.2: OK")));
  EXPECT_TRUE(s.h.CompletionOf(resume).status.ok());
  EXPECT_EQ(s.h.CompletionOf(resume).version, protocol::kVersion5_2);
  EXPECT_EQ(s.h.bus().phase(), BusPhase::kConnected);
  EXPECT_THAT(s.h.bus().ParkedOffers(), IsEmpty());
  EXPECT_EQ(s.h.bus().FindOfferByRelid(6), s.a);
  EXPECT_EQ(s.h.bus().GetChannel(s.b)->offer.connection_id, 0x2005u);
  EXPECT_EQ(s.h.bus().counters().offers_resumed, 2u);
  // The resumed channel opens under its new relid.
  RequestId open;
  s.h.Call([&](BusState& b, Actions* o) { return b.Open(s.a, SmallRings(), kDeadline, o); }, &open);
  EXPECT_THAT(s.h.Host(GpadlCreatedMsg(6, s.h.SentGpadl())),
              ElementsAre("publish offer=1 relid=6", HasSubstr("send OpenChannel{relid=6")));
}

TEST(BusStateSuspendTest, AHostThatRefusesTheVersionLeavesTheBusSuspended) {
  Suspended s;
  RequestId resume = Resume(s.h);
  s.h.Host(VersionResponseMsg(false));
  EXPECT_EQ(s.h.CompletionOf(resume).status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.h.CompletionOf(resume).status.message(),
              HasSubstr("the host refused version 5.2, the version in use before the suspend"));
  EXPECT_EQ(s.h.bus().phase(), BusPhase::kSuspended);
  EXPECT_THAT(ParkedRelids(s.h.bus()), ElementsAre(5, 6));
  // A later attempt may succeed.
  resume = Resume(s.h);
  s.h.Host(VersionResponseMsg(true, 4));
  s.h.Host(OfferMsg(9, kEchoClass, kInstanceA));
  s.h.Host(OfferMsg(10, kEchoClass, kInstanceB));
  s.h.Host(AllOffersDeliveredMsg());
  EXPECT_TRUE(s.h.CompletionOf(resume).status.ok());
}

TEST(BusStateSuspendTest, APostFailureOrNoAnswerBeforeTheVersionLeavesTheBusSuspended) {
  Suspended s;
  RequestId resume = Resume(s.h);
  const v1::ControlMessage contact = std::get<SendMessage>(s.h.last().front()).message;
  s.h.Do([&](BusState& b, Actions* o) {
    b.OnPostFailed(contact, absl::ResourceExhaustedError("buffers full"), o);
  });
  EXPECT_EQ(s.h.CompletionOf(resume).status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.h.bus().phase(), BusPhase::kSuspended);
  resume = Resume(s.h);
  s.h.Do([&](BusState& b, Actions* o) { b.OnTimer(resume, kDeadline, o); });
  EXPECT_EQ(s.h.CompletionOf(resume).status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(s.h.CompletionOf(resume).status.message(), HasSubstr("still suspended"));
  EXPECT_EQ(s.h.bus().phase(), BusPhase::kSuspended);
  EXPECT_THAT(ParkedRelids(s.h.bus()), ElementsAre(5, 6));
}

TEST(BusStateSuspendTest, AMissingPrimaryStaysParkedUntilOfferedLateOrDropped) {
  Suspended s;
  const RequestId resume = Resume(s.h);
  s.h.Host(VersionResponseMsg(true, 4));
  s.h.Host(OfferMsg(11, kEchoClass, kInstanceA));
  s.h.Host(AllOffersDeliveredMsg());
  EXPECT_TRUE(s.h.CompletionOf(resume).status.ok());
  EXPECT_THAT(ParkedRelids(s.h.bus()), ElementsAre(6));
  EXPECT_EQ(s.h.bus().suspended_version(), 0u);
  // Offered late: still matched.
  EXPECT_THAT(s.h.Host(OfferMsg(12, kEchoClass, kInstanceB)),
              ElementsAre(HasSubstr("offer_resumed offer=2 relid=6->12")));

  Suspended t;
  Resume(t.h);
  t.h.Host(VersionResponseMsg(true, 4));
  t.h.Host(OfferMsg(11, kEchoClass, kInstanceA));
  t.h.Host(AllOffersDeliveredMsg());
  EXPECT_THAT(t.h.Do([](BusState& b, Actions* o) {
    b.DropParked(absl::NotFoundError("not offered again"), o);
  }),
              ElementsAre("offer_removed offer=2 relid=6: NOT_FOUND: not offered again"));
  EXPECT_THAT(t.h.bus().ParkedOffers(), IsEmpty());
  EXPECT_THAT(t.h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(t.b, o).ok()); }),
              IsEmpty());
  // Now an offer of that instance is a new device.
  EXPECT_THAT(t.h.Host(OfferMsg(12, kEchoClass, kInstanceB)),
              ElementsAre(HasSubstr("offer_added offer=")));
}

TEST(BusStateSuspendTest, AnUnansweredSuspendStillParks) {
  BusHarness h;
  h.Connected();
  h.Offered(5);
  const RequestId unload = Suspend(h);
  h.Do([&](BusState& b, Actions* o) { b.OnTimer(unload, kDeadline, o); });
  EXPECT_EQ(h.CompletionOf(unload).status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(h.bus().phase(), BusPhase::kSuspended);
  EXPECT_THAT(ParkedRelids(h.bus()), ElementsAre(5));
  // A late UnloadResponse changes nothing.
  EXPECT_THAT(h.Host(UnloadResponseMsg()), ElementsAre(HasSubstr("ignored")));
}

TEST(BusStateSuspendTest, LosingTheLinkRemovesWhatWasParked) {
  Suspended s;
  EXPECT_THAT(s.h.Do([](BusState& b, Actions* o) { b.OnLinkLost(absl::AbortedError("gone"), o); }),
              ElementsAre(HasSubstr("offer_removed offer=1 relid=5: UNAVAILABLE"),
                          HasSubstr("offer_removed offer=2 relid=6: UNAVAILABLE")));
  EXPECT_EQ(s.h.bus().phase(), BusPhase::kDisconnected);
  EXPECT_THAT(s.h.bus().ParkedOffers(), IsEmpty());
  // And a Resume is refused; Connect works again.
  EXPECT_THAT(s.h.Call([](BusState& b, Actions* o) { return b.Resume(kDeadline, o); }),
              ElementsAre(HasSubstr("resume: the bus is disconnected, not suspended")));
  EXPECT_THAT(s.h.Call([](BusState& b, Actions* o) { return b.Connect(kDeadline, o); }), SizeIs(2));
}

// A hostile or confused host around a resume: nothing it sends while the guest is suspended is
// taken, a parked device is matched once and only as a primary of its own class, and every
// refusal gives the relid back.
TEST(BusStateSuspendTest, AHostileHostAroundAResumeGetsNothingWrongIn) {
  Suspended s;
  // While suspended: offers, answers and rescinds are ignored; nothing is sent.
  for (const v1::ControlMessage& m :
       {OfferMsg(9, kEchoClass, kInstanceA), VersionResponseMsg(true, 4), UnloadResponseMsg(),
        AllOffersDeliveredMsg(), RescindMsg(5), OpenResultMsg(5, 1)}) {
    const std::vector<std::string> actions = s.h.Host(m);
    ASSERT_EQ(actions.size(), 1u) << DescribeControlMessage(m);
    EXPECT_THAT(actions.front(), HasSubstr("ignored")) << DescribeControlMessage(m);
  }
  EXPECT_THAT(ParkedRelids(s.h.bus()), ElementsAre(5, 6));
  Resume(s.h);
  s.h.Host(VersionResponseMsg(true, 4));
  // The parked instance offered as a sub-channel first: no primary yet, refused.
  EXPECT_THAT(s.h.Host(OfferMsg(20, kEchoClass, kInstanceA, 1)),
              ElementsAre(HasSubstr("ignored sub_channel_without_primary"),
                          "send RelidReleased{relid=20}"));
  // The parked instance under another device class: a different device, not a resume.
  EXPECT_THAT(s.h.Host(OfferMsg(21, kEchoClass2, kInstanceA)),
              ElementsAre(HasSubstr("offer_added offer=4 relid=21")));
  // Matched once; a second offer of the same instance is a duplicate.
  EXPECT_THAT(s.h.Host(OfferMsg(22, kEchoClass, kInstanceA)),
              ElementsAre(HasSubstr("offer_resumed offer=1 relid=5->22")));
  EXPECT_THAT(
      s.h.Host(OfferMsg(23, kEchoClass, kInstanceA)),
      ElementsAre(HasSubstr("ignored offer_duplicate_instance"), "send RelidReleased{relid=23}"));
  // A resumed device's relid offered again for the other parked device: the relid is taken.
  EXPECT_THAT(s.h.Host(OfferMsg(22, kEchoClass, kInstanceB)),
              ElementsAre(HasSubstr("ignored offer_duplicate_relid")));
  EXPECT_THAT(ParkedRelids(s.h.bus()), ElementsAre(6));
  EXPECT_TRUE(s.h.bus().CheckInvariants().ok());
}

}  // namespace
}  // namespace vbus::testing
