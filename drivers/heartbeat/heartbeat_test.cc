#include "drivers/heartbeat/heartbeat.h"

#include "drivers/ic/ic_test_bytes.h"
#include "gtest/gtest.h"

namespace vbus::ic {
namespace {

using testing::Get;
using testing::Put;

std::vector<uint8_t> Beat(uint64_t seq, size_t body = 40) {
  std::vector<uint8_t> b = testing::HostRequest(1, 3, 0, 3, 0, body);
  if (body >= 8) Put(b, 28, seq, 8);  // seq_num @28
  if (body >= 12) Put(b, 36, 1, 4);   // application state @36 (kept)
  return b;
}

TEST(HeartbeatTest, AnswersSequencePlusOneAndKeepsTheRest) {
  HeartbeatDriver driver;
  ASSERT_FALSE(driver.endpoint().Process(testing::Negotiate({{3, 0}}, {{3, 0}})).answer.empty());
  IcEndpoint::Output out = driver.endpoint().Process(Beat(41));
  ASSERT_EQ(out.answer.size(), 68u);
  EXPECT_EQ(out.answer[25], 5);
  EXPECT_EQ(Get(out.answer, 20, 4), 0u);
  EXPECT_EQ(Get(out.answer, 28, 8), 42u);
  EXPECT_EQ(Get(out.answer, 36, 4), 1u);
  HeartbeatStatus s = driver.status();
  EXPECT_EQ(s.beats, 1u);
  EXPECT_EQ(s.last_sequence, 41u);
  EXPECT_NE(s.last_time, absl::InfinitePast());
  // Wraps.
  out = driver.endpoint().Process(Beat(UINT64_MAX));
  EXPECT_EQ(Get(out.answer, 28, 8), 0u);
}

TEST(HeartbeatTest, MinimumIsTheSequenceNumber) {
  HeartbeatDriver driver;
  ASSERT_FALSE(driver.endpoint().Process(testing::Negotiate({{1, 0}}, {{1, 0}})).answer.empty());
  IcEndpoint::Output out = driver.endpoint().Process(Beat(5, 8));  // 36 bytes: accepted
  EXPECT_EQ(Get(out.answer, 20, 4), 0u);
  EXPECT_EQ(Get(out.answer, 28, 8), 6u);
  out = driver.endpoint().Process(Beat(5, 7));  // 35 bytes: E_FAIL
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  EXPECT_EQ(driver.status().beats, 1u);
}

TEST(HeartbeatTest, HostWithOnlyUnknownVersionsIsRefused) {
  HeartbeatDriver driver;
  IcEndpoint::Output out = driver.endpoint().Process(testing::Negotiate({{3, 0}}, {{2, 0}}));
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  EXPECT_EQ(Get(out.answer, 28, 2), 0u);
  out = driver.endpoint().Process(Beat(1));
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  EXPECT_EQ(driver.status().beats, 0u);
}

}  // namespace
}  // namespace vbus::ic
