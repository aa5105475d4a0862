// BusState: suspend and resume (hibernation, docs/protocol.md §9).
//
// A suspend is an orderly Unload after which the primaries are parked instead of removed; a
// resume is a Connect restricted to the version agreed before, during which a re-offered
// primary takes its parked record's place. Why the OfferId survives: everything the runtime
// keys by it — the Channel object a driver holds, the driver binding, the executor's records —
// then carries over unchanged, and only the fields the host may change (the relid first of
// all) are replaced, at one point (Unpark), while the channel is closed and unpublished.
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/state/bus_state.h"

namespace vbus {

RequestId BusState::Resume(absl::Time deadline, Actions* out) {
  if (phase_ != BusPhase::kSuspended) {
    return CompleteNow(RequestKind::kConnect, OfferId(),
                       absl::FailedPreconditionError(absl::StrCat(
                           "resume: the bus is ", BusPhaseName(phase_), ", not suspended")),
                       out);
  }
  versions_to_try_ = {suspended_version_};
  return StartNegotiation(deadline, out);
}

void BusState::ResumeRefused(absl::string_view why, Actions* out) {
  ResumeFailed(
      absl::FailedPreconditionError(absl::StrCat(
          "resume: the host refused version ", protocol::VersionName(suspended_version_),
          ", the version in use before the suspend (", why, "); the bus is still suspended")),
      out);
}

void BusState::ResumeFailed(absl::Status status, Actions* out) {
  phase_ = BusPhase::kSuspended;
  const RequestId id = connect_request_;
  connect_request_ = RequestId();
  Finish(id, std::move(status), out);
}

void BusState::ParkAll(Actions* out) {
  const uint32_t version = version_;
  // Everything but the active primaries goes as at any unload (sub-channels first: the
  // driver asks for them again after the resume), then the primaries are parked.
  std::vector<OfferId> primaries;
  for (auto& [id, rec] : offers_) {
    if (rec.state == OfferState::kActive && !rec.info.is_sub_channel()) {
      primaries.push_back(id);
      rec.state = OfferState::kParked;  // DetachAll passes parked offers over
    }
  }
  const absl::Status reason = absl::CancelledError("bus unloaded for a suspend");
  DetachAll(reason, out, /*keep_parked=*/true);  // clears the relid and instance indexes
  for (OfferId id : primaries) {
    OfferRecord& rec = offers_.find(id)->second;  // `primaries` holds only keys of offers_
    rec.sub_channels.clear();                     // every one of them was just removed
    // The host forgot every GPADL with the connection; Unload(kSuspend) made sure none was
    // left but the ones a forced path dropped: release those now.
    std::vector<uint32_t> handles = rec.gpadls;
    for (uint32_t handle : handles) EraseGpadl(handle, out);
    parked_[InstanceKey{rec.info.interface_type, rec.info.interface_instance, 0}] = id;
    out->push_back(OfferParked{id, rec.info.relid});
  }
  suspended_version_ = version;
  phase_ = BusPhase::kSuspended;
}

void BusState::Unpark(OfferId id, OfferInfo info, Actions* out) {
  OfferRecord& rec = offers_.find(id)->second;  // the parked index holds only live offers
  const uint32_t old_relid = rec.info.relid;
  info.id = id;
  rec = OfferRecord();  // closed, unpublished, nothing pending: what a parked offer is
  rec.info = std::move(info);
  relid_index_[rec.info.relid] = id;
  refused_relids_.reset(rec.info.relid);
  instance_index_[InstanceKey{rec.info.interface_type, rec.info.interface_instance, 0}] = id;
  ++counters_.offers_resumed;
  out->push_back(OfferResumed{rec.info, old_relid});
}

void BusState::DropParked(const absl::Status& why, Actions* out) {
  for (const auto& [key, id] : parked_) {
    OfferRecord& rec = offers_.find(id)->second;  // the parked index holds only live offers
    rec.state = OfferState::kDetached;
    out->push_back(OfferRemoved{id, rec.info.relid, why});
  }
  parked_.clear();
}

std::vector<OfferInfo> BusState::ParkedOffers() const {
  std::vector<OfferInfo> parked;
  for (const auto& [id, rec] : offers_) {
    if (rec.state == OfferState::kParked) parked.push_back(rec.info);
  }
  return parked;
}

}  // namespace vbus
