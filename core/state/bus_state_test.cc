// BusState: connection tests — negotiation, fallback, deadlines, unload, link loss.
#include "core/state/bus_state.h"

#include "absl/strings/str_cat.h"
#include "core/state/bus_state_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

RequestId Connect(BusHarness& h, std::vector<std::string>* actions = nullptr) {
  RequestId id;
  auto out = h.Call([](BusState& b, Actions* o) { return b.Connect(kDeadline, o); }, &id);
  if (actions != nullptr) *actions = out;
  return id;
}

BusConfig ConfigWithPages() {
  BusConfig c;
  c.target_vcpu = 1;
  c.interrupt_page = 0x5000;
  c.monitor_page1 = 0x6000;
  c.monitor_page2 = 0x7000;
  return c;
}

TEST(BusStateConnectTest, NegotiatesNewestFirstThenRequestsOffers) {
  BusHarness h(ConfigWithPages());
  std::vector<std::string> out;
  Connect(h, &out);
  EXPECT_THAT(out, ElementsAre("send InitiateContact{version=5.3 vcpu=1 sint=2 vtl=0 "
                               "interrupt_page=0x0 monitor1=0x6000 monitor2=0x7000}",
                               "arm_timer request=1 at=+10s"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kNegotiating);
  EXPECT_THAT(
      h.Host(VersionResponseMsg(true, 4)),
      ElementsAre("connection_ready version=5.3 message_connection_id=4", "send RequestOffers{}"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kConnected);
  EXPECT_EQ(h.bus().version(), protocol::kVersion5_3);
  EXPECT_EQ(h.bus().message_connection_id(), 4u);
  EXPECT_FALSE(h.bus().all_offers_delivered());
  EXPECT_THAT(h.Host(OfferMsg(7, kEchoClass, kInstanceA)),
              ElementsAre("offer_added offer=1 relid=7 type=8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501 "
                          "instance=11111111-2222-3333-4444-555555555555"));
  EXPECT_THAT(h.Host(AllOffersDeliveredMsg()),
              ElementsAre("cancel_timer request=1", "complete request=1 connect version=5.3: OK"));
  EXPECT_TRUE(h.bus().all_offers_delivered());
  EXPECT_EQ(h.bus().pending_requests(), 0u);
}

TEST(BusStateConnectTest, FallsBackThroughEveryVersionThenFails) {
  BusHarness h(ConfigWithPages());
  std::vector<std::string> out;
  const RequestId id = Connect(h, &out);
  std::vector<std::string> sent = {out[0]};
  for (int i = 0; i < 7; ++i) {
    auto step = h.Host(VersionResponseMsg(false));
    ASSERT_EQ(step.size(), 1u) << i;
    sent.push_back(step[0]);
  }
  EXPECT_THAT(sent,
              ElementsAre("send InitiateContact{version=5.3 vcpu=1 sint=2 vtl=0 interrupt_page=0x0 "
                          "monitor1=0x6000 monitor2=0x7000}",
                          "send InitiateContact{version=5.2 vcpu=1 sint=2 vtl=0 interrupt_page=0x0 "
                          "monitor1=0x6000 monitor2=0x7000}",
                          "send InitiateContact{version=5.1 vcpu=1 sint=2 vtl=0 interrupt_page=0x0 "
                          "monitor1=0x6000 monitor2=0x7000}",
                          "send InitiateContact{version=5.0 vcpu=1 sint=2 vtl=0 interrupt_page=0x0 "
                          "monitor1=0x6000 monitor2=0x7000}",
                          // Below 5.0: the legacy interrupt page, no SINT/VTL.
                          "send InitiateContact{version=4.1 vcpu=1 sint=0 vtl=0 "
                          "interrupt_page=0x5000 monitor1=0x6000 monitor2=0x7000}",
                          "send InitiateContact{version=4.0 vcpu=1 sint=0 vtl=0 "
                          "interrupt_page=0x5000 monitor1=0x6000 monitor2=0x7000}",
                          "send InitiateContact{version=3.0 vcpu=1 sint=0 vtl=0 "
                          "interrupt_page=0x5000 monitor1=0x6000 monitor2=0x7000}",
                          "send InitiateContact{version=2.4 vcpu=1 sint=0 vtl=0 "
                          "interrupt_page=0x5000 monitor1=0x6000 monitor2=0x7000}"));
  EXPECT_THAT(h.Host(VersionResponseMsg(false)),
              ElementsAre("cancel_timer request=1",
                          "complete request=1 connect: FAILED_PRECONDITION: connect: host "
                          "accepted none of versions 5.3, 5.2, 5.1, 5.0, 4.1, 4.0, 3.0, 2.4 "
                          "(last: host does not support version 2.4)"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kDisconnected);
  EXPECT_EQ(h.bus().pending_requests(), 0u);
  (void)id;
  // Usable afterwards: a new attempt starts over at 5.3.
  Connect(h, &out);
  EXPECT_THAT(out[0], ::testing::HasSubstr("version=5.3"));
}

TEST(BusStateConnectTest, MaxVersionPicksTheNewestKnownVersionNotAboveIt) {
  BusConfig c;
  c.max_version = protocol::MakeVersion(4, 7);  // unknown: start at 4.1
  BusHarness h(c);
  std::vector<std::string> out;
  Connect(h, &out);
  EXPECT_THAT(out[0], ::testing::HasSubstr("version=4.1"));
}

TEST(BusStateConnectTest, MaxVersionBelow24IsInvalidArgument) {
  BusConfig c;
  c.max_version = protocol::MakeVersion(1, 1);
  BusHarness h(c);
  std::vector<std::string> out;
  Connect(h, &out);
  EXPECT_THAT(out, ElementsAre("complete request=1 connect: INVALID_ARGUMENT: connect: "
                               "max_version 1.1 is older than the oldest supported version 2.4"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kDisconnected);
}

TEST(BusStateConnectTest, BelowFiveTheReturnedConnectionIdIsNotUsed) {
  BusConfig c;
  c.max_version = protocol::kVersion4_0;
  BusHarness h(c);
  Connect(h);
  EXPECT_THAT(
      h.Host(VersionResponseMsg(true, 9)),
      ElementsAre("connection_ready version=4.0 message_connection_id=0", "send RequestOffers{}"));
  EXPECT_EQ(h.bus().message_connection_id(), 0u);
}

TEST(BusStateConnectTest, RejectedConnectionOnFiveXTriesTheNextVersion) {
  BusHarness h;
  Connect(h);
  const v1::ControlMessage contact = std::get<SendMessage>(h.last()[0]).message;
  auto out = h.Do([&](BusState& b, Actions* o) {
    b.OnPostFailed(contact, absl::NotFoundError("HV_STATUS_INVALID_CONNECTION_ID"), o);
  });
  ASSERT_EQ(out.size(), 1u);
  EXPECT_THAT(out[0], ::testing::HasSubstr("InitiateContact{version=5.2"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kNegotiating);
}

TEST(BusStateConnectTest, OtherPostFailuresEndTheConnection) {
  BusHarness h;
  Connect(h);
  const v1::ControlMessage contact = std::get<SendMessage>(h.last()[0]).message;
  EXPECT_THAT(
      h.Do([&](BusState& b, Actions* o) {
        b.OnPostFailed(contact, absl::UnavailableError("stream closed"), o);
      }),
      ElementsAre("cancel_timer request=1",
                  "complete request=1 connect: UNAVAILABLE: connect failed: host link lost: "
                  "UNAVAILABLE: posting InitiateContact failed: stream closed"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kDisconnected);
}

TEST(BusStateConnectTest, NoVersionResponseByTheDeadline) {
  BusHarness h;
  const RequestId id = Connect(h);
  EXPECT_THAT(
      h.Do([&](BusState& b, Actions* o) { b.OnTimer(id, kDeadline, o); }),
      ElementsAre("complete request=1 connect: DEADLINE_EXCEEDED: connect: no "
                  "VersionResponse to InitiateContact for version 5.3 before the deadline"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kDisconnected);
  // The late answer is ignored and counted; the bus reconnects.
  EXPECT_THAT(h.Host(VersionResponseMsg(true, 4)),
              ElementsAre("ignored unexpected_version_response: FAILED_PRECONDITION: "
                          "VersionResponse with no InitiateContact waiting (bus disconnected)"));
  h.Connected();
}

TEST(BusStateConnectTest, NoAllOffersDeliveredByTheDeadlineKeepsTheConnection) {
  BusHarness h;
  const RequestId id = Connect(h);
  h.Host(VersionResponseMsg(true, 4));
  h.Offered(3);
  EXPECT_THAT(
      h.Do([&](BusState& b, Actions* o) { b.OnTimer(id, kDeadline + absl::Seconds(1), o); }),
      ElementsAre("complete request=1 connect: DEADLINE_EXCEEDED: connect: version 5.3 "
                  "agreed, but the host had not sent AllOffersDelivered by the deadline "
                  "(1 offers so far)"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kConnected);
  // Later offers and the late AllOffersDelivered are still taken.
  h.Offered(4, kEchoClass, kInstanceB);
  EXPECT_THAT(h.Host(AllOffersDeliveredMsg()), IsEmpty());
  EXPECT_TRUE(h.bus().all_offers_delivered());
  EXPECT_EQ(h.bus().Offers().size(), 2u);
}

TEST(BusStateConnectTest, EarlyTimerIsArmedAgainAndStaleTimerIsIgnored) {
  BusHarness h;
  const RequestId id = Connect(h);
  EXPECT_THAT(
      h.Do([&](BusState& b, Actions* o) { b.OnTimer(id, kDeadline - absl::Seconds(1), o); }),
      ElementsAre("arm_timer request=1 at=+10s"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kNegotiating);
  h.Host(VersionResponseMsg(true, 4));
  h.Host(AllOffersDeliveredMsg());
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { b.OnTimer(id, kDeadline, o); }), IsEmpty());
  EXPECT_EQ(h.bus().phase(), BusPhase::kConnected);
}

TEST(BusStateConnectTest, InfiniteDeadlineArmsNoTimer) {
  BusHarness h;
  EXPECT_THAT(h.Call([](BusState& b, Actions* o) { return b.Connect(absl::InfiniteFuture(), o); }),
              ElementsAre(::testing::StartsWith("send InitiateContact{version=5.3")));
}

TEST(BusStateConnectTest, ConnectTwiceIsFailedPrecondition) {
  BusHarness h;
  h.Connected();
  std::vector<std::string> out;
  Connect(h, &out);
  EXPECT_THAT(out, ElementsAre("complete request=2 connect: FAILED_PRECONDITION: connect: the bus "
                               "is already connected"));
}

TEST(BusStateUnloadTest, UnloadRemovesEveryOfferAndAllowsReconnect) {
  BusHarness h;
  h.Connected();
  const OfferId a = h.Offered(7);
  RequestId unload;
  EXPECT_THAT(h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o); }, &unload),
              ElementsAre("send Unload{}", "arm_timer request=2 at=+10s"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kUnloading);
  // Opens are refused while unloading.
  EXPECT_THAT(
      h.Call([&](BusState& b, Actions* o) { return b.Open(a, SmallRings(), kDeadline, o); }),
      ElementsAre("complete request=3 open offer=1: FAILED_PRECONDITION: open of relid 7: "
                  "the bus is unloading"));
  EXPECT_THAT(h.Host(UnloadResponseMsg()),
              ElementsAre("offer_removed offer=1 relid=7: CANCELLED: bus unloaded",
                          "cancel_timer request=2", "complete request=2 unload: OK"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kDisconnected);
  EXPECT_EQ(h.bus().GetChannel(a)->offer_state, OfferState::kDetached);
  // Released without RelidReleased (the connection is gone).
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(a, o).ok()); }),
              IsEmpty());
  h.Connected();
  const OfferId again = h.Offered(7);
  EXPECT_NE(again, a);
}

TEST(BusStateUnloadTest, UnloadNeedsVersion30AndClosedChannels) {
  {
    BusConfig c;
    c.max_version = protocol::kVersion2_4;
    BusHarness h(c);
    h.Connected(protocol::kVersion2_4);
    EXPECT_THAT(h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o); }),
                ElementsAre("complete request=2 unload: FAILED_PRECONDITION: unload needs protocol "
                            "3.0 or newer; negotiated 2.4"));
  }
  BusHarness h;
  h.Connected();
  h.Opened(h.Offered(7));
  h.Opened(h.Offered(9, kEchoClass, kInstanceB));
  EXPECT_THAT(h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o); }),
              ElementsAre("complete request=4 unload: FAILED_PRECONDITION: unload: channels of "
                          "relids 7, 9 are not closed; close them first"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kConnected);
}

