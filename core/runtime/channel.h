// Channel: one offered VMBus channel as a driver sees it — open, send, receive, close.
//
// A Channel belongs to a ChannelBus (core/runtime/channel_bus.h), which creates one for every offer
// the host makes and hands it to the matching driver's Probe (or to whoever asks the bus).
// Opening allocates both rings from the backend's host-reachable memory (outbound = guest →
// host first, then inbound, in one GPADL), publishes the channel in the bus's channel table and
// asks the host to open it; from then on packets move through the rings in shared memory with
// no control message per packet.
//
// Sending: Send / SendGather write one in-band packet (gathered from pieces: no temporary
// buffer); SendRequest also asks the host for a completion and calls a CompletionCallback when
// it arrives (or fails); SendGpaDirect describes guest pages instead of copying data;
// SendCompletion answers a host request. Transaction ids are slot indexes (see
// core/runtime/transaction_table.h), never pointers; completions with unknown or stale ids are
// counted and dropped. When the outbound ring is full, a send waits for room until
// SendOptions::deadline (arming pending_send_sz so the host signals when it has drained), or
// returns ResourceExhausted at once with the default deadline.
//
// Signals are batched twice: the ring itself says whether the host needs a signal (only when
// the ring goes from empty to non-empty while the host is not draining), and
// SendOptions::more appends packets without publishing them until the next send without
// `more` (or Flush), which publishes the batch with one index store and at most one signal.
//
// Receiving, in one of two modes chosen at Open:
//   - callback mode (ChannelOpenOptions::on_packet set): the bus's dispatcher drains the
//     inbound ring when the host signals and calls on_packet for each data packet, zero-copy.
//     It runs on the dispatching thread (the backend's interrupt or doorbell thread) and must
//     not block; hand longer work to an executor. Completions are matched there too.
//   - polling mode (no on_packet): the host's signal only wakes pollers; Poll / Receive drain
//     the ring on the caller's thread (completions are matched there as well).
//
// Example (a driver's Probe):
//   absl::Status Probe(Channel& channel) override {
//     ChannelOpenOptions options;
//     options.on_packet = [this](const PacketView& p) { Handle(p.payload()); };
//     return channel.Open(options, absl::Now() + absl::Seconds(5));
//   }
//   ...
//   absl::Status sent = channel.Send(bytes);                         // fire and forget
//   absl::StatusOr<uint64_t> id = channel.SendRequest(pieces, [](const Completion& c) {...});
//   absl::StatusOr<std::vector<uint8_t>> answer = channel.Call(bytes, deadline);  // blocking
//   absl::Status closed = channel.Close(absl::Now() + absl::Seconds(5));
//
// A receive callback that is still running when its channel is closed or removed holds up only
// that channel: the close completes, the driver's Remove runs and the ring memory is freed only
// after the callback has returned (no callback of the channel runs after Close returns OK);
// every other channel goes on meanwhile. A channel delivers at most ChannelOpenOptions::
// drain_budget packets per turn, so a host that keeps one ring full cannot starve the others.
//
// Calls that wait give up at their deadline (plus the bus's grace, if the bus is slow to
// answer), and what a call that gave up started is undone (an open that completes after its
// caller gave up is closed again, a GPADL created too late is torn down): the status a caller
// gets is the truth.
//
// Thread safety: every method may be called from any thread, concurrently (sends are
// serialised by the channel). Blocking calls (Open, Close, CreateGpadl, TeardownGpadl,
// SetTargetVp, Call, Receive, WaitForPackets, and sends with a future deadline) return
// FailedPrecondition instead of blocking when called from a dispatch callback; Open, Close,
// CreateGpadl, TeardownGpadl, SetTargetVp, Poll, Receive and WaitForPackets do so from this
// channel's own Poll callback (the Async forms work there). A Channel stays a valid object as
// long as someone holds its shared_ptr; once its offer is removed (rescind, link lost, unload)
// every call fails, and once the bus is destroyed every call returns FailedPrecondition.
#ifndef VBUS_CORE_RUNTIME_CHANNEL_H_
#define VBUS_CORE_RUNTIME_CHANNEL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "backends/backend.h"
#include "core/data/channel_table.h"
#include "core/data/ring_buffer.h"
#include "core/runtime/call_ticket.h"
#include "core/runtime/runtime_internal.h"
#include "core/runtime/sync.h"
#include "core/runtime/transaction_table.h"
#include "core/state/bus_state.h"
#include "core/state/offer_validation.h"

