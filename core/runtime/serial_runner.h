// SerialRunner: runs posted work one item at a time and in posting order, preferably on the
// thread that posts it — how the bus runs its executor without a thread hand-off per input.
//
// A Post that may run here and finds the runner idle runs its item at once on the posting thread
// (and anything posted meanwhile, up to the batch that was queued when it started); otherwise
// the item is queued for whoever is running, or for the runner's own thread. A posting thread
// that leaves work behind hands the role to the runner's own thread, which goes on until the
// queue is empty. That thread also runs the `due` hook whenever `next_due()` says it is time
// (the executor's timers) and nobody else is running. So an input that arrives on a thread
// allowed to run it — a host message on the backend's delivery thread — costs no thread
// hand-off, while the order of inputs and the one-at-a-time rule are kept. (Threads that may
// hold their own locks, such as an application's, post with may_run_here = false: work run
// inline would run other callers' completion callbacks inside their call.)
//
// Example:
//   SerialRunner runner("vbus-control", {[&] { executor.RunDue(); },
//                                        [&] { return executor.next_wakeup(); }});
//   runner.Start();
//   runner.Post([&] { executor.OnHostMessage(m); }, /*may_run_here=*/true);  // maybe right here
//   ...
//   runner.Close();
//   absl::Status s = runner.Join(deadline);
//
// Thread-safe. Work must not block for long (it holds up every later input), and must not wait
// for other work of the same runner (InRunner() tells it is running).
#ifndef VBUS_CORE_RUNTIME_SERIAL_RUNNER_H_
#define VBUS_CORE_RUNTIME_SERIAL_RUNNER_H_

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/runtime/sync.h"

namespace vbus {

class SerialRunner {
 public:
  struct Hooks {
    // Runs before and after every burst and between items (e.g. fire the executor's timers).
    std::function<void()> due;
    // When `due` has work next (InfiniteFuture: never); asked after every burst.
    std::function<absl::Time()> next_due;
  };

  SerialRunner(std::string thread_name, Hooks hooks);
  // Close() and a successful Join() should come first; a thread still running then is detached
  // (it holds the keep-alive given to Start, which must keep this object alive).
  ~SerialRunner();
  SerialRunner(const SerialRunner&) = delete;
  SerialRunner& operator=(const SerialRunner&) = delete;

  // Start: starts the runner's thread. `keep_alive` is held by that thread while it runs (the
  // runner's owner, so that a thread left running by a Join that timed out stays safe).
  void Start(std::shared_ptr<void> keep_alive);

  // Post: runs `work` now on this thread if `may_run_here` and the runner is idle, otherwise
  // queues it. False (dropped) once closed.
  bool Post(std::function<void()> work, bool may_run_here);

  // Whether the calling thread is running this runner's work right now.
  bool InRunner() const;

  // Close: no more posts; queued work still runs.
  void Close();

  // Join: waits until the queue is empty, nothing runs and the runner's thread ended. OK, or
  // DeadlineExceeded if work was still running at `deadline` (Join may be called again).
  absl::Status Join(absl::Time deadline);
  // True once the runner's thread ended (after Close).
  bool ended() const;

 private:
  // Runs bursts on the calling thread, which holds the running role. `dedicated`: the runner's
  // own thread (runs until the queue is empty); otherwise one batch, then hands over.
  void RunBursts(bool dedicated);
  void ThreadLoop();
  // Wakes the runner's thread if it sleeps and `concerns_it`.
  void WakeThreadIf(bool concerns_it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string thread_name_;
  const Hooks hooks_;
  mutable Mutex mu_;
  CondVar changed_;  // work queued for the thread, the due time moved, closed, idle, ended
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;      // some thread holds the running role
  bool handed_over_ ABSL_GUARDED_BY(mu_) = false;  // the role waits for the runner's thread
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time due_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  // The runner's thread sleeps in changed_ until thread_sleeps_until_ (or a wake-up).
  bool thread_asleep_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time thread_sleeps_until_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  std::thread thread_;
};

}  // namespace vbus

#endif  // VBUS_CORE_RUNTIME_SERIAL_RUNNER_H_
