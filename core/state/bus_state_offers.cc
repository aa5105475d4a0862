// BusState: offers, rescinds and the release of removed offers.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/state/bus_state.h"

namespace vbus {

void BusState::HandleOffer(const v1::Offer& m, Actions* out) {
  IgnoreReason reason = IgnoreReason::kOfferFieldOutOfRange;
  absl::StatusOr<OfferInfo> validated = ValidateOffer(m, &reason);
  if (!validated.ok()) {
    Ignore(reason, validated.status(), out);
    ReleaseRefusedRelid(m.child_relid(), out);  // not if out of range, or held by another offer
    return;
  }
  OfferInfo info = *std::move(validated);
  const uint32_t relid = info.relid;
  if (config_.isolated && !AllowedInIsolatedGuest(info)) {
    Ignore(IgnoreReason::kOfferNotAllowedIsolated,
           absl::PermissionDeniedError(
               absl::StrCat("offer of relid ", relid, " (", info.interface_type.ToString(),
                            "): an isolated guest does not accept this device class")),
           out);
    ReleaseRefusedRelid(relid, out);  // not if another offer holds it
    return;
  }
  if (const OfferRecord* holder = FindByRelid(relid); holder != nullptr) {
    Ignore(IgnoreReason::kOfferDuplicateRelid,
           absl::AlreadyExistsError(absl::StrCat(
               "offer of relid ", relid, " (", info.interface_type.ToString(),
               "): the relid is still held by offer ", holder->info.id.value(), " (",
               OfferStateName(holder->state), ", ", holder->info.interface_type.ToString(), ")")),
           out);
    return;
  }
  const InstanceKey key{info.interface_type, info.interface_instance, info.sub_channel_index};
  if (auto dup = instance_index_.find(key); dup != instance_index_.end()) {
    Ignore(
        IgnoreReason::kOfferDuplicateInstance,
        absl::AlreadyExistsError(absl::StrCat(
            "offer of relid ", relid, " duplicates instance ", info.interface_instance.ToString(),
            " sub-channel ", info.sub_channel_index, ", already offered as relid ",
            FindOffer(dup->second) != nullptr ? FindOffer(dup->second)->info.relid : 0)),
        out);
    ReleaseRefusedRelid(relid, out);
    return;
  }
  if (!info.is_sub_channel()) {
    // A primary the suspend parked, offered again after the resume (under any relid).
    if (auto parked = parked_.find(key); parked != parked_.end()) {
      const OfferId id = parked->second;
      parked_.erase(parked);
      Unpark(id, std::move(info), out);
      return;
    }
  }
  OfferRecord* primary = nullptr;
  if (info.is_sub_channel()) {
    auto p = instance_index_.find(InstanceKey{info.interface_type, info.interface_instance, 0});
    if (p == instance_index_.end()) {
      Ignore(IgnoreReason::kSubChannelWithoutPrimary,
             absl::FailedPreconditionError(absl::StrCat(
                 "sub-channel offer of relid ", relid, " (index ", info.sub_channel_index,
                 ") has no primary of type ", info.interface_type.ToString(), " instance ",
                 info.interface_instance.ToString())),
             out);
      ReleaseRefusedRelid(relid, out);
      return;
    }
    primary = FindOffer(p->second);
    if (primary == nullptr) {
      Inconsistent(absl::StrCat("the instance index names offer ", p->second.value(),
                                ", which does not exist"),
                   out);
      return;
    }
    info.primary = p->second;
  }
  info.id = OfferId(next_offer_id_++);
  const OfferId id = info.id;
  OfferRecord& rec = offers_[id];
  rec.info = std::move(info);
  relid_index_[relid] = id;
  refused_relids_.reset(relid);  // reused: the host has had the release of a refusal
  instance_index_[key] = id;
  if (primary != nullptr) primary->sub_channels.push_back(id);
  ++counters_.offers_accepted;
  out->push_back(OfferAdded{rec.info});
}

void BusState::HandleRescind(const v1::RescindOffer& m, Actions* out) {
  const uint32_t relid = m.child_relid();
  if (!protocol::IsValidRelid(relid)) {
    Ignore(IgnoreReason::kRescindUnknownRelid,
           absl::InvalidArgumentError(absl::StrCat("rescind of relid ", relid, ", outside ",
                                                   protocol::kMinRelid, "..", protocol::kMaxRelid)),
           out);
    return;
  }
  OfferRecord* rec = FindByRelid(relid);
  if (rec == nullptr && refused_relids_.test(relid)) {
    // The host rescinds an offer the guest refused: it may not have taken the release sent
    // then as one (docs/protocol.md §8). Answer again.
    // While unloading there is nothing to answer: the Unload on its way frees every relid.
    refused_relids_.reset(relid);
    if (phase_ == BusPhase::kConnected) {
      ++counters_.refused_relids_released;
      v1::ControlMessage released;
      released.mutable_relid_released()->set_child_relid(relid);
      Send(std::move(released), out);
    }
    return;
  }
  if (rec == nullptr) {
    Ignore(IgnoreReason::kRescindUnknownRelid,
           absl::NotFoundError(absl::StrCat("rescind of relid ", relid, ", which has no offer")),
           out);
    return;
  }
  if (rec->state != OfferState::kActive) {
    Ignore(IgnoreReason::kRescindRepeated,
           absl::FailedPreconditionError(
               absl::StrCat("second rescind of relid ", relid, " (not yet released)")),
           out);
    return;
  }
  ++counters_.rescinds;
  // Sub-channels first: the host will not serve them without their primary.
  for (OfferId sub_id : rec->sub_channels) {
    if (OfferRecord* sub = FindOffer(sub_id); sub != nullptr && sub->state == OfferState::kActive) {
      OrphanSubChannel(*sub, *rec, out);
    }
  }
  rec->sub_channels.clear();
  DropChannel(*rec, absl::UnavailableError("the host rescinded the channel"), out);
  rec->state = OfferState::kRescinded;
  const InstanceKey key{rec->info.interface_type, rec->info.interface_instance,
                        rec->info.sub_channel_index};
  if (auto it = instance_index_.find(key);
      it != instance_index_.end() && it->second == rec->info.id) {
    instance_index_.erase(it);
  }
  if (rec->info.is_sub_channel()) {
    if (OfferRecord* primary = FindOffer(rec->info.primary); primary != nullptr) {
      auto& subs = primary->sub_channels;
      subs.erase(std::remove(subs.begin(), subs.end(), rec->info.id), subs.end());
    }
  }
  out->push_back(
      OfferRemoved{rec->info.id, relid,
                   absl::UnavailableError(absl::StrCat("relid ", relid, " rescinded by host"))});
}

void BusState::ReleaseRefusedRelid(uint32_t relid, Actions* out) {
  // A relid another offer holds is that offer's: releasing it would let the host reuse it
  // under a live channel. While unloading the host forgets every relid anyway.
  if (!protocol::IsValidRelid(relid) || FindByRelid(relid) != nullptr ||
      phase_ != BusPhase::kConnected) {
    return;
  }
  refused_relids_.set(relid);
  ++counters_.refused_relids_released;
  v1::ControlMessage m;
  m.mutable_relid_released()->set_child_relid(relid);
  Send(std::move(m), out);
}

void BusState::OrphanSubChannel(OfferRecord& sub, const OfferRecord& primary, Actions* out) {
  sub.orphaned = true;
  CloseForPrimary(sub,
                  absl::UnavailableError(
                      absl::StrCat("its primary relid ", primary.info.relid, " was rescinded")),
                  out);
}

void BusState::CloseForPrimary(OfferRecord& sub, const absl::Status& why, Actions* out) {
  auto failed = [&](absl::string_view what) {
    return absl::Status(
        why.code(), absl::StrCat(what, " of relid ", sub.info.relid, " failed: ", why.message()));
  };
  switch (sub.channel) {
    case ChannelState::kClosed:
    case ChannelState::kClosing:
      return;
    case ChannelState::kOpeningGpadl:
    case ChannelState::kOpening:
      Finish(AbandonOpen(sub, out), failed("open"), out);
      return;
    case ChannelState::kOpen:
      if (sub.modify_request.valid()) {
        const RequestId modify = sub.modify_request;
        sub.modify_request = RequestId();
        Finish(modify, failed("modify"), out);
      }
      StartClose(sub, RequestId(), out);
      return;
  }
}

void BusState::DropChannel(OfferRecord& rec, const absl::Status& why, Actions* out) {
  const uint32_t relid = rec.info.relid;
  // Retire before any completion: a completion may let its caller free the channel.
  if (rec.published) {
    out->push_back(RetireChannel{rec.info.id, relid});
    rec.published = false;
  }
  auto failed = [&](absl::string_view what) {
    return absl::Status(why.code(), absl::StrCat(what, " failed: ", why.message()));
  };
  if (rec.open_request.valid()) {
    const RequestId id = rec.open_request;
    rec.open_request = RequestId();
    Finish(id, failed(absl::StrCat("open of relid ", relid)), out);
  }
  if (rec.close_request.valid()) {  // the goal of the close is reached
    const RequestId id = rec.close_request;
    rec.close_request = RequestId();
    Finish(id, absl::OkStatus(), out);
  }
  if (rec.modify_request.valid()) {
    const RequestId id = rec.modify_request;
    rec.modify_request = RequestId();
    Finish(id, failed(absl::StrCat("modify of relid ", relid)), out);
  }
  std::vector<uint32_t> handles = rec.gpadls;
  std::sort(handles.begin(), handles.end());
  for (uint32_t handle : handles) {
    GpadlRecord* found = FindGpadl(handle);
    if (found == nullptr) {
      Inconsistent(absl::StrCat("relid ", relid, " lists GPADL 0x", absl::Hex(handle),
                                ", which does not exist"),
                   out);
      continue;
    }
    GpadlRecord& g = *found;
    if (g.waiter.valid()) {
      const RequestId id = g.waiter;
      g.waiter = RequestId();
      auto req = requests_.find(id);
      if (req != requests_.end() && req->second.kind == RequestKind::kGpadlCreate) {
        Finish(id, failed(absl::StrCat("GPADL 0x", absl::Hex(handle), " of relid ", relid)), out);
      } else {
        Finish(id, absl::OkStatus(), out);  // a teardown: the host dropped the GPADL
      }
    }
    if (g.state != GpadlState::kDropped) {  // dropped already by a forced unload
      g.teardown_sent = g.state == GpadlState::kTearingDown && !g.teardown_unsent;
      g.teardown_unsent = false;
      g.state = GpadlState::kDropped;
    }
  }
  rec.channel = ChannelState::kClosed;
  rec.ring_gpadl = 0;
}

absl::Status BusState::ReleaseOffer(OfferId offer, Actions* out) {
  OfferRecord* rec = FindOffer(offer);
  if (rec == nullptr) {
    return absl::NotFoundError(absl::StrCat("release of offer ", offer.value(), ": no such offer"));
  }
  if (rec->state == OfferState::kActive) {
    return absl::FailedPreconditionError(
        absl::StrCat("release of offer ", offer.value(), " (relid ", rec->info.relid,
                     "): it is still offered; only rescinded or detached offers are released"));
  }
  if (rec->state == OfferState::kRescinded) {
    relid_index_[rec->info.relid] = OfferId();
    // Not while unloading: the host forgets every relid when it reads the Unload already on
    // its way, and would refuse a RelidReleased that follows it.
    if (phase_ == BusPhase::kConnected) {
      v1::ControlMessage m;
      m.mutable_relid_released()->set_child_relid(rec->info.relid);
      Send(std::move(m), out);
    }
  }
  // After RelidReleased: the host has forgotten the relid's GPADLs before it reads any later
  // message that could reuse their pages.
  std::vector<uint32_t> handles = rec->gpadls;
  std::sort(handles.begin(), handles.end());
  for (uint32_t handle : handles) {
    gpadls_.erase(handle);
    out->push_back(ReleaseGpadl{offer, handle});
  }
  offers_.erase(offer);
  return absl::OkStatus();
}

}  // namespace vbus
