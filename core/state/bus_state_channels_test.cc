// BusState: open, close, GPADL create/teardown and modify.
#include <string>

#include "core/state/bus_state.h"
#include "core/state/bus_state_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

class BusStateChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_.Connected();  // request 1
    a_ = h_.Offered(7);
  }
  std::vector<std::string> Open(OfferId offer, OpenParams params, RequestId* id = nullptr) {
    return h_.Call(
        [&](BusState& b, Actions* o) { return b.Open(offer, std::move(params), kDeadline, o); },
        id);
  }
  std::vector<std::string> Close(OfferId offer, RequestId* id = nullptr) {
    return h_.Call([&](BusState& b, Actions* o) { return b.Close(offer, kDeadline, o); }, id);
  }
  std::vector<std::string> CreateGpadl(OfferId offer, GpadlParams params, RequestId* id = nullptr) {
    return h_.Call(
        [&](BusState& b, Actions* o) {
          return b.CreateGpadl(offer, std::move(params), kDeadline, o);
        },
        id);
  }
  std::vector<std::string> Teardown(OfferId offer, uint32_t gpadl, RequestId* id = nullptr) {
    return h_.Call(
        [&](BusState& b, Actions* o) { return b.TeardownGpadl(offer, gpadl, kDeadline, o); }, id);
  }
  std::vector<std::string> Timer(RequestId id) {
    return h_.Do([&](BusState& b, Actions* o) { b.OnTimer(id, kDeadline, o); });
  }
  ChannelState State(OfferId offer) { return h_.bus().GetChannel(offer)->channel_state; }

  BusHarness h_;
  OfferId a_;
};

TEST_F(BusStateChannelTest, OpenCreatesTheRingGpadlPublishesThenSendsOpenChannel) {
  OpenParams p;
  p.ring_pfns = Pfns(100, 6);
  p.outbound_ring_pages = 4;
  p.target_vp = 3;
  p.user_data = "pipe";
  EXPECT_THAT(Open(a_, p),
              ElementsAre("send GpadlCreate{relid=7 gpadl=0xe1e10 bytes=24576 offset=0 "
                          "pfns=[100,101,102,103,104,105]}",
                          "arm_timer request=2 at=+10s"));
  EXPECT_EQ(State(a_), ChannelState::kOpeningGpadl);
  EXPECT_THAT(h_.Host(GpadlCreatedMsg(7, 0xE1E10)),
              ElementsAre("publish offer=1 relid=7",
                          "send OpenChannel{relid=7 open_id=1 gpadl=0xe1e10 target_vp=3 "
                          "downstream_offset=4 user_data=4B}"));
  EXPECT_EQ(State(a_), ChannelState::kOpening);
  EXPECT_EQ(std::get<SendMessage>(h_.last()[1]).message.open_channel().user_data(), "pipe");
  EXPECT_THAT(h_.Host(OpenResultMsg(7, 1)),
              ElementsAre("cancel_timer request=2", "complete request=2 open offer=1: OK"));
  const ChannelStatus s = *h_.bus().GetChannel(a_);
  EXPECT_EQ(s.channel_state, ChannelState::kOpen);
  EXPECT_TRUE(s.published);
  EXPECT_EQ(s.ring_gpadl, 0xE1E10u);
}

