// BusExecutor: undoing what a call did after its caller gave up (it was told DeadlineExceeded,
// so what succeeded meanwhile must not stay: an open is closed again, a GPADL torn down, a
// move reverted, a connection dropped), and sending again the teardowns BusState could not
// post (docs/protocol.md §5).
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/runtime/bus_executor.h"

namespace vbus {
namespace {

// An undo whose message the backend could not post is tried again this many times, the
// back-off doubling from kFirstUndoRetry.
constexpr int kUndoAttempts = 6;
constexpr absl::Duration kFirstUndoRetry = absl::Milliseconds(1);
// Teardowns BusState could not post are sent again after this, doubling up to the maximum.
constexpr absl::Duration kFirstTeardownRetry = absl::Milliseconds(1);
constexpr absl::Duration kMaxTeardownRetry = absl::Seconds(1);

}  // namespace

void BusExecutor::Undo(const PendingCall& call, const Complete& complete, Actions* more) {
  counters_.calls_undone.fetch_add(1, std::memory_order_relaxed);
  UndoStep step;
  step.offer = complete.offer;
  switch (complete.kind) {
    case RequestKind::kOpen:
      listener_->Log(absl::StrCat("open of relid ", call.channel->relid(),
                                  " completed after its caller gave up: closing it again"));
      step.kind = RequestKind::kClose;
      break;
    case RequestKind::kGpadlCreate:
      listener_->Log(absl::StrFormat(
          "GPADL 0x%x completed after its caller gave up: tearing it down", complete.gpadl));
      step.kind = RequestKind::kGpadlTeardown;
      step.gpadl = complete.gpadl;
      break;
    case RequestKind::kModifyChannel:
      target_vp_[complete.offer] = call.previous_vp;
      step.kind = RequestKind::kModifyChannel;
      step.target_vp = call.previous_vp;
      break;
    case RequestKind::kConnect:
      if (call.resume) {
        listener_->Log("resume completed after its caller gave up: keeping the connection");
        return;
      }
      listener_->Log("connect completed after its caller gave up: dropping the connection");
      state_.OnLinkLost(absl::CancelledError("connect gave up before the host finished"), more);
      return;
    default:
      return;
  }
  StartUndo(step, more);
}

void BusExecutor::StartUndo(UndoStep step, Actions* more) {
  const absl::Time deadline = listener_->Now() + options_.undo_deadline;
  RequestId id;
  switch (step.kind) {
    case RequestKind::kClose:
      id = state_.Close(step.offer, deadline, more);
      break;
    case RequestKind::kGpadlTeardown:
      id = state_.TeardownGpadl(step.offer, step.gpadl, deadline, more);
      break;
    case RequestKind::kModifyChannel:
      id = state_.ModifyChannel(step.offer, step.target_vp, deadline, more);
      break;
    default:
      return;
  }
  ++step.attempts;
  undoing_.emplace(id, step);  // its Complete may be in `more` already: UndoCompleted finds it
}

void BusExecutor::UndoCompleted(const Complete& complete) {
  auto it = undoing_.find(complete.request);
  if (it == undoing_.end()) return;
  const UndoStep step = it->second;
  undoing_.erase(it);
  // Only a post the backend could not make is worth another try (docs/protocol.md §5); any
  // other failure means there is nothing left to undo (closed, rescinded, disconnected).
  if (complete.status.code() != absl::StatusCode::kResourceExhausted) return;
  if (step.attempts >= kUndoAttempts) {
    Error(absl::StrCat("undo of an abandoned ", RequestKindName(step.kind), " for offer ",
                       step.offer.value(), " gave up after ", step.attempts,
                       " attempts: ", complete.status.ToString()));
    return;
  }
  const absl::Duration backoff = kFirstUndoRetry * (1 << (step.attempts - 1));
  undo_retries_.emplace(listener_->Now() + backoff, step);
}

void BusExecutor::RetryUndos(absl::Time now) {
  while (!undo_retries_.empty() && undo_retries_.begin()->first <= now) {
    const UndoStep step = undo_retries_.begin()->second;
    undo_retries_.erase(undo_retries_.begin());
    Actions out;
    StartUndo(step, &out);
    Execute(std::move(out));
  }
}

void BusExecutor::ScheduleTeardownRetry() {
  if (state_.unsent_teardowns() == 0) {
    teardown_retry_at_ = absl::InfiniteFuture();
    teardown_backoff_ = absl::ZeroDuration();
    return;
  }
  if (teardown_retry_at_ != absl::InfiniteFuture()) return;  // one is due already
  teardown_backoff_ = teardown_backoff_ == absl::ZeroDuration()
                          ? kFirstTeardownRetry
                          : std::min(2 * teardown_backoff_, kMaxTeardownRetry);
  teardown_retry_at_ = listener_->Now() + teardown_backoff_;
}

void BusExecutor::RetryTeardowns(absl::Time now) {
  if (now < teardown_retry_at_) return;
  teardown_retry_at_ = absl::InfiniteFuture();
  Actions out;
  state_.RetryUnsentTeardowns(&out);
  Execute(std::move(out));  // schedules the next try if a post failed again
}

}  // namespace vbus
