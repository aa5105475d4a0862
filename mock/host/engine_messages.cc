// HostEngine: the guest's side of the conversation — one handler per guest → host message.
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "mock/host/engine.h"
#include "mock/host/engine_internal.h"

namespace vbus::mock {
namespace {

bool Negotiated(v1::GuestState s) {
  return s == v1::GUEST_STATE_CONNECTED || s == v1::GUEST_STATE_OFFERS_DELIVERED;
}

const char* StateName(HostEngine::ChannelState s) {
  switch (s) {
    case HostEngine::ChannelState::kOffered:
      return "offered (not open)";
    case HostEngine::ChannelState::kOpening:
      return "opening";
    case HostEngine::ChannelState::kOpen:
      return "open";
    case HostEngine::ChannelState::kRescinded:
      return "rescinded";
  }
  return "?";
}

}  // namespace

absl::Status HostEngine::HandleGuestMessage(absl::string_view guest_id,
                                            const v1::GuestToHost& message, absl::Time now,
                                            Actions* out) {
  Guest* found = FindGuest(guest_id);
  if (found == nullptr) return absl::NotFoundError(absl::StrCat("no guest ", guest_id));
  Guest& g = *found;
  switch (message.kind_case()) {
    case v1::GuestToHost::kAttach:
      Reject(g, absl::StatusCode::kFailedPrecondition, 0,
             "attach: this stream is already attached as " + g.id, now, out);
      return absl::OkStatus();
    case v1::GuestToHost::kSignal:
      OnSignal(g, message.signal(), now, out);
      return absl::OkStatus();
    case v1::GuestToHost::KIND_NOT_SET:
      Reject(g, absl::StatusCode::kInvalidArgument, 0, "empty GuestToHost message", now, out);
      return absl::OkStatus();
    case v1::GuestToHost::kBatch:
      return absl::InvalidArgumentError(
          "HandleGuestMessage: a control batch goes through CheckBatch and HandleGuestControl");
    case v1::GuestToHost::kControl:
      break;
  }
  OnControl(g, message.control(), now, out);
  return absl::OkStatus();
}

absl::StatusOr<bool> HostEngine::CheckBatch(absl::string_view guest_id,
                                            const v1::ControlBatch& batch, absl::Time now,
                                            Actions* out) {
  Guest* g = FindGuest(guest_id);
  if (g == nullptr) return absl::NotFoundError(absl::StrCat("no guest ", guest_id));
  if (batch.messages().empty()) {
    Reject(*g, absl::StatusCode::kInvalidArgument, 0, "empty control batch", now, out);
    return false;
  }
  if (batch.messages_size() > v1::CONTROL_BATCH_MAX_MESSAGES) {
    Reject(
        *g, absl::StatusCode::kInvalidArgument, 0,
        absl::StrCat("control batch of ", batch.messages_size(), " messages exceeds the limit of ",
                     v1::CONTROL_BATCH_MAX_MESSAGES, "; none of them was handled"),
        now, out);
    return false;
  }
  return true;
}

absl::Status HostEngine::HandleGuestControl(absl::string_view guest_id,
                                            const v1::ControlMessage& message, absl::Time now,
                                            Actions* out) {
  Guest* g = FindGuest(guest_id);
  if (g == nullptr) return absl::NotFoundError(absl::StrCat("no guest ", guest_id));
  OnControl(*g, message, now, out);
  return absl::OkStatus();
}

void HostEngine::OnControl(Guest& g, const v1::ControlMessage& m, absl::Time now, Actions* out) {
  const std::string type = MessageTypeName(m);
  if (message_events_) Event(g.id, v1::EVENT_KIND_GUEST_MESSAGE, RelidOf(m), now, out, "", &m);
  switch (m.message_case()) {
    case v1::ControlMessage::MESSAGE_NOT_SET:
      Reject(g, absl::StatusCode::kInvalidArgument, 0, "empty ControlMessage", now, out);
      return;
    case v1::ControlMessage::kInitiateContact:
      OnInitiateContact(g, m.initiate_contact(), now, out);
      return;
    case v1::ControlMessage::kVersionResponse:
    case v1::ControlMessage::kOffer:
    case v1::ControlMessage::kAllOffersDelivered:
    case v1::ControlMessage::kRescindOffer:
    case v1::ControlMessage::kGpadlCreated:
    case v1::ControlMessage::kGpadlTorndown:
    case v1::ControlMessage::kOpenResult:
    case v1::ControlMessage::kModifyChannelResponse:
    case v1::ControlMessage::kUnloadResponse:
    case v1::ControlMessage::kTlConnectResult:
      Reject(g, absl::StatusCode::kInvalidArgument, RelidOf(m),
             type + " is a host → guest message; a guest may not send it", now, out);
      return;
    default:
      break;
  }
  if (!Negotiated(g.state)) {
    Reject(g, absl::StatusCode::kFailedPrecondition, RelidOf(m),
           absl::StrCat(type, " before a successful InitiateContact",
                        g.state == v1::GUEST_STATE_UNLOADED ? " (the guest unloaded)" : ""),
           now, out);
    return;
  }
  switch (m.message_case()) {
    case v1::ControlMessage::kRequestOffers:
      OnRequestOffers(g, now, out);
      break;
    case v1::ControlMessage::kRelidReleased:
      OnRelidReleased(g, m.relid_released(), now, out);
      break;
    case v1::ControlMessage::kGpadlCreate:
      OnGpadlCreate(g, m.gpadl_create(), now, out);
      break;
    case v1::ControlMessage::kGpadlTeardown:
      OnGpadlTeardown(g, m.gpadl_teardown(), now, out);
      break;
    case v1::ControlMessage::kOpenChannel:
      OnOpenChannel(g, m.open_channel(), now, out);
      break;
    case v1::ControlMessage::kCloseChannel:
      OnCloseChannel(g, m.close_channel(), now, out);
      break;
    case v1::ControlMessage::kModifyChannel:
      OnModifyChannel(g, m.modify_channel(), now, out);
      break;
    case v1::ControlMessage::kUnload:
      OnUnload(g, now, out);
      break;
    case v1::ControlMessage::kTlConnectRequest:
      OnTlConnectRequest(g, m.tl_connect_request(), now, out);
      break;
    default:
      break;  // every other case returned above
  }
}

HostEngine::Channel* HostEngine::KnownChannel(Guest& g, uint32_t relid) {
  auto it = g.channels.find(relid);
  if (it == g.channels.end() || !it->second.offer_sent) return nullptr;
  return &it->second;
}

void HostEngine::OnInitiateContact(Guest& g, const v1::InitiateContact& m, absl::Time now,
                                   Actions* out) {
  if (Negotiated(g.state)) {
    Reject(g, absl::StatusCode::kFailedPrecondition, 0,
           absl::StrCat("initiate_contact: already connected at version ",
                        protocol::VersionName(g.version), " (Unload first)"),
           now, out);
    return;
  }
  const uint32_t v = m.version_requested();
  v1::ControlMessage answer;
  v1::VersionResponse* r = answer.mutable_version_response();
  // Below 5.0 the message carries the guest's interrupt page, whose send half the guest sets a
  // channel's bit in on every signal; on the mock platform that is the host event page
  // (docs/protocol.md §12). A guest that names another page signals where the host does not
  // look: the version is refused, as if unsupported, with an ERROR event saying why.
  const uint64_t interrupt_page = g.layout.host_event_page_pfn * protocol::kPageSize;
  const bool bad_interrupt_page = IsSupportedVersion(v) && !protocol::UsesReturnedConnectionId(v) &&
                                  m.interrupt_page() != interrupt_page;
  if (bad_interrupt_page) {
    Event(g.id, v1::EVENT_KIND_ERROR, 0, now, out,
          absl::StrFormat("initiate_contact for version %s names interrupt page 0x%x; this "
                          "guest's is the host event page at 0x%x",
                          protocol::VersionName(v), m.interrupt_page(), interrupt_page));
  }
  if (IsSupportedVersion(v) && v <= settings_.max_version() && !bad_interrupt_page) {
    g.state = v1::GUEST_STATE_CONNECTED;
    g.version = v;
    r->set_version_supported(true);
    r->set_connection_state(0);
    if (protocol::UsesReturnedConnectionId(v)) r->set_message_connection_id(kMessageConnectionId);
  } else {
    r->set_version_supported(false);
  }
  SendControl(g, std::move(answer), now, out);
}

void HostEngine::OnRequestOffers(Guest& g, absl::Time now, Actions* out) {
  if (g.state != v1::GUEST_STATE_CONNECTED) {
    Reject(g, absl::StatusCode::kFailedPrecondition, 0,
           "request_offers: offers were already requested on this connection", now, out);
    return;
  }
  if (g.resumed && (settings_.remap_relids_on_resume() || settings_.permute_relids_on_resume())) {
    RemapOnResume(g);
  }
  g.resumed = false;
  std::vector<Channel*> order;
  for (auto& [relid, c] : g.channels) {
    if (c.state != ChannelState::kRescinded) order.push_back(&c);
  }
  std::sort(order.begin(), order.end(),
            [](const Channel* a, const Channel* b) { return a->order < b->order; });
  for (Channel* c : order) SendOffer(g, *c, now, out);
  g.state = v1::GUEST_STATE_OFFERS_DELIVERED;
  v1::ControlMessage done;
  done.mutable_all_offers_delivered();
  SendControl(g, std::move(done), now, out);
}

void HostEngine::OnGpadlCreate(Guest& g, const v1::GpadlCreate& m, absl::Time now, Actions* out) {
  auto answer = [&](uint32_t status) {
    if (status != protocol::kStatusSuccess) ++counters_.requests_refused;
    v1::ControlMessage reply;
    v1::GpadlCreated* r = reply.mutable_gpadl_created();
    r->set_child_relid(m.child_relid());
    r->set_gpadl(m.gpadl());
    r->set_creation_status(status);
    SendControl(g, std::move(reply), now, out);
  };
  auto refuse = [&](const std::string& why) {
    Event(g.id, v1::EVENT_KIND_ERROR, m.child_relid(), now, out,
          absl::StrFormat("gpadl_create 0x%x for relid %d refused: %s", m.gpadl(), m.child_relid(),
                          why));
    answer(protocol::kStatusUnsuccessful);
  };
  if (auto it = g.refusals.find(v1::RefuseNext::REQUEST_GPADL_CREATE); it != g.refusals.end()) {
    const uint32_t status = it->second;
    g.refusals.erase(it);
    Event(g.id, v1::EVENT_KIND_FAULT_FIRED, m.child_relid(), now, out,
          absl::StrFormat("refused gpadl_create 0x%x with status 0x%08x", m.gpadl(), status));
    answer(status);
    return;
  }
  Channel* c = KnownChannel(g, m.child_relid());
  if (c == nullptr) return refuse("unknown relid");
  if (c->state == ChannelState::kRescinded) return refuse("the channel is rescinded");
  Gpadl gpadl;
  gpadl.handle = m.gpadl();
  gpadl.relid = m.child_relid();
  gpadl.byte_count = m.byte_count();
  gpadl.byte_offset = m.byte_offset();
  gpadl.pfns.assign(m.pfns().begin(), m.pfns().end());
  if (absl::Status s = g.gpadls.Add(std::move(gpadl), g.layout, g.page_count); !s.ok()) {
    return refuse(std::string(s.message()));
  }
  answer(0);
}

void HostEngine::OnGpadlTeardown(Guest& g, const v1::GpadlTeardown& m, absl::Time now,
                                 Actions* out) {
  const Gpadl* gpadl = g.gpadls.Find(m.gpadl());
  if (gpadl == nullptr) {
    Reject(g, absl::StatusCode::kNotFound, m.child_relid(),
           absl::StrFormat("gpadl_teardown: GPADL 0x%x is not live", m.gpadl()), now, out);
    return;
  }
  if (gpadl->relid != m.child_relid()) {
    Reject(g, absl::StatusCode::kInvalidArgument, m.child_relid(),
           absl::StrFormat("gpadl_teardown: GPADL 0x%x belongs to relid %d, not %d", m.gpadl(),
                           gpadl->relid, m.child_relid()),
           now, out);
    return;
  }
  if (absl::Status s = g.gpadls.Remove(m.gpadl()); !s.ok()) {
    Reject(g, s.code(), m.child_relid(), absl::StrCat("gpadl_teardown: ", s.message()), now, out);
    return;
  }
  v1::ControlMessage reply;
  reply.mutable_gpadl_torndown()->set_gpadl(m.gpadl());
  SendControl(g, std::move(reply), now, out);
}

void HostEngine::OnOpenChannel(Guest& g, const v1::OpenChannel& m, absl::Time now, Actions* out) {
  auto answer = [&](uint32_t status) {
    if (status != protocol::kStatusSuccess) ++counters_.requests_refused;
    v1::ControlMessage reply;
    v1::OpenResult* r = reply.mutable_open_result();
    r->set_child_relid(m.child_relid());
    r->set_open_id(m.open_id());
    r->set_status(status);
    if (Channel* c = KnownChannel(g, m.child_relid());
        status != 0 && c != nullptr && c->state == ChannelState::kOffered) {
      c->open_refused = true;
    }
    SendControl(g, std::move(reply), now, out);
  };
  auto refuse = [&](const std::string& why) {
    Event(g.id, v1::EVENT_KIND_ERROR, m.child_relid(), now, out,
          absl::StrCat("open_channel of relid ", m.child_relid(), " refused: ", why));
    answer(protocol::kStatusUnsuccessful);
  };
  if (auto it = g.refusals.find(v1::RefuseNext::REQUEST_OPEN_CHANNEL); it != g.refusals.end()) {
    const uint32_t status = it->second;
    g.refusals.erase(it);
    Event(g.id, v1::EVENT_KIND_FAULT_FIRED, m.child_relid(), now, out,
          absl::StrFormat("refused open_channel of relid %d with status 0x%08x", m.child_relid(),
                          status));
    answer(status);
    return;
  }
  Channel* c = KnownChannel(g, m.child_relid());
  if (c == nullptr) return refuse("unknown relid");
  if (c->state != ChannelState::kOffered) {
    return refuse(absl::StrCat("the channel is ", StateName(c->state)));
  }
  if (g.maps_outstanding.contains(c->relid)) {
    return refuse("the host is still mapping an earlier open of this relid");
  }
  Gpadl* gpadl = g.gpadls.Find(m.ring_buffer_gpadl());
  if (gpadl == nullptr) {
    return refuse(absl::StrFormat("ring GPADL 0x%x is not live", m.ring_buffer_gpadl()));
  }
  if (gpadl->relid != c->relid) {
    return refuse(
        absl::StrFormat("ring GPADL 0x%x belongs to relid %d", gpadl->handle, gpadl->relid));
  }
  if (gpadl->used_by != 0) {
    return refuse(absl::StrFormat("ring GPADL 0x%x already holds the rings of relid %d",
                                  gpadl->handle, gpadl->used_by));
  }
  // Ring sizes: docs/protocol.md §7 (the GPADL table already holds at most 8190 pages).
  if (gpadl->byte_offset != 0) {
    return refuse(
        absl::StrFormat("ring GPADL 0x%x does not start on a page boundary", gpadl->handle));
  }
  const uint64_t pages = gpadl->pfns.size();
  if (gpadl->byte_count != pages * protocol::kPageSize) {
    return refuse(absl::StrFormat("ring GPADL 0x%x covers %d bytes, not its %d pages whole",
                                  gpadl->handle, gpadl->byte_count, pages));
  }
  const uint32_t offset = m.downstream_ring_page_offset();
  if (!protocol::RingSplitFits(pages, offset)) {
    return refuse(absl::StrCat("downstream_ring_page_offset ", offset, " does not split the ",
                               pages, "-page GPADL into two rings of at least ",
                               protocol::kMinRingPages, " pages"));
  }
  if (m.user_data().size() > protocol::kUserDefinedBytes) {
    return refuse(absl::StrCat("user_data has ", m.user_data().size(), " bytes; at most ",
                               protocol::kUserDefinedBytes));
  }
  if (m.target_vp() >= g.layout.vp_count) {  // it could never be signalled
    return refuse(absl::StrCat("target VP ", m.target_vp(), ", but the guest takes events on ",
                               g.layout.vp_count, " VPs"));
  }
  c->state = ChannelState::kOpening;
  c->open_refused = false;
  c->ring_gpadl = gpadl->handle;
  c->open_id = m.open_id();
  c->target_vp = m.target_vp();
  gpadl->used_by = c->relid;
  g.maps_outstanding.insert(c->relid);
  MapRings map;
  map.guest_id = g.id;
  map.relid = c->relid;
  map.device = c->device;
  map.gpadl = gpadl->handle;
  map.outbound_pfns.assign(gpadl->pfns.begin(), gpadl->pfns.begin() + offset);
  map.inbound_pfns.assign(gpadl->pfns.begin() + offset, gpadl->pfns.end());
  map.monitor_id = c->monitor_id;
  map.target_vp = c->target_vp;
  out->push_back(std::move(map));
}

absl::Status HostEngine::CompleteOpen(absl::string_view guest_id, uint32_t relid,
                                      const absl::Status& mapped, absl::Time now, Actions* out) {
  Guest* found = FindGuest(guest_id);
  if (found == nullptr) return absl::NotFoundError(absl::StrCat("no guest ", guest_id));
  Guest& g = *found;
  if (g.maps_outstanding.erase(relid) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("guest ", g.id, " has no outstanding ring mapping for relid ", relid));
  }
  auto it = g.channels.find(relid);
  if (it == g.channels.end() || it->second.state != ChannelState::kOpening) {
    // Closed, rescinded or unloaded while the runtime mapped: undo quietly.
    if (mapped.ok()) out->push_back(UnmapRings{g.id, relid});
    return absl::OkStatus();
  }
  Channel& c = it->second;
  v1::ControlMessage reply;
  v1::OpenResult* r = reply.mutable_open_result();
  r->set_child_relid(relid);
  r->set_open_id(c.open_id);
  if (mapped.ok()) {
    c.state = ChannelState::kOpen;
    c.rings_mapped = true;
    r->set_status(0);
    Event(g.id, v1::EVENT_KIND_CHANNEL_OPENED, relid, now, out,
          absl::StrFormat("%s on GPADL 0x%x, target VP %d", c.device, c.ring_gpadl, c.target_vp));
  } else {
    c.state = ChannelState::kOffered;
    c.open_refused = true;
    if (Gpadl* gpadl = g.gpadls.Find(c.ring_gpadl); gpadl != nullptr) gpadl->used_by = 0;
    c.ring_gpadl = 0;
    r->set_status(protocol::kStatusUnsuccessful);
    ++counters_.requests_refused;
    Event(g.id, v1::EVENT_KIND_ERROR, relid, now, out,
          absl::StrCat("open_channel of relid ", relid, " failed: ", mapped.message()));
  }
  SendControl(g, std::move(reply), now, out);
  return absl::OkStatus();
}

