#include "core/runtime/driver_strands.h"

#include <pthread.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/runtime/sync.h"

namespace vbus {
namespace {

// The strands whose work the current thread runs (nullptr on other threads).
thread_local const void* t_strands = nullptr;

// An idle worker waits this long for work before its thread ends.
constexpr absl::Duration kIdleWorker = absl::Seconds(2);
// Ready work that waits this long behind busy workers, none of which finished an item
// meanwhile, gets workers of its own (a blocked driver holds up another device at most this
// long, plus scheduling).
constexpr absl::Duration kStall = absl::Milliseconds(1);

}  // namespace

// Workers are pooled, and a burst of work costs a wake-up, not one per item. A strand with work
// is queued as ready; an awake worker takes ready strands one item at a time (a strand with
// more goes back behind the other ready strands, so a busy device cannot starve the others).
// An idle worker is woken, or a new one started, only when nobody works on the ready queue;
// otherwise the stall monitor is armed. The monitor is what keeps a blocked driver from
// holding up other devices: if ready work waits and no item finished for kStall, it adds
// workers (as many as are busy, at most one per ready strand: a burst of blocking probes gets
// its workers in a few rounds). Idle workers end after kIdleWorker.
struct DriverStrands::State {
  struct Strand {
    std::deque<std::function<void()>> queue;
    bool active = false;  // ready or running (at most one worker runs a strand at a time)
  };

  explicit State(std::string name) : thread_name(std::move(name)) {}

  // Queues `key` as ready and makes sure it will be taken.
  void Ready(const std::shared_ptr<State>& self, uint64_t key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    ready.push_back(key);
    if (busy + wakes == 0) {
      AddWorker(self);  // nobody works on the queue
    } else if (!monitor_armed) {
      ArmMonitor(self);  // a worker will get to it, unless it is stuck: watch
    }
  }

  // Gets one more worker onto the ready queue: wakes an idle one or starts a thread.
  void AddWorker(const std::shared_ptr<State>& self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    ++wakes;  // consumed by the worker when it wakes (or starts)
    if (idle >= wakes) {
      work_cv.Signal();
      return;
    }
    ++workers;
    StartThread([self] { self->Work(); });
  }

  // Starts a thread of the pool (a worker or the monitor), joining the ones that ended.
  void StartThread(std::function<void()> body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Reap();
    threads.emplace_back();
    threads.back().thread = std::thread(std::move(body));
  }

  void ArmMonitor(const std::shared_ptr<State>& self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    monitor_armed = true;
    if (!monitor_running) {
      monitor_running = true;
      StartThread([self] { self->Monitor(self); });
      return;
    }
    monitor_cv.Signal();
  }

  bool Post(const std::shared_ptr<State>& self, uint64_t key, std::function<void()> work)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (closed) return false;
    Strand& strand = strands[key];
    strand.queue.push_back(std::move(work));
    if (!strand.active) {
      strand.active = true;
      Ready(self, key);
    }
    return true;
  }

  // A worker thread: takes ready strands one item at a time until idle for too long.
  void Work() {
    t_strands = this;
    pthread_setname_np(pthread_self(), thread_name.substr(0, 15).c_str());
    MutexLock lock(&mu);
    if (wakes > 0) --wakes;  // the wake-up that started this thread
    for (;;) {
      if (ready.empty()) {
        ++idle;
        changed.SignalAll();  // Join waits for quiet
        const bool timed_out =
            work_cv.WaitWithDeadline(&mu, closed ? absl::Now() : absl::Now() + kIdleWorker);
        --idle;
        if (wakes > 0) --wakes;
        if (ready.empty() && (timed_out || closed)) {
          --workers;
          Finished();
          return;
        }
        continue;
      }
      const uint64_t key = ready.front();
      ready.pop_front();
      Strand& strand = strands[key];
      std::function<void()> work = std::move(strand.queue.front());
      strand.queue.pop_front();
      ++busy;
      mu.Unlock();
      work();
      work = nullptr;  // its captures go before the lock is taken again
      mu.Lock();
      --busy;
      ++completed;
      Strand& after = strands[key];
      if (after.queue.empty()) {
        strands.erase(key);
      } else {
        ready.push_back(key);  // the rest after the other ready strands
      }
    }
  }

  // The stall monitor's thread: while armed, checks every kStall that ready work is being
  // taken; when nothing finished for kStall with work waiting, adds workers. Ends when unarmed
  // for kIdleWorker (ArmMonitor starts it again), or closed with nothing ready.
  void Monitor(const std::shared_ptr<State>& self) {
    pthread_setname_np(pthread_self(), (thread_name.substr(0, 11) + "-mon").c_str());
    MutexLock lock(&mu);
    uint64_t mark = completed;
    for (;;) {
      if (!monitor_armed || ready.empty()) {
        monitor_armed = false;
        if (closed) break;  // (queued work still runs after Close: watched until it is taken)
        const bool timed_out = monitor_cv.WaitWithDeadline(&mu, absl::Now() + kIdleWorker);
        if (timed_out && !monitor_armed) break;
        mark = completed;
        continue;
      }
      monitor_cv.WaitWithDeadline(&mu, absl::Now() + kStall);
      if (ready.empty()) continue;
      if (completed == mark && wakes == 0) {
        // Stalled: every busy worker has held its item for at least kStall.
        const size_t add = std::min(ready.size(), static_cast<size_t>(std::max(busy, 1)));
        for (size_t i = 0; i < add; ++i) AddWorker(self);
      }
      mark = completed;
    }
    monitor_running = false;
    monitor_armed = false;
    Finished();
  }

