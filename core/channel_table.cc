#include "core/channel_table.h"

#include <bit>
#include <thread>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace vbus {
namespace {

// The table whose dispatch section the current thread is in (nullptr outside), so that a
// Retire from inside OnEvent fails fast instead of waiting for itself until its deadline.
thread_local const ChannelTable* t_dispatching = nullptr;

}  // namespace

ChannelTable::ChannelTable() {
  for (std::atomic<EventTarget*>& slot : slots_) slot.store(nullptr, std::memory_order_relaxed);
}

ChannelTable::~ChannelTable() {
  ABSL_RAW_CHECK(registered_.load(std::memory_order_relaxed) == 0,
                 "ChannelTable destroyed while dispatchers are registered");
}

// ---------------------------------------------------------------------------------------------
// Dispatchers
// ---------------------------------------------------------------------------------------------

absl::StatusOr<ChannelTable::Dispatcher> ChannelTable::RegisterDispatcher() {
  uint64_t used = registered_.load(std::memory_order_relaxed);
  for (;;) {
    if (used == ~uint64_t{0}) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "all %u dispatcher slots of the channel table are registered", kMaxDispatchers));
    }
    const size_t index = static_cast<size_t>(std::countr_one(used));
    // [G1] seq_cst: registered before this dispatcher's first [D0]; read by Retire's [R2].
    // The slot's sequence counter keeps counting from its previous owner (it is even now),
    // so a Retire holding an old snapshot still sees it change.
    if (registered_.compare_exchange_weak(used, used | uint64_t{1} << index,
                                          std::memory_order_seq_cst, std::memory_order_relaxed)) {
      return Dispatcher(this, index);
    }
  }
}

void ChannelTable::Unregister(size_t index) {
  // The dispatcher is outside any section (its counter is even): nothing waits on it.
  registered_.fetch_and(~(uint64_t{1} << index), std::memory_order_seq_cst);
}

ChannelTable::Dispatcher::Dispatcher(Dispatcher&& other) noexcept
    : table_(other.table_),
      index_(other.index_),
      delivered_(other.delivered_),
      spurious_(other.spurious_) {
  other.table_ = nullptr;
}

ChannelTable::Dispatcher& ChannelTable::Dispatcher::operator=(Dispatcher&& other) noexcept {
  if (this != &other) {
    if (table_ != nullptr) table_->Unregister(index_);
    table_ = other.table_;
    index_ = other.index_;
    delivered_ = other.delivered_;
    spurious_ = other.spurious_;
    other.table_ = nullptr;
  }
  return *this;
}

ChannelTable::Dispatcher::~Dispatcher() {
  if (table_ != nullptr) table_->Unregister(index_);
}

void ChannelTable::Dispatcher::Enter() {
  std::atomic<uint64_t>& sequence = table_->dispatchers_[index_].sequence;
  // Only this dispatcher writes its counter: a relaxed read of our own value.
  const uint64_t even = sequence.load(std::memory_order_relaxed);
  // [D0] seq_cst: odd = inside. Store-then-load against Retire's [R1] then [R3] (argument
  // step 6 in the header): Retire either sees us inside or our [D2] sees its null.
  sequence.store(even + 1, std::memory_order_seq_cst);
  outer_dispatching_ = t_dispatching;
  t_dispatching = table_;
}

