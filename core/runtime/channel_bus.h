// ChannelBus: the guest's channel bus — the runtime a guest agent links.
//
// A ChannelBus wraps the no-I/O state machine (core/state/bus_state.h) with a Backend (the seam to
// the hypervisor or the mock host), threads and a clock:
//   - the executor (core/runtime/bus_executor.h, the same code the deterministic simulation drives)
//     takes every input in order — host messages, calls from drivers and applications, timer
//     expiries, the loss of the link — one at a time, and carries out BusState's actions in
//     list order (post messages, publish/unpublish channels, list offers, free GPADL memory,
//     complete waiting calls, arm timers). A host message runs on the backend's delivery thread
//     when the executor is idle (no thread hand-off for a reply); everything else, and the
//     executor's timers, on the bus's "vbus-control" thread (core/runtime/serial_runner.h).
//     Completion callbacks (OpenAsync, CloseAsync) run where the executor runs;
//   - drivers run on driver strands (core/runtime/driver_strands.h): Driver::Probe /
//     Driver::Remove and the on_offer / on_offer_removed callbacks of one device run in the
//     order its offer came and went, devices side by side on a pool of worker threads, so a
//     driver may block (an Open inside Probe waits for the host) without holding up the
//     executor, and holds up another device by about a millisecond at most (then that device
//     gets a worker of its own); on_host_lost runs after the removals it caused;
//   - event dispatch runs wherever the backend raises OnEventsPending (the mock backend's
//     doorbell thread, an interrupt handler): it scans the backend's receive event flags and
//     calls each signalled channel through the ChannelTable, with no lock and no allocation
//     (core/runtime/event_dispatch.h). At most one thread dispatches at a time; a raise that finds
//     another thread dispatching hands its work to that thread instead of waiting.
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
// called from a completion callback of OpenAsync/CloseAsync (the executor) or a dispatch
// callback — nor Connect, Shutdown and BindDrivers from a driver strand (Probe, Remove, the
// on_offer callbacks): there they return FailedPrecondition instead of deadlocking. A driver
// may call Channel's waiting calls (Open, Close, ...) from Probe and Remove.
//
// Lifetime: the Backend must outlive the bus (and a bus destroyed from its own thread must have
// finished its teardown: WaitForDeferredTeardowns); Channels handed out stay valid objects for
// as long as they are held, but become inert (FailedPrecondition) once the bus is destroyed.
#ifndef VBUS_CORE_RUNTIME_CHANNEL_BUS_H_
#define VBUS_CORE_RUNTIME_CHANNEL_BUS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "core/data/protocol.h"
#include "core/runtime/channel.h"
#include "core/runtime/driver.h"
#include "core/state/bus_state.h"

namespace vbus {

// ChannelBusOptions: fixed for a bus's life.
struct ChannelBusOptions {
  // Newest protocol version to negotiate (down to 2.4).
  uint32_t max_version = protocol::kNewestVersion;
  // An isolated (confidential) guest (docs/protocol.md §2, §4): versions below 5.2 are not
  // negotiated (max_version must be at least 5.2); offers of device classes such a guest does
  // not accept are refused and their relids given back, so no driver ever sees them (storage,
  // network, PCI pass-through, time sync, heartbeat, shutdown and hv_sock are accepted); ring
  // and GPADL memory is asked of the backend as PageSharing::kHostVisible.
  bool isolated = false;
  // Drivers to bind offers to (may be null: no drivers). Must outlive the bus.
  const DriverRegistry* drivers = nullptr;
  // A receive callback still running this long after its channel was closed or removed is
  // logged (callbacks must not block). The channel's close, its driver's Remove and its ring
  // memory wait for the callback however long it takes; nothing else does.
  absl::Duration retire_timeout = absl::Seconds(5);
  // A waiting call returns DeadlineExceeded by itself at its deadline plus this grace, even if
  // the executor is slow to report the expiry (a completion callback that blocks it).
  absl::Duration call_grace = absl::Seconds(2);
  // Deadline the destructor gives Shutdown.
  absl::Duration shutdown_timeout = absl::Seconds(10);
  // Resume: how long past the host's AllOffersDelivered to wait for devices that existed
  // before the suspend and have not been offered again (within Resume's deadline); those
  // still missing then are removed.
  absl::Duration resume_offer_wait = absl::Seconds(10);

  // Application callbacks, run on driver strands (they may block briefly and may call
  // blocking Channel methods): per device in event order, devices side by side:
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
  // The same, per virtual processor the backend takes events on (index = VP).
  std::vector<uint64_t> events_dispatched_per_vp;
  uint64_t spurious_events = 0;  // event bits for relids with no published channel
  uint64_t offers_added = 0;
  uint64_t offers_removed = 0;
  uint64_t offers_resumed = 0;    // devices offered again after a resume (same Channel object)
  uint64_t errors = 0;            // bus-level: failed publishes/retires, probe failures, ...
  uint64_t calls_undone = 0;      // results undone because their callers had given up
  uint64_t retires_deferred = 0;  // closes/removals that found a receive callback running
  ChannelStats channels;          // sum over channels
};

namespace internal {
class BusRuntime;
}  // namespace internal

class ChannelBus final {
 public:
  // Create
  // Starts `backend` (which must outlive the bus) with this bus as its listener and starts
  // the bus's threads. Does not contact the host yet (Connect does). Errors:
  // Backend::Start's (Unavailable: host unreachable), InvalidArgument for max_version < 2.4.
  static absl::StatusOr<std::unique_ptr<ChannelBus>> Create(Backend* backend,
                                                            ChannelBusOptions options);

