#include "core/data/channel_table.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bit>
#include <thread>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace vbus {
namespace {

// The table whose OnEvent the current thread is inside (nullptr outside), so that a wait from
// inside OnEvent fails fast instead of waiting for itself until its deadline.
thread_local const ChannelTable* t_dispatching = nullptr;

// Restores t_dispatching when a delivery ends (deliveries of different tables may nest).
class DeliveryScope {
 public:
  explicit DeliveryScope(const ChannelTable* table) : outer_(t_dispatching) {
    t_dispatching = table;
  }
  ~DeliveryScope() { t_dispatching = outer_; }
  DeliveryScope(const DeliveryScope&) = delete;
  DeliveryScope& operator=(const DeliveryScope&) = delete;

 private:
  const ChannelTable* const outer_;
};

// The process-wide barrier behind the asymmetric handshake (see channel_table.h, step 6):
// membarrier(PRIVATE_EXPEDITED) runs a full memory barrier on every thread of this process
// that is running, and the others pass one when they are next scheduled. Registered once;
// false where the kernel (before 4.14) or a seccomp policy refuses it.
bool RegisterProcessBarrier() {
  static const bool registered =
      syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  return registered;
}

}  // namespace

ChannelTable::ChannelTable(bool use_process_barrier)
    : asymmetric_(use_process_barrier && RegisterProcessBarrier()) {
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
    // The slot's hazard word keeps its previous owner's count (it is withdrawn now), so a
    // waiter holding an old snapshot still sees it change.
    // [CT-G1] seq_cst: registered before this dispatcher's first [CT-D1]; read by [CT-U3].
    if (registered_.compare_exchange_weak(used, used | uint64_t{1} << index,
                                          std::memory_order_seq_cst, std::memory_order_relaxed)) {
      Dispatcher d(this, index);
      d.deliveries_ = dispatchers_[index].hazard.load(std::memory_order_relaxed) >> 16;
      return d;
    }
  }
}

void ChannelTable::Unregister(size_t index) {
  // The dispatcher is between deliveries (its announcement is withdrawn): nothing waits on it.
  // [CT-G2] seq_cst: the mirror image of [CT-G1]; an [CT-U3] that still sees the bit reads a
  // withdrawn hazard word, which never names a relid.
  registered_.fetch_and(~(uint64_t{1} << index), std::memory_order_seq_cst);
}

ChannelTable::Dispatcher::Dispatcher(Dispatcher&& other) noexcept
    : table_(other.table_),
      index_(other.index_),
      deliveries_(other.deliveries_),
      delivered_(other.delivered_),
      spurious_(other.spurious_) {
  other.table_ = nullptr;
}

ChannelTable::Dispatcher& ChannelTable::Dispatcher::operator=(Dispatcher&& other) noexcept {
  if (this != &other) {
    if (table_ != nullptr) table_->Unregister(index_);
    table_ = other.table_;
    index_ = other.index_;
    deliveries_ = other.deliveries_;
    delivered_ = other.delivered_;
    spurious_ = other.spurious_;
    other.table_ = nullptr;
  }
  return *this;
}

ChannelTable::Dispatcher::~Dispatcher() {
  if (table_ != nullptr) table_->Unregister(index_);
}

bool ChannelTable::Dispatcher::Deliver(uint32_t relid, DispatchStats& stats) {
  std::atomic<uint64_t>& hazard = table_->dispatchers_[index_].hazard;
  const uint64_t count = ++deliveries_;
  if (table_->asymmetric_) {
    // [CT-D1] release: announce the relid before loading its slot (a plain store on x86).
    // Release carries this thread's earlier deliveries to InUse's [CT-U2]; the store-then-load
    // handshake with Unpublish's [CT-U1] gets its fence from InUse's process barrier [CT-U5],
    // and the signal fence keeps the compiler from loading the slot first (step 6).
    hazard.store(count << 16 | kInPass | relid, std::memory_order_release);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    // [CT-D4] seq_cst: the same announcement where no process barrier exists; store-then-load
    // against Unpublish's [CT-U1] then InUse's [CT-U2] with both fences here (step 6).
    hazard.store(count << 16 | kInPass | relid, std::memory_order_seq_cst);
  }
  // [CT-D2] seq_cst load of the slot. Acquire pairs with Publish's [CT-P1] (the target is
  // fully built); seq_cst for the handshake with Unpublish (step 6).
  EventTarget* target = table_->slots_[relid].load(std::memory_order_seq_cst);
  bool again = false;
  if (target == nullptr) {
    // Not published (never, or unpublished): a spurious or hostile signal. Counted; the bit is
    // already clear, so it cannot make us spin.
    ++stats.spurious;
  } else {
    ++stats.delivered;
    DeliveryScope scope(table_);
    again = target->OnEvent(relid);
  }
  // [CT-D3] release: every use of the target happens-before an InUse that reads this (or a
  // later) value with [CT-U2] (step 7).
  hazard.store(count << 16 | kInPass, std::memory_order_release);
  return again;
}

