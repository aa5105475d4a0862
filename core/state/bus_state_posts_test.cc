// BusState: a post the backend could not make fails its request, not the bus.
#include <string>

#include "core/state/bus_state.h"
#include "core/state/bus_state_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

const absl::Status kFull = absl::ResourceExhaustedError("host message buffers full");
const absl::Status kCannotEncode = absl::InvalidArgumentError("cannot encode");

class BusStatePostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_.Connected();  // request 1
    a_ = h_.Offered(7);
    b_ = h_.Offered(8, kEchoClass, kInstanceB);
  }
  // The message of the `n`th SendMessage of the last step.
  v1::ControlMessage Sent(size_t n = 0) const {
    for (const Action& a : h_.last()) {
      if (const auto* s = std::get_if<SendMessage>(&a); s != nullptr && n-- == 0) return s->message;
    }
    ADD_FAILURE() << "the last step sent fewer messages";
    return v1::ControlMessage();
  }
  std::vector<std::string> Fail(const v1::ControlMessage& m, const absl::Status& s) {
    return h_.Do([&](BusState& b, Actions* o) { b.OnPostFailed(m, s, o); });
  }
  std::vector<std::string> Open(OfferId offer, RequestId* id = nullptr) {
    return h_.Call(
        [&](BusState& b, Actions* o) { return b.Open(offer, SmallRings(), kDeadline, o); }, id);
  }
  std::vector<std::string> Close(OfferId offer) {
    return h_.Call([&](BusState& b, Actions* o) { return b.Close(offer, kDeadline, o); });
  }
  ChannelStatus Channel(OfferId offer) { return *h_.bus().GetChannel(offer); }

  BusHarness h_;
  OfferId a_;
  OfferId b_;
};

TEST_F(BusStatePostTest, AGpadlCreationNotPostedFailsAloneAndReleasesItsMemory) {
  GpadlParams p;
  p.pfns = Pfns(500, 3);
  h_.Call([&](BusState& b, Actions* o) { return b.CreateGpadl(a_, p, kDeadline, o); });
  EXPECT_THAT(Fail(Sent(), kFull),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10", "cancel_timer request=2",
                          "complete request=2 gpadl_create offer=1: RESOURCE_EXHAUSTED: GPADL "
                          "0xe1e10 for relid 7: posting GpadlCreate failed: host message "
                          "buffers full"));
  EXPECT_EQ(h_.bus().phase(), BusPhase::kConnected);
  EXPECT_THAT(h_.bus().Gpadls(), IsEmpty());
  EXPECT_EQ(h_.bus().counters().posts_failed, 1u);
  // Nothing stands in the way of trying again.
  h_.Call([&](BusState& b, Actions* o) { return b.CreateGpadl(a_, p, kDeadline, o); });
  EXPECT_EQ(h_.bus().Gpadls().size(), 1u);
}

TEST_F(BusStatePostTest, ARingGpadlNotPostedFailsTheOpenAndTheChannelCanOpenLater) {
  Open(a_);
  EXPECT_THAT(Fail(Sent(), kCannotEncode),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10", "cancel_timer request=2",
                          "complete request=2 open offer=1: INVALID_ARGUMENT: open of relid 7: "
                          "posting GpadlCreate failed: cannot encode (ring GPADL 0xe1e10)"));
  EXPECT_EQ(Channel(a_).channel_state, ChannelState::kClosed);
  EXPECT_THAT(h_.bus().Gpadls(), IsEmpty());
  h_.Opened(a_);
  EXPECT_EQ(Channel(a_).channel_state, ChannelState::kOpen);
}

