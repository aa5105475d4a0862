#include "hyperv/host_message_queue.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace vbus::hyperv {

void HostMessageQueue::Start(BackendListener* listener) {
  MutexLock lock(&mu_);
  if (stopped_) return;
  listener_ = listener;
  DrainLocked();
}

void HostMessageQueue::Push(v1::ControlMessage message) {
  MutexLock lock(&mu_);
  if (stopped_) return;
  queue_.push_back(std::move(message));
  DrainLocked();
}

void HostMessageQueue::Pause() {
  MutexLock lock(&mu_);
  paused_ = true;
  // From inside OnHostMessage the pause takes effect when that call returns (DrainLocked
  // re-checks paused_); from another thread, wait for the call in progress.
  AwaitOthersLocked("PauseDelivery");
}

void HostMessageQueue::Resume() {
  MutexLock lock(&mu_);
  paused_ = false;
  DrainLocked();
}

void HostMessageQueue::Stop() {
  MutexLock lock(&mu_);
  stopped_ = true;
  queue_.clear();
  AwaitOthersLocked("Stop");
}

size_t HostMessageQueue::held() const {
  MutexLock lock(&mu_);
  return queue_.size();
}

bool HostMessageQueue::Deliverable() const {
  return listener_ != nullptr && !paused_ && !stopped_ && !delivering_.has_value() &&
         !queue_.empty();
}

void HostMessageQueue::DrainLocked() {
  while (Deliverable()) {
    v1::ControlMessage next = std::move(queue_.front());
    queue_.pop_front();
    delivering_ = std::this_thread::get_id();
    BackendListener* listener = listener_;
    mu_.Unlock();
    listener->OnHostMessage(next);
    delivered_.fetch_add(1, std::memory_order_relaxed);
    mu_.Lock();
    delivering_.reset();
    done_.SignalAll();
  }
}

void HostMessageQueue::AwaitOthersLocked(absl::string_view who) {
  const std::thread::id self = std::this_thread::get_id();
  auto others_done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !delivering_.has_value() || *delivering_ == self;
  };
  for (absl::Duration waited;; waited += stall_report_) {
    if (done_.AwaitWithDeadline(&mu_, absl::Now() + stall_report_, others_done)) return;
    if (log_) {
      log_(absl::StrCat(who, " waits for an OnHostMessage call that has run for over ",
                        absl::FormatDuration(waited + stall_report_),
                        " (listener calls must return quickly)"));
    }
  }
}

}  // namespace vbus::hyperv
