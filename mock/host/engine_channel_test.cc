// HostEngine channels driven by a scripted raw guest (mock/testing/engine_harness.h): GPADLs,
// open and close, rescind and relids, modify, unload and resume, slow-path signals and injected
// faults, with the exact host replies.
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/host/engine.h"
#include "mock/host/engine_test_util.h"
#include "mock/testing/engine_harness.h"
#include "mock/testing/proto_matchers.h"

namespace vbus::mock {
namespace {

using testing::Channel;
using ::testing::ElementsAre;
using testing::EngineChannelTest;
using testing::EngineHarness;
using testing::EqualsProto;
using ::testing::IsEmpty;
using testing::kGpadl;
using testing::OfKind;
using testing::ScriptedGuest;
using ::testing::SizeIs;
using testing::WithOffers;

// --- GPADLs ---------------------------------------------------------------------------------

TEST_F(EngineChannelTest, GpadlCreateAndTeardown) {
  EXPECT_THAT(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10, 11, 12, 13})),
              ElementsAre(EqualsProto(R"pb(control {
                                             gpadl_created { child_relid: 1 gpadl: 925200 }
                                           })pb")));
  ASSERT_NE(h_.engine().Gpadls(g_.id())->Find(kGpadl), nullptr);
  EXPECT_THAT(h_.engine().Gpadls(g_.id())->Find(kGpadl)->pfns, ElementsAre(10, 11, 12, 13));
  EXPECT_THAT(g_.Send(testing::GpadlTeardownMsg(1, kGpadl)),
              ElementsAre(EqualsProto("control { gpadl_torndown { gpadl: 925200 } }")));
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->size(), 0u);
  // The pages are free again.
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl + 1, {12, 13}))), 0u);
}

TEST_F(EngineChannelTest, GpadlWithPfnsOutsideMemoryIsRefused) {
  const uint32_t status = GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10, 256})));
  EXPECT_EQ(status, protocol::kStatusUnsuccessful);
  std::vector<v1::ProtocolEvent> errors = OfKind(h_.TakeEvents(), v1::EVENT_KIND_ERROR);
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_THAT(errors[0].detail(), ::testing::HasSubstr("PFN 256 (index 1) is outside"));
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {~uint64_t{0}}))),
            protocol::kStatusUnsuccessful);
  // Special pages (event pages, doorbells, monitor pages) are not data pages.
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {2}))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->size(), 0u);
}

TEST_F(EngineChannelTest, GpadlOverlapAndDuplicatesAreRefused) {
  ASSERT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10, 11, 12}))), 0u);
  // Overlapping another live GPADL (also one of another channel).
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(2, kGpadl + 1, {20, 12}))),
            protocol::kStatusUnsuccessful);
  std::vector<v1::ProtocolEvent> errors = OfKind(h_.TakeEvents(), v1::EVENT_KIND_ERROR);
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_THAT(errors[0].detail(), ::testing::HasSubstr("already belongs to GPADL 0xe1e10"));
  // A repeated page within one GPADL; a live handle; handle 0; no pages; a bad byte range.
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(2, kGpadl + 1, {20, 20}))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(2, kGpadl, {30}))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(2, 0, {30}))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(2, kGpadl + 2, {}))),
            protocol::kStatusUnsuccessful);
  v1::ControlMessage m = testing::GpadlCreateMsg(2, kGpadl + 3, {30, 31});
  m.mutable_gpadl_create()->set_byte_count(3 * protocol::kPageSize);
  EXPECT_EQ(GpadlStatus(g_.Send(m)), protocol::kStatusUnsuccessful);
  // Unknown relid.
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(99, kGpadl + 4, {40}))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->size(), 1u);
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->page_count(), 3u);
}