namespace vbus {

class BusExecutor;

// ChannelLink
// How a Channel reaches the control side of its bus: the ChannelBus runtime (its control
// thread) or a simulation (a scheduled step). Implemented by whoever owns the BusExecutor.
class ChannelLink {
 public:
  virtual ~ChannelLink() = default;
  // Runs `work` on the executor, in order with the bus's other inputs. False (not run, and
  // never will be) once the bus takes no more work.
  virtual bool Post(std::function<void(BusExecutor&)> work) = 0;
  // FailedPrecondition naming why, if a call that waits for the executor would deadlock on the
  // calling thread (inside the executor, a dispatch callback); OK otherwise.
  virtual absl::Status CheckBlockingAllowed(absl::string_view what) const = 0;
  // How long past its deadline a waiting call keeps waiting for a slow executor.
  virtual absl::Duration call_grace() const = 0;
  // A log line (host text in it already escaped).
  virtual void Log(absl::string_view line) const = 0;
};

// CallAndWait
// Runs `start` on `link`'s executor with a CallDone and waits for the result until `deadline`
// plus the link's grace; a caller that gives up abandons the call (the executor undoes it) and
// gets DeadlineExceeded naming `what`. FailedPrecondition if the bus takes no more work. Does
// not check whether blocking is allowed on the calling thread (callers do).
CallResult CallAndWait(ChannelLink& link, absl::string_view what, absl::Time deadline,
                       std::function<void(BusExecutor&, CallDone)> start);

// ChannelOpenOptions: how to open a channel.
struct ChannelOpenOptions {
  // Pages of each ring, its 4096-byte control page included (at least 2: one data page).
  uint32_t outbound_ring_pages = 16;  // guest → host
  uint32_t inbound_ring_pages = 16;   // host → guest
  // Virtual processor for the channel's interrupts.
  uint32_t target_vp = 0;
  // Device-defined bytes sent in OpenChannel (at most 120).
  std::string user_data;
  // Callback mode: called for each data packet (anything but a completion), on the
  // dispatching thread; the view is valid only during the call. Empty = polling mode.
  std::function<void(const PacketView&)> on_packet;
  // Requests that may wait for completions at once (transaction slots, 1..65536). A channel
  // keeps the table of its first open (ids stay unique across opens).
  uint32_t max_outstanding_requests = 256;
  // Callback mode: packets handled per delivery before the other signalled channels get their
  // turn (1..65536); the rest are handled on the dispatcher's next pass.
  uint32_t drain_budget = 64;
  // Map each ring a second time with its data area twice, back to back, when the backend can
  // (Backend::MapRingMirrored): a packet that wraps around the ring's end is then copied in one
  // piece and received without the scratch copy. For channels that move many large packets:
  // the mappings cost five system calls per ring at open and close (an unmap also makes every
  // CPU of the process drop the stale translations), which halves the rate of a burst of opens
  // and closes of small channels (docs/performance.md). Backends that cannot mirror keep the
  // single mapping whatever this says.
  bool mirrored_rings = false;
  // Adaptive send batching, for applications that send one packet at a time. When the last
  // signal decision found the host draining the outbound ring (interrupt_mask set), up to
  // `send_batch_packets` - 1 following sends publish their packet at once but leave the
  // decision — a full barrier and two loads of the host's fields, most of a small send's cost —
  // to a later send, which makes it for all of them. A host that is draining finds those
  // packets in the re-check it makes before it sleeps; for one that went idle in between, the
  // decision (and the signal) comes at the latest `send_batch_delay` after the first undecided
  // packet. A host found idle is signalled at the send, as without batching. 1 (1..4096) =
  // decide on every send; Flush() and a send that finds the ring full decide at once.
  uint32_t send_batch_packets = 1;
  absl::Duration send_batch_delay = absl::Microseconds(100);
};

// SendOptions: per-send knobs.
struct SendOptions {
  // Append without publishing: the packet becomes visible to the host (and the host is
  // signalled, if needed, once) at the next send without `more` or at Flush().
  bool more = false;
  // When the outbound ring is full: wait for room until this time (DeadlineExceeded after).
  // The default (the past) fails at once with ResourceExhausted. Ignored (no waiting) on a
  // dispatching thread.
  absl::Time deadline = absl::InfinitePast();
  // The packet's transaction id, for Send and SendGather (SendRequest chooses its own): an
  // answer that must carry its request's id (the integration components answer that way).
  uint64_t trans_id = 0;
};

// ReceivedPacket: a packet copied out of the ring (polling Receive).
struct ReceivedPacket {
  PacketType type = PacketType::kInvalid;
  uint16_t flags = 0;
  uint64_t trans_id = 0;
  // Bytes between the descriptor and the data (e.g. a GPA-direct range list).
  std::vector<uint8_t> sub_header;
  // The data, including the sender's 0-7 padding bytes (VMBus carries no unpadded length).
  std::vector<uint8_t> payload;
};

// GpadlBuffer: guest memory described to the host by CreateGpadl.
struct GpadlBuffer {
  uint32_t handle = 0;
  // The guest's mapping; valid until TeardownGpadl returns OK or the offer is released.
  absl::Span<uint8_t> memory;
  // PFN of each page, for GPA-direct ranges and device protocols.
  std::vector<uint64_t> pfns;
};

// ChannelStats: counters since the channel was created (all opens together). Snapshots of
// relaxed atomics: each field is exact, fields may be from slightly different instants.
struct ChannelStats {
  uint64_t packets_sent = 0;
  uint64_t bytes_sent = 0;  // payload bytes (sub-headers excluded)
  uint64_t packets_received = 0;
  uint64_t bytes_received = 0;        // payload bytes of data packets, padding included
  uint64_t completions_received = 0;  // matched to a request
  uint64_t completions_unknown = 0;   // id 0 or beyond the table: dropped
  uint64_t completions_stale = 0;     // request already finished: dropped
  uint64_t signals_sent = 0;          // SignalHost calls for this channel
  uint64_t signals_received = 0;      // events dispatched to this channel
  uint64_t ring_full = 0;             // sends that found the outbound ring full
  uint64_t sends_batched = 0;         // sends that left the signal decision to a later one
  uint64_t errors = 0;                // corrupt rings, failed signals, dropped packets