TEST_F(BusStatePostTest, AnOpenChannelNotPostedRetiresTheChannelAndTearsDownItsRing) {
  h_.Opened(b_);
  Open(a_);
  h_.Host(GpadlCreatedMsg(7, 0xE1E11));
  const v1::ControlMessage open = Sent();
  ASSERT_TRUE(open.has_open_channel());
  EXPECT_THAT(Fail(open, kFull),
              ElementsAre("retire offer=1 relid=7", "send GpadlTeardown{relid=7 gpadl=0xe1e11}",
                          "cancel_timer request=3",
                          "complete request=3 open offer=1: RESOURCE_EXHAUSTED: open of relid 7: "
                          "posting OpenChannel failed: host message buffers full"));
  EXPECT_FALSE(h_.bus().PostWanted(open));
  EXPECT_EQ(Channel(a_).channel_state, ChannelState::kClosed);
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E11)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e11"));
  // The other channel never noticed.
  EXPECT_EQ(Channel(b_).channel_state, ChannelState::kOpen);
  EXPECT_TRUE(Channel(b_).published);
}

TEST_F(BusStatePostTest, AModifyNotPostedFailsAndTheChannelStaysAsItWas) {
  h_.Opened(a_);
  RequestId id;
  h_.Call([&](BusState& b, Actions* o) { return b.ModifyChannel(a_, 3, kDeadline, o); }, &id);
  EXPECT_THAT(Fail(Sent(), kFull),
              ElementsAre("cancel_timer request=3",
                          "complete request=3 modify_channel offer=1: RESOURCE_EXHAUSTED: modify "
                          "of relid 7: posting ModifyChannel failed: host message buffers full"));
  EXPECT_EQ(Channel(a_).channel_state, ChannelState::kOpen);
  // The next one is not refused as "another ModifyChannel is waiting".
  h_.Call([&](BusState& b, Actions* o) { return b.ModifyChannel(a_, 3, kDeadline, o); });
  EXPECT_EQ(h_.bus().pending_requests(), 1u);
}

// Below 5.3 the host never answers a ModifyChannel: the call completes when the message is
// posted, and fails when it is not.
TEST(BusStatePostVersionTest, Below53AModifyCompletesWhenPostedAndFailsWhenNot) {
  BusConfig c;
  c.max_version = protocol::kVersion5_2;
  BusHarness h(c);
  h.Connected(protocol::kVersion5_2);
  const OfferId a = h.Offered(7);
  h.Opened(a);
  h.set_auto_posted(false);
  RequestId id;
  EXPECT_THAT(
      h.Call([&](BusState& b, Actions* o) { return b.ModifyChannel(a, 4, kDeadline, o); }, &id),
      ElementsAre("send ModifyChannel{relid=7 target_vp=4}"));
  const SendMessage send = std::get<SendMessage>(h.last()[0]);
  EXPECT_EQ(send.completes, id);
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { b.OnPostFailed(send.message, kFull, o); }),
              ElementsAre("complete request=3 modify_channel offer=1: RESOURCE_EXHAUSTED: modify "
                          "of relid 7: posting ModifyChannel failed: host message buffers full"));
  h.Call([&](BusState& b, Actions* o) { return b.ModifyChannel(a, 4, kDeadline, o); }, &id);
  EXPECT_THAT(h.Do([&](BusState& b, Actions* o) { b.OnPosted(id, o); }),
              ElementsAre("complete request=4 modify_channel offer=1: OK"));
  EXPECT_EQ(h.bus().pending_requests(), 0u);
}

TEST_F(BusStatePostTest, ATeardownNotPostedLeavesTheGpadlInPlaceForAnotherTry) {
  GpadlParams p;
  p.pfns = Pfns(500, 1);
  h_.Call([&](BusState& b, Actions* o) { return b.CreateGpadl(a_, p, kDeadline, o); });
  h_.Host(GpadlCreatedMsg(7, 0xE1E10));
  h_.Call([&](BusState& b, Actions* o) { return b.TeardownGpadl(a_, 0xE1E10, kDeadline, o); });
  EXPECT_THAT(Fail(Sent(), kFull),
              ElementsAre("cancel_timer request=3",
                          "complete request=3 gpadl_teardown offer=1: RESOURCE_EXHAUSTED: teardown "
                          "of GPADL 0xe1e10 of relid 7: posting GpadlTeardown failed: host "
                          "message buffers full"));
  ASSERT_EQ(h_.bus().Gpadls().size(), 1u);
  EXPECT_EQ(h_.bus().Gpadls()[0].state, GpadlState::kCreated);
  h_.Call([&](BusState& b, Actions* o) { return b.TeardownGpadl(a_, 0xE1E10, kDeadline, o); });
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10", "cancel_timer request=4",
                          "complete request=4 gpadl_teardown offer=1: OK"));
}

