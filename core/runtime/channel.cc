// Channel: construction, the control calls (they run on the bus's executor), the executor's
// side of opening and letting go, and state. Sending and receiving are in channel_data.cc.
#include "core/runtime/channel.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/data/protocol.h"
#include "core/runtime/bus_executor.h"
#include "core/runtime/runtime_internal.h"

namespace vbus {
namespace {

ChannelSignal SignalOf(const OfferInfo& offer) {
  ChannelSignal signal;
  signal.relid = offer.relid;
  signal.connection_id = offer.connection_id;
  signal.monitor_allocated = offer.monitor_allocated;
  signal.monitor_id = offer.monitor_id;
  signal.dedicated_interrupt = offer.dedicated_interrupt;
  return signal;
}

constexpr uint32_t kMaxDrainBudget = 65536;
constexpr uint32_t kMaxSendBatchPackets = 4096;

}  // namespace

void ChannelStats::Add(const ChannelStats& s) {
  packets_sent += s.packets_sent;
  bytes_sent += s.bytes_sent;
  packets_received += s.packets_received;
  bytes_received += s.bytes_received;
  completions_received += s.completions_received;
  completions_unknown += s.completions_unknown;
  completions_stale += s.completions_stale;
  signals_sent += s.signals_sent;
  signals_received += s.signals_received;
  ring_full += s.ring_full;
  sends_batched += s.sends_batched;
  errors += s.errors;
}

Channel::Channel(ChannelLink* link, Backend* backend, OfferInfo offer, FaultPoint fault)
    : id_(offer.id),
      relid_(offer.relid),
      fault_(std::move(fault)),
      link_(link),
      backend_(backend),
      offer_(std::move(offer)) {}

Channel::~Channel() = default;

std::string Channel::Name() const { return absl::StrCat("relid ", relid()); }

OfferInfo Channel::offer() const {
  MutexLock lock(&state_mu_);
  return offer_;
}

bool Channel::open_at_suspend() const {
  MutexLock lock(&state_mu_);
  return open_at_suspend_;
}

void Channel::NoteSuspend() {
  MutexLock lock(&state_mu_);
  open_at_suspend_ = state_ == DataState::kOpen && removed_.ok();
}

void Channel::Rebind(const OfferInfo& offer) {
  MutexLock lock(&state_mu_);
  offer_ = offer;
  relid_.store(offer.relid, std::memory_order_relaxed);
}

absl::Status Channel::Reopen(absl::Time deadline) {
  std::optional<ChannelOpenOptions> options;
  {
    MutexLock lock(&state_mu_);
    options = last_open_;
  }
  if (!options.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("reopen of ", Name(), ": the channel was never opened"));
  }
  return Open(*options, deadline);
}

absl::StatusOr<ChannelLink*> Channel::LiveLink() const {
  MutexLock lock(&state_mu_);
  if (link_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("channel of ", Name(), ": its bus was shut down or destroyed"));
  }
  return link_;
}

// ---------------------------------------------------------------------------------------------
// Control calls (they run on the bus's executor)
// ---------------------------------------------------------------------------------------------

namespace {

// Posts `start` to the executor with `done`; false (done untouched) if the bus takes no work.
bool PostCall(ChannelLink& link, std::function<void(BusExecutor&, CallDone)> start,
              const CallDone& done) {
  return link.Post(
      [start = std::move(start), done](BusExecutor& executor) { start(executor, done); });
}

}  // namespace

CallResult CallAndWait(ChannelLink& link, absl::string_view what, absl::Time deadline,
                       std::function<void(BusExecutor&, CallDone)> start) {
  auto ticket = std::make_shared<CallTicket>();
  const CallDone done = CallDone::For(ticket);
  if (!PostCall(link, std::move(start), done)) {
    done.Finish({absl::FailedPreconditionError("the channel bus is shut down")});
  }
  return AwaitTicket(*ticket, deadline, link.call_grace(), what);
}

