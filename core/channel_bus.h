// ChannelBus: the guest's channel bus — the runtime a guest agent links.
//
// A ChannelBus wraps the no-I/O state machine (core/bus_state.h) with a Backend (the seam to
// the hypervisor or the mock host), threads and a clock:
//   - one control thread feeds BusState every input in order — host messages, calls from
//     drivers and applications, timer expiries, the loss of the link — and carries out the
//     resulting Actions in list order (post messages, publish/retire channels in the channel
//     table, list offers, free GPADL memory, complete waiting calls, arm timers);
//   - one driver thread runs Driver::Probe / Driver::Remove and the application's callbacks, in
//     the order the offers came and went, so drivers may block (an Open inside Probe waits for
//     the host while the control thread keeps going);
//   - event dispatch runs wherever the backend raises OnEventsPending (the mock backend's
//     doorbell thread, an interrupt handler): it scans the backend's receive event flags and
//     calls each signalled channel through the ChannelTable, with no lock and no allocation.
//     At most one thread dispatches at a time; a raise that finds another thread dispatching
//     hands its work to that thread instead of waiting.
//
// Example (a guest agent):
//   DriverRegistry drivers;
//   drivers.Register({"echo", kEchoClass, [](const OfferInfo&) {
//     return std::make_unique<EchoDriver>(); }});
//   ASSIGN_OR_RETURN(std::unique_ptr<MockBackend> backend, MockBackend::Dial(target, {}));
//   ChannelBusOptions options;
//   options.drivers = &drivers;
//   ASSIGN_OR_RETURN(std::unique_ptr<ChannelBus> bus, ChannelBus::Create(backend.get(), options));
//   RETURN_IF_ERROR(bus->Connect(absl::Now() + absl::Seconds(10)));  // drivers probed
//   for (const OfferInfo& offer : bus->Offers()) ...
//   std::shared_ptr<Channel> channel = bus->FindChannel(relid);
//   ...
//   bus->Shutdown(absl::Now() + absl::Seconds(10));  // closes, unloads, removes drivers
//
// Errors (from every waiting call): DeadlineExceeded (the host did not answer in time),
// Unavailable (the link to the host is gone, or the offer was rescinded), FailedPrecondition
// (not allowed in the current state, refused by the host, or the bus is shut down),
// InvalidArgument, NotFound, Cancelled — each with a message naming what happened.
//
// Thread safety: every public method may be called from any thread except where noted.
// Blocking methods (Connect, Shutdown, BindDrivers, and Channel's waiting calls) must not be
// called from the control thread (completion callbacks of OpenAsync/CloseAsync) or a dispatch
// callback — nor Shutdown and BindDrivers from the driver thread (Probe, Remove, the
// on_offer callbacks): there they return FailedPrecondition instead of deadlocking. A driver
// may call Channel's waiting calls (Open, Close, ...) from Probe and Remove.
//
// Lifetime: the Backend must outlive the bus; Channels handed out stay valid objects for as
// long as they are held, but become inert (FailedPrecondition) once the bus is destroyed.
#ifndef VBUS_CORE_CHANNEL_BUS_H_
#define VBUS_CORE_CHANNEL_BUS_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "core/bus_actions.h"
#include "core/bus_state.h"
#include "core/channel.h"
#include "core/channel_table.h"
#include "core/driver.h"
#include "core/event_page.h"
#include "core/protocol.h"
#include "core/sync.h"
#include "core/work_queue.h"

namespace vbus {

// ChannelBusOptions: fixed for a bus's life.
struct ChannelBusOptions {
  // Newest protocol version to negotiate (down to 2.4).
  uint32_t max_version = protocol::kNewestVersion;
  // Drivers to bind offers to (may be null: no drivers). Must outlive the bus.
  const DriverRegistry* drivers = nullptr;
  // How long a retire may wait for a dispatch callback still running on the channel (a
  // callback that blocks longer is a driver bug; it is logged and the channel's ring memory is
  // kept until the bus is destroyed).
  absl::Duration retire_timeout = absl::Seconds(5);
  // A waiting call returns DeadlineExceeded by itself at its deadline plus this grace, even if
  // the control thread is slow to report the expiry.
  absl::Duration call_grace = absl::Seconds(2);
  // Deadline the destructor gives Shutdown.
  absl::Duration shutdown_timeout = absl::Seconds(10);

