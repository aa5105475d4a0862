// The host runtime of the simulation: it carries out the real HostEngine's actions the way
// MockHost does (messages to the guest, ring mapping through the real GuestDataPlane, then
// CompleteOpen), judges the engine's refusals, and plays HostControl: rescinds, hot-adds,
// injected refusals and raw packets to the guest.
#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/data/guid_proto.h"
#include "mock/host/device_kinds.h"
#include "test/sim/sim_world_internal.h"

namespace vbus::sim {
namespace {

std::vector<uint8_t> Padded(std::vector<uint8_t> bytes) {
  bytes.resize((bytes.size() + 7) & ~size_t{7}, 0);
  return bytes;
}

}  // namespace

void World::ExecuteHost(mock::Actions actions) {
  for (mock::Action& action : actions) {
    if (failed_) return;
    if (auto* send = std::get_if<mock::SendToGuest>(&action)) {
      if (send->message.has_control()) {
        const v1::ControlMessage& m = send->message.control();
        Trace(absl::StrCat("    host sends ", DescribeControlMessage(m)));
        if (m.has_offer()) {
          const uint32_t relid = m.offer().child_relid();
          if (host_rescinded_.contains(relid)) {
            if (options_.faults.early_relid_reuse) fault_fired_ = true;
            Fail(absl::StrCat("the host re-offered relid ", relid,
                              " before the guest released it (no RelidReleased yet)"));
            return;
          }
          HostOffer& offer = host_offers_[relid];
          offer.type = GuidFromProto(m.offer().interface_type()).value_or(Guid());
          offer.instance = GuidFromProto(m.offer().interface_instance()).value_or(Guid());
          offer.sub_channel_index = m.offer().sub_channel_index();
        }
        if (m.has_rescind_offer()) host_rescinded_.insert(m.rescind_offer().child_relid());
        SendToGuest(m);
      } else if (send->message.has_error()) {
        // Judged through the ERROR event the engine publishes with every rejection.
        Trace(absl::StrCat("    host protocol error: ", send->message.error().message()));
      }
    } else if (auto* event = std::get_if<mock::PublishEvent>(&action)) {
      OnEngineEvent(event->event);
    } else if (auto* map = std::get_if<mock::MapRings>(&action)) {
      if (config_.async_map) {
        // The engine allows the runtime to map later (CompleteOpen undoes a stale mapping).
        mock::MapRings copy = *map;
        sched_.After(absl::Microseconds(link_rng_.Range(0, 500)), SimScheduler::kWork,
                     absl::StrCat("host maps the rings of relid ", map->relid),
                     [this, copy, epoch = link_epoch_] {
                       if (epoch == link_epoch_) MapRings(copy);  // else the guest detached
                     });
      } else {
        MapRings(*map);  // as MockHost does: map, then CompleteOpen, before anything else
      }
    } else if (auto* unmap = std::get_if<mock::UnmapRings>(&action)) {
      Trace(absl::StrCat("    host unmaps the rings of relid ", unmap->relid));
      absl::StatusOr<mock::ChannelCounters> last = plane_->UnmapChannel(unmap->relid);
      if (!last.ok()) {
        Fail(absl::StrCat("the host unmapped relid ", unmap->relid,
                          ", which is not mapped: ", last.status().ToString()));
        return;
      }
      host_mapped_pfns_.erase(unmap->relid);
      host_raw_queue_.erase(unmap->relid);
      if (auto s = host_session_by_relid_.find(unmap->relid); s != host_session_by_relid_.end()) {
        sessions_.at(s->second).host_ended = true;
        host_session_by_relid_.erase(s);
      }
    } else if (auto* signal = std::get_if<mock::SignalChannel>(&action)) {
      (void)plane_->RaiseEvent(signal->relid);
    } else if (auto* retarget = std::get_if<mock::RetargetChannel>(&action)) {
      Trace(absl::StrCat("    host signals relid ", retarget->relid, " on VP ", retarget->target_vp,
                         " from now on"));
      if (absl::Status s = plane_->SetTargetVp(retarget->relid, retarget->target_vp); !s.ok()) {
        Fail(absl::StrCat("the host could not move relid ", retarget->relid, " to VP ",
                          retarget->target_vp, ": ", s.ToString()));
        return;
      }
    } else if (auto* disconnect = std::get_if<mock::DisconnectGuest>(&action)) {
      Fail(absl::StrCat("the host disconnected the guest: ", disconnect->reason));
      return;
    }
  }
}

void World::OnEngineEvent(const v1::ProtocolEvent& event) {
  switch (event.kind()) {
    case v1::EVENT_KIND_ERROR: {
      // A refusal is fine when the guest could not have known better: the channel was
      // rescinded while its request was on the way. Anything else means one side is wrong.
      const bool rescinded =
          host_input_active_ && host_input_prior_ == mock::HostEngine::ChannelState::kRescinded;
      const bool still_mapping = host_input_active_ && config_.async_map &&
                                 absl::StrContains(event.detail(), "still mapping");
      if (absl::StrContains(event.detail(), "refused the offer") &&
          spoiled_releases_.erase(event.child_relid()) > 0) {
        // The host frees the relid of an offer the guest refused (the link spoiled it).
        Trace(absl::StrCat("    host frees the refused relid: ", event.detail()));
        return;
      }
      if (rescinded || still_mapping || host_input_fault_) {
        ++stats_.host_refusals;
        Trace(absl::StrCat("    host refuses (",
                           rescinded       ? "crossed a rescind"
                           : still_mapping ? "still mapping"
                                           : "injected",
                           "): ", event.detail()));
        return;
      }
      Fail(absl::StrCat("the host refused ",
                        host_input_active_ ? host_input_ : std::string("a HostControl step"), ": ",
                        event.detail()));
      return;
    }
    case v1::EVENT_KIND_FAULT_FIRED:
      host_input_fault_ = true;  // an injected refusal; below 5.3 it also draws an ERROR
      ++stats_.host_refusals;
      Trace(absl::StrCat("    host fault fired: ", event.detail()));
      return;
    default:
      return;
  }
}

void World::MapRings(const mock::MapRings& map) {
  Trace(absl::StrCat("    host maps relid ", map.relid, " rings from GPADL 0x",
                     absl::Hex(map.gpadl)));
  if (config_.async_map) {
    // A careful asynchronous runtime re-checks that the channel is still opening before it
    // touches guest memory: meanwhile the guest may have closed it (and had the ring GPADL
    // torn down) or the host rescinded it (and the guest released the relid and its memory).
    // A runtime that maps blindly maps freed memory (the engine answers GpadlTeardown and
    // forgets GPADLs while a MapRings is outstanding).
    absl::StatusOr<mock::HostEngine::ChannelSnapshot> c =
        engine_->FindChannel(guest_id_, map.relid);
    const bool stale = !c.ok() || c->state != mock::HostEngine::ChannelState::kOpening ||
                       c->ring_gpadl != map.gpadl;
    if (stale && options_.faults.blind_async_map) {
      fault_fired_ = true;
      Trace(absl::StrCat("    fault: the host maps the stale rings of relid ", map.relid));
    } else if (stale) {
      Trace(absl::StrCat("    host skips the stale mapping of relid ", map.relid));
      mock::Actions more;
      if (absl::Status st = engine_->CompleteOpen(
              guest_id_, map.relid, absl::CancelledError("the channel stopped opening"),
              sched_.now(), &more);
          !st.ok()) {
        Fail(absl::StrCat("CompleteOpen of relid ", map.relid, ": ", st.ToString()));
        return;
      }
      ExecuteHost(std::move(more));
      return;
    }
  }
  // The host may touch only memory the guest still lends it.
  const SimAllocation* a = backend_->FindByGpadl(map.gpadl);
  if (a == nullptr || !LiveGpadls().contains(map.gpadl)) {
    Fail(absl::StrCat("the host maps the rings of relid ", map.relid, " from GPADL 0x",
                      absl::Hex(map.gpadl), ", which the guest has already released"));
    return;
  }
  std::vector<uint64_t> all = map.outbound_pfns;
  all.insert(all.end(), map.inbound_pfns.begin(), map.inbound_pfns.end());
  if (all != a->pfns) {
    Fail(absl::StrCat("the host maps relid ", map.relid, " rings on PFNs that are not GPADL 0x",
                      absl::Hex(map.gpadl), "'s"));
    return;
  }
  auto session = session_by_ring_gpadl_.find(map.gpadl);
  if (session == session_by_ring_gpadl_.end()) {
    Fail(absl::StrCat("the host maps rings from GPADL 0x", absl::Hex(map.gpadl),
                      ", which no Open created"));
    return;
  }
  const absl::Status mapped = plane_->MapChannel(map.relid, map.device, map.outbound_pfns,
                                                 map.inbound_pfns, map.monitor_id, map.target_vp);
  if (!mapped.ok()) {
    Fail(absl::StrCat("the host could not map the rings of relid ", map.relid, ": ",
                      mapped.ToString()));
    return;
  }
  host_mapped_pfns_[map.relid] = std::move(all);
  Session& s = sessions_.at(session->second);
  s.host_mapped = true;
  host_session_by_relid_[map.relid] = s.id;
  mock::Actions more;
  if (absl::Status st = engine_->CompleteOpen(guest_id_, map.relid, mapped, sched_.now(), &more);
      !st.ok()) {
    Fail(absl::StrCat("CompleteOpen of relid ", map.relid, ": ", st.ToString()));
    return;
  }
  ExecuteHost(std::move(more));
}

void World::OnHostPacket(const v1::GuestPacket& packet) {
  // Called by the data plane while it drains (its locks held): only bookkeeping here.
  const uint32_t relid = packet.child_relid();
  auto sid = host_session_by_relid_.find(relid);
  if (sid == host_session_by_relid_.end()) {
    Fail(absl::StrCat("the host read a packet on relid ", relid, ", which it has not mapped"));
    return;
  }
  Session& s = sessions_.at(sid->second);
  if (s.device != DeviceKind::kRaw) return;  // echo packets are checked when they come back
  SimPacket got;
  got.trans_id = packet.transaction_id();
  got.type = static_cast<uint16_t>(packet.type());
  got.flags = static_cast<uint16_t>(packet.flags());
  got.payload.assign(packet.payload().begin(), packet.payload().end());
  ExpectPacket(s.host_expect, got, absl::StrCat("guest packet read by the host on relid ", relid));
}

void World::OnDataPlaneEvent(const v1::ProtocolEvent& event) {
  if (event.kind() == v1::EVENT_KIND_ERROR) {
    Fail(absl::StrCat("host data plane error: ", event.detail()));
  }
}

void World::HostTrySend(uint32_t relid) {
  if (plane_ == nullptr) return;
  auto q = host_raw_queue_.find(relid);
  if (q == host_raw_queue_.end()) return;
  auto sid = host_session_by_relid_.find(relid);
  if (sid == host_session_by_relid_.end()) {
    host_raw_queue_.erase(q);
    return;
  }
  Session& s = sessions_.at(sid->second);
  while (!q->second.empty()) {
    const SimPacket& p = q->second.front();
    absl::StatusOr<bool> sent =
        plane_->SendPacket(relid, PacketType::kDataInband, 0, p.trans_id, p.payload);
    if (sent.ok()) {
      ++stats_.packets_sent;
      SimPacket expect;
      expect.trans_id = p.trans_id;
      expect.type = static_cast<uint16_t>(PacketType::kDataInband);
      expect.payload = Padded(p.payload);
      s.guest_expect.push_back(std::move(expect));
      ++s.host_packets;
      s.host_bytes += p.payload.size();
      q->second.pop_front();
      continue;
    }
    if (sent.status().code() == absl::StatusCode::kResourceExhausted) {
      ++stats_.host_ring_full;
      // The inbound ring is full. A HostControl client retries later (SendPacket has no
      // wakeup of its own), so this is a retry loop, not a protocol wait.
      if (host_raw_retry_.insert(relid).second) {
        // Periodic, not work: a retry loop must not hide a stalled guest from the idle check.
        sched_.After(absl::Microseconds(link_rng_.Range(20, 200)), SimScheduler::kPeriodic,
                     absl::StrCat("host retries raw sends on relid ", relid), [this, relid] {
                       host_raw_retry_.erase(relid);
                       HostTrySend(relid);
                     });
      }
      return;
    }
    Fail(absl::StrCat("host SendPacket on relid ", relid, ": ", sent.status().ToString()));
    return;
  }
}

// ---- Scenario steps (host) -----------------------------------------------------------------

v1::OfferSpec World::RandomSpec() {
  v1::OfferSpec spec;
  spec.set_device(rng_.Chance(0.6) ? mock::kEchoKind : mock::kRawKind);
  if (rng_.Chance(0.4)) spec.set_sub_channel_count(static_cast<uint32_t>(rng_.Range(1, 3)));
  if (config_.monitored_offers && rng_.Chance(0.5)) spec.set_monitored(true);
  return spec;
}

void World::OpRescind() {
  if (guest_id_.empty()) return;  // detached: no guest to act on
  absl::StatusOr<v1::ListChannelsResponse> list = engine_->ListChannels(guest_id_);
  if (!list.ok()) {
    Fail(list.status().ToString());
    return;
  }
  std::vector<uint32_t> candidates;
  for (const v1::ChannelInfo& c : list->channels()) {
    if (c.state() != v1::CHANNEL_STATE_RESCINDED) candidates.push_back(c.child_relid());
  }
  if (candidates.empty()) return;
  uint32_t relid = rng_.Pick(candidates);
  // While a guest callback blocks, rescind its channel now and then.
  if (stuck_.has_value() &&
      std::find(candidates.begin(), candidates.end(), stuck_->relid) != candidates.end() &&
      rng_.Chance(0.3)) {
    relid = stuck_->relid;
  }
  v1::RescindRequest request;
  request.set_guest(guest_id_);
  request.set_child_relid(relid);
  mock::Actions actions;
  absl::StatusOr<v1::RescindResponse> response = engine_->Rescind(request, sched_.now(), &actions);
  if (!response.ok()) {
    Fail(absl::StrCat("rescind of relid ", relid, ": ", response.status().ToString()));
    return;
  }
  ++stats_.rescinds;
  Trace(absl::StrCat("    host rescinds relid ", relid));
  ExecuteHost(std::move(actions));
  if (options_.faults.early_relid_reuse && !fault_fired_ && !failed_) ForgeEarlyRelease(relid);
}

void World::ForgeEarlyRelease(uint32_t relid) {
  if (!host_rescinded_.contains(relid)) return;  // the guest never heard of it
  Trace(absl::StrCat("    fault: the host forgets relid ", relid, " without RelidReleased"));
  v1::GuestToHost forged;
  forged.mutable_control()->mutable_relid_released()->set_child_relid(relid);
  mock::Actions actions;
  (void)engine_->HandleGuestMessage(guest_id_, forged, sched_.now(), &actions);
  ExecuteHost(std::move(actions));
  // Hot-add enough channels that the lowest free relid — this one — is handed out again.
  uint32_t lower_free = 0;
  for (uint32_t r = 1; r < relid; ++r) {
    if (!engine_->FindChannel(guest_id_, r).ok()) ++lower_free;
  }
  if (lower_free > mock::kMaxSubChannels) return;
  v1::OfferRequest request;
  request.set_guest(guest_id_);
  request.mutable_spec()->set_device(mock::kEchoKind);
  request.mutable_spec()->set_sub_channel_count(lower_free);
  mock::Actions more;
  (void)engine_->Offer(request, sched_.now(), &more);
  ExecuteHost(std::move(more));
}

void World::OpHotAdd() {
  if (guest_id_.empty()) return;  // detached: no guest to act on
  v1::OfferRequest request;
  request.set_guest(guest_id_);
  *request.mutable_spec() = RandomSpec();
  mock::Actions actions;
  absl::StatusOr<v1::OfferResponse> response = engine_->Offer(request, sched_.now(), &actions);
  if (!response.ok()) {
    if (response.status().code() == absl::StatusCode::kResourceExhausted) return;  // monitor ids
    Fail(absl::StrCat("hot-add: ", response.status().ToString()));
    return;
  }
  ++stats_.hot_adds;
  Trace(absl::StrCat("    host hot-adds relid ", response->child_relid(), " (",
                     request.spec().device(), ", ", response->sub_channel_relids_size(),
                     " sub-channels)"));
  ExecuteHost(std::move(actions));
}

void World::OpHostRaw() {
  if (guest_id_.empty()) return;  // detached: no guest to act on
  std::vector<uint32_t> candidates;
  for (const auto& [relid, sid] : host_session_by_relid_) {
    if (sessions_.at(sid).device == DeviceKind::kRaw) candidates.push_back(relid);
  }
  if (candidates.empty()) return;
  const uint32_t relid = rng_.Pick(candidates);
  Session& s = sessions_.at(host_session_by_relid_.at(relid));
  const uint64_t count = rng_.Range(1, 16);
  std::deque<SimPacket>& queue = host_raw_queue_[relid];
  for (uint64_t i = 0; i < count; ++i) {
    SimPacket p;
    p.trans_id = s.next_host_trans_id++;
    p.type = static_cast<uint16_t>(PacketType::kDataInband);
    p.payload = RandomPayload(s.max_host_payload);
    queue.push_back(std::move(p));
  }
  Trace(absl::StrCat("    host queues ", count, " raw packets on relid ", relid));
  HostTrySend(relid);
}

void World::OpLinkLoss() {
  if (guest_id_.empty() || link_lost_this_round_) return;
  link_lost_this_round_ = true;
  ++stats_.link_losses;
  Trace("    the guest's link to the host breaks");
  // Whatever was in flight is gone with the stream.
  ++link_epoch_;
  to_host_.clear();
  to_guest_.clear();
  to_host_tail_ = to_guest_tail_ = sched_.now();
  // The host sees its stream end first (its channels are unmapped before the guest can free
  // their memory; the other order is a MockBackend concern, see the report).
  mock::Actions actions;
  if (absl::Status s = engine_->Detach(guest_id_, "link lost", sched_.now(), &actions); !s.ok()) {
    Fail(absl::StrCat("Detach: ", s.ToString()));
    return;
  }
  ExecuteHost(std::move(actions));
  if (failed_) return;
  plane_.reset();
  guest_id_.clear();
  host_rescinded_.clear();
  host_offers_.clear();
  host_raw_queue_.clear();
  host_raw_retry_.clear();
  for (const auto& [relid, sid] : host_session_by_relid_) sessions_.at(sid).host_ended = true;
  host_session_by_relid_.clear();
  host_mapped_pfns_.clear();
  ledger_requests_.clear();
  ledger_replies_.clear();
  released_relids_.clear();
  executor_->OnLinkLost(absl::UnavailableError("the GuestLink stream broke"));
  sched_.After(absl::Microseconds(rng_.Range(0, 500)), SimScheduler::kWork,
               "the guest attaches again and connects", [this] {
                 if (absl::Status s = AttachHost(); !s.ok()) {
                   Fail(absl::StrCat("re-attach: ", s.ToString()));
                   return;
                 }
                 const absl::Time deadline = sched_.now() + kGenerousDeadline;
                 IssueCall(RequestKind::kConnect, OfferId(), deadline, 0,
                           [deadline](BusExecutor& executor, CallDone done) {
                             executor.Connect(deadline, std::move(done));
                           });
               });
}

void World::OpRefuse() {
  if (guest_id_.empty()) return;  // detached: no guest to act on
  v1::InjectFaultRequest request;
  request.set_guest(guest_id_);
  static constexpr v1::RefuseNext::Request kKinds[] = {v1::RefuseNext::REQUEST_GPADL_CREATE,
                                                       v1::RefuseNext::REQUEST_OPEN_CHANNEL,
                                                       v1::RefuseNext::REQUEST_MODIFY_CHANNEL};
  request.mutable_refuse()->set_request(kKinds[rng_.Below(3)]);
  mock::Actions actions;
  if (absl::Status s = engine_->InjectFault(request, sched_.now(), &actions); !s.ok()) {
    Fail(absl::StrCat("inject fault: ", s.ToString()));
    return;
  }
  Trace(absl::StrCat("    host arms a refusal of the next ",
                     v1::RefuseNext::Request_Name(request.refuse().request())));
  ExecuteHost(std::move(actions));
}

}  // namespace vbus::sim
