// BusState: offers, hot-add, sub-channels, rescind and relid release.
#include <string>
#include <utility>

#include "core/state/bus_state.h"
#include "core/state/bus_state_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr char kEcho[] = "type=8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501";
constexpr char kA[] = "instance=11111111-2222-3333-4444-555555555555";
constexpr char kB[] = "instance=66666666-7777-8888-9999-aaaaaaaaaaaa";

std::string Added(int offer, int relid, const char* instance) {
  return "offer_added offer=" + std::to_string(offer) + " relid=" + std::to_string(relid) + " " +
         kEcho + " " + instance;
}

TEST(BusStateOfferTest, OffersAreListedByRelidWithTheirFields) {
  BusHarness h;
  RequestId connect;
  h.Call([](BusState& b, Actions* o) { return b.Connect(kDeadline, o); }, &connect);
  h.Host(VersionResponseMsg(true, 4));
  v1::ControlMessage rich = OfferMsg(9, kEchoClass, kInstanceB);
  rich.mutable_offer()->set_flags(0x2000);
  rich.mutable_offer()->set_mmio_megabytes(16);
  rich.mutable_offer()->set_user_defined(std::string(120, 'u'));
  rich.mutable_offer()->set_monitor_allocated(true);
  rich.mutable_offer()->set_monitor_id(127);
  rich.mutable_offer()->set_dedicated_interrupt(true);
  EXPECT_THAT(h.Host(rich), ElementsAre(Added(1, 9, kB)));
  EXPECT_THAT(h.Host(OfferMsg(3, kEchoClass, kInstanceA)), ElementsAre(Added(2, 3, kA)));
  h.Host(AllOffersDeliveredMsg());
  std::vector<OfferInfo> offers = h.bus().Offers();
  ASSERT_EQ(offers.size(), 2u);
  EXPECT_EQ(offers[0].relid, 3u);
  EXPECT_EQ(offers[1].relid, 9u);
  const OfferInfo& o = offers[1];
  EXPECT_EQ(o.id, OfferId(1));
  EXPECT_EQ(o.interface_type, kEchoClass);
  EXPECT_EQ(o.interface_instance, kInstanceB);
  EXPECT_EQ(o.flags, 0x2000u);
  EXPECT_EQ(o.mmio_megabytes, 16u);
  EXPECT_EQ(o.user_defined, std::string(120, 'u'));
  EXPECT_TRUE(o.monitor_allocated);
  EXPECT_EQ(o.monitor_id, 127u);
  EXPECT_TRUE(o.dedicated_interrupt);
  EXPECT_EQ(o.connection_id, 0x10000u + 9);
  EXPECT_FALSE(o.is_sub_channel());
  EXPECT_EQ(h.bus().counters().offers_accepted, 2u);
}

// The offer's wire fields vbus does not interpret reach the OfferInfo (and so the driver's
// Channel::offer()) exactly as the host sent them, at the widest values their wire fields hold.
TEST(BusStateOfferTest, EveryWireFieldIsCarriedUnchanged) {
  BusHarness h;
  h.Connected();
  v1::ControlMessage full = OfferMsg(2047, kEchoClass, kInstanceB);
  v1::Offer& f = *full.mutable_offer();
  f.set_flags(0xFFFF);
  f.set_mmio_megabytes(0xFFFF);
  f.set_interrupt_latency(0xFEDCBA9876543210);
  f.set_reserved(0x0123456789ABCDEF);
  f.set_mmio_megabytes_optional(0xFFFF);
  f.set_monitor_allocated_reserved_bits(0x7F);
  f.set_dedicated_interrupt_reserved_bits(0x7FFF);
  f.set_connection_id(0xFFFFFFFF);
  EXPECT_THAT(h.Host(full), ElementsAre(Added(1, 2047, kB)));
  const std::vector<OfferInfo> offers = h.bus().Offers();
  ASSERT_EQ(offers.size(), 1u);
  const OfferInfo& o = offers[0];
  EXPECT_EQ(o.flags, 0xFFFFu);
  EXPECT_EQ(o.mmio_megabytes, 0xFFFFu);
  EXPECT_EQ(o.interrupt_latency, 0xFEDCBA9876543210u);
  EXPECT_EQ(o.reserved, 0x0123456789ABCDEFu);
  EXPECT_EQ(o.mmio_megabytes_optional, 0xFFFFu);
  EXPECT_EQ(o.monitor_allocated_reserved_bits, 0x7Fu);
  EXPECT_EQ(o.dedicated_interrupt_reserved_bits, 0x7FFFu);
  EXPECT_EQ(o.connection_id, 0xFFFFFFFFu);
}

