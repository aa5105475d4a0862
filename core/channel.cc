#include "core/channel.h"

#include <algorithm>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/channel_bus.h"
#include "core/protocol.h"
#include "core/runtime_internal.h"

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

size_t TotalSize(absl::Span<const absl::Span<const uint8_t>> pieces) {
  size_t total = 0;
  for (absl::Span<const uint8_t> piece : pieces) total += piece.size();
  return total;
}

// Largest ring ValidateRingMemory accepts: 1 GiB of data plus the control page.
constexpr uint32_t kMaxRingPages = (1u << 30) / protocol::kPageSize + 1;

void Add(std::atomic<uint64_t>& counter, uint64_t n = 1) {
  counter.fetch_add(n, std::memory_order_relaxed);
}

}  // namespace

Channel::Channel(ChannelBus* bus, Backend* backend, OfferInfo offer)
    : offer_(std::move(offer)), signal_(SignalOf(offer_)), bus_(bus), backend_(backend) {}

Channel::~Channel() = default;

std::string Channel::Name() const { return absl::StrCat("relid ", offer_.relid); }

absl::StatusOr<ChannelBus*> Channel::LiveBus() const {
  MutexLock lock(&state_mu_);
  if (bus_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("channel of ", Name(), ": its bus was shut down or destroyed"));
  }
  return bus_;
}

// ---------------------------------------------------------------------------------------------
// Control calls (they run BusState calls on the bus's control thread)
// ---------------------------------------------------------------------------------------------

absl::Status Channel::AwaitAsync(absl::string_view what, absl::Time deadline,
                                 absl::FunctionRef<void(std::function<void(absl::Status)>)> start) {
  absl::StatusOr<ChannelBus*> bus = LiveBus();
  if (!bus.ok()) return bus.status();
  if (absl::Status s = (*bus)->CheckBlockingAllowed(what); !s.ok()) return s;
  auto waiter = std::make_shared<ChannelBus::Waiter>();
  start([waiter](absl::Status s) { waiter->Finish({std::move(s)}); });
  return (*bus)->AwaitWaiter(*waiter, deadline, what).status;
}

absl::Status Channel::Open(const ChannelOpenOptions& options, absl::Time deadline) {
  return AwaitAsync(absl::StrCat("open of ", Name()), deadline,
                    [&](std::function<void(absl::Status)> done) {
                      OpenAsync(options, deadline, std::move(done));
                    });
}

void Channel::OpenAsync(const ChannelOpenOptions& options, absl::Time deadline,
                        std::function<void(absl::Status)> done) {
  absl::Status invalid;
  if (options.outbound_ring_pages < protocol::kMinRingPages ||
      options.inbound_ring_pages < protocol::kMinRingPages ||
      options.outbound_ring_pages > kMaxRingPages || options.inbound_ring_pages > kMaxRingPages) {
    invalid = absl::InvalidArgumentError(absl::StrFormat(
        "open of %s: ring sizes %u + %u pages; each ring needs %u..%u pages (control page "
        "included)",
        Name(), options.outbound_ring_pages, options.inbound_ring_pages, protocol::kMinRingPages,
        kMaxRingPages));
  } else if (options.user_data.size() > protocol::kUserDefinedBytes) {
    invalid = absl::InvalidArgumentError(
        absl::StrFormat("open of %s: %u bytes of user data (at most %u)", Name(),
                        options.user_data.size(), protocol::kUserDefinedBytes));
  } else if (options.max_outstanding_requests == 0 ||
             options.max_outstanding_requests > TransactionTable::kMaxCapacity) {
    invalid = absl::InvalidArgumentError(
        absl::StrFormat("open of %s: max_outstanding_requests %u (1..%u)", Name(),
                        options.max_outstanding_requests, TransactionTable::kMaxCapacity));
  }
  if (!invalid.ok()) {
    done(invalid);
    return;
  }
  absl::StatusOr<ChannelBus*> bus = LiveBus();
  if (!bus.ok()) {
    done(bus.status());
    return;
  }
  std::shared_ptr<Channel> self = shared_from_this();
  ChannelBus* b = *bus;
  b->StartCall([b, self, options,
                deadline](Actions* out) { return b->StartOpen(self, options, deadline, out); },
               [b, self, done = std::move(done)](const ChannelBus::CallResult& result) {
                 b->FinishOpen(self, result.status);
                 done(result.status);
               });
}

