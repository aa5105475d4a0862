#include "core/runtime/batch_timer.h"

#include <vector>

#include "core/runtime/sync.h"
#include "gtest/gtest.h"

namespace vbus::internal {
namespace {

absl::Time Deadline() { return absl::Now() + absl::Seconds(10); }

// What the callbacks ran, in order.
struct Log {
  Mutex mu;
  CondVar cv;
  std::vector<int> ran ABSL_GUARDED_BY(mu);
  void Add(int n) {
    MutexLock lock(&mu);
    ran.push_back(n);
    cv.SignalAll();
  }
  bool WaitForCount(size_t n) {
    MutexLock lock(&mu);
    return cv.AwaitWithDeadline(
        &mu, Deadline(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return ran.size() >= n; });
  }
  std::vector<int> Ran() {
    MutexLock lock(&mu);
    return ran;
  }
};

TEST(BatchTimerTest, RunsCallbacksInDueOrder) {
  Log log;
  BatchTimer& timer = BatchTimer::Get();
  const absl::Time now = absl::Now();
  timer.Schedule(now + absl::Milliseconds(40), [&] { log.Add(3); });
  timer.Schedule(now + absl::Milliseconds(20), [&] { log.Add(2); });
  timer.Schedule(now - absl::Seconds(1), [&] { log.Add(1); });
  ASSERT_TRUE(log.WaitForCount(3));
  EXPECT_EQ(log.Ran(), (std::vector<int>{1, 2, 3}));
  EXPECT_GE(absl::Now(), now + absl::Milliseconds(40));
}

// The thread sleeps until the earliest queued time; a callback due sooner must wake it (else
// it would run an hour late and the wait below would time out).
TEST(BatchTimerTest, AnEarlierCallbackWakesTheSleepingThread) {
  Log log;
  BatchTimer& timer = BatchTimer::Get();
  timer.Schedule(absl::Now() + absl::Hours(1), [] {});  // outlives the test, touches nothing
  timer.Schedule(absl::Now() + absl::Milliseconds(5), [&] { log.Add(1); });
  ASSERT_TRUE(log.WaitForCount(1));
}

}  // namespace
}  // namespace vbus::internal