TEST_F(EngineChannelTest, GpadlTeardownErrors) {
  EXPECT_EQ(ErrorCode(g_.Send(testing::GpadlTeardownMsg(1, kGpadl))),
            static_cast<int>(absl::StatusCode::kNotFound));
  g_.CreateGpadl(1, kGpadl, 10, 8);
  EXPECT_EQ(ErrorCode(g_.Send(testing::GpadlTeardownMsg(2, kGpadl))),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  g_.Open(1, kGpadl, 4);
  EXPECT_EQ(ErrorCode(g_.Send(testing::GpadlTeardownMsg(1, kGpadl))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->size(), 1u);
}

// --- Open / close ---------------------------------------------------------------------------

TEST_F(EngineChannelTest, OpenMapsBothRingsAndClose) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  h_.TakeEvents();
  EXPECT_THAT(g_.Send(testing::OpenChannelMsg(1, kGpadl, 3)),
              ElementsAre(EqualsProto(R"pb(control {
                                             open_result { child_relid: 1 open_id: 1 status: 0 }
                                           })pb")));
  ASSERT_THAT(h_.map_requests(), SizeIs(1));
  const MapRings& map = h_.map_requests()[0];
  EXPECT_EQ(map.relid, 1u);
  EXPECT_EQ(map.device, "echo");
  EXPECT_EQ(map.gpadl, kGpadl);
  EXPECT_THAT(map.outbound_pfns, ElementsAre(10, 11, 12));
  EXPECT_THAT(map.inbound_pfns, ElementsAre(13, 14, 15, 16, 17));
  EXPECT_FALSE(map.monitor_id.has_value());
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_CHANNEL_OPENED), SizeIs(1));
  EXPECT_EQ(Channel(h_, "vm", 1).state(), v1::CHANNEL_STATE_OPEN);
  EXPECT_EQ(Channel(h_, "vm", 1).ring_gpadl(), kGpadl);

  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(1)), IsEmpty());  // no answer to a close
  EXPECT_THAT(h_.mapped(), IsEmpty());
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_CHANNEL_CLOSED), SizeIs(1));
  EXPECT_EQ(Channel(h_, "vm", 1).state(), v1::CHANNEL_STATE_OFFERED);
  // The GPADL stays until torn down, and can carry a new open.
  g_.Open(1, kGpadl, 4);
  EXPECT_THAT(h_.map_requests()[1].outbound_pfns, ElementsAre(10, 11, 12, 13));
  EXPECT_EQ(h_.action_violations(), 0);
}

TEST_F(EngineChannelTest, OpenWithABadRingOffsetIsRefused) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  for (uint32_t offset : {0u, 1u, 7u, 8u, 9u, 1000u}) {
    EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, offset))),
              protocol::kStatusUnsuccessful)
        << offset;
  }
  EXPECT_THAT(h_.map_requests(), IsEmpty());
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_ERROR), SizeIs(6));
  g_.Open(1, kGpadl, 6);  // the channel is still usable
}

TEST_F(EngineChannelTest, DuplicateOpenIsRefusedAndTheOpenChannelStays) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  g_.Open(1, kGpadl, 4);
  g_.CreateGpadl(1, kGpadl + 1, 20, 8);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl + 1, 4))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  EXPECT_THAT(h_.map_requests(), SizeIs(1));
  EXPECT_EQ(Channel(h_, "vm", 1).state(), v1::CHANNEL_STATE_OPEN);
  EXPECT_EQ(h_.mapped().size(), 1u);
}

TEST_F(EngineChannelTest, OpenWithABadGpadlIsRefused) {
  // No such GPADL.
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  // The GPADL of another channel.
  g_.CreateGpadl(2, kGpadl, 10, 8);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  // Unknown relid.
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(77, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  // A GPADL that does not start on a page boundary.
  v1::ControlMessage m = testing::GpadlCreateMsg(1, kGpadl + 1, {30, 31, 32, 33});
  m.mutable_gpadl_create()->set_byte_offset(8);
  m.mutable_gpadl_create()->set_byte_count(4 * protocol::kPageSize - 8);
  ASSERT_EQ(GpadlStatus(g_.Send(m)), 0u);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl + 1, 2))),
            protocol::kStatusUnsuccessful);
  // Device bytes over 120.
  g_.CreateGpadl(1, kGpadl + 2, 40, 4);
  v1::ControlMessage big = testing::OpenChannelMsg(1, kGpadl + 2, 2);
  big.mutable_open_channel()->set_user_data(std::string(121, 'u'));
  EXPECT_EQ(OpenStatus(g_.Send(big)), protocol::kStatusUnsuccessful);
  EXPECT_THAT(h_.map_requests(), IsEmpty());
}

