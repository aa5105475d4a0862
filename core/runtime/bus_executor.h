// BusExecutor: the control side of a guest's channel bus, with no threads of its own.
//
// BusState (core/state/bus_state.h) decides; the executor carries out its decisions against the
// real world and feeds the consequences back: it posts messages through the Backend, publishes
// channels in the ChannelTable and unpublishes them, files the memory each GPADL describes and
// frees it when the host lets go, attaches and detaches channels' rings, completes callers, runs
// timers, and hands new and removed offers to its listener (the runtime's drivers). Every input
// arrives on one thread at a time — whatever thread the owner runs it on:
//   - ChannelBus (core/runtime/channel_bus.h) runs it on its control thread, with real time;
//   - the deterministic simulation (test/sim) runs it in scheduled steps, with virtual time.
// Both therefore run the same code; the simulation's seeds check what users run.
//
// What the executor guarantees beyond BusState:
//   - Receive quiescence. A channel that BusState retires is unpublished at once (no new event
//     reaches it), but a receive callback may still be running. Until ChannelTable::InUse says
//     no dispatcher delivers to it and no poller holds it, the channel keeps its inbound ring
//     and callback, the ring memory of its GPADLs is held back (a ReleaseGpadl only files it),
//     a Close of it does not complete and its OfferRemoved is not passed on (so the driver's
//     Remove never races its own callback). The executor checks again at increasing intervals
//     (next_wakeup()) and logs a callback that has run longer than `stall_report`. Nothing
//     else waits: a slow callback holds up only its own channel.
//   - Truthful calls. A call is claimed before its result is applied (CallDone). If the caller
//     gave up first, the result is undone instead: an open that succeeded is closed, a GPADL
//     that was created is torn down, a channel that moved to another VP is moved back, a
//     connection that came too late is dropped.
//   - A failed publish fails the open: the OpenChannel that BusState queued behind the publish
//     is not sent, the open completes with the error and its ring GPADL is torn down.
//
// Example (a runtime's control loop):
//   BusExecutor executor(backend, &table, &link, &listener, config, options);
//   for (;;) {
//     WaitForWorkUntil(executor.next_wakeup());
//     ... executor.OnHostMessage(message); ... executor.Open(channel, opts, deadline, done);
//     executor.RunDue();
//   }
//
// Thread safety: the inputs (everything but the snapshots) must be serialised by the owner.
// The snapshot accessors (Offers, GetChannel, FindChannel, phase, version, counters) may be
// called from any thread.
#ifndef VBUS_CORE_RUNTIME_BUS_EXECUTOR_H_
#define VBUS_CORE_RUNTIME_BUS_EXECUTOR_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "backends/pages.h"
#include "core/data/channel_table.h"
#include "core/runtime/call_ticket.h"
#include "core/runtime/channel.h"
#include "core/runtime/runtime_internal.h"
#include "core/runtime/sync.h"
#include "core/state/bus_actions.h"
#include "core/state/bus_state.h"

