#include "core/runtime/serial_runner.h"

#include <pthread.h>

#include <utility>

#include "absl/time/clock.h"

namespace vbus {
namespace {

// The runner whose work the current thread is running (nullptr outside).
thread_local const SerialRunner* t_running = nullptr;

class RunningScope {
 public:
  explicit RunningScope(const SerialRunner* runner) : outer_(t_running) { t_running = runner; }
  ~RunningScope() { t_running = outer_; }
  RunningScope(const RunningScope&) = delete;
  RunningScope& operator=(const RunningScope&) = delete;

 private:
  const SerialRunner* const outer_;
};

}  // namespace

SerialRunner::SerialRunner(std::string thread_name, Hooks hooks)
    : thread_name_(std::move(thread_name)), hooks_(std::move(hooks)) {}

SerialRunner::~SerialRunner() {
  if (thread_.joinable()) thread_.detach();  // only after a Join that timed out
}

void SerialRunner::Start(std::shared_ptr<void> keep_alive) {
  thread_ = std::thread([this, keep_alive = std::move(keep_alive)] { ThreadLoop(); });
}

bool SerialRunner::Post(std::function<void()> work, bool may_run_here) {
  {
    MutexLock lock(&mu_);
    if (closed_) return false;
    queue_.push_back(std::move(work));
    if (running_) return true;  // the thread running now (perhaps this one) takes it
    if (!may_run_here) {
      WakeThreadIf(queue_.size() == 1);  // the runner's thread takes it (woken by the first)
      return true;
    }
    running_ = true;
  }
  RunBursts(/*dedicated=*/false);
  return true;
}

void SerialRunner::WakeThreadIf(bool concerns_it) {
  // Only when the runner's thread sleeps and the change concerns it: a run on a posting thread
  // then costs no futex wake of the runner's thread. (SignalAll: Join may wait on changed_ too,
  // and must not take the thread's wake-up.)
  if (concerns_it && thread_asleep_) changed_.SignalAll();
}

bool SerialRunner::InRunner() const { return t_running == this; }

void SerialRunner::RunBursts(bool dedicated) {
  RunningScope scope(this);
  hooks_.due();  // what came due before this input goes first
  for (bool first = true;; first = false) {
    std::deque<std::function<void()>> batch;
    const absl::Time due = hooks_.next_due();  // we hold the running role: safe to ask
    {
      MutexLock lock(&mu_);
      due_ = due;
      if (queue_.empty()) {
        running_ = false;
        // Only a due time earlier than the one the runner's thread sleeps until concerns it (a
        // later one: it wakes early, finds nothing due and sleeps again).
        WakeThreadIf(due_ < thread_sleeps_until_);
        return;
      }
      if (!dedicated && !first) {
        // A posting thread runs one batch; the runner's thread takes over the rest.
        handed_over_ = true;
        WakeThreadIf(true);
        return;
      }
      batch.swap(queue_);
    }
    for (std::function<void()>& work : batch) {
      work();
      hooks_.due();
    }
  }
}

void SerialRunner::ThreadLoop() {
  pthread_setname_np(pthread_self(), thread_name_.substr(0, 15).c_str());
  for (;;) {
    {
      MutexLock lock(&mu_);
      for (;;) {
        if (handed_over_) {
          handed_over_ = false;  // the running role is ours now
          break;
        }
        if (!running_ && (!queue_.empty() || absl::Now() >= due_)) {
          if (closed_ && queue_.empty()) {
            ended_ = true;
            changed_.SignalAll();
            return;
          }
          running_ = true;
          break;
        }
        if (closed_ && !running_ && queue_.empty()) {
          ended_ = true;
          changed_.SignalAll();
          return;
        }
        thread_sleeps_until_ = running_ ? absl::InfiniteFuture() : due_;
        thread_asleep_ = true;
        changed_.WaitWithDeadline(&mu_, thread_sleeps_until_);
        thread_asleep_ = false;
      }
    }
    RunBursts(/*dedicated=*/true);
  }
}

void SerialRunner::Close() {
  MutexLock lock(&mu_);
  closed_ = true;
  changed_.SignalAll();
}

absl::Status SerialRunner::Join(absl::Time deadline) {
  bool ended;
  {
    MutexLock lock(&mu_);
    ended = changed_.AwaitWithDeadline(
        &mu_, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ended_; });
  }
  if (!ended) {
    return absl::DeadlineExceededError(
        "the bus's executor is still busy at the deadline (a completion callback blocks it)");
  }
  if (thread_.joinable()) thread_.join();
  return absl::OkStatus();
}

bool SerialRunner::ended() const {
  MutexLock lock(&mu_);
  return ended_;
}

}  // namespace vbus