// One past each wire width refuses the offer (and releases its relid): a value the Hyper-V
// encoding cannot hold never reaches a driver.
TEST(BusStateOfferTest, FieldsWiderThanTheWireRefuseTheOffer) {
  BusHarness h;
  h.Connected();
  struct Case {
    void (*spoil)(v1::Offer&);
    const char* why;
  };
  const Case cases[] = {
      {[](v1::Offer& o) { o.set_flags(0x10000); }, "flags 65536, above 65535"},
      {[](v1::Offer& o) { o.set_mmio_megabytes_optional(0x10000); },
       "mmio_megabytes_optional 65536, above 65535"},
      {[](v1::Offer& o) { o.set_monitor_allocated_reserved_bits(0x80); },
       "monitor_allocated_reserved_bits 128, above 127"},
      {[](v1::Offer& o) { o.set_dedicated_interrupt_reserved_bits(0x8000); },
       "dedicated_interrupt_reserved_bits 32768, above 32767"},
  };
  uint32_t relid = 20;
  for (const Case& c : cases) {
    v1::ControlMessage m = OfferMsg(relid, kEchoClass, kInstanceA);
    c.spoil(*m.mutable_offer());
    EXPECT_THAT(
        h.Host(m),
        ElementsAre(::testing::AllOf(::testing::StartsWith("ignored offer_field_out_of_range"),
                                     ::testing::HasSubstr(c.why)),
                    "send RelidReleased{relid=" + std::to_string(relid) + "}"));
    ++relid;
  }
  EXPECT_THAT(h.bus().Offers(), IsEmpty());
}

// hv_sock's connection messages: vbus sends no TlConnectRequest, so a host's TlConnectResult
// is unexpected and a TlConnectRequest from the host is a guest's message.
TEST(BusStateOfferTest, TlConnectMessagesFromTheHostAreIgnored) {
  BusHarness h;
  h.Connected();
  v1::ControlMessage result;
  result.mutable_tl_connect_result()->set_status(0);
  EXPECT_THAT(h.Host(result),
              ElementsAre(::testing::StartsWith("ignored tl_connect_result_unexpected")));
  v1::ControlMessage request;
  request.mutable_tl_connect_request();
  EXPECT_THAT(h.Host(request), ElementsAre(::testing::StartsWith("ignored guest_to_host_kind")));
  EXPECT_EQ(
      h.bus().counters().ignored[static_cast<size_t>(IgnoreReason::kTlConnectResultUnexpected)],
      1u);
}

TEST(BusStateOfferTest, HotAddAfterAllOffersDelivered) {
  BusHarness h;
  h.Connected();
  EXPECT_THAT(h.Host(OfferMsg(12, kEchoClass, kInstanceA)), ElementsAre(Added(1, 12, kA)));
  EXPECT_EQ(h.bus().FindOfferByRelid(12), OfferId(1));
}

