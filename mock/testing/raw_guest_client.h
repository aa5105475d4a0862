// RawGuestClient: a raw test guest that attaches to a mock host over GuestLink (test-only).
//
// It creates real shared guest memory (a sealed memfd), opens a GuestLink stream, attaches,
// and then sends protocol messages exactly as a test writes them; a reader thread queues what
// the host sends. Conversation helpers (Connect, OpenChannel) do the common steps and check
// each answer; they are deliberately not a bus implementation (core's ChannelBus is that).
//
// Example:
//   ASSIGN_OR_RETURN(auto guest, RawGuestClient::Attach(channel, "vm-1", 16 << 20, deadline));
//   ASSIGN_OR_RETURN(std::vector<v1::Offer> offers,
//                    guest->Connect(protocol::kNewestVersion, deadline));
//   ASSIGN_OR_RETURN(std::unique_ptr<GuestRings> rings,
//                    guest->OpenChannel(offers[0].child_relid(), 8, 8, deadline));
//   rings->Send(...); rings->WaitForPacket(deadline);
//
// Thread-safe: Send and Receive may be called from different threads.
#ifndef VBUS_MOCK_TESTING_RAW_GUEST_CLIENT_H_
#define VBUS_MOCK_TESTING_RAW_GUEST_CLIENT_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/data/protocol.h"
#include "core/runtime/sync.h"
#include "grpcpp/grpcpp.h"
#include "mock/guest_memory.h"
#include "mock/testing/guest_rings.h"
#include "proto/mock_host.grpc.pb.h"

namespace vbus::mock::testing {

class RawGuestClient {
 public:
  // Attach
  // Creates `memory_bytes` of guest memory, connects and attaches as `name`, and waits for
  // `attached` until `deadline`. Errors: the stream's status if the host refused the attach,
  // DeadlineExceeded, or the memory's creation error.
  static absl::StatusOr<std::unique_ptr<RawGuestClient>> Attach(
      std::shared_ptr<grpc::Channel> channel, const std::string& name, uint64_t memory_bytes,
      absl::Time deadline);
  // Attach with a prepared attach message and memory (for tests of refused attaches).
  static absl::StatusOr<std::unique_ptr<RawGuestClient>> AttachWith(
      std::shared_ptr<grpc::Channel> channel, std::unique_ptr<GuestMemory> memory,
      const v1::GuestToHost& first_message, absl::Time deadline);

  // Cancels the stream (the host detaches the guest) and joins the reader.
  ~RawGuestClient();

  const std::string& guest_id() const { return guest_id_; }
  GuestMemory& memory() { return *memory_; }
  GuestPages& pages() { return pages_; }

  // Send / SendRaw: FailedPrecondition once the stream has ended.
  absl::Status Send(const v1::ControlMessage& message);
  absl::Status SendRaw(const v1::GuestToHost& message);

  // Receive
  // The next message from the host. DeadlineExceeded if none arrives in time; once the host
  // ended the stream and the queue is empty, the stream's final status (e.g. UNAVAILABLE),
  // or Cancelled if it ended OK.
  absl::StatusOr<v1::HostToGuest> Receive(absl::Time deadline);
  // ReceiveControl: Receive, requiring a control message (a ProtocolError becomes its status).
  absl::StatusOr<v1::ControlMessage> ReceiveControl(absl::Time deadline);
  // WaitForEnd: the stream's final status once the host ended it (messages still queued are
  // discarded); DeadlineExceeded if it has not ended by `deadline`.
  absl::StatusOr<grpc::Status> WaitForEnd(absl::Time deadline);

  // Connect: InitiateContact(version) + RequestOffers; returns the offers up to
  // AllOffersDelivered. FailedPrecondition if the version is refused.
  absl::StatusOr<std::vector<v1::Offer>> Connect(uint32_t version, absl::Time deadline);
  // OpenChannel: allocates outbound + inbound pages, initialises the rings, creates a GPADL
  // (handles count up from protocol::kFirstGpadlHandle) and opens `relid` on it. Errors name the
  // failing step and the host's status.
  absl::StatusOr<std::unique_ptr<GuestRings>> OpenChannel(uint32_t relid, uint32_t outbound_pages,
                                                          uint32_t inbound_pages,
                                                          absl::Time deadline);

 private:
  RawGuestClient(std::unique_ptr<v1::GuestLink::Stub> stub, std::unique_ptr<GuestMemory> memory);
  void ReadLoop();

  std::unique_ptr<v1::GuestLink::Stub> stub_;
  std::unique_ptr<GuestMemory> memory_;
  GuestPages pages_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::GuestToHost, v1::HostToGuest>> stream_;
  std::string guest_id_;
  uint32_t next_gpadl_ = protocol::kFirstGpadlHandle;
  std::thread reader_;

  Mutex write_mu_;  // Write and Finish are not thread-safe against each other
  bool finished_ ABSL_GUARDED_BY(write_mu_) = false;  // Finish was called: no more writes
  Mutex mu_;
  CondVar cv_;  // with mu_: inbox_ or final_status_ changed
  std::deque<v1::HostToGuest> inbox_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> final_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vbus::mock::testing

#endif  // VBUS_MOCK_TESTING_RAW_GUEST_CLIENT_H_
