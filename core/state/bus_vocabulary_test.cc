// Tests of the bus state machine's vocabulary: protocol constants, ignore reasons, offer
// validation and the one-line descriptions of messages and actions.
#include <set>
#include <string>

#include "core/data/guid_proto.h"
#include "core/data/protocol.h"
#include "core/state/bus_actions.h"
#include "core/state/ignore_reason.h"
#include "core/state/offer_validation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

TEST(ProtocolTest, VersionsAndFeatures) {
  EXPECT_EQ(protocol::VersionName(protocol::kVersion5_3), "5.3");
  EXPECT_EQ(protocol::VersionName(protocol::kVersion2_4), "2.4");
  EXPECT_EQ(protocol::kVersion5_3, 0x00050003u);
  EXPECT_EQ(protocol::kGuestVersions.front(), protocol::kNewestVersion);
  EXPECT_EQ(protocol::kGuestVersions.back(), protocol::kOldestVersion);
  for (size_t i = 1; i < protocol::kGuestVersions.size(); ++i) {
    EXPECT_GT(protocol::kGuestVersions[i - 1], protocol::kGuestVersions[i]);
  }
  EXPECT_FALSE(protocol::UsesReturnedConnectionId(protocol::kVersion4_1));
  EXPECT_TRUE(protocol::UsesReturnedConnectionId(protocol::kVersion5_0));
  EXPECT_FALSE(protocol::HasUnload(protocol::kVersion2_4));
  EXPECT_TRUE(protocol::HasUnload(protocol::kVersion3_0));
  EXPECT_FALSE(protocol::HasModifyChannel(protocol::kVersion4_0));
  EXPECT_TRUE(protocol::HasModifyChannel(protocol::kVersion4_1));
  EXPECT_FALSE(protocol::HasModifyChannelResponse(protocol::kVersion5_2));
  EXPECT_TRUE(protocol::HasModifyChannelResponse(protocol::kVersion5_3));
  EXPECT_FALSE(protocol::IsValidRelid(0));
  EXPECT_TRUE(protocol::IsValidRelid(1));
  EXPECT_TRUE(protocol::IsValidRelid(2047));
  EXPECT_FALSE(protocol::IsValidRelid(2048));
}

TEST(IgnoreReasonTest, EveryReasonHasADistinctName) {
  std::set<std::string> names;
  for (size_t i = 0; i < kIgnoreReasonCount; ++i) {
    const std::string name(IgnoreReasonName(static_cast<IgnoreReason>(i)));
    EXPECT_NE(name, "unknown_reason") << i;
    EXPECT_TRUE(names.insert(name).second) << name;
  }
}

v1::Offer GoodOffer() {
  v1::Offer o;
  o.set_child_relid(5);
  *o.mutable_interface_type() = GuidToProto(Guid::Literal("57164f39-9115-4e78-ab55-382f3bd5422d"));
  o.mutable_interface_instance()->set_value("AABBCCDD-0011-2233-4455-66778899AABB");  // uppercase
  return o;
}

TEST(OfferValidationTest, AcceptsAndConvertsAGoodOffer) {
  v1::Offer o = GoodOffer();
  o.set_sub_channel_index(3);
  o.set_monitor_allocated(true);
  o.set_monitor_id(12);
  IgnoreReason reason = IgnoreReason::kMalformedMessage;
  absl::StatusOr<OfferInfo> info = ValidateOffer(o, &reason);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->relid, 5u);
  EXPECT_EQ(info->interface_instance.ToString(), "aabbccdd-0011-2233-4455-66778899aabb");
  EXPECT_EQ(info->sub_channel_index, 3u);
  EXPECT_TRUE(info->is_sub_channel());
  EXPECT_EQ(info->monitor_id, 12u);
  EXPECT_FALSE(info->id.valid());
  EXPECT_EQ(reason, IgnoreReason::kMalformedMessage);  // untouched on success
}