TEST(BusStateOfferTest, SubChannelsLinkToTheirPrimaryByTypeAndInstance) {
  BusHarness h;
  h.Connected();
  const OfferId primary = h.Offered(7);
  EXPECT_THAT(h.Host(OfferMsg(8, kEchoClass, kInstanceA, 1)),
              ElementsAre(Added(2, 8, kA) + " sub=1 primary=1"));
  EXPECT_THAT(h.Host(OfferMsg(9, kEchoClass, kInstanceA, 2)),
              ElementsAre(Added(3, 9, kA) + " sub=2 primary=1"));
  EXPECT_EQ(h.bus().GetChannel(OfferId(2))->offer.primary, primary);
  EXPECT_TRUE(h.bus().GetChannel(OfferId(3))->offer.is_sub_channel());
}

TEST(BusStateRescindTest, RescindOfAClosedChannelHoldsTheRelidUntilReleased) {
  BusHarness h;
  h.Connected();
  const OfferId a = h.Offered(7);
  EXPECT_THAT(h.Host(RescindMsg(7)),
              ElementsAre("offer_removed offer=1 relid=7: UNAVAILABLE: relid 7 rescinded by host"));
  EXPECT_EQ(h.bus().GetChannel(a)->offer_state, OfferState::kRescinded);
  EXPECT_TRUE(h.bus().Offers().empty());
  EXPECT_EQ(h.bus().counters().rescinds, 1u);
  // Until the runtime releases it, relid 7 cannot be offered again.
  EXPECT_THAT(h.Host(OfferMsg(7, kEchoClass, kInstanceB)),
              ElementsAre("ignored offer_duplicate_relid: ALREADY_EXISTS: offer of relid 7 "
                          "(8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501): the relid is still held by "
                          "offer 1 (rescinded, 8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501)"));
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(a, o).ok()); }),
              ElementsAre("send RelidReleased{relid=7}"));
  EXPECT_FALSE(h.bus().GetChannel(a).has_value());
  // Reuse: the same relid, a new offer id.
  EXPECT_THAT(h.Host(OfferMsg(7, kEchoClass, kInstanceA)), ElementsAre(Added(2, 7, kA)));
}

TEST(BusStateRescindTest, RescindOfAnOpenChannelRetiresItAndSendsNothingUntilRelease) {
  BusHarness h;
  h.Connected();
  const OfferId a = h.Offered(7);
  RequestId gpadl_req;
  h.Opened(a);
  h.Call([&](BusState& b,
             Actions* o) { return b.CreateGpadl(a, GpadlParams{Pfns(300, 3)}, kDeadline, o); },
         &gpadl_req);
  h.Host(GpadlCreatedMsg(7, 0xE1E11));
  EXPECT_THAT(h.Host(RescindMsg(7)),
              ElementsAre("retire offer=1 relid=7",
                          "offer_removed offer=1 relid=7: UNAVAILABLE: relid 7 rescinded by host"));
  const ChannelStatus s = *h.bus().GetChannel(a);
  EXPECT_EQ(s.channel_state, ChannelState::kClosed);
  EXPECT_FALSE(s.published);
  EXPECT_THAT(s.gpadls, ElementsAre(0xE1E10u, 0xE1E11u));
  // The driver's Remove closes the channel and tears down its GPADL: both are already done.
  RequestId close;
  EXPECT_THAT(h.Call([&](BusState& b, Actions* o) { return b.Close(a, kDeadline, o); }, &close),
              ElementsAre("complete request=4 close offer=1: OK"));
  EXPECT_THAT(
      h.Call([&](BusState& b, Actions* o) { return b.TeardownGpadl(a, 0xE1E11, kDeadline, o); }),
      ElementsAre("complete request=5 gpadl_teardown offer=1: OK"));
  // Opening it again is refused.
  EXPECT_THAT(
      h.Call([&](BusState& b, Actions* o) { return b.Open(a, SmallRings(), kDeadline, o); }),
      ElementsAre("complete request=6 open offer=1: FAILED_PRECONDITION: open of relid 7: "
                  "the host rescinded the channel"));
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(a, o).ok()); }),
              ElementsAre("send RelidReleased{relid=7}", "release_gpadl offer=1 gpadl=0xe1e10",
                          "release_gpadl offer=1 gpadl=0xe1e11"));
  EXPECT_TRUE(h.bus().Gpadls().empty());
}

