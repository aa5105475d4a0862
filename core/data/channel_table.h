// ChannelTable: relid → channel, the lookup at the heart of event dispatch.
//
// A fixed array of 2048 atomic pointers indexed by relid (as Linux has used since 2020): no
// per-CPU lists and no lock on the dispatch side. A slot points to an `EventTarget`, the
// abstract receiver of "relid N has work" (the guest's channels implement it; tests and the
// host side may implement it too). Dispatchers — the threads that take interrupts (a vCPU thread
// of the fake hypervisor, the mock backend's doorbell waiter, an ISR) — register once and then
// call `Dispatcher::Dispatch(page)`, which scans an EventPage and calls `OnEvent` on the target
// of each set bit. A set bit with no published target is counted as a spurious event (a
// hostile or late host, or a signal racing an unpublish) and otherwise ignored.
//
// Lifetime, by hazard announcement (one word per dispatcher, no reference counting):
// `Publish` stores the pointer before the channel's OpenChannel is sent. `Unpublish` clears
// the slot (compare-and-clear: only the expected target) and never waits. A dispatcher
// announces the relid it is about to deliver in its hazard word before loading the slot, and
// withdraws the announcement after OnEvent returns. `InUse(relid)` says whether any dispatcher
// announces the relid now; the first `InUse` that returns false after the `Unpublish` proves
// that no dispatcher still holds the old target, which the caller may then free. A slow
// OnEvent therefore holds up only its own relid: unpublishing another relid is never delayed
// by it.
//
// The ordering argument (the one the Linux relid-array discussion made, in C++ terms; the
// labels appear at the atomics in channel_table.cc and event_page.h):
//   1. [CT-P1] Publish stores the slot with release order (a seq_cst compare-exchange) on the
//      control thread.
//   2. The control thread then sends OpenChannel. Whatever carries that message (a SynIC post,
//      a gRPC stream, a mutex-protected queue) orders it after [CT-P1].
//   3. The host receives OpenChannel, so everything before [CT-P1] happens-before the host's
//      reaction; it writes the ring and sets the relid's bit with release order ([EP-S1] in
//      EventPage::Set; on real Hyper-V the hypervisor's own barriers play that role).
//   4. [EP-C1] The dispatcher test-and-clears the bit with an acq_rel exchange; it reads the
//      host's [EP-S1] store, so [CT-P1] happens-before everything after [EP-C1].
//   5. [CT-D1] The dispatcher announces the relid in its hazard word, then [CT-D2] loads the
//      slot (seq_cst load): by 4 it sees the published pointer (or a later one), and acquire
//      pairs with [CT-P1] so the target's fields written before publishing are visible even
//      to an event that raced ahead of step 3 (a hostile host signalling before the open).
//   Unpublish is the mirror image:
//   6. [CT-U1] Unpublish clears the slot (seq_cst compare-exchange); [CT-U2] InUse then reads
//      every registered dispatcher's hazard word. Both sides store then load, so each needs a
//      full fence between the two, and the per-delivery fence sits on the rare side:
//      - A dispatch pass starts with [CT-D5], a seq_cst store marking the word "in a pass".
//        If [CT-U2] (seq_cst) finds no pass, then [CT-U1] < [CT-U2] < [CT-D5] < every [CT-D2]
//        of the next pass in the single total order: those read null. Never neither.
//      - Within a pass, [CT-D1] announces each relid with a plain (release) store. If
//        [CT-U2] finds a pass, [CT-U5] runs a process-wide barrier (Linux membarrier,
//        PRIVATE_EXPEDITED: every thread of the process passes a full fence at some point P
//        during it) and [CT-U6] reads the word again. A dispatcher whose [CT-D1] came before
//        its P has it visible by then, so [CT-U6] sees the announcement — unless the
//        dispatcher already withdrew it (step 7). A dispatcher whose [CT-D1], and so its
//        [CT-D2], came after its P reads what [CT-U1] stored before the barrier began: null,
//        a spurious event. Never neither.
//      So a pass costs one locked store, a delivery a plain store and a compiler barrier, and
//      an InUse that finds a pass a few microseconds. Where the kernel refuses membarrier,
//      [CT-D4] announces each relid with a seq_cst store instead (and [CT-U2] is seq_cst):
//      the single total order gives the same either-or.
//   7. [CT-D3] The dispatcher withdraws its announcement with release order after its last
//      use of the target; [CT-U2]'s acquire that reads the withdrawal (or any later value of
//      the word) therefore happens-after that use, and freeing the target afterwards is safe.
//   8. Dispatchers registering concurrently: [CT-G1] sets the registration bit (seq_cst)
//      before the dispatcher's first [CT-D1]; [CT-U3] reads the mask (seq_cst) after
//      [CT-U1]. A dispatcher InUse does not see registered cannot have loaded the old pointer
//      (same argument as 6).
//   A dispatcher that announces the relid after [CT-U1] (it will find null) may make InUse
//   say true once more: conservative, never unsafe. So may a delivery to a *new* target
//   published on the same relid later: InUse answers for the relid, not for one target.
//
// Example:
//   ChannelTable table;
//   absl::StatusOr<ChannelTable::Dispatcher> d = table.RegisterDispatcher();  // per thread
//   absl::Status s = table.Publish(relid, &channel);   // then send OpenChannel
//   ... interrupt: d->Dispatch(event_page);             // channel.OnEvent(relid) runs here
//   s = table.Unpublish(relid, &channel);              // no new event reaches it
//   while (table.InUse(relid)) { ... come back later ... }
//   delete &channel;                                   // no dispatcher can still touch it
#ifndef VBUS_CORE_DATA_CHANNEL_TABLE_H_
#define VBUS_CORE_DATA_CHANNEL_TABLE_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/data/event_page.h"
#include "core/data/protocol.h"

