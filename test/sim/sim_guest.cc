// The guest runtime of the simulation: it makes BusState's calls, carries out its actions the
// way the ChannelBus runtime must (post messages, publish/retire in the ChannelTable, arm
// timers, file and free GPADL memory, release removed offers), and runs channels over core
// rings in the simulated guest memory: packets out, the drain loop, signals to the host.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/protocol.h"
#include "mock/host/device_kinds.h"
#include "test/sim/sim_world_internal.h"

namespace vbus::sim {
namespace {

constexpr size_t kPage = 4096;

std::vector<uint8_t> Padded(const std::vector<uint8_t>& bytes) {
  std::vector<uint8_t> padded = bytes;
  padded.resize((bytes.size() + 7) & ~size_t{7}, 0);
  return padded;
}

bool IsStaleReply(IgnoreReason r) {
  switch (r) {
    case IgnoreReason::kOpenResultUnknownRelid:
    case IgnoreReason::kOpenResultUnexpected:
    case IgnoreReason::kGpadlCreatedUnknown:
    case IgnoreReason::kGpadlCreatedUnexpected:
    case IgnoreReason::kGpadlTorndownUnknown:
    case IgnoreReason::kGpadlTorndownUnexpected:
    case IgnoreReason::kModifyResponseUnexpected:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::Time World::Deadline() {
  if (config_.tight_deadlines && rng_.Chance(0.5)) {
    return sched_.now() + absl::Microseconds(rng_.Range(20, 3000));
  }
  return sched_.now() + absl::Seconds(10);
}

DeviceKind World::DeviceOf(const Guid& type) const {
  if (type == mock::kEchoDeviceClass) return DeviceKind::kEcho;
  if (type == mock::kRawDeviceClass) return DeviceKind::kRaw;
  return DeviceKind::kOther;
}

std::vector<OfferId> World::ActiveOffers() const {
  std::vector<OfferId> ids;
  for (const auto& [id, offer] : offers_) {
    if (!offer.removed) ids.push_back(id);
  }
  return ids;
}

// ---- Calls and actions ---------------------------------------------------------------------

RequestId World::GuestCall(RequestKind kind, OfferId offer, absl::Time deadline,
                           const std::function<RequestId(Actions*)>& call, Pages memory,
                           std::optional<PendingOpen> open) {
  Actions actions;
  const RequestId id = call(&actions);
  if (issued_.contains(id)) {
    Fail(absl::StrCat("BusState reused request id ", id.value()));
    return id;
  }
  Issued& issued = issued_[id];
  issued.kind = kind;
  issued.offer = offer;
  issued.deadline = deadline;
  issued.tight = deadline - sched_.now() < absl::Seconds(1);
  Trace(absl::StrCat("    call ", RequestKindName(kind), " offer=", offer.value(), " -> request ",
                     id.value()));
  if (!memory.empty()) {
    // The runtime files the memory it allocated under the GPADL the call is tied to, and frees
    // it at that handle's ReleaseGpadl.
    const std::optional<uint32_t> handle = bus_->RequestGpadl(id);
    if (handle.has_value()) {
      if (filed_.contains(*handle) || released_handles_.contains(*handle)) {
        Fail(absl::StrCat("BusState handed out GPADL handle 0x", absl::Hex(*handle), " twice"));
        return id;
      }
      const uint32_t relid = bus_->GetChannel(offer)->offer.relid;
      filed_.emplace(*handle, FiledGpadl{std::move(memory), offer, relid, open.has_value()});
      issued.filed_gpadl = *handle;
      if (open.has_value()) {
        Session& s = sessions_.at(open->session);
        s.ring_gpadl = *handle;
        session_by_ring_gpadl_[*handle] = s.id;
        open->request = id;
        pending_opens_[offer] = *open;
      }
    } else if (open.has_value()) {
      sessions_.at(open->session).guest_ended = true;  // refused at once: never published
    }
  }
  ExecuteGuest(std::move(actions));
  return id;
}

void World::ExecuteGuest(Actions actions) {
  for (Action& action : actions) {
    if (failed_) return;
    Trace(absl::StrCat("    guest: ", DescribeAction(action)));
    if (auto* send = std::get_if<SendMessage>(&action)) {
      const v1::ControlMessage& m = send->message;
      if (m.has_gpadl_create()) {
        const uint32_t handle = m.gpadl_create().gpadl();
        if (!created_handles_.insert(handle).second) {
          Fail(absl::StrCat("GpadlCreate for handle 0x", absl::Hex(handle), " sent twice"));
          return;
        }
        auto f = filed_.find(handle);
        const std::vector<uint64_t> sent(m.gpadl_create().pfns().begin(),
                                         m.gpadl_create().pfns().end());
        if (f == filed_.end() ||
            !std::equal(sent.begin(), sent.end(), f->second.pages.pfns().begin(),
                        f->second.pages.pfns().end())) {
          Fail(absl::StrCat("GpadlCreate 0x", absl::Hex(handle),
                            " describes pages the runtime did not file under it"));
          return;
        }
      }
      if (m.has_relid_released()) {
        const uint32_t relid = m.relid_released().child_relid();
        if (table_.Lookup(relid) != nullptr) {
          Fail(absl::StrCat("RelidReleased for relid ", relid,
                            " while a channel is still published in its table slot"));
          return;
        }
        if (!host_rescinded_.contains(relid)) {
          Fail(absl::StrCat("the guest released relid ", relid,
                            ", which the host has not rescinded"));
          return;
        }
        released_relids_.insert(relid);
      }
      SendToHost(send->message);
    } else if (auto* ready = std::get_if<ConnectionReady>(&action)) {
      const uint32_t expected = std::min(config_.guest_max_version, config_.host_max_version);
      if (ready->version != expected) {
        Fail(absl::StrCat("negotiated version ", protocol::VersionName(ready->version), ", but ",
                          protocol::VersionName(expected), " is the newest both sides support"));
        return;
      }
      const uint32_t want_id =
          protocol::UsesReturnedConnectionId(ready->version) ? mock::kMessageConnectionId : 0;
      if (ready->message_connection_id != want_id) {
        Fail(absl::StrCat("message connection id ", ready->message_connection_id, " at version ",
                          protocol::VersionName(ready->version), ", expected ", want_id));
        return;
      }
      negotiated_version_ = ready->version;
    } else if (auto* publish = std::get_if<PublishChannel>(&action)) {
      OnPublish(*publish);
    } else if (auto* retire = std::get_if<RetireChannel>(&action)) {
      OnRetire(*retire);
    } else if (auto* added = std::get_if<OfferAdded>(&action)) {
      if (offers_.contains(added->offer.id)) {
        Fail(absl::StrCat("offer id ", added->offer.id.value(), " added twice"));
        return;
      }
      offers_[added->offer.id] =
          GuestOffer{added->offer, DeviceOf(added->offer.interface_type), false};
    } else if (auto* removed = std::get_if<OfferRemoved>(&action)) {
      auto it = offers_.find(removed->offer);
      if (it == offers_.end() || it->second.removed) {
        Fail(absl::StrCat("OfferRemoved for offer ", removed->offer.value(),
                          ", which is not a live offer"));
        return;
      }
      it->second.removed = true;
      ReleaseLater(removed->offer);
    } else if (auto* release = std::get_if<ReleaseGpadl>(&action)) {
      OnReleaseGpadl(*release);
    } else if (auto* complete = std::get_if<Complete>(&action)) {
      OnComplete(*complete);
    } else if (auto* arm = std::get_if<ArmTimer>(&action)) {
      const RequestId request = arm->request;
      if (auto t = timers_.find(request); t != timers_.end()) sched_.Cancel(t->second);
      timers_[request] =
          sched_.At(arm->deadline, SimScheduler::kWork,
                    absl::StrCat("timer of request ", request.value()), [this, request] {
                      timers_.erase(request);
                      Actions out;
                      bus_->OnTimer(request, sched_.now(), &out);
                      ExecuteGuest(std::move(out));
                    });
    } else if (auto* cancel = std::get_if<CancelTimer>(&action)) {
      auto t = timers_.find(cancel->request);
      if (t == timers_.end()) {
        Fail(absl::StrCat("CancelTimer for request ", cancel->request.value(),
                          ", whose timer is not armed"));
        return;
      }
      sched_.Cancel(t->second);
      timers_.erase(t);
    } else if (auto* ignored = std::get_if<InputIgnored>(&action)) {
      OnIgnored(*ignored);
    }
  }
}

void World::OnPublish(const PublishChannel& p) {
  auto it = pending_opens_.find(p.offer);
  if (it == pending_opens_.end()) {
    Fail(absl::StrCat("PublishChannel for offer ", p.offer.value(), " with no open in progress"));
    return;
  }
  const PendingOpen open = it->second;
  pending_opens_.erase(it);
  Session& s = sessions_.at(open.session);
  if (s.relid != p.relid) {
    Fail(absl::StrCat("PublishChannel names relid ", p.relid, " but offer ", p.offer.value(),
                      " opened relid ", s.relid));
    return;
  }
  auto channel = std::make_unique<SimChannel>(this, p.offer, p.relid, open.session);
  channel->device_ = s.device;
  const GuestOffer& offer = offers_.at(p.offer);
  if (offer.info.monitor_allocated) channel->monitor_id_ = offer.info.monitor_id;
  const size_t out_bytes = size_t{open.outbound_pages} * kPage;
  const size_t in_bytes = size_t{open.inbound_pages} * kPage;
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(absl::MakeSpan(open.base, out_bytes));
  channel->scratch_.resize(in_bytes - kPage);
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(
      absl::MakeSpan(open.base + out_bytes, in_bytes), absl::MakeSpan(channel->scratch_));
  if (!out.ok() || !in.ok()) {
    Fail(absl::StrCat("guest rings of relid ", p.relid, " do not attach: ",
                      out.ok() ? in.status().ToString() : out.status().ToString()));
    return;
  }
  channel->out_.emplace(*std::move(out));
  channel->in_.emplace(*std::move(in));
  channel->inbound_control_ = reinterpret_cast<RingControlPage*>(open.base + out_bytes);
  channel->max_payload_ = std::min(out_bytes, in_bytes) - kPage - 32;
  if (absl::Status st = table_.Publish(p.relid, channel.get()); !st.ok()) {
    Fail(absl::StrCat("publish of relid ", p.relid, ": ", st.ToString()));
    return;
  }
  channels_[p.offer] = std::move(channel);
}

void World::OnRetire(const RetireChannel& r) {
  auto it = channels_.find(r.offer);
  if (it == channels_.end() || it->second->relid_ != r.relid) {
    Fail(absl::StrCat("RetireChannel of offer ", r.offer.value(), " relid ", r.relid,
                      ", which is not published"));
    return;
  }
  if (options_.faults.skip_retire) {
    fault_fired_ = true;
    Trace("    fault: the runtime leaves the channel in the table");
    return;
  }
  // Single-threaded: no dispatcher is inside a dispatch section here, so this cannot wait.
  absl::StatusOr<EventTarget*> gone = table_.Retire(r.relid, absl::InfiniteFuture());
  if (!gone.ok() || *gone != it->second.get()) {
    Fail(absl::StrCat("retire of relid ", r.relid, " returned ",
                      gone.ok() ? "another channel" : gone.status().ToString()));
    return;
  }
  sessions_.at(it->second->session_).guest_ended = true;
  channels_.erase(it);
}

void World::OnReleaseGpadl(const ReleaseGpadl& r) {
  const uint32_t handle = r.gpadl;
  if (released_handles_.contains(handle)) {
    Fail(absl::StrCat("GPADL 0x", absl::Hex(handle), " released twice"));
    return;
  }
  auto f = filed_.find(handle);
  if (!created_handles_.contains(handle) || f == filed_.end()) {
    Fail(absl::StrCat("ReleaseGpadl for 0x", absl::Hex(handle), ", which the guest never created"));
    return;
  }
  const auto pfns = f->second.pages.pfns();
  for (const auto& [relid, mapped] : host_mapped_pfns_) {
    for (uint64_t pfn : mapped) {
      if (std::find(pfns.begin(), pfns.end(), pfn) != pfns.end()) {
        Fail(absl::StrCat("GPADL 0x", absl::Hex(handle), " released (its memory freed) while ",
                          "the host still maps PFN ", pfn, " as a ring of relid ", relid));
        return;
      }
    }
  }
  if (const mock::GpadlTable* table = engine_->Gpadls(guest_id_); table != nullptr) {
    if (const mock::Gpadl* g = table->Find(handle); g != nullptr) {
      const uint32_t relid = g->relid;
      const bool dropping = InFlightToHost([&](const v1::ControlMessage& m) {
        return m.has_unload() ||
               (m.has_relid_released() && m.relid_released().child_relid() == relid);
      });
      if (!dropping) {
        Fail(absl::StrCat("GPADL 0x", absl::Hex(handle), " released while the host's table ",
                          "still holds it and no RelidReleased or Unload is on its way"));
        return;
      }
    }
  }
  released_handles_.insert(handle);
  filed_.erase(f);  // the pages go back to the pool
  ++stats_.gpadls_released;
}

void World::OnComplete(const Complete& c) {
  auto it = issued_.find(c.request);
  if (it == issued_.end()) {
    Fail(absl::StrCat("Complete for request ", c.request.value(), ", which was never issued"));
    return;
  }
  Issued& issued = it->second;
  if (issued.completed) {
    Fail(absl::StrCat("request ", c.request.value(), " (", RequestKindName(issued.kind),
                      ") completed twice"));
    return;
  }
  issued.completed = true;
  if (c.kind != issued.kind) {
    Fail(absl::StrCat("request ", c.request.value(), " was a ", RequestKindName(issued.kind),
                      " but completed as a ", RequestKindName(c.kind)));
    return;
  }
  if (sched_.now() > issued.deadline) {
    Fail(absl::StrCat("request ", c.request.value(), " (", RequestKindName(c.kind),
                      ") completed at +", Now(), ", after its deadline"));
    return;
  }
  const absl::StatusCode code = c.status.code();
  if (code == absl::StatusCode::kInternal || code == absl::StatusCode::kUnknown) {
    Fail(absl::StrCat("request ", c.request.value(), " failed: ", c.status.ToString()));
    return;
  }
  if (code == absl::StatusCode::kDeadlineExceeded) {
    ++stats_.deadlines_exceeded;
    // A generous deadline is seconds of virtual time; every answer takes milliseconds.
    if (!issued.tight) {
      Fail(absl::StrCat("request ", c.request.value(), " timed out although the host answers ",
                        "every request within milliseconds: ", c.status.ToString()));
      return;
    }
  }
  if (code == absl::StatusCode::kUnavailable && c.offer.valid()) {
    std::optional<ChannelStatus> st = bus_->GetChannel(c.offer);
    if (st && st->offer_state == OfferState::kActive) {
      Fail(absl::StrCat("request ", c.request.value(), " failed Unavailable but offer ",
                        c.offer.value(), " is still active: ", c.status.ToString()));
      return;
    }
  }
  switch (c.kind) {
    case RequestKind::kConnect:
      if (!c.status.ok()) {
        Fail(absl::StrCat("connect failed: ", c.status.ToString()));
        return;
      }
      if (c.version != negotiated_version_) {
        Fail(absl::StrCat("connect completed with version ", protocol::VersionName(c.version),
                          " but ConnectionReady said ",
                          protocol::VersionName(negotiated_version_)));
        return;
      }
      break;
    case RequestKind::kOpen: {
      if (auto p = pending_opens_.find(c.offer);
          p != pending_opens_.end() && p->second.request == c.request) {
        pending_opens_.erase(p);
      }
      auto s = session_by_ring_gpadl_.find(issued.filed_gpadl);
      if (c.status.ok()) {
        ++stats_.opens_ok;
        std::optional<ChannelStatus> st = bus_->GetChannel(c.offer);
        if (s == session_by_ring_gpadl_.end() || !st || st->channel_state != ChannelState::kOpen ||
            !channels_.contains(c.offer)) {
          Fail(absl::StrCat("open of offer ", c.offer.value(),
                            " completed OK but the channel is not open and published"));
          return;
        }
        sessions_.at(s->second).guest_open = true;
      } else {
        ++stats_.open_failures;
        if (s != session_by_ring_gpadl_.end()) {
          Session& session = sessions_.at(s->second);
          auto ch = channels_.find(c.offer);
          if (ch == channels_.end() || ch->second->session_ != session.id) {
            session.guest_ended = true;
          }
        }
      }
      break;
    }
    case RequestKind::kClose:
      ++stats_.closes;
      break;
    case RequestKind::kModifyChannel:
      if (auto ch = channels_.find(c.offer); ch != channels_.end()) {
        Session& s = sessions_.at(ch->second->session_);
        // From 5.3 an OK means the host applied it; below, the host does not answer (and may
        // refuse without the guest knowing).
        if (c.status.ok() && protocol::HasModifyChannelResponse(negotiated_version_)) {
          s.target_vp = issued.target_vp;
          s.target_vp_known = true;
        } else {
          s.target_vp_known = false;
        }
      }
      break;
    case RequestKind::kGpadlCreate:
      if (c.status.ok() && c.gpadl != issued.filed_gpadl) {
        Fail(absl::StrCat("GPADL creation completed with handle 0x", absl::Hex(c.gpadl),
                          " but the call created 0x", absl::Hex(issued.filed_gpadl)));
        return;
      }
      break;
    case RequestKind::kUnload:
      if (!c.status.ok()) {
        Fail(absl::StrCat("unload failed: ", c.status.ToString()));
        return;
      }
      ++stats_.unloads;
      break;
    default:
      break;
  }
}

void World::OnIgnored(const InputIgnored& i) {
  // A correct host sends nothing the guest must ignore, except replies that went stale on the
  // way (the call timed out, was cancelled by a close, or crossed a rescind). The ledger has
  // already checked that such a reply answers a request the host really received.
  if (guest_input_is_reply_ && IsStaleReply(i.reason)) {
    ++stats_.stale_replies_ignored;
    return;
  }
  Fail(absl::StrCat("the guest ignored host input (", IgnoreReasonName(i.reason),
                    "): ", i.status.ToString()));
}

void World::ReleaseLater(OfferId offer) {
  // The driver's Remove runs, then the runtime releases the offer (and with it the relid).
  sched_.After(absl::Microseconds(rng_.Range(0, 300)), SimScheduler::kWork,
               absl::StrCat("release offer ", offer.value()), [this, offer] {
                 Actions actions;
                 if (absl::Status s = bus_->ReleaseOffer(offer, &actions); !s.ok()) {
                   Fail(absl::StrCat("ReleaseOffer: ", s.ToString()));
                   return;
                 }
                 offers_.erase(offer);
                 ExecuteGuest(std::move(actions));
               });
}

// ---- Channels: packets and signals ---------------------------------------------------------

void World::OnChannelEvent(SimChannel& channel) {
  // A continuation already scheduled will see whatever this event announces (interrupts stay
  // masked until it unmasks).
  if (!channel.continuation_pending_) {
    channel.in_->MaskInterrupts();
    GuestDrain(channel);
  }
  if (!failed_) GuestTrySend(channel);
}

void World::GuestDrain(SimChannel& channel) {
  IncomingRing& in = *channel.in_;
  // The reader's side of the ring protocol: (masked by the caller) drain, commit, unmask,
  // re-check. The host (writer) signals only when it finds the ring empty and unmasked, so
  // a packet written while masked is found only by the re-check. A seed may give the drain a
  // budget (the rest continues in a later step, like a NAPI poll) and may put the unmask in
  // a step of its own, so the host can write inside the window between "empty" and "unmask".
  size_t handled = 0;
  for (;;) {
    for (;;) {
      if (config_.drain_budget != 0 && handled == config_.drain_budget) {
        if (!GuestCommitRead(channel)) return;
        ContinueDrainLater(channel, /*unmask=*/false);
        return;
      }
      absl::StatusOr<std::optional<PacketView>> next = in.Next();
      if (!next.ok()) {
        Fail(absl::StrCat("guest inbound ring of relid ", channel.relid_,
                          " is corrupt: ", next.status().ToString()));
        return;
      }
      if (!next->has_value()) break;
      GuestHandlePacket(channel, **next);
      if (failed_) return;
      ++handled;
    }
    if (!GuestCommitRead(channel)) return;
    if (config_.split_unmask) {
      ContinueDrainLater(channel, /*unmask=*/true);
      return;
    }
    if (!GuestUnmask(channel)) return;
  }
}

bool World::GuestCommitRead(SimChannel& channel) {
  // The host armed pending_send_sz on this ring: it waits for room (back-pressure in use).
  const uint32_t pending = std::atomic_ref<uint32_t>(channel.inbound_control_->pending_send_sz)
                               .load(std::memory_order_relaxed);
  if (pending != 0) ++stats_.host_waits_for_room;
  absl::StatusOr<bool> wake_writer = channel.in_->CommitRead();
  if (!wake_writer.ok()) {
    Fail(absl::StrCat("guest inbound ring of relid ", channel.relid_, ": ",
                      wake_writer.status().ToString()));
    return false;
  }
  if (*wake_writer) GuestSignal(channel);  // the host waits for room (pending_send_sz)
  return true;
}

// Unmasks and re-checks; true if the caller should drain again (interrupts masked again).
bool World::GuestUnmask(SimChannel& channel) {
  absl::StatusOr<bool> more = channel.in_->UnmaskInterrupts();
  if (!more.ok()) {
    Fail(absl::StrCat("guest inbound ring of relid ", channel.relid_, ": ",
                      more.status().ToString()));
    return false;
  }
  if (!*more) return false;
  ++stats_.unmask_rechecks_found_data;
  if (options_.faults.skip_unmask_recheck) {
    fault_fired_ = true;
    Trace(
        absl::StrCat("    fault: the guest ignores packets found by the unmask re-check on relid ",
                     channel.relid_));
    return false;
  }
  channel.in_->MaskInterrupts();
  return true;
}

void World::ContinueDrainLater(SimChannel& channel, bool unmask) {
  channel.continuation_pending_ = true;
  const OfferId offer = channel.offer_;
  const uint64_t session = channel.session_;
  sched_.After(
      Delay(config_.interrupts), SimScheduler::kWork,
      absl::StrCat("guest ", unmask ? "unmasks" : "continues draining", " relid ", channel.relid_),
      [this, offer, session, unmask] {
        auto it = channels_.find(offer);
        if (it == channels_.end() || it->second->session_ != session) return;  // retired
        SimChannel& ch = *it->second;
        ch.continuation_pending_ = false;
        if (unmask && !GuestUnmask(ch)) {
          if (!failed_) GuestTrySend(ch);
          return;
        }
        GuestDrain(ch);
        if (!failed_) GuestTrySend(ch);
      });
}

void World::GuestHandlePacket(SimChannel& channel, const PacketView& packet) {
  Session& s = sessions_.at(channel.session_);
  SimPacket got;
  got.trans_id = packet.trans_id();
  got.type = packet.raw_type();
  got.flags = packet.flags();
  got.payload.assign(packet.payload().begin(), packet.payload().end());
  switch (channel.device_) {
    case DeviceKind::kEcho:
      if (ExpectPacket(s.echo_expect, got, absl::StrCat("echo reply on relid ", channel.relid_))) {
        ++s.host_packets;
        s.host_bytes += got.payload.size();
      }
      return;
    case DeviceKind::kRaw:
      ExpectPacket(s.guest_expect, got, absl::StrCat("host packet on relid ", channel.relid_));
      return;
    case DeviceKind::kOther:
      Fail(absl::StrCat("packet on relid ", channel.relid_, ", whose device sends none"));
      return;
  }
}

void World::GuestTrySend(SimChannel& channel) {
  Session& s = sessions_.at(channel.session_);
  while (!channel.send_queue_.empty()) {
    const SimPacket& p = channel.send_queue_.front();
    absl::StatusOr<WriteResult> r =
        channel.out_->Write(static_cast<PacketType>(p.type), p.flags, p.trans_id, p.payload);
    if (!r.ok()) {
      Fail(absl::StrCat("guest write on relid ", channel.relid_, ": ", r.status().ToString()));
      return;
    }
    if (*r == WriteResult::kFull) {
      ++stats_.guest_ring_full;
      // Ask the host to signal once the packet fits; it may fit already (the host drained
      // meanwhile): then retry at once.
      absl::StatusOr<bool> ready =
          channel.out_->ArmPendingSend(PacketRingBytes(0, p.payload.size()));
      if (!ready.ok()) {
        Fail(absl::StrCat("guest ArmPendingSend on relid ", channel.relid_, ": ",
                          ready.status().ToString()));
        return;
      }
      if (*ready) continue;
      return;
    }
    ++stats_.packets_sent;
    SimPacket expect;
    expect.trans_id = p.trans_id;
    expect.payload = Padded(p.payload);
    ++s.guest_packets;
    s.guest_bytes += expect.payload.size();
    if (channel.device_ == DeviceKind::kEcho) {
      // The echo device answers with the same bytes: a completion if one was requested.
      expect.type = (p.flags & kCompletionRequested) != 0
                        ? static_cast<uint16_t>(PacketType::kCompletion)
                        : static_cast<uint16_t>(PacketType::kDataInband);
      expect.flags = 0;
      s.echo_expect.push_back(std::move(expect));
    } else {
      expect.type = p.type;
      expect.flags = p.flags;
      s.host_expect.push_back(std::move(expect));
    }
    channel.send_queue_.pop_front();
    if (*r == WriteResult::kWrittenSignal) GuestSignal(channel);
  }
}

void World::GuestSignal(SimChannel& channel) {
  if (channel.monitor_id_.has_value()) {
    // Monitored: set the trigger bit; the host scans monitor pages at its latency.
    if (absl::Status s = memory_->TriggerMonitor(*channel.monitor_id_); !s.ok()) {
      Fail(absl::StrCat("TriggerMonitor: ", s.ToString()));
    }
    return;
  }
  absl::StatusOr<bool> was_clear = host_events_->Set(channel.relid_);
  if (!was_clear.ok()) {
    Fail(absl::StrCat("guest signal of relid ", channel.relid_, ": ",
                      was_clear.status().ToString()));
    return;
  }
  // Ring only on 0 → 1: a set bit means the host was rung for it and has not scanned yet.
  if (*was_clear) memory_->Ring(mock::Doorbell::kHost);
}

// ---- Scenario steps (guest) ----------------------------------------------------------------

std::vector<uint8_t> World::RandomPayload(size_t max) {
  size_t size = 0;
  switch (rng_.Weighted({50, 35, 15})) {
    case 0:
      size = rng_.Range(0, 64);
      break;
    case 1:
      size = rng_.Range(65, 1024);
      break;
    default:
      size = rng_.Range(1025, std::max<size_t>(max, 1025));
      break;
  }
  size = std::min(size, max);
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; i += 8) {
    const uint64_t r = rng_.Next();
    std::memcpy(bytes.data() + i, &r, std::min<size_t>(8, size - i));
  }
  return bytes;
}

void World::OpOpen() {
  std::vector<OfferId> candidates;
  for (OfferId id : ActiveOffers()) {
    std::optional<ChannelStatus> st = bus_->GetChannel(id);
    if (st && st->offer_state == OfferState::kActive &&
        st->channel_state == ChannelState::kClosed && !st->orphaned) {
      candidates.push_back(id);
    }
  }
  if (candidates.empty() || bus_->phase() != BusPhase::kConnected) return;
  const OfferId offer = rng_.Pick(candidates);
  const uint32_t out_pages = static_cast<uint32_t>(rng_.Range(2, 5));
  const uint32_t in_pages = static_cast<uint32_t>(rng_.Range(2, 5));
  absl::StatusOr<Pages> pages = pool_->Allocate(out_pages + in_pages);
  if (!pages.ok()) {
    Trace(absl::StrCat("    open skipped: ", pages.status().message()));
    return;
  }
  const size_t out_bytes = size_t{out_pages} * kPage;
  if (absl::Status s = InitializeRing(absl::MakeSpan(pages->data(), out_bytes)); !s.ok()) {
    Fail(s.ToString());
    return;
  }
  if (absl::Status s =
          InitializeRing(absl::MakeSpan(pages->data() + out_bytes, size_t{in_pages} * kPage));
      !s.ok()) {
    Fail(s.ToString());
    return;
  }
  const GuestOffer& o = offers_.at(offer);
  Session s;
  s.id = next_session_++;
  s.offer = offer;
  s.relid = o.info.relid;
  s.device = o.device;
  s.max_host_payload = (in_pages - 1) * kPage - 32;
  const uint32_t target_vp = static_cast<uint32_t>(rng_.Range(0, 3));
  s.target_vp = target_vp;
  sessions_[s.id] = s;
  PendingOpen open{pages->data(), out_pages, in_pages, s.id, RequestId()};
  OpenParams params;
  params.ring_pfns.assign(pages->pfns().begin(), pages->pfns().end());
  params.outbound_ring_pages = out_pages;
  params.target_vp = target_vp;
  params.user_data = std::string(rng_.Range(0, 16), 'u');
  const absl::Time deadline = Deadline();
  GuestCall(
      RequestKind::kOpen, offer, deadline,
      [&](Actions* out) { return bus_->Open(offer, std::move(params), deadline, out); },
      *std::move(pages), open);
}

void World::OpClose() {
  std::vector<OfferId> candidates;
  for (OfferId id : ActiveOffers()) {
    std::optional<ChannelStatus> st = bus_->GetChannel(id);
    if (st && st->offer_state == OfferState::kActive &&
        (st->channel_state == ChannelState::kOpen || st->channel_state == ChannelState::kOpening ||
         st->channel_state == ChannelState::kOpeningGpadl)) {
      candidates.push_back(id);
    }
  }
  if (candidates.empty()) return;
  const OfferId offer = rng_.Pick(candidates);
  const absl::Time deadline = Deadline();
  GuestCall(RequestKind::kClose, offer, deadline,
            [&](Actions* out) { return bus_->Close(offer, deadline, out); });
}

void World::OpCreateGpadl() {
  std::vector<OfferId> candidates = ActiveOffers();
  if (candidates.empty() || bus_->phase() != BusPhase::kConnected) return;
  const OfferId offer = rng_.Pick(candidates);
  const size_t count = rng_.Range(1, 4);
  absl::StatusOr<Pages> pages = pool_->Allocate(count);
  if (!pages.ok()) {
    Trace(absl::StrCat("    GPADL skipped: ", pages.status().message()));
    return;
  }
  GpadlParams params;
  params.pfns.assign(pages->pfns().begin(), pages->pfns().end());
  if (rng_.Chance(0.3)) {
    // A byte range inside the pages that still ends in the last one.
    const uint64_t span = count * kPage;
    params.byte_offset = static_cast<uint32_t>(rng_.Range(0, kPage - 1));
    const uint64_t trim =
        rng_.Range(0, std::min<uint64_t>(kPage - 1, span - params.byte_offset - 1));
    params.byte_count = static_cast<uint32_t>(span - params.byte_offset - trim);
    if (params.byte_offset + params.byte_count <= span - kPage) params.byte_count = 0;
    if (params.byte_count == 0) params.byte_offset = 0;
  }
  const absl::Time deadline = Deadline();
  GuestCall(
      RequestKind::kGpadlCreate, offer, deadline,
      [&](Actions* out) { return bus_->CreateGpadl(offer, params, deadline, out); },
      *std::move(pages));
}

void World::OpTeardownGpadl() {
  std::vector<GpadlStatus> candidates;
  for (const GpadlStatus& g : bus_->Gpadls()) {
    if (g.ring || g.state != GpadlState::kCreated || g.abandoned) continue;
    std::optional<ChannelStatus> st = bus_->GetChannel(g.offer);
    if (st && st->offer_state == OfferState::kActive) candidates.push_back(g);
  }
  if (candidates.empty()) return;
  const GpadlStatus g = rng_.Pick(candidates);
  const absl::Time deadline = Deadline();
  GuestCall(RequestKind::kGpadlTeardown, g.offer, deadline,
            [&](Actions* out) { return bus_->TeardownGpadl(g.offer, g.handle, deadline, out); });
}

void World::OpModify() {
  std::vector<OfferId> candidates;
  for (OfferId id : ActiveOffers()) {
    std::optional<ChannelStatus> st = bus_->GetChannel(id);
    if (st && st->offer_state == OfferState::kActive && st->channel_state == ChannelState::kOpen) {
      candidates.push_back(id);
    }
  }
  if (candidates.empty()) return;
  const OfferId offer = rng_.Pick(candidates);
  const uint32_t vp = static_cast<uint32_t>(rng_.Range(0, 7));
  const absl::Time deadline = Deadline();
  const RequestId id = GuestCall(RequestKind::kModifyChannel, offer, deadline, [&](Actions* out) {
    return bus_->ModifyChannel(offer, vp, deadline, out);
  });
  if (auto it = issued_.find(id); it != issued_.end()) it->second.target_vp = vp;
}

void World::OpTraffic() {
  std::vector<SimChannel*> candidates;
  for (const auto& [offer, channel] : channels_) {
    const Session& s = sessions_.at(channel->session_);
    if (s.guest_open && !s.guest_ended && channel->device_ != DeviceKind::kOther) {
      candidates.push_back(channel.get());
    }
  }
  if (candidates.empty()) return;
  SimChannel& channel = *rng_.Pick(candidates);
  Session& s = sessions_.at(channel.session_);
  const uint64_t count = rng_.Range(1, 24);
  for (uint64_t i = 0; i < count; ++i) {
    SimPacket p;
    p.trans_id = s.next_trans_id++;
    p.type = static_cast<uint16_t>(PacketType::kDataInband);
    p.flags = channel.device_ == DeviceKind::kEcho && rng_.Chance(0.3) ? kCompletionRequested : 0;
    p.payload = RandomPayload(channel.max_payload_);
    channel.send_queue_.push_back(std::move(p));
  }
  Trace(absl::StrCat("    guest queues ", count, " packets on relid ", channel.relid_));
  GuestTrySend(channel);
}

}  // namespace vbus::sim