TEST(BusStateRescindTest, ATeardownThatCrossedTheRescindIsStillAnswered) {
  BusHarness h;
  h.Connected();
  const OfferId a = h.Offered(7);
  h.Call([&](BusState& b, Actions* o) {
    return b.CreateGpadl(a, GpadlParams{Pfns(300, 1)}, kDeadline, o);
  });
  h.Host(GpadlCreatedMsg(7, 0xE1E10));
  RequestId teardown;
  h.Call([&](BusState& b, Actions* o) { return b.TeardownGpadl(a, 0xE1E10, kDeadline, o); },
         &teardown);
  EXPECT_THAT(h.Host(RescindMsg(7)),
              ElementsAre("cancel_timer request=3", "complete request=3 gpadl_teardown offer=1: OK",
                          "offer_removed offer=1 relid=7: UNAVAILABLE: relid 7 rescinded by host"));
  // The host had already processed the teardown: its answer releases the GPADL silently.
  EXPECT_THAT(h.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10"));
  EXPECT_EQ(h.bus().counters().ignored_total, 0u);
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(a, o).ok()); }),
              ElementsAre("send RelidReleased{relid=7}"));
}

TEST(BusStateRescindTest, RescindWhileOpeningFailsTheOpen) {
  BusHarness h;
  h.Connected();
  const OfferId a = h.Offered(7);
  RequestId open;
  h.Call([&](BusState& b, Actions* o) { return b.Open(a, SmallRings(), kDeadline, o); }, &open);
  h.Host(GpadlCreatedMsg(7, 0xE1E10));
  EXPECT_THAT(h.Host(RescindMsg(7)),
              ElementsAre("retire offer=1 relid=7", "cancel_timer request=2",
                          "complete request=2 open offer=1: UNAVAILABLE: open of relid 7 failed: "
                          "the host rescinded the channel",
                          "offer_removed offer=1 relid=7: UNAVAILABLE: relid 7 rescinded by host"));
  // A late OpenResult is ignored.
  EXPECT_THAT(h.Host(OpenResultMsg(7, 1)),
              ElementsAre("ignored open_result_unexpected: FAILED_PRECONDITION: OpenResult for "
                          "relid 7 (open_id 1) matches no open in progress (channel rescinded)"));
}

TEST(BusStateRescindTest, RescindWhileTheRingGpadlIsPendingFailsTheOpen) {
  BusHarness h;
  h.Connected();
  const OfferId a = h.Offered(7);
  h.Call([&](BusState& b, Actions* o) { return b.Open(a, SmallRings(), kDeadline, o); });
  EXPECT_THAT(h.Host(RescindMsg(7)),
              ElementsAre("cancel_timer request=2",
                          "complete request=2 open offer=1: UNAVAILABLE: open of relid 7 failed: "
                          "the host rescinded the channel",
                          "offer_removed offer=1 relid=7: UNAVAILABLE: relid 7 rescinded by host"));
  EXPECT_THAT(h.Host(GpadlCreatedMsg(7, 0xE1E10)),
              ElementsAre("ignored gpadl_created_unexpected: FAILED_PRECONDITION: GpadlCreated for "
                          "GPADL 0xe1e10 of relid 7, which is dropped, not being created"));
}

