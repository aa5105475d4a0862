// EventDispatch: one interrupt source's dispatch point — an event page (the receive event flags
// of one virtual processor), the ChannelTable dispatcher that scans it, and the hand-off that
// lets any number of threads raise it while at most one scans.
//
// A backend calls Raise() whenever the host may have set bits in the page (an interrupt, a
// doorbell waking a waiter, a spurious wake-up): from any thread, concurrently, as often as it
// likes. The raising thread scans unless another thread is scanning already; then it leaves the
// work to that thread, which scans again before it lets go. A channel that stops at its drain
// budget with packets left is delivered again on the next pass, after the other set bits.
//
// Start-up: raises that come before Attach (while the backend is starting) find no page; they
// are not lost — Attach scans the page once itself, and the hand-off below makes sure that scan
// sees every bit those raises announced.
//
// The hand-off (labels at the atomics in event_dispatch.cc):
//   [ED-K1] Raise announces work with a seq_cst read-modify-write of `pending_` (an RMW, so the
//           flag's modification order is one release sequence: whoever later takes the flag
//           with [ED-K5] synchronizes with every announcer, and the bits they saw set are
//           visible to its scan).
//   [ED-R2] It then reads `ready_` (seq_cst). Attach stores `ready_` ([ED-R1], seq_cst) and
//           then raises itself: either a raiser sees the page attached, or Attach's take of
//           the flag reads its announcement (store-then-load on both sides, all seq_cst).
//   [ED-K2] The raiser tries to become the scanner (CAS on `scanning_`, acquire on success,
//           pairing with the previous scanner's [ED-K3] release: its use of the dispatcher
//           happens-before ours). On failure it returns: the scanner's re-check [ED-K4] reads
//           `pending_` after its [ED-K3]; in the single seq_cst order [ED-K1] < failed [ED-K2]
//           < [ED-K3] < [ED-K4], so the scanner sees the announcement and scans again.
//   [ED-K5] The scanner takes the flag (seq_cst exchange) before each pass.
//
// Example (a backend's doorbell thread):
//   for (;;) { WaitForDoorbell(); dispatch.Raise(); }
#ifndef VBUS_CORE_RUNTIME_EVENT_DISPATCH_H_
#define VBUS_CORE_RUNTIME_EVENT_DISPATCH_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/data/channel_table.h"
#include "core/data/event_page.h"

namespace vbus {

// EventDispatchStats: counters (relaxed snapshots).
struct EventDispatchStats {
  uint64_t raised = 0;     // Raise calls
  uint64_t passes = 0;     // scans of the page
  uint64_t delivered = 0;  // OnEvent calls
  uint64_t requeued = 0;   // deliveries that asked for another pass (drain budget)
};

class EventDispatch {
 public:
  // Create
  // Registers a dispatcher with `table` (which must outlive this object). ResourceExhausted
  // when the table has no dispatcher slot left.
  static absl::StatusOr<std::unique_ptr<EventDispatch>> Create(ChannelTable* table);

  // Every Raise must have returned before destruction (stop the backend first).
  ~EventDispatch() = default;
  EventDispatch(const EventDispatch&) = delete;
  EventDispatch& operator=(const EventDispatch&) = delete;

  // Attach
  // The event flags to scan (at least 256 bytes, 8-byte aligned; they must outlive this
  // object), then one pass for whatever was raised before. InvalidArgument for bad flags;
  // FailedPrecondition if already attached. Any thread, once.
  absl::Status Attach(absl::Span<uint8_t> flags);

  // Raise
  // The host may have set bits: scan (here, or by the thread scanning now). Never blocks
  // beyond the channels' callbacks; never allocates. Any thread, concurrently.
  void Raise();

  EventDispatchStats stats() const;

 private:
  explicit EventDispatch(ChannelTable::Dispatcher dispatcher)
      : dispatcher_(std::move(dispatcher)) {}

  // Used only by the thread that holds scanning_.
  ChannelTable::Dispatcher dispatcher_;
  std::optional<EventPage> page_;  // set before ready_ ([ED-R1])
  std::atomic<bool> ready_{false};
  std::atomic<bool> pending_{false};
  std::atomic<bool> scanning_{false};

  std::atomic<uint64_t> raised_{0};
  std::atomic<uint64_t> passes_{0};
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> requeued_{0};
};

}  // namespace vbus

#endif  // VBUS_CORE_RUNTIME_EVENT_DISPATCH_H_
