// The scenario's suspend and resume (hibernation) through the production executor: the
// executor's half of ChannelBus::Suspend at a random point — channels open, traffic flowing,
// GPADLs held, host steps crossing it — then Resume against a host that re-offers under new
// or permuted relids (HostSettings) or drops and adds devices meanwhile. Checked: while
// suspended, every offer the application still holds is parked, closed and unpublished, with
// no GPADL and no ring memory left; after the resume every device offered again is the same
// offer id and Channel object under its new relid (World::OfferResumed checks each), the
// version is the one used before, and the usual settled checks hold.
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"
#include "test/sim/sim_world_internal.h"

namespace vbus::sim {

bool World::SuspendAndResume() {
  const uint32_t version = negotiated_version_;
  // Sometimes the application closes everything first; otherwise the suspend does.
  if (rng_.Chance(0.3) && !CloseEverything()) return false;
  OpTraffic();
  ExecutorInput([this] { executor_->NoteSuspend(); });
  const absl::Time deadline = sched_.now() + kGenerousDeadline;
  const uint64_t suspend = IssueCall(RequestKind::kUnload, OfferId(), deadline, 0,
                                     [deadline](BusExecutor& executor, CallDone done) {
                                       executor.Suspend(deadline, std::move(done));
                                     });
  calls_.at(suspend).suspend = true;
  const int crossing = static_cast<int>(rng_.Range(0, 5));
  if (crossing > 0) ScheduleChaos(crossing);
  in_unload_ = true;
  const bool settled = RunUntilSettled("suspend", kSettleBudget);
  in_unload_ = false;
  if (!settled || failed_) return false;
  switch (executor_->phase()) {
    case BusPhase::kSuspended:
      break;
    case BusPhase::kConnected:
      // A close the suspend made failed (a post the backend refused): the bus stays connected.
      Trace("    the suspend failed; the bus stays connected");
      CheckSettled();
      return !failed_;
    default:
      Fail(absl::StrCat("after a suspend the bus is ", BusPhaseName(executor_->phase())));
      return false;
  }
  CheckSuspended();
  if (failed_) return false;

  const uint64_t resumed_before = executor_->counters().offers_resumed;
  const absl::Time resume_deadline = sched_.now() + kGenerousDeadline;
  const uint64_t resume = IssueCall(RequestKind::kConnect, OfferId(), resume_deadline, 0,
                                    [resume_deadline](BusExecutor& executor, CallDone done) {
                                      executor.Resume(resume_deadline, std::move(done));
                                    });
  calls_.at(resume).resume = true;
  if (!RunUntilSettled("resume", kSettleBudget)) return false;
  if (!calls_.at(resume).completed) {
    Fail("resume never completed");
    return false;
  }
  if (negotiated_version_ != version) {
    Fail(absl::StrCat("resumed at version ", protocol::VersionName(negotiated_version_),
                      " after suspending at ", protocol::VersionName(version)));
    return false;
  }
  stats_.offers_resumed += executor_->counters().offers_resumed - resumed_before;
  // Devices the host did not offer again (rescinded while the guest slept) go now.
  if (!bus().ParkedOffers().empty()) {
    ExecutorInput([this] {
      executor_->DropParked(absl::NotFoundError("not offered again after the resume"));
    });
    if (!RunUntilSettled("dropping what did not come back", kSettleBudget)) return false;
  }
  CheckSettled();
  return !failed_;
}

void World::CheckSuspended() {
  for (const auto& [id, call] : calls_) {
    if (!call.completed && !call.abandoned) {
      Fail(absl::StrCat("suspended, but call ", id, " (", RequestKindName(call.kind),
                        ") never completed"));
      return;
    }
  }
  if (!bus().Gpadls().empty()) {
    Fail(absl::StrCat("suspended with ", bus().Gpadls().size(), " GPADLs"));
    return;
  }
  if (!backend_->allocations().empty()) {
    const SimAllocation& a = backend_->allocations().begin()->second;
    Fail(absl::StrCat("suspended, but ", a.pfns.size(), " pages (GPADL 0x", absl::Hex(a.gpadl),
                      ", session ", a.tag.session, ") are still allocated"));
    return;
  }
  for (const auto& [id, offer] : offers_) {
    std::optional<ChannelStatus> st = bus().GetChannel(id);
    if (!st || st->offer_state != OfferState::kParked || st->published ||
        st->channel_state != ChannelState::kClosed || offer.channel->is_open()) {
      Fail(absl::StrCat("suspended, but offer ", id.value(), " (relid ", offer.info.relid,
                        ") is not a parked closed channel"));
      return;
    }
    if (table_.Lookup(offer.info.relid) != nullptr) {
      Fail(absl::StrCat("suspended, but relid ", offer.info.relid, " is still published"));
      return;
    }
  }
}

}  // namespace vbus::sim
