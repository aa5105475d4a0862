// HostEngine refusing what a real host refuses: wire limits (core/data/protocol.h,
// docs/protocol.md §6, §7, §16), each at the limit and one past it. A refusal is a non-zero
// status (never a crash), counted and reported as an ERROR event naming the limit, with nothing
// recorded.
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

}  // namespace
}  // namespace vbus::mock