  // Adds `other` field by field (sums over channels).
  void Add(const ChannelStats& other);
};

class Channel final : private EventTarget, public std::enable_shared_from_this<Channel> {
 public:
  ~Channel() override;
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // The offer this channel belongs to (a snapshot). Its id is fixed for the channel's life;
  // the other fields change only across a suspend and resume (ChannelBus::Resume), when the
  // host may offer the device again under another relid, connection id or monitor id.
  OfferInfo offer() const;
  OfferId id() const { return id_; }
  uint32_t relid() const { return relid_.load(std::memory_order_relaxed); }

  // ---- Control (each waits for the host until `deadline`) --------------------------------

  // Open
  // Allocates the rings, creates their GPADL, publishes the channel and opens it. OK once the
  // host's OpenResult says so. Errors: InvalidArgument (ring sizes, user data), FailedPrecondition
  // (already open or opening, offer removed, bus not connected, host refused: "open of relid 7
  // refused by host: status 0xC0000001"), ResourceExhausted (no guest memory), DeadlineExceeded,
  // Unavailable (rescinded or link lost meanwhile; or a receive callback of the previous open is
  // still running: retry), Cancelled (a Close overtook it). After any error the channel is
  // closed (an open that completes after the caller gave up is closed again) and may be opened
  // again (unless removed); a refused second Open leaves an open channel as it is.
  absl::Status Open(const ChannelOpenOptions& options, absl::Time deadline);

