#include "core/runtime/batch_timer.h"

#include <pthread.h>

#include <thread>
#include <utility>

namespace vbus::internal {
namespace {

// How long the idle thread sleeps between looks at an empty queue (a Schedule wakes it
// sooner): every wait has a deadline.
constexpr absl::Duration kIdleWait = absl::Seconds(1);

}  // namespace

BatchTimer& BatchTimer::Get() {
  // Never destroyed: its thread runs until the process exits.
  static BatchTimer* const timer = new BatchTimer();
  return *timer;
}

void BatchTimer::Schedule(absl::Time due, std::function<void()> fn) {
  MutexLock lock(&mu_);
  if (!started_) {
    started_ = true;
    std::thread([this] { Loop(); }).detach();
  }
  // Wake the thread only if it sleeps past this callback's time.
  const bool earliest = due_.empty() || due < due_.begin()->first;
  due_.emplace(due, std::move(fn));
  if (earliest) cv_.Signal();
}

void BatchTimer::Loop() {
  pthread_setname_np(pthread_self(), "vbus-batch");
  MutexLock lock(&mu_);
  for (;;) {
    const absl::Time now = absl::Now();
    if (due_.empty() || due_.begin()->first > now) {
      cv_.WaitWithDeadline(&mu_, due_.empty() ? now + kIdleWait : due_.begin()->first);
      continue;
    }
    std::function<void()> fn = std::move(due_.begin()->second);
    due_.erase(due_.begin());
    mu_.Unlock();
    fn();
    mu_.Lock();
  }
}

}  // namespace vbus::internal
