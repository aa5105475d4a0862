// MockHost: the mock host's runtime — the HostEngine plus threads, a clock, shared memory and
// the two gRPC services; MockHostServer: MockHost behind a gRPC server.
//
// MockHost wraps the no-I/O engine (mock/host/engine.h) the way core's runtime wraps its bus
// state machine: every input (a guest's stream message, a HostControl request, a timer) is
// fed to the engine under one mutex, and the engine's Actions are carried out in order —
// messages go out on the guest's GuestLink stream, events to WatchEvents streams, MapRings
// maps the rings into the guest's GuestDataPlane (mock/host/data_plane.h) and reports back with
// CompleteOpen. Each attached guest gets a doorbell thread that waits on the host doorbell (or
// the monitor-page latency) and runs the data plane: no RPC is on the data path. A device's
// request for sub-channels (the echo device's: mock/host/sub_channel_request.h) is queued by
// the data plane and run by that doorbell thread after its scan, under the mutex: the engine
// hot-adds the sub-channels (HostEngine::OfferSubChannels), or an ERROR event says why not.
//
// Services:
// - GuestLink.Connect (callback API, one reactor per stream): the first message must be
//   `attach`; the host maps the guest's memory file, answers `attached`, and from then on feeds
//   control messages and slow-path signals to the engine. When the stream ends for any reason
//   the guest is detached: its channels closed, its memory unmapped. Control batches
//   (ControlBatch; `attached` says the host accepts them) are checked and then handled message
//   by message, each one's actions carried out before the next. Messages for the guest queue
//   while a write is in flight and while an incoming message is being handled; to a guest
//   whose Attach set accepts_batches, the queued control messages then leave as one batch.
// - HostControl: every RPC of proto/mock_host.proto. WatchEvents and WatchPackets send their
//   initial metadata as soon as the watch is registered: a client that needs every later event
//   waits for the metadata before acting.
//
// Logs one line per guest attach and detach and per error (protocol refusals, corrupt rings,
// faults are events, not log lines, unless they are errors) through MockHostOptions::log.
//
// Example (in-process, e.g. a MockBackend test):
//   ASSIGN_OR_RETURN(std::unique_ptr<MockHostServer> server,
//                    MockHostServer::Start({}, "unix:" + socket_path));
//   auto channel = grpc::CreateChannel(server->target(), grpc::InsecureChannelCredentials());
//   // or server->InProcessChannel()
//   ...
//   server->Shutdown();
//
// Source files: mock_host.cc (the runtime and MockHostServer), guest_link.cc and
// guest_stream.cc (GuestLink), host_control.cc (HostControl); mock_host_internal.h says more.
//
// Thread-safe.
#ifndef VBUS_MOCK_HOST_MOCK_HOST_H_
#define VBUS_MOCK_HOST_MOCK_HOST_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/runtime/sync.h"
#include "grpcpp/grpcpp.h"
#include "mock/host/data_plane.h"
#include "mock/host/device.h"
#include "mock/host/engine.h"
#include "mock/host/watch_hub.h"
#include "proto/mock_host.grpc.pb.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock {

struct MockHostOptions {
  // Settings, default offers and the GUID seed (EngineOptions::device_classes is filled from
  // `devices`).
  EngineOptions engine;
  // Device kinds and their emulators; nullptr = DeviceRegistry::Default() (echo, sink, raw)
  // plus the integration components (heartbeat, shutdown, timesync, kvp; ic_host.h).
  const DeviceRegistry* devices = nullptr;
  // Receives the log lines (attach, detach, errors); empty = one line each on stderr.
  std::function<void(absl::string_view)> log;
  // Items a watcher may have queued before its oldest is dropped.
  size_t watch_queue_limit = 65536;
  // How long each guest's doorbell thread polls the host doorbell (yielding the CPU between
  // looks) before it sleeps on it, as a hypervisor's halt polling does: a guest signal within
  // the window costs the guest no FUTEX_WAKE and the host thread no sleep and wake-up.
  // Zero: sleep at once.
  absl::Duration doorbell_poll = absl::Microseconds(20);
};

class GuestStream;  // the GuestLink reactor (guest_stream.h)
class IcHub;        // the IC emulators' registry (ic_host.h)
class IcHostChannel;
class GuestLinkService;  // guest_link.cc

