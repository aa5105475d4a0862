// vbus::Mutex, MutexLock and CondVar: the project's locking primitives.
//
// Why not absl::Mutex: Debian ships Abseil prebuilt without ThreadSanitizer instrumentation,
// so TSan cannot see absl::Mutex's happens-before edges and reports false races in any code
// that locks one. These wrappers sit on std::mutex / std::condition_variable, whose pthread
// calls TSan intercepts, and keep Abseil's thread-safety annotations (ABSL_GUARDED_BY, …) so
// lock discipline stays documented and checkable with clang's -Wthread-safety.
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
#ifndef VBUS_CORE_SYNC_H_
#define VBUS_CORE_SYNC_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

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

}  // namespace vbus

#endif  // VBUS_CORE_SYNC_H_
