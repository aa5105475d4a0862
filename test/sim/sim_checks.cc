// The simulation's invariants: after every step (CheckStep), at every settle point
// (CheckSettled), at the end (CheckFinal), on every free of guest memory (BackendFree), on
// every host reply (the ledger and CheckIgnored) and on every packet (ExpectPacket).
#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/data/guid_proto.h"
#include "core/data/protocol.h"
#include "test/sim/sim_world_internal.h"

namespace vbus::sim {
namespace {

const char* HostStateName(mock::HostEngine::ChannelState s) {
  switch (s) {
    case mock::HostEngine::ChannelState::kOffered:
      return "offered (closed)";
    case mock::HostEngine::ChannelState::kOpening:
      return "opening";
    case mock::HostEngine::ChannelState::kOpen:
      return "open";
    case mock::HostEngine::ChannelState::kRescinded:
      return "rescinded";
  }
  return "?";
}

// Whether the host's offer and the guest's OfferInfo name the same device channel.
bool SameIdentity(const HostOffer& host, const OfferInfo& guest) {
  return host.type == guest.interface_type && host.instance == guest.interface_instance &&
         host.sub_channel_index == guest.sub_channel_index;
}

std::string Identity(const OfferInfo& o) {
  return absl::StrCat(o.interface_type.ToString(), "/", o.interface_instance.ToString(), "#",
                      o.sub_channel_index);
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

std::string Describe(const SimAllocation& a) {
  if (a.gpadl != 0)
    return absl::StrCat("GPADL 0x", absl::Hex(a.gpadl), "'s ", a.pfns.size(), " pages");
  return absl::StrCat(a.pfns.size(), " pages (",
                      a.tag.session != 0 ? absl::StrCat("rings of session ", a.tag.session)
                                         : absl::StrCat("call ", a.tag.call),
                      ", never described)");
}

}  // namespace

std::set<uint32_t> World::LiveGpadls() const {
  std::set<uint32_t> live;
  for (const GpadlStatus& g : bus().Gpadls()) live.insert(g.handle);
  return live;
}

bool World::Retiring(OfferId offer) const {
  const std::vector<OfferId> retiring = executor_->RetiringOffers();
  return std::find(retiring.begin(), retiring.end(), offer) != retiring.end();
}

// ---- After every step ----------------------------------------------------------------------

void World::CheckStep() {
  if (absl::Status s = bus().CheckInvariants(); !s.ok()) {
    Fail(std::string(s.message()));
    return;
  }
  CheckIgnored(/*host_reply=*/false);
  if (!failed_) CheckTable();
  if (!failed_) CheckMemory();
  if (!failed_) CheckStuck();
  if (failed_) return;
  const bool unloading = bus().phase() == BusPhase::kUnloading;
  for (const auto& [id, offer] : offers_) {
    std::optional<ChannelStatus> st = bus().GetChannel(id);
    if (!st) {
      Fail(absl::StrCat("offer ", id.value(), " vanished from BusState before ReleaseOffer"));
      return;
    }
    const uint32_t relid = st->offer.relid;
    // No channel both open and rescinded.
    if (st->offer_state == OfferState::kRescinded &&
        (st->channel_state != ChannelState::kClosed || st->published)) {
      Fail(absl::StrCat("relid ", relid, " is rescinded and ", ChannelStateName(st->channel_state),
                        st->published ? " (published)" : "", " at once"));
      return;
    }
    if (st->offer_state == OfferState::kDetached || st->offer_state == OfferState::kParked ||
        unloading) {
      continue;  // the guest holds no relid for it (or is giving every relid up)
    }
    // The guest holds this relid: the host must still hold it too, for the same device.
    absl::StatusOr<mock::HostEngine::ChannelSnapshot> host = engine_->FindChannel(guest_id_, relid);
    if (!host.ok()) {
      Fail(absl::StrCat("the guest holds relid ", relid, " (offer ", id.value(), ", ",
                        OfferStateName(st->offer_state), ") but the host has forgotten it"));
      return;
    }
    auto sent = host_offers_.find(relid);
    if (sent == host_offers_.end() || !SameIdentity(sent->second, st->offer)) {
      Fail(absl::StrCat(
          "relid ", relid, " is ", Identity(st->offer), " to the guest but the ",
          "host's last offer of it was ",
          sent == host_offers_.end()
              ? std::string("none")
              : absl::StrCat(sent->second.type.ToString(), "/", sent->second.instance.ToString(),
                             "#", sent->second.sub_channel_index)));
      return;
    }
    // Open on the guest: the host opened it (OpenResult) and has not closed it since; only a
    // rescind on its way may have ended it.
    if (st->offer_state == OfferState::kActive && st->channel_state == ChannelState::kOpen &&
        host->state != mock::HostEngine::ChannelState::kOpen &&
        host->state != mock::HostEngine::ChannelState::kRescinded) {
      Fail(absl::StrCat("relid ", relid, " is open on the guest but ", HostStateName(host->state),
                        " on the host"));
      return;
    }
  }
  // The host maps rings only of open channels (never of rescinded or closed ones).
  for (const auto& [relid, pfns] : host_mapped_pfns_) {
    absl::StatusOr<mock::HostEngine::ChannelSnapshot> host = engine_->FindChannel(guest_id_, relid);
    if (!host.ok() || host->state != mock::HostEngine::ChannelState::kOpen) {
      Fail(absl::StrCat("the host still maps the rings of relid ", relid, ", which is ",
                        host.ok() ? HostStateName(host->state) : "forgotten", " on the host"));
      return;
    }
  }
  // The host's GPADL table: only handles the guest created; a released one only while a
  // message that drops it is on its way.
  if (const mock::GpadlTable* table = engine_->Gpadls(guest_id_); table != nullptr) {
    const std::set<uint32_t> live = LiveGpadls();
    for (const auto& [handle, g] : table->all()) {
      if (!created_handles_.contains(handle)) {
        Fail(absl::StrCat("the host holds GPADL 0x", absl::Hex(handle),
                          ", which the guest never created"));
        return;
      }
      if (!live.contains(handle)) {
        const uint32_t relid = g.relid;
        const bool dropping = InFlightToHost([&](const v1::ControlMessage& m) {
          return m.has_unload() ||
                 (m.has_relid_released() && m.relid_released().child_relid() == relid);
        });
        if (!dropping) {
          Fail(absl::StrCat("the host still holds GPADL 0x", absl::Hex(handle), " of relid ", relid,
                            " after the guest released it, and no RelidReleased or ",
                            "Unload is on its way"));
          return;
        }
      }
    }
  }
}

void World::CheckIgnored(bool host_reply, bool spoiled) {
  // A correct host sends nothing the guest must ignore, except replies that went stale on the
  // way (the call timed out, was cancelled by a close, or crossed a rescind). The ledger has
  // already checked that such a reply answers a request the host really received.
  const BusCounters& counters = bus().counters();
  for (size_t i = 0; i < kIgnoreReasonCount; ++i) {
    const uint64_t now = counters.ignored[i];
    if (now == ignored_seen_[i]) continue;
    const IgnoreReason reason = static_cast<IgnoreReason>(i);
    const uint64_t more = now - ignored_seen_[i];
    ignored_seen_[i] = now;
    if (host_reply && IsStaleReply(reason)) {
      stats_.stale_replies_ignored += more;
      continue;
    }
    if (spoiled && (reason == IgnoreReason::kOfferBadMonitorId ||
                    reason == IgnoreReason::kRescindUnknownRelid)) {
      continue;  // the link spoiled the offer the message is about
    }
    Fail(absl::StrCat("the guest ignored host input (", IgnoreReasonName(reason),
                      host_reply ? ")" : ") outside a host reply", ": see the executor's log"));
    return;
  }
}

void World::CheckTable() {
  // The channel table holds exactly the channels BusState has published.
  for (uint32_t relid : relids_seen_) {
    const bool in_table = table_.Lookup(relid) != nullptr;
    std::optional<OfferId> holder = bus().FindOfferByRelid(relid);
    std::optional<ChannelStatus> st;
    if (holder.has_value()) st = bus().GetChannel(*holder);
    const bool published = st.has_value() && st->published;
    if (in_table == published) continue;
    if (in_table) {
      Fail(absl::StrCat(
          "table slot ", relid, " still holds a channel, but BusState has ",
          st ? absl::StrCat("offer ", holder->value(), " ", OfferStateName(st->offer_state), "/",
                            ChannelStateName(st->channel_state), " (not published)")
             : std::string("no offer there")));
    } else {
      Fail(absl::StrCat("BusState has relid ", relid, " published but its table slot is empty"));
    }
    return;
  }
}

void World::CheckMemory() {
  // Every run the executor holds is described by a GPADL BusState has live (and filed under
  // it), or held back by a retiring channel; every live GPADL's memory is there.
  const std::set<uint32_t> live = LiveGpadls();
  for (const auto& [data, a] : backend_->allocations()) {
    if (a.gpadl != 0 && live.contains(a.gpadl)) {
      if (!executor_->HoldsGpadlMemory(a.gpadl)) {
        Fail(absl::StrCat("GPADL 0x", absl::Hex(a.gpadl),
                          " is live but the executor no longer files its memory"));
        return;
      }
      continue;
    }
    if (!Retiring(a.tag.offer)) {
      Fail(absl::StrCat(Describe(a), " of offer ", a.tag.offer.value(),
                        " are still allocated, but BusState has no GPADL for them and no ",
                        "retiring channel holds them (a leak)"));
      return;
    }
  }
  for (uint32_t handle : live) {
    if (created_handles_.contains(handle) && backend_->FindByGpadl(handle) == nullptr) {
      Fail(absl::StrCat("GPADL 0x", absl::Hex(handle),
                        " is live but its memory went back to the pool"));
      return;
    }
  }
}

void World::CheckStuck() {
  if (!stuck_.has_value()) return;
  // Receive quiescence: the blocked callback's channel keeps its receive side.
  const Session& s = sessions_.at(stuck_->session);
  if (s.guest_ended && !Retiring(s.offer)) {
    Fail(absl::StrCat("relid ", s.relid, " was retired while its receive callback still runs, ",
                      "but the executor let go of its receive side (it is not retiring)"));
  }
}

void World::BackendFree(const SimAllocation& a) {
  if (tearing_down_ || failed_) return;
  // Nothing the blocked callback's drain may still read is freed under it, nor any GPADL
  // memory of its channel while the channel retires (the executor holds all of it back).
  if (stuck_.has_value() &&
      (a.tag.session == stuck_->session ||
       (a.gpadl != 0 && a.tag.offer == stuck_->offer && Retiring(a.tag.offer)))) {
    Fail(absl::StrCat(Describe(a), " of relid ", stuck_->relid,
                      " were freed while a receive callback of the channel still runs"));
    return;
  }
  if (a.gpadl == 0) return;  // never shown to the host
  ++stats_.gpadls_released;
  if (LiveGpadls().contains(a.gpadl)) {
    Fail(absl::StrCat(Describe(a), " were freed while BusState still has the GPADL live"));
    return;
  }
  for (const auto& [relid, mapped] : host_mapped_pfns_) {
    for (uint64_t pfn : mapped) {
      if (std::find(a.pfns.begin(), a.pfns.end(), pfn) != a.pfns.end()) {
        Fail(absl::StrCat(Describe(a), " were freed while the host still maps PFN ", pfn,
                          " as a ring of relid ", relid));
        return;
      }
    }
  }
  if (const mock::GpadlTable* table = engine_->Gpadls(guest_id_); table != nullptr) {
    if (const mock::Gpadl* g = table->Find(a.gpadl); g != nullptr) {
      const uint32_t relid = g->relid;
      const bool dropping = InFlightToHost([&](const v1::ControlMessage& m) {
        return m.has_unload() ||
               (m.has_relid_released() && m.relid_released().child_relid() == relid);
      });
      if (!dropping) {
        Fail(absl::StrCat(Describe(a), " were freed while the host's table still holds the ",
                          "GPADL and no RelidReleased or Unload is on its way"));
        return;
      }
    }
  }
}

// ---- At settle points ----------------------------------------------------------------------

void World::CheckSettled() {
  if (failed_) return;
  for (const auto& [id, call] : calls_) {
    if (!call.completed && !call.abandoned) {
      Fail(absl::StrCat("settled, but call ", id, " (", RequestKindName(call.kind),
                        ") never completed"));
      return;
    }
  }
  if (bus().pending_requests() != 0) {
    Fail(absl::StrCat("settled with ", bus().pending_requests(), " BusState requests pending"));
    return;
  }
  if (std::vector<OfferId> retiring = executor_->RetiringOffers(); !retiring.empty()) {
    Fail(absl::StrCat("settled, but offer ", retiring.front().value(), " is still retiring"));
    return;
  }
  std::map<uint32_t, uint32_t> guest_gpadls;  // handle → relid
  for (const GpadlStatus& g : bus().Gpadls()) {
    if (g.state != GpadlState::kCreated) {
      Fail(absl::StrCat("settled, but GPADL 0x", absl::Hex(g.handle), " is ",
                        GpadlStateName(g.state)));
      return;
    }
    guest_gpadls[g.handle] = g.relid;
  }
  for (const auto& [data, a] : backend_->allocations()) {
    if (a.gpadl == 0 || !guest_gpadls.contains(a.gpadl)) {
      Fail(absl::StrCat("settled, but ", Describe(a),
                        " are still allocated with no live GPADL (never freed: a leak)"));
      return;
    }
  }
  // What callers gave up on is undone: the channel closed again (unless that open never got
  // going, or a later one did), the GPADL gone.
  for (uint64_t sid : abandoned_opens_) {
    const OfferId offer = sessions_.at(sid).offer;
    if (sessions_.at(sid).ring_gpadl == 0 || AttachedSession(offer) != sid) continue;
    std::optional<ChannelStatus> st = bus().GetChannel(offer);
    if (!st || st->offer_state != OfferState::kActive) continue;
    if (st->channel_state != ChannelState::kClosed) {
      Fail(absl::StrCat("the open of relid ", st->offer.relid, " (session ", sid,
                        ") was given up by its caller, but the channel is ",
                        ChannelStateName(st->channel_state), " on the guest"));
      return;
    }
  }
  const mock::GpadlTable* table = engine_->Gpadls(guest_id_);
  for (const auto& [id, call] : calls_) {
    if (!call.abandoned || call.kind != RequestKind::kGpadlCreate || call.gpadl == 0) continue;
    if (guest_gpadls.contains(call.gpadl) ||
        (table != nullptr && table->Find(call.gpadl) != nullptr)) {
      Fail(absl::StrCat("the creation of GPADL 0x", absl::Hex(call.gpadl), " (call ", id,
                        ") was given up by its caller, but the GPADL is live on the ",
                        guest_gpadls.contains(call.gpadl) ? "guest" : "host"));
      return;
    }
  }
  if (bus().phase() != BusPhase::kConnected) {
    if (!offers_.empty() || !guest_gpadls.empty()) {
      Fail(absl::StrCat("disconnected with ", offers_.size(), " offers and ", guest_gpadls.size(),
                        " GPADLs not released"));
    }
    return;
  }
  CheckAgreement();
}

void World::CheckAgreement() {
  // Guest and host agree on every channel: offered, open or closed.
  std::map<uint32_t, ChannelStatus> guest;
  for (const auto& [id, offer] : offers_) {
    std::optional<ChannelStatus> st = bus().GetChannel(id);
    if (st->offer_state != OfferState::kActive) {
      Fail(absl::StrCat("settled, but offer ", id.value(), " (relid ", st->offer.relid, ") is ",
                        OfferStateName(st->offer_state), " and not released"));
      return;
    }
    if (st->channel_state != ChannelState::kClosed && st->channel_state != ChannelState::kOpen) {
      Fail(absl::StrCat("settled, but relid ", st->offer.relid, " is ",
                        ChannelStateName(st->channel_state)));
      return;
    }
    guest[st->offer.relid] = *st;
  }
  absl::StatusOr<v1::ListChannelsResponse> list = engine_->ListChannels(guest_id_);
  if (!list.ok()) {
    Fail(list.status().ToString());
    return;
  }
  for (const v1::ChannelInfo& c : list->channels()) {
    const uint32_t relid = c.child_relid();
    if (c.state() == v1::CHANNEL_STATE_RESCINDED) {
      Fail(absl::StrCat("the host still holds rescinded relid ", relid,
                        " although the guest has released it"));
      return;
    }
    if (!c.offer_delivered()) continue;
    auto g = guest.find(relid);
    if (g == guest.end()) {
      Fail(absl::StrCat("the host offered relid ", relid, " (", c.device(),
                        ") but the guest has no offer for it"));
      return;
    }
    auto sent = host_offers_.find(relid);
    if (sent == host_offers_.end() || !SameIdentity(sent->second, g->second.offer)) {
      Fail(absl::StrCat("relid ", relid, " names different channels on the two sides"));
      return;
    }
    const bool host_open = c.state() == v1::CHANNEL_STATE_OPEN;
    const bool guest_open = g->second.channel_state == ChannelState::kOpen;
    if (host_open != guest_open) {
      const uint64_t last = AttachedSession(g->second.offer.id);
      Fail(absl::StrCat("relid ", relid, " is ", guest_open ? "open" : "closed",
                        " on the guest but ", host_open ? "open" : "closed", " on the host",
                        abandoned_opens_.contains(last) ? " (its last open was given up)" : ""));
      return;
    }
    if (guest_open && c.ring_gpadl() != g->second.ring_gpadl) {
      Fail(absl::StrCat("relid ", relid, " is open on ring GPADL 0x", absl::Hex(c.ring_gpadl()),
                        " on the host but 0x", absl::Hex(g->second.ring_gpadl), " on the guest"));
      return;
    }
    if (guest_open) {
      auto sid = host_session_by_relid_.find(relid);
      if (sid == host_session_by_relid_.end()) {
        Fail(absl::StrCat("relid ", relid, " is open on both sides but no session maps it"));
        return;
      }
      const Session& s = sessions_.at(sid->second);
      if (s.target_vp_known && protocol::HasModifyChannelResponse(negotiated_version_) &&
          c.target_vp() != s.target_vp) {
        Fail(absl::StrCat("relid ", relid, " targets VP ", c.target_vp(), " on the host but ",
                          s.target_vp, " on the guest"));
        return;
      }
      // The data plane's counters (what ListChannels reports) match what really moved.
      absl::StatusOr<mock::ChannelCounters> n = plane_->Counters(relid);
      if (!n.ok() || n->packets_from_guest != s.guest_packets ||
          n->bytes_from_guest != s.guest_bytes || n->packets_to_guest != s.host_packets ||
          n->bytes_to_guest != s.host_bytes) {
        Fail(absl::StrCat(
            "relid ", relid, ": the host counts ",
            n.ok() ? absl::StrCat(n->packets_from_guest, " packets (", n->bytes_from_guest,
                                  " bytes) from and ", n->packets_to_guest, " (", n->bytes_to_guest,
                                  " bytes) to the guest")
                   : n.status().ToString(),
            ", but ", s.guest_packets, " (", s.guest_bytes, ") and ", s.host_packets, " (",
            s.host_bytes, ") moved"));
        return;
      }
    }
    guest.erase(g);
  }
  if (!guest.empty()) {
    Fail(absl::StrCat("the guest has an offer at relid ", guest.begin()->first,
                      " that the host does not know"));
    return;
  }
  // Live GPADLs agree, page for page.
  const mock::GpadlTable* table = engine_->Gpadls(guest_id_);
  const size_t host_count = table == nullptr ? 0 : table->size();
  size_t guest_count = 0;
  for (const GpadlStatus& g : bus().Gpadls()) {
    ++guest_count;
    const mock::Gpadl* h = table == nullptr ? nullptr : table->Find(g.handle);
    if (h == nullptr) {
      Fail(absl::StrCat("GPADL 0x", absl::Hex(g.handle), " of relid ", g.relid,
                        " is live on the guest but unknown to the host"));
      return;
    }
    const SimAllocation* a = backend_->FindByGpadl(g.handle);
    if (a == nullptr || h->relid != g.relid || a->pfns != h->pfns) {
      Fail(absl::StrCat("GPADL 0x", absl::Hex(g.handle), " differs between guest and host"));
      return;
    }
  }
  if (host_count != guest_count) {
    Fail(absl::StrCat("the host holds ", host_count, " GPADLs but the guest ", guest_count));
  }
}

void World::CheckFinal() {
  CheckSettled();
  if (failed_) return;
  for (uint32_t relid : relids_seen_) {
    if (table_.Lookup(relid) != nullptr) {
      Fail(absl::StrCat("relid ", relid, " is still published in the channel table at the end"));
      return;
    }
  }
  if (!host_mapped_pfns_.empty()) {
    Fail(absl::StrCat("the host still maps the rings of relid ", host_mapped_pfns_.begin()->first,
                      " at the end"));
    return;
  }
  if (!backend_->allocations().empty() || pool_->free_pages() != pool_->total_pages()) {
    Fail(absl::StrCat(pool_->total_pages() - pool_->free_pages(),
                      " pages never went back to the pool"));
    return;
  }
  const mock::GpadlTable* table = engine_->Gpadls(guest_id_);
  if (table != nullptr && table->size() != 0) {
    Fail(absl::StrCat("the host still holds ", table->size(), " GPADLs at the end"));
  }
}

// ---- The reply ledger ----------------------------------------------------------------------

void World::LedgerRequest(const v1::ControlMessage& m) {
  switch (m.message_case()) {
    case v1::ControlMessage::kInitiateContact:
      ++ledger_requests_[{kVersion, 0, 0}];
      break;
    case v1::ControlMessage::kRequestOffers:
      ++ledger_requests_[{kAllOffers, 0, 0}];
      break;
    case v1::ControlMessage::kGpadlCreate:
      ++ledger_requests_[{kGpadlCreated, m.gpadl_create().gpadl(), 0}];
      break;
    case v1::ControlMessage::kGpadlTeardown:
      ++ledger_requests_[{kGpadlTorndown, m.gpadl_teardown().gpadl(), 0}];
      break;
    case v1::ControlMessage::kOpenChannel:
      ++ledger_requests_[{kOpenResult, m.open_channel().child_relid(), m.open_channel().open_id()}];
      break;
    case v1::ControlMessage::kModifyChannel:
      ++ledger_requests_[{kModify, m.modify_channel().child_relid(), 0}];
      break;
    case v1::ControlMessage::kUnload:
      ++ledger_requests_[{kUnload, 0, 0}];
      break;
    default:
      break;
  }
}

bool World::LedgerReply(const v1::ControlMessage& m) {
  LedgerKey key;
  switch (m.message_case()) {
    case v1::ControlMessage::kVersionResponse:
      key = {kVersion, 0, 0};
      break;
    case v1::ControlMessage::kAllOffersDelivered:
      key = {kAllOffers, 0, 0};
      break;
    case v1::ControlMessage::kGpadlCreated:
      key = {kGpadlCreated, m.gpadl_created().gpadl(), 0};
      break;
    case v1::ControlMessage::kGpadlTorndown:
      key = {kGpadlTorndown, m.gpadl_torndown().gpadl(), 0};
      break;
    case v1::ControlMessage::kOpenResult:
      key = {kOpenResult, m.open_result().child_relid(), m.open_result().open_id()};
      break;
    case v1::ControlMessage::kModifyChannelResponse:
      key = {kModify, m.modify_channel_response().child_relid(), 0};
      break;
    case v1::ControlMessage::kUnloadResponse:
      key = {kUnload, 0, 0};
      break;
    default:
      return false;  // not a reply (offers, rescinds)
  }
  const uint64_t asked = ledger_requests_[key];
  uint64_t& answered = ledger_replies_[key];
  if (answered >= asked) {
    Fail(absl::StrCat("the guest received ", DescribeControlMessage(m), ", answer number ",
                      answered + 1, " to a request the host received ", asked,
                      " time(s): a duplicated or unsolicited reply"));
    return false;
  }
  ++answered;
  return true;
}

// ---- Packets -------------------------------------------------------------------------------

bool World::ExpectPacket(std::deque<SimPacket>& expect, const SimPacket& got,
                         absl::string_view what) {
  if (expect.empty()) {
    Fail(absl::StrCat(what, ": unexpected packet trans_id=", got.trans_id, " type=", got.type, " ",
                      got.payload.size(), " bytes (nothing outstanding: duplicated or ",
                      "invented)"));
    return false;
  }
  const SimPacket& want = expect.front();
  if (got.trans_id != want.trans_id || got.type != want.type || got.flags != want.flags ||
      got.payload != want.payload) {
    size_t differ = 0;
    while (differ < got.payload.size() && differ < want.payload.size() &&
           got.payload[differ] == want.payload[differ]) {
      ++differ;
    }
    Fail(absl::StrCat(
        what, ": got trans_id=", got.trans_id, " type=", got.type, " flags=", got.flags, " ",
        got.payload.size(), " bytes; expected trans_id=", want.trans_id, " type=", want.type,
        " flags=", want.flags, " ", want.payload.size(), " bytes (first difference at byte ",
        differ, "): lost, reordered or corrupted"));
    return false;
  }
  ++stats_.packets_verified;
  stats_.bytes_verified += got.payload.size();
  expect.pop_front();
  return true;
}

bool World::InFlightToHost(const std::function<bool(const v1::ControlMessage&)>& match) const {
  return std::any_of(to_host_.begin(), to_host_.end(), match);
}

}  // namespace vbus::sim