  // Shuts down (Shutdown with options.shutdown_timeout) if not done, stops the backend and the
  // threads. Channels still held by the application become inert (FailedPrecondition).
  // Destroying the bus from one of its own threads (a driver's Probe or Remove, on_offer,
  // on_host_lost, a completion or receive callback) is allowed: the destructor then returns at
  // once and the shutdown finishes on a background thread. The backend must stay alive until
  // it has: WaitForDeferredTeardowns tells when.
  ~ChannelBus();
  ChannelBus(const ChannelBus&) = delete;
  ChannelBus& operator=(const ChannelBus&) = delete;

  // Connect
  // Negotiates a version (newest first, from max_version down to 2.4), requests the offers
  // and waits until the host has delivered them all and every driver matching them has been
  // probed (and the on_offer callbacks have run). Errors: FailedPrecondition (already
  // connected, host accepted no version, bus shut down, host lost), DeadlineExceeded (a
  // connection the host completes afterwards is dropped again), Unavailable (link lost
  // meanwhile).
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
  // problem met (the shutdown completes anyway). FailedPrecondition from the bus's own threads
  // (destroy the bus there instead).
  absl::Status Shutdown(absl::Time deadline);

  // ForceUnload
  // Unloads from the host with channels still open, as a guest does before a crash dump or a
  // kexec (docs/protocol.md §9): every channel stops dispatching at once (no receive callback
  // runs after it), calls waiting on channels complete (opens and GPADL creations fail with
  // Cancelled, closes succeed), the host is sent Unload and tears every channel and GPADL
  // down, and at its UnloadResponse every offer is removed: each driver's Remove and
  // on_offer_removed run (reason Cancelled) and ring and GPADL memory goes back to the backend
  // before this returns. The bus is then disconnected; Connect may run again. Errors:
  // FailedPrecondition (not connected, version below 3.0, called from the bus's own threads),
  // DeadlineExceeded (no UnloadResponse: the offers are dropped locally all the same).
  absl::Status ForceUnload(absl::Time deadline);

  // Suspend
  // Prepares the bus for a hibernation (docs/protocol.md §9). In order: every bound driver's
  // Suspend runs (on its strand; drivers close their channels, sub-channels first); channels
  // still open are closed and GPADLs still held torn down (logged); the bus unloads from the
  // host, which forgets every relid; host messages are then held back until Resume. Every
  // primary device keeps its Channel object, its driver binding and its driver's state;
  // sub-channels are removed (SubChannelRemoved). Offers() is empty while suspended and
  // Channel calls fail with FailedPrecondition. Errors:
  //   - FailedPrecondition: not connected, version below 3.0, called from the bus's threads;
  //   - a driver's Suspend failed (its error, naming the driver): the drivers already
  //     suspended are resumed and the bus stays connected;
  //   - a close or teardown failed (e.g. DeadlineExceeded): drivers are resumed, the bus stays
  //     connected;
  //   - DeadlineExceeded with no UnloadResponse: the bus is suspended all the same (the host
  //     stopped answering; Resume tries a new connection);
  //   - Unavailable: the link was lost; every device is removed.
  absl::Status Suspend(absl::Time deadline);

  // Resume
  // Reconnects after Suspend: negotiates exactly the version used before (a host that refuses
  // it fails the Resume with FailedPrecondition and the bus stays suspended; Resume may be
  // tried again), requests the offers and waits for AllOffersDelivered and for every primary
  // that existed before (up to options.resume_offer_wait past AllOffersDelivered). The host
  // may give each device a new relid, connection id and monitor id: a device is recognised by
  // its (type, instance), and its Channel object takes the new fields before any driver sees
  // them. Devices not offered again are removed (Remove, on_offer_removed with NotFound, and a
  // log line naming each); new ones are ordinary hot-adds (Probe). Then every resumed device's
  // driver Resume runs (its channel reopens under the new relid); driverless channels that
  // were open at the suspend are reopened with their last options. Returns OK once all that
  // ran; a driver's failing Resume is logged and counted and its error returned (the bus is
  // resumed all the same). DeadlineExceeded before a version was agreed leaves the bus
  // suspended; after it (no AllOffersDelivered in time) the bus is connected, the devices that
  // came back are resumed within options.call_grace past the deadline, and the others removed.
  absl::Status Resume(absl::Time deadline);

  // State (snapshots).
  BusPhase phase() const;
  uint32_t version() const;
  BusStats stats() const;

  // WaitForDeferredTeardowns
  // Waits until every bus destroyed from one of its own threads (in this process) has finished
  // its shutdown, so that their backends may go. DeadlineExceeded if one is still running.
  static absl::Status WaitForDeferredTeardowns(absl::Time deadline);

 private:
  explicit ChannelBus(std::shared_ptr<internal::BusRuntime> runtime);

  std::shared_ptr<internal::BusRuntime> runtime_;
};

}  // namespace vbus

#endif  // VBUS_CORE_RUNTIME_CHANNEL_BUS_H_
