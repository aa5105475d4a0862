// The mock host's integration-component (IC) emulators: the host's side of heartbeat,
// shutdown, time sync and KVP (docs/integration_components.md §1-§25).
//
// An IC channel is driven by the host: right after the channel opens, the host sends NEGOTIATE
// (the framework and message versions it offers) and the guest picks one of each; from then on
// the host sends one request at a time and waits for its answer. Each open IC channel gets an
// IcHostChannel with a worker thread of its own that does exactly that: it negotiates, then
// runs the emulator's periodic work (heartbeats, time samples) and the requests HostControl
// hands it (a shutdown, a KVP exchange), in order, each waiting for its answer until the
// answer timeout. Answers arrive on the guest's doorbell thread (IcDevice::OnPacket) and are
// handed to the worker.
//
// IcHub is one mock host's registry of its open IC channels (by guest and relid), their
// settings (IcSettings) and the way their events reach WatchEvents (IC_REQUEST, IC_ANSWER,
// HEARTBEAT_MISSED). RegisterIcDevices adds the four kinds to a DeviceRegistry, bound to a hub.
//
// Example (MockHost does this):
//   auto hub = std::make_shared<IcHub>();
//   hub->SetPublisher([this](v1::ProtocolEvent e) { PublishEvent(std::move(e)); });
//   RegisterIcDevices(&registry, hub);
//   ...
//   std::shared_ptr<IcHostChannel> c = hub->Find(guest_id, kShutdownKind);
//   absl::StatusOr<IcExchange> answer = c->Call(body, absl::Now() + absl::Seconds(5));
//
// Threading: IcHub and IcHostChannel are thread-safe. A channel's Stop (from the device's
// OnClose, under the mock host's lock) joins its worker, which therefore never takes that lock.
#ifndef VBUS_MOCK_HOST_IC_HOST_H_
#define VBUS_MOCK_HOST_IC_HOST_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/runtime/sync.h"
#include "drivers/ic/ic_wire.h"
#include "mock/host/device.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock {

// IcExchange: one request's answer.
struct IcExchange {
  ic::IcHeader header;
  std::vector<uint8_t> body;
};

class IcHub;

// IcHostChannel: the host's end of one open IC channel (see the file comment). Subclasses
// (one per IC, ic_host_devices.cc) add the periodic work and their own status fields.
class IcHostChannel : public std::enable_shared_from_this<IcHostChannel> {
 public:
  IcHostChannel(IcHub* hub, std::string kind, ic::MessageType type,
                std::vector<ic::IcVersion> message_versions);
  virtual ~IcHostChannel();

  const std::string& kind() const { return kind_; }
  const std::string& guest_id() const { return guest_id_; }
  uint32_t relid() const { return relid_; }

  // Start: the channel opened; starts the worker (which negotiates first).
  void Start(ChannelPort& port);
  // Stop: the channel is closing; fails the work in flight and queued (Unavailable), joins the
  // worker. The port is not used after it returns.
  void Stop();
  // OnAnswer: a packet the guest sent (doorbell thread; must not block). An answer must carry
  // its request's transaction id (each request gets a fresh one); one that does not is
  // counted as unexpected and dropped.
  void OnAnswer(absl::Span<const uint8_t> payload, uint64_t trans_id);

  // Call
  // Sends a request of this IC's type with `body` (in the negotiated version) from the worker,
  // after the work queued before it, and waits for the answer until `deadline`.
  // FailedPrecondition if the negotiation failed, Unavailable once the channel closes,
  // DeadlineExceeded if the answer did not come in time.
  absl::StatusOr<IcExchange> Call(std::vector<uint8_t> body, absl::Time deadline);
  // Run: runs `work` on the worker (after the negotiation and the work queued before), and
  // waits for it until `deadline`. `work` gets OK, or why the channel cannot serve it.
  absl::Status Run(std::function<absl::Status(absl::Status)> work, absl::Time deadline);

  // Status: the IcHostChannel's state for IcStatus.
  v1::IcChannelStatus Status() const;
  // The negotiated message version (once negotiated).
  std::optional<ic::IcVersion> message_version() const;