void HostEngine::OnCloseChannel(Guest& g, const v1::CloseChannel& m, absl::Time now, Actions* out) {
  Channel* c = KnownChannel(g, m.child_relid());
  if (c == nullptr) {
    Reject(g, absl::StatusCode::kNotFound, m.child_relid(),
           absl::StrCat("close_channel: unknown relid ", m.child_relid()), now, out);
    return;
  }
  switch (c->state) {
    case ChannelState::kRescinded:
      return;  // the host already closed its side when it rescinded
    case ChannelState::kOffered:
      if (c->open_refused) {
        c->open_refused = false;  // crossed the refusal of its open: nothing to close
        return;
      }
      Reject(g, absl::StatusCode::kFailedPrecondition, c->relid,
             absl::StrCat("close_channel: relid ", c->relid, " is not open"), now, out);
      return;
    case ChannelState::kOpening:
    case ChannelState::kOpen:
      StopChannel(g, *c, "closed by the guest", now, out);
      c->state = ChannelState::kOffered;
      return;
  }
}

void HostEngine::OnRelidReleased(Guest& g, const v1::RelidReleased& m, absl::Time now,
                                 Actions* out) {
  Channel* c = KnownChannel(g, m.child_relid());
  if (c == nullptr) {
    if (g.second_release_expected.erase(m.child_relid()) > 0) {
      ++counters_.second_releases_taken;  // the refusal's release crossed the rescind
      return;
    }
    Reject(g, absl::StatusCode::kNotFound, m.child_relid(),
           absl::StrCat("relid_released: unknown relid ", m.child_relid()), now, out);
    return;
  }
  switch (c->state) {
    case ChannelState::kRescinded:
      if (c->rescinded_while_offered) g.second_release_expected.insert(c->relid);
      ForgetChannel(g, c->relid);
      return;
    case ChannelState::kOffered:
      if (!g.maps_outstanding.contains(c->relid)) {
        OnOfferRefused(g, *c, now, out);
        return;
      }
      break;  // an open of it was refused while the host still maps it: not a refused offer
    case ChannelState::kOpening:
    case ChannelState::kOpen:
      break;
  }
  Reject(g, absl::StatusCode::kFailedPrecondition, c->relid,
         absl::StrCat("relid_released: relid ", c->relid, " is ", StateName(c->state),
                      ", neither rescinded nor only offered"),
         now, out);
}

