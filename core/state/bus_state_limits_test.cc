// BusState: the wire limits of docs/protocol.md §6, §7 and §16 (core/data/protocol.h), each at
// the limit and one past it. A call past a limit completes with InvalidArgument naming the
// limit and the value, with nothing sent, no timer armed and no GPADL handle taken.
#include <cstdint>
#include <string>
#include <utility>

#include "core/data/protocol.h"
#include "core/state/bus_state.h"
#include "core/state/bus_state_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::testing::StartsWith;

class BusStateLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_.Connected();  // request 1
    a_ = h_.Offered(7);
  }
  std::vector<std::string> Open(OpenParams params) {
    return h_.Call(
        [&](BusState& b, Actions* o) { return b.Open(a_, std::move(params), kDeadline, o); });
  }
  std::vector<std::string> CreateGpadl(size_t pages) {
    return h_.Call([&](BusState& b, Actions* o) {
      return b.CreateGpadl(a_, GpadlParams{Pfns(100, pages)}, kDeadline, o);
    });
  }
  static OpenParams Rings(uint32_t outbound, uint32_t inbound) {
    OpenParams p;
    p.ring_pfns = Pfns(100, outbound + inbound);
    p.outbound_ring_pages = outbound;
    return p;
  }
  // The GpadlCreate sent by the last step.
  const v1::GpadlCreate& SentGpadlCreate() {
    return std::get<SendMessage>(h_.last().at(0)).message.gpadl_create();
  }

  BusHarness h_;
  OfferId a_;
};

TEST_F(BusStateLimitsTest, TheLimitsFollowFromTheHyperVEncoding) {
  EXPECT_EQ(protocol::kMaxGpadlPages, 8190u);
  // range_buflen (u16) = 8 + 8 x pages: 8190 pages fit, 8191 do not.
  EXPECT_LE(protocol::kGpadlRangeHeaderBytes + 8 * protocol::kMaxGpadlPages, 0xFFFFu);
  EXPECT_GT(protocol::kGpadlRangeHeaderBytes + 8 * (protocol::kMaxGpadlPages + 1), 0xFFFFu);
  EXPECT_EQ(protocol::GpadlMessageCount(26), 1u);
  EXPECT_EQ(protocol::GpadlMessageCount(27), 2u);
  EXPECT_EQ(protocol::GpadlMessageCount(26 + 28), 2u);
  EXPECT_EQ(protocol::GpadlMessageCount(26 + 28 + 1), 3u);
  EXPECT_EQ(protocol::kMaxRingPairPages, 8190u);
  EXPECT_EQ(protocol::kMaxRingPages, 8188u);
  EXPECT_TRUE(protocol::RingSplitFits(8190, 2));
  EXPECT_TRUE(protocol::RingSplitFits(8190, 8188));
  EXPECT_FALSE(protocol::RingSplitFits(8190, 8189));
  EXPECT_FALSE(protocol::RingSplitFits(8191, 4000));
  EXPECT_FALSE(protocol::RingSplitFits(4, 1));
  EXPECT_FALSE(protocol::RingSplitFits(4, 5));
}

TEST_F(BusStateLimitsTest, TheLargestGpadlIsSentWhole) {
  EXPECT_THAT(CreateGpadl(protocol::kMaxGpadlPages),
              ElementsAre(StartsWith("send GpadlCreate{relid=7 gpadl=0xe1e10 bytes=33546240 "
                                     "offset=0 pfns=[100,"),
                          "arm_timer request=2 at=+10s"));
  EXPECT_EQ(SentGpadlCreate().pfns_size(), 8190);
  EXPECT_THAT(h_.bus().Gpadls(), SizeIs(1));
}

TEST_F(BusStateLimitsTest, AGpadlOfOnePageMoreIsRefusedBeforeAnythingIsSent) {
  RequestId id;
  EXPECT_THAT(h_.Call(
                  [&](BusState& b, Actions* o) {
                    return b.CreateGpadl(a_, GpadlParams{Pfns(100, 8191)}, kDeadline, o);
                  },
                  &id),
              ElementsAre("complete request=2 gpadl_create offer=1: INVALID_ARGUMENT: GPADL for "
                          "relid 7: 8191 pages, more than the 8190 one GPADL holds (its range "
                          "length is 16 bits)"));
  EXPECT_FALSE(h_.bus().RequestGpadl(id).has_value());  // nothing for the runtime to file
  EXPECT_TRUE(h_.bus().Gpadls().empty());
  EXPECT_EQ(h_.bus().counters().messages_sent, 2u);  // InitiateContact, RequestOffers
  // The handle was not used up: the next GPADL gets the first one.
  CreateGpadl(1);
  EXPECT_EQ(h_.SentGpadl(), protocol::kFirstGpadlHandle);
}