 protected:
  // Exchange (worker only): sends one request and waits for its answer until `timeout`.
  absl::StatusOr<IcExchange> Exchange(std::vector<uint8_t> body, absl::Duration timeout);
  // Periodic work (worker only): when it is next due (InfiniteFuture = none), and the work.
  virtual absl::Time NextTick() const { return absl::InfiniteFuture(); }
  virtual void Tick() {}
  // Called on the worker right after a successful negotiation.
  virtual void OnReady() {}
  // Adds subclass fields to a status.
  virtual void FillStatus(v1::IcChannelStatus& status) const { (void)status; }
  // Publishes an IC event about this channel.
  void Publish(v1::EventKind kind, std::string detail);
  IcHub* hub() const { return hub_; }
  // Counts an exchange's outcome (requests / failures) and remembers a problem.
  void Count(bool ok, const std::string& problem = "");

 private:
  void WorkerLoop();
  bool Negotiate();

  IcHub* const hub_;
  const std::string kind_;
  const ic::MessageType type_;
  const std::vector<ic::IcVersion> message_versions_;
  std::string guest_id_;  // set by Start, before the worker starts
  uint32_t relid_ = 0;
  std::thread worker_;

  mutable Mutex mu_;
  CondVar cv_;  // with mu_: an answer, queued work or stopping
  ChannelPort* port_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  enum class State { kNegotiating, kReady, kFailed };
  State state_ ABSL_GUARDED_BY(mu_) = State::kNegotiating;
  std::optional<ic::Negotiated> negotiated_ ABSL_GUARDED_BY(mu_);
  bool awaiting_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t request_id_ ABSL_GUARDED_BY(mu_) = 0;  // of the request awaiting its answer
  std::optional<IcExchange> answer_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<void(absl::Status)>> work_ ABSL_GUARDED_BY(mu_);
  uint64_t requests_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t failures_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t unexpected_ ABSL_GUARDED_BY(mu_) = 0;
  std::string detail_ ABSL_GUARDED_BY(mu_);
};

// IcDevice: the Device the data plane creates for an open IC channel; forwards to its
// IcHostChannel and registers it with the hub while open.
class IcDevice final : public Device {
 public:
  explicit IcDevice(IcHub* hub, std::shared_ptr<IcHostChannel> channel)
      : hub_(hub), channel_(std::move(channel)) {}
  absl::Status OnOpen(ChannelPort& port) override;
  PacketDisposition OnPacket(ChannelPort& port, const GuestPacketRef& packet) override;
  void OnClose() override;

 private:
  IcHub* const hub_;
  const std::shared_ptr<IcHostChannel> channel_;
  bool registered_ = false;
};

// Defaults of IcSettings.
v1::IcSettings DefaultIcSettings();

class IcHub {
 public:
  IcHub() = default;
  // SetPublisher: where the IC events go (called from worker threads; must not block for
  // long and must not take the mock host's lock). Until set, events are dropped.
  void SetPublisher(std::function<void(v1::ProtocolEvent)> publish);

  // Settings: a snapshot, and a change (unset fields keep their value). InvalidArgument for a
  // zero heartbeat interval or answer timeout.
  v1::IcSettings settings() const;
  absl::StatusOr<v1::IcSettings> Configure(const v1::IcSettings& change);

  // The open channel of `kind` of a guest (the one with the highest relid if several), or
  // nullptr.
  std::shared_ptr<IcHostChannel> Find(const std::string& guest_id, const std::string& kind) const;
  // Every open IC channel of a guest (every guest if empty), by guest and relid.
  std::vector<std::shared_ptr<IcHostChannel>> List(const std::string& guest_id) const;

  void Add(const std::shared_ptr<IcHostChannel>& channel);
  void Remove(const IcHostChannel* channel);
  void Publish(v1::ProtocolEvent event) const;

 private:
  mutable Mutex mu_;
  std::function<void(v1::ProtocolEvent)> publish_ ABSL_GUARDED_BY(mu_);
  v1::IcSettings settings_ ABSL_GUARDED_BY(mu_) = DefaultIcSettings();
  absl::btree_map<std::pair<std::string, uint32_t>, std::shared_ptr<IcHostChannel>> channels_
      ABSL_GUARDED_BY(mu_);
};

// The IC device kinds (their class GUIDs are the Hyper-V ones, core/data/device_classes.h).
// Registers "heartbeat", "shutdown", "timesync" and "kvp" with `registry`, bound to `hub`.
absl::Status RegisterIcDevices(DeviceRegistry* registry, std::shared_ptr<IcHub> hub);

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_IC_HOST_H_
