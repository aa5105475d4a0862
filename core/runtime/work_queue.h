// WorkQueue<T>: a closable FIFO handed from any number of posting threads to one consumer
// thread, which takes everything queued per lock round (ChannelBus's control and driver
// threads, MockBackend's writer).
//
// The consumer sleeps only when it found the queue empty (checked under the lock), so Post
// wakes it only on empty → non-empty: a burst of posts costs one wake-up, not one each.
//
//   WorkQueue<std::function<void()>> queue;
//   // consumer thread:
//   std::deque<std::function<void()>> batch;
//   while (queue.TakeAll(absl::InfiniteFuture(), &batch)) {
//     for (auto& work : batch) work();
//     batch.clear();
//   }
//   // elsewhere: queue.Post(...); ... queue.Close();  (the consumer drains, then exits)
#ifndef VBUS_CORE_RUNTIME_WORK_QUEUE_H_
#define VBUS_CORE_RUNTIME_WORK_QUEUE_H_

#include <deque>
#include <utility>

#include "absl/time/time.h"
#include "core/runtime/sync.h"

namespace vbus {

template <typename T>
class WorkQueue {
 public:
  WorkQueue() = default;
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `item`. False (item dropped) once the queue is closed.
  bool Post(T item) {
    MutexLock lock(&mu_);
    if (closed_) return false;
    items_.push_back(std::move(item));
    if (items_.size() == 1) cv_.Signal();
    return true;
  }

  // No more posts; the consumer still takes what is queued, then TakeAll returns false.
  void Close() {
    MutexLock lock(&mu_);
    closed_ = true;
    cv_.SignalAll();
  }

  // Waits until something is queued, the queue is closed, or `wake` passes, then moves
  // everything queued to the end of *out (nothing when woken by `wake`). False only when the
  // queue is closed and empty: the consumer is done.
  bool TakeAll(absl::Time wake, std::deque<T>* out) {
    MutexLock lock(&mu_);
    cv_.AwaitWithDeadline(&mu_, wake, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !items_.empty() || closed_;
    });
    if (items_.empty()) return !closed_;
    if (out->empty()) {
      out->swap(items_);
    } else {
      for (T& item : items_) out->push_back(std::move(item));
      items_.clear();
    }
    return true;
  }

 private:
  Mutex mu_;
  CondVar cv_;  // items_ became non-empty, or closed_ was set
  std::deque<T> items_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vbus

#endif  // VBUS_CORE_RUNTIME_WORK_QUEUE_H_