class MockHost {
 public:
  // Create: InvalidArgument for invalid engine options.
  static absl::StatusOr<std::unique_ptr<MockHost>> Create(MockHostOptions options);
  // Shuts down (see Shutdown).
  ~MockHost();
  MockHost(const MockHost&) = delete;
  MockHost& operator=(const MockHost&) = delete;

  // The gRPC services, to register with a grpc::ServerBuilder (MockHostServer does).
  grpc::Service* guest_link_service();
  grpc::Service* host_control_service();

  // Shutdown
  // Detaches every guest (their streams end with UNAVAILABLE), ends every watch stream and
  // refuses new guests. Idempotent. Blocks until the doorbell and timer threads have ended.
  void Shutdown();

  // HostControl, callable in-process with the same semantics as the RPCs.
  absl::StatusOr<v1::OfferResponse> Offer(const v1::OfferRequest& request);
  absl::StatusOr<v1::RescindResponse> Rescind(const v1::RescindRequest& request);
  v1::ListGuestsResponse ListGuests();
  absl::StatusOr<v1::ListChannelsResponse> ListChannels(const v1::ListChannelsRequest& request);
  absl::StatusOr<v1::SendPacketResponse> SendPacket(const v1::SendPacketRequest& request);
  // InjectFault: a RingFault is carried out at once on the guest's data plane (its result in
  // the response); every other fault goes to the engine (an empty response).
  absl::StatusOr<v1::InjectFaultResponse> InjectFault(const v1::InjectFaultRequest& request);
  absl::StatusOr<v1::HostSettings> Configure(const v1::ConfigureRequest& request);
  // Integration components (ic_control.cc): one request on the guest's open IC channel of
  // that kind (see proto/mock_host.proto). NotFound if there is none (or the host was created
  // with its own DeviceRegistry, which has no IC emulators).
  absl::StatusOr<v1::GuestShutdownResponse> RequestShutdown(
      const v1::GuestShutdownRequest& request);
  absl::StatusOr<v1::KvpResponse> KvpExchange(const v1::KvpRequest& request);
  absl::StatusOr<v1::TimeSyncResponse> TimeSync(const v1::TimeSyncRequest& request);
  absl::StatusOr<v1::IcStatusResponse> IcStatus(const v1::IcStatusRequest& request);
  absl::StatusOr<v1::IcSettings> ConfigureIc(const v1::ConfigureIcRequest& request);
  // Watches: InvalidArgument for a bad filter. The subscription ends (Unavailable) at shutdown.
  absl::StatusOr<std::shared_ptr<WatchHub<v1::ProtocolEvent>::Subscription>> WatchEvents(
      const v1::WatchEventsRequest& request);
  absl::StatusOr<std::shared_ptr<WatchHub<v1::GuestPacket>::Subscription>> WatchPackets(
      const v1::WatchPacketsRequest& request);
  void Unwatch(const std::shared_ptr<WatchHub<v1::ProtocolEvent>::Subscription>& sub);
  void Unwatch(const std::shared_ptr<WatchHub<v1::GuestPacket>::Subscription>& sub);

 private:
  friend class GuestStream;
  friend class GuestLinkService;
  struct Session;  // mock_host_internal.h

  MockHost(MockHostOptions options, std::unique_ptr<HostEngine> engine,
           std::unique_ptr<DeviceRegistry> own_devices, std::shared_ptr<IcHub> ic_hub);
  // InjectFault{ring} (host_control.cc): checks that the guest exists and (but for an event
  // storm) that the relid is open, runs the fault on its data plane and publishes FAULT_FIRED.
  absl::StatusOr<v1::InjectFaultResponse> InjectRingFault(const v1::InjectFaultRequest& request);
  // The IC channel of `kind` of `guest` (id or name).
  absl::StatusOr<std::shared_ptr<IcHostChannel>> FindIc(const std::string& guest,
                                                        const std::string& kind);