TEST_F(EngineChannelTest, FailedMappingFailsTheOpen) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  h_.FailNextMap(absl::InternalError("mmap: out of address space"));
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  std::vector<v1::ProtocolEvent> errors = OfKind(h_.TakeEvents(), v1::EVENT_KIND_ERROR);
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_THAT(errors[0].detail(), ::testing::HasSubstr("out of address space"));
  EXPECT_EQ(Channel(h_, "vm", 1).state(), v1::CHANNEL_STATE_OFFERED);
  g_.Open(1, kGpadl, 4);  // the GPADL was released for a retry
}

TEST_F(EngineChannelTest, CloseErrors) {
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(1))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(5))),
            static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(0))),
            static_cast<int>(absl::StatusCode::kNotFound));
}

TEST_F(EngineChannelTest, CloseThatCrossedARefusedOpenIsAcceptedQuietly) {
  // The guest gave up on an open (its deadline passed) and sent CloseChannel before the
  // refusal reached it. That close is not a protocol error.
  g_.CreateGpadl(1, kGpadl, 10, 8);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 0))),
            protocol::kStatusUnsuccessful);
  h_.TakeEvents();
  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(1)), IsEmpty());
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_ERROR), IsEmpty());
  // Only one close is forgiven: a second one is an error again.
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(1))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  // An injected refusal counts too, and a later successful open clears the allowance.
  ASSERT_TRUE(h_.InjectFault("refuse { request: REQUEST_OPEN_CHANNEL }").ok());
  EXPECT_NE(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))), 0u);
  g_.Open(1, kGpadl, 4);
  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(1)), IsEmpty());  // closes the open channel
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(1))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  // A refused open of a channel that is already open leaves the allowance unset.
  g_.Open(1, kGpadl, 4);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(1)), IsEmpty());
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(1))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
}

TEST_F(EngineChannelTest, CloseWhileTheRuntimeStillMapsUndoesTheMapping) {
  // Drive the engine directly: the runtime has not answered MapRings yet.
  g_.CreateGpadl(1, kGpadl, 10, 8);
  Actions out;
  v1::GuestToHost open;
  *open.mutable_control() = testing::OpenChannelMsg(1, kGpadl, 4);
  ASSERT_TRUE(h_.engine().HandleGuestMessage(g_.id(), open, h_.now(), &out).ok());
  ASSERT_TRUE(std::holds_alternative<MapRings>(out.back()));
  out.clear();
  v1::GuestToHost close;
  *close.mutable_control() = testing::CloseChannelMsg(1);
  ASSERT_TRUE(h_.engine().HandleGuestMessage(g_.id(), close, h_.now(), &out).ok());
  for (const Action& a : out) EXPECT_FALSE(std::holds_alternative<UnmapRings>(a));
  // A reopen waits for the outstanding mapping.
  out.clear();
  ASSERT_TRUE(h_.engine().HandleGuestMessage(g_.id(), open, h_.now(), &out).ok());
  h_.Run(out);
  EXPECT_EQ(h_.TakeInbox(g_.id()).back().control().open_result().status(),
            protocol::kStatusUnsuccessful);
  // The mapping completes: undone at once, no OpenResult.
  out.clear();
  ASSERT_TRUE(h_.engine().CompleteOpen(g_.id(), 1, absl::OkStatus(), h_.now(), &out).ok());
  ASSERT_THAT(out, SizeIs(1));
  ASSERT_TRUE(std::holds_alternative<UnmapRings>(out[0]));
  EXPECT_EQ(std::get<UnmapRings>(out[0]).relid, 1u);
  // No second completion.
  EXPECT_EQ(h_.engine().CompleteOpen(g_.id(), 1, absl::OkStatus(), h_.now(), &out).code(),
            absl::StatusCode::kFailedPrecondition);
}

// --- Rescind and relids ---------------------------------------------------------------------