// The runtime could not publish the channel (its table slot was taken): the open fails with
// the reason, the host never hears of it (its OpenChannel is the runtime's to drop), the ring
// GPADL goes, and the channel can be opened again.
TEST_F(BusStateChannelTest, AFailedPublishFailsTheOpenAndTearsDownItsRing) {
  Open(a_, SmallRings());
  h_.Host(GpadlCreatedMsg(7, 0xE1E10));
  EXPECT_EQ(State(a_), ChannelState::kOpening);
  const std::vector<std::string> failed = h_.Do([&](BusState& b, Actions* o) {
    b.OnPublishFailed(a_, absl::AlreadyExistsError("relid 7 is taken"), o);
  });
  EXPECT_THAT(failed, ::testing::Contains("send GpadlTeardown{relid=7 gpadl=0xe1e10}"));
  EXPECT_THAT(failed, ::testing::Contains(::testing::HasSubstr(
                          "open offer=1: FAILED_PRECONDITION: open of relid 7: its channel could "
                          "not be published: relid 7 is taken")));
  EXPECT_EQ(State(a_), ChannelState::kClosed);
  EXPECT_FALSE(h_.bus().GetChannel(a_)->published);
  // A second report, or a late OpenResult for the open the host never saw, changes nothing.
  EXPECT_THAT(h_.Do([&](BusState& b, Actions* o) {
    b.OnPublishFailed(a_, absl::AlreadyExistsError("again"), o);
  }),
              IsEmpty());
  h_.Host(GpadlTorndownMsg(0xE1E10));
  EXPECT_TRUE(h_.bus().Gpadls().empty());
  Open(a_, SmallRings());
  EXPECT_EQ(h_.SentGpadl(), 0xE1E11u);
}

TEST_F(BusStateChannelTest, CloseRetiresFirstAndCompletesWhenTheRingGpadlIsGone) {
  h_.Opened(a_);
  EXPECT_THAT(Close(a_), ElementsAre("retire offer=1 relid=7", "send CloseChannel{relid=7}",
                                     "send GpadlTeardown{relid=7 gpadl=0xe1e10}",
                                     "arm_timer request=3 at=+10s"));
  EXPECT_EQ(State(a_), ChannelState::kClosing);
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10", "cancel_timer request=3",
                          "complete request=3 close offer=1: OK"));
  EXPECT_EQ(State(a_), ChannelState::kClosed);
  EXPECT_TRUE(h_.bus().Gpadls().empty());
  // Reopen: a fresh GPADL handle and a fresh open_id.
  Open(a_, SmallRings());
  EXPECT_EQ(h_.SentGpadl(), 0xE1E11u);
  h_.Host(GpadlCreatedMsg(7, 0xE1E11));
  EXPECT_EQ(h_.SentOpenId(), 2u);
}

TEST_F(BusStateChannelTest, HostRefusingTheOpenClosesAndTearsDownTheRings) {
  RequestId open;
  Open(a_, SmallRings(), &open);
  h_.Host(GpadlCreatedMsg(7, 0xE1E10));
  EXPECT_THAT(h_.Host(OpenResultMsg(7, 1, protocol::kStatusUnsuccessful)),
              ElementsAre("retire offer=1 relid=7", "send GpadlTeardown{relid=7 gpadl=0xe1e10}",
                          "cancel_timer request=2",
                          "complete request=2 open offer=1: FAILED_PRECONDITION: open of relid 7 "
                          "refused by host: status 0xC0000001"));
  EXPECT_EQ(State(a_), ChannelState::kClosed);
  // The teardown finishes in the background; a new open can start before it does.
  h_.Opened(a_);
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10"));
  EXPECT_EQ(State(a_), ChannelState::kOpen);
}

TEST_F(BusStateChannelTest, HostRefusingTheRingGpadlFailsTheOpen) {
  Open(a_, SmallRings());
  EXPECT_THAT(h_.Host(GpadlCreatedMsg(7, 0xE1E10, protocol::kStatusUnsuccessful)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10", "cancel_timer request=2",
                          "complete request=2 open offer=1: FAILED_PRECONDITION: open of relid 7 "
                          "failed: host refused ring GPADL 0xe1e10: status 0xC0000001"));
  EXPECT_EQ(State(a_), ChannelState::kClosed);
  h_.Opened(a_);
}

TEST_F(BusStateChannelTest, OpenDeadlineBeforeGpadlCreatedAbandonsTheGpadl) {
  RequestId open;
  Open(a_, SmallRings(), &open);
  EXPECT_THAT(Timer(open),
              ElementsAre("complete request=2 open offer=1: DEADLINE_EXCEEDED: open of relid 7: "
                          "no GpadlCreated for ring GPADL 0xe1e10 before the deadline"));
  EXPECT_EQ(State(a_), ChannelState::kClosed);
  // The late creation is undone at once.
  EXPECT_THAT(h_.Host(GpadlCreatedMsg(7, 0xE1E10)),
              ElementsAre("send GpadlTeardown{relid=7 gpadl=0xe1e10}"));
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10"));
}

