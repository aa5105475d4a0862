#include "mock/testing/raw_host_link.h"

#include <deque>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/clock.h"

namespace vbus::mock {
namespace {

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (!buffer.Dump(&slices).ok()) return bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return bytes;
}

}  // namespace

std::string RawFrame(const v1::HostToGuest& message) { return message.SerializeAsString(); }

std::string OverwriteInFrame(std::string frame, absl::string_view marker, absl::string_view bytes) {
  const size_t at = frame.find(marker.data(), 0, marker.size());
  if (at == std::string::npos || bytes.size() != marker.size()) return frame;
  frame.replace(at, bytes.size(), bytes.data(), bytes.size());
  return frame;
}

v1::HostToGuest AttachedMessage(const std::string& guest_id) {
  v1::HostToGuest message;
  message.mutable_attached()->set_guest_id(guest_id);
  message.mutable_attached()->set_accepts_batches(true);
  return message;
}

// One guest's stream: reads are chained, frames are written one at a time, Finish waits for
// the write in flight. Deleted by OnDone.
class RawHostLink::Stream final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit Stream(RawHostLink* link) : link_(link) { StartRead(&in_); }

  void OnReadDone(bool ok) override {
    MutexLock lock(&mu_);
    if (!ok) {
      reading_ = false;
      MaybeFinishLocked();
      return;
    }
    v1::GuestToHost message;
    const bool parsed = message.ParseFromString(Flatten(in_));
    in_.Clear();
    if (!attach_seen_) {
      attach_seen_ = true;
      for (const std::string& frame : link_->script_.after_attach) out_.push_back(frame);
      ending_ = link_->script_.end.has_value();
    } else if (parsed) {
      if (link_->script_.answer) {
        for (std::string& frame : link_->script_.answer(message)) out_.push_back(std::move(frame));
      }
      link_->Record(std::move(message));
    }
    if (ending_) {
      reading_ = false;
    } else {
      StartRead(&in_);
    }
    WriteNextLocked();
    MaybeFinishLocked();
  }

  void OnWriteDone(bool ok) override {
    MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) out_.clear();  // the guest is gone
    WriteNextLocked();
    MaybeFinishLocked();
  }

  void OnDone() override { delete this; }

 private:
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_ || out_.empty()) return;
    grpc::Slice slice(out_.front());
    out_.pop_front();
    out_buffer_ = grpc::ByteBuffer(&slice, 1);
    writing_ = true;
    StartWrite(&out_buffer_);
  }
  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_ || !out_.empty()) return;
    if (ending_) {
      finished_ = true;
      Finish(*link_->script_.end);
    } else if (!reading_) {
      finished_ = true;
      Finish(grpc::Status::OK);
    }
  }

  RawHostLink* const link_;
  grpc::ByteBuffer in_;  // the read in flight
  Mutex mu_;
  grpc::ByteBuffer out_buffer_ ABSL_GUARDED_BY(mu_);  // the write in flight
  std::deque<std::string> out_ ABSL_GUARDED_BY(mu_);
  bool attach_seen_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_ ABSL_GUARDED_BY(mu_) = true;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

class RawHostLink::Service final
    : public v1::GuestLink::WithRawCallbackMethod_Connect<v1::GuestLink::Service> {
 public:
  explicit Service(RawHostLink* link) : link_(link) {}
  using v1::GuestLink::WithRawCallbackMethod_Connect<v1::GuestLink::Service>::Connect;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Connect(
      grpc::CallbackServerContext*) override {
    return new Stream(link_);
  }

 private:
  RawHostLink* const link_;
};

RawHostLink::RawHostLink(RawHostScript script) : script_(std::move(script)) {}

absl::StatusOr<std::unique_ptr<RawHostLink>> RawHostLink::Start(RawHostScript script) {
  auto link = std::unique_ptr<RawHostLink>(new RawHostLink(std::move(script)));
  link->service_ = std::make_unique<Service>(link.get());
  grpc::ServerBuilder builder;
  builder.RegisterService(link->service_.get());
  link->server_ = builder.BuildAndStart();
  if (link->server_ == nullptr) return absl::UnavailableError("the raw GuestLink did not start");
  return link;
}

RawHostLink::~RawHostLink() {
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    server_->Wait();
  }
}

std::shared_ptr<grpc::Channel> RawHostLink::InProcessChannel() {
  return server_->InProcessChannel(grpc::ChannelArguments());
}

void RawHostLink::Record(v1::GuestToHost message) {
  MutexLock lock(&mu_);
  received_.push_back(std::move(message));
  cv_.SignalAll();
}

std::vector<v1::GuestToHost> RawHostLink::received() {
  MutexLock lock(&mu_);
  return received_;
}

bool RawHostLink::WaitForReceived(size_t count, absl::Duration wait) {
  MutexLock lock(&mu_);
  return cv_.AwaitWithDeadline(&mu_, absl::Now() + wait, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return received_.size() >= count;
  });
}

}  // namespace vbus::mock
