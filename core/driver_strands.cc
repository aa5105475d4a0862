#include "core/driver_strands.h"

#include <pthread.h>

#include <deque>
#include <list>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "core/sync.h"

namespace vbus {
namespace {

// The strands whose work the current thread runs (nullptr on other threads).
thread_local const void* t_strands = nullptr;

}  // namespace

struct DriverStrands::State {
  struct Strand {
    std::deque<std::function<void()>> queue;
    bool running = false;  // a thread works on it (and owns the front item while it runs)
  };
  struct Worker {
    std::thread thread;
    bool done = false;
  };

  explicit State(std::string name) : thread_name(std::move(name)) {}

  // Runs `key`'s queue until it is empty, on the worker's own thread (whose closure keeps this
  // state alive until the thread has left it).
  void Run(uint64_t key, std::list<Worker>::iterator worker) {
    t_strands = this;
    pthread_setname_np(pthread_self(), thread_name.substr(0, 15).c_str());
    for (;;) {
      std::function<void()> work;
      {
        MutexLock lock(&mu);
        Strand& strand = strands[key];
        if (strand.queue.empty()) {
          strands.erase(key);
          worker->done = true;
          changed.SignalAll();
          return;
        }
        work = std::move(strand.queue.front());
        strand.queue.pop_front();
      }
      work();
    }
  }

  // Joins the threads that have finished (they only have to return).
  void Reap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (auto it = workers.begin(); it != workers.end();) {
      if (!it->done) {
        ++it;
        continue;
      }
      if (it->thread.joinable()) it->thread.join();
      it = workers.erase(it);
    }
  }

  bool Post(const std::shared_ptr<State>& self, uint64_t key, std::function<void()> work)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (closed) return false;
    Strand& strand = strands[key];
    strand.queue.push_back(std::move(work));
    if (strand.running) return true;
    strand.running = true;
    Reap();
    auto worker = workers.emplace(workers.end());
    worker->thread = std::thread([self, key, worker] { self->Run(key, worker); });
    return true;
  }

  const std::string thread_name;
  Mutex mu;
  CondVar changed;  // a worker finished
  bool closed ABSL_GUARDED_BY(mu) = false;
  std::map<uint64_t, Strand> strands ABSL_GUARDED_BY(mu);
  std::list<Worker> workers ABSL_GUARDED_BY(mu);
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
}

absl::Status DriverStrands::Join(absl::Time deadline) {
  const bool here = OnStrandThread();
  MutexLock lock(&state_->mu);
  // The calling strand thread (if any) stays busy until it returns from its work: do not wait
  // for its own strand.
  auto others_done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
    size_t busy = 0;
    for (const State::Worker& w : state_->workers) {
      if (!w.done && !(here && w.thread.get_id() == std::this_thread::get_id())) ++busy;
    }
    return busy == 0;
  };
  const bool done = state_->changed.AwaitWithDeadline(&state_->mu, deadline, others_done);
  size_t detached = 0;
  for (auto it = state_->workers.begin(); it != state_->workers.end();) {
    if (it->done) {
      if (it->thread.joinable()) it->thread.join();
      it = state_->workers.erase(it);
      continue;
    }
    // Still running (stuck past the deadline, or the calling thread): it finishes on its own
    // and keeps the shared state alive meanwhile.
    if (it->thread.get_id() != std::this_thread::get_id()) ++detached;
    if (it->thread.joinable()) it->thread.detach();
    ++it;
  }
  if (done) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat(detached, " driver strand(s) still busy at the deadline; left to finish"));
}

bool DriverStrands::OnStrandThread() const { return t_strands == state_.get(); }

}  // namespace vbus