TEST_F(EngineChannelTest, RescindWhileOpen) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  g_.Open(1, kGpadl, 4);
  h_.TakeEvents();
  absl::StatusOr<v1::RescindResponse> r = h_.Rescind("vm", 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->rescinded_relids(), ElementsAre(1u));
  EXPECT_THAT(h_.mapped(), IsEmpty());  // the host stopped using the rings first
  EXPECT_THAT(g_.Inbox(), ElementsAre(EqualsProto("control { rescind_offer { child_relid: 1 } }")));
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_CHANNEL_CLOSED), SizeIs(1));
  EXPECT_EQ(Channel(h_, "vm", 1).state(), v1::CHANNEL_STATE_RESCINDED);
  EXPECT_EQ(h_.Rescind("vm", 1).status().code(), absl::StatusCode::kFailedPrecondition);

  // The guest closes, tears down and releases, as Linux does.
  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(1)), IsEmpty());
  EXPECT_THAT(g_.Send(testing::GpadlTeardownMsg(1, kGpadl)),
              ElementsAre(EqualsProto("control { gpadl_torndown { gpadl: 925200 } }")));
  // Opening or mapping more memory for a rescinded channel is refused.
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10}))),
            protocol::kStatusUnsuccessful);
  EXPECT_THAT(g_.Send(testing::RelidReleasedMsg(1)), IsEmpty());
  EXPECT_EQ(h_.engine().FindChannel(g_.id(), 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h_.action_violations(), 0);
}

TEST_F(EngineChannelTest, RelidsAreReusedOnlyAfterRelease) {
  ASSERT_TRUE(h_.Rescind("vm", 1).ok());
  g_.Inbox();
  // Relid 1 is still taken (rescinded, not released): the next offer gets 3.
  absl::StatusOr<v1::OfferResponse> a = h_.Offer("vm", "device: 'echo'");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->child_relid(), 3u);
  EXPECT_THAT(g_.Inbox(), SizeIs(1));  // the hot-added offer
  EXPECT_THAT(g_.Send(testing::RelidReleasedMsg(1)), IsEmpty());
  // Relid 1 is free, but it was rescinded while only offered: a guest that had refused it may
  // still send a second release (docs/protocol.md §17), so another free relid is taken first.
  absl::StatusOr<v1::OfferResponse> b = h_.Offer("vm", "device: 'echo'");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->child_relid(), 4u);
  g_.Inbox();
  EXPECT_THAT(g_.Send(testing::RelidReleasedMsg(1)), IsEmpty());  // that second release
  // Releasing an open relid, or an unknown one, is a protocol error (releasing one that is
  // only offered refuses the offer: engine_refusals_test.cc).
  g_.CreateGpadl(4, kGpadl, 10, 8);
  g_.Open(4, kGpadl, 4);
  EXPECT_EQ(ErrorCode(g_.Send(testing::RelidReleasedMsg(4))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(Channel(h_, "vm", 4).state(), v1::CHANNEL_STATE_OPEN);
  EXPECT_EQ(ErrorCode(g_.Send(testing::RelidReleasedMsg(1))),  // no third one
            static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(ErrorCode(g_.Send(testing::RelidReleasedMsg(2000))),
            static_cast<int>(absl::StatusCode::kNotFound));
}

TEST_F(EngineChannelTest, RescindSubChannelsBeforeThePrimary) {
  absl::StatusOr<v1::OfferResponse> o = h_.Offer("vm", "device: 'echo' sub_channel_count: 2");
  ASSERT_TRUE(o.ok());
  g_.Inbox();
  absl::StatusOr<v1::RescindResponse> r = h_.Rescind("vm", o->child_relid());
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->rescinded_relids(), ElementsAre(4u, 5u, 3u));
  EXPECT_THAT(g_.Inbox(), ElementsAre(EqualsProto("control { rescind_offer { child_relid: 4 } }"),
                                      EqualsProto("control { rescind_offer { child_relid: 5 } }"),
                                      EqualsProto("control { rescind_offer { child_relid: 3 } }")));
}

TEST(EngineRescindTest, RescindOfAnOfferNeverSentIsSilent) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  ASSERT_TRUE(h.Offer("vm", "device: 'echo'").ok());
  absl::StatusOr<v1::RescindResponse> r = h.Rescind("vm", 1);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->rescinded_relids(), ElementsAre(1u));
  EXPECT_THAT(g.Inbox(), IsEmpty());
  EXPECT_THAT(g.Connect(), IsEmpty());                            // nothing offered any more
  EXPECT_EQ(h.Offer("vm", "device: 'echo'")->child_relid(), 1u);  // and the relid is free
  EXPECT_EQ(h.Rescind("vm", 9).status().code(), absl::StatusCode::kNotFound);
}

// --- Modify ---------------------------------------------------------------------------------

