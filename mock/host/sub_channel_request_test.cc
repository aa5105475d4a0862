// The echo device's sub-channel request and answer: exact bytes, round trips, and every
// refusal of a malformed payload.
#include "mock/host/sub_channel_request.h"

#include <string>
#include <vector>

#include "core/data/protocol.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::mock {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::vector<uint8_t> Magic() { return {kSubChannelMagic.begin(), kSubChannelMagic.end()}; }

std::vector<uint8_t> Concat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(SubChannelRequestTest, RequestBytes) {
  EXPECT_EQ(kSubChannelMagic.size(), 16u);
  EXPECT_THAT(EncodeSubChannelRequest(0x0103), ElementsAreArray(Concat(Magic(), {0x03, 0x01})));
}

TEST(SubChannelRequestTest, RequestRoundTripWithAndWithoutPadding) {
  for (uint16_t count : {uint16_t{1}, uint16_t{3}, uint16_t{kMaxSubChannels}}) {
    std::vector<uint8_t> b = EncodeSubChannelRequest(count);
    EXPECT_TRUE(IsSubChannelRequest(b));
    EXPECT_EQ(RequestedCount(b), count);
    absl::StatusOr<uint16_t> parsed = ParseSubChannelRequest(b);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, count);
    b.resize(24, 0xEE);  // the sender's padding is ignored, whatever it holds
    EXPECT_TRUE(IsSubChannelRequest(b));
    EXPECT_EQ(*ParseSubChannelRequest(b), count);
  }
}

TEST(SubChannelRequestTest, MalformedRequestsAreNamed) {
  std::vector<uint8_t> short_one = EncodeSubChannelRequest(2);
  short_one.resize(17);
  EXPECT_FALSE(IsSubChannelRequest(short_one));
  EXPECT_EQ(RequestedCount(short_one), 0u);
  EXPECT_THAT(ParseSubChannelRequest(short_one).status().message(),
              HasSubstr("17 bytes is too short"));

  std::vector<uint8_t> bad_magic = EncodeSubChannelRequest(2);
  bad_magic[0] = 'v';
  EXPECT_FALSE(IsSubChannelRequest(bad_magic));
  EXPECT_THAT(ParseSubChannelRequest(bad_magic).status().message(), HasSubstr("magic"));
  EXPECT_FALSE(IsSubChannelRequest(std::vector<uint8_t>(18, 0)));

  for (uint16_t count : {uint16_t{0}, uint16_t{kMaxSubChannels + 1}, uint16_t{0xFFFF}}) {
    const std::vector<uint8_t> b = EncodeSubChannelRequest(count);
    EXPECT_TRUE(IsSubChannelRequest(b));  // a request, refused for its count
    EXPECT_EQ(RequestedCount(b), count);
    absl::StatusOr<uint16_t> parsed = ParseSubChannelRequest(b);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(), HasSubstr("1..64"));
  }
}

TEST(SubChannelRequestTest, AnswerBytes) {
  EXPECT_THAT(EncodeSubChannelAnswer(protocol::kStatusUnsuccessful, 3),
              ElementsAreArray(Concat(Magic(), {0x01, 0x00, 0x00, 0xC0, 0x03, 0x00, 0x00, 0x00})));
  EXPECT_EQ(EncodeSubChannelAnswer(0, 1).size(), kSubChannelAnswerBytes);
}

TEST(SubChannelRequestTest, AnswerRoundTrip) {
  for (uint32_t status : {protocol::kStatusSuccess, protocol::kStatusUnsuccessful}) {
    std::vector<uint8_t> b = EncodeSubChannelAnswer(status, 65);
    absl::StatusOr<SubChannelAnswer> a = ParseSubChannelAnswer(b);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->status, status);
    EXPECT_EQ(a->count, 65u);
    b.resize(32, 0);  // padding after the answer is allowed
    EXPECT_TRUE(ParseSubChannelAnswer(b).ok());
  }
}

TEST(SubChannelRequestTest, MalformedAnswersAreNamed) {
  std::vector<uint8_t> b = EncodeSubChannelAnswer(0, 2);
  b.resize(23);
  EXPECT_THAT(ParseSubChannelAnswer(b).status().message(), HasSubstr("23 bytes is too short"));
  b = EncodeSubChannelAnswer(0, 2);
  b[15] = 'X';
  EXPECT_THAT(ParseSubChannelAnswer(b).status().message(), HasSubstr("magic"));
  b = EncodeSubChannelAnswer(0, 2);
  b[23] = 1;
  absl::StatusOr<SubChannelAnswer> a = ParseSubChannelAnswer(b);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(a.status().message(), HasSubstr("reserved u16 256"));
  // An echoed request is not an answer.
  EXPECT_FALSE(ParseSubChannelAnswer(EncodeSubChannelRequest(2)).ok());
}

}  // namespace
}  // namespace vbus::mock
