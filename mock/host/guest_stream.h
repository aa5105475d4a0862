// GuestStream: the mock host's end of one GuestLink.Connect stream (a gRPC callback reactor).
// It reads the guest's messages one at a time and hands each to its MockHost, and writes what
// the host queues for the guest — as ControlBatches where the guest accepts them.
//
// Reads are chained (one outstanding at a time); writes are queued and sent one at a time;
// Finish waits for an in-flight write (gRPC allows at most one write in flight, and Finish
// counts as one). Deleted by gRPC's OnDone.
//
// Batching: while a write is in flight, or while the stream is held (the handling of one
// incoming message, so that all its answers leave together), messages only queue. The next
// write then takes every consecutive control message at the head of the queue as one
// ControlBatch (up to CONTROL_BATCH_MAX_MESSAGES and about kBatchBytes), if the guest said in
// its Attach that it accepts batches; anything else (attached, errors, signals) goes alone, so
// the order of all messages is kept.
//
// Thread-safe. Private to the mock_host library.
#ifndef VBUS_MOCK_HOST_GUEST_STREAM_H_
#define VBUS_MOCK_HOST_GUEST_STREAM_H_

#include <cstddef>
#include <deque>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "core/runtime/sync.h"
#include "grpcpp/grpcpp.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock {

class MockHost;

class GuestStream final : public grpc::ServerBidiReactor<v1::GuestToHost, v1::HostToGuest> {
 public:
  // A batch stops growing once its messages reach this many bytes (far below gRPC's 4 MiB
  // default receive limit; the host's control messages are small anyway).
  static constexpr size_t kBatchBytes = size_t{1} << 20;

  explicit GuestStream(MockHost* host) : host_(host) {}

  // Starts reading unless the stream was finished meanwhile.
  void StartReading();

  // Whether the guest accepts HostToGuest.batch (from its Attach; before `attached` is queued).
  void SetAcceptsBatches(bool accepts);

  // Queues a message for the guest; dropped once the stream is finishing.
  void Enqueue(v1::HostToGuest message);

  // Hold / Release: while held, Enqueue only queues; the last Release writes what queued up.
  void Hold();
  void Release();

  // Ends the stream with `status` (after the write in flight, if any). Queued messages that
  // were not yet written are dropped. Idempotent.
  void FinishWith(grpc::Status status);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;

 private:
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  MockHost* const host_;
  v1::GuestToHost in_;
  Mutex mu_;
  std::deque<v1::HostToGuest> queue_ ABSL_GUARDED_BY(mu_);
  v1::HostToGuest current_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool accepts_batches_ ABSL_GUARDED_BY(mu_) = false;
  int holds_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<grpc::Status> finish_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_GUEST_STREAM_H_