// The guest takes events on kHarnessVps VPs: a channel targeting another could never be
// signalled, so the host refuses the open and the move (docs/protocol.md §12).
TEST_F(EngineChannelTest, AVpTheGuestDoesNotTakeEventsOnIsRefused) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  v1::ControlMessage open = testing::OpenChannelMsg(1, kGpadl, 4);
  open.mutable_open_channel()->set_target_vp(testing::kHarnessVps);
  std::vector<v1::HostToGuest> r = g_.Send(open);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].control().open_result().status(), protocol::kStatusUnsuccessful);
  EXPECT_EQ(Channel(h_, "vm", 1).state(), v1::CHANNEL_STATE_OFFERED);
  open.mutable_open_channel()->set_target_vp(testing::kHarnessVps - 1);
  open.mutable_open_channel()->set_open_id(2);
  r = g_.Send(open);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].control().open_result().status(), 0u);
  EXPECT_EQ(Channel(h_, "vm", 1).target_vp(), testing::kHarnessVps - 1);
  EXPECT_THAT(
      g_.Send(testing::ModifyChannelMsg(1, testing::kHarnessVps)),
      ElementsAre(EqualsProto(R"pb(control {
                                     modify_channel_response { child_relid: 1 status: 0xC0000001 }
                                   })pb")));
  EXPECT_EQ(Channel(h_, "vm", 1).target_vp(), testing::kHarnessVps - 1);
}

TEST_F(EngineChannelTest, ModifyChannelAt5_3Answers) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  g_.Open(1, kGpadl, 4);
  EXPECT_THAT(g_.Send(testing::ModifyChannelMsg(1, 3)),
              ElementsAre(EqualsProto(R"pb(control {
                                             modify_channel_response { child_relid: 1 status: 0 }
                                           })pb")));
  EXPECT_EQ(Channel(h_, "vm", 1).target_vp(), 3u);
  // Not open.
  EXPECT_THAT(
      g_.Send(testing::ModifyChannelMsg(2, 1)),
      ElementsAre(EqualsProto(R"pb(control {
                                     modify_channel_response { child_relid: 2 status: 0xC0000001 }
                                   })pb")));
}

TEST(EngineModifyTest, NoAnswerBefore5_3AndRefusedBefore4_1) {
  {
    EngineHarness h(WithOffers({"echo"}));
    ScriptedGuest g(h, "vm");
    g.Connect(protocol::kVersion5_0);
    g.CreateGpadl(1, kGpadl, 10, 8);
    g.Open(1, kGpadl, 4);
    EXPECT_THAT(g.Send(testing::ModifyChannelMsg(1, 2)), IsEmpty());
    EXPECT_EQ(Channel(h, "vm", 1).target_vp(), 2u);
    std::vector<v1::HostToGuest> r = g.Send(testing::ModifyChannelMsg(9, 2));
    ASSERT_THAT(r, SizeIs(1));
    EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kNotFound));
  }
  {
    EngineHarness h(WithOffers({"echo"}));
    ScriptedGuest g(h, "vm");
    g.Connect(protocol::kVersion4_0);
    std::vector<v1::HostToGuest> r = g.Send(testing::ModifyChannelMsg(1, 2));
    ASSERT_THAT(r, SizeIs(1));
    EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(r[0].error().message(), ::testing::HasSubstr("needs version 4.1"));
  }
}

// --- Unload and resume ----------------------------------------------------------------------

TEST_F(EngineChannelTest, UnloadClosesEverything) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  g_.Open(1, kGpadl, 4);
  g_.CreateGpadl(2, kGpadl + 1, 20, 4);
  EXPECT_THAT(g_.Send(testing::UnloadMsg()),
              ElementsAre(EqualsProto("control { unload_response { } }")));
  EXPECT_THAT(h_.mapped(), IsEmpty());
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->size(), 0u);
  v1::GuestInfo info = h_.engine().ListGuests().guests(0);
  EXPECT_EQ(info.state(), v1::GUEST_STATE_UNLOADED);
  EXPECT_EQ(info.version(), 0u);
  // Only a new negotiation is accepted now.
  std::vector<v1::HostToGuest> r = g_.Send(testing::RequestOffersMsg());
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r[0].error().message(), ::testing::HasSubstr("unloaded"));
  // Resume without remapping: the same relids come back.
  std::vector<v1::Offer> again = g_.Connect(protocol::kVersion5_3);
  ASSERT_THAT(again, SizeIs(2));
  EXPECT_EQ(again[0].child_relid(), 1u);
  EXPECT_EQ(again[1].child_relid(), 2u);
  g_.CreateGpadl(1, kGpadl, 10, 8);  // the old pages are free
  g_.Open(1, kGpadl, 4);
  EXPECT_EQ(h_.action_violations(), 0);
}

