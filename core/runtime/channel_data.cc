// Channel: the data path — sending (with waits for room), receiving in callback and polling
// mode, completions, and the sticky failure of a corrupt ring.
#include <algorithm>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/runtime/batch_timer.h"
#include "core/runtime/channel.h"
#include "core/runtime/runtime_internal.h"

namespace vbus {
namespace {

size_t TotalSize(absl::Span<const absl::Span<const uint8_t>> pieces) {
  size_t total = 0;
  for (absl::Span<const uint8_t> piece : pieces) total += piece.size();
  return total;
}

void Add(std::atomic<uint64_t>& counter, uint64_t n = 1) {
  counter.fetch_add(n, std::memory_order_relaxed);
}

// For a counter with one writer at a time (writers ordered by a lock or a hand-off): no locked
// instruction on the per-packet path. Readers (stats()) see some recent value, as with Add.
void AddSerialized(std::atomic<uint64_t>& counter, uint64_t n = 1) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// Free ring space is released early during long drains, so a host waiting for room can go on.
constexpr size_t kCommitEvery = 64;

// The channel whose Poll callback the current thread is running (nullptr outside), so that a
// call that would wait for that same poll fails fast.
thread_local const Channel* t_polling = nullptr;

class PollScope {
 public:
  explicit PollScope(const Channel* channel) : outer_(t_polling) { t_polling = channel; }
  ~PollScope() { t_polling = outer_; }
  PollScope(const PollScope&) = delete;
  PollScope& operator=(const PollScope&) = delete;

 private:
  const Channel* const outer_;
};

}  // namespace

absl::Status Channel::CheckNotInOwnPoll(absl::string_view what) const {
  if (t_polling != this) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(what, " called from ", Name(), "'s own Poll callback would wait for that poll"));
}

// ---------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------