  // OpenAsync
  // Open without waiting: `done` runs once with Open's result, where the bus's executor runs
  // (the bus's control thread or the backend's delivery thread; see core/runtime/channel_bus.h). It
  // must not block and must not call blocking Channel or ChannelBus methods (they return
  // FailedPrecondition there).
  void OpenAsync(const ChannelOpenOptions& options, absl::Time deadline,
                 std::function<void(absl::Status)> done);

  // Close
  // Stops dispatch to the channel, closes it and tears down the ring GPADL; outstanding
  // requests complete with Cancelled. OK once the host confirmed and no receive callback of the
  // channel runs any more (none runs after Close returns OK). OK at once if the channel is
  // already closed or its offer was removed (the host dropped it). Errors: DeadlineExceeded
  // (the host did not confirm the teardown in time, or a receive callback is still running;
  // the channel ends up closed either way, and its ring memory stays reserved until both are
  // done), FailedPrecondition (bus gone or shut down, or called from this channel's own Poll
  // callback).
  absl::Status Close(absl::Time deadline);
  void CloseAsync(absl::Time deadline, std::function<void(absl::Status)> done);

  // Reopen
  // Open with the options of the last Open (ring sizes, callback, target VP, user data):
  // what a driver's Resume does after a suspend. FailedPrecondition if the channel was never
  // opened; otherwise Open's errors.
  absl::Status Reopen(absl::Time deadline);
  // Whether the channel was open when its bus suspended (the bus's default Driver::Resume
  // reopens exactly those).
  bool open_at_suspend() const;

  // CreateGpadl
  // Allocates `page_count` zeroed pages and describes them to the host. Errors as Open's, plus
  // NotFound (offer gone). The memory stays the bus's: valid until TeardownGpadl returns OK,
  // or the offer is released.
  absl::StatusOr<GpadlBuffer> CreateGpadl(size_t page_count, absl::Time deadline);

  // TeardownGpadl
  // Asks the host to forget a GPADL made by CreateGpadl; its memory is freed once the host
  // confirms. NotFound for an unknown handle; OK at once if the offer was removed.
  absl::Status TeardownGpadl(uint32_t handle, absl::Time deadline);

  // SetTargetVp
  // Moves an open channel's interrupts to `target_vp` (ModifyChannel, version 4.1+).
  absl::Status SetTargetVp(uint32_t target_vp, absl::Time deadline);

  // ---- Data path -------------------------------------------------------------------------
  // Send errors: FailedPrecondition (not open: never opened, closing, closed, removed),
  // ResourceExhausted (ring full, default deadline; or all transaction slots in use),
  // DeadlineExceeded (ring stayed full until the deadline), InvalidArgument (packet larger
  // than the ring can ever hold, bad GPA ranges), DataLoss (the host corrupted the ring: the
  // channel is unusable until closed and reopened).

  // Send / SendGather: one in-band packet, no completion (transaction id 0).
  absl::Status Send(absl::Span<const uint8_t> payload, const SendOptions& options = {});
  absl::Status SendGather(absl::Span<const absl::Span<const uint8_t>> pieces,
                          const SendOptions& options = {});

  // SendRequest
  // One in-band packet with kCompletionRequested. Returns its transaction id; `done` runs
  // exactly once (see CompletionCallback) — unless the packet could not be written (then it
  // never runs). If the packet was written but signalling the host failed (Unavailable: the
  // link is going), the error is returned and `done` still runs, with Unavailable, when the
  // channel is retired.
  absl::StatusOr<uint64_t> SendRequest(absl::Span<const absl::Span<const uint8_t>> pieces,
                                       CompletionCallback done, const SendOptions& options = {});

  // Call
  // SendRequest and wait for the completion; returns its payload (padding included).
  // DeadlineExceeded if none came in time (a later one is counted as stale). In polling mode
  // someone must Poll for the completion to be seen.
  absl::StatusOr<std::vector<uint8_t>> Call(absl::Span<const uint8_t> payload, absl::Time deadline);

