// BusState: GPADLs, open, close and modify of channels.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/state/bus_state.h"

namespace vbus {
namespace {

// NT status as the host sent it, e.g. "0xC0000001".
std::string NtStatus(uint32_t status) { return absl::StrFormat("0x%08X", status); }

std::string Handle(uint32_t gpadl) { return absl::StrCat("0x", absl::Hex(gpadl)); }

}  // namespace

absl::Status BusState::CheckChannelCall(OfferId offer, absl::string_view what, OfferRecord** out) {
  OfferRecord* rec = FindOffer(offer);
  if (rec == nullptr) {
    return absl::NotFoundError(absl::StrCat(what, " of offer ", offer.value(), ": no such offer"));
  }
  if (rec->state == OfferState::kRescinded) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " of relid ", rec->info.relid, ": the host rescinded the channel"));
  }
  if (rec->state == OfferState::kDetached) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " of relid ", rec->info.relid, ": the connection that offered it has ended"));
  }
  if (phase_ != BusPhase::kConnected) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " of relid ", rec->info.relid, ": the bus is ", BusPhaseName(phase_)));
  }
  *out = rec;
  return absl::OkStatus();
}

uint32_t BusState::AllocateGpadlHandle() {
  for (;;) {
    const uint32_t handle = next_gpadl_handle_++;
    if (next_gpadl_handle_ == 0) next_gpadl_handle_ = 1;  // 0 is never a handle
    if (handle != 0 && !gpadls_.contains(handle)) return handle;
  }
}

// ---- GPADLs --------------------------------------------------------------------------------

RequestId BusState::CreateGpadl(OfferId offer, GpadlParams params, absl::Time deadline,
                                Actions* out) {
  OfferRecord* rec = nullptr;
  if (absl::Status s = CheckChannelCall(offer, "GPADL creation", &rec); !s.ok()) {
    return CompleteNow(RequestKind::kGpadlCreate, offer, std::move(s), out);
  }
  const uint32_t relid = rec->info.relid;
  const size_t pages = params.pfns.size();
  auto invalid = [&](auto&&... parts) {
    return CompleteNow(
        RequestKind::kGpadlCreate, offer,
        absl::InvalidArgumentError(absl::StrCat("GPADL for relid ", relid, ": ", parts...)), out);
  };
  if (pages == 0) return invalid("no pages");
  if (pages > protocol::kMaxGpadlPages) {  // docs/protocol.md §6
    return invalid(pages, " pages, more than the ", protocol::kMaxGpadlPages,
                   " one GPADL holds (its range length is 16 bits)");
  }
  if (params.byte_offset >= protocol::kPageSize) {
    return invalid("byte_offset ", params.byte_offset, " is not inside the first page");
  }
  const uint64_t span = static_cast<uint64_t>(pages) * protocol::kPageSize;
  const uint64_t count = params.byte_count == 0 ? span - params.byte_offset : params.byte_count;
  if (params.byte_offset + count > span ||
      params.byte_offset + count <= span - protocol::kPageSize) {
    return invalid("byte_offset ", params.byte_offset, " + byte_count ", count,
                   " does not end in the last of its ", pages, " pages");
  }
  const uint32_t handle = AllocateGpadlHandle();
  const RequestId id = NewRequest(RequestKind::kGpadlCreate, offer, deadline, handle);
  GpadlRecord& g = gpadls_[handle];
  g.offer = offer;
  g.relid = relid;
  g.waiter = id;
  rec->gpadls.push_back(handle);
  v1::ControlMessage m;
  v1::GpadlCreate* c = m.mutable_gpadl_create();
  c->set_child_relid(relid);
  c->set_gpadl(handle);
  c->set_byte_count(static_cast<uint32_t>(count));
  c->set_byte_offset(params.byte_offset);
  c->mutable_pfns()->Add(params.pfns.begin(), params.pfns.end());
  Send(std::move(m), out);
  ArmTimer(id, out);
  return id;
}

