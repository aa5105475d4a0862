#include "core/runtime/driver_strands.h"

#include <atomic>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "core/runtime/sync.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

// A flag a test waits on with a deadline.
class Flag {
 public:
  void Set() {
    MutexLock lock(&mu_);
    set_ = true;
    cv_.SignalAll();
  }
  bool Wait(absl::Time deadline = Deadline()) {
    MutexLock lock(&mu_);
    return cv_.AwaitWithDeadline(&mu_, deadline,
                                 [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return set_; });
  }

 private:
  Mutex mu_;
  CondVar cv_;
  bool set_ ABSL_GUARDED_BY(mu_) = false;
};

TEST(DriverStrandsTest, OneKeyRunsInOrder) {
  DriverStrands strands("test-strand");
  Mutex mu;
  std::vector<int> order;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(strands.Post(7, [&, i] {
      MutexLock lock(&mu);
      order.push_back(i);
    }));
  }
  Flag done;
  ASSERT_TRUE(strands.Barrier([&] { done.Set(); }));
  ASSERT_TRUE(done.Wait());
  MutexLock lock(&mu);
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(DriverStrandsTest, ABlockedKeyDoesNotHoldUpAnother) {
  DriverStrands strands("test-strand");
  Flag release, other_ran;
  ASSERT_TRUE(strands.Post(1, [&] { release.Wait(); }));
  ASSERT_TRUE(strands.Post(2, [&] { other_ran.Set(); }));
  EXPECT_TRUE(other_ran.Wait());
  release.Set();
  strands.Close();
  EXPECT_TRUE(strands.Join(Deadline()).ok());
}

// Every device blocks until all of them have started: only a worker per device gets there
// (the stall monitor keeps adding workers while none of the busy ones finishes).
TEST(DriverStrandsTest, ManyBlockedKeysEachGetAWorker) {
  DriverStrands strands("test-strand");
  constexpr int kDevices = 40;
  Mutex mu;
  CondVar cv;
  int started = 0;
  int all_started = 0;
  for (int key = 1; key <= kDevices; ++key) {
    ASSERT_TRUE(strands.Post(key, [&] {
      MutexLock lock(&mu);
      ++started;
      cv.SignalAll();
      if (cv.AwaitWithDeadline(&mu, Deadline(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
            return started == kDevices;
          })) {
        ++all_started;
      }
    }));
  }
  strands.Close();
  EXPECT_TRUE(strands.Join(Deadline()).ok());
  MutexLock lock(&mu);
  EXPECT_EQ(all_started, kDevices);
}

// A burst of short items on many devices all runs, in order per device.
TEST(DriverStrandsTest, ABurstOfShortItemsAllRunInOrderPerKey) {
  DriverStrands strands("test-strand");
  Mutex mu;
  std::vector<std::vector<int>> seen(16);
  for (int i = 0; i < 1000; ++i) {
    const int key = i % 16;
    ASSERT_TRUE(strands.Post(key + 1, [&, key, i] {
      MutexLock lock(&mu);
      seen[key].push_back(i);
    }));
  }
  Flag done;
  ASSERT_TRUE(strands.Barrier([&] { done.Set(); }));
  ASSERT_TRUE(done.Wait());
  MutexLock lock(&mu);
  for (int key = 0; key < 16; ++key) {
    ASSERT_EQ(seen[key].size(), 1000u / 16 + (key < 1000 % 16 ? 1 : 0));
    for (size_t j = 0; j < seen[key].size(); ++j) EXPECT_EQ(seen[key][j], key + 16 * int(j));
  }
}

TEST(DriverStrandsTest, BarrierWaitsForWorkQueuedBeforeIt) {
  DriverStrands strands("test-strand");
  Flag release;
  std::atomic<bool> slow_done{false};
  ASSERT_TRUE(strands.Post(1, [&] {
    release.Wait();
    slow_done.store(true);
  }));
  Flag barrier;
  std::atomic<bool> saw_slow_done{false};
  ASSERT_TRUE(strands.Barrier([&] {
    saw_slow_done.store(slow_done.load());
    barrier.Set();
  }));
  EXPECT_FALSE(barrier.Wait(absl::Now() + absl::Milliseconds(20)));
  release.Set();
  ASSERT_TRUE(barrier.Wait());
  EXPECT_TRUE(saw_slow_done.load());
  EXPECT_TRUE(strands.OnStrandThread() == false);
}

TEST(DriverStrandsTest, BarrierWithNothingQueuedRunsOnTheApplicationStrand) {
  DriverStrands strands("test-strand");
  Flag done;
  std::atomic<bool> on_strand{false};
  ASSERT_TRUE(strands.Barrier([&] {
    on_strand.store(strands.OnStrandThread());
    done.Set();
  }));
  ASSERT_TRUE(done.Wait());
  EXPECT_TRUE(on_strand.load());
}

TEST(DriverStrandsTest, ClosedStrandsRefuseWorkAndJoinReportsStuckOnes) {
  DriverStrands strands("test-strand");
  Flag release, started;
  ASSERT_TRUE(strands.Post(3, [&] {
    started.Set();
    release.Wait();
  }));
  ASSERT_TRUE(started.Wait());
  strands.Close();
  EXPECT_FALSE(strands.Post(4, [] {}));
  EXPECT_FALSE(strands.Barrier([] {}));
  absl::Status joined = strands.Join(absl::Now() + absl::Milliseconds(20));
  EXPECT_EQ(joined.code(), absl::StatusCode::kDeadlineExceeded) << joined;
  release.Set();  // the detached thread finishes on its own
}

}  // namespace
}  // namespace vbus