// A forced unload (crash dump, kexec) goes ahead with channels open: every channel is retired
// and every call on a channel completes before the Unload goes out; the GPADLs stay reserved
// (their memory held) until the offers are released after the UnloadResponse.
TEST(BusStateUnloadTest, AForcedUnloadRetiresEveryChannelThenUnloads) {
  BusHarness h;
  h.Connected();
  const OfferId open = h.Offered(7);
  const OfferId opening = h.Offered(8, kEchoClass, kInstanceB);
  const uint32_t ring = h.Opened(open);
  GpadlParams p;
  p.pfns = Pfns(500, 2);
  h.Call([&](BusState& b, Actions* o) { return b.CreateGpadl(open, p, kDeadline, o); });
  h.Call([&](BusState& b, Actions* o) { return b.Open(opening, SmallRings(), kDeadline, o); });
  const uint32_t opening_ring = h.SentGpadl();
  EXPECT_THAT(
      h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o, UnloadMode::kForced); }),
      ElementsAre("retire offer=1 relid=7", "cancel_timer request=3",
                  "complete request=3 gpadl_create offer=1: CANCELLED: GPADL 0xe1e11 of relid 7 "
                  "failed: the bus is unloading with the channel open",
                  "cancel_timer request=4",
                  "complete request=4 open offer=2: CANCELLED: open of relid 8 failed: the bus is "
                  "unloading with the channel open",
                  "send Unload{}", "arm_timer request=5 at=+10s"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kUnloading);
  EXPECT_EQ(h.bus().GetChannel(open)->channel_state, ChannelState::kClosed);
  EXPECT_EQ(h.bus().Gpadls().size(), 3u);  // nothing released before the host has unloaded
  // The host's answer to the abandoned open crosses the Unload: nothing reopens.
  EXPECT_THAT(h.Host(GpadlCreatedMsg(8, opening_ring)),
              ElementsAre(::testing::StartsWith("ignored gpadl_created_unexpected")));
  EXPECT_THAT(h.Host(UnloadResponseMsg()),
              ElementsAre("offer_removed offer=1 relid=7: CANCELLED: bus unloaded",
                          "offer_removed offer=2 relid=8: CANCELLED: bus unloaded",
                          "cancel_timer request=5", "complete request=5 unload: OK"));
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { EXPECT_TRUE(b.ReleaseOffer(open, o).ok()); }),
              ElementsAre(absl::StrCat("release_gpadl offer=1 gpadl=0x", absl::Hex(ring)),
                          "release_gpadl offer=1 gpadl=0xe1e11"));
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { EXPECT_TRUE(b.ReleaseOffer(opening, o).ok()); }),
              ElementsAre(absl::StrCat("release_gpadl offer=2 gpadl=0x", absl::Hex(opening_ring))));
  EXPECT_THAT(h.bus().Gpadls(), ::testing::IsEmpty());
  EXPECT_EQ(h.bus().phase(), BusPhase::kDisconnected);
}