TEST(BusStateRescindTest, RescindOfAPrimaryClosesItsSubChannelsFirst) {
  BusHarness h;
  h.Connected();
  const OfferId primary = h.Offered(7);
  const OfferId sub = h.Offered(8, kEchoClass, kInstanceA, 1);
  const OfferId idle_sub = h.Offered(9, kEchoClass, kInstanceA, 2);
  h.Opened(primary);                        // ring GPADL 0xe1e10
  const uint32_t sub_ring = h.Opened(sub);  // 0xe1e11
  EXPECT_EQ(sub_ring, 0xE1E11u);
  EXPECT_THAT(h.Host(RescindMsg(7)),
              ElementsAre("retire offer=2 relid=8", "send CloseChannel{relid=8}",
                          "send GpadlTeardown{relid=8 gpadl=0xe1e11}", "retire offer=1 relid=7",
                          "offer_removed offer=1 relid=7: UNAVAILABLE: relid 7 rescinded by host"));
  EXPECT_TRUE(h.bus().GetChannel(sub)->orphaned);
  EXPECT_TRUE(h.bus().GetChannel(idle_sub)->orphaned);
  EXPECT_EQ(h.bus().GetChannel(sub)->channel_state, ChannelState::kClosed);
  // The orphans cannot be opened; closing them is a no-op.
  EXPECT_THAT(
      h.Call([&](BusState& b, Actions* o) { return b.Open(idle_sub, SmallRings(), kDeadline, o); }),
      ElementsAre("complete request=4 open offer=3: FAILED_PRECONDITION: open of relid 9: "
                  "its primary channel was rescinded"));
  EXPECT_THAT(h.Call([&](BusState& b, Actions* o) { return b.Close(sub, kDeadline, o); }),
              ElementsAre("complete request=5 close offer=2: OK"));
  // The sub's ring teardown completes; then the host rescinds the subs too.
  EXPECT_THAT(h.Host(GpadlTorndownMsg(0xE1E11)),
              ElementsAre("release_gpadl offer=2 gpadl=0xe1e11"));
  EXPECT_THAT(h.Host(RescindMsg(8)),
              ElementsAre("offer_removed offer=2 relid=8: UNAVAILABLE: relid 8 rescinded by host"));
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(sub, o).ok()); }),
              ElementsAre("send RelidReleased{relid=8}"));
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(primary, o).ok()); }),
              ElementsAre("send RelidReleased{relid=7}", "release_gpadl offer=1 gpadl=0xe1e10"));
}

TEST(BusStateRescindTest, RescindOfAPrimaryFailsASubChannelOpenInProgress) {
  BusHarness h;
  h.Connected();
  const OfferId primary = h.Offered(7);
  const OfferId sub = h.Offered(8, kEchoClass, kInstanceA, 1);
  h.Opened(primary);  // ring GPADL 0xe1e10
  h.Call([&](BusState& b, Actions* o) { return b.Open(sub, SmallRings(), kDeadline, o); });
  h.Host(GpadlCreatedMsg(8, 0xE1E11));
  EXPECT_THAT(h.Host(RescindMsg(7)),
              ElementsAre("retire offer=2 relid=8", "send CloseChannel{relid=8}",
                          "send GpadlTeardown{relid=8 gpadl=0xe1e11}", "cancel_timer request=3",
                          "complete request=3 open offer=2: UNAVAILABLE: open of relid 8 failed: "
                          "its primary relid 7 was rescinded",
                          "retire offer=1 relid=7",
                          "offer_removed offer=1 relid=7: UNAVAILABLE: relid 7 rescinded by host"));
}

TEST(BusStateRescindTest, ASubChannelRescindUnlinksItFromItsPrimary) {
  BusHarness h;
  h.Connected();
  const OfferId primary = h.Offered(7);
  const OfferId sub = h.Offered(8, kEchoClass, kInstanceA, 1);
  h.Host(RescindMsg(8));
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(sub, o).ok()); }),
              ElementsAre("send RelidReleased{relid=8}"));
  EXPECT_TRUE(h.bus().GetChannel(primary).has_value());
  // The primary's rescind no longer touches the released sub-channel.
  EXPECT_THAT(h.Host(RescindMsg(7)),
              ElementsAre("offer_removed offer=1 relid=7: UNAVAILABLE: relid 7 rescinded by host"));
}

