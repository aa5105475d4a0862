#include "backends/testing/fake_backend.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace vbus::testing {

FakeBackend::FakeBackend(size_t data_pages, ContactInfo contact, uint32_t vp_count)
    : contact_(contact), vp_count_(std::clamp<uint32_t>(vp_count, 1, kMaxVps)) {
  memory_ = static_cast<uint8_t*>(
      std::aligned_alloc(protocol::kPageSize, (1 + data_pages) * protocol::kPageSize));
  std::memset(memory_, 0, protocol::kPageSize);
  pool_ = std::make_unique<PagePool>(memory_ + protocol::kPageSize, kFirstDataPfn, data_pages);
}

FakeBackend::~FakeBackend() {
  Stop();
  pool_.reset();  // checks that every Pages was returned
  std::free(memory_);
}

absl::Status FakeBackend::Start(BackendListener* listener) {
  MutexLock lock(&mu_);
  if (listener_ != nullptr || stopped_) {
    return absl::FailedPreconditionError("FakeBackend: already started");
  }
  listener_ = listener;
  return absl::OkStatus();
}

void FakeBackend::AwaitNoOtherDelivery() {
  changed_.AwaitWithDeadline(
      &mu_, absl::Now() + absl::Seconds(60), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !delivering_.has_value() || *delivering_ == std::this_thread::get_id();
      });
}

void FakeBackend::AwaitNoOtherListenerCall() {
  changed_.AwaitWithDeadline(&mu_, absl::Now() + absl::Seconds(60),
                             [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                               for (const auto& [thread, count] : in_listener_) {
                                 if (thread != std::this_thread::get_id()) return false;
                               }
                               return true;
                             });
}

void FakeBackend::EnterListener() { ++in_listener_[std::this_thread::get_id()]; }

void FakeBackend::LeaveListener() {
  MutexLock lock(&mu_);
  auto it = in_listener_.find(std::this_thread::get_id());
  if (--it->second == 0) in_listener_.erase(it);
  changed_.SignalAll();
}

void FakeBackend::Stop() {
  MutexLock lock(&mu_);
  stopped_ = true;
  // Stop returns only when no listener call is running (unless called from inside one).
  AwaitNoOtherDelivery();
  AwaitNoOtherListenerCall();
}

absl::Status FakeBackend::PostMessage(const v1::ControlMessage& message) {
  MutexLock lock(&mu_);
  if (fail_next_post_.has_value()) {
    absl::Status s = *std::move(fail_next_post_);
    fail_next_post_.reset();
    return s;
  }
  if (host_lost_ || stopped_) return absl::UnavailableError("FakeBackend: the host is gone");
  if (listener_ == nullptr) return absl::FailedPreconditionError("FakeBackend: not started");
  if (message.message_case() == v1::ControlMessage::MESSAGE_NOT_SET) {
    return absl::InvalidArgumentError("FakeBackend: empty ControlMessage");
  }
  posted_.push_back(message);
  return absl::OkStatus();
}

void FakeBackend::SetConnection(const NegotiatedConnection& connection) {
  MutexLock lock(&mu_);
  connection_ = connection;
}

void FakeBackend::PauseDelivery() {
  MutexLock lock(&mu_);
  paused_ = true;
  AwaitNoOtherDelivery();
}

void FakeBackend::ResumeDelivery() {
  {
    MutexLock lock(&mu_);
    paused_ = false;
  }
  Drain();
}

absl::Status FakeBackend::SignalHost(const ChannelSignal& signal) {
  if (signal.relid == 0 || signal.relid >= kEventFlagCount) {
    return absl::InvalidArgumentError(
        absl::StrCat("FakeBackend: signal for relid ", signal.relid, ", outside 1..2047"));
  }
  MutexLock lock(&mu_);
  if (host_lost_ || stopped_) return absl::UnavailableError("FakeBackend: the host is gone");
  signals_.push_back(signal);
  return absl::OkStatus();
}