namespace vbus {

// EventTarget
// What a ChannelTable slot points to. Implemented by the guest's channels (and by test
// targets).
class EventTarget {
 public:
  virtual ~EventTarget() = default;

  // OnEvent
  // The peer signalled `relid` (this target's relid). Runs on a dispatcher thread while the
  // dispatcher announces the relid: it must not block (a long OnEvent delays the unpublish of
  // this relid and every other event of this dispatcher), must not wait for this table
  // (WaitUntilUnused / WaitForQuiescence return FailedPrecondition there) and should drain
  // the channel's incoming ring or hand work to an executor. Several dispatchers may call
  // OnEvent for the same target concurrently if several EventPages feed one table; with one
  // EventPage each set bit is delivered to exactly one dispatcher.
  // Returns true to be delivered again on the dispatcher's next pass: the target stopped at
  // its budget with work left (Dispatch sets the relid's bit again so that the other set bits
  // are served first). False when it has nothing left.
  virtual bool OnEvent(uint32_t relid) = 0;
};

// DispatchStats: what one Dispatch call did.
struct DispatchStats {
  uint32_t delivered = 0;  // OnEvent calls
  uint32_t spurious = 0;   // set bits (or relids) with no published target
  uint32_t requeued = 0;   // OnEvent calls that asked to be delivered again
  // Dispatch was called on a dispatcher that was already inside Dispatch on this thread (from
  // an OnEvent): nothing was scanned, the bits stay set for the outer pass or the next one.
  bool refused_nested = false;
};

class ChannelTable {
 public:
  static constexpr size_t kMaxDispatchers = 64;

  // `use_process_barrier`: take the store-then-load fence of the hazard handshake off the
  // per-delivery path (a process-wide barrier in an InUse that finds a pass in progress,
  // instead of a locked store per delivery) where the kernel offers membarrier; false forces
  // the fenced stores (tests run both). See the ordering argument, steps 5-6.
  explicit ChannelTable(bool use_process_barrier = true);
  // All slots must be empty (unpublished) and all dispatchers destroyed before the table is.
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
    // OnEvent; bits with no target are counted as spurious; a target that asks to be
    // delivered again has its bit set again (stats.requeued: scan again). Never blocks (beyond
    // what OnEvent does), never allocates. A nested call on the same dispatcher (from inside an
    // OnEvent it runs) is refused: see DispatchStats::refused_nested.
    DispatchStats Dispatch(EventPage& page);

    // DispatchRelid
    // Delivers one event for `relid` (for backends that learn relids another way). An
    // out-of-range relid or an empty slot counts as spurious; stats.requeued = 1 means the
    // target wants another delivery (the caller decides when).
    DispatchStats DispatchRelid(uint32_t relid);

    // Totals over this dispatcher's lifetime.
    uint64_t delivered() const { return delivered_; }
    uint64_t spurious() const { return spurious_; }