TEST(EngineUnloadTest, ResumeRemapsRelidsWhenConfigured) {
  EngineOptions options = WithOffers({"echo", "raw"});
  options.settings.set_remap_relids_on_resume(true);
  EngineHarness h(options);
  ScriptedGuest g(h, "vm");
  std::vector<v1::Offer> before = g.Connect();
  ASSERT_TRUE(h.Offer("vm", "device: 'sink' sub_channel_count: 1").ok());
  g.Inbox();
  ASSERT_THAT(g.Send(testing::UnloadMsg()), SizeIs(1));
  std::vector<v1::Offer> after = g.Connect();
  ASSERT_THAT(after, SizeIs(4));
  std::set<uint32_t> old_relids = {1, 2, 3, 4};
  for (const v1::Offer& o : after) {
    EXPECT_FALSE(old_relids.contains(o.child_relid())) << o.ShortDebugString();
    EXPECT_EQ(o.connection_id(), kChannelConnectionIdBase + o.child_relid());
  }
  // Same devices, same order, instances kept.
  EXPECT_EQ(after[0].interface_instance().value(), before[0].interface_instance().value());
  EXPECT_EQ(after[1].interface_instance().value(), before[1].interface_instance().value());
  EXPECT_EQ(after[3].sub_channel_index(), 1u);
  EXPECT_EQ(after[3].interface_instance().value(), after[2].interface_instance().value());
  // Rescinding the remapped primary takes the remapped sub-channel with it.
  absl::StatusOr<v1::RescindResponse> r = h.Rescind("vm", after[2].child_relid());
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->rescinded_relids(), ElementsAre(after[3].child_relid(), after[2].child_relid()));
}

TEST(EngineUnloadTest, ResumePermutesRelidsAndMonitorIdsWhenConfigured) {
  EngineOptions options = WithOffers({"echo", "raw", "echo", "sink"});
  options.settings.set_permute_relids_on_resume(true);
  options.settings.set_remap_relids_on_resume(true);  // permute takes precedence
  EngineHarness h(options);
  ScriptedGuest g(h, "vm");
  ASSERT_TRUE(h.Offer("vm", "device: 'echo' monitored: true").ok());
  ASSERT_TRUE(h.Offer("vm", "device: 'echo' monitored: true").ok());
  std::vector<v1::Offer> before = g.Connect();
  ASSERT_THAT(g.Send(testing::UnloadMsg()), SizeIs(1));
  std::vector<v1::Offer> after = g.Connect();
  ASSERT_THAT(after, SizeIs(before.size()));
  std::set<uint32_t> relids_before, relids_after;
  size_t monitored = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    // Same devices in the same order, each under another device's relid.
    EXPECT_EQ(after[i].interface_instance().value(), before[i].interface_instance().value());
    EXPECT_NE(after[i].child_relid(), before[i].child_relid()) << i;
    EXPECT_EQ(after[i].connection_id(), kChannelConnectionIdBase + after[i].child_relid());
    EXPECT_EQ(after[i].monitor_allocated(), before[i].monitor_allocated());
    if (before[i].monitor_allocated()) {
      ++monitored;
      EXPECT_NE(after[i].monitor_id(), before[i].monitor_id()) << i;
    }
    relids_before.insert(before[i].child_relid());
    relids_after.insert(after[i].child_relid());
  }
  EXPECT_EQ(relids_after, relids_before);
  EXPECT_GE(monitored, 2u);
  EXPECT_EQ(h.action_violations(), 0);
}

