// The link between guest and host: the two control-message transports (in order per
// direction, with seeded delays, lost with the GuestLink when it breaks), interrupts (doorbells,
// drops, periodic polls, monitor scans) and what the guest's SimBackend reports — its posts
// (checked before they go on the wire), the negotiated connection, and its signals (after
// which the host may react at once).
#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"
#include "google/protobuf/util/message_differencer.h"
#include "test/sim/sim_world_internal.h"

namespace vbus::sim {

// ---- Control-message transports (in order per direction) -------------------------------------

bool World::ThroughTheWire(v1::ControlMessage& m, hyperv::WireDecoder& decoder,
                           absl::string_view direction) {
  if (!options_.binary_codec) return true;
  absl::StatusOr<std::vector<hyperv::WireMessage>> parts = hyperv::EncodeMessage(m);
  if (!parts.ok()) {
    Fail(absl::StrCat(direction, " ", DescribeControlMessage(m),
                      " cannot be encoded: ", parts.status().ToString()));
    return false;
  }
  std::optional<v1::ControlMessage> decoded;
  for (size_t i = 0; i < parts->size(); ++i) {
    absl::StatusOr<std::optional<v1::ControlMessage>> d = decoder.Decode((*parts)[i]);
    if (!d.ok() || d->has_value() != (i + 1 == parts->size())) {
      Fail(absl::StrCat(
          direction, " ", DescribeControlMessage(m), ": wire message ", i + 1, " of ",
          parts->size(), " decodes to ",
          d.ok() ? (d->has_value() ? "a message too early" : "nothing") : d.status().ToString()));
      return false;
    }
    if (d->has_value()) decoded = **d;
  }
  ++stats_.wire_messages;
  stats_.wire_parts += parts->size();
  // The device-defined bytes are a fixed 120 on the wire: shorter means zero-padded.
  v1::ControlMessage sent = m;
  if (sent.has_offer()) {
    std::string bytes = sent.offer().user_defined();
    bytes.resize(protocol::kUserDefinedBytes, '\0');
    sent.mutable_offer()->set_user_defined(bytes);
  }
  if (sent.has_open_channel()) {
    std::string bytes = sent.open_channel().user_data();
    bytes.resize(protocol::kUserDefinedBytes, '\0');
    sent.mutable_open_channel()->set_user_data(bytes);
  }
  google::protobuf::util::MessageDifferencer differ;
  std::string differences;
  differ.ReportDifferencesToString(&differences);
  if (!differ.Compare(sent, *decoded)) {
    Fail(
        absl::StrCat(direction, " ", DescribeControlMessage(m), " arrives changed: ", differences));
    return false;
  }
  m = *std::move(decoded);  // the receiver gets what the wire carried
  return true;
}

absl::Status World::SendToHost(v1::ControlMessage message) {
  if (guest_id_.empty()) {
    return absl::UnavailableError("the GuestLink is down (the guest has not re-attached)");
  }
  if (!ThroughTheWire(message, to_host_wire_, "the guest's")) {
    return absl::InvalidArgumentError("the message cannot cross the wire");
  }
  if (options_.faults.drop_relid_released && message.has_relid_released() && !fault_fired_) {
    fault_fired_ = true;
    Trace(absl::StrCat("    fault: the link loses ", DescribeControlMessage(message)));
    return absl::OkStatus();
  }
  // Order is kept: a message never overtakes the one sent before it.
  const absl::Time at = std::max(sched_.now() + Delay(config_.to_host), to_host_tail_);
  to_host_tail_ = at;
  std::string label = absl::StrCat("deliver to host: ", DescribeControlMessage(message));
  to_host_.push_back(std::move(message));
  sched_.At(at, SimScheduler::kWork, std::move(label), [this, epoch = link_epoch_] {
    if (epoch == link_epoch_) DeliverToHost();  // else the link broke with it in flight
  });
  return absl::OkStatus();
}

void World::DeliverToHost() {
  v1::ControlMessage m = std::move(to_host_.front());
  to_host_.pop_front();
  ++stats_.messages_to_host;
  LedgerRequest(m);
  if (m.has_relid_released()) host_rescinded_.erase(m.relid_released().child_relid());
  if (m.has_unload()) host_rescinded_.clear();  // the host forgets rescinded relids on unload
  const uint32_t relid = mock::RelidOf(m);
  host_input_active_ = true;
  host_input_ = DescribeControlMessage(m);
  host_input_relid_ = relid;
  host_input_fault_ = false;
  host_input_prior_.reset();
  if (relid != 0) {
    absl::StatusOr<mock::HostEngine::ChannelSnapshot> c = engine_->FindChannel(guest_id_, relid);
    if (c.ok()) host_input_prior_ = c->state;
  }
  v1::GuestToHost g;
  *g.mutable_control() = std::move(m);
  mock::Actions actions;
  if (absl::Status s = engine_->HandleGuestMessage(guest_id_, g, sched_.now(), &actions); !s.ok()) {
    Fail(absl::StrCat("host engine rejected a guest message: ", s.ToString()));
  }
  ExecuteHost(std::move(actions));
  host_input_active_ = false;
}

void World::SendToGuest(v1::ControlMessage message) {
  int copies = 1;
  if (options_.faults.duplicate_open_result && message.has_open_result() &&
      message.open_result().status() == 0 && !fault_fired_) {
    fault_fired_ = true;
    copies = 2;
    Trace(absl::StrCat("    fault: the link duplicates ", DescribeControlMessage(message)));
  }
  for (int i = 0; i < copies; ++i) {
    const absl::Time at = std::max(sched_.now() + Delay(config_.to_guest), to_guest_tail_);
    to_guest_tail_ = at;
    std::string label = absl::StrCat("deliver to guest: ", DescribeControlMessage(message));
    to_guest_.push_back(message);
    sched_.At(at, SimScheduler::kWork, std::move(label), [this, epoch = link_epoch_] {
      if (epoch == link_epoch_) DeliverToGuest();
    });
  }
}

void World::DeliverToGuest() {
  v1::ControlMessage m = std::move(to_guest_.front());
  to_guest_.pop_front();
  ++stats_.messages_to_guest;
  // Received: the ledger counts it now; the executor handles it when its thread gets to it
  // (which may be busy right now: then callers waiting for this reply may give up first).
  const bool is_reply = LedgerReply(m);
  if (failed_) return;
  // Spoiled on its way (as a buggy host or link would): a sub-channel offer gets a monitor id
  // past 127, which the guest must refuse — and then give the relid back (docs/protocol.md §8).
  // Only sub-channels: a spoiled primary takes its sub-channels down with it, which this
  // model does not follow.
  bool spoiled = false;
  if (m.has_offer()) {  // offered anew
    released_on_refusal_.erase(m.offer().child_relid());
    spoiled_relids_.erase(m.offer().child_relid());
  }
  // A rescind of a spoiled offer the guest refused while unloading (it then sends nothing and
  // forgets the relid): the guest does not know the relid, as it should not.
  if (m.has_rescind_offer()) spoiled = spoiled_relids_.contains(m.rescind_offer().child_relid());
  if (m.has_offer() && m.offer().sub_channel_index() != 0 && config_.spoiled_offers > 0 &&
      link_rng_.Chance(config_.spoiled_offers)) {
    spoiled = true;
    spoiled_relids_.insert(m.offer().child_relid());
    m.mutable_offer()->set_monitor_allocated(true);
    m.mutable_offer()->set_monitor_id(200);
    ++stats_.offers_spoiled;
    Trace(absl::StrCat("    the link spoils the offer of relid ", m.offer().child_relid(),
                       " (monitor id 200)"));
  }
  if (!ThroughTheWire(m, to_guest_wire_, "the host's")) return;
  ExecutorInput([this, m = std::move(m), is_reply, spoiled, epoch = link_epoch_] {
    if (epoch != link_epoch_) return;  // the link broke before the executor got to it
    if (m.has_offer()) {
      const uint32_t relid = m.offer().child_relid();
      if (std::optional<OfferId> held = bus().FindOfferByRelid(relid); held.has_value()) {
        std::optional<ChannelStatus> st = bus().GetChannel(*held);
        Fail(absl::StrCat("the host offered relid ", relid,
                          " while the guest still holds it (offer ", held->value(), ", ",
                          st ? OfferStateName(st->offer_state) : "?", ")"));
        return;
      }
      if (released_relids_.erase(relid) > 0) ++stats_.relid_reuses;  // released, offered again
    }
    executor_->OnHostMessage(m);
    CheckIgnored(is_reply, spoiled);
  });
}

// ---- Interrupts ---------------------------------------------------------------------------

void World::CheckDoorbells() {
  // A doorbell that moved since the last step was rung: that side raised an interrupt.
  for (uint32_t vp = 0; vp < kSimVps; ++vp) {
    const uint32_t guest_bell = memory_->DoorbellValue(mock::Doorbell::kGuest, vp);
    if (guest_bell != guest_bell_seen_[vp]) {
      guest_bell_seen_[vp] = guest_bell;
      RaiseInterrupt(/*to_guest=*/true, vp);
    }
  }
  const uint32_t host_bell = memory_->DoorbellValue(mock::Doorbell::kHost);
  if (host_bell != host_bell_seen_) {
    host_bell_seen_ = host_bell;
    RaiseInterrupt(/*to_guest=*/false);
  }
}

void World::RaiseInterrupt(bool to_guest, uint32_t vp) {
  ++stats_.interrupts;
  const char* side = to_guest ? "guest" : "host";
  if (config_.drops && link_rng_.Chance(config_.drop_probability)) {
    ++stats_.interrupts_dropped;
    if (options_.faults.lose_wakeups) fault_fired_ = true;
    Trace(absl::StrCat("    interrupt to the ", side, " dropped"));
    return;
  }
  bool& pending = to_guest ? guest_irq_pending_[vp] : host_irq_pending_;
  if (pending) return;  // one is on its way; its scan sees every bit set by then
  pending = true;
  sched_.After(Delay(config_.interrupts), SimScheduler::kWork,
               to_guest ? absl::StrCat("guest interrupt on VP ", vp) : "host interrupt",
               [this, to_guest, vp] {
                 if (to_guest) {
                   guest_irq_pending_[vp] = false;
                   GuestInterrupt("interrupt", vp);
                 } else {
                   host_irq_pending_ = false;
                   HostInterrupt("interrupt");
                 }
               });
}

void World::GuestInterrupt(absl::string_view why, uint32_t vp) {
  // The production hand-off: the raising thread scans unless a scan is in progress (a blocked
  // callback below us); then that scan goes round again when it is done.
  EventDispatch& dispatch = *dispatch_[vp];
  const EventDispatchStats before = dispatch.stats();
  const uint64_t spurious_before = table_.spurious_events();
  dispatch.Raise();
  const EventDispatchStats after = dispatch.stats();
  const uint64_t delivered = after.delivered - before.delivered;
  const uint64_t spurious = table_.spurious_events() - spurious_before;
  if (delivered + spurious > 0) {
    Trace(absl::StrCat("    guest ", why, " on VP ", vp, ": ", delivered, " channel events, ",
                       spurious, " spurious",
                       after.requeued > before.requeued ? " (budgets ran out)" : ""));
  } else if (after.passes == before.passes) {
    Trace(absl::StrCat("    guest ", why, " on VP ", vp, ": left to the scan in progress"));
  }
  if (!failed_) SchedulePolls();
}

void World::HostInterrupt(absl::string_view why) {
  if (plane_ == nullptr) return;  // detached
  host_busy_ = true;
  const size_t drained = plane_->ProcessEvents();
  host_busy_ = false;
  if (drained > 0) Trace(absl::StrCat("    host ", why, ": drained ", drained, " channels"));
}

void World::SchedulePoll(bool guest) {
  const absl::Duration period = guest ? config_.guest_poll : config_.host_poll;
  sched_.After(period, SimScheduler::kPeriodic, guest ? "guest poll" : "host poll", [this, guest] {
    ++stats_.polls;
    if (guest) {
      for (uint32_t vp = 0; vp < kSimVps; ++vp) GuestInterrupt("poll", vp);
    } else {
      HostInterrupt("poll");
    }
    SchedulePoll(guest);
  });
}

void World::ScheduleHostMonitorScan() {
  sched_.After(absl::Microseconds(config_.monitor_latency_us), SimScheduler::kPeriodic,
               "host monitor scan", [this] {
                 if (plane_ != nullptr && plane_->HasMonitoredChannels()) {
                   HostInterrupt("monitor scan");
                 }
                 ScheduleHostMonitorScan();
               });
}

// ---- What the guest's backend reports ------------------------------------------------------

absl::Status World::BackendPost(const v1::ControlMessage& m) {
  // Host message buffers full after the backend's retries: the host never sees it, and only
  // the request that sent it fails (docs/protocol.md §5). Ring teardowns and CloseChannel, which
  // cannot be taken back, are left alone, and so are the negotiation messages.
  const bool may_fail =
      m.has_gpadl_create() || m.has_open_channel() || m.has_modify_channel() ||
      (m.has_gpadl_teardown() && !session_by_ring_gpadl_.contains(m.gpadl_teardown().gpadl()));
  if (may_fail && config_.post_failures > 0 && link_rng_.Chance(config_.post_failures)) {
    ++stats_.post_failures;
    Trace(absl::StrCat("    guest's post of ", DescribeControlMessage(m),
                       " fails: host message buffers full"));
    return absl::ResourceExhaustedError("host message buffers full (simulated)");
  }
  Trace(absl::StrCat("    guest sends ", DescribeControlMessage(m)));
  if (m.has_gpadl_create()) {
    // The executor files the memory it allocated under the GPADL, and describes exactly it.
    const uint32_t handle = m.gpadl_create().gpadl();
    if (!created_handles_.insert(handle).second) {
      Fail(absl::StrCat("GpadlCreate for handle 0x", absl::Hex(handle), " sent twice"));
      return absl::OkStatus();
    }
    const std::vector<uint64_t> pfns(m.gpadl_create().pfns().begin(),
                                     m.gpadl_create().pfns().end());
    const SimAllocation* a = backend_->Describe(pfns, handle);
    if (a == nullptr || !executor_->HoldsGpadlMemory(handle)) {
      Fail(absl::StrCat("GpadlCreate 0x", absl::Hex(handle), " describes pages the executor ",
                        a == nullptr ? "did not allocate as one run" : "did not file under it"));
      return absl::OkStatus();
    }
    if (a->tag.session != 0) {
      Session& s = sessions_.at(a->tag.session);
      s.ring_gpadl = handle;
      session_by_ring_gpadl_[handle] = s.id;
    } else if (a->tag.call != 0) {
      calls_.at(a->tag.call).gpadl = handle;
    }
  }
  if (m.has_relid_released()) {
    const uint32_t relid = m.relid_released().child_relid();
    // (A dispatcher may still deliver to an older channel of the relid, one whose offer went
    // with a link loss or unload: that channel stays with the executor until it is let go.)
    if (table_.Lookup(relid) != nullptr) {
      Fail(absl::StrCat("RelidReleased for relid ", relid,
                        " while a channel is still published in its table slot"));
      return absl::OkStatus();
    }
    const bool refused = !bus().FindOfferByRelid(relid).has_value() &&
                         host_offers_.contains(relid) && !released_relids_.contains(relid);
    if (!bus().FindOfferByRelid(relid).has_value() && released_on_refusal_.erase(relid) > 0) {
      // The host rescinded the refused offer before it read the refusal's release: the guest
      // answers the rescind too (docs/protocol.md §17), and the host takes both.
      Trace(absl::StrCat("    a second release of refused relid ", relid, " (crossed a rescind)"));
      return SendToHost(m);
    }
    if (refused && spoiled_relids_.erase(relid) > 0) {
      // An offer the link spoiled: the guest refused it and gives the relid back, as it must
      // (docs/protocol.md §8); the host then frees it.
      ++stats_.refused_offers_released;
      released_on_refusal_.insert(relid);
      spoiled_releases_.insert(relid);
      return SendToHost(m);
    }
    if (!host_rescinded_.contains(relid)) {
      // Besides a rescinded relid, the guest releases only the relid of an offer it refused
      // (docs/protocol.md §8) — never one an offer of its own holds. The engine never makes an
      // offer a correct guest refuses, so either way the run has failed; say which.
      Fail(refused ? absl::StrCat("the guest refused the host's offer of relid ", relid,
                                  " and released it: the host sent an offer a correct guest "
                                  "refuses (see the executor's log)")
                   : absl::StrCat("the guest released relid ", relid,
                                  ", which the host has not rescinded"));
      return absl::OkStatus();
    }
    released_relids_.insert(relid);
  }
  return SendToHost(m);
}

void World::BackendConnection(const NegotiatedConnection& c) {
  const uint32_t expected = std::min(config_.guest_max_version, config_.host_max_version);
  if (c.version != expected) {
    Fail(absl::StrCat("negotiated version ", protocol::VersionName(c.version), ", but ",
                      protocol::VersionName(expected), " is the newest both sides support"));
    return;
  }
  const uint32_t want_id =
      protocol::UsesReturnedConnectionId(c.version) ? mock::kMessageConnectionId : 0;
  if (c.message_connection_id != want_id) {
    Fail(absl::StrCat("message connection id ", c.message_connection_id, " at version ",
                      protocol::VersionName(c.version), ", expected ", want_id));
    return;
  }
  negotiated_version_ = c.version;
}

void World::BackendSignal(const ChannelSignal& signal) {
  // A signal while the host waits for room in the inbound ring: back-pressure at work.
  if (std::optional<OfferId> offer = bus().FindOfferByRelid(signal.relid); offer.has_value()) {
    if (const uint64_t sid = AttachedSession(*offer); sid != 0) {
      const Session& s = sessions_.at(sid);
      if (s.rings != nullptr && !s.guest_ended) {
        auto* inbound = reinterpret_cast<RingControlPage*>(s.rings + size_t{s.outbound_pages} *
                                                                         protocol::kPageSize);
        if (std::atomic_ref<uint32_t>(inbound->pending_send_sz).load(std::memory_order_relaxed) !=
            0) {
          ++stats_.host_waits_for_room;
        }
      }
    }
  }
  // A host on another CPU may react before the signalling call returns: it then writes into
  // a ring the guest is still draining (interrupts masked: only the re-check finds those).
  if (plane_ != nullptr && !host_busy_ && link_rng_.Chance(config_.inline_host)) {
    ++stats_.inline_host_reactions;
    HostInterrupt("reacts at once");
  }
}

}  // namespace vbus::sim