absl::Status Channel::Close(absl::Time deadline) {
  return AwaitAsync(
      absl::StrCat("close of ", Name()), deadline,
      [&](std::function<void(absl::Status)> done) { CloseAsync(deadline, std::move(done)); });
}

void Channel::CloseAsync(absl::Time deadline, std::function<void(absl::Status)> done) {
  absl::StatusOr<ChannelBus*> bus = LiveBus();
  if (!bus.ok()) {
    done(bus.status());
    return;
  }
  std::shared_ptr<Channel> self = shared_from_this();
  ChannelBus* b = *bus;
  b->StartCall(
      [b, self, deadline](Actions* out) -> absl::StatusOr<RequestId> {
        return b->StartClose(self, deadline, out);
      },
      [done = std::move(done)](const ChannelBus::CallResult& result) { done(result.status); });
}

absl::StatusOr<GpadlBuffer> Channel::CreateGpadl(size_t page_count, absl::Time deadline) {
  absl::StatusOr<ChannelBus*> bus = LiveBus();
  if (!bus.ok()) return bus.status();
  if (page_count == 0 || page_count > protocol::kMaxGpadlPages) {
    return absl::InvalidArgumentError(absl::StrFormat("GPADL for %s: %u pages (1..%u)", Name(),
                                                      page_count, protocol::kMaxGpadlPages));
  }
  ChannelBus* b = *bus;
  std::shared_ptr<Channel> self = shared_from_this();
  auto buffer = std::make_shared<GpadlBuffer>();
  ChannelBus::CallResult result = b->AwaitCall(
      [b, self, page_count, deadline, buffer](Actions* out) {
        return b->StartCreateGpadl(self, page_count, deadline, buffer.get(), out);
      },
      nullptr, deadline, absl::StrCat("GPADL creation for ", Name()));
  if (!result.status.ok()) return result.status;
  buffer->handle = result.gpadl;
  return std::move(*buffer);
}

absl::Status Channel::TeardownGpadl(uint32_t handle, absl::Time deadline) {
  absl::StatusOr<ChannelBus*> bus = LiveBus();
  if (!bus.ok()) return bus.status();
  ChannelBus* b = *bus;
  const OfferId id = offer_.id;
  return b
      ->AwaitCall(
          [b, id, handle, deadline](Actions* out) -> absl::StatusOr<RequestId> {
            if (!b->channels_.contains(id)) return RequestId();  // released: nothing mapped
            return b->state_->TeardownGpadl(id, handle, deadline, out);
          },
          nullptr, deadline, absl::StrFormat("teardown of GPADL 0x%x of %s", handle, Name()))
      .status;
}

absl::Status Channel::SetTargetVp(uint32_t target_vp, absl::Time deadline) {
  absl::StatusOr<ChannelBus*> bus = LiveBus();
  if (!bus.ok()) return bus.status();
  ChannelBus* b = *bus;
  const OfferId id = offer_.id;
  const std::string name = Name();
  return b
      ->AwaitCall(
          [b, id, target_vp, deadline, name](Actions* out) -> absl::StatusOr<RequestId> {
            if (!b->channels_.contains(id)) {
              return absl::UnavailableError(absl::StrCat("modify of ", name, ": offer released"));
            }
            return b->state_->ModifyChannel(id, target_vp, deadline, out);
          },
          nullptr, deadline, absl::StrCat("modify of ", Name()))
      .status;
}

// ---------------------------------------------------------------------------------------------
// Called by the bus on its control thread
// ---------------------------------------------------------------------------------------------