namespace vbus {

// BusConfigFor
// The state machine's configuration for a backend's contact facts, offering versions up to
// `max_version`.
BusConfig BusConfigFor(const ContactInfo& contact, uint32_t max_version);

struct ExecutorOptions {
  // A receive callback still running this long after its channel was retired is logged.
  absl::Duration stall_report = absl::Seconds(5);
  // Deadline of the close, teardown or modify that undoes a call its caller gave up on.
  absl::Duration undo_deadline = absl::Seconds(10);
  // What ring and GPADL pages are asked of the backend as (kHostVisible for isolated guests).
  PageSharing page_sharing = PageSharing::kDefault;
  // Tests only: where to plant deliberate bugs (core/runtime/runtime_internal.h); handed to every
  // Channel too.
  FaultPoint fault;
};

// ExecutorListener: what the executor tells its owner (on the executor's thread).
class ExecutorListener {
 public:
  virtual ~ExecutorListener() = default;
  // The current time (real or virtual).
  virtual absl::Time Now() = 0;
  // A new offer and its channel (at connect or hot-added).
  virtual void OfferAdded(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) = 0;
  // The offer is gone (rescinded, link lost, unloaded) and no callback of its channel runs
  // any more. The owner calls BusExecutor::ReleaseOffer(offer.id) once its driver let go.
  virtual void OfferRemoved(const OfferInfo& offer, const std::shared_ptr<Channel>& channel,
                            const absl::Status& reason) = 0;
  // After a resume the host offered a parked primary again (under offer.relid, maybe a new
  // one): `channel` is the same object as before the suspend, closed, already carrying the
  // new fields.
  virtual void OfferResumed(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) = 0;
  // A log line (host text in it already escaped).
  virtual void Log(absl::string_view line) = 0;
};

// ExecutorCounters: what the executor counted (relaxed snapshots).
struct ExecutorCounters {
  uint64_t messages_sent = 0;
  uint64_t messages_received = 0;
  uint64_t host_inputs_ignored = 0;
  uint64_t post_failures = 0;
  uint64_t offers_added = 0;
  uint64_t offers_removed = 0;
  uint64_t offers_resumed = 0;
  uint64_t errors = 0;
  uint64_t calls_undone = 0;       // results undone because their callers gave up
  uint64_t deferred_retires = 0;   // retires that found a callback or poller still running
  ChannelStats released_channels;  // summed over channels already released
};

class BusExecutor {
 public:
  // `backend`, `table`, `link` (handed to every Channel) and `listener` must outlive the
  // executor. The backend must be started.
  BusExecutor(Backend* backend, ChannelTable* table, ChannelLink* link, ExecutorListener* listener,
              BusConfig config, ExecutorOptions options);
  ~BusExecutor();
  BusExecutor(const BusExecutor&) = delete;
  BusExecutor& operator=(const BusExecutor&) = delete;

  // ---- Inputs ---------------------------------------------------------------------------
  void OnHostMessage(const v1::ControlMessage& message);
  void OnLinkLost(const absl::Status& status);
  // Fires the timers that are due, re-checks retiring channels, expires held completions.
  void RunDue();
  // When RunDue has work next (InfiniteFuture: nothing scheduled).
  absl::Time next_wakeup() const;

  // ---- Calls: each finishes `done` exactly once (maybe before returning) -----------------
  void Connect(absl::Time deadline, CallDone done);
  void Open(const std::shared_ptr<Channel>& channel, const ChannelOpenOptions& options,
            absl::Time deadline, CallDone done);
  void Close(const std::shared_ptr<Channel>& channel, absl::Time deadline, CallDone done);
  void CreateGpadl(const std::shared_ptr<Channel>& channel, size_t page_count, absl::Time deadline,
                   CallDone done);
  void TeardownGpadl(const std::shared_ptr<Channel>& channel, uint32_t handle, absl::Time deadline,
                     CallDone done);
  void ModifyChannel(const std::shared_ptr<Channel>& channel, uint32_t target_vp,
                     absl::Time deadline, CallDone done);
  void Unload(absl::Time deadline, CallDone done, UnloadMode mode = UnloadMode::kOrderly);
  // Closes every open or opening channel, sub-channels first; finishes with the first failure
  // (OK if none).
  void CloseAll(absl::Time deadline, CallDone done);
  // Suspend (bus_executor_suspend.cc): closes every channel (sub-channels first), tears down
  // GPADLs still held, and unloads in UnloadMode::kSuspend: the primaries are parked for
  // Resume. Finishes with the first failure. Call NoteSuspend first.
  void Suspend(absl::Time deadline, CallDone done);
  // NoteSuspend: records each channel's open state (Channel::open_at_suspend), before anything
  // closes them (the runtime calls it before its drivers' Suspend).
  void NoteSuspend();
  // Resume: BusState::Resume; finishes at AllOffersDelivered with the version. Re-offered
  // primaries come back through ExecutorListener::OfferResumed. A resume whose caller gave up
  // is kept (not undone): the parked offers would be lost with the connection.
  void Resume(absl::Time deadline, CallDone done);
  // DropParked: removes every offer a resume did not bring back (OfferRemoved with `why`).
  void DropParked(const absl::Status& why);
  // Tears down every created non-ring GPADL; finishes with the first failure.
  void TeardownAllGpadls(absl::Time deadline, CallDone done);
  // Ends the connection locally (no message to the host): every offer is removed with
  // `reason`, every waiting call fails.
  void Disconnect(const absl::Status& reason);
  // The owner is done with a removed offer (its driver let go): RelidReleased, its GPADLs
  // released, its channel forgotten.
  void ReleaseOffer(OfferId offer);