TEST_F(BusStateChannelTest, OpenDeadlineBeforeOpenResultClosesAndIgnoresTheLateResult) {
  RequestId open;
  Open(a_, SmallRings(), &open);
  h_.Host(GpadlCreatedMsg(7, 0xE1E10));
  EXPECT_THAT(Timer(open),
              ElementsAre("retire offer=1 relid=7", "send CloseChannel{relid=7}",
                          "send GpadlTeardown{relid=7 gpadl=0xe1e10}",
                          "complete request=2 open offer=1: DEADLINE_EXCEEDED: open of relid 7: no "
                          "OpenResult before the deadline"));
  // Reopen at once; the first attempt's late OpenResult (open_id 1) cannot complete it.
  RequestId second;
  Open(a_, SmallRings(), &second);
  h_.Host(GpadlCreatedMsg(7, 0xE1E11));
  EXPECT_EQ(h_.SentOpenId(), 2u);
  EXPECT_THAT(h_.Host(OpenResultMsg(7, 1)),
              ElementsAre("ignored open_result_unexpected: FAILED_PRECONDITION: OpenResult for "
                          "relid 7 (open_id 1) matches no open in progress (channel opening "
                          "(waiting for OpenResult))"));
  EXPECT_THAT(h_.Host(OpenResultMsg(7, 2)),
              ElementsAre("cancel_timer request=3", "complete request=3 open offer=1: OK"));
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10"));
}

TEST_F(BusStateChannelTest, CloseDuringOpeningCancelsTheOpen) {
  RequestId open;
  Open(a_, SmallRings(), &open);
  h_.Host(GpadlCreatedMsg(7, 0xE1E10));
  EXPECT_THAT(Close(a_),
              ElementsAre("retire offer=1 relid=7", "send CloseChannel{relid=7}",
                          "send GpadlTeardown{relid=7 gpadl=0xe1e10}", "cancel_timer request=2",
                          "complete request=2 open offer=1: CANCELLED: open of relid 7 "
                          "cancelled by Close",
                          "arm_timer request=3 at=+10s"));
  EXPECT_THAT(h_.Host(OpenResultMsg(7, 1)),
              ElementsAre(::testing::StartsWith("ignored open_result_unexpected")));
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10", "cancel_timer request=3",
                          "complete request=3 close offer=1: OK"));
}

TEST_F(BusStateChannelTest, CloseBeforeTheRingGpadlExistsWaitsForItToGo) {
  RequestId open;
  Open(a_, SmallRings(), &open);
  EXPECT_THAT(Close(a_), ElementsAre("cancel_timer request=2",
                                     "complete request=2 open offer=1: CANCELLED: open of relid 7 "
                                     "cancelled by Close",
                                     "arm_timer request=3 at=+10s"));
  EXPECT_EQ(State(a_), ChannelState::kClosing);
  EXPECT_THAT(h_.Host(GpadlCreatedMsg(7, 0xE1E10)),
              ElementsAre("send GpadlTeardown{relid=7 gpadl=0xe1e10}"));
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10", "cancel_timer request=3",
                          "complete request=3 close offer=1: OK"));
  EXPECT_EQ(State(a_), ChannelState::kClosed);
}

TEST_F(BusStateChannelTest, CloseBeforeTheRingGpadlExistsCompletesIfTheHostRefusesIt) {
  Open(a_, SmallRings());
  Close(a_);
  EXPECT_THAT(h_.Host(GpadlCreatedMsg(7, 0xE1E10, 5)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10", "cancel_timer request=3",
                          "complete request=3 close offer=1: OK"));
}