// The host may still hold the channel open: its rings must stay mapped, so the teardown
// queued behind the CloseChannel is no longer wanted, and the memory stays until the host
// forgets the channel.
TEST_F(BusStatePostTest, ACloseChannelNotPostedKeepsTheRingsUntilTheHostForgetsThem) {
  const uint32_t ring = h_.Opened(a_);
  Close(a_);
  const v1::ControlMessage close = Sent(0);
  const v1::ControlMessage teardown = Sent(1);
  ASSERT_TRUE(close.has_close_channel());
  ASSERT_TRUE(teardown.has_gpadl_teardown());
  EXPECT_THAT(Fail(close, kFull),
              ElementsAre("cancel_timer request=3",
                          "complete request=3 close offer=1: RESOURCE_EXHAUSTED: close of relid 7: "
                          "posting CloseChannel failed: host message buffers full; the channel no "
                          "longer dispatches, but the host may still hold it open, so ring GPADL "
                          "0xe1e10 stays mapped until the host rescinds the channel or the bus "
                          "disconnects"));
  EXPECT_FALSE(h_.bus().PostWanted(teardown));
  EXPECT_EQ(Channel(a_).channel_state, ChannelState::kClosed);
  EXPECT_FALSE(Channel(a_).published);
  ASSERT_EQ(h_.bus().Gpadls().size(), 1u);
  EXPECT_EQ(h_.bus().Gpadls()[0].handle, ring);
  EXPECT_EQ(h_.bus().counters().gpadls_stranded, 1u);
  // The host rescinds the channel: the GPADL goes with it once the runtime releases the offer.
  h_.Host(RescindMsg(7));
  EXPECT_THAT(h_.Do([&](BusState& b, Actions* o) { EXPECT_TRUE(b.ReleaseOffer(a_, o).ok()); }),
              ElementsAre("send RelidReleased{relid=7}", "release_gpadl offer=1 gpadl=0xe1e10"));
}

// The CloseChannel reached the host, so nothing uses the ring GPADL any more: its teardown is
// sent again later (the runtime drives RetryUnsentTeardowns with a back-off) and the Close
// waits for it instead of failing for a host that was only busy.
TEST_F(BusStatePostTest, ARingTeardownNotPostedIsSentAgainAndTheCloseWaitsForIt) {
  h_.Opened(a_);
  RequestId close;
  h_.Call([&](BusState& b, Actions* o) { return b.Close(a_, kDeadline, o); }, &close);
  EXPECT_THAT(Fail(Sent(1), kFull), IsEmpty());
  EXPECT_EQ(Channel(a_).channel_state, ChannelState::kClosing);
  EXPECT_EQ(h_.bus().unsent_teardowns(), 1u);
  EXPECT_THAT(h_.Do([](BusState& b, Actions* o) { b.RetryUnsentTeardowns(o); }),
              ElementsAre("send GpadlTeardown{relid=7 gpadl=0xe1e10}"));
  EXPECT_EQ(h_.bus().unsent_teardowns(), 0u);
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10", "cancel_timer request=3",
                          "complete request=3 close offer=1: OK"));
  EXPECT_EQ(Channel(a_).channel_state, ChannelState::kClosed);
}

