// The scenario's calls into the production executor. Each call is posted to the executor (which
// may be held up: ChannelLink::Post waits executor_lag) with a CallDone. Some callers take the
// result whenever it comes (CallDone::Async's contract); others wait on a CallTicket and give
// up at their deadline plus a grace, which may be before the executor answered: then the
// executor must find the claim refused and undo the call, and never complete it. Every result
// is checked against what happened.
#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"
#include "test/sim/sim_world_internal.h"

namespace vbus::sim {

absl::Time World::Deadline() {
  if (config_.tight_deadlines && rng_.Chance(0.5)) {
    return sched_.now() + absl::Microseconds(rng_.Range(20, 3000));
  }
  return sched_.now() + kGenerousDeadline;
}

uint64_t World::IssueCall(RequestKind kind, OfferId offer, absl::Time deadline, uint64_t session,
                          std::function<void(BusExecutor&, CallDone)> start) {
  const uint64_t id = next_call_++;
  SimCall& c = calls_[id];
  c.id = id;
  c.kind = kind;
  c.offer = offer;
  c.session = session;
  c.deadline = deadline;
  c.tight = deadline - sched_.now() < absl::Seconds(1);
  // Connect and unload are the scenario's own phases: it waits for them, whatever it takes.
  const bool may_give_up = kind != RequestKind::kConnect && kind != RequestKind::kUnload;
  c.blocking = may_give_up && rng_.Chance(config_.blocking_calls);
  if (c.blocking) {
    c.ticket = std::make_shared<CallTicket>();
    const absl::Duration grace = absl::Microseconds(
        rng_.Range(0, static_cast<uint64_t>(absl::ToInt64Microseconds(config_.max_grace))));
    c.give_up =
        sched_.At(deadline + grace, SimScheduler::kWork,
                  absl::StrCat("the caller of call ", id, " gives up"), [this, id] { GiveUp(id); });
  }
  Trace(absl::StrCat("    call ", id, ": ", RequestKindName(kind), " of offer ", offer.value(),
                     c.blocking ? " (the caller waits on a ticket)" : ""));
  CallDone done{[this, id] { return OnClaim(id); },
                [this, id](const CallResult& r) { OnCallComplete(id, r); }};
  Post([this, id, start = std::move(start), done](BusExecutor& executor) {
    SimCall& call = calls_.at(id);
    call.started = true;
    call.started_at = sched_.now();
    call.retiring_at_start = call.offer.valid() && Retiring(call.offer);
    if (call.kind == RequestKind::kClose && !call.offer.valid()) {
      for (const auto& [offer_id, offer] : offers_) {
        std::optional<ChannelStatus> st = bus().GetChannel(offer_id);
        if (st && st->offer_state == OfferState::kActive &&
            st->channel_state != ChannelState::kClosed &&
            st->channel_state != ChannelState::kClosing) {
          call.closing.push_back(offer_id);
        }
      }
    }
    if (call.kind == RequestKind::kModifyChannel) {
      // It retargets whatever open the channel has now; the last one run decides.
      call.session = AttachedSession(call.offer);
      if (call.session != 0) {
        Session& s = sessions_.at(call.session);
        s.last_modify = id;
        if (call.abandoned) s.target_vp_known = false;  // the host may still apply it
      }
    }
    // What the call allocates is tagged with it (and with the open's session).
    backend_->SetTag(AllocationTag{call.offer, call.session, id});
    start(executor, done);
    backend_->ClearTag();
    if (call.kind == RequestKind::kOpen) OpenStarted(call.session);
  });
  return id;
}

bool World::OnClaim(uint64_t id) {
  if (tearing_down_) return true;
  SimCall& c = calls_.at(id);
  if (++c.claims > 1) {
    Fail(absl::StrCat("call ", id, " (", RequestKindName(c.kind), ") was claimed twice"));
    return false;
  }
  if (!c.blocking) return true;
  const bool won = c.ticket->Claim();
  if (!won) {
    c.claim_refused = true;
    Trace(absl::StrCat("    call ", id, ": its caller gave up first: the executor undoes it"));
  }
  return won;
}

void World::OnCallComplete(uint64_t id, const CallResult& r) {
  if (tearing_down_) return;
  SimCall& c = calls_.at(id);
  const std::string name = absl::StrCat("call ", id, " (", RequestKindName(c.kind), ")");
  if (c.abandoned) {
    Fail(absl::StrCat(name, " was completed (", r.status.ToString(),
                      ") although its caller had given up: it must be undone instead"));
    return;
  }
  if (c.completed) {
    Fail(absl::StrCat(name, " completed twice"));
    return;
  }
  if (c.claims != 1) {
    Fail(absl::StrCat(name, " completed without being claimed first"));
    return;
  }
  c.completed = true;
  if (c.give_up != 0) {
    sched_.Cancel(c.give_up);
    c.give_up = 0;
  }
  if (c.blocking) c.ticket->Complete(r);
  CheckResult(c, r);
}

void World::GiveUp(uint64_t id) {
  SimCall& c = calls_.at(id);
  c.give_up = 0;
  if (c.completed) return;
  const std::string name =
      absl::StrCat("call ", id, " (", RequestKindName(c.kind), " of offer ", c.offer.value(), ")");
  if (!c.ticket->Abandon()) {
    // A claimed call is completed in the same executor step.
    Fail(absl::StrCat(name, " was claimed but had not completed when its caller gave up"));
    return;
  }
  c.abandoned = true;
  ++stats_.calls_abandoned;
  ++stats_.deadlines_exceeded;
  Trace(absl::StrCat("    ", name, ": the caller gives up (told DEADLINE_EXCEEDED)",
                     c.started ? "" : " before the executor even ran it"));
  if (!c.tight) {
    Fail(absl::StrCat(name, ": the caller gave up although the host answers every request ",
                      "within milliseconds"));
    return;
  }
  switch (c.kind) {
    case RequestKind::kOpen:
      abandoned_opens_.insert(c.session);
      break;
    case RequestKind::kModifyChannel:
      // The executor moves the channel back if the host applied it, but the host may apply it
      // only after the executor gave up too (an expired modify is not undone): unknown.
      if (c.started && c.session != 0 && sessions_.at(c.session).last_modify == c.id) {
        sessions_.at(c.session).target_vp_known = false;
      }
      break;
    default:
      break;
  }
}

void World::CheckResult(SimCall& c, const CallResult& r) {
  const std::string name = absl::StrCat("call ", c.id, " (", RequestKindName(c.kind), " of offer ",
                                        c.offer.value(), ")");
  Trace(absl::StrCat("    ", name, " completes: ", r.status.ToString()));
  // On time: by its deadline, or at once when the executor ran it (or the host's answer) only
  // after the deadline because its thread was held up (a link loss reaches it even then).
  if (sched_.now() > std::max(c.deadline, c.started_at) && !catching_up_ && !stalled_) {
    Fail(absl::StrCat(name, " completed at +", Elapsed(), ", after its deadline"));
    return;
  }
  const absl::StatusCode code = r.status.code();
  if (code == absl::StatusCode::kInternal || code == absl::StatusCode::kUnknown) {
    Fail(absl::StrCat(name, " failed: ", r.status.ToString()));
    return;
  }
  if (code == absl::StatusCode::kDeadlineExceeded) {
    ++stats_.deadlines_exceeded;
    // A generous deadline is seconds of virtual time; every answer takes milliseconds.
    if (!c.tight) {
      Fail(absl::StrCat(name, " timed out although the host answers every request within ",
                        "milliseconds: ", r.status.ToString()));
      return;
    }
  }
  if (code == absl::StatusCode::kUnavailable && c.offer.valid() && !c.retiring_at_start) {
    std::optional<ChannelStatus> st = bus().GetChannel(c.offer);
    if (st && st->offer_state == OfferState::kActive) {
      Fail(absl::StrCat(
          name, " failed Unavailable but the offer is still active: ", r.status.ToString()));
      return;
    }
  }
  switch (c.kind) {
    case RequestKind::kConnect:
      if (!r.status.ok()) {
        Fail(absl::StrCat("connect failed: ", r.status.ToString()));
        return;
      }
      if (r.version != negotiated_version_) {
        Fail(absl::StrCat("connect completed with version ", protocol::VersionName(r.version),
                          " but SetConnection said ", protocol::VersionName(negotiated_version_)));
        return;
      }
      break;
    case RequestKind::kOpen: {
      Session& s = sessions_.at(c.session);
      if (!r.status.ok()) {
        ++stats_.open_failures;
        break;
      }
      ++stats_.opens_ok;
      std::optional<ChannelStatus> st = bus().GetChannel(c.offer);
      if (!st || st->channel_state != ChannelState::kOpen || !st->published || s.ring_gpadl == 0 ||
          st->ring_gpadl != s.ring_gpadl || !s.channel->is_open()) {
        Fail(absl::StrCat(name, " completed OK but the channel is not open and published"));
        return;
      }
      s.guest_open = true;
      break;
    }
    case RequestKind::kClose: {
      ++stats_.closes;
      if (!r.status.ok()) break;
      // One channel, or every channel a CloseAll closed.
      const std::vector<OfferId> closed =
          c.offer.valid() ? std::vector<OfferId>{c.offer} : c.closing;
      for (OfferId offer : closed) {
        if (stuck_.has_value() && stuck_->offer == offer) {
          Fail(absl::StrCat(name, " returned OK while a receive callback of relid ", stuck_->relid,
                            " still runs"));
          return;
        }
        // No callback of any earlier open of the channel may run from now on.
        for (auto& [sid, s] : sessions_) {
          if (s.offer != offer || !s.started) continue;
          if (!s.guest_ended && GuestLive(s)) {
            Fail(absl::StrCat(name, " returned OK but relid ", s.relid, " is still ",
                              s.guest_open ? "open" : "opening"));
            return;
          }
          s.receive_closed = true;
        }
      }
      break;
    }
    case RequestKind::kModifyChannel:
      // Only the last modify run decides (an earlier one may complete after it).
      if (c.session != 0 && sessions_.at(c.session).last_modify == c.id) {
        Session& s = sessions_.at(c.session);
        // From 5.3 an OK means the host applied it; below, the host does not answer (and may
        // refuse without the guest knowing).
        if (r.status.ok() && protocol::HasModifyChannelResponse(negotiated_version_)) {
          s.target_vp = c.target_vp;
          s.target_vp_known = true;
        } else {
          s.target_vp_known = false;
        }
      }
      break;
    case RequestKind::kGpadlCreate: {
      if (!r.status.ok()) break;
      const SimAllocation* a = backend_->FindByGpadl(r.gpadl);
      if (r.gpadl != c.gpadl || a == nullptr || r.memory.data() != a->data ||
          r.memory.size() != a->pfns.size() * protocol::kPageSize || r.pfns != a->pfns) {
        Fail(absl::StrCat(name, " completed with GPADL 0x", absl::Hex(r.gpadl),
                          " but its GpadlCreate named 0x", absl::Hex(c.gpadl),
                          " (or the memory it returned is not that GPADL's)"));
        return;
      }
      // The application uses its buffer.
      std::memset(r.memory.data(), static_cast<int>(c.id & 0xFF), r.memory.size());
      break;
    }
    case RequestKind::kUnload:
      if (c.suspend) {
        if (r.status.ok()) ++stats_.suspends;
        break;
      }
      if (!r.status.ok()) {
        Fail(absl::StrCat("unload failed: ", r.status.ToString()));
        return;
      }
      ++stats_.unloads;
      break;
    default:
      break;
  }
}

bool World::CloseEverything() {
  for (int pass = 0; pass < 8; ++pass) {
    if (!RunUntilSettled("closing everything", kSettleBudget)) return false;
    bool busy = false;
    // As a shutdown does (BusExecutor::CloseAll), or channel by channel.
    const bool close_all = rng_.Chance(0.5);
    for (const auto& [id, offer] : offers_) {
      std::optional<ChannelStatus> st = bus().GetChannel(id);
      if (!st || st->offer_state != OfferState::kActive) continue;
      if (st->channel_state == ChannelState::kClosed) continue;
      if (close_all && busy) continue;
      busy = true;
      const absl::Time deadline = Deadline();
      if (close_all) {
        IssueCall(RequestKind::kClose, OfferId(), deadline, 0,
                  [deadline](BusExecutor& executor, CallDone done) {
                    executor.CloseAll(deadline, std::move(done));
                  });
        continue;
      }
      IssueCall(RequestKind::kClose, id, deadline, 0,
                [channel = offer.channel, deadline](BusExecutor& executor, CallDone done) {
                  executor.Close(channel, deadline, std::move(done));
                });
    }
    for (const GpadlStatus& g : bus().Gpadls()) {
      if (g.ring || g.state != GpadlState::kCreated || g.abandoned) continue;
      std::optional<ChannelStatus> st = bus().GetChannel(g.offer);
      std::shared_ptr<Channel> channel = ChannelOf(g.offer);
      if (!st || st->offer_state != OfferState::kActive || channel == nullptr) continue;
      busy = true;
      const absl::Time deadline = Deadline();
      IssueCall(RequestKind::kGpadlTeardown, g.offer, deadline, 0,
                [channel, handle = g.handle, deadline](BusExecutor& executor, CallDone done) {
                  executor.TeardownGpadl(channel, handle, deadline, std::move(done));
                });
    }
    if (!busy) return true;
  }
  Fail("channels or GPADLs still open after 8 rounds of closing everything");
  return false;
}

}  // namespace vbus::sim