RequestId BusState::TeardownGpadl(OfferId offer, uint32_t gpadl, absl::Time deadline,
                                  Actions* out) {
  const std::string what = absl::StrCat("teardown of GPADL ", Handle(gpadl));
  OfferRecord* rec = FindOffer(offer);
  if (rec == nullptr) {
    return CompleteNow(RequestKind::kGpadlTeardown, offer,
                       absl::NotFoundError(absl::StrCat(what, ": no offer ", offer.value())), out);
  }
  const bool listed = std::find(rec->gpadls.begin(), rec->gpadls.end(), gpadl) != rec->gpadls.end();
  if (!listed) {
    return CompleteNow(
        RequestKind::kGpadlTeardown, offer,
        absl::NotFoundError(absl::StrCat(what, ": relid ", rec->info.relid, " has no such GPADL")),
        out);
  }
  if (rec->state != OfferState::kActive) {  // the host dropped it with the channel
    return CompleteNow(RequestKind::kGpadlTeardown, offer, absl::OkStatus(), out);
  }
  // Not while unloading either: a GpadlTeardown after the Unload would reach a host that has
  // already forgotten every GPADL (the unload drops this one).
  if (phase_ != BusPhase::kConnected) {
    return CompleteNow(
        RequestKind::kGpadlTeardown, offer,
        absl::FailedPreconditionError(absl::StrCat(what, ": the bus is ", BusPhaseName(phase_))),
        out);
  }
  GpadlRecord* found = FindGpadl(gpadl);
  if (found == nullptr) {
    return CompleteNow(RequestKind::kGpadlTeardown, offer,
                       absl::InternalError(absl::StrCat(what, ": relid ", rec->info.relid,
                                                        " lists it but it does not exist")),
                       out);
  }
  GpadlRecord& g = *found;
  if (g.ring) {
    return CompleteNow(
        RequestKind::kGpadlTeardown, offer,
        absl::FailedPreconditionError(absl::StrCat(what, ": it holds the rings of relid ",
                                                   rec->info.relid, "; Close tears it down")),
        out);
  }
  if (g.state != GpadlState::kCreated || g.abandoned) {
    return CompleteNow(RequestKind::kGpadlTeardown, offer,
                       absl::FailedPreconditionError(
                           absl::StrCat(what, " of relid ", rec->info.relid, ": it is ",
                                        g.abandoned ? "abandoned" : GpadlStateName(g.state))),
                       out);
  }
  const RequestId id = NewRequest(RequestKind::kGpadlTeardown, offer, deadline, gpadl);
  StartTeardown(gpadl, g, id, out);
  ArmTimer(id, out);
  return id;
}

void BusState::StartTeardown(uint32_t handle, GpadlRecord& g, RequestId waiter, Actions* out) {
  g.state = GpadlState::kTearingDown;
  g.waiter = waiter;
  v1::ControlMessage m;
  m.mutable_gpadl_teardown()->set_child_relid(g.relid);
  m.mutable_gpadl_teardown()->set_gpadl(handle);
  Send(std::move(m), out);
}

void BusState::EraseGpadl(uint32_t handle, Actions* out) {
  auto it = gpadls_.find(handle);
  const OfferId offer = it->second.offer;
  gpadls_.erase(it);
  if (OfferRecord* rec = FindOffer(offer); rec != nullptr) {
    auto& list = rec->gpadls;
    list.erase(std::remove(list.begin(), list.end(), handle), list.end());
  }
  out->push_back(ReleaseGpadl{offer, handle});
}

void BusState::GpadlWaiterDone(RequestId waiter, Actions* out) {
  auto it = requests_.find(waiter);
  if (it == requests_.end()) return;
  if (it->second.kind == RequestKind::kClose) {
    if (OfferRecord* rec = FindOffer(it->second.offer); rec != nullptr) {
      rec->channel = ChannelState::kClosed;
      rec->close_request = RequestId();
    }
  }
  Finish(waiter, absl::OkStatus(), out);
}