// An abandoned creation's teardown, sent in the background, is retried the same way; a
// rescind meanwhile makes the retry unnecessary.
TEST_F(BusStatePostTest, ABackgroundTeardownNotPostedIsRetriedUntilTheHostForgetsIt) {
  GpadlParams p;
  p.pfns = Pfns(500, 1);
  RequestId create;
  h_.Call([&](BusState& b, Actions* o) { return b.CreateGpadl(a_, p, kDeadline, o); }, &create);
  h_.Do([&](BusState& b, Actions* o) { b.OnTimer(create, kDeadline, o); });  // abandoned
  h_.Host(GpadlCreatedMsg(7, 0xE1E10));  // created after all: torn down at once
  const v1::ControlMessage teardown = Sent();
  ASSERT_TRUE(teardown.has_gpadl_teardown());
  EXPECT_THAT(Fail(teardown, kFull), IsEmpty());
  EXPECT_EQ(h_.bus().unsent_teardowns(), 1u);
  EXPECT_THAT(h_.Do([](BusState& b, Actions* o) { b.RetryUnsentTeardowns(o); }),
              ElementsAre("send GpadlTeardown{relid=7 gpadl=0xe1e10}"));
  EXPECT_THAT(Fail(teardown, kFull), IsEmpty());  // still full
  h_.Host(RescindMsg(7));
  EXPECT_EQ(h_.bus().unsent_teardowns(), 0u);
  EXPECT_THAT(h_.Do([](BusState& b, Actions* o) { b.RetryUnsentTeardowns(o); }), IsEmpty());
}

TEST_F(BusStatePostTest, AnUnloadNotPostedLeavesTheBusConnected) {
  h_.Call([](BusState& b, Actions* o) { return b.Unload(kDeadline, o); });
  EXPECT_THAT(Fail(Sent(), kFull),
              ElementsAre("cancel_timer request=2",
                          "complete request=2 unload: RESOURCE_EXHAUSTED: unload: "
                          "posting Unload failed: host message buffers full"));
  EXPECT_EQ(h_.bus().phase(), BusPhase::kConnected);
  EXPECT_EQ(h_.bus().Offers().size(), 2u);
}

TEST_F(BusStatePostTest, UnavailableStillEndsTheConnection) {
  Open(a_);
  Fail(Sent(), absl::UnavailableError("stream closed"));
  EXPECT_EQ(h_.bus().phase(), BusPhase::kDisconnected);
  EXPECT_EQ(h_.bus().counters().posts_failed, 0u);
}

TEST_F(BusStatePostTest, AFailureOfAMessageNoLongerCurrentChangesNothing) {
  Open(a_);
  const v1::ControlMessage create = Sent();
  h_.Host(GpadlCreatedMsg(7, 0xE1E10));
  const v1::ControlMessage open = Sent();
  h_.Host(OpenResultMsg(7, 1));
  EXPECT_THAT(Fail(create, kFull), IsEmpty());
  EXPECT_THAT(Fail(open, kFull), IsEmpty());
  EXPECT_EQ(Channel(a_).channel_state, ChannelState::kOpen);
  v1::ControlMessage released;
  released.mutable_relid_released()->set_child_relid(9);
  EXPECT_THAT(Fail(released, kFull), IsEmpty());
  EXPECT_EQ(h_.bus().counters().posts_lost, 1u);
}

TEST(BusStatePostConnectTest, AContactNotPostedFailsTheConnectWithItsCode) {
  BusHarness h;
  RequestId id;
  h.Call([](BusState& b, Actions* o) { return b.Connect(kDeadline, o); }, &id);
  const v1::ControlMessage contact = std::get<SendMessage>(h.last()[0]).message;
  h.Do([&](BusState& b, Actions* o) { b.OnPostFailed(contact, kFull, o); });
  const Complete done = h.CompletionOf(id);
  EXPECT_EQ(done.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(done.status.message()),
              ::testing::HasSubstr("posting InitiateContact failed: host message buffers full"));
  EXPECT_EQ(h.bus().phase(), BusPhase::kDisconnected);
}

}  // namespace
}  // namespace vbus::testing