TEST_F(BusStateChannelTest, CloseDeadlineLeavesTheTeardownPending) {
  h_.Opened(a_);
  RequestId close;
  Close(a_, &close);
  EXPECT_THAT(Timer(close),
              ElementsAre("complete request=3 close offer=1: DEADLINE_EXCEEDED: close of relid 7: "
                          "ring GPADL 0xe1e10 not torn down before the deadline"));
  EXPECT_EQ(State(a_), ChannelState::kClosed);
  ASSERT_EQ(h_.bus().Gpadls().size(), 1u);
  EXPECT_EQ(h_.bus().Gpadls()[0].state, GpadlState::kTearingDown);
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10"));
}

TEST_F(BusStateChannelTest, OpenPreconditions) {
  EXPECT_THAT(Open(OfferId(42), SmallRings()),
              ElementsAre("complete request=2 open offer=42: NOT_FOUND: open of offer 42: no such "
                          "offer"));
  OpenParams tiny;
  tiny.ring_pfns = Pfns(100, 3);
  tiny.outbound_ring_pages = 2;
  EXPECT_THAT(
      Open(a_, tiny),
      ElementsAre("complete request=3 open offer=1: INVALID_ARGUMENT: open of relid 7: each "
                  "ring needs at least 2 pages (outbound 2, inbound 1)"));
  tiny.outbound_ring_pages = 1;
  EXPECT_THAT(Open(a_, tiny), ElementsAre(::testing::HasSubstr("(outbound 1, inbound 2)")));
  OpenParams chatty = SmallRings();
  chatty.user_data = std::string(121, 'x');
  EXPECT_THAT(Open(a_, chatty),
              ElementsAre("complete request=5 open offer=1: INVALID_ARGUMENT: open of relid 7: 121 "
                          "bytes of user data, more than 120"));
  h_.Opened(a_);
  EXPECT_THAT(Open(a_, SmallRings()),
              ElementsAre("complete request=7 open offer=1: FAILED_PRECONDITION: open of relid 7: "
                          "the channel is open"));
  EXPECT_THAT(
      Close(OfferId(42)),
      ElementsAre("complete request=8 close offer=42: NOT_FOUND: close of offer 42: no such "
                  "offer"));
  Close(a_);
  EXPECT_THAT(Close(a_),
              ElementsAre("complete request=10 close offer=1: FAILED_PRECONDITION: close "
                          "of relid 7: a close is already in progress"));
  h_.Host(GpadlTorndownMsg(0xE1E10));
  EXPECT_THAT(Close(a_),
              ElementsAre("complete request=11 close offer=1: FAILED_PRECONDITION: close "
                          "of relid 7: the channel is not open"));
}

TEST_F(BusStateChannelTest, OpenBeforeConnectIsFailedPrecondition) {
  BusHarness fresh;
  EXPECT_THAT(fresh.Call([](BusState& b, Actions* o) {
    return b.Open(OfferId(1), SmallRings(), kDeadline, o);
  }),
              ElementsAre("complete request=1 open offer=1: NOT_FOUND: open of offer 1: no such "
                          "offer"));
}

TEST_F(BusStateChannelTest, GpadlCreateAndTeardown) {
  RequestId create;
  EXPECT_THAT(CreateGpadl(a_, GpadlParams{Pfns(500, 3)}, &create),
              ElementsAre("send GpadlCreate{relid=7 gpadl=0xe1e10 bytes=12288 offset=0 "
                          "pfns=[500,501,502]}",
                          "arm_timer request=2 at=+10s"));
  EXPECT_THAT(h_.Host(GpadlCreatedMsg(7, 0xE1E10)),
              ElementsAre("cancel_timer request=2",
                          "complete request=2 gpadl_create offer=1 gpadl=0xe1e10: OK"));
  EXPECT_EQ(h_.CompletionOf(create).gpadl, 0xE1E10u);
  // Handles are unique among live ones.
  CreateGpadl(a_, GpadlParams{Pfns(600, 1)});
  EXPECT_EQ(h_.SentGpadl(), 0xE1E11u);
  EXPECT_THAT(
      Teardown(a_, 0xE1E11),
      ElementsAre("complete request=4 gpadl_teardown offer=1: FAILED_PRECONDITION: teardown "
                  "of GPADL 0xe1e11 of relid 7: it is creating"));
  EXPECT_THAT(Teardown(a_, 0xE1E10), ElementsAre("send GpadlTeardown{relid=7 gpadl=0xe1e10}",
                                                 "arm_timer request=5 at=+10s"));
  EXPECT_THAT(
      Teardown(a_, 0xE1E10),
      ElementsAre("complete request=6 gpadl_teardown offer=1: FAILED_PRECONDITION: teardown "
                  "of GPADL 0xe1e10 of relid 7: it is tearing down"));
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10", "cancel_timer request=5",
                          "complete request=5 gpadl_teardown offer=1: OK"));
  EXPECT_THAT(Teardown(a_, 0xE1E10),
              ElementsAre("complete request=7 gpadl_teardown offer=1: NOT_FOUND: teardown of GPADL "
                          "0xe1e10: relid 7 has no such GPADL"));
}

