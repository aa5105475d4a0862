// ChannelTable: relid → channel, the lookup at the heart of event dispatch.
//
// A fixed array of 2048 atomic pointers indexed by relid (as Linux has used since 2020): no
// per-CPU lists and no lock on the dispatch side. A slot points to an `EventTarget`, the
// abstract receiver of "relid N has work" (the guest `Channel` implements it; tests and the
// host side may implement it too). Dispatchers — the threads that take interrupts (a vCPU thread
// of the fake hypervisor, the mock backend's doorbell waiter, an ISR) — register once and then
// call `Dispatcher::Dispatch(page)`, which scans an EventPage and calls `OnEvent` on the
// target of each set bit. A set bit with no published target is counted as a spurious event
// (a hostile or late host, or a signal racing a retire) and otherwise ignored.
//
// Lifetime, RCU-style: `Publish` stores the pointer before the channel's OpenChannel is sent;
// `Retire` clears the slot and then waits until every dispatcher that might still hold the old
// pointer has left its dispatch section (each dispatcher has a sequence counter, odd while
// inside). Only then may the caller free the target. No reference counting on the hot path.
//
// The ordering argument (the one the Linux relid-array discussion made, in C++ terms; the
// labels appear at the atomics in channel_table.cc and event_page.h):
//   1. [P1] Publish stores the slot with release order (seq_cst) on the control thread.
//   2. The control thread then sends OpenChannel. Whatever carries that message (a SynIC post,
//      a gRPC stream, a mutex-protected queue) orders it after [P1].
//   3. The host receives OpenChannel, so everything before [P1] happens-before the host's
//      reaction; it writes the ring and sets the relid's bit with release order ([E1] in
//      EventPage::Set; on real Hyper-V the hypervisor's own barriers play that role).
//   4. [S1] The dispatcher test-and-clears the bit with an acq_rel exchange; it reads the
//      host's [E1] store, so [P1] happens-before everything after [S1].
//   5. [D2] The dispatcher loads the slot (acquire, seq_cst): by 4 it sees the published
//      pointer (or a later one), and acquire pairs with [P1] so the target's fields written
//      before publishing are visible even to an event that raced ahead of step 3 (a hostile
//      host signalling before the open).
//   Retire is the mirror image:
//   6. [R1] Retire stores null into the slot (seq_cst) and then [R3] reads every registered
//      dispatcher's counter (seq_cst). A dispatcher makes its counter odd with [D0] (seq_cst)
//      before its [D2] loads. Store-then-load on both sides, all seq_cst: either Retire sees
//      the odd counter (and waits), or the dispatcher's [D2] sees null (and counts a spurious
//      event). Never neither.
//   7. [D3] The dispatcher makes its counter even with release order after its last use of a
//      target; Retire's [R4] acquire load that sees the change therefore happens-after that
//      use, and freeing the target afterwards is safe.
//   8. Dispatchers registering concurrently: [G1] sets the registration bit (seq_cst) before
//      the dispatcher's first [D0]; [R2] reads the mask (seq_cst) after [R1]. A dispatcher
//      Retire does not see registered cannot have loaded the old pointer (same argument as 6).
//
// Example:
//   ChannelTable table;
//   absl::StatusOr<ChannelTable::Dispatcher> d = table.RegisterDispatcher();  // per thread
//   absl::Status s = table.Publish(relid, &channel);  // then send OpenChannel
//   ... interrupt: d->Dispatch(event_page);            // channel.OnEvent(relid) runs here
//   absl::StatusOr<EventTarget*> gone = table.Retire(relid, absl::Now() + absl::Seconds(1));
//   if (gone.ok()) delete *gone;                       // no dispatcher can still touch it
#ifndef VBUS_CORE_CHANNEL_TABLE_H_
#define VBUS_CORE_CHANNEL_TABLE_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/event_page.h"

namespace vbus {

// EventTarget
// What a ChannelTable slot points to. Implemented by the guest Channel (and by test targets).
class EventTarget {
 public:
  virtual ~EventTarget() = default;

  // OnEvent
  // The peer signalled `relid` (this target's relid). Runs on a dispatcher thread, inside its
  // dispatch section: it must not block, must not call ChannelTable::Retire or
  // WaitForQuiescence (that would wait for itself; they return FailedPrecondition), and
  // should drain the channel's incoming ring or hand work to an executor. Several dispatchers
  // may call OnEvent for the same target concurrently if several EventPages feed one table;
  // with one EventPage each set bit is delivered to exactly one dispatcher.
  virtual void OnEvent(uint32_t relid) = 0;
};

// DispatchStats: what one Dispatch call did.
struct DispatchStats {
  uint32_t delivered = 0;  // OnEvent calls
  uint32_t spurious = 0;   // set bits (or relids) with no published target
};

class ChannelTable {
 public:
  static constexpr size_t kMaxDispatchers = 64;