// An instance in use by a live primary is refused; once that primary is rescinded (before or
// after its release), remapped or never sent, the instance is free again, and the refusal
// names the relid that holds it now.
TEST(EngineOfferTest, InstancesAreFreedByRescindAndFollowRemapping) {
  EngineOptions options;
  options.settings.set_remap_relids_on_resume(true);
  EngineHarness h(options);
  ScriptedGuest g(h, "vm");
  const std::string spec =
      "device: 'echo' sub_channel_count: 1 interface_instance { value: "
      "'00000000-0000-0000-0000-0000000000aa' }";
  // Offered before the guest asked: rescinding forgets it at once.
  ASSERT_EQ(h.Offer("vm", spec)->child_relid(), 1u);
  ASSERT_TRUE(h.Rescind("vm", 1).ok());
  ASSERT_EQ(h.Offer("vm", spec)->child_relid(), 1u);
  g.Connect();
  absl::Status taken = h.Offer("vm", spec).status();
  EXPECT_EQ(taken.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(taken.message()), ::testing::HasSubstr("relid 1"));
  // Rescinded but not released: the instance is free, the relids are not.
  ASSERT_TRUE(h.Rescind("vm", 1).ok());
  ASSERT_EQ(h.Offer("vm", spec)->child_relid(), 3u);
  g.Inbox();
  EXPECT_THAT(g.Send(testing::RelidReleasedMsg(2)), IsEmpty());
  EXPECT_THAT(g.Send(testing::RelidReleasedMsg(1)), IsEmpty());
  // Releasing the old primary does not free the instance of the new one.
  EXPECT_EQ(h.Offer("vm", spec).status().code(), absl::StatusCode::kAlreadyExists);
  // After a remapping resume the holder is named by its new relid.
  ASSERT_THAT(g.Send(testing::UnloadMsg()), SizeIs(1));
  std::vector<v1::Offer> after = g.Connect();
  ASSERT_THAT(after, SizeIs(2));
  taken = h.Offer("vm", spec).status();
  EXPECT_EQ(taken.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(taken.message()),
              ::testing::HasSubstr(absl::StrCat("relid ", after[0].child_relid())));
  ASSERT_TRUE(h.Rescind("vm", after[0].child_relid()).ok());
  EXPECT_TRUE(h.Offer("vm", spec).ok());
}

TEST(EngineUnloadTest, UnloadNeedsVersion3) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  g.Connect(protocol::kVersion2_4);
  std::vector<v1::HostToGuest> r = g.Send(testing::UnloadMsg());
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
}

TEST(EngineUnloadTest, RescindedChannelsAreForgottenOnUnload) {
  EngineHarness h(WithOffers({"echo"}));
  ScriptedGuest g(h, "vm");
  g.Connect();
  ASSERT_TRUE(h.Rescind("vm", 1).ok());
  g.Inbox();
  g.Send(testing::UnloadMsg());
  EXPECT_THAT(g.Connect(), IsEmpty());
  EXPECT_EQ(h.Offer("vm", "device: 'raw'")->child_relid(), 1u);
}

TEST_F(EngineChannelTest, SlowPathSignals) {
  v1::GuestToHost s;
  s.mutable_signal()->set_child_relid(1);
  std::vector<v1::HostToGuest> r = g_.SendRaw(s);
  ASSERT_THAT(r, SizeIs(1));  // not open
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  g_.CreateGpadl(1, kGpadl, 10, 8);
  g_.Open(1, kGpadl, 4);
  EXPECT_THAT(g_.SendRaw(s), IsEmpty());
  ASSERT_THAT(h_.signals(), SizeIs(1));
  EXPECT_EQ(h_.signals()[0].relid, 1u);
  s.mutable_signal()->set_child_relid(3000);
  r = g_.SendRaw(s);
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kNotFound));
}

// --- Faults ---------------------------------------------------------------------------------

