// The simulation's invariants: after every step (CheckStep), at every settle point
// (CheckSettled), at the end (CheckFinal), on every host reply (the ledger) and on every
// packet (ExpectPacket).
#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/guid_proto.h"
#include "core/protocol.h"
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

}  // namespace

// ---- After every step ----------------------------------------------------------------------

void World::CheckStep() {
  if (absl::Status s = bus_->CheckInvariants(); !s.ok()) {
    Fail(std::string(s.message()));
    return;
  }
  // The channel table holds exactly the channels BusState has published.
  for (const auto& [offer, channel] : channels_) {
    std::optional<ChannelStatus> st = bus_->GetChannel(offer);
    if (!st || !st->published || st->offer.relid != channel->relid_) {
      Fail(absl::StrCat("table slot ", channel->relid_, " still holds offer ", offer.value(),
                        "'s channel, but BusState has ",
                        st ? absl::StrCat(OfferStateName(st->offer_state), "/",
                                          ChannelStateName(st->channel_state), " (not published)")
                           : std::string("released it")));
      return;
    }
    if (table_.Lookup(channel->relid_) != channel.get()) {
      Fail(absl::StrCat("table slot ", channel->relid_, " does not hold offer ", offer.value(),
                        "'s published channel"));
      return;
    }
  }
  const bool unloading = bus_->phase() == BusPhase::kUnloading;
  for (const auto& [id, offer] : offers_) {
    std::optional<ChannelStatus> st = bus_->GetChannel(id);
    if (!st) {
      Fail(absl::StrCat("offer ", id.value(), " vanished from BusState before ReleaseOffer"));
      return;
    }
    const uint32_t relid = st->offer.relid;
    // No channel both open and rescinded.
    if (st->offer_state == OfferState::kRescinded &&
        (st->channel_state != ChannelState::kClosed || st->published ||
         table_.Lookup(relid) != nullptr)) {
      Fail(absl::StrCat("relid ", relid, " is rescinded and ", ChannelStateName(st->channel_state),
                        st->published ? " (published)" : "",
                        table_.Lookup(relid) != nullptr ? " (in the table)" : "", " at once"));
      return;
    }
    if (st->offer_state == OfferState::kDetached || unloading) continue;
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
    for (const auto& [handle, g] : table->all()) {
      if (!created_handles_.contains(handle)) {
        Fail(absl::StrCat("the host holds GPADL 0x", absl::Hex(handle),
                          ", which the guest never created"));
        return;
      }
      if (released_handles_.contains(handle)) {
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
  // Memory: every page out of the pool is filed under a live GPADL, and nothing else is.
  size_t filed_pages = 0;
  for (const auto& [handle, f] : filed_) filed_pages += f.pages.page_count();
  const size_t used = pool_->total_pages() - pool_->free_pages();
  if (used != filed_pages) {
    Fail(absl::StrCat("the page pool has ", used, " pages in use but ", filed_pages,
                      " are filed under live GPADLs"));
  }
}

// ---- At settle points ----------------------------------------------------------------------

void World::CheckSettled() {
  if (failed_) return;
  for (const auto& [id, issued] : issued_) {
    if (!issued.completed) {
      Fail(absl::StrCat("settled, but request ", id.value(), " (", RequestKindName(issued.kind),
                        ") never completed"));
      return;
    }
  }
  if (bus_->pending_requests() != 0) {
    Fail(absl::StrCat("settled with ", bus_->pending_requests(), " BusState requests pending"));
    return;
  }
  std::map<uint32_t, uint32_t> guest_gpadls;  // handle → relid
  for (const GpadlStatus& g : bus_->Gpadls()) {
    if (g.state != GpadlState::kCreated) {
      Fail(absl::StrCat("settled, but GPADL 0x", absl::Hex(g.handle), " is ",
                        GpadlStateName(g.state)));
      return;
    }
    guest_gpadls[g.handle] = g.relid;
  }
  for (const auto& [handle, f] : filed_) {
    if (!guest_gpadls.contains(handle)) {
      Fail(absl::StrCat("memory is filed under GPADL 0x", absl::Hex(handle),
                        ", which BusState no longer has (never released: a leak)"));
      return;
    }
  }
  if (bus_->phase() != BusPhase::kConnected) {
    if (!offers_.empty() || !guest_gpadls.empty()) {
      Fail(absl::StrCat("disconnected with ", offers_.size(), " offers and ", guest_gpadls.size(),
                        " GPADLs not released"));
    }
    return;
  }
  // Guest and host agree on every channel: offered, open or closed.
  std::map<uint32_t, ChannelStatus> guest;
  for (const auto& [id, offer] : offers_) {
    std::optional<ChannelStatus> st = bus_->GetChannel(id);
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
      Fail(absl::StrCat("relid ", relid, " is ", guest_open ? "open" : "closed",
                        " on the guest but ", host_open ? "open" : "closed", " on the host"));
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
  for (const auto& [handle, relid] : guest_gpadls) {
    const mock::Gpadl* h = table == nullptr ? nullptr : table->Find(handle);
    if (h == nullptr) {
      Fail(absl::StrCat("GPADL 0x", absl::Hex(handle), " of relid ", relid,
                        " is live on the guest but unknown to the host"));
      return;
    }
    const auto pfns = filed_.at(handle).pages.pfns();
    if (h->relid != relid ||
        !std::equal(pfns.begin(), pfns.end(), h->pfns.begin(), h->pfns.end())) {
      Fail(absl::StrCat("GPADL 0x", absl::Hex(handle), " differs between guest and host"));
      return;
    }
  }
  if (host_count != guest_gpadls.size()) {
    Fail(
        absl::StrCat("the host holds ", host_count, " GPADLs but the guest ", guest_gpadls.size()));
  }
}

void World::CheckFinal() {
  CheckSettled();
  if (failed_) return;
  if (!channels_.empty()) {
    Fail(absl::StrCat(channels_.size(), " channels still published at the end"));
    return;
  }
  if (!host_mapped_pfns_.empty()) {
    Fail(absl::StrCat("the host still maps the rings of relid ", host_mapped_pfns_.begin()->first,
                      " at the end"));
    return;
  }
  if (pool_->free_pages() != pool_->total_pages()) {
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
