#include "core/runtime/driver_strands.h"

#include <pthread.h>

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

}  // namespace

// Workers are pooled: a strand with work is queued as ready; an idle worker takes it, runs one
// item and, if the strand has more, queues it again behind the other ready strands (so a busy
// device cannot starve the others). A new worker is started whenever work is ready and no
// worker is idle, so a driver that blocks never holds up another device. Idle workers end after
// kIdleWorker.
struct DriverStrands::State {
  struct Strand {
    std::deque<std::function<void()>> queue;
    bool active = false;  // ready or running (at most one worker runs a strand at a time)
  };

  explicit State(std::string name) : thread_name(std::move(name)) {}

  // Queues `key` as ready and makes sure a worker will take it.
  void Ready(const std::shared_ptr<State>& self, uint64_t key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    ready.push_back(key);
    if (idle > 0) {
      changed.Signal();
      return;
    }
    ++workers;
    ++busy_workers;
    Reap();
    threads.emplace_back();
    std::thread& thread = threads.back().thread;
    thread = std::thread([self] { self->Work(); });
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
    for (;;) {
      if (ready.empty()) {
        --busy_workers;
        ++idle;
        changed.SignalAll();  // Join waits for idle workers
        const bool got = changed.AwaitWithDeadline(
            &mu, closed ? absl::Now() : absl::Now() + kIdleWorker,
            [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return !ready.empty() || closed; });
        --idle;
        if (!got || ready.empty()) {
          --workers;
          Finished();
          return;
        }
        ++busy_workers;
      }
      const uint64_t key = ready.front();
      ready.pop_front();
      Strand& strand = strands[key];
      std::function<void()> work = std::move(strand.queue.front());
      strand.queue.pop_front();
      mu.Unlock();
      work();
      work = nullptr;  // its captures go before the lock is taken again
      mu.Lock();
      Strand& after = strands[key];
      if (after.queue.empty()) {
        strands.erase(key);
      } else {
        ready.push_back(key);  // the rest after the other ready strands
      }
    }
  }

  // Marks the calling worker's thread as ended (joined later by Reap or Join).
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
  CondVar changed;  // work became ready, a worker went idle or ended, closed
  bool closed ABSL_GUARDED_BY(mu) = false;
  std::map<uint64_t, Strand> strands ABSL_GUARDED_BY(mu);
  std::deque<uint64_t> ready ABSL_GUARDED_BY(mu);  // active strands waiting for a worker
  int workers ABSL_GUARDED_BY(mu) = 0;             // threads started and not ended
  int busy_workers ABSL_GUARDED_BY(mu) = 0;        // running or about to run work
  int idle ABSL_GUARDED_BY(mu) = 0;                // waiting for work
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
}

absl::Status DriverStrands::Join(absl::Time deadline) {
  const bool here = OnStrandThread();
  MutexLock lock(&state_->mu);
  // Done when nothing is ready or running, apart from the calling strand thread's own work.
  auto quiet = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
    return state_->ready.empty() && state_->busy_workers == (here ? 1 : 0) &&
           state_->workers == (here ? 1 : 0);
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