void ChannelTable::Dispatcher::Exit(const DispatchStats& stats) {
  t_dispatching = outer_dispatching_;
  std::atomic<uint64_t>& sequence = table_->dispatchers_[index_].sequence;
  // [D3] release: every use of a target in this section happens-before a Retire that
  // observes the new value with [R4] (argument step 7).
  sequence.store(sequence.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  delivered_ += stats.delivered;
  spurious_ += stats.spurious;
  if (stats.spurious != 0) {
    table_->spurious_total_.fetch_add(stats.spurious, std::memory_order_relaxed);
  }
}

inline void ChannelTable::Dispatcher::Deliver(uint32_t relid, DispatchStats& stats) {
  // [D2] seq_cst load of the slot. Acquire pairs with Publish's [P1] (the target is fully
  // built); seq_cst for the Dekker handshake with Retire (step 6).
  EventTarget* target = table_->slots_[relid].load(std::memory_order_seq_cst);
  if (target == nullptr) {
    // Not published (never, or retired): a spurious or hostile signal. Counted; the bit is
    // already clear, so it cannot make us spin.
    ++stats.spurious;
    return;
  }
  ++stats.delivered;
  target->OnEvent(relid);
}

DispatchStats ChannelTable::Dispatcher::Dispatch(EventPage& page) {
  DispatchStats stats;
  Enter();
  // [S1] in EventPage::Scan test-and-clears each word (argument step 4).
  page.Scan([&](uint32_t relid) { Deliver(relid, stats); });
  Exit(stats);
  return stats;
}

DispatchStats ChannelTable::Dispatcher::DispatchRelid(uint32_t relid) {
  DispatchStats stats;
  if (relid == 0 || relid >= protocol::kRelidCount) {
    stats.spurious = 1;
    spurious_ += 1;
    table_->spurious_total_.fetch_add(1, std::memory_order_relaxed);
    return stats;
  }
  Enter();
  Deliver(relid, stats);
  Exit(stats);
  return stats;
}

// ---------------------------------------------------------------------------------------------
// Publish / retire
// ---------------------------------------------------------------------------------------------

absl::Status ChannelTable::Publish(uint32_t relid, EventTarget* target) {
  if (absl::Status s = ValidateRelid(relid); !s.ok()) return s;
  if (target == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("publish of relid %u: null target", relid));
  }
  EventTarget* expected = nullptr;
  // [P1] seq_cst (release) compare-exchange: pairs with the dispatchers' [D2] acquire load;
  // the caller sends OpenChannel only after this returns (argument steps 1-2).
  if (!slots_[relid].compare_exchange_strong(expected, target, std::memory_order_seq_cst,
                                             std::memory_order_relaxed)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("relid %u is already published; retire it first", relid));
  }
  return absl::OkStatus();
}

absl::StatusOr<EventTarget*> ChannelTable::Retire(uint32_t relid, absl::Time deadline) {
  if (absl::Status s = ValidateRelid(relid); !s.ok()) return s;
  if (t_dispatching == this) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "retire of relid %u from inside a dispatch callback would wait for itself", relid));
  }
  // [R1] seq_cst exchange: no dispatcher that starts [D2] after this point can find the old
  // target (argument step 6).
  EventTarget* old = slots_[relid].exchange(nullptr, std::memory_order_seq_cst);
  if (old == nullptr) {
    return absl::NotFoundError(absl::StrFormat("retire of relid %u: not published", relid));
  }
  if (absl::Status s = WaitForQuiescence(deadline); !s.ok()) {
    return absl::Status(
        s.code(), absl::StrFormat("retire of relid %u: slot cleared, but %s", relid, s.message()));
  }
  return old;
}

absl::Status ChannelTable::WaitForQuiescence(absl::Time deadline) {
  if (t_dispatching == this) {
    return absl::FailedPreconditionError(
        "WaitForQuiescence from inside a dispatch callback would wait for itself");
  }
  // [R2] seq_cst: dispatchers registered after this load cannot have seen the old pointer
  // (argument step 8).
  uint64_t mask = registered_.load(std::memory_order_seq_cst);
  while (mask != 0) {
    const size_t i = static_cast<size_t>(std::countr_zero(mask));
    mask &= mask - 1;
    std::atomic<uint64_t>& sequence = dispatchers_[i].sequence;
    // [R3] seq_cst: see step 6. Even = outside a section: nothing to wait for.
    const uint64_t snapshot = sequence.load(std::memory_order_seq_cst);
    if (snapshot % 2 == 0) continue;
    // Inside a section that may hold the old pointer: wait until it leaves (any change of the
    // counter means it passed [D3]). Spin briefly, then yield, then sleep in short steps;
    // the deadline bounds the whole wait.
    for (int spins = 0;; ++spins) {
      // [R4] acquire, pairs with the dispatcher's [D3] release (step 7).
      if (sequence.load(std::memory_order_acquire) != snapshot) break;
      if (spins < 64) continue;
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrFormat(
            "dispatcher %u stayed inside one dispatch section past the deadline", i));
      }
      if (spins < 1024) {
        std::this_thread::yield();
      } else {
        absl::SleepFor(absl::Microseconds(50));
      }
    }
  }
  return absl::OkStatus();
}

EventTarget* ChannelTable::Lookup(uint32_t relid) const {
  if (relid >= protocol::kRelidCount) return nullptr;
  // Acquire pairs with [P1].
  return slots_[relid].load(std::memory_order_acquire);
}

}  // namespace vbus