void BusState::HandleGpadlCreated(const v1::GpadlCreated& m, Actions* out) {
  const uint32_t handle = m.gpadl();
  auto it = gpadls_.find(handle);
  if (it == gpadls_.end()) {
    Ignore(IgnoreReason::kGpadlCreatedUnknown,
           absl::NotFoundError(absl::StrCat("GpadlCreated for GPADL ", Handle(handle), " (relid ",
                                            m.child_relid(), "), which is not live")),
           out);
    return;
  }
  GpadlRecord& g = it->second;
  if (g.state != GpadlState::kCreating) {
    Ignore(IgnoreReason::kGpadlCreatedUnexpected,
           absl::FailedPreconditionError(
               absl::StrCat("GpadlCreated for GPADL ", Handle(handle), " of relid ", g.relid,
                            ", which is ", GpadlStateName(g.state), ", not being created")),
           out);
    return;
  }
  if (g.relid != m.child_relid()) {
    Ignore(IgnoreReason::kGpadlCreatedUnexpected,
           absl::InvalidArgumentError(absl::StrCat("GpadlCreated for GPADL ", Handle(handle),
                                                   " names relid ", m.child_relid(),
                                                   ", but it was created for relid ", g.relid)),
           out);
    return;
  }
  OfferRecord* owner = FindOffer(g.offer);
  if (owner == nullptr) {
    Inconsistent(absl::StrCat("GPADL ", Handle(handle), " belongs to offer ", g.offer.value(),
                              ", which does not exist"),
                 out);
    return;
  }
  OfferRecord& rec = *owner;
  const uint32_t relid = g.relid;
  if (m.creation_status() == protocol::kStatusSuccess) {
    g.state = GpadlState::kCreated;
    if (g.abandoned) {
      // A Close may be waiting for it to go. While unloading nothing can wait for it and the
      // host forgets it at the Unload on its way: the unload drops it instead.
      if (phase_ == BusPhase::kConnected) StartTeardown(handle, g, g.waiter, out);
    } else if (g.ring) {
      g.waiter = RequestId();
      ContinueOpen(rec, out);
    } else {
      const RequestId waiter = g.waiter;
      g.waiter = RequestId();
      Finish(waiter, absl::OkStatus(), out, handle);
    }
    return;
  }
  // Refused: the host never mapped it.
  const RequestId waiter = g.waiter;
  const bool abandoned = g.abandoned;
  const bool ring = g.ring;
  EraseGpadl(handle, out);
  if (abandoned) {
    if (waiter.valid()) GpadlWaiterDone(waiter, out);
    return;
  }
  if (ring) {
    const RequestId open = rec.open_request;
    rec.open_request = RequestId();
    rec.ring_gpadl = 0;
    rec.channel = ChannelState::kClosed;
    Finish(open,
           absl::FailedPreconditionError(
               absl::StrCat("open of relid ", relid, " failed: host refused ring GPADL ",
                            Handle(handle), ": status ", NtStatus(m.creation_status()))),
           out);
    return;
  }
  Finish(waiter,
         absl::FailedPreconditionError(absl::StrCat("GPADL ", Handle(handle), " for relid ", relid,
                                                    " refused by host: status ",
                                                    NtStatus(m.creation_status()))),
         out);
}

void BusState::HandleGpadlTorndown(const v1::GpadlTorndown& m, Actions* out) {
  const uint32_t handle = m.gpadl();
  auto it = gpadls_.find(handle);
  if (it == gpadls_.end()) {
    Ignore(IgnoreReason::kGpadlTorndownUnknown,
           absl::NotFoundError(
               absl::StrCat("GpadlTorndown for GPADL ", Handle(handle), ", which is not live")),
           out);
    return;
  }
  if (it->second.state == GpadlState::kDropped && it->second.teardown_sent) {
    // The teardown crossed the rescind (or unload): the host answered it anyway. It is gone.
    EraseGpadl(handle, out);
    return;
  }
  if (it->second.state != GpadlState::kTearingDown) {
    Ignore(IgnoreReason::kGpadlTorndownUnexpected,
           absl::FailedPreconditionError(absl::StrCat(
               "GpadlTorndown for GPADL ", Handle(handle), " of relid ", it->second.relid,
               ", which is ", GpadlStateName(it->second.state), ", not being torn down")),
           out);
    return;
  }
  const RequestId waiter = it->second.waiter;
  EraseGpadl(handle, out);
  if (waiter.valid()) GpadlWaiterDone(waiter, out);
}

// ---- Open ----------------------------------------------------------------------------------