TEST_F(BusStateChannelTest, RequestGpadlNamesTheHandleOfAPendingCall) {
  RequestId open, create;
  Open(a_, SmallRings(), &open);
  CreateGpadl(a_, GpadlParams{Pfns(500, 1)}, &create);
  EXPECT_EQ(h_.bus().RequestGpadl(open), 0xE1E10u);
  EXPECT_EQ(h_.bus().RequestGpadl(create), 0xE1E11u);
  h_.Host(GpadlCreatedMsg(7, 0xE1E11));
  EXPECT_EQ(h_.bus().RequestGpadl(create), std::nullopt);  // finished
  RequestId bad;
  Open(OfferId(99), SmallRings(), &bad);
  EXPECT_EQ(h_.bus().RequestGpadl(bad), std::nullopt);
}

TEST_F(BusStateChannelTest, GpadlRefusedByTheHost) {
  CreateGpadl(a_, GpadlParams{Pfns(500, 2)});
  EXPECT_THAT(h_.Host(GpadlCreatedMsg(7, 0xE1E10, protocol::kStatusUnsuccessful)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10", "cancel_timer request=2",
                          "complete request=2 gpadl_create offer=1: FAILED_PRECONDITION: GPADL "
                          "0xe1e10 for relid 7 refused by host: status 0xC0000001"));
  EXPECT_TRUE(h_.bus().Gpadls().empty());
}

TEST_F(BusStateChannelTest, GpadlOfAnyLengthTravelsWhole) {
  CreateGpadl(a_, GpadlParams{Pfns(1000, 1000)});
  const auto& msg = std::get<SendMessage>(h_.last()[0]).message.gpadl_create();
  EXPECT_EQ(msg.pfns_size(), 1000);
  EXPECT_EQ(msg.pfns(999), 1999u);
  EXPECT_EQ(msg.byte_count(), 1000u * 4096);
  EXPECT_THAT(
      DescribeAction(h_.last()[0]),
      ::testing::HasSubstr("pfns=[1000,1001,1002,1003,1004,1005,1006,1007,...(1000 pfns)]"));
}

TEST_F(BusStateChannelTest, GpadlParameterChecks) {
  EXPECT_THAT(CreateGpadl(a_, GpadlParams{}),
              ElementsAre("complete request=2 gpadl_create offer=1: INVALID_ARGUMENT: GPADL for "
                          "relid 7: no pages"));
  EXPECT_THAT(CreateGpadl(a_, GpadlParams{Pfns(1, 2), 0, 4096}),
              ElementsAre(::testing::HasSubstr("byte_offset 4096 is not inside the first page")));
  EXPECT_THAT(CreateGpadl(a_, GpadlParams{Pfns(1, 2), 100, 100}),
              ElementsAre(::testing::HasSubstr("byte_offset 100 + byte_count 100 does not end in "
                                               "the last of its 2 pages")));
  EXPECT_THAT(CreateGpadl(a_, GpadlParams{Pfns(1, 2), 8193, 0}),
              ElementsAre(::testing::HasSubstr("does not end in the last")));
  // A partial range that ends inside the last page is fine.
  EXPECT_THAT(CreateGpadl(a_, GpadlParams{Pfns(1, 2), 5000, 10}),
              ElementsAre("send GpadlCreate{relid=7 gpadl=0xe1e10 bytes=5000 offset=10 pfns=[1,2]}",
                          "arm_timer request=6 at=+10s"));
  EXPECT_THAT(
      CreateGpadl(OfferId(9), GpadlParams{Pfns(1, 1)}),
      ElementsAre(::testing::HasSubstr("NOT_FOUND: GPADL creation of offer 9: no such offer")));
}