void Channel::StartCall(std::function<void(BusExecutor&, CallDone)> start, CallDone done) {
  absl::StatusOr<ChannelLink*> link = LiveLink();
  if (!link.ok()) {
    done.Finish({link.status()});
    return;
  }
  if (!PostCall(**link, std::move(start), done)) {
    done.Finish({absl::FailedPreconditionError("the channel bus is shut down")});
  }
}

CallResult Channel::AwaitCall(absl::string_view what, absl::Time deadline,
                              std::function<void(BusExecutor&, CallDone)> start) {
  absl::StatusOr<ChannelLink*> link = LiveLink();
  if (!link.ok()) return {link.status()};
  if (absl::Status s = (*link)->CheckBlockingAllowed(what); !s.ok()) return {s};
  if (absl::Status s = CheckNotInOwnPoll(what); !s.ok()) return {s};
  return CallAndWait(**link, what, deadline, std::move(start));
}

absl::Status Channel::CheckOpenOptions(const ChannelOpenOptions& options) const {
  // Checked before any page is allocated; the pair shares one GPADL (docs/protocol.md §7).
  const uint64_t pair = uint64_t{options.outbound_ring_pages} + options.inbound_ring_pages;
  if (options.inbound_ring_pages < protocol::kMinRingPages ||
      !protocol::RingSplitFits(pair, options.outbound_ring_pages)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "open of %s: %u ring pages (outbound %u, inbound %u); each ring needs at least %u "
        "pages (control page included) and the pair at most the %u one GPADL holds",
        Name(), pair, options.outbound_ring_pages, options.inbound_ring_pages,
        protocol::kMinRingPages, protocol::kMaxRingPairPages));
  }
  if (options.user_data.size() > protocol::kUserDefinedBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("open of %s: %u bytes of user data (at most %u)", Name(),
                        options.user_data.size(), protocol::kUserDefinedBytes));
  }
  if (options.max_outstanding_requests == 0 ||
      options.max_outstanding_requests > TransactionTable::kMaxCapacity) {
    return absl::InvalidArgumentError(
        absl::StrFormat("open of %s: max_outstanding_requests %u (1..%u)", Name(),
                        options.max_outstanding_requests, TransactionTable::kMaxCapacity));
  }
  if (options.drain_budget == 0 || options.drain_budget > kMaxDrainBudget) {
    return absl::InvalidArgumentError(absl::StrFormat("open of %s: drain_budget %u (1..%u)", Name(),
                                                      options.drain_budget, kMaxDrainBudget));
  }
  if (options.send_batch_packets == 0 || options.send_batch_packets > kMaxSendBatchPackets) {
    return absl::InvalidArgumentError(absl::StrFormat("open of %s: send_batch_packets %u (1..%u)",
                                                      Name(), options.send_batch_packets,
                                                      kMaxSendBatchPackets));
  }
  if (options.send_batch_packets > 1 && (options.send_batch_delay <= absl::ZeroDuration() ||
                                         options.send_batch_delay > absl::Seconds(1))) {
    return absl::InvalidArgumentError(absl::StrCat("open of ", Name(), ": send_batch_delay ",
                                                   absl::FormatDuration(options.send_batch_delay),
                                                   " (above 0, at most 1s)"));
  }
  return absl::OkStatus();
}

absl::Status Channel::Open(const ChannelOpenOptions& options, absl::Time deadline) {
  if (absl::Status s = CheckOpenOptions(options); !s.ok()) return s;
  std::shared_ptr<Channel> self = shared_from_this();
  return AwaitCall(absl::StrCat("open of ", Name()), deadline,
                   [self, options, deadline](BusExecutor& executor, CallDone done) {
                     executor.Open(self, options, deadline, std::move(done));
                   })
      .status;
}

void Channel::OpenAsync(const ChannelOpenOptions& options, absl::Time deadline,
                        std::function<void(absl::Status)> done) {
  if (absl::Status s = CheckOpenOptions(options); !s.ok()) {
    done(std::move(s));
    return;
  }
  std::shared_ptr<Channel> self = shared_from_this();
  StartCall(
      [self, options, deadline](BusExecutor& executor, CallDone d) {
        executor.Open(self, options, deadline, std::move(d));
      },
      CallDone::Async([done = std::move(done)](const CallResult& r) { done(r.status); }));
}