TEST(BusStateUnloadTest, AForcedUnloadStillNeedsVersion30) {
  BusConfig c;
  c.max_version = protocol::kVersion2_4;
  BusHarness h(c);
  h.Connected(protocol::kVersion2_4);
  h.Opened(h.Offered(7));
  EXPECT_THAT(
      h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o, UnloadMode::kForced); }),
      ElementsAre("complete request=3 unload: FAILED_PRECONDITION: unload needs protocol 3.0 or "
                  "newer; negotiated 2.4"));
  EXPECT_EQ(h.bus().GetChannel(OfferId(1))->channel_state, ChannelState::kOpen);
}

TEST(BusStateUnloadTest, UnloadDeadlineEndsTheConnection) {
  BusHarness h;
  h.Connected();
  h.Offered(7);
  RequestId unload;
  h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o); }, &unload);
  EXPECT_THAT(
      h.Do([&](BusState& b, Actions* o) { b.OnTimer(unload, kDeadline, o); }),
      ElementsAre("offer_removed offer=1 relid=7: DEADLINE_EXCEEDED: bus unload timed out",
                  "complete request=2 unload: DEADLINE_EXCEEDED: unload: no UnloadResponse before "
                  "the deadline"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kDisconnected);
  EXPECT_THAT(h.Host(UnloadResponseMsg()),
              ElementsAre("ignored not_negotiated: FAILED_PRECONDITION: host sent UnloadResponse "
                          "before a version was agreed (bus disconnected)"));
}