RequestId BusState::Open(OfferId offer, OpenParams params, absl::Time deadline, Actions* out) {
  OfferRecord* rec = nullptr;
  if (absl::Status s = CheckChannelCall(offer, "open", &rec); !s.ok()) {
    return CompleteNow(RequestKind::kOpen, offer, std::move(s), out);
  }
  const uint32_t relid = rec->info.relid;
  auto fail = [&](absl::Status s) { return CompleteNow(RequestKind::kOpen, offer, s, out); };
  if (rec->orphaned) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("open of relid ", relid, ": its primary channel was rescinded")));
  }
  if (rec->channel != ChannelState::kClosed) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "open of relid ", relid, ": the channel is ", ChannelStateName(rec->channel))));
  }
  if (rec->info.is_sub_channel()) {
    // Its primary is live (else it would be orphaned); it must also be open: the host serves
    // sub-channels only through an open primary, and the primary's Close closes them (§7).
    const OfferRecord* primary = FindOffer(rec->info.primary);
    if (primary == nullptr || primary->channel != ChannelState::kOpen) {
      return fail(absl::FailedPreconditionError(
          absl::StrCat("open of relid ", relid, ": its primary channel (relid ",
                       primary == nullptr ? 0 : primary->info.relid, ") is not open")));
    }
  }
  const size_t pages = params.ring_pfns.size();
  const size_t outbound = params.outbound_ring_pages;
  if (outbound < protocol::kMinRingPages || pages < outbound + protocol::kMinRingPages) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("open of relid ", relid, ": each ring needs at least ",
                     protocol::kMinRingPages, " pages (outbound ", outbound, ", inbound ",
                     pages > outbound ? pages - outbound : 0, ")")));
  }
  if (pages > protocol::kMaxRingPairPages) {  // both rings in one GPADL: docs/protocol.md §6, §7
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "open of relid ", relid, ": ", pages, " ring pages (outbound ", outbound, ", inbound ",
        pages - outbound, "), more than the ", protocol::kMaxRingPairPages,
        " one GPADL holds (its range length is 16 bits)")));
  }
  if (params.user_data.size() > protocol::kUserDefinedBytes) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("open of relid ", relid, ": ", params.user_data.size(),
                     " bytes of user data, more than ", protocol::kUserDefinedBytes)));
  }
  const uint32_t handle = AllocateGpadlHandle();
  const RequestId id = NewRequest(RequestKind::kOpen, offer, deadline, handle);
  GpadlRecord& g = gpadls_[handle];
  g.offer = offer;
  g.relid = relid;
  g.ring = true;
  g.waiter = id;
  rec->gpadls.push_back(handle);
  rec->ring_gpadl = handle;
  rec->channel = ChannelState::kOpeningGpadl;
  rec->closed_with_primary = false;
  rec->open_request = id;
  rec->outbound_ring_pages = params.outbound_ring_pages;
  rec->target_vp = params.target_vp;
  rec->user_data = std::move(params.user_data);
  v1::ControlMessage m;
  v1::GpadlCreate* c = m.mutable_gpadl_create();
  c->set_child_relid(relid);
  c->set_gpadl(handle);
  c->set_byte_count(static_cast<uint32_t>(pages * protocol::kPageSize));
  c->set_byte_offset(0);
  c->mutable_pfns()->Add(params.ring_pfns.begin(), params.ring_pfns.end());
  Send(std::move(m), out);
  ArmTimer(id, out);
  return id;
}

void BusState::ContinueOpen(OfferRecord& rec, Actions* out) {
  rec.channel = ChannelState::kOpening;
  // Publish before OpenChannel: once the host sees OpenChannel it may signal the relid, and
  // dispatch must then find the channel (the runtime's table store is a release).
  out->push_back(PublishChannel{rec.info.id, rec.info.relid});
  rec.published = true;
  rec.open_id = next_open_id_++;
  if (next_open_id_ == 0) next_open_id_ = 1;
  v1::ControlMessage m;
  v1::OpenChannel* o = m.mutable_open_channel();
  o->set_child_relid(rec.info.relid);
  o->set_open_id(rec.open_id);
  o->set_ring_buffer_gpadl(rec.ring_gpadl);
  o->set_target_vp(rec.target_vp);
  o->set_downstream_ring_page_offset(rec.outbound_ring_pages);
  o->set_user_data(rec.user_data);
  Send(std::move(m), out);
}