  // SendGpaDirect
  // A kDataUsingGpaDirect packet: `ranges` (guest pages, usually a GpadlBuffer's PFNs) plus
  // in-band `pieces`. With `done`, the packet requests a completion (as SendRequest);
  // without, it is fire-and-forget and returns transaction id 0.
  absl::StatusOr<uint64_t> SendGpaDirect(absl::Span<const GpaRangeSpec> ranges,
                                         absl::Span<const absl::Span<const uint8_t>> pieces,
                                         CompletionCallback done = nullptr,
                                         const SendOptions& options = {});

  // SendCompletion
  // Answers a host packet that requested a completion (kCompletion with its trans_id).
  absl::Status SendCompletion(uint64_t trans_id, absl::Span<const uint8_t> payload,
                              const SendOptions& options = {});

  // Flush
  // Publishes packets appended with SendOptions::more and signals the host if needed; also
  // makes the signal decision that adaptive batching left to a later send. OK (nothing to do)
  // when none are pending.
  absl::Status Flush();

  // WhenWritable
  // Flow control without blocking (for callback-driven senders): calls `ready` once a packet
  // with `payload_bytes` of payload and `sub_header_bytes` of sub-header fits into the outbound
  // ring — at once, on this thread, if it fits now; otherwise on the dispatching thread after
  // the host freed room (pending_send_sz asks the host to signal). `ready` must not block; it
  // is a hint (another sender may take the room first). FailedPrecondition if the channel is
  // not open, InvalidArgument if such a packet can never fit. If the channel closes or fails
  // first, `ready` is dropped without a call.
  absl::Status WhenWritable(size_t payload_bytes, std::function<void()> ready,
                            size_t sub_header_bytes = 0);

  // Poll (polling mode)
  // Drains up to `max_packets` data packets, calling `fn` for each (zero-copy; the view is
  // valid during the call); completions met on the way are matched and their callbacks run
  // here. Returns the number of data packets. FailedPrecondition in callback mode or when not
  // open; DataLoss if the ring is corrupt.
  absl::StatusOr<size_t> Poll(absl::FunctionRef<void(const PacketView&)> fn,
                              size_t max_packets = SIZE_MAX);

  // Receive (polling mode)
  // The next data packet, copied; waits for the host's signal until `deadline`.
  absl::StatusOr<ReceivedPacket> Receive(absl::Time deadline);

  // WaitForPackets (polling mode)
  // Returns OK as soon as the inbound ring has data (possibly at once), DeadlineExceeded if
  // none arrives in time, FailedPrecondition if the channel is not open or is in callback mode
  // (there the dispatcher owns the ring).
  absl::Status WaitForPackets(absl::Time deadline);

  // ---- State and counters ----------------------------------------------------------------

  // Whether packets can be sent now (open and not failed).
  bool is_open() const;
  // Why the offer went away (rescind, link lost, unload), or OK while it is active.
  absl::Status removed_status() const;
  ChannelStats stats() const;
  // Whether the rings of the current open are both mapped mirrored
  // (ChannelOpenOptions::mirrored_rings and a backend that can); false while closed.
  bool rings_mirrored() const;
  // Requests waiting for completions now.
  size_t outstanding_requests() const;

 private:
  friend class BusExecutor;

  // Where the data path is (guarded by state_mu_).
  enum class DataState { kClosed, kOpening, kOpen };
  // What one drain did.
  struct Drained {
    size_t packets = 0;
    bool more = false;  // stopped at its limit with packets left
  };

  // Created by the executor for each offer (`fault`: tests only, see runtime_internal.h).
  Channel(ChannelLink* link, Backend* backend, OfferInfo offer, FaultPoint fault = nullptr);

  // EventTarget: the host signalled this channel (on a dispatcher, which announces the relid
  // while this runs). True: the drain budget ran out with packets left.
  bool OnEvent(uint32_t relid) override;