void HostEngine::OnOfferRefused(Guest& g, Channel& c, absl::Time now, Actions* out) {
  // The guest refused the offer (docs/protocol.md §8) and will never open it: forget the
  // channel so its relid, monitor id, instance and any GPADLs are free again. Its sub-channels
  // cannot be linked by the guest either; they stay offered until the guest releases them.
  ++counters_.offers_refused_by_guest;
  const uint32_t relid = c.relid;
  const std::string device = c.device;
  for (uint32_t sub : c.sub_relids) {
    if (auto it = g.channels.find(sub); it != g.channels.end()) it->second.primary_relid = 0;
  }
  c.sub_relids.clear();
  ForgetChannel(g, relid);
  Event(g.id, v1::EVENT_KIND_ERROR, relid, now, out,
        absl::StrCat("relid_released: the guest refused the offer of relid ", relid, " (", device,
                     "); the relid is free again"));
}

void HostEngine::OnModifyChannel(Guest& g, const v1::ModifyChannel& m, absl::Time now,
                                 Actions* out) {
  if (!protocol::HasModifyChannel(g.version)) {
    Reject(g, absl::StatusCode::kFailedPrecondition, m.child_relid(),
           absl::StrCat("modify_channel needs version 4.1; this connection is at ",
                        protocol::VersionName(g.version)),
           now, out);
    return;
  }
  const bool responds = protocol::HasModifyChannelResponse(g.version);
  auto answer = [&](uint32_t status) {
    if (!responds) return;
    if (status != protocol::kStatusSuccess) ++counters_.requests_refused;
    v1::ControlMessage reply;
    reply.mutable_modify_channel_response()->set_child_relid(m.child_relid());
    reply.mutable_modify_channel_response()->set_status(status);
    SendControl(g, std::move(reply), now, out);
  };
  auto refuse = [&](absl::StatusCode code, const std::string& why) {
    const std::string what =
        absl::StrCat("modify_channel of relid ", m.child_relid(), " refused: ", why);
    if (responds) {
      Event(g.id, v1::EVENT_KIND_ERROR, m.child_relid(), now, out, what);
      answer(protocol::kStatusUnsuccessful);
    } else {
      Reject(g, code, m.child_relid(), what, now, out);
    }
  };
  if (auto it = g.refusals.find(v1::RefuseNext::REQUEST_MODIFY_CHANNEL); it != g.refusals.end()) {
    const uint32_t status = it->second;
    g.refusals.erase(it);
    Event(g.id, v1::EVENT_KIND_FAULT_FIRED, m.child_relid(), now, out,
          absl::StrFormat("refused modify_channel of relid %d with status 0x%08x", m.child_relid(),
                          status));
    if (responds) {
      answer(status);
    } else {
      Reject(g, absl::StatusCode::kAborted, m.child_relid(),
             absl::StrFormat("modify_channel of relid %d refused with status 0x%08x",
                             m.child_relid(), status),
             now, out);
    }
    return;
  }
  Channel* c = KnownChannel(g, m.child_relid());
  if (c == nullptr) return refuse(absl::StatusCode::kNotFound, "unknown relid");
  if (c->state != ChannelState::kOpen) {
    return refuse(absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("the channel is ", StateName(c->state)));
  }
  if (m.target_vp() >= g.layout.vp_count) {
    return refuse(absl::StatusCode::kInvalidArgument,
                  absl::StrCat("target VP ", m.target_vp(), ", but the guest takes events on ",
                               g.layout.vp_count, " VPs"));
  }
  c->target_vp = m.target_vp();
  // Signals from now on go to the new VP's event flags; one already on its way may still land
  // on the old VP, which the guest scans as well (docs/protocol.md §12).
  out->push_back(RetargetChannel{g.id, c->relid, c->target_vp});
  answer(0);
}