void BusState::OnPublishFailed(OfferId offer, const absl::Status& status, Actions* out) {
  OfferRecord* rec = FindOffer(offer);
  if (rec == nullptr || rec->channel != ChannelState::kOpening || !rec->published) return;
  // The OpenChannel queued behind the publish is not sent: the host never saw this open, so
  // only the ring GPADL has to go.
  rec->published = false;
  const RequestId open = rec->open_request;
  rec->open_request = RequestId();
  if (GpadlRecord* g = FindGpadl(rec->ring_gpadl); g != nullptr) {
    StartTeardown(rec->ring_gpadl, *g, RequestId(), out);
  }
  rec->ring_gpadl = 0;
  rec->channel = ChannelState::kClosed;
  Finish(open,
         absl::FailedPreconditionError(
             absl::StrCat("open of relid ", rec->info.relid,
                          ": its channel could not be published: ", status.message())),
         out);
}

void BusState::HandleOpenResult(const v1::OpenResult& m, Actions* out) {
  const uint32_t relid = m.child_relid();
  OfferRecord* rec = FindByRelid(relid);
  if (rec == nullptr) {
    Ignore(
        IgnoreReason::kOpenResultUnknownRelid,
        absl::NotFoundError(absl::StrCat("OpenResult for relid ", relid, ", which has no offer")),
        out);
    return;
  }
  if (rec->state != OfferState::kActive || rec->channel != ChannelState::kOpening ||
      m.open_id() != rec->open_id) {
    Ignore(IgnoreReason::kOpenResultUnexpected,
           absl::FailedPreconditionError(
               absl::StrCat("OpenResult for relid ", relid, " (open_id ", m.open_id(),
                            ") matches no open in progress (channel ",
                            rec->state == OfferState::kActive ? ChannelStateName(rec->channel)
                                                              : OfferStateName(rec->state),
                            ")")),
           out);
    return;
  }
  const RequestId open = rec->open_request;
  rec->open_request = RequestId();
  if (m.status() == protocol::kStatusSuccess) {
    rec->channel = ChannelState::kOpen;
    Finish(open, absl::OkStatus(), out);
    return;
  }
  out->push_back(RetireChannel{rec->info.id, relid});
  rec->published = false;
  if (GpadlRecord* g = FindGpadl(rec->ring_gpadl); g != nullptr) {
    StartTeardown(rec->ring_gpadl, *g, RequestId(), out);
  } else {
    Inconsistent(absl::StrCat("relid ", relid, "'s ring GPADL is gone"), out);
  }
  rec->ring_gpadl = 0;
  rec->channel = ChannelState::kClosed;
  Finish(open,
         absl::FailedPreconditionError(absl::StrCat(
             "open of relid ", relid, " refused by host: status ", NtStatus(m.status()))),
         out);
}

RequestId BusState::AbandonOpen(OfferRecord& rec, Actions* out) {
  const RequestId open = rec.open_request;
  rec.open_request = RequestId();
  GpadlRecord* g = FindGpadl(rec.ring_gpadl);
  if (g == nullptr) {
    Inconsistent(absl::StrCat("relid ", rec.info.relid, "'s ring GPADL is gone"), out);
  } else if (rec.channel == ChannelState::kOpeningGpadl) {
    g->abandoned = true;  // torn down as soon as the host creates it
    g->waiter = RequestId();
  } else {  // kOpening: the host may still open it; CloseChannel undoes that in order
    if (rec.published) out->push_back(RetireChannel{rec.info.id, rec.info.relid});
    rec.published = false;
    v1::ControlMessage m;
    m.mutable_close_channel()->set_child_relid(rec.info.relid);
    Send(std::move(m), out);
    StartTeardown(rec.ring_gpadl, *g, RequestId(), out);
  }
  rec.ring_gpadl = 0;
  rec.channel = ChannelState::kClosed;
  return open;
}

void BusState::OpenTimedOut(RequestId id, const PendingRequest& req, Actions* out) {
  OfferRecord* found = FindOffer(req.offer);
  if (found == nullptr) {
    Inconsistent(absl::StrCat("open request ", id.value(), " outlived its offer"), out);
    Finish(id, absl::DeadlineExceededError("open: no answer before the deadline"), out);
    return;
  }
  OfferRecord& rec = *found;
  const bool had_gpadl = rec.channel == ChannelState::kOpening;
  AbandonOpen(rec, out);
  Finish(id,
         absl::DeadlineExceededError(had_gpadl
                                         ? absl::StrCat("open of relid ", rec.info.relid,
                                                        ": no OpenResult before the deadline")
                                         : absl::StrCat("open of relid ", rec.info.relid,
                                                        ": no GpadlCreated for ring GPADL ",
                                                        Handle(req.gpadl), " before the deadline")),
         out);
}

