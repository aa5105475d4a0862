// BatchTimer: runs short callbacks at their due time on one process-wide thread — what bounds
// how long a channel's adaptively batched packets wait for their signal decision
// (ChannelOpenOptions::send_batch_packets).
//
// The thread ("vbus-batch") starts at the first Schedule and sleeps while nothing is due; a
// Schedule wakes it only when its callback is due before everything already queued. A
// callback must be quick and must not call Schedule's caller's locks in an order that could
// deadlock with it (Channel's takes send_mu_ only). Callbacks run one at a time, in due order;
// one scheduled for a time already past runs as soon as the thread gets to it.
//
// The thread and its queue live until the process exits (the timer is never destroyed), so a
// callback may be scheduled from anywhere at any time; it should hold only weak references to
// what it acts on.
#ifndef VBUS_CORE_RUNTIME_BATCH_TIMER_H_
#define VBUS_CORE_RUNTIME_BATCH_TIMER_H_

#include <functional>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "core/runtime/sync.h"

namespace vbus::internal {

class BatchTimer {
 public:
  // The process's timer.
  static BatchTimer& Get();

  // Runs `fn` on the timer's thread at `due` (or soon after).
  void Schedule(absl::Time due, std::function<void()> fn);

 private:
  BatchTimer() = default;
  void Loop();

  Mutex mu_;
  CondVar cv_;
  std::multimap<absl::Time, std::function<void()>> due_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vbus::internal

#endif  // VBUS_CORE_RUNTIME_BATCH_TIMER_H_