absl::Status Channel::Close(absl::Time deadline) {
  std::shared_ptr<Channel> self = shared_from_this();
  return AwaitCall(absl::StrCat("close of ", Name()), deadline,
                   [self, deadline](BusExecutor& executor, CallDone done) {
                     executor.Close(self, deadline, std::move(done));
                   })
      .status;
}

void Channel::CloseAsync(absl::Time deadline, std::function<void(absl::Status)> done) {
  std::shared_ptr<Channel> self = shared_from_this();
  StartCall([self, deadline](BusExecutor& executor,
                             CallDone d) { executor.Close(self, deadline, std::move(d)); },
            CallDone::Async([done = std::move(done)](const CallResult& r) { done(r.status); }));
}

absl::StatusOr<GpadlBuffer> Channel::CreateGpadl(size_t page_count, absl::Time deadline) {
  if (page_count == 0 || page_count > protocol::kMaxGpadlPages) {
    return absl::InvalidArgumentError(absl::StrFormat("GPADL for %s: %u pages (1..%u)", Name(),
                                                      page_count, protocol::kMaxGpadlPages));
  }
  std::shared_ptr<Channel> self = shared_from_this();
  CallResult result = AwaitCall(absl::StrCat("GPADL creation for ", Name()), deadline,
                                [self, page_count, deadline](BusExecutor& executor, CallDone done) {
                                  executor.CreateGpadl(self, page_count, deadline, std::move(done));
                                });
  if (!result.status.ok()) return result.status;
  GpadlBuffer buffer;
  buffer.handle = result.gpadl;
  buffer.memory = result.memory;
  buffer.pfns = std::move(result.pfns);
  return buffer;
}

absl::Status Channel::TeardownGpadl(uint32_t handle, absl::Time deadline) {
  std::shared_ptr<Channel> self = shared_from_this();
  return AwaitCall(absl::StrFormat("teardown of GPADL 0x%x of %s", handle, Name()), deadline,
                   [self, handle, deadline](BusExecutor& executor, CallDone done) {
                     executor.TeardownGpadl(self, handle, deadline, std::move(done));
                   })
      .status;
}

absl::Status Channel::SetTargetVp(uint32_t target_vp, absl::Time deadline) {
  std::shared_ptr<Channel> self = shared_from_this();
  return AwaitCall(absl::StrCat("modify of ", Name()), deadline,
                   [self, target_vp, deadline](BusExecutor& executor, CallDone done) {
                     executor.ModifyChannel(self, target_vp, deadline, std::move(done));
                   })
      .status;
}

// ---------------------------------------------------------------------------------------------
// The executor's side
// ---------------------------------------------------------------------------------------------

absl::Status Channel::CheckCanOpen() const {
  MutexLock lock(&state_mu_);
  if (!removed_.ok()) {
    return absl::UnavailableError(
        absl::StrCat("open of ", Name(), ": the offer was removed: ", removed_.message()));
  }
  if (state_ != DataState::kClosed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "open of ", Name(), ": already ", state_ == DataState::kOpen ? "open" : "opening"));
  }
  if (receive_attached()) {
    return absl::UnavailableError(absl::StrCat(
        "open of ", Name(), ": the receive side of its previous open is still attached; retry"));
  }
  return absl::OkStatus();
}