void HostEngine::OnUnload(Guest& g, absl::Time now, Actions* out) {
  if (!protocol::HasUnload(g.version)) {
    Reject(g, absl::StatusCode::kFailedPrecondition, 0,
           absl::StrCat("unload needs version 3.0; this connection is at ",
                        protocol::VersionName(g.version)),
           now, out);
    return;
  }
  std::vector<uint32_t> forget;
  for (auto& [relid, c] : g.channels) {
    switch (c.state) {
      case ChannelState::kOpen:
      case ChannelState::kOpening:
        StopChannel(g, c, "guest unloaded", now, out);
        c.state = ChannelState::kOffered;
        break;
      case ChannelState::kRescinded:
        forget.push_back(relid);  // the guest forgets every relid on unload
        break;
      case ChannelState::kOffered:
        break;
    }
    c.offer_sent = false;
  }
  for (uint32_t relid : forget) ForgetChannel(g, relid);
  g.second_release_expected.clear();  // the guest forgets every relid on unload
  g.gpadls.Clear();
  g.state = v1::GUEST_STATE_UNLOADED;
  g.version = 0;
  g.resumed = true;
  v1::ControlMessage reply;
  reply.mutable_unload_response();
  SendControl(g, std::move(reply), now, out);
}

void HostEngine::OnSignal(Guest& g, const v1::Signal& m, absl::Time now, Actions* out) {
  auto it = g.channels.find(m.child_relid());
  if (it == g.channels.end() || !it->second.offer_sent) {
    Reject(g, absl::StatusCode::kNotFound, m.child_relid(),
           absl::StrCat("signal: unknown relid ", m.child_relid()), now, out);
    return;
  }
  if (it->second.state != ChannelState::kOpen) {
    Reject(g, absl::StatusCode::kFailedPrecondition, m.child_relid(),
           absl::StrCat("signal: relid ", m.child_relid(), " is ", StateName(it->second.state)),
           now, out);
    return;
  }
  out->push_back(SignalChannel{g.id, m.child_relid()});
}