absl::Status Channel::Signal(Backend* backend, const ChannelSignal& signal) {
  Add(send_counters_.signals_sent);
  absl::Status s = backend->SignalHost(signal);
  if (!s.ok()) {
    Add(error_counters_.errors);
    return absl::Status(s.code(), absl::StrCat("signal to the host for ", Name(),
                                               " failed (the packet was written): ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status Channel::CommitAndSignal() {
  appended_ = 0;
  undecided_ = 0;
  // The ring decides: signal only if the host may be idle (ring was empty, host not draining).
  const bool signal = out_->Commit();
  if (!out_->status().ok()) return out_->status();
  return signal ? Signal(send_backend_, send_signal_) : absl::OkStatus();
}

absl::Status Channel::PublishSend() {
  // Batch only while the host was draining at the last decision (its re-check will find the
  // packet), and only up to the limit: the last send of a batch decides for all of them.
  if (batch_packets_ <= 1 || !out_->reader_was_draining() || undecided_ + 1 >= batch_packets_) {
    return CommitAndSignal();
  }
  out_->Publish();
  appended_ = 0;
  ++undecided_;
  AddSerialized(send_counters_.sends_batched);
  if (!batch_timer_armed_) {
    // The latency bound: a host that went idle after the last decision is signalled by then.
    batch_timer_armed_ = true;
    internal::BatchTimer::Get().Schedule(absl::Now() + batch_delay_, [weak = weak_from_this()] {
      // A failed signal is counted as an error by Signal; nobody waits for the result.
      if (std::shared_ptr<Channel> self = weak.lock()) {
        self->CommitPending(/*from_timer=*/true).IgnoreError();
      }
    });
  }
  return absl::OkStatus();
}

bool Channel::RearmPendingSend() {
  if (!out_.has_value()) return false;
  if (send_waiters_.empty()) {
    out_->DisarmPendingSend();
    return false;
  }
  // The host signals once more than this many bytes are free: enough for the smallest waiter
  // (the others re-arm when woken). A successful Append clears pending_send_sz, so every send
  // that finds waiters re-arms it here; otherwise a waiter would sleep through the space freeing.
  absl::StatusOr<bool> room = out_->ArmPendingSend(*send_waiters_.begin());
  return !room.ok() || *room;  // a failed ring or room already: wake the waiters
}

absl::Status Channel::WritePacket(OutgoingPacket packet, const SendOptions& options,
                                  size_t payload_bytes, CompletionCallback done,
                                  uint64_t* trans_id) {
  const bool can_wait = options.deadline != absl::InfinitePast() && !internal::InDispatch();
  uint64_t allocated = 0;
  std::optional<size_t> waiting;  // our entry in send_waiters_
  bool wake_others = false;       // space for another waiter: wake them after unlocking
  absl::Status failure;           // the ring failed under send_mu_: fail requests after it
  // Leaves (under send_mu_) the set of waiting senders and keeps pending_send_sz right for the
  // rest.
  auto stop_waiting = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_) {
    if (waiting.has_value()) {
      send_waiters_.erase(send_waiters_.find(*waiting));
      waiting.reset();
    }
    if (RearmPendingSend()) wake_others = true;
  };
  // What every return goes through once send_mu_ is released.
  auto finish = [&](absl::Status status) {
    if (!status.ok() && allocated != 0) transactions()->Cancel(allocated);
    if (!failure.ok()) FailRequests(failure);
    if (wake_others) {
      NoteEvent();
    }
    return status;
  };
  auto failed = [&](const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_) {
    if (s.code() == absl::StatusCode::kDataLoss && RecordFailure(s)) failure = s;
    stop_waiting();
  };
  // One attempt under send_mu_: the send's final status, or nullopt to wait for room (with the
  // event count read before arming in *seen).
  auto attempt = [&](uint64_t* seen)
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_) -> std::optional<absl::Status> {
    for (;;) {
      if (!out_.has_value() || !sendable_ || failed_.load(std::memory_order_relaxed)) {
        stop_waiting();
        return NotOpenError();
      }
      if (done != nullptr && allocated == 0) {
        absl::StatusOr<uint64_t> id = transactions()->Allocate(std::move(done));
        if (!id.ok()) {
          stop_waiting();
          return absl::Status(id.status().code(),
                              absl::StrCat(Name(), ": ", id.status().message()));
        }
        allocated = *id;
        packet.trans_id = allocated;
        packet.flags |= kCompletionRequested;
      }
      absl::StatusOr<AppendResult> appended = out_->Append(packet);
      if (!appended.ok()) {
        failed(appended.status());
        return absl::Status(appended.status().code(),
                            absl::StrCat("send on ", Name(), ": ", appended.status().message()));
      }
      if (*appended == AppendResult::kAppended) {
        ++appended_;
        AddSerialized(send_counters_.packets_sent);
        AddSerialized(send_counters_.bytes_sent, payload_bytes);
        if (trans_id != nullptr) *trans_id = allocated;
        allocated = 0;  // in the ring: its slot stays outstanding whatever happens next
        stop_waiting();
        if (options.more) return absl::OkStatus();
        absl::Status committed = PublishSend();
        if (!out_->status().ok()) failed(out_->status());
        return committed;
      }
      // Full. Publish what is appended so the host can drain it, then wait or give up.
      AddSerialized(send_counters_.ring_full);
      if (appended_ > 0 || out_->signal_owed()) {
        if (absl::Status s = CommitAndSignal(); !s.ok()) {
          if (!out_->status().ok()) failed(out_->status());
          stop_waiting();
          return s;
        }
      }
      const size_t need = PacketRingBytes(packet.sub_header.size(), payload_bytes);
      if (!can_wait || absl::Now() >= options.deadline) {
        stop_waiting();
        if (can_wait) {
          return absl::DeadlineExceededError(absl::StrFormat(
              "outbound ring of %s stayed full until the deadline (%u-byte packet)", Name(), need));
        }
        absl::StatusOr<size_t> free_bytes = out_->FreeBytes();
        return absl::ResourceExhaustedError(absl::StrFormat(
            "outbound ring of %s is full: a %u-byte packet needs more than the %u bytes free",
            Name(), need, free_bytes.ok() ? *free_bytes : 0));
      }
      // Read the event count before arming: a signal that follows the arm bumps it, so the wait
      // cannot miss it.
      *seen = EventCount();
      if (!waiting.has_value()) {
        send_waiters_.insert(need);
        waiting = need;
      }
      const bool someone_fits = RearmPendingSend();
      absl::StatusOr<size_t> free_bytes = out_->FreeBytes();
      if (!free_bytes.ok()) {
        failed(free_bytes.status());
        return free_bytes.status();
      }
      if (*free_bytes > need) continue;  // freed meanwhile: retry now
      if (someone_fits) wake_others = true;
      return std::nullopt;
    }
  };
  for (;;) {
    uint64_t seen = 0;
    std::optional<absl::Status> result;
    {
      MutexLock lock(&send_mu_);
      result = attempt(&seen);
    }
    if (result.has_value()) return finish(*std::move(result));
    if (wake_others) {
      wake_others = false;
      NoteEvent();
    }
    // The host promised to signal once more than the smallest waiter's bytes are free.
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
  packet.trans_id = options.trans_id;
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
  auto finished =
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) -> absl::StatusOr<std::vector<uint8_t>> {
    if (!state->status.ok()) return std::move(state->status);
    return std::move(state->payload);
  };
  {
    MutexLock lock(&state->mu);
    if (state->cv.AwaitWithDeadline(
            &state->mu, deadline,
            [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) { return state->done; })) {
      return finished();
    }
  }
  if (transactions()->Cancel(*id) != nullptr) {
    return absl::DeadlineExceededError(
        absl::StrFormat("no completion for transaction 0x%x on %s by the deadline", *id, Name()));
  }
  // A completion took the slot just now: its callback is running; it finishes promptly.
  MutexLock lock(&state->mu);
  if (!state->cv.AwaitWithDeadline(
          &state->mu, absl::Now() + absl::Seconds(5),
          [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) { return state->done; })) {
    return absl::DeadlineExceededError(
        absl::StrCat("completion callback on ", Name(), " did not finish"));
  }
  return finished();
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

absl::Status Channel::WhenWritable(size_t payload_bytes, std::function<void()> ready,
                                   size_t sub_header_bytes) {
  const size_t need = PacketRingBytes(sub_header_bytes, payload_bytes);
  absl::Status failure;
  {
    MutexLock lock(&send_mu_);
    if (!out_.has_value() || !sendable_ || failed_.load(std::memory_order_relaxed)) {
      return NotOpenError();
    }
    if (need + kPacketAlignment > out_->data_size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("WhenWritable on %s: a %u-byte packet never fits a %u-byte ring", Name(),
                          need, out_->data_size()));
    }
    absl::StatusOr<size_t> free_bytes = out_->FreeBytes();
    if (!free_bytes.ok()) {
      if (RecordFailure(free_bytes.status())) failure = free_bytes.status();
    } else if (*free_bytes <= need) {
      writable_.emplace(need, std::move(ready));
      writable_waiting_.fetch_add(1, std::memory_order_relaxed);
      send_waiters_.insert(need);
      if (!RearmPendingSend()) return absl::OkStatus();
      // Room appeared meanwhile: fall through to the check below.
    }
  }
  if (!failure.ok()) {
    FailRequests(failure);
    return failure;
  }
  if (ready) {
    ready();  // fits now
    return absl::OkStatus();
  }
  RunWritable();
  return absl::OkStatus();
}

void Channel::RunWritable() {
  std::vector<std::function<void()>> ready;
  absl::Status failure;
  {
    MutexLock lock(&send_mu_);
    if (writable_.empty() || !out_.has_value()) return;
    absl::StatusOr<size_t> free_bytes = out_->FreeBytes();
    if (!free_bytes.ok()) {
      // The host corrupted read_index. The channel fails here (no sender may come to find
      // out), and the waiting callbacks are dropped without a call, as WhenWritable promises.
      if (RecordFailure(free_bytes.status())) failure = free_bytes.status();
      for (const auto& [need, fn] : writable_) send_waiters_.erase(send_waiters_.find(need));
      writable_.clear();
      writable_waiting_.store(0, std::memory_order_relaxed);
    } else {
      for (auto it = writable_.begin(); it != writable_.end() && it->first < *free_bytes;) {
        ready.push_back(std::move(it->second));
        send_waiters_.erase(send_waiters_.find(it->first));
        it = writable_.erase(it);
      }
      if (!ready.empty()) {
        writable_waiting_.fetch_sub(ready.size(), std::memory_order_relaxed);
        RearmPendingSend();
      }
    }
  }
  if (!failure.ok()) FailRequests(failure);
  for (std::function<void()>& fn : ready) fn();
}

absl::Status Channel::Flush() { return CommitPending(/*from_timer=*/false); }

absl::Status Channel::CommitPending(bool from_timer) {
  absl::Status result;
  absl::Status failure;
  {
    MutexLock lock(&send_mu_);
    if (from_timer) batch_timer_armed_ = false;
    if (!out_.has_value() || (appended_ == 0 && !out_->signal_owed())) return absl::OkStatus();
    // A `more` batch in progress: its last send (or Flush) decides for everything published.
    if (from_timer && appended_ > 0) return absl::OkStatus();
    result = CommitAndSignal();
    if (!out_->status().ok() && RecordFailure(out_->status())) failure = out_->status();
  }
  if (!failure.ok()) FailRequests(failure);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Failure
// ---------------------------------------------------------------------------------------------

bool Channel::RecordFailure(const absl::Status& status) {
  ChannelLink* link = nullptr;
  {
    MutexLock lock(&state_mu_);
    if (!data_failure_.ok()) return false;  // reported once
    data_failure_ = absl::Status(status.code(), absl::StrCat(Name(), ": ", status.message()));
    failed_.store(true, std::memory_order_relaxed);
    open_.store(false, std::memory_order_relaxed);
    link = link_;
  }
  Add(error_counters_.errors);
  if (link != nullptr)
    link->Log(absl::StrCat("data path of ", Name(), " failed: ", status.message()));
  NoteEvent();
  return true;
}

void Channel::FailRequests(const absl::Status& status) {
  TransactionTable* table = transactions();
  if (table == nullptr) return;
  for (auto& [id, callback] : table->TakeAll()) {
    if (callback) callback(Completion{status, id, nullptr});
  }
}

void Channel::FailDataPath(const absl::Status& status) {
  if (RecordFailure(status)) {
    FailRequests(absl::Status(status.code(), absl::StrCat(Name(), ": ", status.message())));
  }
}

// ---------------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------------

bool Channel::OnEvent(uint32_t relid) {
  // Several VPs' dispatchers may call this at once (a channel moving to another VP receives
  // signals on both for a while: docs/protocol.md §12). Everything below is safe for that:
  // counters and the event count are atomic, writable callbacks are taken under send_mu_, and
  // the drain hand-off ([CH-G1]..[CH-G5]) lets exactly one caller drain the ring at a time
  // while the others leave their announcement to it.
  (void)relid;
  Add(receive_counters_.signals_received);
  NoteEvent();
  if (writable_waiting_.load(std::memory_order_relaxed) != 0) RunWritable();
  // callback_mode_ was written before the channel was published ([CT-P1] orders it).
  if (!callback_mode_) return false;
  return DrainFromDispatch();
}

bool Channel::DrainFromDispatch() {
  // [CH-G1] seq_cst: announce the work, then try to become the drainer. A dispatcher that
  // fails the exchange below relies on the current drainer's re-check [CH-G4] to see it.
  drain_pending_.store(true, std::memory_order_seq_cst);
  for (;;) {
    bool expected = false;
    // [CH-G2] seq_cst (acquire on success): pairs with the previous drainer's [CH-G3] release,
    // so its ring reads happen-before ours.
    if (!draining_.compare_exchange_strong(expected, true, std::memory_order_seq_cst)) {
      return false;
    }
    bool more = false;
    // [CH-G5] seq_cst exchange: take the announcements made so far.
    while (drain_pending_.exchange(false, std::memory_order_seq_cst)) {
      if (!in_.has_value() || failed_.load(std::memory_order_relaxed)) break;
      absl::StatusOr<Drained> drained = DrainRing(on_packet_, drain_budget_, /*keep_masked=*/true);
      if (!drained.ok()) break;
      if (drained->more) {
        more = true;  // budget spent: the other channels go first, then we come back
        break;
      }
    }
    // [CH-G3] seq_cst (release): hand the ring back, then re-check for work announced meanwhile.
    draining_.store(false, std::memory_order_seq_cst);
    if (more) return true;
    if (!drain_pending_.load(std::memory_order_seq_cst)) return false;  // [CH-G4]
  }
}

absl::StatusOr<Channel::Drained> Channel::DrainRing(absl::FunctionRef<void(const PacketView&)> fn,
                                                    size_t max, bool keep_masked) {
  IncomingRing& in = *in_;
  if (!in.status().ok()) return in.status();  // failed earlier (already reported)
  Drained drained;
  auto commit = [&]() -> absl::Status {
    absl::StatusOr<bool> wake = in.CommitRead();
    if (!wake.ok()) {
      FailDataPath(wake.status());
      return wake.status();
    }
    if (*wake)
      Signal(receive_backend_, receive_signal_).IgnoreError();  // counted as an error if it fails
    return absl::OkStatus();
  };
  // Batched read (the writer relies on this pattern, core/data/ring_buffer.h): mask while draining,
  // commit, unmask, then look again — a packet written while masked was not signalled.
  in.MaskInterrupts();
  for (;;) {
    bool at_limit = false;
    size_t since_commit = 0;
    for (;;) {
      if (drained.packets >= max) {
        at_limit = true;
        break;
      }
      // A failed channel (either ring) delivers nothing more.
      if (failed_.load(std::memory_order_relaxed)) return drained;
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
        AddSerialized(receive_counters_.packets_received);
        AddSerialized(receive_counters_.bytes_received, packet.payload().size());
        fn(packet);
        ++drained.packets;
      }
      if (++since_commit == kCommitEvery) {
        since_commit = 0;
        if (absl::Status s = commit(); !s.ok()) return s;
      }
    }
    if (absl::Status s = commit(); !s.ok()) return s;
    if (at_limit) {
      absl::StatusOr<size_t> left = in.AvailableBytes();
      if (!left.ok()) {
        FailDataPath(left.status());
        return left.status();
      }
      drained.more = *left > 0;
      // The caller comes back for the rest while masked; a poller gets the host's signals.
      if (drained.more && keep_masked) return drained;
    }
    absl::StatusOr<bool> more = in.UnmaskInterrupts();
    if (!more.ok()) {
      FailDataPath(more.status());
      return more.status();
    }
    if (*more && fault_ && fault_(PlantedFault::kSkipUnmaskRecheck)) return drained;
    if (at_limit || !*more) {
      drained.more = drained.more || (at_limit && *more);
      if (drained.more && keep_masked) in.MaskInterrupts();
      return drained;
    }
    in.MaskInterrupts();
  }
}

void Channel::HandleCompletion(const PacketView& packet) {
  TransactionTable::Match match = transactions()->Take(packet.trans_id());
  switch (match.outcome) {
    case TransactionTable::Outcome::kMatched:
      AddSerialized(receive_counters_.completions_received);
      if (match.callback) {
        match.callback(Completion{absl::OkStatus(), packet.trans_id(), &packet});
      }
      return;
    case TransactionTable::Outcome::kUnknown:
      AddSerialized(receive_counters_.completions_unknown);
      return;
    case TransactionTable::Outcome::kStale:
      AddSerialized(receive_counters_.completions_stale);
      return;
  }
}

absl::StatusOr<size_t> Channel::Poll(absl::FunctionRef<void(const PacketView&)> fn,
                                     size_t max_packets) {
  if (absl::Status s = CheckNotInOwnPoll(absl::StrCat("Poll on ", Name())); !s.ok()) return s;
  MutexLock lock(&poll_mu_);
  if (!in_.has_value() || failed_.load(std::memory_order_relaxed)) return NotOpenError();
  if (callback_mode_) {
    return absl::FailedPreconditionError(
        absl::StrCat("Poll on ", Name(), ": the channel was opened with a receive callback"));
  }
  PollScope scope(this);
  absl::StatusOr<Drained> drained = DrainRing(fn, max_packets, /*keep_masked=*/false);
  if (!drained.ok()) return drained.status();
  return drained->packets;
}

absl::StatusOr<ReceivedPacket> Channel::Receive(absl::Time deadline) {
  if (internal::InDispatch()) {
    return absl::FailedPreconditionError(
        absl::StrCat("Receive on ", Name(), " from a dispatch callback would block it"));
  }
  if (absl::Status s = CheckNotInOwnPoll(absl::StrCat("Receive on ", Name())); !s.ok()) return s;
  for (;;) {
    const uint64_t seen = EventCount();
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
  if (absl::Status s = CheckNotInOwnPoll(absl::StrCat("WaitForPackets on ", Name())); !s.ok()) {
    return s;
  }
  for (;;) {
    const uint64_t seen = EventCount();
    {
      MutexLock lock(&poll_mu_);
      if (!in_.has_value() || failed_.load(std::memory_order_relaxed)) return NotOpenError();
      if (callback_mode_) {
        // The dispatcher owns the ring in callback mode; looking at it here would race it.
        return absl::FailedPreconditionError(absl::StrCat(
            "WaitForPackets on ", Name(), ": the channel was opened with a receive callback"));
      }
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

void Channel::NoteEvent() {
  // [CH-V1] seq_cst: the event count, then the waiter count ([CH-V2]); a waiter does the mirror
  // image (counts itself in, then reads the event count: [CH-V3], [CH-V4]), so either it sees
  // this event or we see it waiting and wake it.
  event_seq_.fetch_add(1, std::memory_order_seq_cst);
  if (event_waiters_.load(std::memory_order_seq_cst) != 0) WakeWaiters();  // [CH-V2]
}

uint64_t Channel::EventCount() const {
  // [CH-V5] seq_cst: read before looking at the state an event would change (ring space,
  // packets); a later [CH-V1] makes the count differ, so a wait from this value cannot miss it.
  return event_seq_.load(std::memory_order_seq_cst);
}

void Channel::WakeWaiters() {
  MutexLock lock(&event_mu_);
  event_cv_.SignalAll();
}

bool Channel::WaitForEvent(uint64_t seen, absl::Time deadline) {
  // [CH-V3] seq_cst: count ourselves in before reading the event count [CH-V4] (see OnEvent).
  event_waiters_.fetch_add(1, std::memory_order_seq_cst);
  bool got;
  {
    MutexLock lock(&event_mu_);
    got = event_cv_.AwaitWithDeadline(&event_mu_, deadline, [&] {
      return event_seq_.load(std::memory_order_seq_cst) != seen;  // [CH-V4]
    });
  }
  event_waiters_.fetch_sub(1, std::memory_order_seq_cst);
  return got;
}

}  // namespace vbus