TEST(BusStateRescindTest, ReofferedInstanceAfterRescindIsANewOffer) {
  BusHarness h;
  h.Connected();
  h.Offered(7);
  h.Host(RescindMsg(7));
  // Same instance, new relid, before the old relid is released: accepted.
  EXPECT_THAT(h.Host(OfferMsg(20, kEchoClass, kInstanceA)), ElementsAre(Added(2, 20, kA)));
}

// ---- Refused offers release their relid (docs/protocol.md §8) --------------------------------

TEST(BusStateRefusedOfferTest, ARefusedOfferReleasesItsRelidWhichTheHostMayReuse) {
  BusHarness h;
  h.Connected();
  v1::ControlMessage bad = OfferMsg(9, kEchoClass, kInstanceB);
  bad.mutable_offer()->set_monitor_allocated(true);
  bad.mutable_offer()->set_monitor_id(200);
  EXPECT_THAT(h.Host(bad), ElementsAre("ignored offer_bad_monitor_id: INVALID_ARGUMENT: offer "
                                       "of relid 9 has monitor id 200, not below 128",
                                       "send RelidReleased{relid=9}"));
  EXPECT_EQ(h.bus().counters().refused_relids_released, 1u);
  EXPECT_FALSE(h.bus().FindOfferByRelid(9).has_value());
  // The host took the release: relid 9 carries a new device, which rescinds normally.
  EXPECT_THAT(h.Host(OfferMsg(9, kEchoClass, kInstanceA)), ElementsAre(Added(1, 9, kA)));
  EXPECT_THAT(h.Host(RescindMsg(9)),
              ElementsAre("offer_removed offer=1 relid=9: UNAVAILABLE: relid 9 rescinded by host"));
  EXPECT_EQ(h.bus().counters().refused_relids_released, 1u);
}

TEST(BusStateRefusedOfferTest, EveryKindOfRefusalWithAFreeRelidReleasesIt) {
  BusHarness h;
  h.Connected();
  h.Offered(7);  // kInstanceA, primary
  v1::ControlMessage bad_guid = OfferMsg(10, kEchoClass, kInstanceB);
  bad_guid.mutable_offer()->mutable_interface_instance()->set_value("not-a-guid");
  v1::ControlMessage long_user = OfferMsg(11, kEchoClass, kInstanceB);
  long_user.mutable_offer()->set_user_defined(std::string(121, 'u'));
  const std::pair<v1::ControlMessage, const char*> refused[] = {
      {bad_guid, "ignored offer_bad_guid"},
      {long_user, "ignored offer_field_out_of_range"},
      {OfferMsg(12, kEchoClass, kInstanceA), "ignored offer_duplicate_instance"},
      {OfferMsg(13, kEchoClass, kInstanceB, 1), "ignored sub_channel_without_primary"},
  };
  for (const auto& [message, ignored] : refused) {
    const uint32_t relid = message.offer().child_relid();
    EXPECT_THAT(h.Host(message),
                ElementsAre(::testing::StartsWith(ignored),
                            "send RelidReleased{relid=" + std::to_string(relid) + "}"));
  }
  EXPECT_EQ(h.bus().counters().refused_relids_released, 4u);
  EXPECT_EQ(h.bus().Offers().size(), 1u);
}

