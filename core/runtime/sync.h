// vbus::Mutex, MutexLock, CondVar, SharedMutex (with ReaderMutexLock / WriterMutexLock) and
// Notification: the project's locking primitives.
//
// Why not absl::Mutex: Debian ships Abseil prebuilt without ThreadSanitizer instrumentation,
// so TSan cannot see absl::Mutex's happens-before edges and reports false races in any code
// that locks one. These wrappers sit on std::mutex / std::condition_variable /
// std::shared_mutex, whose pthread calls TSan intercepts, and keep Abseil's thread-safety
// annotations (ABSL_GUARDED_BY, …) so lock discipline stays documented and checkable with clang's
// -Wthread-safety.
//
// Every wait takes a deadline: there is no unbounded Wait().
//
//   vbus::Mutex mu;
//   int ready ABSL_GUARDED_BY(mu) = 0;
//   vbus::CondVar cv;
//   {
//     vbus::MutexLock lock(&mu);
//     if (!cv.AwaitWithDeadline(&mu, absl::Now() + absl::Seconds(5), [&] { return ready > 0; }))
//       return absl::DeadlineExceededError("…");
//   }
#ifndef VBUS_CORE_RUNTIME_SYNC_H_
#define VBUS_CORE_RUNTIME_SYNC_H_

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace vbus {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  // Documents (for readers and clang's analysis) that the caller holds the lock.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds `mu` for its scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A condition variable used with vbus::Mutex.
class CondVar {
 public:
  // WaitWithDeadline
  // Atomically releases `mu` (held by the caller), waits for a Signal/SignalAll or until
  // `deadline`, and reacquires `mu`. Returns true if the deadline passed. Spurious wakeups
  // happen: callers re-check their condition (or use AwaitWithDeadline).
  bool WaitWithDeadline(Mutex* mu, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const absl::Duration left = deadline - absl::Now();
    bool timed_out;
    if (left <= absl::ZeroDuration()) {
      timed_out = true;
    } else if (deadline == absl::InfiniteFuture() || left > absl::Hours(24 * 365)) {
      cv_.wait(lock);
      timed_out = false;
    } else {
      timed_out = cv_.wait_for(lock, absl::ToChronoNanoseconds(left)) == std::cv_status::timeout;
    }
    lock.release();  // `mu` stays held, as on entry
    return timed_out;
  }

  // AwaitWithDeadline
  // Waits until `condition()` (evaluated with `mu` held) is true or `deadline` passes.
  // Returns the final value of `condition()`. The condition is usually a lambda annotated
  // ABSL_EXCLUSIVE_LOCKS_REQUIRED(the caller's mutex): clang checks its body against that; this
  // generic helper cannot name the same mutex, so its own calls are not analysed.
  template <typename Condition>
  bool AwaitWithDeadline(Mutex* mu, absl::Time deadline, Condition condition)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    while (!condition()) {
      if (WaitWithDeadline(mu, deadline)) return condition();
    }
    return true;
  }

  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

// A reader/writer lock: any number of readers, or one writer. For state read far more often
// than it changes, where readers must not serialise each other.
//
//   vbus::SharedMutex mu;
//   std::map<int, int> table ABSL_GUARDED_BY(mu);
//   { vbus::ReaderMutexLock lock(&mu); /* find in table */ }
//   { vbus::WriterMutexLock lock(&mu); /* insert into table */ }
class ABSL_LOCKABLE SharedMutex {
 public:
  SharedMutex() = default;
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  void ReaderLock() ABSL_SHARED_LOCK_FUNCTION() { mu_.lock_shared(); }
  void ReaderUnlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock_shared(); }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  bool ReaderTryLock() ABSL_SHARED_TRYLOCK_FUNCTION(true) { return mu_.try_lock_shared(); }
  // Document (for readers and clang's analysis) that the caller holds the lock exclusively /
  // at least shared.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}
  void AssertReaderHeld() const ABSL_ASSERT_SHARED_LOCK() {}

 private:
  std::shared_mutex mu_;
};

// Holds `mu` shared (as a reader) for its scope.
class ABSL_SCOPED_LOCKABLE ReaderMutexLock {
 public:
  explicit ReaderMutexLock(SharedMutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->ReaderLock();
  }
  ~ReaderMutexLock() ABSL_UNLOCK_FUNCTION() { mu_->ReaderUnlock(); }
  ReaderMutexLock(const ReaderMutexLock&) = delete;
  ReaderMutexLock& operator=(const ReaderMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// Holds `mu` exclusively (as the writer) for its scope.
class ABSL_SCOPED_LOCKABLE WriterMutexLock {
 public:
  explicit WriterMutexLock(SharedMutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  ~WriterMutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  WriterMutexLock(const WriterMutexLock&) = delete;
  WriterMutexLock& operator=(const WriterMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// A one-shot event between threads: Notify once, any number of threads wait for it with a
// deadline. Once notified it stays notified (a second Notify does nothing).
//
//   vbus::Notification started;
//   std::thread worker([&] { started.Notify(); ... });
//   if (!started.WaitForNotificationWithDeadline(absl::Now() + absl::Seconds(5))) ...
class Notification {
 public:
  Notification() = default;
  Notification(const Notification&) = delete;
  Notification& operator=(const Notification&) = delete;

  void Notify() {
    MutexLock lock(&mu_);
    notified_ = true;
    cv_.SignalAll();
  }
  bool HasBeenNotified() const {
    MutexLock lock(&mu_);
    return notified_;
  }
  // Waits until Notify has been called or `deadline` passes; returns whether it was notified.
  bool WaitForNotificationWithDeadline(absl::Time deadline) const {
    MutexLock lock(&mu_);
    return cv_.AwaitWithDeadline(&mu_, deadline,
                                 [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return notified_; });
  }

 private:
  mutable Mutex mu_;
  mutable CondVar cv_;
  bool notified_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vbus

#endif  // VBUS_CORE_RUNTIME_SYNC_H_