// ---- Close ---------------------------------------------------------------------------------

RequestId BusState::Close(OfferId offer, absl::Time deadline, Actions* out) {
  OfferRecord* rec = FindOffer(offer);
  if (rec == nullptr) {
    return CompleteNow(
        RequestKind::kClose, offer,
        absl::NotFoundError(absl::StrCat("close of offer ", offer.value(), ": no such offer")),
        out);
  }
  const uint32_t relid = rec->info.relid;
  // Rescinded, detached, or a sub-channel closed on its primary's rescind or by its primary's
  // Close: the channel is already closed (and retired).
  if (rec->state != OfferState::kActive ||
      ((rec->orphaned || rec->closed_with_primary) &&
       (rec->channel == ChannelState::kClosed ||
        (rec->channel == ChannelState::kClosing && !rec->close_request.valid())))) {
    return CompleteNow(RequestKind::kClose, offer, absl::OkStatus(), out);
  }
  switch (rec->channel) {
    case ChannelState::kClosed:
      return CompleteNow(RequestKind::kClose, offer,
                         absl::FailedPreconditionError(
                             absl::StrCat("close of relid ", relid, ": the channel is not open")),
                         out);
    case ChannelState::kClosing:
      return CompleteNow(RequestKind::kClose, offer,
                         absl::FailedPreconditionError(absl::StrCat(
                             "close of relid ", relid, ": a close is already in progress")),
                         out);
    case ChannelState::kOpeningGpadl: {
      // Wait until the host has the ring GPADL and gives it back (or refuses it).
      const uint32_t handle = rec->ring_gpadl;
      const RequestId id = NewRequest(RequestKind::kClose, offer, deadline, handle);
      const RequestId open = AbandonOpen(*rec, out);
      if (GpadlRecord* g = FindGpadl(handle); g != nullptr) g->waiter = id;
      rec->channel = ChannelState::kClosing;
      rec->close_request = id;
      Finish(open,
             absl::CancelledError(absl::StrCat("open of relid ", relid, " cancelled by Close")),
             out);
      ArmTimer(id, out);
      return id;
    }
    case ChannelState::kOpening:
    case ChannelState::kOpen: {
      const RequestId id = NewRequest(RequestKind::kClose, offer, deadline, rec->ring_gpadl);
      const RequestId open = rec->open_request;
      const RequestId modify = rec->modify_request;
      rec->open_request = RequestId();
      rec->modify_request = RequestId();
      // Sub-channels first (§7): their CloseChannel reaches the host before the primary's.
      const absl::Status with_primary =
          absl::CancelledError(absl::StrCat("its primary relid ", relid, " is closing"));
      for (OfferId sub_id : rec->sub_channels) {
        OfferRecord* sub = FindOffer(sub_id);
        if (sub == nullptr || sub->state != OfferState::kActive) continue;
        if (sub->channel != ChannelState::kClosed) sub->closed_with_primary = true;
        CloseForPrimary(*sub, with_primary, out);
      }
      StartClose(*rec, id, out);
      if (open.valid()) {
        Finish(open,
               absl::CancelledError(absl::StrCat("open of relid ", relid, " cancelled by Close")),
               out);
      }
      if (modify.valid()) {
        Finish(modify,
               absl::CancelledError(absl::StrCat("modify of relid ", relid, " cancelled by Close")),
               out);
      }
      ArmTimer(id, out);
      return id;
    }
  }
  return CompleteNow(RequestKind::kClose, offer, absl::InternalError("unreachable"), out);
}

void BusState::StartClose(OfferRecord& rec, RequestId waiter, Actions* out) {
  // Retire first: after RetireChannel no callback of the channel runs, so the close (and the
  // completion that may free the channel) cannot race with dispatch.
  if (rec.published) {
    out->push_back(RetireChannel{rec.info.id, rec.info.relid});
    rec.published = false;
  }
  v1::ControlMessage m;
  m.mutable_close_channel()->set_child_relid(rec.info.relid);
  Send(std::move(m), out);
  if (GpadlRecord* g = FindGpadl(rec.ring_gpadl); g != nullptr) {
    StartTeardown(rec.ring_gpadl, *g, waiter, out);
  } else {
    Inconsistent(absl::StrCat("relid ", rec.info.relid, "'s ring GPADL is gone"), out);
    if (waiter.valid()) GpadlWaiterDone(waiter, out);
  }
  rec.ring_gpadl = 0;
  rec.channel = waiter.valid() ? ChannelState::kClosing : ChannelState::kClosed;
  rec.close_request = waiter;
}

