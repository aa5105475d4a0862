#include "core/sync.h"

#include <thread>

#include "gtest/gtest.h"

namespace vbus {
namespace {

TEST(SyncTest, AwaitSeesAConditionSetByAnotherThread) {
  Mutex mu;
  CondVar cv;
  int value = 0;  // guarded by mu
  std::thread setter([&] {
    MutexLock lock(&mu);
    value = 42;
    cv.SignalAll();
  });
  {
    MutexLock lock(&mu);
    EXPECT_TRUE(
        cv.AwaitWithDeadline(&mu, absl::Now() + absl::Seconds(30), [&] { return value == 42; }));
  }
  setter.join();
}

TEST(SyncTest, AwaitTimesOutWhenNothingHappens) {
  Mutex mu;
  CondVar cv;
  MutexLock lock(&mu);
  const absl::Time start = absl::Now();
  EXPECT_FALSE(cv.AwaitWithDeadline(&mu, start + absl::Milliseconds(20), [] { return false; }));
  EXPECT_GE(absl::Now(), start + absl::Milliseconds(20));
}

TEST(SyncTest, PastDeadlineReturnsAtOnceWithTheLockHeld) {
  Mutex mu;
  CondVar cv;
  MutexLock lock(&mu);
  EXPECT_TRUE(cv.WaitWithDeadline(&mu, absl::InfinitePast()));
  bool acquired_elsewhere = true;
  // Not analysed: the lambda only tries the lock another scope holds.
  std::thread other([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    acquired_elsewhere = mu.TryLock();
    if (acquired_elsewhere) mu.Unlock();
  });
  other.join();
  EXPECT_FALSE(acquired_elsewhere);  // still held by this scope
}

}  // namespace
}  // namespace vbus