  // ---- Called by the executor ----
  // Whether an open may start: OK, FailedPrecondition (open, opening), Unavailable (offer
  // removed, or the receive side of the last open is still attached). No side effects.
  absl::Status CheckCanOpen() const;
  // Attaches freshly initialised rings in `pages` (outbound first) before BusState::Open. On
  // error nothing changed.
  absl::Status AttachRings(const Pages& pages, uint32_t outbound_pages,
                           const ChannelOpenOptions& options);
  // The host opened the channel: sending is enabled.
  void OpenSucceeded();
  // Sending stops (the open failed, the channel is closing, the offer is gone): the outbound
  // ring is let go, requests waiting for completions fail with `why`, waiters wake. The receive
  // side is let go separately (TryDetachReceive), once no callback runs.
  void DetachSend(const absl::Status& why);
  // Lets go of the inbound ring and the receive callback. False if a poller holds the receive
  // side right now (try again later); true when done (or nothing was attached). The caller
  // guarantees that no dispatcher delivers to this channel any more (ChannelTable::InUse).
  bool TryDetachReceive();
  // Whether rings of an open are still attached on the receive side.
  bool receive_attached() const { return receive_attached_.load(std::memory_order_relaxed); }
  // The offer went away (rescind, link lost, unload).
  void MarkRemoved(const absl::Status& reason);
  // The bus is suspending: remember whether the channel is open now (open_at_suspend).
  void NoteSuspend();
  // After a resume the host offered the device again as `offer` (same id; relid, connection
  // id, monitor id may differ). Only while closed: the next open signals with the new fields.
  void Rebind(const OfferInfo& offer);
  // The bus is being destroyed: detach everything and forget the bus (no callback runs any
  // more: the backend has stopped).
  void MarkBusGone();
  EventTarget* event_target() { return this; }