absl::Status Channel::AttachRings(const Pages& pages, uint32_t outbound_pages,
                                  const ChannelOpenOptions& options) {
  {
    MutexLock lock(&state_mu_);
    if (!removed_.ok()) {
      return absl::UnavailableError(
          absl::StrCat("open of ", Name(), ": the offer was removed: ", removed_.message()));
    }
    if (wedged_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "open of ", Name(), ": a receive callback blocked its last retire; it stays closed"));
    }
    if (state_ != DataState::kClosed) {
      return absl::FailedPreconditionError(absl::StrCat(
          "open of ", Name(), ": already ", state_ == DataState::kOpen ? "open" : "opening"));
    }
  }
  const absl::Span<uint8_t> all = pages.bytes();
  const absl::Span<uint8_t> outbound = all.subspan(0, size_t{outbound_pages} * protocol::kPageSize);
  const absl::Span<uint8_t> inbound = all.subspan(size_t{outbound_pages} * protocol::kPageSize);
  if (absl::Status s = InitializeRing(outbound); !s.ok()) return s;
  if (absl::Status s = InitializeRing(inbound); !s.ok()) return s;
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(outbound);
  if (!out.ok()) return out.status();
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(inbound);
  if (!in.ok()) return in.status();
  if (transactions() == nullptr) {
    transactions_owner_ = std::make_unique<TransactionTable>(options.max_outstanding_requests);
    // [T1] release: the table is fully built before any thread can load the pointer.
    transactions_.store(transactions_owner_.get(), std::memory_order_release);
  }
  Backend* backend;
  {
    MutexLock lock(&state_mu_);
    backend = backend_;
  }
  {
    MutexLock lock(&poll_mu_);
    // A packet that wraps is copied here; no packet is larger than the ring's data area.
    scratch_.assign(in->data_size(), 0);
    in_ = std::move(*in);
    in_->SetScratch(absl::MakeSpan(scratch_));
    on_packet_ = options.on_packet;
    callback_mode_ = static_cast<bool>(options.on_packet);
    receive_backend_ = backend;
    drain_pending_.store(false, std::memory_order_relaxed);
  }
  {
    MutexLock lock(&send_mu_);
    out_ = std::move(*out);
    sendable_ = false;  // until the host's OpenResult
    send_backend_ = backend;
    appended_ = 0;
  }
  MutexLock lock(&state_mu_);
  state_ = DataState::kOpening;
  data_failure_ = absl::OkStatus();
  failed_.store(false, std::memory_order_relaxed);
  return absl::OkStatus();
}

void Channel::OpenFinished(const absl::Status& status) {
  if (!status.ok()) {
    Detach(status);
    return;
  }
  {
    MutexLock lock(&send_mu_);
    if (out_.has_value()) sendable_ = true;
  }
  MutexLock lock(&state_mu_);
  if (state_ == DataState::kOpening) state_ = DataState::kOpen;
  open_.store(state_ == DataState::kOpen && removed_.ok() && data_failure_.ok(),
              std::memory_order_relaxed);
}

void Channel::Detach(const absl::Status& why, bool receive_quiesced) {
  {
    MutexLock lock(&send_mu_);
    out_.reset();
    sendable_ = false;
    send_backend_ = nullptr;
    appended_ = 0;
  }
  if (receive_quiesced) {
    MutexLock lock(&poll_mu_);
    in_.reset();
    on_packet_ = nullptr;
    receive_backend_ = nullptr;
  }
  {
    MutexLock lock(&state_mu_);
    state_ = DataState::kClosed;
    if (!receive_quiesced) wedged_ = true;
    open_.store(false, std::memory_order_relaxed);
  }
  if (TransactionTable* table = transactions(); table != nullptr) {
    for (auto& [id, callback] : table->TakeAll()) {
      if (callback) callback(Completion{why, id, nullptr});
    }
  }
  event_seq_.fetch_add(1, std::memory_order_seq_cst);
  WakeWaiters();
}

void Channel::MarkRemoved(const absl::Status& reason) {
  {
    MutexLock lock(&state_mu_);
    removed_ = reason.ok() ? absl::UnavailableError("offer removed") : reason;
    open_.store(false, std::memory_order_relaxed);
  }
  event_seq_.fetch_add(1, std::memory_order_seq_cst);
  WakeWaiters();
}

void Channel::MarkBusGone() {
  Detach(absl::CancelledError(absl::StrCat(Name(), ": the bus was shut down")));
  MutexLock lock(&state_mu_);
  bus_ = nullptr;
  backend_ = nullptr;
}

// ---------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------