void BusState::CloseTimedOut(RequestId id, const PendingRequest& req, Actions* out) {
  OfferRecord* found = FindOffer(req.offer);
  if (found == nullptr) {
    Inconsistent(absl::StrCat("close request ", id.value(), " outlived its offer"), out);
    Finish(id, absl::DeadlineExceededError("close: no answer before the deadline"), out);
    return;
  }
  OfferRecord& rec = *found;
  rec.close_request = RequestId();
  rec.channel = ChannelState::kClosed;
  if (auto g = gpadls_.find(req.gpadl); g != gpadls_.end() && g->second.waiter == id) {
    g->second.waiter = RequestId();  // the teardown goes on; its memory stays until then
  }
  Finish(id,
         absl::DeadlineExceededError(absl::StrCat("close of relid ", rec.info.relid,
                                                  ": ring GPADL ", Handle(req.gpadl),
                                                  " not torn down before the deadline")),
         out);
}

// ---- Modify --------------------------------------------------------------------------------

RequestId BusState::ModifyChannel(OfferId offer, uint32_t target_vp, absl::Time deadline,
                                  Actions* out) {
  OfferRecord* rec = nullptr;
  if (absl::Status s = CheckChannelCall(offer, "modify", &rec); !s.ok()) {
    return CompleteNow(RequestKind::kModifyChannel, offer, std::move(s), out);
  }
  const uint32_t relid = rec->info.relid;
  auto fail = [&](absl::Status s) {
    return CompleteNow(RequestKind::kModifyChannel, offer, std::move(s), out);
  };
  if (!protocol::HasModifyChannel(version_)) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("modify of relid ", relid, " needs protocol 4.1 or newer; negotiated ",
                     protocol::VersionName(version_))));
  }
  if (rec->channel != ChannelState::kOpen) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "modify of relid ", relid, ": the channel is ", ChannelStateName(rec->channel))));
  }
  if (rec->modify_request.valid()) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("modify of relid ", relid, ": another ModifyChannel is waiting")));
  }
  v1::ControlMessage m;
  m.mutable_modify_channel()->set_child_relid(relid);
  m.mutable_modify_channel()->set_target_vp(target_vp);
  const RequestId id = NewRequest(RequestKind::kModifyChannel, offer, deadline);
  rec->modify_request = id;
  if (!protocol::HasModifyChannelResponse(version_)) {
    // No answer below 5.3: it completes once posted (OnPosted), or fails with the post.
    Send(std::move(m), out, id);
    return id;
  }
  Send(std::move(m), out);
  ArmTimer(id, out);
  return id;
}

void BusState::HandleModifyResponse(const v1::ModifyChannelResponse& m, Actions* out) {
  const uint32_t relid = m.child_relid();
  if (!protocol::HasModifyChannelResponse(version_)) {
    Ignore(IgnoreReason::kModifyResponseUnexpected,
           absl::FailedPreconditionError(
               absl::StrCat("ModifyChannelResponse for relid ", relid, " under version ",
                            protocol::VersionName(version_), ", which has none")),
           out);
    return;
  }
  OfferRecord* rec = FindByRelid(relid);
  if (rec == nullptr || !rec->modify_request.valid()) {
    Ignore(IgnoreReason::kModifyResponseUnexpected,
           absl::FailedPreconditionError(absl::StrCat("ModifyChannelResponse for relid ", relid,
                                                      " with no ModifyChannel waiting")),
           out);
    return;
  }
  const RequestId id = rec->modify_request;
  rec->modify_request = RequestId();
  if (m.status() == protocol::kStatusSuccess) {
    Finish(id, absl::OkStatus(), out);
  } else {
    Finish(id,
           absl::FailedPreconditionError(absl::StrCat(
               "modify of relid ", relid, " refused by host: status ", NtStatus(m.status()))),
           out);
  }
}

}  // namespace vbus