  // Stop
  // The end: call only after the backend stopped (no dispatch runs). Every waiting call
  // completes with Cancelled, every channel is detached and forgets the bus, all memory is
  // freed. The executor takes no more input.
  void Stop();

  // ---- Snapshots (any thread) -------------------------------------------------------------
  std::vector<OfferInfo> Offers() const;
  std::shared_ptr<Channel> GetChannel(OfferId offer) const;
  std::shared_ptr<Channel> FindChannel(uint32_t relid) const;
  std::shared_ptr<Channel> FindChannel(const Guid& instance, uint16_t sub_channel_index) const;
  // Every channel not yet released (for statistics).
  std::vector<std::shared_ptr<Channel>> Channels() const;
  BusPhase phase() const { return phase_.load(std::memory_order_relaxed); }
  uint32_t version() const { return version_.load(std::memory_order_relaxed); }
  ExecutorCounters counters() const;

  // ---- For the simulation's checks (executor thread) -------------------------------------
  const BusState& state() const { return state_; }
  // Offers whose channel is retired but still has a callback, a poller or memory to let go.
  std::vector<OfferId> RetiringOffers() const;
  // Whether GPADL memory is filed (or held back) under `handle`.
  bool HoldsGpadlMemory(uint32_t handle) const;

 private:
  // A call waiting for its Complete action.
  struct PendingCall {
    RequestKind kind = RequestKind::kConnect;
    std::shared_ptr<Channel> channel;
    CallDone done;
    absl::Time deadline;
    uint32_t previous_vp = 0;  // ModifyChannel: where to move back to
    bool resume = false;       // a kConnect that is a Resume: never undone
  };
  // GPADL memory the host may map, filed under its handle until its ReleaseGpadl.
  struct FiledMemory {
    Pages pages;
    OfferId offer;
  };
  // A close that completed while its channel's receive side was still retiring.
  struct HeldClose {
    CallDone done;
    CallResult result;
    absl::Time deadline;
  };
  // A channel that was retired (or failed to open) and still has a receive side to let go.
  struct Retiring {
    std::shared_ptr<Channel> channel;
    uint32_t relid = 0;
    bool published = false;  // was in the table: wait for ChannelTable::InUse
    absl::Time since;
    bool reported = false;
    std::vector<Pages> held_memory;  // released GPADLs of the offer
    std::vector<HeldClose> held_closes;
    std::optional<absl::Status> held_removal;  // OfferRemoved waiting to be passed on
  };

  // Carrying out actions.
  void Execute(Actions actions);
  void ExecuteOne(Action& action, Actions* more);
  void Post(const SendMessage& send, Actions* more);
  // InvalidArgument unless the backend takes events on `target_vp`.
  absl::Status CheckTargetVp(absl::string_view what, uint32_t target_vp) const;
  void Publish(const PublishChannel& publish, Actions* more);
  void Added(const OfferAdded& added);
  void Removed(const OfferRemoved& removed, Actions* more);
  void Parked(const OfferParked& parked);
  void Resumed(const OfferResumed& resumed);
  void Released(const ReleaseGpadl& release);
  void Completed(const Complete& complete, Actions* more);
  void Ignored(const InputIgnored& ignored);
  // Registers a call (before its actions run: its Complete may be among them).
  void Track(RequestId id, PendingCall call);