void HostEngine::OnTlConnectRequest(Guest& g, const v1::TlConnectRequest& m, absl::Time now,
                                    Actions* out) {
  if (!protocol::HasTlConnect(g.version)) {
    Reject(g, absl::StatusCode::kFailedPrecondition, 0,
           absl::StrCat("tl_connect_request needs version 4.0; this connection is at ",
                        protocol::VersionName(g.version)),
           now, out);
    return;
  }
  // The mock host has no hv_sock services, so every connection is refused: with
  // TlConnectResult where the version has it (docs/protocol.md §5), else by offering nothing.
  ++counters_.requests_refused;
  Event(g.id, v1::EVENT_KIND_ERROR, 0, now, out,
        absl::StrCat("tl_connect_request to service ", m.host_service_id().value(),
                     " refused: the mock host has no hv_sock services"));
  if (!protocol::HasTlConnectResult(g.version)) return;
  v1::ControlMessage reply;
  v1::TlConnectResult* r = reply.mutable_tl_connect_result();
  *r->mutable_guest_endpoint_id() = m.guest_endpoint_id();
  *r->mutable_host_service_id() = m.host_service_id();
  r->set_status(protocol::kStatusUnsuccessful);
  SendControl(g, std::move(reply), now, out);
}

}  // namespace vbus::mock