TEST(BusStateRefusedOfferTest, ARelidThatIsNotTheRefusedOffersToGiveIsNotReleased) {
  BusHarness h;
  h.Connected();
  const OfferId live = h.Offered(7);
  // Outside 1..2047: no relid to release.
  EXPECT_THAT(h.Host(OfferMsg(2048, kEchoClass, kInstanceB)),
              ElementsAre(::testing::StartsWith("ignored offer_relid_out_of_range")));
  // A duplicate of a live offer's relid, valid or not: the relid is the live offer's.
  EXPECT_THAT(h.Host(OfferMsg(7, kEchoClass, kInstanceB)),
              ElementsAre(::testing::StartsWith("ignored offer_duplicate_relid")));
  v1::ControlMessage bad = OfferMsg(7, kEchoClass, kInstanceB);
  bad.mutable_offer()->mutable_interface_type()->set_value("?");
  EXPECT_THAT(h.Host(bad), ElementsAre(::testing::StartsWith("ignored offer_bad_guid")));
  // Nor while rescinded and not yet released by the runtime.
  h.Host(RescindMsg(7));
  EXPECT_THAT(h.Host(OfferMsg(7, kEchoClass, kInstanceB, 1)),
              ElementsAre(::testing::StartsWith("ignored offer_duplicate_relid")));
  EXPECT_EQ(h.bus().counters().refused_relids_released, 0u);
  // The live offer's own release happens once, when the runtime lets it go.
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { ASSERT_TRUE(b.ReleaseOffer(live, o).ok()); }),
              ElementsAre("send RelidReleased{relid=7}"));
}

TEST(BusStateRefusedOfferTest, ARescindOfARefusedRelidIsAnsweredOnce) {
  BusHarness h;
  h.Connected();
  EXPECT_THAT(h.Host(OfferMsg(9, kEchoClass, kInstanceB, 2)),
              ElementsAre(::testing::StartsWith("ignored sub_channel_without_primary"),
                          "send RelidReleased{relid=9}"));
  // A host that did not take that release as one rescinds the offer: answered again.
  EXPECT_THAT(h.Host(RescindMsg(9)), ElementsAre("send RelidReleased{relid=9}"));
  EXPECT_EQ(h.bus().counters().refused_relids_released, 2u);
  EXPECT_EQ(h.bus().counters().rescinds, 0u);
  EXPECT_EQ(h.bus().counters().ignored_for(IgnoreReason::kRescindUnknownRelid), 0u);
  // Once: a second rescind names a relid the guest knows nothing of.
  EXPECT_THAT(h.Host(RescindMsg(9)),
              ElementsAre("ignored rescind_unknown_relid: NOT_FOUND: rescind of relid 9, which "
                          "has no offer"));
}

TEST(BusStateRefusedOfferTest, TheEndOfTheConnectionForgetsRefusedRelids) {
  BusHarness h;
  h.Connected();
  EXPECT_THAT(h.Host(OfferMsg(9, kEchoClass, kInstanceB, 1)),
              ElementsAre(::testing::StartsWith("ignored"), "send RelidReleased{relid=9}"));
  // While unloading nothing is released: the Unload on its way frees every relid.
  h.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o); });
  EXPECT_THAT(h.Host(OfferMsg(10, kEchoClass, kInstanceB, 1)),
              ElementsAre(::testing::StartsWith("ignored sub_channel_without_primary")));
  EXPECT_THAT(h.Host(RescindMsg(9)), IsEmpty());  // nothing to answer either
  h.Host(UnloadResponseMsg());
  EXPECT_EQ(h.bus().phase(), BusPhase::kDisconnected);
  // A new connection: relid 9 means nothing to the guest.
  h.Call([](BusState& b, Actions* o) { return b.Connect(kDeadline, o); });
  h.Host(VersionResponseMsg(true, 4));
  h.Host(AllOffersDeliveredMsg());
  EXPECT_THAT(h.Host(RescindMsg(9)),
              ElementsAre(::testing::StartsWith("ignored rescind_unknown_relid")));
  EXPECT_EQ(h.bus().counters().refused_relids_released, 1u);
}