TEST(OfferValidationTest, NamesEachRejection) {
  struct Case {
    void (*mutate)(v1::Offer&);
    IgnoreReason reason;
    const char* message;
  };
  const Case cases[] = {
      {[](v1::Offer& o) { o.set_child_relid(0); }, IgnoreReason::kOfferRelidOutOfRange,
       "offer with relid 0 is outside 1..2047"},
      {[](v1::Offer& o) { o.set_child_relid(2048); }, IgnoreReason::kOfferRelidOutOfRange,
       "offer with relid 2048 is outside 1..2047"},
      {[](v1::Offer& o) { o.mutable_interface_type()->set_value("{57164f39}"); },
       IgnoreReason::kOfferBadGuid, "offer of relid 5 has a bad interface_type"},
      {[](v1::Offer& o) {
         o.set_monitor_allocated(true);
         o.set_monitor_id(255);
       },
       IgnoreReason::kOfferBadMonitorId, "offer of relid 5 has monitor id 255, not below 128"},
      {[](v1::Offer& o) { o.set_user_defined(std::string(200, 'z')); },
       IgnoreReason::kOfferFieldOutOfRange, "200 user-defined bytes, more than 120"},
  };
  for (const Case& c : cases) {
    v1::Offer o = GoodOffer();
    c.mutate(o);
    IgnoreReason reason = IgnoreReason::kMalformedMessage;
    absl::StatusOr<OfferInfo> info = ValidateOffer(o, &reason);
    ASSERT_FALSE(info.ok()) << c.message;
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(info.status().message()), ::testing::HasSubstr(c.message));
    EXPECT_EQ(reason, c.reason) << c.message;
  }
}

TEST(DescribeTest, EveryMessageKindHasAName) {
  v1::ControlMessage m;
  const auto* oneof = v1::ControlMessage::descriptor()->FindOneofByName("message");
  ASSERT_NE(oneof, nullptr);
  std::set<std::string> names;
  for (int i = 0; i < oneof->field_count(); ++i) {
    v1::ControlMessage one;
    const auto* field = oneof->field(i);
    one.GetReflection()->MutableMessage(&one, field);
    const std::string name(ControlMessageKindName(one));
    EXPECT_NE(name, "Empty") << field->name();
    EXPECT_TRUE(names.insert(name).second) << name;
    EXPECT_THAT(DescribeControlMessage(one), ::testing::StartsWith(name + "{"));
  }
  EXPECT_EQ(ControlMessageKindName(m), "Empty");
  EXPECT_EQ(DescribeControlMessage(m), "Empty{}");
}

TEST(DescribeTest, ActionsReadAsOneLine) {
  OfferInfo info;
  info.id = OfferId(3);
  info.primary = OfferId(2);
  info.relid = 9;
  info.sub_channel_index = 1;
  EXPECT_EQ(DescribeAction(OfferAdded{info}),
            "offer_added offer=3 relid=9 type=00000000-0000-0000-0000-000000000000 "
            "instance=00000000-0000-0000-0000-000000000000 sub=1 primary=2");
  EXPECT_EQ(DescribeAction(ReleaseGpadl{OfferId(3), 0xE1E10}),
            "release_gpadl offer=3 gpadl=0xe1e10");
  EXPECT_EQ(DescribeAction(Complete{RequestId(4), RequestKind::kGpadlCreate, OfferId(3),
                                    absl::OkStatus(), 0xE1E10}),
            "complete request=4 gpadl_create offer=3 gpadl=0xe1e10: OK");
  EXPECT_EQ(DescribeAction(ArmTimer{RequestId(4), absl::UnixEpoch() + absl::Milliseconds(1500)}),
            "arm_timer request=4 at=+1.5s");
  EXPECT_EQ(DescribeAction(InputIgnored{IgnoreReason::kRescindRepeated, absl::NotFoundError("x")}),
            "ignored rescind_repeated: NOT_FOUND: x");
  EXPECT_EQ(DescribeAction(ConnectionReady{0x00050002, 4}),
            "connection_ready version=5.2 message_connection_id=4");
}

}  // namespace
}  // namespace vbus