  // Application callbacks, run on the driver thread in event order (they may block briefly
  // and may call blocking Channel methods):
  // a new offer (at connect or hot-added), after the driver registry had its chance;
  std::function<void(const std::shared_ptr<Channel>&)> on_offer;
  // an offer went away (rescinded, link lost, unloaded), after its driver's Remove;
  std::function<void(const OfferInfo&, const absl::Status&)> on_offer_removed;
  // the link to the host was lost.
  std::function<void(const absl::Status&)> on_host_lost;
  // Log lines (errors and notable events), from any thread; empty = stderr.
  std::function<void(absl::string_view)> log;
};

// BusStats: counters of the whole bus. Channel figures are summed over every channel the
// bus has had (released ones included).
struct BusStats {
  uint64_t messages_sent = 0;        // control messages posted to the host
  uint64_t messages_received = 0;    // control messages from the host
  uint64_t host_inputs_ignored = 0;  // host messages BusState refused (see BusCounters)
  uint64_t post_failures = 0;
  uint64_t events_raised = 0;      // OnEventsPending calls from the backend
  uint64_t events_dispatched = 0;  // channel callbacks run by dispatch
  uint64_t spurious_events = 0;    // event bits for relids with no published channel
  uint64_t offers_added = 0;
  uint64_t offers_removed = 0;
  uint64_t errors = 0;    // bus-level: failed publishes/retires, probe failures, ...
  ChannelStats channels;  // sum over channels
};

class ChannelBus final : public BackendListener {
 public:
  // Create
  // Starts `backend` (which must outlive the bus) with this bus as its listener and starts
  // the control and driver threads. Does not contact the host yet (Connect does). Errors:
  // Backend::Start's (Unavailable: host unreachable), InvalidArgument for max_version < 2.4.
  static absl::StatusOr<std::unique_ptr<ChannelBus>> Create(Backend* backend,
                                                            ChannelBusOptions options);

  // Shuts down (Shutdown with options.shutdown_timeout) if not done, stops the backend and the
  // threads. Channels still held by the application become inert (FailedPrecondition).
  ~ChannelBus() override;
  ChannelBus(const ChannelBus&) = delete;
  ChannelBus& operator=(const ChannelBus&) = delete;

  // Connect
  // Negotiates a version (newest first, from max_version down to 2.4), requests the offers
  // and waits until the host has delivered them all and every driver matching them has been
  // probed (and the on_offer callbacks have run). Errors: FailedPrecondition (already
  // connected, host accepted no version, bus shut down, host lost), DeadlineExceeded,
  // Unavailable (link lost meanwhile).
  absl::Status Connect(absl::Time deadline);

  // Offers: the host's active offers, by relid (a snapshot).
  std::vector<OfferInfo> Offers() const;

  // The channel of an active (or removed but not yet released) offer; nullptr if none.
  std::shared_ptr<Channel> GetChannel(OfferId offer) const;
  // The channel of the active offer holding `relid`; nullptr if none.
  std::shared_ptr<Channel> FindChannel(uint32_t relid) const;
  // The channel of the active offer with this instance and sub-channel index; nullptr if none.
  std::shared_ptr<Channel> FindChannel(const Guid& instance, uint16_t sub_channel_index = 0) const;

  // Devices: every listed offer with its driver binding (DeviceList::List).
  std::vector<DeviceEntry> Devices() const;

  // BindDrivers
  // Probes drivers for listed offers that had none when they arrived (after a late
  // DriverRegistry::Register). Waits until those probes ran, or DeadlineExceeded.
  absl::Status BindDrivers(absl::Time deadline);