// Found by the deterministic simulation (test/sim, seed 66 before the fix): a rescind that
// crosses the guest's Unload must not be answered with RelidReleased. The host forgets every
// relid when it reads the Unload and refuses whatever follows it.
TEST(BusStateUnloadTest, RescindCrossingUnloadIsReleasedWithoutRelidReleased) {
  BusHarness h;
  h.Connected();
  const OfferId a = h.Offered(7);
  h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o); });
  EXPECT_THAT(h.Host(RescindMsg(7)),
              ElementsAre("offer_removed offer=1 relid=7: UNAVAILABLE: relid 7 rescinded by host"));
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(a, o).ok()); }),
              IsEmpty());
  EXPECT_THAT(h.Host(UnloadResponseMsg()),
              ElementsAre("cancel_timer request=2", "complete request=2 unload: OK"));
}

// Found by the simulation (seed 26): no GpadlTeardown after the Unload; the unload drops the
// GPADL and the release follows the offer's.
TEST(BusStateUnloadTest, GpadlTeardownIsRefusedWhileUnloading) {
  BusHarness h;
  h.Connected();
  const OfferId a = h.Offered(7);
  h.Call([&](BusState& b, Actions* o) {
    GpadlParams p;
    p.pfns = Pfns(100, 2);
    return b.CreateGpadl(a, p, kDeadline, o);
  });
  const uint32_t handle = h.SentGpadl();
  h.Host(GpadlCreatedMsg(7, handle));
  h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o); });
  EXPECT_THAT(
      h.Call([&](BusState& b, Actions* o) { return b.TeardownGpadl(a, handle, kDeadline, o); }),
      ElementsAre("complete request=4 gpadl_teardown offer=1: FAILED_PRECONDITION: "
                  "teardown of GPADL 0xe1e10: the bus is unloading"));
  EXPECT_THAT(h.Host(UnloadResponseMsg()),
              ElementsAre("offer_removed offer=1 relid=7: CANCELLED: bus unloaded",
                          "cancel_timer request=3", "complete request=3 unload: OK"));
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(a, o).ok()); }),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10"));
}