  // Undoing what an abandoned call did (bus_executor_undo.cc). An undo whose message could not
  // be posted (ResourceExhausted: host buffers full) is tried again after a back-off, a few
  // times, so that an abandoned GPADL or move does not stay behind for good.
  struct UndoStep {
    RequestKind kind = RequestKind::kGpadlTeardown;  // kGpadlTeardown, kClose, kModifyChannel
    OfferId offer;
    uint32_t gpadl = 0;      // kGpadlTeardown
    uint32_t target_vp = 0;  // kModifyChannel
    int attempts = 0;
  };
  void Undo(const PendingCall& call, const Complete& complete, Actions* more);
  void StartUndo(UndoStep step, Actions* more);
  void UndoCompleted(const Complete& complete);
  void RetryUndos(absl::Time now);
  // Teardowns BusState could not post (unsent_teardowns): sent again after a back-off that
  // doubles up to a second while posts keep failing.
  void ScheduleTeardownRetry();
  void RetryTeardowns(absl::Time now);

  // Receive quiescence (bus_executor_retire.cc).
  void BeginRetire(const std::shared_ptr<Channel>& channel, uint32_t relid, bool published,
                   const absl::Status& why);
  // Lets go of the receive side if nothing uses it any more; true when the entry is done.
  bool TryFinishRetire(OfferId offer, Retiring& entry);
  void RecheckRetiring();
  void ExpireHeldCloses(absl::Time now);
  void ReportStalls(absl::Time now);
  // `pages` are freed now, or held until `offer`'s retire is done.
  void FreeOrHold(OfferId offer, Pages pages);

  void FireTimers(absl::Time now);
  void UpdateMirrors();
  std::shared_ptr<Channel> ChannelOf(OfferId offer) const;
  bool Planted(PlantedFault fault) const { return options_.fault && options_.fault(fault); }
  void Error(absl::string_view line);

  Backend* const backend_;
  ChannelTable* const table_;
  ChannelLink* const link_;
  ExecutorListener* const listener_;
  const ExecutorOptions options_;
  BusState state_;
  bool stopped_ = false;

  std::map<RequestId, PendingCall> calls_;
  std::multimap<absl::Time, RequestId> timer_queue_;
  std::map<RequestId, std::multimap<absl::Time, RequestId>::iterator> timers_;
  std::map<OfferId, std::shared_ptr<Channel>> channels_;  // offers not yet released
  std::map<uint32_t, FiledMemory> gpadl_memory_;
  std::map<OfferId, uint32_t> target_vp_;  // of open channels
  std::map<OfferId, Retiring> retiring_;
  absl::Time next_retire_check_ = absl::InfiniteFuture();
  absl::Duration retire_backoff_;
  // A post or publish failed in the Execute call now running: BusState undid requests, so
  // every later SendMessage of the call is checked with BusState::PostWanted.
  bool undone_in_pass_ = false;
  uint64_t ignored_logged_ = 0;
  std::map<RequestId, UndoStep> undoing_;             // undo requests in flight
  std::multimap<absl::Time, UndoStep> undo_retries_;  // undos waiting to be tried again
  absl::Time teardown_retry_at_ = absl::InfiniteFuture();
  absl::Duration teardown_backoff_;

  // Snapshots for other threads (written on the executor's thread).
  mutable Mutex mirror_mu_;
  std::map<OfferId, OfferInfo> offers_ ABSL_GUARDED_BY(mirror_mu_);
  std::map<OfferId, std::shared_ptr<Channel>> channel_mirror_ ABSL_GUARDED_BY(mirror_mu_);
  ChannelStats released_stats_ ABSL_GUARDED_BY(mirror_mu_);
  std::atomic<BusPhase> phase_{BusPhase::kDisconnected};
  std::atomic<uint32_t> version_{0};
  struct Counters {
    std::atomic<uint64_t> messages_sent{0};
    std::atomic<uint64_t> messages_received{0};
    std::atomic<uint64_t> host_inputs_ignored{0};
    std::atomic<uint64_t> post_failures{0};
    std::atomic<uint64_t> offers_added{0};
    std::atomic<uint64_t> offers_removed{0};
    std::atomic<uint64_t> offers_resumed{0};
    std::atomic<uint64_t> errors{0};
    std::atomic<uint64_t> calls_undone{0};
    std::atomic<uint64_t> deferred_retires{0};
  };
  Counters counters_;
};

}  // namespace vbus

#endif  // VBUS_CORE_RUNTIME_BUS_EXECUTOR_H_