  // Shutdown
  // Closes every open channel, unloads from the host (from version 3.0; below, or if the
  // unload fails, the offers are dropped locally), removes every driver, stops the backend and
  // the threads. Later calls fail with FailedPrecondition. Idempotent; returns the first
  // problem met (the shutdown completes anyway).
  absl::Status Shutdown(absl::Time deadline);

  // State (snapshots).
  BusPhase phase() const { return phase_.load(std::memory_order_relaxed); }
  uint32_t version() const { return version_.load(std::memory_order_relaxed); }
  BusStats stats() const;

  // ---- BackendListener (called by the backend) -----------------------------------------
  void OnHostMessage(const v1::ControlMessage& message) override;
  void OnEventsPending() override;
  void OnHostLost(const absl::Status& status) override;

 private:
  friend class Channel;

  // What a waiting call gets back.
  struct CallResult {
    absl::Status status;
    uint32_t gpadl = 0;
    uint32_t version = 0;
  };
  // Runs on the control thread with the call's result.
  using CallDone = std::function<void(const CallResult&)>;
  // Starts a call on the control thread (usually a BusState call): returns its RequestId,
  // an invalid RequestId for "finished OK already", or a Status for "failed already".
  using CallStart = std::function<absl::StatusOr<RequestId>(Actions*)>;

  // A caller's wait for a CallResult.
  class Waiter {
   public:
    void Finish(CallResult result);
    // True with *out set if finished by `deadline`.
    bool Wait(absl::Time deadline, CallResult* out);

   private:
    Mutex mu_;
    CondVar cv_;
    bool done_ ABSL_GUARDED_BY(mu_) = false;
    CallResult result_ ABSL_GUARDED_BY(mu_);
  };

  ChannelBus(Backend* backend, ChannelBusOptions options);
  absl::Status Start();

  // ---- Threads ----
  void ControlLoop();
  void DriverLoop();
  // Queues work for the control / driver thread. False (work dropped) once that thread stopped.
  bool PostControl(std::function<void()> work);
  bool PostDriver(std::function<void()> work);
  bool OnControlThread() const;
  bool OnDriverThread() const;

  // ---- Calls ----
  // Runs `start` on the control thread and `done` there with the result (or with the start's
  // error; with FailedPrecondition on the calling thread if the bus is stopped).
  // `barrier_drivers`: `done` runs (on the driver thread) only after the driver thread has
  // finished the work queued before the completion.
  void StartCall(CallStart start, CallDone done, bool barrier_drivers = false);
  // Waits for `waiter` until deadline + call_grace.
  CallResult AwaitWaiter(Waiter& waiter, absl::Time deadline, absl::string_view what);
  // StartCall + AwaitWaiter; `on_control` (may be empty) runs on the control thread first.
  CallResult AwaitCall(CallStart start, CallDone on_control, absl::Time deadline,
                       absl::string_view what, bool barrier_drivers = false);
  // FailedPrecondition if a blocking call would deadlock on this thread.
  absl::Status CheckBlockingAllowed(absl::string_view what) const;

  // ---- Control thread only ----
  void Execute(Actions actions);
  void ExecuteOne(Action& action, Actions* more);
  void FireTimers();
  void UpdateMirrors();
  void ReleaseOffer(OfferId offer, Actions* out);
  std::shared_ptr<Channel> ChannelOf(OfferId offer) const;
  // The control-thread halves of Channel's calls.
  absl::StatusOr<RequestId> StartOpen(const std::shared_ptr<Channel>& channel,
                                      const ChannelOpenOptions& options, absl::Time deadline,
                                      Actions* out);
  void FinishOpen(const std::shared_ptr<Channel>& channel, const absl::Status& status);
  absl::StatusOr<RequestId> StartClose(const std::shared_ptr<Channel>& channel, absl::Time deadline,
                                       Actions* out);
  absl::StatusOr<RequestId> StartCreateGpadl(const std::shared_ptr<Channel>& channel,
                                             size_t page_count, absl::Time deadline,
                                             GpadlBuffer* buffer, Actions* out);
  // Shutdown steps.
  absl::Status CloseAllChannels(absl::Time deadline);
  // Waits until the control and driver threads have done everything queued before this call,
  // including the offer releases that driver removals queue back.
  absl::Status Quiesce(absl::Time deadline);

