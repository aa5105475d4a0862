#include "core/runtime/serial_runner.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "core/runtime/sync.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

// A runner whose due hook counts and whose next due time the test sets.
struct Fixture {
  Mutex mu;
  absl::Time due ABSL_GUARDED_BY(mu) = absl::InfiniteFuture();
  std::atomic<int> due_runs{0};
  SerialRunner runner{"test-runner",
                      {[this] {
                         MutexLock lock(&mu);
                         if (absl::Now() >= due) {
                           due = absl::InfiniteFuture();
                           due_runs.fetch_add(1);
                         }
                       },
                       [this] {
                         MutexLock lock(&mu);
                         return due;
                       }}};
  Fixture() { runner.Start(nullptr); }
  ~Fixture() {
    runner.Close();
    EXPECT_TRUE(runner.Join(Deadline()).ok());
  }
};

TEST(SerialRunnerTest, AnIdleRunnerRunsWorkOnThePostingThread) {
  Fixture f;
  std::thread::id ran_on;
  bool in_runner = false;
  ASSERT_TRUE(f.runner.Post(
      [&] {
        ran_on = std::this_thread::get_id();
        in_runner = f.runner.InRunner();
      },
      /*may_run_here=*/true));
  EXPECT_EQ(ran_on, std::this_thread::get_id());  // no hand-off
  EXPECT_TRUE(in_runner);
  EXPECT_FALSE(f.runner.InRunner());
}

TEST(SerialRunnerTest, WorkThatMayNotRunHereRunsOnTheRunnersThread) {
  Fixture f;
  Mutex mu;
  CondVar cv;
  std::thread::id ran_on;
  bool done = false;
  ASSERT_TRUE(f.runner.Post(
      [&] {
        MutexLock lock(&mu);
        ran_on = std::this_thread::get_id();
        done = true;
        cv.SignalAll();
      },
      /*may_run_here=*/false));
  MutexLock lock(&mu);
  ASSERT_TRUE(cv.AwaitWithDeadline(&mu, Deadline(),
                                   [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return done; }));
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(SerialRunnerTest, WorkRunsOneAtATimeInPostingOrder) {
  Fixture f;
  Mutex mu;
  std::vector<int> order;
  std::atomic<int> inside{0};
  std::atomic<bool> overlapped{false};
  std::vector<std::thread> posters;
  std::atomic<int> next{0};
  Mutex post_mu;  // serialises post order with the numbers taken
  for (int t = 0; t < 4; ++t) {
    posters.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        MutexLock lock(&post_mu);
        const int n = next.fetch_add(1);
        f.runner.Post(
            [&, n] {
              if (inside.fetch_add(1) != 0) overlapped.store(true);
              {
                MutexLock l(&mu);
                order.push_back(n);
              }
              inside.fetch_sub(1);
            },
            /*may_run_here=*/n % 3 != 0);
      }
    });
  }
  for (std::thread& t : posters) t.join();
  f.runner.Close();
  ASSERT_TRUE(f.runner.Join(Deadline()).ok());
  EXPECT_FALSE(overlapped.load());
  MutexLock lock(&mu);
  ASSERT_EQ(order.size(), 2000u);
  for (int i = 0; i < 2000; ++i) ASSERT_EQ(order[i], i);
}

TEST(SerialRunnerTest, WorkPostedFromWorkRunsAfterIt) {
  Fixture f;
  std::vector<int> order;
  ASSERT_TRUE(f.runner.Post(
      [&] {
        f.runner.Post([&] { order.push_back(2); }, /*may_run_here=*/true);
        order.push_back(1);
      },
      /*may_run_here=*/true));
  f.runner.Close();
  ASSERT_TRUE(f.runner.Join(Deadline()).ok());
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST(SerialRunnerTest, TheDueHookRunsOnTheRunnersThreadWhenItIsTime) {
  Fixture f;
  {
    MutexLock lock(&f.mu);
    f.due = absl::Now() + absl::Milliseconds(5);
  }
  f.runner.Post([] {}, /*may_run_here=*/true);  // the runner learns the new due time
  const absl::Time deadline = Deadline();
  while (f.due_runs.load() == 0 && absl::Now() < deadline) std::this_thread::yield();
  EXPECT_EQ(f.due_runs.load(), 1);
}

TEST(SerialRunnerTest, BusyWorkIsQueuedAndJoinReportsItAtTheDeadline) {
  Fixture f;
  Mutex mu;
  CondVar cv;
  bool release = false;
  bool started = false;
  std::thread blocker([&] {
    f.runner.Post(
        [&] {
          MutexLock lock(&mu);
          started = true;
          cv.SignalAll();
          cv.AwaitWithDeadline(&mu, Deadline(),
                               [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return release; });
        },
        /*may_run_here=*/true);
  });
  {
    MutexLock lock(&mu);
    cv.AwaitWithDeadline(&mu, Deadline(),
                         [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return started; });
  }
  std::atomic<bool> second{false};
  // Queued: the runner is busy.
  ASSERT_TRUE(f.runner.Post([&] { second.store(true); }, /*may_run_here=*/true));
  EXPECT_FALSE(second.load());
  f.runner.Close();
  EXPECT_FALSE(f.runner.Post([] {}, /*may_run_here=*/true));
  EXPECT_EQ(f.runner.Join(absl::Now() + absl::Milliseconds(20)).code(),
            absl::StatusCode::kDeadlineExceeded);
  {
    MutexLock lock(&mu);
    release = true;
    cv.SignalAll();
  }
  blocker.join();
  EXPECT_TRUE(f.runner.Join(Deadline()).ok());
  EXPECT_TRUE(second.load());
}

}  // namespace
}  // namespace vbus