  ChannelTable();
  // All slots must be empty (retired) and all dispatchers destroyed before the table is.
  ~ChannelTable();
  ChannelTable(const ChannelTable&) = delete;
  ChannelTable& operator=(const ChannelTable&) = delete;

  // Dispatcher
  // A registered dispatching thread's handle (move-only; destruction unregisters). One thread
  // uses a Dispatcher at a time; different Dispatchers run concurrently.
  class Dispatcher {
   public:
    Dispatcher(Dispatcher&& other) noexcept;
    Dispatcher& operator=(Dispatcher&& other) noexcept;
    Dispatcher(const Dispatcher&) = delete;
    Dispatcher& operator=(const Dispatcher&) = delete;
    ~Dispatcher();

    // Dispatch
    // Scans `page` (test-and-clear each set bit), looks each relid up and calls its target's
    // OnEvent; bits with no target are counted as spurious. One dispatch section for the whole
    // scan. Never blocks (beyond what OnEvent does), never allocates.
    DispatchStats Dispatch(EventPage& page);

    // DispatchRelid
    // Delivers one event for `relid` (for backends that learn relids another way). An
    // out-of-range relid or an empty slot counts as spurious.
    DispatchStats DispatchRelid(uint32_t relid);

    // Totals over this dispatcher's lifetime.
    uint64_t delivered() const { return delivered_; }
    uint64_t spurious() const { return spurious_; }

   private:
    friend class ChannelTable;
    Dispatcher(ChannelTable* table, size_t index) : table_(table), index_(index) {}
    void Enter();
    void Exit(const DispatchStats& stats);
    void Deliver(uint32_t relid, DispatchStats& stats);

    ChannelTable* table_;
    size_t index_;
    const ChannelTable* outer_dispatching_ = nullptr;  // restored on Exit (nested dispatch)
    uint64_t delivered_ = 0;
    uint64_t spurious_ = 0;
  };

  // RegisterDispatcher
  // A handle for one dispatching thread. ResourceExhausted when kMaxDispatchers are
  // registered. Any thread (lock-free).
  absl::StatusOr<Dispatcher> RegisterDispatcher();

  // Publish
  // Makes `target` the receiver of events for `relid`. Call before sending OpenChannel (see
  // the ordering argument above). InvalidArgument for relid 0, relid >= 2048 or a null
  // target; AlreadyExists if the slot holds a target (retire it first). Any thread.
  absl::Status Publish(uint32_t relid, EventTarget* target);

  // Retire
  // Clears `relid`'s slot, then waits until no dispatcher can still be using the old target
  // (WaitForQuiescence). Returns the retired target, which the caller may then free.
  // InvalidArgument for a bad relid; NotFound if the slot is empty; FailedPrecondition if
  // called from inside OnEvent; DeadlineExceeded if a dispatcher stayed inside one dispatch
  // section until `deadline` — the slot is cleared anyway (no new event reaches the target)
  // but the target may still be in use: do not free it until WaitForQuiescence succeeds.
  // Any thread except a dispatcher inside OnEvent.
  absl::StatusOr<EventTarget*> Retire(uint32_t relid, absl::Time deadline);

  // WaitForQuiescence
  // Returns once every dispatcher that was inside a dispatch section on entry has left it
  // (an RCU grace period). DeadlineExceeded naming the stuck dispatcher if one stays inside
  // past `deadline`; FailedPrecondition if called from inside OnEvent.
  absl::Status WaitForQuiescence(absl::Time deadline);

  // Lookup
  // The target published for `relid`, or nullptr (also for out-of-range relids). The pointer
  // may be retired at any moment: only dereference it inside a dispatch section or from the
  // thread that controls publishing and retiring. Any thread.
  EventTarget* Lookup(uint32_t relid) const;

  // Spurious events counted by all dispatchers so far.
  uint64_t spurious_events() const { return spurious_total_.load(std::memory_order_relaxed); }

 private:
  // One cache line per dispatcher counter so dispatchers do not share lines.
  struct alignas(64) DispatcherSlot {
    std::atomic<uint64_t> sequence{0};  // odd while inside a dispatch section
  };

  void Unregister(size_t index);

  std::array<std::atomic<EventTarget*>, protocol::kRelidCount> slots_;
  std::array<DispatcherSlot, kMaxDispatchers> dispatchers_;
  std::atomic<uint64_t> registered_{0};  // bit i: dispatchers_[i] is in use
  std::atomic<uint64_t> spurious_total_{0};
};

}  // namespace vbus

#endif  // VBUS_CORE_CHANNEL_TABLE_H_