absl::Span<uint8_t> FakeBackend::ReceiveEventFlags(uint32_t vp) {
  if (vp >= vp_count_) return {};
  return absl::Span<uint8_t>(memory_ + vp * kEventFlagBytes, kEventFlagBytes);
}

absl::StatusOr<Pages> FakeBackend::AllocatePages(size_t count, PageSharing sharing) {
  absl::StatusOr<Pages> pages = pool_->Allocate(count);
  if (pages.ok()) {
    MutexLock lock(&mu_);
    ++allocations_[static_cast<size_t>(sharing)];
  }
  return pages;
}

size_t FakeBackend::allocations(PageSharing sharing) const {
  MutexLock lock(&mu_);
  return allocations_[static_cast<size_t>(sharing)];
}

absl::Status FakeBackend::DeliverToGuest(v1::ControlMessage message) {
  {
    MutexLock lock(&mu_);
    if (listener_ == nullptr || stopped_ || host_lost_) {
      return absl::FailedPreconditionError("FakeBackend: no listener to deliver to");
    }
    queue_.push_back(std::move(message));
  }
  Drain();
  return absl::OkStatus();
}

void FakeBackend::Drain() {
  for (;;) {
    v1::ControlMessage next;
    BackendListener* listener = nullptr;
    {
      MutexLock lock(&mu_);
      if (paused_ || stopped_ || delivering_.has_value() || queue_.empty()) return;
      next = std::move(queue_.front());
      queue_.pop_front();
      delivering_ = std::this_thread::get_id();
      listener = listener_;
    }
    listener->OnHostMessage(next);
    MutexLock lock(&mu_);
    delivering_.reset();
    changed_.SignalAll();
  }
}

absl::Status FakeBackend::RaiseEvent(uint32_t relid, uint32_t vp) {
  if (relid == 0 || relid >= kEventFlagCount) {
    return absl::InvalidArgumentError(
        absl::StrCat("FakeBackend: event for relid ", relid, ", outside 1..2047"));
  }
  if (vp >= vp_count_) {
    return absl::InvalidArgumentError(
        absl::StrCat("FakeBackend: event on VP ", vp, " of ", vp_count_));
  }
  BackendListener* listener = nullptr;
  {
    MutexLock lock(&mu_);
    if (listener_ == nullptr || stopped_) {
      return absl::FailedPreconditionError("FakeBackend: not started");
    }
    listener = listener_;
    EnterListener();
  }
  // The guest test-and-clears bits atomically; set ours the same way. [FB-S1] release pairs
  // with the guest scanner's [EP-C1] exchange of the same 64-bit word.
  uint64_t* word = reinterpret_cast<uint64_t*>(memory_ + vp * kEventFlagBytes) + relid / 64;
  std::atomic_ref<uint64_t>(*word).fetch_or(uint64_t{1} << (relid % 64), std::memory_order_release);
  listener->OnEventsPending(vp);
  LeaveListener();
  return absl::OkStatus();
}

void FakeBackend::LoseHost(absl::Status status) {
  BackendListener* listener = nullptr;
  {
    MutexLock lock(&mu_);
    if (host_lost_ || listener_ == nullptr || stopped_) return;
    host_lost_ = true;
    queue_.clear();
    listener = listener_;
    EnterListener();
  }
  listener->OnHostLost(status);
  LeaveListener();
}

void FakeBackend::FailNextPost(absl::Status status) {
  MutexLock lock(&mu_);
  fail_next_post_ = std::move(status);
}

std::vector<v1::ControlMessage> FakeBackend::TakePosted() {
  MutexLock lock(&mu_);
  return std::exchange(posted_, {});
}

std::vector<ChannelSignal> FakeBackend::TakeSignals() {
  MutexLock lock(&mu_);
  return std::exchange(signals_, {});
}

std::optional<NegotiatedConnection> FakeBackend::connection() const {
  MutexLock lock(&mu_);
  return connection_;
}

bool FakeBackend::paused() const {
  MutexLock lock(&mu_);
  return paused_;
}

size_t FakeBackend::queued_messages() const {
  MutexLock lock(&mu_);
  return queue_.size();
}

}  // namespace vbus::testing
