#include "core/data/guid.h"

#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "core/data/device_classes.h"
#include "core/data/guid_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

using ::testing::HasSubstr;

TEST(GuidTest, ParseAndFormatRoundTrip) {
  absl::StatusOr<Guid> g = Guid::Parse("f8615163-df3e-46c5-913f-f2d2f965ed0e");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->bytes()[0], 0xf8);
  EXPECT_EQ(g->bytes()[15], 0x0e);
  EXPECT_EQ(g->ToString(), "f8615163-df3e-46c5-913f-f2d2f965ed0e");
  EXPECT_FALSE(g->IsNil());
}

TEST(GuidTest, ParseAcceptsUppercaseAndFormatsLowercase) {
  absl::StatusOr<Guid> g = Guid::Parse("F8615163-DF3E-46C5-913F-F2D2F965ED0E");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(*g, device_class::kNetwork);
  EXPECT_EQ(g->ToString(), "f8615163-df3e-46c5-913f-f2d2f965ed0e");
}

TEST(GuidTest, NilGuid) {
  Guid nil;
  EXPECT_TRUE(nil.IsNil());
  EXPECT_EQ(nil.ToString(), "00000000-0000-0000-0000-000000000000");
  EXPECT_EQ(*Guid::Parse("00000000-0000-0000-0000-000000000000"), nil);
}

struct BadGuid {
  const char* text;
  const char* expected_message;
};

class GuidParseRejects : public ::testing::TestWithParam<BadGuid> {};

TEST_P(GuidParseRejects, WithAClearError) {
  absl::StatusOr<Guid> g = Guid::Parse(GetParam().text);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(g.status().message()), HasSubstr(GetParam().expected_message));
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, GuidParseRejects,
    ::testing::Values(BadGuid{"", "expected 36 characters"},
                      BadGuid{"f8615163-df3e-46c5-913f-f2d2f965ed0", "got 35"},
                      BadGuid{"{f8615163-df3e-46c5-913f-f2d2f965ed0e}", "got 38"},
                      BadGuid{"f8615163df3e-46c5-913f-f2d2f965ed0e0", "expected '-' at position 8"},
                      BadGuid{"f8615163-df3e-46c5-913f_f2d2f965ed0e",
                              "expected '-' at position 23"},
                      BadGuid{"g8615163-df3e-46c5-913f-f2d2f965ed0e", "hex digit at position 0"},
                      BadGuid{"f8615163-df3e-46c5-913f-f2d2f965ed0z", "hex digit at position 35"},
                      BadGuid{"f8615163-df3e-46c5-913f-f2d2f965e d0", "hex digit at position 33"},
                      BadGuid{"f8615163-+f3e-46c5-913f-f2d2f965ed0e", "hex digit at position 9"}));

TEST(GuidTest, WireOrderSwapsTheFirstThreeFields) {
  // docs/protocol.md §14: f8615163-df3e-46c5-… is sent as 63 51 61 f8 3e df c5 46 ….
  const uint8_t expected[16] = {0x63, 0x51, 0x61, 0xf8, 0x3e, 0xdf, 0xc5, 0x46,
                                0x91, 0x3f, 0xf2, 0xd2, 0xf9, 0x65, 0xed, 0x0e};
  uint8_t wire[16];
  device_class::kNetwork.ToWire(wire);
  EXPECT_EQ(std::memcmp(wire, expected, 16), 0);
  EXPECT_EQ(Guid::FromWire(expected), device_class::kNetwork);
}

TEST(GuidTest, LiteralMatchesParse) {
  static_assert(Guid::Literal("57164f39-9115-4e78-ab55-382f3bd5422d").bytes()[0] == 0x57);
  EXPECT_EQ(device_class::kHeartbeat, *Guid::Parse("57164f39-9115-4e78-ab55-382f3bd5422d"));
  EXPECT_EQ(device_class::kKvp.ToString(), "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6");
}

TEST(GuidTest, OrderingAndHashing) {
  absl::flat_hash_set<Guid> set = {device_class::kHeartbeat, device_class::kShutdown,
                                   device_class::kHeartbeat};
  EXPECT_EQ(set.size(), 2u);
  EXPECT_LT(device_class::kShutdown, device_class::kHeartbeat);  // 0e… < 57…
}

TEST(GuidProtoTest, RoundTripAndRejection) {
  v1::Guid proto = GuidToProto(device_class::kTimeSync);
  EXPECT_EQ(proto.value(), "9527e630-d0ae-497b-adce-e80ab0175caf");
  absl::StatusOr<Guid> back = GuidFromProto(proto);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, device_class::kTimeSync);

  EXPECT_EQ(GuidFromProto(v1::Guid()).status().code(), absl::StatusCode::kInvalidArgument);
  proto.set_value("not-a-guid");
  EXPECT_EQ(GuidFromProto(proto).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vbus
