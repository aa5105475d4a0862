#include "mock/host/guest_stream.h"

#include <utility>

#include "mock/host/mock_host.h"

namespace vbus::mock {

void GuestStream::StartReading() {
  MutexLock lock(&mu_);
  if (!finished_) StartRead(&in_);
}

void GuestStream::SetAcceptsBatches(bool accepts) {
  MutexLock lock(&mu_);
  accepts_batches_ = accepts;
}

void GuestStream::Enqueue(v1::HostToGuest message) {
  MutexLock lock(&mu_);
  if (finished_) return;
  queue_.push_back(std::move(message));
  if (!writing_ && holds_ == 0) WriteNextLocked();
}

void GuestStream::Hold() {
  MutexLock lock(&mu_);
  ++holds_;
}

void GuestStream::Release() {
  MutexLock lock(&mu_);
  if (--holds_ == 0 && !writing_ && !finished_ && !queue_.empty()) WriteNextLocked();
}

void GuestStream::FinishWith(grpc::Status status) {
  MutexLock lock(&mu_);
  if (finished_) return;
  finished_ = true;
  queue_.clear();
  if (writing_) {
    finish_status_ = std::move(status);
  } else {
    Finish(std::move(status));
  }
}

void GuestStream::OnReadDone(bool ok) {
  if (!ok) {
    host_->OnStreamEnded(this);
    return;
  }
  // The answers to this message (to all of a batch's messages) leave in one write. gRPC
  // calls OnDone only after this reaction has returned, so `this` outlives the Release.
  Hold();
  const bool more = host_->OnStreamMessage(this, in_);
  Release();
  if (more) StartReading();
}

void GuestStream::OnWriteDone(bool ok) {
  MutexLock lock(&mu_);
  writing_ = false;
  if (finished_) {
    if (finish_status_) {
      Finish(std::move(*finish_status_));
      finish_status_.reset();
    }
    return;
  }
  if (!ok) {
    // The guest is gone; its read side reports it and the host detaches it.
    queue_.clear();
    return;
  }
  if (!queue_.empty() && holds_ == 0) WriteNextLocked();
}

void GuestStream::OnDone() {
  host_->ForgetStream(this);
  delete this;
}

void GuestStream::WriteNextLocked() {
  const bool batch =
      accepts_batches_ && queue_.size() > 1 && queue_[0].has_control() && queue_[1].has_control();
  if (!batch) {
    current_ = std::move(queue_.front());
    queue_.pop_front();
  } else {
    // Swap moves each message in without copying it.
    current_.Clear();
    v1::ControlBatch* out = current_.mutable_batch();
    size_t bytes = 0;
    while (!queue_.empty() && queue_.front().has_control() &&
           out->messages_size() < v1::CONTROL_BATCH_MAX_MESSAGES && bytes < kBatchBytes) {
      bytes += queue_.front().control().ByteSizeLong();
      out->add_messages()->Swap(queue_.front().mutable_control());
      queue_.pop_front();
    }
  }
  writing_ = true;
  StartWrite(&current_);
}

}  // namespace vbus::mock