TEST_F(EngineChannelTest, DropDuplicateAndDelayFaults) {
  ASSERT_TRUE(h_.InjectFault("message { message_type: 'gpadl_created' action: ACTION_DROP }").ok());
  EXPECT_THAT(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10, 11, 12, 13})), IsEmpty());
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_FAULT_FIRED), SizeIs(1));
  // The GPADL was created all the same: only the answer was lost.
  EXPECT_NE(h_.engine().Gpadls(g_.id())->Find(kGpadl), nullptr);

  ASSERT_TRUE(
      h_.InjectFault("message { message_type: 'open_result' action: ACTION_DUPLICATE }").ok());
  EXPECT_THAT(g_.Send(testing::OpenChannelMsg(1, kGpadl, 2)), SizeIs(2));

  ASSERT_TRUE(h_.InjectFault(
                    "message { message_type: 'offer' action: ACTION_DELAY delay_ms: 250 count: 2 }")
                  .ok());
  ASSERT_TRUE(h_.Offer("vm", "device: 'echo'").ok());
  ASSERT_TRUE(h_.Offer("vm", "device: 'echo'").ok());
  ASSERT_TRUE(h_.Offer("vm", "device: 'echo'").ok());  // the third is not delayed
  std::vector<v1::HostToGuest> inbox = g_.Inbox();
  ASSERT_THAT(inbox, SizeIs(1));
  EXPECT_EQ(inbox[0].control().offer().child_relid(), 5u);
  ASSERT_TRUE(h_.engine().NextTimer().has_value());
  EXPECT_EQ(*h_.engine().NextTimer(), h_.now() + absl::Milliseconds(250));
  h_.Advance(absl::Milliseconds(249));
  EXPECT_THAT(g_.Inbox(), IsEmpty());
  h_.Advance(absl::Milliseconds(1));
  inbox = g_.Inbox();
  ASSERT_THAT(inbox, SizeIs(2));
  EXPECT_EQ(inbox[0].control().offer().child_relid(), 3u);
  EXPECT_EQ(inbox[1].control().offer().child_relid(), 4u);
  EXPECT_FALSE(h_.engine().NextTimer().has_value());
}

TEST_F(EngineChannelTest, RefuseNextRequests) {
  ASSERT_TRUE(h_.InjectFault("refuse { request: REQUEST_GPADL_CREATE status: 0xC000009A }").ok());
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10, 11, 12, 13}))),
            0xC000009Au);
  g_.CreateGpadl(1, kGpadl, 10, 4);  // only the next one
  ASSERT_TRUE(h_.InjectFault("refuse { request: REQUEST_OPEN_CHANNEL }").ok());
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 2))),
            protocol::kStatusUnsuccessful);
  g_.Open(1, kGpadl, 2);
  ASSERT_TRUE(h_.InjectFault("refuse { request: REQUEST_MODIFY_CHANNEL status: 5 }").ok());
  std::vector<v1::HostToGuest> r = g_.Send(testing::ModifyChannelMsg(1, 1));
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].control().modify_channel_response().status(), 5u);
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_FAULT_FIRED), SizeIs(3));
}

TEST_F(EngineChannelTest, DisconnectFaultAndBadFaults) {
  ASSERT_TRUE(h_.InjectFault("disconnect: true").ok());
  ASSERT_THAT(h_.disconnects(), SizeIs(1));
  EXPECT_EQ(h_.disconnects()[0].guest_id, g_.id());
  EXPECT_EQ(h_.InjectFault("message { message_type: 'open_channel' action: ACTION_DROP }").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.InjectFault("message { message_type: 'offer' }").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.InjectFault("refuse { }").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.InjectFault("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.InjectFault("guest: 'zzz' disconnect: true").code(), absl::StatusCode::kNotFound);
  // Ring faults act on shared memory, which only the runtime has.
  EXPECT_EQ(h_.InjectFault("ring { child_relid: 1 reading: READING_STOP }").code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineChannelTest, ASendFaultDeliversTheMessageAsGivenAndChangesNothing) {
  const int channels_before = h_.engine().ListChannels(g_.id())->channels_size();
  ASSERT_TRUE(h_.InjectFault("send { offer { child_relid: 0 sub_channel_index: 3 } }").ok());
  std::vector<v1::HostToGuest> inbox = g_.Inbox();
  ASSERT_THAT(inbox, SizeIs(1));
  EXPECT_EQ(inbox[0].control().offer().child_relid(), 0u);
  EXPECT_EQ(inbox[0].control().offer().sub_channel_index(), 3u);
  ASSERT_TRUE(h_.InjectFault("send { open_result { child_relid: 77 open_id: 9 } }").ok());
  ASSERT_THAT(g_.Inbox(), SizeIs(1));
  EXPECT_EQ(h_.engine().ListChannels(g_.id())->channels_size(), channels_before);
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_FAULT_FIRED), SizeIs(2));
  // Only host → guest kinds; and something must be set.
  EXPECT_EQ(h_.InjectFault("send { open_channel { child_relid: 1 } }").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.InjectFault("send { }").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vbus::mock