TEST_F(BusStateChannelTest, RingGpadlsAreNotTornDownByTeardownGpadl) {
  const uint32_t ring = h_.Opened(a_);
  EXPECT_THAT(
      Teardown(a_, ring),
      ElementsAre("complete request=3 gpadl_teardown offer=1: FAILED_PRECONDITION: teardown "
                  "of GPADL 0xe1e10: it holds the rings of relid 7; Close tears it down"));
}

TEST_F(BusStateChannelTest, GpadlDeadlines) {
  RequestId create;
  CreateGpadl(a_, GpadlParams{Pfns(1, 1)}, &create);
  EXPECT_THAT(Timer(create),
              ElementsAre("complete request=2 gpadl_create offer=1: DEADLINE_EXCEEDED: GPADL "
                          "0xe1e10 of relid 7: no GpadlCreated before the deadline"));
  EXPECT_THAT(h_.Host(GpadlCreatedMsg(7, 0xE1E10)),
              ElementsAre("send GpadlTeardown{relid=7 gpadl=0xe1e10}"));
  CreateGpadl(a_, GpadlParams{Pfns(2, 1)});
  h_.Host(GpadlCreatedMsg(7, 0xE1E11));
  RequestId teardown;
  Teardown(a_, 0xE1E11, &teardown);
  EXPECT_THAT(Timer(teardown),
              ElementsAre("complete request=4 gpadl_teardown offer=1: DEADLINE_EXCEEDED: teardown "
                          "of GPADL 0xe1e11 of relid 7: no GpadlTorndown before the deadline"));
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E11)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e11"));
  EXPECT_THAT(h_.Host(GpadlTorndownMsg(0xE1E10)),
              ElementsAre("release_gpadl offer=1 gpadl=0xe1e10"));
}

// ---- ModifyChannel ------------------------------------------------------------------------

std::vector<std::string> Modify(BusHarness& h, OfferId offer, uint32_t vp,
                                RequestId* id = nullptr) {
  return h.Call([&](BusState& b, Actions* o) { return b.ModifyChannel(offer, vp, kDeadline, o); },
                id);
}

TEST_F(BusStateChannelTest, ModifyFrom53WaitsForTheResponse) {
  h_.Opened(a_);
  EXPECT_THAT(Modify(h_, a_, 5), ElementsAre("send ModifyChannel{relid=7 target_vp=5}",
                                             "arm_timer request=3 at=+10s"));
  EXPECT_THAT(Modify(h_, a_, 6),
              ElementsAre("complete request=4 modify_channel offer=1: FAILED_PRECONDITION: modify "
                          "of relid 7: another ModifyChannel is waiting"));
  EXPECT_THAT(
      h_.Host(ModifyResponseMsg(7)),
      ElementsAre("cancel_timer request=3", "complete request=3 modify_channel offer=1: OK"));
  Modify(h_, a_, 6);
  EXPECT_THAT(h_.Host(ModifyResponseMsg(7, protocol::kStatusUnsuccessful)),
              ElementsAre("cancel_timer request=5",
                          "complete request=5 modify_channel offer=1: FAILED_PRECONDITION: modify "
                          "of relid 7 refused by host: status 0xC0000001"));
  RequestId late;
  Modify(h_, a_, 7, &late);
  EXPECT_THAT(Timer(late),
              ElementsAre("complete request=6 modify_channel offer=1: DEADLINE_EXCEEDED: modify of "
                          "relid 7: no ModifyChannelResponse before the deadline"));
  EXPECT_THAT(h_.Host(ModifyResponseMsg(7)),
              ElementsAre("ignored modify_response_unexpected: FAILED_PRECONDITION: "
                          "ModifyChannelResponse for relid 7 with no ModifyChannel waiting"));
}