void ChannelTable::Dispatcher::BeginPass() {
  inside_ = true;
  // [CT-D5] seq_cst: the pass is announced before any slot load in it. A reader whose
  // seq_cst [CT-U2] finds no pass announced needs no process barrier for this dispatcher:
  // [CT-U1] precedes [CT-U2], which precedes [CT-D5] and so every [CT-D2] of the pass in the
  // single total order (step 6). One locked store per pass, not per delivery.
  table_->dispatchers_[index_].hazard.store(deliveries_ << 16 | kInPass, std::memory_order_seq_cst);
}

void ChannelTable::Dispatcher::Finish(const DispatchStats& stats) {
  // [CT-D6] release: the pass's deliveries happen-before a reader's [CT-U2] that sees it end.
  table_->dispatchers_[index_].hazard.store(deliveries_ << 16, std::memory_order_release);
  inside_ = false;
  delivered_ += stats.delivered;
  spurious_ += stats.spurious;
  if (stats.spurious != 0) {
    table_->spurious_total_.fetch_add(stats.spurious, std::memory_order_relaxed);
  }
}

DispatchStats ChannelTable::Dispatcher::Dispatch(EventPage& page) {
  DispatchStats stats;
  if (inside_) {
    // Its hazard word announces the outer delivery; a nested one would overwrite it.
    stats.refused_nested = true;
    return stats;
  }
  BeginPass();
  // [EP-C1] in EventPage::Scan test-and-clears each word (argument step 4). A target that asks
  // for another delivery gets its bit back: the next scan serves it after the other bits.
  page.Scan([&](uint32_t relid) {
    if (Deliver(relid, stats)) {
      ++stats.requeued;
      page.Set(relid).IgnoreError();  // relid came from the page: in range
    }
  });
  Finish(stats);
  return stats;
}

DispatchStats ChannelTable::Dispatcher::DispatchRelid(uint32_t relid) {
  DispatchStats stats;
  if (inside_) {
    stats.refused_nested = true;
    return stats;
  }
  if (!protocol::IsValidRelid(relid)) {
    stats.spurious = 1;
    spurious_ += 1;
    table_->spurious_total_.fetch_add(1, std::memory_order_relaxed);
    return stats;
  }
  BeginPass();
  if (Deliver(relid, stats)) stats.requeued = 1;
  Finish(stats);
  return stats;
}

// ---------------------------------------------------------------------------------------------
// Publish / unpublish
// ---------------------------------------------------------------------------------------------

absl::Status ChannelTable::Publish(uint32_t relid, EventTarget* target) {
  if (absl::Status s = ValidateRelid(relid); !s.ok()) return s;
  if (target == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("publish of relid %u: null target", relid));
  }
  EventTarget* expected = nullptr;
  // [CT-P1] seq_cst (release) compare-exchange: pairs with the dispatchers' [CT-D2]; the
  // caller sends OpenChannel only after this returns (argument steps 1-2).
  if (!slots_[relid].compare_exchange_strong(expected, target, std::memory_order_seq_cst,
                                             std::memory_order_relaxed)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("relid %u is already published; unpublish it first", relid));
  }
  return absl::OkStatus();
}