  // ---- Driver thread only ----
  void AddDevice(const OfferInfo& offer, const std::shared_ptr<Channel>& channel);
  void ProbeDevice(const OfferInfo& offer, const DriverSpec* spec,
                   const std::shared_ptr<Channel>& channel);
  void RemoveDevice(const OfferInfo& offer, const absl::Status& reason);

  void Log(absl::string_view line) const;

  Backend* const backend_;
  const ChannelBusOptions options_;

  // Event dispatch (any thread; see OnEventsPending). The dispatcher is used by one thread at a
  // time: the one that holds dispatching_.
  ChannelTable table_;
  std::optional<EventPage> event_page_;
  std::optional<ChannelTable::Dispatcher> dispatcher_;
  std::atomic<bool> events_ready_{false};
  std::atomic<bool> dispatching_{false};
  std::atomic<bool> dispatch_pending_{false};

  // Control thread state (touched only on the control thread once it runs).
  std::optional<BusState> state_;
  std::map<RequestId, CallDone> waiters_;
  std::multimap<absl::Time, RequestId> timer_queue_;
  std::map<RequestId, std::multimap<absl::Time, RequestId>::iterator> timers_;
  std::map<OfferId, std::shared_ptr<Channel>> channels_;  // offers not yet released
  // Memory the host may map, filed under its GPADL handle until ReleaseGpadl, and its offer.
  std::map<uint32_t, Pages> gpadl_memory_;
  std::map<uint32_t, OfferId> gpadl_offer_;
  // Offers whose retire timed out (a callback still ran): their memory is kept until the end.
  std::vector<OfferId> stuck_offers_;
  std::vector<Pages> quarantined_memory_;
  uint64_t ignored_logged_ = 0;

  // Queues.
  WorkQueue<std::function<void()>> control_queue_;
  WorkQueue<std::function<void()>> driver_queue_;
  std::thread control_thread_;
  std::thread driver_thread_;
  std::atomic<std::thread::id> control_thread_id_{};
  std::atomic<std::thread::id> driver_thread_id_{};

  // Driver-thread state, readable under devices_mu_.
  DriverRegistry no_drivers_;
  mutable Mutex devices_mu_;
  DeviceList devices_ ABSL_GUARDED_BY(devices_mu_);

  // Mirrors for other threads (written on the control thread).
  mutable Mutex mirror_mu_;
  std::map<OfferId, OfferInfo> offers_ ABSL_GUARDED_BY(mirror_mu_);
  std::map<OfferId, std::shared_ptr<Channel>> channel_mirror_ ABSL_GUARDED_BY(mirror_mu_);
  ChannelStats released_channel_stats_ ABSL_GUARDED_BY(mirror_mu_);
  uint64_t host_inputs_ignored_ ABSL_GUARDED_BY(mirror_mu_) = 0;
  std::atomic<BusPhase> phase_{BusPhase::kDisconnected};
  std::atomic<uint32_t> version_{0};

  // Lifecycle. shutdown_mu_ serialises Shutdown; the flags say how far it got.
  Mutex shutdown_mu_;
  std::atomic<bool> shut_down_{false};
  std::atomic<bool> host_lost_{false};

  // Counters (relaxed: statistics).
  std::atomic<uint64_t> messages_sent_{0};
  std::atomic<uint64_t> messages_received_{0};
  std::atomic<uint64_t> post_failures_{0};
  std::atomic<uint64_t> events_raised_{0};
  std::atomic<uint64_t> events_dispatched_{0};
  std::atomic<uint64_t> offers_added_{0};
  std::atomic<uint64_t> offers_removed_{0};
  std::atomic<uint64_t> errors_{0};
};

}  // namespace vbus

#endif  // VBUS_CORE_CHANNEL_BUS_H_