// The same for a GPADL whose creation timed out and whose GpadlCreated arrives while
// unloading: it is not torn down after the Unload (the host has forgotten it), the unload
// drops it.
TEST(BusStateUnloadTest, AbandonedGpadlConfirmedWhileUnloadingIsDroppedByTheUnload) {
  BusHarness h;
  h.Connected();
  const OfferId a = h.Offered(7);
  RequestId create;
  h.Call(
      [&](BusState& b, Actions* o) {
        GpadlParams p;
        p.pfns = Pfns(100, 2);
        return b.CreateGpadl(a, p, kDeadline, o);
      },
      &create);
  const uint32_t handle = h.SentGpadl();
  h.Do([&](BusState& b, Actions* o) { b.OnTimer(create, kDeadline, o); });
  h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o); });
  EXPECT_THAT(h.Host(GpadlCreatedMsg(7, handle)), IsEmpty());
  EXPECT_THAT(h.Host(UnloadResponseMsg()),
              ElementsAre("offer_removed offer=1 relid=7: CANCELLED: bus unloaded",
                          "cancel_timer request=3", "complete request=3 unload: OK"));
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(a, o).ok()); }),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10"));
}

TEST(BusStateLinkTest, LinkLostMidOpenFailsWithUnavailableAndDetachesOffers) {
  BusHarness h;
  h.Connected();
  const OfferId open_offer = h.Offered(7);
  const OfferId idle_offer = h.Offered(8, kEchoClass, kInstanceB);
  RequestId open;
  h.Call([&](BusState& b, Actions* o) { return b.Open(open_offer, SmallRings(), kDeadline, o); },
         &open);
  h.Host(GpadlCreatedMsg(7, 0xE1E10));  // published, OpenChannel sent
  EXPECT_THAT(
      h.Do(
          [](BusState& b, Actions* o) { b.OnLinkLost(absl::UnavailableError("stream reset"), o); }),
      ElementsAre("retire offer=1 relid=7", "cancel_timer request=2",
                  "complete request=2 open offer=1: UNAVAILABLE: open of relid 7 failed: host link "
                  "lost: UNAVAILABLE: stream reset",
                  "offer_removed offer=1 relid=7: UNAVAILABLE: host link lost: UNAVAILABLE: "
                  "stream reset",
                  "offer_removed offer=2 relid=8: UNAVAILABLE: host link lost: UNAVAILABLE: "
                  "stream reset"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kDisconnected);
  EXPECT_EQ(h.bus().pending_requests(), 0u);
  EXPECT_TRUE(h.bus().Offers().empty());
  // GPADL memory is released with the offer; no message goes out.
  EXPECT_THAT(
      h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(open_offer, o).ok()); }),
      ElementsAre("release_gpadl offer=1 gpadl=0xe1e10"));
  EXPECT_THAT(
      h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(idle_offer, o).ok()); }),
      IsEmpty());
  EXPECT_TRUE(h.bus().Gpadls().empty());
}

TEST(BusStateLinkTest, RelidsOfDetachedOffersAreFreeForTheNextConnection) {
  BusHarness h;
  h.Connected();
  const OfferId old = h.Offered(7);
  h.Do([](BusState& b, Actions* o) { b.OnLinkLost(absl::UnavailableError("gone"), o); });
  h.Connected();
  // The runtime has not released the old offer yet; relid 7 is nevertheless free.
  const OfferId fresh = h.Offered(7);
  EXPECT_NE(fresh, old);
  EXPECT_EQ(h.bus().FindOfferByRelid(7), fresh);
  EXPECT_EQ(h.bus().GetChannel(old)->offer_state, OfferState::kDetached);
}

TEST(BusStateLinkTest, ReleaseOfferChecksItsArgument) {
  BusHarness h;
  h.Connected();
  const OfferId a = h.Offered(7);
  Actions out;
  EXPECT_EQ(h.bus().ReleaseOffer(a, &out).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(h.bus().ReleaseOffer(OfferId(99), &out).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace vbus::testing