absl::Status ChannelTable::Unpublish(uint32_t relid, EventTarget* expected) {
  if (absl::Status s = ValidateRelid(relid); !s.ok()) return s;
  EventTarget* held = expected;
  // [CT-U1] seq_cst compare-exchange: no dispatcher whose [CT-D2] comes after this can find
  // `expected` (argument step 6). Only the expected target is cleared.
  if (slots_[relid].compare_exchange_strong(held, nullptr, std::memory_order_seq_cst,
                                            std::memory_order_relaxed)) {
    return absl::OkStatus();
  }
  if (held == nullptr) {
    return absl::NotFoundError(absl::StrFormat("unpublish of relid %u: not published", relid));
  }
  return absl::FailedPreconditionError(absl::StrFormat(
      "unpublish of relid %u: the slot holds another channel; left as it is", relid));
}

uint64_t ChannelTable::ReadHazard(size_t i, bool& fenced) const {
  // [CT-U2] seq_cst (acquire): step 6; reading a withdrawal pairs with [CT-D3] or [CT-D6]
  // (step 7).
  const uint64_t seen = dispatchers_[i].hazard.load(std::memory_order_seq_cst);
  if (!asymmetric_ || fenced || (seen & kInPass) == 0) return seen;
  // [CT-U5] In a pass, whose announcements are plain stores: the process barrier makes every
  // [CT-D1] that came before its slot load [CT-D2] visible, and every [CT-D2] after it reads
  // what [CT-U1] stored (step 6). Once per call: it covers every dispatcher read after it.
  syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
  fenced = true;
  // [CT-U6] seq_cst (acquire) re-read after the barrier; pairs like [CT-U2].
  return dispatchers_[i].hazard.load(std::memory_order_seq_cst);
}

bool ChannelTable::InUse(uint32_t relid) const {
  bool fenced = false;
  // [CT-U3] seq_cst: dispatchers registered after this load cannot have seen the old pointer
  // (argument step 8).
  uint64_t mask = registered_.load(std::memory_order_seq_cst);
  while (mask != 0) {
    const size_t i = static_cast<size_t>(std::countr_zero(mask));
    mask &= mask - 1;
    if ((ReadHazard(i, fenced) & kRelidMask) == relid) return true;
  }
  return false;
}

bool ChannelTable::DispatchingHere() const { return t_dispatching == this; }

absl::Status ChannelTable::AwaitChange(size_t i, uint64_t seen, absl::Time deadline) const {
  // Deliveries last microseconds: spin briefly, then yield, then sleep in short steps; the
  // deadline bounds the whole wait.
  for (int spins = 0;; ++spins) {
    // [CT-U4] acquire, pairs with the dispatcher's [CT-D3] (step 7).
    if (dispatchers_[i].hazard.load(std::memory_order_acquire) != seen) return absl::OkStatus();
    if (spins < 64) continue;
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrFormat("dispatcher %u is still delivering relid %u", i,
                          static_cast<uint32_t>(seen & kRelidMask)));
    }
    if (spins < 1024) {
      std::this_thread::yield();
    } else {
      absl::SleepFor(absl::Microseconds(50));
    }
  }
}

absl::Status ChannelTable::WaitUntilUnused(uint32_t relid, absl::Time deadline) const {
  if (DispatchingHere()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "waiting for relid %u from inside a dispatch callback would wait for itself", relid));
  }
  return AwaitDeliveries(relid, deadline);
}

absl::Status ChannelTable::WaitForQuiescence(absl::Time deadline) const {
  if (DispatchingHere()) {
    return absl::FailedPreconditionError(
        "WaitForQuiescence from inside a dispatch callback would wait for itself");
  }
  return AwaitDeliveries(0, deadline);
}

absl::Status ChannelTable::AwaitDeliveries(uint32_t relid, absl::Time deadline) const {
  bool fenced = false;
  uint64_t mask = registered_.load(std::memory_order_seq_cst);  // [CT-U3]
  while (mask != 0) {
    const size_t i = static_cast<size_t>(std::countr_zero(mask));
    mask &= mask - 1;
    const uint64_t seen = ReadHazard(i, fenced);
    const uint64_t delivering = seen & kRelidMask;
    if (delivering == 0 || (relid != 0 && delivering != relid)) continue;
    if (absl::Status s = AwaitChange(i, seen, deadline); !s.ok()) return s;
  }
  return absl::OkStatus();
}

EventTarget* ChannelTable::Lookup(uint32_t relid) const {
  if (relid >= protocol::kRelidCount) return nullptr;
  // [CT-L1] acquire, pairs with [CT-P1].
  return slots_[relid].load(std::memory_order_acquire);
}

}  // namespace vbus
