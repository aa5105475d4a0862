// CallResult, CallDone and CallTicket: how a call that waits for the host gets its result, and
// how a caller that stops waiting makes sure the result it reports is the truth.
//
// Every bus call (open, close, GPADL create/teardown, modify, connect, unload) is started on
// the bus's executor (core/runtime/bus_executor.h) with a CallDone. When the operation finishes,
// the executor first *claims* the call, then applies the result (e.g. enables sending on an opened
// channel), then *completes* it. A blocking caller waits on a CallTicket; if its deadline passes
// first it *abandons* the ticket. Exactly one of claim and abandon wins:
//   - abandon wins: the caller reports DeadlineExceeded, and the executor, finding the claim
//     refused, undoes what the operation did (closes the channel it opened, tears down the GPADL
//     it created): nothing is left behind;
//   - claim wins: the result is on its way (the executor completes it without blocking), and
//     the caller waits for it and reports it — so a late success is reported as a success.
//
// Example (a blocking call):
//   auto ticket = std::make_shared<CallTicket>();
//   executor.Open(channel, options, deadline, CallDone::For(ticket));   // on the executor
//   if (!ticket->Wait(deadline + grace) && ticket->Abandon())
//     return absl::DeadlineExceededError("...");                        // undone by the executor
//   return ticket->result().status;
//
// Thread-safe.
#ifndef VBUS_CORE_RUNTIME_CALL_TICKET_H_
#define VBUS_CORE_RUNTIME_CALL_TICKET_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/runtime/sync.h"

namespace vbus {

// CallResult: what a finished call reports.
struct CallResult {
  CallResult() = default;
  // NOLINTNEXTLINE(google-explicit-constructor): a bare status is the common result
  CallResult(absl::Status s) : status(std::move(s)) {}

  absl::Status status;
  // GPADL creation: the new handle, the guest's mapping of its pages and their PFNs.
  uint32_t gpadl = 0;
  absl::Span<uint8_t> memory;
  std::vector<uint64_t> pfns;
  // Connect: the agreed protocol version.
  uint32_t version = 0;
};

// CallTicket: a blocking caller's side of one call.
class CallTicket {
 public:
  CallTicket() = default;
  CallTicket(const CallTicket&) = delete;
  CallTicket& operator=(const CallTicket&) = delete;

  // Claim (executor): the operation finished; false if the caller abandoned the ticket first
  // (then Complete must not be called and the operation must be undone).
  bool Claim() {
    MutexLock lock(&mu_);
    if (state_ != State::kWaiting) return false;
    state_ = State::kClaimed;
    return true;
  }

  // Complete (executor, after a successful Claim): hands the result over and wakes the caller.
  void Complete(CallResult result) {
    MutexLock lock(&mu_);
    result_ = std::move(result);
    state_ = State::kDone;
    cv_.SignalAll();
  }

  // Wait (caller): true once the result is there (result()), false at `deadline`.
  bool Wait(absl::Time deadline) {
    MutexLock lock(&mu_);
    return cv_.AwaitWithDeadline(&mu_, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return state_ == State::kDone;
    });
  }

  // Abandon (caller): gives up. True if no claim came first: the executor will undo the
  // operation and never complete the ticket. False if it was claimed: the result is coming
  // (the executor completes a claimed call without blocking), so Wait for it.
  bool Abandon() {
    MutexLock lock(&mu_);
    if (state_ != State::kWaiting) return false;
    state_ = State::kAbandoned;
    return true;
  }

  // The result, after Wait returned true.
  const CallResult& result() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return result_; }

 private:
  enum class State { kWaiting, kClaimed, kDone, kAbandoned };
  Mutex mu_;
  CondVar cv_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kWaiting;
  CallResult result_ ABSL_GUARDED_BY(mu_);
};

// CallDone: where the executor sends a call's result (claim, then complete).
struct CallDone {
  // False: the caller gave up; undo instead of completing.
  std::function<bool()> claim;
  std::function<void(const CallResult&)> complete;

  // A blocking caller's ticket.
  static CallDone For(std::shared_ptr<CallTicket> ticket) {
    return CallDone{[ticket] { return ticket->Claim(); },
                    [ticket](const CallResult& r) { ticket->Complete(r); }};
  }
  // An asynchronous caller (never gives up): `done` gets the result.
  static CallDone Async(std::function<void(const CallResult&)> done) {
    return CallDone{[] { return true; }, std::move(done)};
  }
  // Claim and complete in one step; false (result dropped) if the caller gave up.
  bool Finish(const CallResult& result) const {
    if (!claim()) return false;
    complete(result);
    return true;
  }
};

// AwaitTicket
// Waits for `ticket` until `deadline` + `grace` (no limit for InfiniteFuture). A caller still
// waiting then abandons the ticket — the executor undoes the call — and gets DeadlineExceeded
// naming `what`; a ticket claimed just before is waited for (its result follows at once).
inline CallResult AwaitTicket(CallTicket& ticket, absl::Time deadline, absl::Duration grace,
                              absl::string_view what) {
  const absl::Time until = deadline == absl::InfiniteFuture() ? deadline : deadline + grace;
  if (ticket.Wait(until)) return ticket.result();
  if (ticket.Abandon()) {
    return {absl::DeadlineExceededError(
        absl::StrCat(what, ": no result by the deadline (what it started is undone)"))};
  }
  // Claimed as we gave up: the executor completes a claimed call without blocking.
  if (ticket.Wait(absl::Now() + absl::Seconds(10))) return ticket.result();
  return {absl::DeadlineExceededError(
      absl::StrCat(what, ": the bus claimed the result but did not deliver it"))};
}

}  // namespace vbus

#endif  // VBUS_CORE_RUNTIME_CALL_TICKET_H_