  // ---- Data path helpers ----
  // Writes one packet: allocates a transaction slot when `done` is set (trans_id then comes
  // back in *trans_id), appends, commits unless options.more, waits for room per options.
  absl::Status WritePacket(OutgoingPacket packet, const SendOptions& options, size_t payload_bytes,
                           CompletionCallback done = nullptr, uint64_t* trans_id = nullptr);
  absl::Status CommitAndSignal() ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_);
  // After a successful append without `more`: publishes it, and makes the signal decision now
  // or (adaptive batching) leaves it to a later send or the batch timer.
  absl::Status PublishSend() ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_);
  // Flush, or (from_timer) the batch timer's callback: makes a decision still owed, unless a
  // `more` batch is being appended (its last send decides).
  absl::Status CommitPending(bool from_timer);
  // Keeps pending_send_sz armed for the smallest packet a waiting sender needs (or clears it
  // when none waits); true if one of them fits already (wake them).
  bool RearmPendingSend() ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_);
  // Runs the WhenWritable callbacks whose packets fit now (not under send_mu_).
  void RunWritable();
  absl::Status Signal(Backend* backend, const ChannelSignal& signal);
  // Callback mode: drain while events are pending (one drainer at a time); true if the budget
  // ran out with packets left.
  bool DrainFromDispatch();
  // Drains the inbound ring (caller owns it): completions are matched, `fn` gets data packets;
  // stops after `max` of them. `keep_masked`: when stopping at `max`, leave interrupts masked
  // (the caller comes back); otherwise unmask.
  absl::StatusOr<Drained> DrainRing(absl::FunctionRef<void(const PacketView&)> fn, size_t max,
                                    bool keep_masked);
  void HandleCompletion(const PacketView& packet);
  // Records the data path's sticky failure (the first one wins) and fails every outstanding
  // request with it. Must not be called with send_mu_ held (completion callbacks may send).
  void FailDataPath(const absl::Status& status);
  // The failure only, with send_mu_ held; true for the first one (the caller then calls
  // FailRequests once it released send_mu_).
  bool RecordFailure(const absl::Status& status);
  void FailRequests(const absl::Status& status);
  // Counts an event (host signal, detach, failure, room for another sender) and wakes the
  // threads waiting for one.
  void NoteEvent();
  // The event count, read before looking at the state an event changes (see WaitForEvent).
  uint64_t EventCount() const;
  void WakeWaiters();
  // Waits until an event arrives after `seen` (event_seq_) or `deadline`; true if one did.
  bool WaitForEvent(uint64_t seen, absl::Time deadline);
  absl::Status NotOpenError() const;
  // The link to the bus, or FailedPrecondition naming why not.
  absl::StatusOr<ChannelLink*> LiveLink() const;
  // InvalidArgument naming the first option out of range.
  absl::Status CheckOpenOptions(const ChannelOpenOptions& options) const;
  // FailedPrecondition if the caller is inside this channel's own Poll callback.
  absl::Status CheckNotInOwnPoll(absl::string_view what) const;
  // Runs `start` on the executor and waits for its result (deadline plus the bus's grace); a
  // caller that gives up abandons the call, and the executor undoes it. Refuses where waiting
  // would deadlock.
  CallResult AwaitCall(absl::string_view what, absl::Time deadline,
                       std::function<void(BusExecutor&, CallDone)> start);
  // Posts `start` to the executor with `done`, or fails `done` at once if the bus is gone.
  void StartCall(std::function<void(BusExecutor&, CallDone)> start, CallDone done);
  std::string Name() const;

  const OfferId id_;
  // Relaxed: a name for messages; changes only while the channel is closed (Rebind).
  std::atomic<uint32_t> relid_;
  const FaultPoint fault_;

  // Control state.
  mutable Mutex state_mu_;
  ChannelLink* link_ ABSL_GUARDED_BY(state_mu_);
  Backend* backend_ ABSL_GUARDED_BY(state_mu_);
  DataState state_ ABSL_GUARDED_BY(state_mu_) = DataState::kClosed;
  OfferInfo offer_ ABSL_GUARDED_BY(state_mu_);
  // The options of the last Open that attached rings (Reopen uses them).
  std::optional<ChannelOpenOptions> last_open_ ABSL_GUARDED_BY(state_mu_);
  bool open_at_suspend_ ABSL_GUARDED_BY(state_mu_) = false;
  absl::Status removed_ ABSL_GUARDED_BY(state_mu_);
  // The sticky failure of the current open's rings (DataLoss), if any.
  absl::Status data_failure_ ABSL_GUARDED_BY(state_mu_);
  // Set when the data path failed (either ring corrupt): sends and deliveries stop. Relaxed:
  // the failure's details are read under state_mu_.
  std::atomic<bool> failed_{false};
  // Relaxed mirror of: open, not failed, not removed (for is_open()).
  std::atomic<bool> open_{false};

  // Sending side: the outbound ring (attached at open, enabled once the host opened it) and
  // packets appended but not committed. Lock order: send_mu_ before state_mu_.
  alignas(64) mutable Mutex send_mu_;
  std::optional<OutgoingRing> out_ ABSL_GUARDED_BY(send_mu_);
  // The mirrored mapping out_ is attached to, if any: released with out_.
  std::optional<MirroredMapping> out_mirror_ ABSL_GUARDED_BY(send_mu_);
  bool sendable_ ABSL_GUARDED_BY(send_mu_) = false;
  Backend* send_backend_ ABSL_GUARDED_BY(send_mu_) = nullptr;
  // How to signal the host, from the offer at the time the rings were attached.
  ChannelSignal send_signal_ ABSL_GUARDED_BY(send_mu_);
  size_t appended_ ABSL_GUARDED_BY(send_mu_) = 0;
  // Adaptive batching (ChannelOpenOptions::send_batch_*): the open's limits, the sends
  // published since the last signal decision, and whether a BatchTimer callback is queued.
  uint32_t batch_packets_ ABSL_GUARDED_BY(send_mu_) = 1;
  absl::Duration batch_delay_ ABSL_GUARDED_BY(send_mu_);
  uint32_t undecided_ ABSL_GUARDED_BY(send_mu_) = 0;
  bool batch_timer_armed_ ABSL_GUARDED_BY(send_mu_) = false;
  // Ring bytes each sender waiting for room needs (pending_send_sz is armed for the smallest).
  std::multiset<size_t> send_waiters_ ABSL_GUARDED_BY(send_mu_);
  // WhenWritable callbacks by the ring bytes they wait for (each also in send_waiters_).
  std::multimap<size_t, std::function<void()>> writable_ ABSL_GUARDED_BY(send_mu_);
  // Relaxed mirror of writable_.size(), so that events skip send_mu_ when nobody waits.
  std::atomic<size_t> writable_waiting_{0};

  // Receiving side. Written by the executor under poll_mu_ while no dispatcher can deliver to
  // the channel (before Publish; after Unpublish once ChannelTable::InUse said false). Read in
  // callback mode by the dispatcher that holds draining_ (ordered after the writes by the
  // table's publish protocol), in polling mode by the poller holding poll_mu_. Lock order:
  // poll_mu_ before send_mu_ and state_mu_ (callbacks run under it may send).
  alignas(64) mutable Mutex poll_mu_;
  std::optional<IncomingRing> in_;
  std::optional<MirroredMapping> in_mirror_;  // what in_ is attached to, if mirrored
  std::vector<uint8_t> scratch_;
  std::function<void(const PacketView&)> on_packet_;
  bool callback_mode_ = false;
  size_t drain_budget_ = 64;
  Backend* receive_backend_ = nullptr;
  ChannelSignal receive_signal_;  // as send_signal_, for the reader's signals
  // Relaxed mirror of in_.has_value() for the executor (written under poll_mu_).
  std::atomic<bool> receive_attached_{false};
  std::atomic<bool> draining_{false};
  std::atomic<bool> drain_pending_{false};

  // Completions. Created at the first open (control thread) and kept for the channel's life,
  // so ids stay unique across opens and a Call that timed out can still withdraw its slot.
  // [CH-T1] published with a release store; readers load it with acquire ([CH-T2]).
  std::unique_ptr<TransactionTable> transactions_owner_;
  std::atomic<TransactionTable*> transactions_{nullptr};
  TransactionTable* transactions() const {
    return transactions_.load(std::memory_order_acquire);  // [CH-T2] pairs with [CH-T1]
  }

  // Events: every OnEvent (and every detach) bumps event_seq_; waiters (full ring, polling
  // receive) sleep on event_cv_ and are woken only when event_waiters_ says someone sleeps.
  Mutex event_mu_;
  CondVar event_cv_;
  std::atomic<uint64_t> event_seq_{0};
  std::atomic<uint32_t> event_waiters_{0};

  // Counters (relaxed: statistics only), grouped by the thread that writes them so that the
  // sender and the drainer never write the same cache line per packet.
  struct alignas(64) SendCounters {
    // Written only under send_mu_ (one writer at a time; the mutex orders them): bumped with a
    // relaxed load and store, no locked instruction.
    std::atomic<uint64_t> packets_sent{0};
    std::atomic<uint64_t> bytes_sent{0};
    std::atomic<uint64_t> ring_full{0};
    std::atomic<uint64_t> sends_batched{0};
    // Written by senders and drainers (a reader's commit may signal too): fetch_add.
    std::atomic<uint64_t> signals_sent{0};
  };
  struct alignas(64) ReceiveCounters {
    // Written only by the one drainer (draining_ or poll_mu_ hands the ring from one to the
    // next with acquire/release): bumped with a relaxed load and store.
    std::atomic<uint64_t> packets_received{0};
    std::atomic<uint64_t> bytes_received{0};
    std::atomic<uint64_t> completions_received{0};
    std::atomic<uint64_t> completions_unknown{0};
    std::atomic<uint64_t> completions_stale{0};
    // Several VPs' dispatchers may count a signal at once: fetch_add.
    std::atomic<uint64_t> signals_received{0};
  };
  struct alignas(64) ErrorCounters {
    std::atomic<uint64_t> errors{0};  // any thread: fetch_add
  };
  SendCounters send_counters_;
  ReceiveCounters receive_counters_;
  ErrorCounters error_counters_;
};

}  // namespace vbus

#endif  // VBUS_CORE_RUNTIME_CHANNEL_H_