TEST_F(BusStateChannelTest, ModifyNeedsAnOpenChannel) {
  EXPECT_THAT(Modify(h_, a_, 1),
              ElementsAre("complete request=2 modify_channel offer=1: FAILED_PRECONDITION: modify "
                          "of relid 7: the channel is closed"));
}

TEST_F(BusStateChannelTest, CloseCancelsAWaitingModify) {
  h_.Opened(a_);
  Modify(h_, a_, 2);
  EXPECT_THAT(Close(a_),
              ElementsAre("retire offer=1 relid=7", "send CloseChannel{relid=7}",
                          "send GpadlTeardown{relid=7 gpadl=0xe1e10}", "cancel_timer request=3",
                          "complete request=3 modify_channel offer=1: CANCELLED: modify "
                          "of relid 7 cancelled by Close",
                          "arm_timer request=4 at=+10s"));
}

TEST(BusStateModifyVersionTest, From41To52ModifyCompletesAtOnce) {
  BusConfig c;
  c.max_version = protocol::kVersion5_2;
  BusHarness h(c);
  h.Connected(protocol::kVersion5_2);
  const OfferId a = h.Offered(7);
  h.Opened(a);
  EXPECT_THAT(Modify(h, a, 5), ElementsAre("send ModifyChannel{relid=7 target_vp=5}",
                                           "complete request=3 modify_channel offer=1: OK"));
  EXPECT_THAT(h.Host(ModifyResponseMsg(7)),
              ElementsAre("ignored modify_response_unexpected: FAILED_PRECONDITION: "
                          "ModifyChannelResponse for relid 7 under version 5.2, which has none"));
}

TEST(BusStateModifyVersionTest, Below41ModifyIsRefused) {
  BusConfig c;
  c.max_version = protocol::kVersion4_0;
  BusHarness h(c);
  h.Connected(protocol::kVersion4_0);
  const OfferId a = h.Offered(7);
  h.Opened(a);
  EXPECT_THAT(Modify(h, a, 5),
              ElementsAre("complete request=3 modify_channel offer=1: FAILED_PRECONDITION: modify "
                          "of relid 7 needs protocol 4.1 or newer; negotiated 4.0"));
}

TEST(BusStateScaleTest, AllRelidsOpenAndCloseWithUniqueHandles) {
  BusHarness h;
  h.set_check_invariants(false);  // O(channels) per step; checked once at the end instead
  h.Connected();
  std::vector<OfferId> ids;
  for (uint32_t relid = 1; relid <= protocol::kMaxRelid; ++relid) {
    Guid::Bytes bytes{};
    bytes[14] = static_cast<uint8_t>(relid >> 8);
    bytes[15] = static_cast<uint8_t>(relid);
    ids.push_back(h.Offered(relid, kEchoClass, Guid(bytes)));
  }
  std::set<uint32_t> handles;
  for (OfferId id : ids) handles.insert(h.Opened(id));
  EXPECT_EQ(handles.size(), protocol::kMaxRelid);
  EXPECT_EQ(*handles.begin(), protocol::kFirstGpadlHandle);
  for (OfferId id : ids) {
    const uint32_t relid = h.bus().GetChannel(id)->offer.relid;
    const uint32_t ring = h.bus().GetChannel(id)->ring_gpadl;
    h.Call([&](BusState& b, Actions* o) { return b.Close(id, kDeadline, o); });
    h.Host(GpadlTorndownMsg(ring));
    EXPECT_EQ(h.bus().GetChannel(id)->channel_state, ChannelState::kClosed) << relid;
  }
  EXPECT_TRUE(h.bus().Gpadls().empty());
  EXPECT_EQ(h.bus().pending_requests(), 0u);
  EXPECT_TRUE(h.bus().CheckInvariants().ok()) << h.bus().CheckInvariants();
}

}  // namespace
}  // namespace vbus::testing
