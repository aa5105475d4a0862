// SimScheduler: the simulation's virtual clock and event queue.
//
// Nothing in the simulation runs on a thread or reads a real clock. Every happening — a
// control message arriving, an interrupt, a BusState timer, a scenario step — is an event
// scheduled at a virtual time; RunNext() advances the clock to the earliest one and runs it.
// Events at the same time run in the order they were scheduled, so a seed fully determines
// the interleaving.
//
// Events are either work (something the system under test is waiting for: a message in
// flight, a timer, a scenario step) or periodic (polls and scans that recur forever). The
// simulation is idle when no work is scheduled; only periodic events then remain, and they
// alone cannot keep a run going past its progress deadline.
//
// An event's function may itself run events (RunNext, AdvanceTo): a guest callback that blocks
// lets the world go on around it in nested steps, with the clock moving forward as usual.
//
// Example:
//   SimScheduler s(absl::UnixEpoch());
//   s.After(absl::Microseconds(5), SimScheduler::kWork, "deliver", [&] { ... });
//   while (s.HasWork()) s.RunNext();
//
// Thread-compatible; an event's function may schedule, cancel and run other events.
#ifndef VBUS_TEST_SIM_SIM_SCHEDULER_H_
#define VBUS_TEST_SIM_SIM_SCHEDULER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace vbus::sim {

class SimScheduler {
 public:
  enum Kind { kWork, kPeriodic };
  using EventId = uint64_t;

  explicit SimScheduler(absl::Time start) : now_(start), start_(start) {}
  SimScheduler(const SimScheduler&) = delete;
  SimScheduler& operator=(const SimScheduler&) = delete;

  // now: the virtual time (that of the event running, or of the last one run).
  absl::Time now() const { return now_; }
  // Elapsed virtual time since construction.
  absl::Duration elapsed() const { return now_ - start_; }

  // At / After
  // Schedules `fn` at `when` (clamped to now: the past is not reachable). Returns an id for
  // Cancel. `label` names the event in traces.
  EventId At(absl::Time when, Kind kind, std::string label, std::function<void()> fn);
  EventId After(absl::Duration delay, Kind kind, std::string label, std::function<void()> fn) {
    return At(now_ + delay, kind, std::move(label), std::move(fn));
  }

  // Cancel: removes a pending event; false if it already ran or was cancelled.
  bool Cancel(EventId id);

  // RunNext
  // Advances the clock to the earliest event, removes it, calls `before(label)` (if given;
  // e.g. to trace the step before its effects) and runs it. Returns false (doing nothing)
  // when the queue is empty.
  bool RunNext(const std::function<void(absl::string_view label)>& before = nullptr);

  // AdvanceTo
  // Moves the clock forward to `when` without running anything; never backwards, and never
  // past the earliest pending event (it stops there).
  void AdvanceTo(absl::Time when);

  // Whether any work event (as opposed to periodic ones) is pending.
  bool HasWork() const { return work_ > 0; }
  bool empty() const { return queue_.empty(); }
  size_t size() const { return queue_.size(); }
  // The earliest pending event's time.
  std::optional<absl::Time> NextTime() const;

 private:
  struct Entry {
    EventId id;
    Kind kind;
    std::string label;
    std::function<void()> fn;
  };
  using Key = std::pair<absl::Time, uint64_t>;  // (time, scheduling order)

  absl::Time now_;
  const absl::Time start_;
  uint64_t next_order_ = 0;
  EventId next_id_ = 1;
  size_t work_ = 0;
  std::map<Key, Entry> queue_;
  absl::flat_hash_map<EventId, Key> keys_;
};

}  // namespace vbus::sim

#endif  // VBUS_TEST_SIM_SIM_SCHEDULER_H_
