#include "core/runtime/sync.h"

#include <atomic>
#include <thread>
#include <vector>

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

TEST(SyncTest, ReadersShareTheLock) {
  SharedMutex mu;
  Notification second_reader_in;
  ReaderMutexLock lock(&mu);
  // A second reader gets in while this scope still reads.
  std::thread reader([&] {
    ReaderMutexLock other(&mu);
    second_reader_in.Notify();
  });
  EXPECT_TRUE(second_reader_in.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(30)));
  reader.join();
}

TEST(SyncTest, AReaderKeepsWritersOut) {
  SharedMutex mu;
  ReaderMutexLock lock(&mu);
  bool writer_got_in = true;
  // Not analysed: the lambda only tries the lock another scope holds.
  std::thread other([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    writer_got_in = mu.TryLock();
    if (writer_got_in) mu.Unlock();
  });
  other.join();
  EXPECT_FALSE(writer_got_in);
}

TEST(SyncTest, AWriterKeepsReadersAndWritersOut) {
  SharedMutex mu;
  WriterMutexLock lock(&mu);
  bool reader_got_in = true;
  bool writer_got_in = true;
  // Not analysed: the lambda only tries the lock another scope holds.
  std::thread other([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    reader_got_in = mu.ReaderTryLock();
    if (reader_got_in) mu.ReaderUnlock();
    writer_got_in = mu.TryLock();
    if (writer_got_in) mu.Unlock();
  });
  other.join();
  EXPECT_FALSE(reader_got_in);
  EXPECT_FALSE(writer_got_in);
}

// Readers never see a half-done write: the writer changes two fields under the lock, readers
// check that they agree (under TSan, that the lock orders every access).
TEST(SyncTest, ReadersSeeWholeWrites) {
  struct Pair {
    SharedMutex mu;
    int a ABSL_GUARDED_BY(mu) = 0;
    int b ABSL_GUARDED_BY(mu) = 0;
  } pair;
  constexpr int kWrites = 2000;
  std::atomic<int> mismatches{0};
  std::thread writer([&] {
    for (int i = 1; i <= kWrites; ++i) {
      WriterMutexLock lock(&pair.mu);
      pair.a = i;
      pair.b = i;
    }
  });
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      for (int i = 0; i < kWrites; ++i) {
        ReaderMutexLock lock(&pair.mu);
        if (pair.a != pair.b) mismatches.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  writer.join();
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(SyncTest, NotificationWakesAWaiter) {
  Notification ready;
  int value = 0;  // written before Notify, read after the wait: ordered by the notification
  std::thread notifier([&] {
    value = 42;
    ready.Notify();
  });
  ASSERT_TRUE(ready.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(30)));
  EXPECT_EQ(value, 42);
  EXPECT_TRUE(ready.HasBeenNotified());
  notifier.join();
}

TEST(SyncTest, NotificationWaitTimesOutWithoutNotify) {
  Notification never;
  const absl::Time start = absl::Now();
  EXPECT_FALSE(never.WaitForNotificationWithDeadline(start + absl::Milliseconds(20)));
  EXPECT_GE(absl::Now(), start + absl::Milliseconds(20));
  EXPECT_FALSE(never.HasBeenNotified());
}

TEST(SyncTest, NotificationStaysNotified) {
  Notification done;
  done.Notify();
  done.Notify();  // a second Notify changes nothing
  EXPECT_TRUE(done.HasBeenNotified());
  // Already notified: returns true at once, even with a deadline in the past.
  EXPECT_TRUE(done.WaitForNotificationWithDeadline(absl::InfinitePast()));
}

}  // namespace
}  // namespace vbus
