// HostMessageQueue: hands decoded host → guest control messages to a BackendListener the way
// backends/backend.h promises: one OnHostMessage call at a time, in host order, never while
// delivery is paused, none once stopped.
//
// On Hyper-V the messages come out of the SINT2 message slot in the message VP's interrupt
// handler (docs/hyperv.md §5, §11); the handler Pushes each one and returns. Delivery runs on
// whichever thread finds the queue deliverable and nobody delivering: usually that interrupt
// handler itself (no thread hand-off for a reply), or the thread that calls Resume after a
// pause (it delivers what was held). A Push that finds another thread delivering leaves the
// message to that thread, so the interrupt handler never waits for a listener call.
//
//   Push(m)      queue m; deliver everything deliverable unless paused or stopped, or another
//                thread is delivering (it takes m too).
//   Pause()      from another thread: waits until the OnHostMessage call in progress, if any,
//                has returned; from inside OnHostMessage: takes effect when that call returns.
//   Resume()     delivers what was held (on the calling thread), then new messages flow again.
//                Pauses do not nest.
//   Stop()       drops what is held; waits for a delivery in progress on another thread; no
//                OnHostMessage call starts afterwards. Final.
//
// Example (a backend's interrupt handler and delivery controls):
//   HostMessageQueue queue(log);
//   queue.Start(listener);
//   ... in the handler: queue.Push(*std::move(decoded));
//   void PauseDelivery() override { queue.Pause(); }
//   void ResumeDelivery() override { queue.Resume(); }
//   void Stop() override { /* interrupts off first */ queue.Stop(); }
//
// Thread safety: every method may be called from any thread, Pause and Resume from inside
// OnHostMessage too. Stop must not be called from inside OnHostMessage on another thread's
// behalf (it then waits only for other threads' calls, not its own).
#ifndef VBUS_HYPERV_HOST_MESSAGE_QUEUE_H_
#define VBUS_HYPERV_HOST_MESSAGE_QUEUE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "core/runtime/sync.h"
#include "proto/control.pb.h"

namespace vbus::hyperv {

class HostMessageQueue {
 public:
  // A wait for a listener call in progress (Pause, Stop) logs a line through `log` every
  // `stall_report` it goes on (listener calls must return quickly; backends/backend.h) and
  // keeps waiting: the contract says the call must have returned.
  explicit HostMessageQueue(std::function<void(absl::string_view)> log,
                            absl::Duration stall_report = absl::Seconds(5))
      : log_(std::move(log)), stall_report_(stall_report) {}
  HostMessageQueue(const HostMessageQueue&) = delete;
  HostMessageQueue& operator=(const HostMessageQueue&) = delete;

  // Start
  // Messages pushed from now on go to `listener` (until Stop). Pushes before Start are held.
  void Start(BackendListener* listener) ABSL_LOCKS_EXCLUDED(mu_);

  void Push(v1::ControlMessage message) ABSL_LOCKS_EXCLUDED(mu_);
  void Pause() ABSL_LOCKS_EXCLUDED(mu_);
  void Resume() ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // Messages held back (paused, or pushed while another thread delivers).
  size_t held() const ABSL_LOCKS_EXCLUDED(mu_);
  // OnHostMessage calls that returned (relaxed snapshot).
  uint64_t delivered() const { return delivered_.load(std::memory_order_relaxed); }

 private:
  bool Deliverable() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Delivers while Deliverable(), unlocking mu_ around each call.
  void DrainLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits until no thread but the caller is inside OnHostMessage.
  void AwaitOthersLocked(absl::string_view who) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::function<void(absl::string_view)> log_;
  const absl::Duration stall_report_;

  mutable Mutex mu_;
  CondVar done_;  // a delivery ended
  BackendListener* listener_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // The thread inside OnHostMessage, if any (at most one: that is the serialisation).
  std::optional<std::thread::id> delivering_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::ControlMessage> queue_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> delivered_{0};
};

}  // namespace vbus::hyperv

#endif  // VBUS_HYPERV_HOST_MESSAGE_QUEUE_H_