absl::Status Channel::AttachRings(const Pages& pages, uint32_t outbound_pages,
                                  const ChannelOpenOptions& options) {
  if (absl::Status s = CheckCanOpen(); !s.ok()) return s;
  const absl::Span<uint8_t> all = pages.bytes();
  const absl::Span<uint8_t> outbound = all.subspan(0, size_t{outbound_pages} * protocol::kPageSize);
  const absl::Span<uint8_t> inbound = all.subspan(size_t{outbound_pages} * protocol::kPageSize);
  if (absl::Status s = InitializeRing(outbound); !s.ok()) return s;
  if (absl::Status s = InitializeRing(inbound); !s.ok()) return s;
  Backend* backend;
  ChannelSignal signal;
  {
    MutexLock lock(&state_mu_);
    backend = backend_;
    signal = SignalOf(offer_);
  }
  // Each ring mirrored where the backend can map it so; any failure keeps the single mapping.
  auto mirror = [&](size_t first_page, size_t page_count) -> std::optional<MirroredMapping> {
    if (!options.mirrored_rings || backend == nullptr) return std::nullopt;
    absl::StatusOr<MirroredMapping> m = backend->MapRingMirrored(pages, first_page, page_count);
    if (!m.ok()) return std::nullopt;
    return *std::move(m);
  };
  std::optional<MirroredMapping> out_mirror = mirror(0, outbound_pages);
  std::optional<MirroredMapping> in_mirror =
      mirror(outbound_pages, pages.page_count() - outbound_pages);
  absl::StatusOr<OutgoingRing> out =
      out_mirror.has_value() ? OutgoingRing::Attach(out_mirror->memory(), RingMapping::kMirrored)
                             : OutgoingRing::Attach(outbound);
  if (!out.ok()) return out.status();
  absl::StatusOr<IncomingRing> in =
      in_mirror.has_value() ? IncomingRing::Attach(in_mirror->memory(), {}, RingMapping::kMirrored)
                            : IncomingRing::Attach(inbound);
  if (!in.ok()) return in.status();
  // Nothing can fail from here on.
  if (transactions() == nullptr) {
    transactions_owner_ = std::make_unique<TransactionTable>(options.max_outstanding_requests);
    // [CH-T1] release: the table is fully built before any thread can load the pointer.
    transactions_.store(transactions_owner_.get(), std::memory_order_release);
  }
  {
    MutexLock lock(&poll_mu_);
    // A packet that wraps is copied here (a mirrored ring needs none); no packet is larger
    // than the ring's data area.
    scratch_.assign(in_mirror.has_value() ? 0 : in->data_size(), 0);
    in_ = std::move(*in);
    in_mirror_ = std::move(in_mirror);
    in_->SetScratch(absl::MakeSpan(scratch_));
    on_packet_ = options.on_packet;
    callback_mode_ = static_cast<bool>(options.on_packet);
    drain_budget_ = options.drain_budget;
    receive_backend_ = backend;
    receive_signal_ = signal;
    drain_pending_.store(false, std::memory_order_relaxed);
    receive_attached_.store(true, std::memory_order_relaxed);
  }
  {
    MutexLock lock(&send_mu_);
    out_ = std::move(*out);
    out_mirror_ = std::move(out_mirror);
    sendable_ = false;  // until the host's OpenResult
    send_backend_ = backend;
    send_signal_ = signal;
    appended_ = 0;
    batch_packets_ = options.send_batch_packets;
    batch_delay_ = options.send_batch_delay;
    undecided_ = 0;
    send_waiters_.clear();
  }
  MutexLock lock(&state_mu_);
  last_open_ = options;
  state_ = DataState::kOpening;
  data_failure_ = absl::OkStatus();
  failed_.store(false, std::memory_order_relaxed);
  return absl::OkStatus();
}

void Channel::OpenSucceeded() {
  {
    MutexLock lock(&send_mu_);
    if (out_.has_value()) sendable_ = true;
  }
  MutexLock lock(&state_mu_);
  if (state_ == DataState::kOpening) state_ = DataState::kOpen;
  open_.store(state_ == DataState::kOpen && removed_.ok() && data_failure_.ok(),
              std::memory_order_relaxed);
}

