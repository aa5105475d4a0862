// BusExecutor: receive quiescence. A retired channel lets go of its receive side (inbound ring,
// callback) and the memory behind it only once no dispatcher delivers to it (ChannelTable::InUse)
// and no poller holds it; until then what depends on that is held back (see bus_executor.h).
#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/runtime/bus_executor.h"

namespace vbus {
namespace {

// Re-checks of a retiring channel start soon (a callback usually returns within microseconds)
// and back off to this interval for one that keeps running.
constexpr absl::Duration kFirstRecheck = absl::Microseconds(100);
constexpr absl::Duration kMaxRecheck = absl::Milliseconds(20);

}  // namespace

void BusExecutor::BeginRetire(const std::shared_ptr<Channel>& channel, uint32_t relid,
                              bool published, const absl::Status& why) {
  const OfferId offer = channel->id();
  if (published && !Planted(PlantedFault::kSkipUnpublish)) {
    absl::Status s = table_->Unpublish(relid, channel->event_target());
    if (!s.ok() && !absl::IsNotFound(s)) {
      Error(absl::StrCat("retire of relid ", relid, ": ", s.ToString()));
    }
  }
  channel->DetachSend(why);
  auto [it, inserted] = retiring_.try_emplace(offer);
  Retiring& entry = it->second;
  if (inserted) {
    entry.channel = channel;
    entry.relid = relid;
    entry.since = listener_->Now();
  }
  entry.published = entry.published || published;
  if (TryFinishRetire(offer, entry)) {
    retiring_.erase(offer);
    return;
  }
  // A callback or a poller still holds the receive side: look again soon.
  counters_.deferred_retires.fetch_add(1, std::memory_order_relaxed);
  retire_backoff_ = kFirstRecheck;
  next_retire_check_ = std::min(next_retire_check_, listener_->Now() + retire_backoff_);
}

bool BusExecutor::TryFinishRetire(OfferId offer, Retiring& entry) {
  if (entry.published && table_->InUse(entry.relid) && !Planted(PlantedFault::kIgnoreInUse)) {
    return false;
  }
  if (!entry.channel->TryDetachReceive()) return false;
  // Nothing delivers to the channel any more: what waited for that goes on, in order.
  entry.held_memory.clear();  // frees the pages
  // Taken out first: a completion may start a call of its own (in the simulation, directly).
  std::vector<HeldClose> closes = std::exchange(entry.held_closes, {});
  for (HeldClose& held : closes) held.done.Finish(held.result);
  if (entry.held_removal.has_value()) {
    listener_->OfferRemoved(entry.channel->offer(), entry.channel, *entry.held_removal);
  }
  if (entry.reported) {
    listener_->Log(absl::StrCat("the receive callback of relid ", entry.relid,
                                " returned; its channel was let go"));
  }
  (void)offer;
  return true;
}

void BusExecutor::RecheckRetiring() {
  for (auto it = retiring_.begin(); it != retiring_.end();) {
    if (TryFinishRetire(it->first, it->second)) {
      it = retiring_.erase(it);
    } else {
      ++it;
    }
  }
  if (retiring_.empty()) {
    next_retire_check_ = absl::InfiniteFuture();
    return;
  }
  retire_backoff_ = std::min(retire_backoff_ * 2, kMaxRecheck);
  next_retire_check_ = listener_->Now() + retire_backoff_;
}

void BusExecutor::ExpireHeldCloses(absl::Time now) {
  // Expired closes are taken out of retiring_ before any completes: a completion may start a
  // call of its own, which may add to or end a retire (no iterator survives that).
  std::vector<std::pair<uint32_t, CallDone>> expired;
  for (auto& [offer, entry] : retiring_) {
    auto& held = entry.held_closes;
    for (auto it = held.begin(); it != held.end();) {
      if (it->deadline > now) {
        ++it;
        continue;
      }
      expired.emplace_back(entry.relid, std::move(it->done));
      it = held.erase(it);
    }
  }
  for (auto& [relid, done] : expired) {
    done.Finish({absl::DeadlineExceededError(absl::StrCat(
        "close of relid ", relid,
        ": a receive callback of the channel is still running at the deadline; the channel "
        "is closed once it returns"))});
  }
}

void BusExecutor::ReportStalls(absl::Time now) {
  for (auto& [offer, entry] : retiring_) {
    if (entry.reported || now - entry.since < options_.stall_report) continue;
    entry.reported = true;
    Error(absl::StrCat("the receive callback of relid ", entry.relid, " has run for ",
                       absl::FormatDuration(now - entry.since),
                       " since its channel was retired; its close, removal and memory wait for "
                       "it (callbacks must not block)"));
  }
}

void BusExecutor::FreeOrHold(OfferId offer, Pages pages) {
  auto it = retiring_.find(offer);
  if (it == retiring_.end() || Planted(PlantedFault::kFreeHeldMemory)) return;  // freed here
  it->second.held_memory.push_back(std::move(pages));
}

std::vector<OfferId> BusExecutor::RetiringOffers() const {
  std::vector<OfferId> offers;
  for (const auto& [offer, entry] : retiring_) offers.push_back(offer);
  return offers;
}

bool BusExecutor::HoldsGpadlMemory(uint32_t handle) const { return gpadl_memory_.contains(handle); }

}  // namespace vbus