// A primary's Close closes its sub-channels first (docs/protocol.md §7): their CloseChannel and
// ring teardown go out before the primary's; an open in progress on a sub fails; a later Close
// of such a sub completes OK at once; the subs can be opened again once the primary is.
TEST(BusStateSubChannelTest, ClosingAPrimaryClosesItsSubChannelsFirst) {
  BusHarness h;
  h.Connected();
  const OfferId primary = h.Offered(7);
  const OfferId sub = h.Offered(8, kEchoClass, kInstanceA, 1);
  const OfferId opening_sub = h.Offered(9, kEchoClass, kInstanceA, 2);
  const OfferId idle_sub = h.Offered(10, kEchoClass, kInstanceA, 3);
  h.Opened(primary);  // ring GPADL 0xe1e10
  h.Opened(sub);      // 0xe1e11
  RequestId opening;
  h.Call([&](BusState& b, Actions* o) { return b.Open(opening_sub, SmallRings(), kDeadline, o); },
         &opening);  // ring GPADL 0xe1e12 asked for, not yet created
  RequestId close;
  EXPECT_THAT(
      h.Call([&](BusState& b, Actions* o) { return b.Close(primary, kDeadline, o); }, &close),
      ElementsAre("retire offer=2 relid=8", "send CloseChannel{relid=8}",
                  "send GpadlTeardown{relid=8 gpadl=0xe1e11}", "cancel_timer request=4",
                  "complete request=4 open offer=3: CANCELLED: open of relid 9 failed: its "
                  "primary relid 7 is closing",
                  "retire offer=1 relid=7", "send CloseChannel{relid=7}",
                  "send GpadlTeardown{relid=7 gpadl=0xe1e10}", "arm_timer request=5 at=+10s"));
  EXPECT_EQ(h.bus().GetChannel(sub)->channel_state, ChannelState::kClosed);
  EXPECT_EQ(h.bus().GetChannel(idle_sub)->channel_state, ChannelState::kClosed);
  // The driver closing its sub-channel after the primary: already done.
  EXPECT_THAT(h.Call([&](BusState& b, Actions* o) { return b.Close(sub, kDeadline, o); }),
              ElementsAre("complete request=6 close offer=2: OK"));
  // A sub-channel cannot be opened while its primary is not open.
  EXPECT_THAT(
      h.Call([&](BusState& b, Actions* o) { return b.Open(idle_sub, SmallRings(), kDeadline, o); }),
      ElementsAre("complete request=7 open offer=4: FAILED_PRECONDITION: open of relid 10: its "
                  "primary channel (relid 7) is not open"));
  h.Host(GpadlTorndownMsg(0xE1E11));
  h.Host(GpadlCreatedMsg(9, 0xE1E12));  // the abandoned open's ring GPADL, then its teardown
  h.Host(GpadlTorndownMsg(0xE1E12));
  h.Host(GpadlTorndownMsg(0xE1E10));
  EXPECT_TRUE(h.CompletionOf(close).status.ok());
  // Open again: primary, then the sub; a plain Close of the sub is a normal close again.
  h.Opened(primary);
  h.Opened(sub);
  EXPECT_THAT(
      h.Call([&](BusState& b, Actions* o) { return b.Close(sub, kDeadline, o); }),
      ElementsAre("retire offer=2 relid=8", "send CloseChannel{relid=8}",
                  "send GpadlTeardown{relid=8 gpadl=0xe1e14}", "arm_timer request=10 at=+10s"));
}

TEST(BusStateSubChannelTest, ClosingAPrimaryWithNoOpenSubChannelsSendsOnlyItsOwnClose) {
  BusHarness h;
  h.Connected();
  const OfferId primary = h.Offered(7);
  h.Offered(8, kEchoClass, kInstanceA, 1);
  h.Opened(primary);
  EXPECT_THAT(
      h.Call([&](BusState& b, Actions* o) { return b.Close(primary, kDeadline, o); }),
      ElementsAre("retire offer=1 relid=7", "send CloseChannel{relid=7}",
                  "send GpadlTeardown{relid=7 gpadl=0xe1e10}", "arm_timer request=3 at=+10s"));
}

}  // namespace
}  // namespace vbus::testing