void Channel::DetachSend(const absl::Status& why) {
  {
    MutexLock lock(&send_mu_);
    out_.reset();
    out_mirror_.reset();
    sendable_ = false;
    send_backend_ = nullptr;
    appended_ = 0;
    undecided_ = 0;
    for (const auto& [need, fn] : writable_) send_waiters_.erase(send_waiters_.find(need));
    writable_.clear();
    writable_waiting_.store(0, std::memory_order_relaxed);
  }
  {
    MutexLock lock(&state_mu_);
    state_ = DataState::kClosed;
    open_.store(false, std::memory_order_relaxed);
  }
  FailRequests(why);
  NoteEvent();
}

bool Channel::TryDetachReceive() {
  if (!poll_mu_.TryLock()) return false;  // a poller holds it: the executor comes back later
  in_.reset();
  in_mirror_.reset();
  on_packet_ = nullptr;
  callback_mode_ = false;
  receive_backend_ = nullptr;
  receive_attached_.store(false, std::memory_order_relaxed);
  poll_mu_.Unlock();
  return true;
}

void Channel::MarkRemoved(const absl::Status& reason) {
  {
    MutexLock lock(&state_mu_);
    removed_ = reason.ok() ? absl::UnavailableError("offer removed") : reason;
    open_.store(false, std::memory_order_relaxed);
    // The callback may hold the channel (or its driver): let go of it with the offer.
    last_open_.reset();
  }
  NoteEvent();
}

void Channel::MarkBusGone() {
  DetachSend(absl::CancelledError(absl::StrCat(Name(), ": the bus was shut down")));
  {
    MutexLock lock(&poll_mu_);  // no dispatcher runs any more; a poller finishes first
    in_.reset();
    in_mirror_.reset();
    on_packet_ = nullptr;
    callback_mode_ = false;
    receive_backend_ = nullptr;
    receive_attached_.store(false, std::memory_order_relaxed);
  }
  MutexLock lock(&state_mu_);
  link_ = nullptr;
  backend_ = nullptr;
  last_open_.reset();
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

absl::Status Channel::NotOpenError() const {
  MutexLock lock(&state_mu_);
  if (!removed_.ok()) {
    return absl::UnavailableError(
        absl::StrCat(Name(), " is gone (offer removed): ", removed_.message()));
  }
  if (!data_failure_.ok()) return data_failure_;
  if (link_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(Name(), ": the bus was shut down"));
  }
  switch (state_) {
    case DataState::kOpening:
      return absl::FailedPreconditionError(absl::StrCat(Name(), " is still opening"));
    case DataState::kOpen:  // detached under us: closing
    case DataState::kClosed:
      break;
  }
  return absl::FailedPreconditionError(absl::StrCat(Name(), " is not open"));
}

bool Channel::is_open() const { return open_.load(std::memory_order_relaxed); }

absl::Status Channel::removed_status() const {
  MutexLock lock(&state_mu_);
  return removed_;
}

size_t Channel::outstanding_requests() const {
  TransactionTable* table = transactions();
  return table == nullptr ? 0 : table->outstanding();
}

bool Channel::rings_mirrored() const {
  MutexLock poll_lock(&poll_mu_);  // lock order: poll_mu_ before send_mu_
  MutexLock send_lock(&send_mu_);
  return in_mirror_.has_value() && out_mirror_.has_value();
}

ChannelStats Channel::stats() const {
  ChannelStats s;
  auto get = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  s.packets_sent = get(send_counters_.packets_sent);
  s.bytes_sent = get(send_counters_.bytes_sent);
  s.packets_received = get(receive_counters_.packets_received);
  s.bytes_received = get(receive_counters_.bytes_received);
  s.completions_received = get(receive_counters_.completions_received);
  s.completions_unknown = get(receive_counters_.completions_unknown);
  s.completions_stale = get(receive_counters_.completions_stale);
  s.signals_sent = get(send_counters_.signals_sent);
  s.signals_received = get(receive_counters_.signals_received);
  s.ring_full = get(send_counters_.ring_full);
  s.sends_batched = get(send_counters_.sends_batched);
  s.errors = get(error_counters_.errors);
  return s;
}

}  // namespace vbus