   private:
    friend class ChannelTable;
    Dispatcher(ChannelTable* table, size_t index) : table_(table), index_(index) {}
    // Announces `relid`, loads its slot, calls OnEvent, withdraws the announcement.
    // Announces a pass ([CT-D5]); Finish ends it ([CT-D6]).
    void BeginPass();
    bool Deliver(uint32_t relid, DispatchStats& stats);
    void Finish(const DispatchStats& stats);

    ChannelTable* table_;
    size_t index_;
    bool inside_ = false;  // inside Dispatch / DispatchRelid (only this dispatcher's thread)
    uint64_t deliveries_ = 0;
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
  // target; AlreadyExists if the slot holds a target (unpublish it first). Any thread.
  absl::Status Publish(uint32_t relid, EventTarget* target);

  // Unpublish
  // Clears `relid`'s slot if it holds `expected`; never waits. After it no new event reaches
  // `expected`; a delivery already in progress may still run (see InUse). InvalidArgument for a
  // bad relid; NotFound if the slot is empty; FailedPrecondition (slot left alone) if it holds
  // another target. Any thread, including inside OnEvent.
  absl::Status Unpublish(uint32_t relid, EventTarget* expected);

  // InUse
  // Whether a dispatcher is delivering an event for `relid` right now. After an Unpublish of
  // `relid`, the first InUse that returns false proves that no dispatcher still uses the
  // target it held (the ordering argument, steps 6-8). Lock-free, never waits. Any thread.
  bool InUse(uint32_t relid) const;

  // WaitUntilUnused
  // Waits until InUse(relid) is false. DeadlineExceeded naming the dispatcher if one still
  // delivers the relid at `deadline`; FailedPrecondition if called from inside OnEvent (it
  // would wait for itself). For tests and simple owners; the bus runtime never waits here.
  absl::Status WaitUntilUnused(uint32_t relid, absl::Time deadline) const;

  // WaitForQuiescence
  // Returns once every delivery that was in progress on entry has finished (an RCU grace
  // period). DeadlineExceeded naming the stuck dispatcher if one stays in the same delivery
  // past `deadline`; FailedPrecondition if called from inside OnEvent.
  absl::Status WaitForQuiescence(absl::Time deadline) const;

  // Lookup
  // The target published for `relid`, or nullptr (also for out-of-range relids). The pointer
  // may be unpublished at any moment: only dereference it inside OnEvent or from the thread
  // that controls publishing. Any thread.
  EventTarget* Lookup(uint32_t relid) const;

  // Spurious events counted by all dispatchers so far.
  uint64_t spurious_events() const { return spurious_total_.load(std::memory_order_relaxed); }

 private:
  // A dispatcher's hazard word: (deliveries << 16) | kInPass | relid while delivering,
  // (deliveries << 16) | kInPass between the deliveries of a pass, (deliveries << 16) outside
  // one (relid 0 is never a channel). The count makes every delivery's value unique, so a
  // waiter can tell "the same delivery" from "a new delivery of the same relid". One cache line
  // per dispatcher so dispatchers do not share lines.
  struct alignas(64) DispatcherSlot {
    std::atomic<uint64_t> hazard{0};
  };
  static constexpr uint64_t kRelidMask = 0x7FFF;
  static constexpr uint64_t kInPass = 0x8000;

  void Unregister(size_t index);
  // Reads dispatcher `i`'s hazard word for a reader that unpublished before the call: after a
  // process barrier ([CT-U5], once per call: `fenced`) if the dispatcher is in a pass.
  uint64_t ReadHazard(size_t i, bool& fenced) const;
  // The thread is inside an OnEvent of this table (waiting here would wait for itself).
  bool DispatchingHere() const;
  // Waits until no delivery of `relid` (0: of any relid) that was in progress on entry runs.
  absl::Status AwaitDeliveries(uint32_t relid, absl::Time deadline) const;
  // Waits until dispatcher `i`'s hazard word differs from `seen`.
  absl::Status AwaitChange(size_t i, uint64_t seen, absl::Time deadline) const;

  std::array<std::atomic<EventTarget*>, protocol::kRelidCount> slots_;
  std::array<DispatcherSlot, kMaxDispatchers> dispatchers_;
  std::atomic<uint64_t> registered_{0};  // bit i: dispatchers_[i] is in use
  std::atomic<uint64_t> spurious_total_{0};
  // Dispatchers announce with a release store and readers of hazard words run a process
  // barrier first (membarrier registered); otherwise both sides use seq_cst.
  const bool asymmetric_;
};

}  // namespace vbus

#endif  // VBUS_CORE_DATA_CHANNEL_TABLE_H_
