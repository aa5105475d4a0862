// BusExecutor: suspend and resume (hibernation, docs/protocol.md §9).
//
// Suspend closes what is still open, tears down what GPADLs are left, and unloads in
// UnloadMode::kSuspend, after which BusState parks the primaries (OfferParked). Resume is a
// Connect at the saved version, during which a re-offered primary comes back as OfferResumed:
// its Channel object, closed since the suspend, takes the new relid, connection id and monitor
// id (Channel::Rebind) before the runtime hears of it, so that the next open signals and
// publishes with the new fields.
//
// Why no event for a resumed channel is lost or reaches the wrong channel (checked by the
// Promela model test/model/suspend.pml, with the two devices' relids swapped): a channel is
// published only between PublishChannel (before its OpenChannel) and RetireChannel (at its
// close), every channel is closed before the Unload goes out, and a close completes only once
// no dispatcher still announces the relid, so the old rings are never touched again. Until the
// resumed channel is published under its new relid, no slot leads to it, and the host signals
// it under that relid only after the OpenChannel that follows the publish. A signal raised
// under the new relid before the guest dispatched it is not lost: dispatch reads the slot after
// test-and-clearing the bit, and the slot was filled (release) before the OpenChannel. A stale
// bit left under the old relid either finds the slot empty (counted as spurious) or, once
// another device holds that relid, wakes that device once more than needed: harmless, since a
// channel's handler drains only its own current ring and tolerates a wake-up with nothing to
// read.
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/runtime/bus_executor.h"

namespace vbus {

void BusExecutor::NoteSuspend() {
  for (const auto& [id, channel] : channels_) channel->NoteSuspend();
}

void BusExecutor::Suspend(absl::Time deadline, CallDone done) {
  if (stopped_) {
    done.Finish({absl::FailedPreconditionError("the channel bus is shut down")});
    return;
  }
  if (state_.phase() != BusPhase::kConnected) {
    done.Finish({absl::FailedPreconditionError(
        absl::StrCat("suspend: the bus is ", BusPhaseName(state_.phase())))});
    return;
  }
  // Each step runs as its own executor input (ChannelLink::Post), never from inside the
  // completion of the one before.
  ChannelLink* link = link_;
  CloseAll(deadline, CallDone::Async([link, deadline, done](const CallResult& closed) {
             if (!closed.status.ok()) {
               done.Finish({absl::Status(
                   closed.status.code(),
                   absl::StrCat("suspend: closing the channels: ", closed.status.message()))});
               return;
             }
             const bool posted = link->Post([deadline, done](BusExecutor& executor) {
               executor.TeardownAllGpadls(
                   deadline, CallDone::Async([&executor, deadline, done](const CallResult& torn) {
                     if (!torn.status.ok()) {
                       done.Finish({absl::Status(
                           torn.status.code(),
                           absl::StrCat("suspend: tearing down GPADLs: ", torn.status.message()))});
                       return;
                     }
                     executor.link_->Post([deadline, done](BusExecutor& e) {
                       e.Unload(deadline, done, UnloadMode::kSuspend);
                     });
                   }));
             });
             if (!posted)
               done.Finish({absl::FailedPreconditionError("the channel bus is shut down")});
           }));
}

void BusExecutor::TeardownAllGpadls(absl::Time deadline, CallDone done) {
  struct Count {
    size_t pending = 0;
    absl::Status first;
    CallDone done;
  };
  auto count = std::make_shared<Count>();
  count->done = std::move(done);
  std::vector<std::pair<std::shared_ptr<Channel>, uint32_t>> held;
  for (const GpadlStatus& g : state_.Gpadls()) {
    if (g.ring || g.state != GpadlState::kCreated) continue;  // BusState names any left
    if (std::shared_ptr<Channel> channel = ChannelOf(g.offer)) held.emplace_back(channel, g.handle);
  }
  if (held.empty()) {
    count->done.Finish({absl::OkStatus()});
    return;
  }
  count->pending = held.size();
  for (const auto& [channel, handle] : held) {
    listener_->Log(absl::StrCat("suspend: tearing down GPADL 0x", absl::Hex(handle), " of relid ",
                                channel->relid(), ", which its driver left"));
    TeardownGpadl(channel, handle, deadline, CallDone::Async([count](const CallResult& r) {
                    if (!r.status.ok() && count->first.ok()) count->first = r.status;
                    if (--count->pending == 0) count->done.Finish({count->first});
                  }));
  }
}

void BusExecutor::Resume(absl::Time deadline, CallDone done) {
  if (stopped_) {
    done.Finish({absl::FailedPreconditionError("the channel bus is shut down")});
    return;
  }
  Actions out;
  const RequestId id = state_.Resume(deadline, &out);
  PendingCall call{RequestKind::kConnect, nullptr, std::move(done), deadline};
  call.resume = true;
  Track(id, std::move(call));
  Execute(std::move(out));
}

void BusExecutor::DropParked(const absl::Status& why) {
  if (stopped_) return;
  Actions out;
  state_.DropParked(why, &out);
  Execute(std::move(out));
}

void BusExecutor::Parked(const OfferParked& parked) {
  MutexLock lock(&mirror_mu_);
  offers_.erase(parked.offer);
}

void BusExecutor::Resumed(const OfferResumed& resumed) {
  std::shared_ptr<Channel> channel = ChannelOf(resumed.offer.id);
  if (channel == nullptr) {
    Error(absl::StrCat("resume of offer ", resumed.offer.id.value(), ": no channel object"));
    return;
  }
  channel->Rebind(resumed.offer);
  {
    MutexLock lock(&mirror_mu_);
    offers_[resumed.offer.id] = resumed.offer;
  }
  counters_.offers_resumed.fetch_add(1, std::memory_order_relaxed);
  listener_->OfferResumed(resumed.offer, channel);
}

}  // namespace vbus