  // Runs `fn` (an engine call) under mu_ at the current time and carries out its Actions.
  // Sessions detached meanwhile are destroyed after mu_ is released.
  template <typename Fn>
  auto Run(Fn&& fn) -> decltype(fn(absl::Time(), static_cast<Actions*>(nullptr)));
  void Execute(Actions actions, std::vector<std::unique_ptr<Session>>* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Detaches the guest (engine first, then its session) and finishes its stream.
  void DetachLocked(const std::string& guest_id, const std::string& reason,
                    const grpc::Status& stream_status, std::vector<std::unique_ptr<Session>>* dead)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishEvent(v1::ProtocolEvent event);
  // Message events (a copy of every control message) only while somebody watches events.
  void SyncMessageEventsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Log(absl::string_view line);

  // GuestLink stream callbacks (from GuestStream). OnStreamMessage returns whether the stream
  // should keep reading.
  bool OnStreamMessage(GuestStream* stream, const v1::GuestToHost& message);
  // A ControlBatch from an attached guest: checked, then its messages one by one.
  bool OnStreamBatch(const std::string& guest_id, const v1::ControlBatch& batch);
  void OnStreamEnded(GuestStream* stream);
  bool Attach(GuestStream* stream, const v1::GuestToHost& message);
  // A new stream (not attached yet). False if the host is shutting down (the stream was
  // finished with UNAVAILABLE).
  bool RegisterStream(GuestStream* stream);
  // The stream is done (gRPC's OnDone): forget it.
  void ForgetStream(GuestStream* stream);
  // The name of a guest id (also of detached guests), empty if unknown.
  std::string NameOf(const std::string& guest_id);

  void DoorbellLoop(Session* session);
  // On the session's doorbell thread, after its scan (no data-plane lock held): takes mu_ and
  // offers the sub-channels its devices asked for (HostEngine::OfferSubChannels), carrying out
  // the Actions like the Offer RPC; a refusal becomes an ERROR event naming the relid.
  void RunSubChannelRequests(Session* session);
  void TimerLoop();

  // The default device registry (with the IC emulators) and their hub; declared first so
  // that they outlive everything that uses them.
  const std::unique_ptr<DeviceRegistry> own_devices_;
  const std::shared_ptr<IcHub> ic_hub_;
  const MockHostOptions options_;
  const DeviceRegistry* const devices_;
  std::unique_ptr<grpc::Service> host_control_;
  std::unique_ptr<grpc::Service> guest_link_;
  WatchHub<v1::ProtocolEvent> events_;
  WatchHub<v1::GuestPacket> packets_;
  uint64_t event_sequence_ = 0;  // guarded by events_' lock (assigned in its stamp callback)
  // Relaxed: read by doorbell threads as their scan period; written by Configure.
  std::atomic<uint32_t> monitor_latency_us_;

  Mutex mu_;
  CondVar timer_cv_;  // with mu_: timer_dirty_ or shutting_down_ changed
  std::unique_ptr<HostEngine> engine_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<GuestStream*, std::string> stream_guest_ ABSL_GUARDED_BY(mu_);
  // Streams connected but not attached yet (finished by Shutdown).
  absl::flat_hash_set<GuestStream*> unattached_streams_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool timer_dirty_ ABSL_GUARDED_BY(mu_) = false;
  // Sessions detached by an action a doorbell thread carried out, for the timer thread to
  // destroy (a session's destructor joins its doorbell thread, which cannot join itself).
  std::vector<std::unique_ptr<Session>> retired_sessions_ ABSL_GUARDED_BY(mu_);
  std::thread timer_thread_;
  // Guest id → name, for watch filters that name a guest (a leaf lock: taken inside the
  // watch hubs' locks).
  Mutex names_mu_;
  absl::flat_hash_map<std::string, std::string> guest_names_ ABSL_GUARDED_BY(names_mu_);
  Mutex shutdown_mu_;  // serialises Shutdown
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

// MockHostServer: a MockHost served over gRPC with server reflection.
class MockHostServer {
 public:
  // Start
  // Creates the host and listens on `listen_address`: "HOST:PORT" (PORT 0 picks a free
  // port), "unix:PATH", or empty for in-process use only. Unavailable if it cannot listen.
  static absl::StatusOr<std::unique_ptr<MockHostServer>> Start(MockHostOptions options,
                                                               const std::string& listen_address);
  ~MockHostServer();

  MockHost& host() { return *host_; }
  // The address clients dial: "127.0.0.1:PORT" with the chosen port, or "unix:PATH".
  const std::string& target() const { return target_; }
  // A channel to this server without a socket.
  std::shared_ptr<grpc::Channel> InProcessChannel();

  // Shutdown: the host first (guests detached with UNAVAILABLE, watches ended), then the
  // server (calls still running after `grace` are cancelled). Idempotent.
  void Shutdown(absl::Duration grace = absl::Seconds(2));

 private:
  MockHostServer() = default;
  std::unique_ptr<MockHost> host_;
  std::unique_ptr<grpc::Server> server_;
  std::string target_;
  bool shut_down_ = false;
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_MOCK_HOST_H_
