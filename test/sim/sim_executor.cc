// The production executor's wiring into the simulated world: the ChannelLink its channels use
// (posted work becomes a scheduled step), the logs, the one scheduled wake-up at
// next_wakeup(), the thread that is sometimes held up (inputs wait, then run in order), and the
// fault points through which planted bugs reach the production code.
#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "test/sim/sim_world_internal.h"

namespace vbus::sim {
namespace {

const char* FaultName(PlantedFault f) {
  switch (f) {
    case PlantedFault::kSkipUnpublish:
      return "the executor leaves a retired channel in the table";
    case PlantedFault::kIgnoreInUse:
      return "the executor lets go of a receive side a dispatcher still delivers to";
    case PlantedFault::kFreeHeldMemory:
      return "the executor frees a retiring channel's GPADL memory";
    case PlantedFault::kCompleteAbandoned:
      return "the executor completes a call whose caller gave up";
    case PlantedFault::kSkipUnmaskRecheck:
      return "the drain ignores what its re-check after unmasking found";
  }
  return "?";
}

// Executor log lines that report something a correct run never does.
bool IsErrorLine(absl::string_view line) {
  return absl::StartsWith(line, "publish of relid") || absl::StartsWith(line, "retire of relid") ||
         absl::StartsWith(line, "release of offer");
}

}  // namespace

void World::SyncWakeup() {
  if (executor_ == nullptr || tearing_down_) return;
  if (stalled_) {
    // Held up: it catches up (RunDue included) when the stall ends.
    if (wakeup_event_ != 0) sched_.Cancel(wakeup_event_);
    wakeup_event_ = 0;
    wakeup_at_ = absl::InfiniteFuture();
    return;
  }
  const absl::Time next = executor_->next_wakeup();
  if (next == wakeup_at_ && (wakeup_event_ != 0 || next == absl::InfiniteFuture())) return;
  if (wakeup_event_ != 0) sched_.Cancel(wakeup_event_);
  wakeup_event_ = 0;
  wakeup_at_ = next;
  if (next == absl::InfiniteFuture()) return;
  wakeup_event_ =
      sched_.At(next, SimScheduler::kWork, "executor wakes up (timers, retires)", [this] {
        wakeup_event_ = 0;
        wakeup_at_ = absl::InfiniteFuture();
        if (!stalled_) executor_->RunDue();
      });
}

// ---- The executor's wiring -----------------------------------------------------------------

bool World::Post(std::function<void(BusExecutor&)> work) {
  if (executor_ == nullptr || tearing_down_) return false;
  // In order: posted work never overtakes work posted before it.
  const absl::Time at = std::max(sched_.now() + Delay(config_.executor_lag), post_tail_);
  post_tail_ = at;
  sched_.At(at, SimScheduler::kWork, "the executor runs posted work",
            [this, work = std::move(work)] { ExecutorInput([this, work] { work(*executor_); }); });
  return true;
}

void World::ExecutorInput(std::function<void()> input) {
  if (stalled_) {
    held_inputs_.push_back(std::move(input));
    return;
  }
  input();
}

void World::OpStall() {
  if (stalled_) return;
  stalled_ = true;
  ++stats_.executor_stalls;
  const absl::Duration held = absl::Microseconds(rng_.Range(20, 4000));
  Trace(absl::StrCat("    the executor's thread is held up for ", absl::FormatDuration(held)));
  sched_.After(held, SimScheduler::kWork, "the executor's thread goes on", [this] {
    stalled_ = false;
    Trace(absl::StrCat("    it catches up on ", held_inputs_.size(), " inputs"));
    // As a control loop does: each input in order, due timers and re-checks after each.
    catching_up_ = true;
    while (!held_inputs_.empty() && !failed_) {
      std::function<void()> input = std::move(held_inputs_.front());
      held_inputs_.pop_front();
      input();
      executor_->RunDue();
    }
    if (!failed_) executor_->RunDue();
    catching_up_ = false;
  });
}

absl::Status World::CheckBlockingAllowed(absl::string_view what) const {
  (void)what;  // the simulation never waits: it uses only the asynchronous forms
  return absl::OkStatus();
}

void World::Log(absl::string_view line) const {
  Trace(absl::StrCat("    channel: ", line));
  if (absl::StrContains(line, "data path of") && late_failure_.empty()) {
    late_failure_ = absl::StrCat("a channel failed: ", line);
  }
}

void World::Log(absl::string_view line) {
  Trace(absl::StrCat("    executor: ", line));
  if (IsErrorLine(line)) Fail(absl::StrCat("the executor reports an error: ", line));
}

bool World::OnFaultPoint(PlantedFault fault) {
  const SimFaults& f = options_.faults;
  bool planted = false;
  switch (fault) {
    case PlantedFault::kSkipUnpublish:
      planted = f.skip_unpublish;
      break;
    case PlantedFault::kIgnoreInUse:
      planted = f.ignore_in_use;
      break;
    case PlantedFault::kFreeHeldMemory:
      planted = f.free_held_memory;
      break;
    case PlantedFault::kCompleteAbandoned:
      planted = f.complete_abandoned;
      break;
    case PlantedFault::kSkipUnmaskRecheck:
      // Asked exactly when a re-check after unmasking found packets.
      ++stats_.unmask_rechecks_found_data;
      planted = f.skip_unmask_recheck;
      break;
  }
  if (planted) {
    fault_fired_ = true;
    Trace(absl::StrCat("    fault: ", FaultName(fault)));
  }
  return planted;
}

}  // namespace vbus::sim
