// The parts of MockHost that its source files share; not for users of the library.
//
// MockHost (mock/host/mock_host.h) is split by responsibility:
//   mock_host.cc      the runtime: creation and shutdown, carrying out the engine's Actions,
//                     detaching guests, publishing events, the doorbell and timer threads;
//                     MockHostServer
//   guest_link.cc     GuestLink: the service, new streams, attach, the guest's stream
//                     messages and the end of a stream
//   guest_stream.h    GuestStream, the per-stream reactor (reads, queued and batched writes)
//   host_control.cc   HostControl: the gRPC service and MockHost's HostControl methods
// This header holds what they share: a guest's Session, the Run template and the factories of
// the two gRPC services.
#ifndef VBUS_MOCK_HOST_MOCK_HOST_INTERNAL_H_
#define VBUS_MOCK_HOST_MOCK_HOST_INTERNAL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/runtime/sync.h"
#include "grpcpp/grpcpp.h"
#include "mock/host/data_plane.h"
#include "mock/host/engine.h"
#include "mock/host/mock_host.h"

namespace vbus::mock {

// ToGrpc: `s` as a gRPC status (same code and message).
inline grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// The gRPC services of `host` (guest_link.cc, host_control.cc); `host` outlives them.
std::unique_ptr<grpc::Service> NewGuestLinkService(MockHost* host);
std::unique_ptr<grpc::Service> NewHostControlService(MockHost* host);

// A device's request for sub-channels of its open primary (DataPlaneHooks).
struct QueuedSubChannelRequest {
  uint32_t relid = 0;
  uint16_t count = 0;
};

// Most sub-channel requests a guest may have queued; more are refused (the guest's device sees
// ResourceExhausted and answers kStatusUnsuccessful). The doorbell thread empties the queue
// after every scan, so only a guest that floods its ring reaches it.
inline constexpr size_t kMaxQueuedSubChannelRequests = 256;

// One attached guest: its stream, data plane and doorbell thread.
struct MockHost::Session {
  std::string guest_id;
  std::string name;
  GuestStream* stream = nullptr;  // owned by gRPC; valid while the session is in sessions_
  // Sub-channel requests queued by the data plane's hook (on the draining thread, under the
  // data plane's locks, where mu_ must not be taken) for the doorbell thread, which runs them
  // under mu_ after its scan (MockHost::RunSubChannelRequests). A leaf lock. Declared before
  // `plane`, whose hook uses it, so that it outlives the plane.
  Mutex requests_mu;
  std::vector<QueuedSubChannelRequest> sub_channel_requests ABSL_GUARDED_BY(requests_mu);
  std::unique_ptr<GuestDataPlane> plane;
  std::thread doorbell;
  // [MHI-R1] release store by the destructor, pairs with [MH-A1], the acquire load by the
  // doorbell loop (mock_host.cc): the loop ends after seeing it (the Ring that follows wakes
  // it).
  std::atomic<bool> stop{false};
  // Counters of closed opens of each relid since it was offered (guarded by MockHost::mu_).
  absl::flat_hash_map<uint32_t, ChannelCounters> closed_counters;

  ~Session() {
    stop.store(true, std::memory_order_release);  // [MHI-R1]
    if (plane) plane->memory().Ring(Doorbell::kHost);
    if (doorbell.joinable()) doorbell.join();
  }
};

// MockHost::Run (declared in mock_host.h), defined here for the source files that call it.
template <typename Fn>
auto MockHost::Run(Fn&& fn) -> decltype(fn(absl::Time(), static_cast<Actions*>(nullptr))) {
  // Declared before `lock`, so destroyed after it: the doorbell threads of sessions detached
  // meanwhile are joined outside the lock.
  std::vector<std::unique_ptr<Session>> dead;
  MutexLock lock(&mu_);
  Actions out;
  SyncMessageEventsLocked();
  auto result = fn(absl::Now(), &out);
  Execute(std::move(out), &dead);
  return result;
}

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_MOCK_HOST_INTERNAL_H_