absl::Status Channel::NotOpenError() const {
  MutexLock lock(&state_mu_);
  if (!removed_.ok()) {
    return absl::UnavailableError(
        absl::StrCat(Name(), " is gone (offer removed): ", removed_.message()));
  }
  if (!data_failure_.ok()) return data_failure_;
  if (bus_ == nullptr) {
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

absl::Status Channel::Signal(Backend* backend) {
  Add(counters_.signals_sent);
  absl::Status s = backend->SignalHost(signal_);
  if (!s.ok()) {
    Add(counters_.errors);
    return absl::Status(s.code(), absl::StrCat("signal to the host for ", Name(),
                                               " failed (the packet was written): ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status Channel::CommitAndSignal() {
  appended_ = 0;
  // The ring decides: signal only if the host may be idle (ring was empty, host not draining).
  const bool signal = out_->Commit();
  if (!out_->status().ok()) {
    absl::Status failed = out_->status();
    FailDataPath(failed);
    return failed;
  }
  return signal ? Signal(send_backend_) : absl::OkStatus();
}

absl::Status Channel::WritePacket(OutgoingPacket packet, const SendOptions& options,
                                  size_t payload_bytes, CompletionCallback done,
                                  uint64_t* trans_id) {
  const bool can_wait = options.deadline != absl::InfinitePast() && !internal::InDispatch();
  uint64_t allocated = 0;
  auto give_up = [&](absl::Status status) {
    if (allocated != 0) transactions()->Cancel(allocated);
    return status;
  };
  for (;;) {
    uint64_t seen = 0;
    {
      MutexLock lock(&send_mu_);
      if (!out_.has_value() || !sendable_ || failed_.load(std::memory_order_relaxed)) {
        return give_up(NotOpenError());
      }
      if (done != nullptr && allocated == 0) {
        absl::StatusOr<uint64_t> id = transactions()->Allocate(std::move(done));
        if (!id.ok()) {
          return absl::Status(id.status().code(),
                              absl::StrCat(Name(), ": ", id.status().message()));
        }
        allocated = *id;
        packet.trans_id = allocated;
        packet.flags |= kCompletionRequested;
      }
      absl::StatusOr<AppendResult> appended = out_->Append(packet);
      if (!appended.ok()) {
        if (appended.status().code() == absl::StatusCode::kDataLoss) {
          FailDataPath(appended.status());
        }
        return give_up(
            absl::Status(appended.status().code(),
                         absl::StrCat("send on ", Name(), ": ", appended.status().message())));
      }
      if (*appended == AppendResult::kAppended) {
        ++appended_;
        Add(counters_.packets_sent);
        Add(counters_.bytes_sent, payload_bytes);
        if (trans_id != nullptr) *trans_id = allocated;
        if (options.more) return absl::OkStatus();
        // The packet is in the ring: a failed signal is reported, the slot stays outstanding.
        return CommitAndSignal();
      }
      // Full. Publish what is appended so the host can drain it, then wait or give up.
      Add(counters_.ring_full);
      if (appended_ > 0) {
        if (absl::Status s = CommitAndSignal(); !s.ok()) return give_up(s);
      }
      const size_t need = PacketRingBytes(packet.sub_header.size(), payload_bytes);
      if (!can_wait) {
        absl::StatusOr<size_t> free_bytes = out_->FreeBytes();
        return give_up(absl::ResourceExhaustedError(absl::StrFormat(
            "outbound ring of %s is full: a %u-byte packet needs more than the %u bytes free",
            Name(), need, free_bytes.ok() ? *free_bytes : 0)));
      }
      if (absl::Now() >= options.deadline) {
        out_->DisarmPendingSend();
        return give_up(absl::DeadlineExceededError(absl::StrFormat(
            "outbound ring of %s stayed full until the deadline (%u-byte packet)", Name(), need)));
      }
      // Read the event count before arming: a signal that follows the arm bumps it, so the
      // wait below cannot miss it.
      seen = event_seq_.load(std::memory_order_seq_cst);
      absl::StatusOr<bool> room = out_->ArmPendingSend(need);
      if (!room.ok()) {
        if (room.status().code() == absl::StatusCode::kDataLoss) FailDataPath(room.status());
        return give_up(room.status());
      }
      if (*room) continue;  // freed meanwhile: retry now
    }
    // The host promised to signal once more than `need` bytes are free (pending_send_sz).
    WaitForEvent(seen, options.deadline);
  }
}

absl::Status Channel::Send(absl::Span<const uint8_t> payload, const SendOptions& options) {
  const absl::Span<const uint8_t> pieces[1] = {payload};
  return SendGather(pieces, options);
}

absl::Status Channel::SendGather(absl::Span<const absl::Span<const uint8_t>> pieces,
                                 const SendOptions& options) {
  OutgoingPacket packet;
  packet.type = PacketType::kDataInband;
  packet.payload = pieces;
  return WritePacket(packet, options, TotalSize(pieces));
}

absl::StatusOr<uint64_t> Channel::SendRequest(absl::Span<const absl::Span<const uint8_t>> pieces,
                                              CompletionCallback done, const SendOptions& options) {
  if (done == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("request on ", Name(), " without a completion callback"));
  }
  OutgoingPacket packet;
  packet.type = PacketType::kDataInband;
  packet.payload = pieces;
  uint64_t id = 0;
  if (absl::Status s = WritePacket(packet, options, TotalSize(pieces), std::move(done), &id);
      !s.ok()) {
    return s;
  }
  return id;
}

absl::StatusOr<std::vector<uint8_t>> Channel::Call(absl::Span<const uint8_t> payload,
                                                   absl::Time deadline) {
  if (internal::InDispatch()) {
    return absl::FailedPreconditionError(
        absl::StrCat("Call on ", Name(), " from a dispatch callback would block it"));
  }
  struct State {
    Mutex mu;
    CondVar cv;
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::Status status ABSL_GUARDED_BY(mu);
    std::vector<uint8_t> payload ABSL_GUARDED_BY(mu);
  };
  auto state = std::make_shared<State>();
  const absl::Span<const uint8_t> pieces[1] = {payload};
  SendOptions options;
  options.deadline = deadline;
  absl::StatusOr<uint64_t> id = SendRequest(
      pieces,
      [state](const Completion& c) {
        MutexLock lock(&state->mu);
        state->status = c.status;
        if (c.packet != nullptr) {
          const absl::Span<const uint8_t> p = c.packet->payload();
          state->payload.assign(p.begin(), p.end());
        }
        state->done = true;
        state->cv.SignalAll();
      },
      options);
  if (!id.ok()) return id.status();
  {
    MutexLock lock(&state->mu);
    if (state->cv.AwaitWithDeadline(&state->mu, deadline, [&] { return state->done; })) {
      if (!state->status.ok()) return std::move(state->status);
      return std::move(state->payload);
    }
  }
  if (transactions()->Cancel(*id) != nullptr) {
    return absl::DeadlineExceededError(
        absl::StrFormat("no completion for transaction 0x%x on %s by the deadline", *id, Name()));
  }
  // A completion took the slot just now: its callback is running; it finishes promptly.
  MutexLock lock(&state->mu);
  state->cv.AwaitWithDeadline(&state->mu, absl::Now() + absl::Seconds(5),
                              [&] { return state->done; });
  if (!state->done) {
    return absl::DeadlineExceededError(
        absl::StrCat("completion callback on ", Name(), " did not finish"));
  }
  if (!state->status.ok()) return std::move(state->status);
  return std::move(state->payload);
}

absl::StatusOr<uint64_t> Channel::SendGpaDirect(absl::Span<const GpaRangeSpec> ranges,
                                                absl::Span<const absl::Span<const uint8_t>> pieces,
                                                CompletionCallback done,
                                                const SendOptions& options) {
  if (ranges.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("GPA-direct send on ", Name(), ": no ranges"));
  }
  absl::InlinedVector<uint8_t, 256> sub_header(GpaDirectSubHeaderSize(ranges));
  absl::StatusOr<size_t> written = EncodeGpaDirectSubHeader(ranges, absl::MakeSpan(sub_header));
  if (!written.ok()) {
    return absl::Status(written.status().code(), absl::StrCat("GPA-direct send on ", Name(), ": ",
                                                              written.status().message()));
  }
  OutgoingPacket packet;
  packet.type = PacketType::kDataUsingGpaDirect;
  packet.sub_header = absl::MakeConstSpan(sub_header.data(), *written);
  packet.payload = pieces;
  uint64_t id = 0;
  if (absl::Status s = WritePacket(packet, options, TotalSize(pieces), std::move(done), &id);
      !s.ok()) {
    return s;
  }
  return id;
}

absl::Status Channel::SendCompletion(uint64_t trans_id, absl::Span<const uint8_t> payload,
                                     const SendOptions& options) {
  const absl::Span<const uint8_t> pieces[1] = {payload};
  OutgoingPacket packet;
  packet.type = PacketType::kCompletion;
  packet.trans_id = trans_id;
  packet.payload = pieces;
  return WritePacket(packet, options, payload.size());
}

absl::Status Channel::Flush() {
  MutexLock lock(&send_mu_);
  if (!out_.has_value() || appended_ == 0) return absl::OkStatus();
  return CommitAndSignal();
}

// ---------------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------------

void Channel::OnEvent(uint32_t relid) {
  (void)relid;
  Add(counters_.signals_received);
  // [V1] seq_cst: the event count, then the waiter count ([V2]); a waiter does the mirror image
  // (count itself in, then read the event count: [V3], [V4]), so either it sees this event or
  // we see it waiting and wake it.
  event_seq_.fetch_add(1, std::memory_order_seq_cst);
  if (event_waiters_.load(std::memory_order_seq_cst) != 0) WakeWaiters();  // [V2]
  if (callback_mode_) DrainFromDispatch();
}

void Channel::DrainFromDispatch() {
  // [G1] seq_cst: announce the work, then try to become the drainer. A dispatcher that fails
  // the exchange below relies on the current drainer's re-check [G3] to see [G1].
  drain_pending_.store(true, std::memory_order_seq_cst);
  for (;;) {
    bool expected = false;
    // [G2] seq_cst (acquire on success): pairs with the previous drainer's [G3] release, so its
    // ring reads happen-before ours.
    if (!draining_.compare_exchange_strong(expected, true, std::memory_order_seq_cst)) return;
    while (drain_pending_.exchange(false, std::memory_order_seq_cst)) {
      if (!in_.has_value()) break;
      if (!DrainRing(on_packet_, SIZE_MAX).ok()) break;
    }
    // [G3] seq_cst (release): hand the ring back, then re-check for work announced meanwhile.
    draining_.store(false, std::memory_order_seq_cst);
    if (!drain_pending_.load(std::memory_order_seq_cst)) return;
  }
}

absl::StatusOr<size_t> Channel::DrainRing(absl::FunctionRef<void(const PacketView&)> fn,
                                          size_t max) {
  IncomingRing& in = *in_;
  if (!in.status().ok()) return in.status();  // failed earlier (already reported)
  size_t delivered = 0;
  // Batched read (the writer relies on this pattern, core/ring_buffer.h): mask while draining,
  // commit, unmask, then look again — a packet written while masked was not signalled.
  in.MaskInterrupts();
  for (;;) {
    bool stopped_early = false;
    size_t since_commit = 0;
    for (;;) {
      if (delivered >= max) {
        stopped_early = true;
        break;
      }
      absl::StatusOr<std::optional<PacketView>> next = in.Next();
      if (!next.ok()) {
        FailDataPath(next.status());
        return next.status();
      }
      if (!next->has_value()) break;
      const PacketView& packet = **next;
      if (packet.type() == PacketType::kCompletion) {
        HandleCompletion(packet);
      } else {
        Add(counters_.packets_received);
        Add(counters_.bytes_received, packet.payload().size());
        fn(packet);
        ++delivered;
      }
      // Free space early during long drains so a host waiting for room can go on writing.
      if (++since_commit == 64) {
        since_commit = 0;
        absl::StatusOr<bool> wake = in.CommitRead();
        if (!wake.ok()) {
          FailDataPath(wake.status());
          return wake.status();
        }
        if (*wake) Signal(receive_backend_).IgnoreError();
      }
    }
    absl::StatusOr<bool> wake = in.CommitRead();
    if (!wake.ok()) {
      FailDataPath(wake.status());
      return wake.status();
    }
    if (*wake) Signal(receive_backend_).IgnoreError();  // counted as an error if it fails
    absl::StatusOr<bool> more = in.UnmaskInterrupts();
    if (!more.ok()) {
      FailDataPath(more.status());
      return more.status();
    }
    if (stopped_early || !*more) break;
    in.MaskInterrupts();
  }
  return delivered;
}

void Channel::HandleCompletion(const PacketView& packet) {
  TransactionTable::Match match = transactions()->Take(packet.trans_id());
  switch (match.outcome) {
    case TransactionTable::Outcome::kMatched:
      Add(counters_.completions_received);
      if (match.callback) {
        match.callback(Completion{absl::OkStatus(), packet.trans_id(), &packet});
      }
      return;
    case TransactionTable::Outcome::kUnknown:
      Add(counters_.completions_unknown);
      return;
    case TransactionTable::Outcome::kStale:
      Add(counters_.completions_stale);
      return;
  }
}

void Channel::FailDataPath(const absl::Status& status) {
  ChannelBus* bus = nullptr;
  {
    MutexLock lock(&state_mu_);
    if (!data_failure_.ok()) return;  // reported once
    data_failure_ = absl::Status(status.code(), absl::StrCat(Name(), ": ", status.message()));
    failed_.store(true, std::memory_order_relaxed);
    open_.store(false, std::memory_order_relaxed);
    bus = bus_;
  }
  Add(counters_.errors);
  if (bus != nullptr)
    bus->Log(absl::StrCat("data path of ", Name(), " failed: ", status.message()));
}

absl::StatusOr<size_t> Channel::Poll(absl::FunctionRef<void(const PacketView&)> fn,
                                     size_t max_packets) {
  MutexLock lock(&poll_mu_);
  if (!in_.has_value()) return NotOpenError();
  if (callback_mode_) {
    return absl::FailedPreconditionError(
        absl::StrCat("Poll on ", Name(), ": the channel was opened with a receive callback"));
  }
  return DrainRing(fn, max_packets);
}

absl::StatusOr<ReceivedPacket> Channel::Receive(absl::Time deadline) {
  if (internal::InDispatch()) {
    return absl::FailedPreconditionError(
        absl::StrCat("Receive on ", Name(), " from a dispatch callback would block it"));
  }
  for (;;) {
    const uint64_t seen = event_seq_.load(std::memory_order_seq_cst);
    std::optional<ReceivedPacket> received;
    absl::StatusOr<size_t> polled = Poll(
        [&](const PacketView& p) {
          ReceivedPacket r;
          r.type = p.type();
          r.flags = p.flags();
          r.trans_id = p.trans_id();
          r.sub_header.assign(p.sub_header().begin(), p.sub_header().end());
          r.payload.assign(p.payload().begin(), p.payload().end());
          received = std::move(r);
        },
        1);
    if (!polled.ok()) return polled.status();
    if (received.has_value()) return std::move(*received);
    if (!WaitForEvent(seen, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat("no packet on ", Name(), " by the deadline"));
    }
  }
}

absl::Status Channel::WaitForPackets(absl::Time deadline) {
  if (internal::InDispatch()) {
    return absl::FailedPreconditionError(
        absl::StrCat("WaitForPackets on ", Name(), " from a dispatch callback would block it"));
  }
  for (;;) {
    const uint64_t seen = event_seq_.load(std::memory_order_seq_cst);
    {
      MutexLock lock(&poll_mu_);
      if (!in_.has_value()) return NotOpenError();
      absl::StatusOr<size_t> available = in_->AvailableBytes();
      if (!available.ok()) {
        FailDataPath(available.status());
        return available.status();
      }
      if (*available > 0) return absl::OkStatus();
    }
    if (!WaitForEvent(seen, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat("no packet on ", Name(), " by the deadline"));
    }
  }
}

void Channel::WakeWaiters() {
  MutexLock lock(&event_mu_);
  event_cv_.SignalAll();
}

bool Channel::WaitForEvent(uint64_t seen, absl::Time deadline) {
  // [V3] seq_cst: count ourselves in before reading the event count [V4] (see OnEvent).
  event_waiters_.fetch_add(1, std::memory_order_seq_cst);
  bool got;
  {
    MutexLock lock(&event_mu_);
    got = event_cv_.AwaitWithDeadline(&event_mu_, deadline, [&] {
      return event_seq_.load(std::memory_order_seq_cst) != seen;  // [V4]
    });
  }
  event_waiters_.fetch_sub(1, std::memory_order_seq_cst);
  return got;
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

bool Channel::is_open() const { return open_.load(std::memory_order_relaxed); }

absl::Status Channel::removed_status() const {
  MutexLock lock(&state_mu_);
  return removed_;
}

size_t Channel::outstanding_requests() const {
  TransactionTable* table = transactions();
  return table == nullptr ? 0 : table->outstanding();
}

ChannelStats Channel::stats() const {
  ChannelStats s;
  auto get = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  s.packets_sent = get(counters_.packets_sent);
  s.bytes_sent = get(counters_.bytes_sent);
  s.packets_received = get(counters_.packets_received);
  s.bytes_received = get(counters_.bytes_received);
  s.completions_received = get(counters_.completions_received);
  s.completions_unknown = get(counters_.completions_unknown);
  s.completions_stale = get(counters_.completions_stale);
  s.signals_sent = get(counters_.signals_sent);
  s.signals_received = get(counters_.signals_received);
  s.ring_full = get(counters_.ring_full);
  s.errors = get(counters_.errors);
  return s;
}

}  // namespace vbus