TEST_F(BusStateLimitsTest, TheLargestRingPairOpens) {
  EXPECT_THAT(Open(Rings(4095, 4095)),
              ElementsAre(StartsWith("send GpadlCreate{relid=7 gpadl=0xe1e10 bytes=33546240 "
                                     "offset=0 pfns=[100,"),
                          "arm_timer request=2 at=+10s"));
  EXPECT_EQ(SentGpadlCreate().pfns_size(), 8190);
  EXPECT_THAT(h_.Host(GpadlCreatedMsg(7, 0xE1E10)),
              ElementsAre("publish offer=1 relid=7",
                          HasSubstr("send OpenChannel{relid=7 open_id=1 gpadl=0xe1e10 "
                                    "target_vp=0 downstream_offset=4095")));
  EXPECT_THAT(h_.Host(OpenResultMsg(7, h_.SentOpenId())),
              ElementsAre("cancel_timer request=2", "complete request=2 open offer=1: OK"));
}

TEST_F(BusStateLimitsTest, OneRingAsLargeAsTheOtherAllows) {
  EXPECT_THAT(Open(Rings(protocol::kMaxRingPages, protocol::kMinRingPages)),
              ElementsAre(HasSubstr("bytes=33546240"), "arm_timer request=2 at=+10s"));
}

TEST_F(BusStateLimitsTest, ARingPairOfOnePageMoreIsRefusedBeforeAnythingIsSent) {
  EXPECT_THAT(Open(Rings(4096, 4095)),
              ElementsAre("complete request=2 open offer=1: INVALID_ARGUMENT: open of relid 7: "
                          "8191 ring pages (outbound 4096, inbound 4095), more than the 8190 one "
                          "GPADL holds (its range length is 16 bits)"));
  EXPECT_THAT(Open(Rings(protocol::kMaxRingPages + 1, protocol::kMinRingPages)),
              ElementsAre(HasSubstr("8191 ring pages (outbound 8189, inbound 2)")));
  EXPECT_EQ(h_.bus().GetChannel(a_)->channel_state, ChannelState::kClosed);
  EXPECT_TRUE(h_.bus().Gpadls().empty());
  EXPECT_EQ(h_.bus().counters().messages_sent, 2u);
  EXPECT_EQ(h_.bus().pending_requests(), 0u);
  // Still openable, on the first handle.
  Open(Rings(2, 2));
  EXPECT_EQ(h_.SentGpadl(), protocol::kFirstGpadlHandle);
}

TEST_F(BusStateLimitsTest, EachRingNeedsItsControlPageAndADataPage) {
  EXPECT_THAT(Open(Rings(2, 2)),
              ElementsAre(HasSubstr("send GpadlCreate"), HasSubstr("arm_timer")));
  BusHarness h;
  h.Connected();
  const OfferId b = h.Offered(9);
  for (const std::pair<uint32_t, uint32_t>& rings :
       {std::pair{1u, 2u}, std::pair{2u, 1u}, std::pair{0u, 4u}}) {
    EXPECT_THAT(h.Call([&](BusState& s, Actions* o) {
      return s.Open(b, Rings(rings.first, rings.second), kDeadline, o);
    }),
                ElementsAre(HasSubstr("INVALID_ARGUMENT: open of relid 9: each ring needs at least "
                                      "2 pages")))
        << rings.first << " + " << rings.second;
  }
}

TEST_F(BusStateLimitsTest, UserDataFillsItsFieldButNoMore) {
  OpenParams full = Rings(2, 2);
  full.user_data = std::string(protocol::kUserDefinedBytes, 'u');
  EXPECT_THAT(Open(full), ElementsAre(HasSubstr("send GpadlCreate"), HasSubstr("arm_timer")));
  h_.Host(GpadlCreatedMsg(7, 0xE1E10));
  EXPECT_EQ(std::get<SendMessage>(h_.last().at(1)).message.open_channel().user_data(),
            std::string(120, 'u'));
  BusHarness h;
  h.Connected();
  const OfferId b = h.Offered(9);
  OpenParams over = Rings(2, 2);
  over.user_data = std::string(protocol::kUserDefinedBytes + 1, 'u');
  EXPECT_THAT(
      h.Call([&](BusState& s, Actions* o) { return s.Open(b, over, kDeadline, o); }),
      ElementsAre("complete request=2 open offer=1: INVALID_ARGUMENT: open of relid 9: 121 bytes "
                  "of user data, more than 120"));
}

}  // namespace
}  // namespace vbus::testing