  // Marks the calling thread as ended (joined later by Reap or Join).
  void Finished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (Worker& w : threads) {
      if (w.thread.get_id() == std::this_thread::get_id()) w.done = true;
    }
    changed.SignalAll();
  }

  // Joins the threads that have ended (they only have to return).
  void Reap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (auto it = threads.begin(); it != threads.end();) {
      if (!it->done) {
        ++it;
        continue;
      }
      if (it->thread.joinable()) it->thread.join();
      it = threads.erase(it);
    }
  }

  struct Worker {
    std::thread thread;
    bool done = false;
  };

  const std::string thread_name;
  Mutex mu;
  CondVar changed;     // a worker went idle or ended (Join waits for quiet)
  CondVar work_cv;     // idle workers wait here for work
  CondVar monitor_cv;  // the stall monitor waits here to be armed, and between checks
  bool closed ABSL_GUARDED_BY(mu) = false;
  std::map<uint64_t, Strand> strands ABSL_GUARDED_BY(mu);
  std::deque<uint64_t> ready ABSL_GUARDED_BY(mu);    // active strands waiting for a worker
  int workers ABSL_GUARDED_BY(mu) = 0;               // worker threads started and not ended
  int busy ABSL_GUARDED_BY(mu) = 0;                  // workers running an item
  int idle ABSL_GUARDED_BY(mu) = 0;                  // workers waiting for work
  int wakes ABSL_GUARDED_BY(mu) = 0;                 // wake-ups and starts on their way to a worker
  uint64_t completed ABSL_GUARDED_BY(mu) = 0;        // items finished (the monitor's progress mark)
  bool monitor_armed ABSL_GUARDED_BY(mu) = false;    // ready work waits behind busy workers
  bool monitor_running ABSL_GUARDED_BY(mu) = false;  // the monitor's thread exists
  std::deque<Worker> threads ABSL_GUARDED_BY(mu);
};

DriverStrands::DriverStrands(std::string thread_name)
    : state_(std::make_shared<State>(std::move(thread_name))) {}

DriverStrands::~DriverStrands() {
  Close();
  Join(absl::InfiniteFuture()).IgnoreError();
}

bool DriverStrands::Post(uint64_t key, std::function<void()> work) {
  MutexLock lock(&state_->mu);
  return state_->Post(state_, key, std::move(work));
}

bool DriverStrands::Barrier(std::function<void()> done) {
  struct Count {
    Mutex mu;
    size_t left ABSL_GUARDED_BY(mu) = 0;
  };
  auto count = std::make_shared<Count>();
  std::shared_ptr<State> state = state_;
  // Runs on the last strand to reach its barrier item: hands `done` to the application strand.
  auto arrive = [count, state, done]() {
    {
      MutexLock lock(&count->mu);
      if (--count->left != 0) return;
    }
    bool posted;
    {
      MutexLock lock(&state->mu);
      posted = state->Post(state, kApplicationKey, done);
    }
    if (!posted) done();  // closed meanwhile: the barrier still completes, here
  };
  {
    MutexLock lock(&state_->mu);
    if (state_->closed) return false;
    std::vector<uint64_t> busy;
    for (const auto& [key, strand] : state_->strands) busy.push_back(key);
    {
      MutexLock c(&count->mu);
      count->left = busy.size() + 1;  // + 1: this call's own arrival, once all are queued
    }
    for (uint64_t key : busy) state_->strands[key].queue.push_back(arrive);
  }
  arrive();
  return true;
}

void DriverStrands::Close() {
  MutexLock lock(&state_->mu);
  state_->closed = true;
  state_->changed.SignalAll();
  state_->work_cv.SignalAll();
  state_->monitor_cv.SignalAll();
}

absl::Status DriverStrands::Join(absl::Time deadline) {
  const bool here = OnStrandThread();
  MutexLock lock(&state_->mu);
  // Done when nothing is ready or running, apart from the calling strand thread's own work.
  auto quiet = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
    return state_->ready.empty() && state_->busy == (here ? 1 : 0) &&
           state_->workers == (here ? 1 : 0) && !state_->monitor_running;
  };
  const bool done = state_->changed.AwaitWithDeadline(&state_->mu, deadline, quiet);
  size_t busy = 0;
  for (auto it = state_->threads.begin(); it != state_->threads.end();) {
    if (it->done) {
      if (it->thread.joinable()) it->thread.join();
      it = state_->threads.erase(it);
      continue;
    }
    // Still running (stuck past the deadline, or the calling thread): it finishes on its own
    // and keeps the shared state alive meanwhile.
    if (it->thread.get_id() != std::this_thread::get_id()) ++busy;
    if (it->thread.joinable()) it->thread.detach();
    ++it;
  }
  if (done) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat(busy, " driver strand worker(s) still busy at the deadline; left to finish"));
}

bool DriverStrands::OnStrandThread() const { return t_strands == state_.get(); }

}  // namespace vbus
