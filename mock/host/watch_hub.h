// WatchHub<T>: fans items (protocol events, guest packets) out to watchers, each with its own
// filter and bounded queue.
//
// The mock host publishes from many threads (the control path under its lock, each guest's
// doorbell thread); each HostControl watch stream subscribes and pops from its queue. A slow
// watcher never slows the publisher: when its queue is full, its oldest item is dropped and
// counted (events carry a host-wide sequence number, so a gap shows what was missed).
//
// Example:
//   WatchHub<v1::ProtocolEvent> hub(/*queue_limit=*/4096);
//   std::shared_ptr<WatchHub<v1::ProtocolEvent>::Subscription> sub =
//       hub.Subscribe([](const v1::ProtocolEvent& e) { return e.kind() == v1::EVENT_KIND_ERROR; });
//   hub.Publish(event);
//   absl::StatusOr<std::optional<v1::ProtocolEvent>> e = sub->Next(absl::Now() + absl::Seconds(1));
//
// Thread-safe: every method may be called from any thread.
#ifndef VBUS_MOCK_HOST_WATCH_HUB_H_
#define VBUS_MOCK_HOST_WATCH_HUB_H_

#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/runtime/sync.h"

namespace vbus::mock {

template <typename T>
class WatchHub {
 public:
  using Filter = std::function<bool(const T&)>;

  class Subscription {
   public:
    // Next
    // The next item, nullopt if none arrived before `deadline`, or Unavailable once the hub
    // is closed (after the queued items were taken) or the subscription cancelled.
    absl::StatusOr<std::optional<T>> Next(absl::Time deadline) {
      MutexLock lock(&mu_);
      cv_.AwaitWithDeadline(&mu_, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || closed_;
      });
      if (!queue_.empty()) {
        T item = std::move(queue_.front());
        queue_.pop_front();
        return std::optional<T>(std::move(item));
      }
      if (closed_) return absl::UnavailableError("the watch ended: the host is shutting down");
      return std::optional<T>();
    }

    // Items dropped because this watcher fell behind.
    size_t dropped() const {
      MutexLock lock(&mu_);
      return dropped_;
    }

   private:
    friend class WatchHub;
    Subscription(Filter filter, size_t limit) : filter_(std::move(filter)), limit_(limit) {}

    void Offer(const T& item) {
      if (filter_ && !filter_(item)) return;
      {
        MutexLock lock(&mu_);
        if (closed_) return;
        if (queue_.size() >= limit_) {
          queue_.pop_front();
          ++dropped_;
        }
        queue_.push_back(item);
      }
      cv_.SignalAll();
    }
    void Close() {
      {
        MutexLock lock(&mu_);
        closed_ = true;
      }
      cv_.SignalAll();
    }

    const Filter filter_;
    const size_t limit_;
    mutable Mutex mu_;
    CondVar cv_;
    std::deque<T> queue_ ABSL_GUARDED_BY(mu_);
    size_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
    bool closed_ ABSL_GUARDED_BY(mu_) = false;
  };

  // `queue_limit`: items each watcher may have waiting before its oldest is dropped.
  explicit WatchHub(size_t queue_limit) : queue_limit_(queue_limit) {}

  // Subscribe: a new watcher of every later item that passes `filter` (empty = all).
  // On a closed hub the subscription is closed at once.
  std::shared_ptr<Subscription> Subscribe(Filter filter) {
    auto sub = std::shared_ptr<Subscription>(new Subscription(std::move(filter), queue_limit_));
    MutexLock lock(&mu_);
    if (closed_) {
      sub->Close();
    } else {
      subscribers_.push_back(sub);
      count_.store(subscribers_.size(), std::memory_order_relaxed);
    }
    return sub;
  }

  // Unsubscribe: stops delivering to `sub` (a watcher that went away) and closes it.
  void Unsubscribe(const std::shared_ptr<Subscription>& sub) {
    sub->Close();
    MutexLock lock(&mu_);
    subscribers_.remove(sub);
    count_.store(subscribers_.size(), std::memory_order_relaxed);
  }

  // Publish: hands `item` to every watcher whose filter accepts it. `stamp`, if given, is
  // called once under the hub's lock before delivery (e.g. to assign a sequence number, so
  // every watcher sees the numbers in order).
  void Publish(T item, const std::function<void(T&)>& stamp = nullptr) {
    MutexLock lock(&mu_);
    if (stamp) stamp(item);
    for (const auto& sub : subscribers_) sub->Offer(item);
  }

  // Whether anybody watches (a relaxed hint, to skip building items nobody wants).
  bool HasWatchers() const { return count_.load(std::memory_order_relaxed) > 0; }

  // Close: ends every subscription (and refuses later ones).
  void Close() {
    MutexLock lock(&mu_);
    closed_ = true;
    for (const auto& sub : subscribers_) sub->Close();
    subscribers_.clear();
    count_.store(0, std::memory_order_relaxed);
  }

 private:
  const size_t queue_limit_;
  Mutex mu_;
  std::list<std::shared_ptr<Subscription>> subscribers_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Relaxed: only a hint for HasWatchers.
  std::atomic<size_t> count_{0};
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_WATCH_HUB_H_
