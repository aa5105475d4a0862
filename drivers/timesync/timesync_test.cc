#include "drivers/timesync/timesync.h"

#include <optional>

#include "drivers/ic/ic_test_bytes.h"
#include "gtest/gtest.h"

namespace vbus::ic {
namespace {

using testing::Get;
using testing::Put;

// 2026-01-01 00:00:00 UTC in 100 ns units since 1601.
constexpr uint64_t k2026 = 116444736000000000ull + 1767225600ull * 10000000ull;

TEST(TimeSyncTest, EpochConversion) {
  EXPECT_EQ(FromHostTime(116444736000000000ull), absl::UnixEpoch());
  EXPECT_EQ(FromHostTime(k2026), absl::FromUnixSeconds(1767225600));
  EXPECT_EQ(FromHostTime(k2026 + 5), absl::FromUnixSeconds(1767225600) + absl::Nanoseconds(500));
  EXPECT_EQ(ToHostTime(absl::FromUnixSeconds(1767225600)), k2026);
  EXPECT_EQ(FromHostTime(0), absl::UnixEpoch() - absl::Seconds(11644473600));
}

struct Fixture {
  std::optional<TimeSample> seen;
  uint64_t reference = 1000;
  absl::Time guest = absl::FromUnixSeconds(1767225600) - absl::Seconds(5);
  TimeSyncDriver driver{[this] {
    TimeSyncDriverOptions o;
    o.on_sample = [this](const TimeSample& s) { seen = s; };
    o.reference_now = [this] { return reference; };
    o.now = [this] { return guest; };
    return o;
  }()};
};

TEST(TimeSyncTest, Version4SyncAddsTheTimeInFlight) {
  Fixture f;
  IcEndpoint::Output out = f.driver.endpoint().Process(testing::Negotiate({{3, 0}}, {{4, 0}}));
  ASSERT_EQ(Get(out.answer, 20, 4), 0u);
  // parenttime @28, vmreferencetime @36, flags @44, leapflags @45, stratum @46; 50 bytes.
  std::vector<uint8_t> b = testing::HostRequest(4, 3, 0, 4, 0, 22);
  Put(b, 28, k2026, 8);
  Put(b, 36, 400, 8);  // read 600 ticks (60 us) before the guest's reference_now
  b[44] = 1;           // SYNC
  b[46] = 3;
  out = f.driver.endpoint().Process(b);
  EXPECT_EQ(Get(out.answer, 20, 4), 0u);
  EXPECT_EQ(out.answer[25], 5);
  ASSERT_TRUE(f.seen.has_value());
  EXPECT_EQ(f.seen->kind, TimeSyncFlag::kSync);
  EXPECT_EQ(f.seen->host_time, absl::FromUnixSeconds(1767225600) + absl::Microseconds(60));
  EXPECT_EQ(f.seen->offset, absl::Seconds(5) + absl::Microseconds(60));
  EXPECT_FALSE(f.seen->stale);
}

TEST(TimeSyncTest, Version3SampleUsesParentTime) {
  Fixture f;
  (void)f.driver.endpoint().Process(testing::Negotiate({{3, 0}}, {{3, 0}}));
  // parenttime @28, childtime @36, roundtriptime @44, flags @52; 53 bytes.
  std::vector<uint8_t> b = testing::HostRequest(4, 3, 0, 3, 0, 25);
  Put(b, 28, k2026, 8);
  b[52] = 2;  // SAMPLE
  IcEndpoint::Output out = f.driver.endpoint().Process(b);
  EXPECT_EQ(Get(out.answer, 20, 4), 0u);
  ASSERT_TRUE(f.seen.has_value());
  EXPECT_EQ(f.seen->kind, TimeSyncFlag::kSample);
  EXPECT_EQ(f.seen->offset, absl::Seconds(5));
}

TEST(TimeSyncTest, StaleSyncIsFlagged) {
  Fixture f;
  (void)f.driver.endpoint().Process(testing::Negotiate({{3, 0}}, {{4, 0}}));
  f.reference = 700ull * 10000000ull;  // 700 s after the reading below
  std::vector<uint8_t> b = testing::HostRequest(4, 3, 0, 4, 0, 22);
  Put(b, 28, k2026, 8);
  Put(b, 36, 0, 8);
  b[44] = 1;
  (void)f.driver.endpoint().Process(b);
  ASSERT_TRUE(f.seen.has_value());
  EXPECT_TRUE(f.seen->stale);
}

TEST(TimeSyncTest, ShortBodiesProbesAndUnknownFlags) {
  Fixture f;
  (void)f.driver.endpoint().Process(testing::Negotiate({{3, 0}}, {{4, 0}}));
  std::vector<uint8_t> b = testing::HostRequest(4, 3, 0, 4, 0, 21);  // 49 bytes: too short
  EXPECT_EQ(Get(f.driver.endpoint().Process(b).answer, 20, 4), 0x80004005u);
  b = testing::HostRequest(4, 3, 0, 4, 0, 22);
  b[44] = 0;  // PROBE: answered, not reported
  EXPECT_EQ(Get(f.driver.endpoint().Process(b).answer, 20, 4), 0u);
  EXPECT_FALSE(f.seen.has_value());
  b[44] = 9;
  EXPECT_EQ(Get(f.driver.endpoint().Process(b).answer, 20, 4), 0x80004005u);
  EXPECT_FALSE(f.seen.has_value());
}

TEST(TimeSyncTest, HostEncoderMatchesTheLayouts) {
  TimeSyncMessage m;
  m.parent_time = k2026;
  m.reference_time = 77;
  m.flags = 2;
  std::vector<uint8_t> v4 = EncodeTimeSyncBody({4, 0}, m);
  ASSERT_EQ(v4.size(), 22u);
  EXPECT_EQ(Get(v4, 0, 8), k2026);
  EXPECT_EQ(Get(v4, 8, 8), 77u);
  EXPECT_EQ(v4[16], 2);
  std::vector<uint8_t> v3 = EncodeTimeSyncBody({3, 0}, m);
  ASSERT_EQ(v3.size(), 25u);
  EXPECT_EQ(v3[24], 2);
}

}  // namespace
}  // namespace vbus::ic
