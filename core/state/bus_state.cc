// BusState: construction, host-message dispatch, connection (negotiation, unload, link loss),
// timers, requests and inspection. Offers and rescinds are in bus_state_offers.cc; GPADLs,
// open, close and modify in bus_state_channels.cc; failed posts in bus_state_posts.cc.
#include "core/state/bus_state.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vbus {

absl::string_view BusPhaseName(BusPhase phase) {
  switch (phase) {
    case BusPhase::kDisconnected:
      return "disconnected";
    case BusPhase::kNegotiating:
      return "negotiating";
    case BusPhase::kConnected:
      return "connected";
    case BusPhase::kUnloading:
      return "unloading";
    case BusPhase::kSuspended:
      return "suspended";
  }
  return "unknown";
}

absl::string_view OfferStateName(OfferState state) {
  switch (state) {
    case OfferState::kActive:
      return "active";
    case OfferState::kRescinded:
      return "rescinded";
    case OfferState::kDetached:
      return "detached";
    case OfferState::kParked:
      return "parked";
  }
  return "unknown";
}

absl::string_view ChannelStateName(ChannelState state) {
  switch (state) {
    case ChannelState::kClosed:
      return "closed";
    case ChannelState::kOpeningGpadl:
      return "opening (waiting for the ring GPADL)";
    case ChannelState::kOpening:
      return "opening (waiting for OpenResult)";
    case ChannelState::kOpen:
      return "open";
    case ChannelState::kClosing:
      return "closing";
  }
  return "unknown";
}

absl::string_view GpadlStateName(GpadlState state) {
  switch (state) {
    case GpadlState::kCreating:
      return "creating";
    case GpadlState::kCreated:
      return "created";
    case GpadlState::kTearingDown:
      return "tearing down";
    case GpadlState::kDropped:
      return "dropped";
  }
  return "unknown";
}

BusState::BusState(BusConfig config) : config_(config) {}

// ---- Host messages ---------------------------------------------------------------------

void BusState::OnHostMessage(const v1::ControlMessage& m, Actions* out) {
  ++counters_.messages_received;
  using M = v1::ControlMessage;
  switch (m.message_case()) {
    case M::MESSAGE_NOT_SET:
      Ignore(IgnoreReason::kMalformedMessage,
             absl::InvalidArgumentError("host sent a ControlMessage with no message set"), out);
      return;
    case M::kInitiateContact:
    case M::kRequestOffers:
    case M::kRelidReleased:
    case M::kGpadlCreate:
    case M::kGpadlTeardown:
    case M::kOpenChannel:
    case M::kCloseChannel:
    case M::kModifyChannel:
    case M::kUnload:
    case M::kTlConnectRequest:
      Ignore(IgnoreReason::kGuestToHostKind,
             absl::InvalidArgumentError(absl::StrCat("host sent ", ControlMessageKindName(m),
                                                     ", which only a guest sends")),
             out);
      return;
    case M::kVersionResponse:
      HandleVersionResponse(m.version_response(), out);
      return;
    default:
      break;
  }
  if (!negotiated()) {
    Ignore(IgnoreReason::kNotNegotiated,
           absl::FailedPreconditionError(absl::StrCat("host sent ", ControlMessageKindName(m),
                                                      " before a version was agreed (bus ",
                                                      BusPhaseName(phase_), ")")),
           out);
    return;
  }
  switch (m.message_case()) {
    case M::kOffer:
      HandleOffer(m.offer(), out);
      return;
    case M::kAllOffersDelivered:
      HandleAllOffersDelivered(out);
      return;
    case M::kRescindOffer:
      HandleRescind(m.rescind_offer(), out);
      return;
    case M::kGpadlCreated:
      HandleGpadlCreated(m.gpadl_created(), out);
      return;
    case M::kGpadlTorndown:
      HandleGpadlTorndown(m.gpadl_torndown(), out);
      return;
    case M::kOpenResult:
      HandleOpenResult(m.open_result(), out);
      return;
    case M::kModifyChannelResponse:
      HandleModifyResponse(m.modify_channel_response(), out);
      return;
    case M::kUnloadResponse:
      HandleUnloadResponse(out);
      return;
    case M::kTlConnectResult:
      Ignore(IgnoreReason::kTlConnectResultUnexpected,
             absl::InvalidArgumentError("host sent TlConnectResult, but this guest sent no "
                                        "TlConnectRequest (vbus does not use hv_sock)"),
             out);
      return;
    default:
      return;  // every kind is handled above
  }
}

// ---- Connection ------------------------------------------------------------------------

RequestId BusState::Connect(absl::Time deadline, Actions* out) {
  if (phase_ == BusPhase::kSuspended || suspended_version_ != 0) {
    return CompleteNow(
        RequestKind::kConnect, OfferId(),
        absl::FailedPreconditionError("connect: the bus is suspended; Resume reconnects it"), out);
  }
  if (phase_ != BusPhase::kDisconnected) {
    return CompleteNow(RequestKind::kConnect, OfferId(),
                       absl::FailedPreconditionError(
                           absl::StrCat("connect: the bus is already ", BusPhaseName(phase_))),
                       out);
  }
  versions_to_try_.clear();
  for (uint32_t v : protocol::kGuestVersions) {
    if (v <= config_.max_version && (!config_.isolated || v >= protocol::kOldestIsolatedVersion)) {
      versions_to_try_.push_back(v);
    }
  }
  if (versions_to_try_.empty() && config_.isolated) {
    return CompleteNow(
        RequestKind::kConnect, OfferId(),
        absl::InvalidArgumentError(
            absl::StrCat("connect: an isolated guest needs version ",
                         protocol::VersionName(protocol::kOldestIsolatedVersion),
                         " or newer; max_version is ", protocol::VersionName(config_.max_version))),
        out);
  }
  if (versions_to_try_.empty()) {
    return CompleteNow(RequestKind::kConnect, OfferId(),
                       absl::InvalidArgumentError(absl::StrCat(
                           "connect: max_version ", protocol::VersionName(config_.max_version),
                           " is older than the oldest supported version ",
                           protocol::VersionName(protocol::kOldestVersion))),
                       out);
  }
  return StartNegotiation(deadline, out);
}

RequestId BusState::StartNegotiation(absl::Time deadline, Actions* out) {
  attempt_ = 0;
  phase_ = BusPhase::kNegotiating;
  connect_request_ = NewRequest(RequestKind::kConnect, OfferId(), deadline);
  SendInitiateContact(out);
  ArmTimer(connect_request_, out);
  return connect_request_;
}

void BusState::SendInitiateContact(Actions* out) {
  const uint32_t version = versions_to_try_[attempt_];
  v1::ControlMessage m;
  v1::InitiateContact* c = m.mutable_initiate_contact();
  c->set_version_requested(version);
  c->set_target_vcpu(config_.target_vcpu);
  if (protocol::UsesReturnedConnectionId(version)) {
    c->set_message_sint(config_.message_sint);
    c->set_message_vtl(config_.message_vtl);
  } else {
    c->set_interrupt_page(config_.interrupt_page);
  }
  c->set_monitor_page1(config_.monitor_page1);
  c->set_monitor_page2(config_.monitor_page2);
  Send(std::move(m), out);
}

void BusState::HandleVersionResponse(const v1::VersionResponse& m, Actions* out) {
  if (phase_ != BusPhase::kNegotiating) {
    Ignore(IgnoreReason::kUnexpectedVersionResponse,
           absl::FailedPreconditionError(absl::StrCat(
               "VersionResponse with no InitiateContact waiting (bus ", BusPhaseName(phase_),
               version_ != 0 ? absl::StrCat(" at ", protocol::VersionName(version_)) : "", ")")),
           out);
    return;
  }
  const uint32_t tried = versions_to_try_[attempt_];
  if (!m.version_supported() && suspended_version_ != 0) {
    ResumeRefused(absl::StrCat("host does not support version ", protocol::VersionName(tried)),
                  out);
    return;
  }
  if (!m.version_supported()) {
    TryNextVersion(absl::StrCat("host does not support version ", protocol::VersionName(tried)),
                   out);
    return;
  }
  version_ = tried;
  message_connection_id_ =
      protocol::UsesReturnedConnectionId(tried) ? m.message_connection_id() : 0;
  phase_ = BusPhase::kConnected;
  all_offers_delivered_ = false;
  out->push_back(ConnectionReady{version_, message_connection_id_});
  v1::ControlMessage request;
  request.mutable_request_offers();
  Send(std::move(request), out);
}

void BusState::TryNextVersion(absl::string_view why, Actions* out) {
  if (suspended_version_ != 0) {
    ResumeRefused(why, out);
    return;
  }
  ++attempt_;
  if (attempt_ < versions_to_try_.size()) {
    SendInitiateContact(out);
    return;
  }
  std::vector<std::string> names;
  for (uint32_t v : versions_to_try_) names.push_back(protocol::VersionName(v));
  phase_ = BusPhase::kDisconnected;
  Finish(
      connect_request_,
      absl::FailedPreconditionError(absl::StrCat("connect: host accepted none of versions ",
                                                 absl::StrJoin(names, ", "), " (last: ", why, ")")),
      out);
  connect_request_ = RequestId();
}

void BusState::HandleAllOffersDelivered(Actions* out) {
  if (all_offers_delivered_) {
    Ignore(IgnoreReason::kUnexpectedAllOffersDelivered,
           absl::FailedPreconditionError("AllOffersDelivered after all offers were delivered"),
           out);
    return;
  }
  all_offers_delivered_ = true;
  if (connect_request_.valid() && suspended_version_ != 0) {
    // A resume is complete; what is still parked waits for DropParked (or a late re-offer).
    suspended_version_ = 0;
  }
  if (connect_request_.valid()) {
    const RequestId id = connect_request_;
    connect_request_ = RequestId();
    Finish(id, absl::OkStatus(), out, /*gpadl=*/0, version_);
  }
}

void BusState::ConnectTimedOut(RequestId id, Actions* out) {
  connect_request_ = RequestId();
  if (phase_ == BusPhase::kNegotiating && suspended_version_ != 0) {
    phase_ = BusPhase::kSuspended;
    Finish(id,
           absl::DeadlineExceededError(
               absl::StrCat("resume: no VersionResponse to InitiateContact for version ",
                            protocol::VersionName(suspended_version_),
                            " before the deadline; the bus is still suspended")),
           out);
    return;
  }
  if (phase_ == BusPhase::kNegotiating) {
    const uint32_t tried = versions_to_try_[attempt_];
    phase_ = BusPhase::kDisconnected;
    Finish(id,
           absl::DeadlineExceededError(
               absl::StrCat("connect: no VersionResponse to InitiateContact for version ",
                            protocol::VersionName(tried), " before the deadline")),
           out);
    return;
  }
  size_t offers = 0;
  for (const auto& [offer_id, rec] : offers_) offers += rec.state == OfferState::kActive;
  const bool resuming = suspended_version_ != 0;
  suspended_version_ = 0;  // connected now: what is still parked waits for DropParked
  Finish(id,
         absl::DeadlineExceededError(absl::StrCat(
             resuming ? "resume: version " : "connect: version ", protocol::VersionName(version_),
             " agreed, but the host had not sent AllOffersDelivered by the deadline (", offers,
             " offers so far)")),
         out);
}

RequestId BusState::Unload(absl::Time deadline, Actions* out, UnloadMode mode) {
  if (phase_ != BusPhase::kConnected) {
    return CompleteNow(
        RequestKind::kUnload, OfferId(),
        absl::FailedPreconditionError(absl::StrCat("unload: the bus is ", BusPhaseName(phase_))),
        out);
  }
  if (!protocol::HasUnload(version_)) {
    return CompleteNow(
        RequestKind::kUnload, OfferId(),
        absl::FailedPreconditionError(absl::StrCat(
            "unload needs protocol 3.0 or newer; negotiated ", protocol::VersionName(version_))),
        out);
  }
  std::vector<std::string> busy;
  for (const auto& [id, rec] : offers_) {
    if (rec.channel != ChannelState::kClosed) busy.push_back(absl::StrCat(rec.info.relid));
  }
  if (!busy.empty() && mode != UnloadMode::kForced) {
    return CompleteNow(RequestKind::kUnload, OfferId(),
                       absl::FailedPreconditionError(
                           absl::StrCat("unload: channels of relids ", absl::StrJoin(busy, ", "),
                                        " are not closed; close them first")),
                       out);
  }
  if (mode == UnloadMode::kForced) {
    // No callback may run, and no call may wait, once the host starts tearing down. Sub-channels
    // first, as on every path that drops channels.
    const absl::Status why = absl::CancelledError("the bus is unloading with the channel open");
    for (bool subs : {true, false}) {
      for (auto& [id, rec] : offers_) {
        if (rec.state == OfferState::kActive && rec.info.is_sub_channel() == subs) {
          DropChannel(rec, why, out);
        }
      }
    }
  }
  if (mode == UnloadMode::kSuspend) {
    // The host forgets every GPADL at the Unload; memory a driver still uses through one would
    // be freed under it. It tears them down first.
    std::vector<std::string> held;
    for (const auto& [handle, g] : gpadls_) {
      held.push_back(absl::StrCat("0x", absl::Hex(handle), " (relid ", g.relid, ")"));
    }
    if (!held.empty()) {
      return CompleteNow(
          RequestKind::kUnload, OfferId(),
          absl::FailedPreconditionError(absl::StrCat("suspend: GPADLs ", absl::StrJoin(held, ", "),
                                                     " are not torn down; tear them down first")),
          out);
    }
  }
  phase_ = BusPhase::kUnloading;
  unload_mode_ = mode;
  unload_request_ = NewRequest(RequestKind::kUnload, OfferId(), deadline);
  v1::ControlMessage m;
  m.mutable_unload();
  Send(std::move(m), out);
  ArmTimer(unload_request_, out);
  return unload_request_;
}

void BusState::HandleUnloadResponse(Actions* out) {
  if (phase_ != BusPhase::kUnloading) {
    Ignore(IgnoreReason::kUnloadResponseUnexpected,
           absl::FailedPreconditionError("UnloadResponse with no Unload waiting"), out);
    return;
  }
  const RequestId id = unload_request_;
  unload_request_ = RequestId();
  if (unload_mode_ == UnloadMode::kSuspend) {
    ParkAll(out);
  } else {
    DetachAll(absl::CancelledError("bus unloaded"), out);
  }
  Finish(id, absl::OkStatus(), out);
}

void BusState::OnLinkLost(const absl::Status& status, Actions* out) {
  const absl::Status reason =
      absl::UnavailableError(absl::StrCat("host link lost: ", status.ToString()));
  DetachAll(reason, out);
  if (unload_request_.valid()) {
    const RequestId id = unload_request_;
    unload_request_ = RequestId();
    Finish(id, absl::UnavailableError(absl::StrCat("unload failed: ", reason.message())), out);
  }
}

void BusState::DetachAll(const absl::Status& reason, Actions* out, bool keep_parked) {
  // Sub-channels before their primaries: retire and report subs first.
  auto goes = [keep_parked](const OfferRecord& rec) {
    return rec.state != OfferState::kDetached && !(keep_parked && rec.state == OfferState::kParked);
  };
  std::vector<OfferId> order;
  for (const auto& [id, rec] : offers_) {
    if (rec.info.is_sub_channel() && goes(rec)) order.push_back(id);
  }
  for (const auto& [id, rec] : offers_) {
    if (!rec.info.is_sub_channel() && goes(rec)) order.push_back(id);
  }
  for (OfferId id : order) {
    OfferRecord& rec = offers_.find(id)->second;  // `order` holds only keys of offers_
    const bool was_active = rec.state == OfferState::kActive;
    const bool was_parked = rec.state == OfferState::kParked;
    if (was_active) DropChannel(rec, reason, out);
    rec.state = OfferState::kDetached;
    if (was_active || was_parked) out->push_back(OfferRemoved{id, rec.info.relid, reason});
  }
  relid_index_.fill(OfferId());
  parked_.clear();
  suspended_version_ = 0;
  refused_relids_.reset();  // the host forgets every relid with the connection
  instance_index_.clear();
  if (connect_request_.valid()) {
    const RequestId id = connect_request_;
    connect_request_ = RequestId();
    Finish(id, absl::Status(reason.code(), absl::StrCat("connect failed: ", reason.message())),
           out);
  }
  phase_ = BusPhase::kDisconnected;
  version_ = 0;
  message_connection_id_ = 0;
  all_offers_delivered_ = false;
}

// ---- Timers and requests ----------------------------------------------------------------

void BusState::OnTimer(RequestId id, absl::Time now, Actions* out) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;  // completed before the timer fired
  if (now < it->second.deadline) {
    out->push_back(vbus::ArmTimer{id, it->second.deadline});
    return;
  }
  it->second.timer_armed = false;  // it fired: nothing left to cancel
  const PendingRequest req = it->second;
  switch (req.kind) {
    case RequestKind::kConnect:
      ConnectTimedOut(id, out);
      return;
    case RequestKind::kOpen:
      OpenTimedOut(id, req, out);
      return;
    case RequestKind::kClose:
      CloseTimedOut(id, req, out);
      return;
    case RequestKind::kGpadlCreate:
    case RequestKind::kGpadlTeardown: {
      GpadlRecord* found = FindGpadl(req.gpadl);
      if (found == nullptr) {
        Inconsistent(absl::StrCat("timer of request ", id.value(), ": GPADL 0x",
                                  absl::Hex(req.gpadl), " is gone"),
                     out);
        Finish(id, absl::DeadlineExceededError("GPADL request: no answer before the deadline"),
               out);
        return;
      }
      GpadlRecord& g = *found;
      g.waiter = RequestId();
      const bool create = req.kind == RequestKind::kGpadlCreate;
      // An abandoned creation is torn down as soon as the host confirms it; an unanswered
      // teardown stays pending (the memory is not released until the host answers).
      if (create) g.abandoned = true;
      Finish(
          id,
          absl::DeadlineExceededError(absl::StrCat(
              create ? "GPADL 0x" : "teardown of GPADL 0x", absl::Hex(req.gpadl), " of relid ",
              g.relid, ": no ", create ? "GpadlCreated" : "GpadlTorndown", " before the deadline")),
          out);
      return;
    }
    case RequestKind::kModifyChannel: {
      OfferRecord& rec = *FindOffer(req.offer);
      rec.modify_request = RequestId();
      Finish(id,
             absl::DeadlineExceededError(absl::StrCat("modify of relid ", rec.info.relid,
                                                      ": no ModifyChannelResponse before the "
                                                      "deadline")),
             out);
      return;
    }
    case RequestKind::kUnload:
      unload_request_ = RequestId();
      if (unload_mode_ == UnloadMode::kSuspend) {
        // The host went quiet: suspended all the same (a Resume starts a new connection).
        ParkAll(out);
        Finish(id,
               absl::DeadlineExceededError("suspend: no UnloadResponse before the deadline; "
                                           "the bus is suspended without the host's answer"),
               out);
        return;
      }
      DetachAll(absl::DeadlineExceededError("bus unload timed out"), out);
      Finish(id, absl::DeadlineExceededError("unload: no UnloadResponse before the deadline"), out);
      return;
  }
}

RequestId BusState::NewRequest(RequestKind kind, OfferId offer, absl::Time deadline,
                               uint32_t gpadl) {
  const RequestId id(next_request_id_++);
  PendingRequest& req = requests_[id];
  req.kind = kind;
  req.offer = offer;
  req.deadline = deadline;
  req.gpadl = gpadl;
  return id;
}

void BusState::ArmTimer(RequestId id, Actions* out) {
  PendingRequest* req = FindRequest(id);
  if (req == nullptr || req->deadline == absl::InfiniteFuture()) return;
  req->timer_armed = true;
  out->push_back(vbus::ArmTimer{id, req->deadline});
}

RequestId BusState::CompleteNow(RequestKind kind, OfferId offer, absl::Status status,
                                Actions* out) {
  const RequestId id(next_request_id_++);
  out->push_back(Complete{id, kind, offer, std::move(status)});
  return id;
}

void BusState::Finish(RequestId id, absl::Status status, Actions* out, uint32_t gpadl,
                      uint32_t version) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  const PendingRequest req = it->second;
  requests_.erase(it);
  if (req.timer_armed) out->push_back(CancelTimer{id});
  out->push_back(Complete{id, req.kind, req.offer, std::move(status), gpadl, version});
}

// ---- Output helpers and lookups -----------------------------------------------------------

void BusState::Send(v1::ControlMessage message, Actions* out, RequestId completes) {
  ++counters_.messages_sent;
  out->push_back(SendMessage{std::move(message), completes});
}

void BusState::Ignore(IgnoreReason reason, absl::Status status, Actions* out) {
  ++counters_.ignored_total;
  ++counters_.ignored[static_cast<size_t>(reason)];
  out->push_back(InputIgnored{reason, std::move(status)});
}

BusState::OfferRecord* BusState::FindOffer(OfferId id) {
  auto it = offers_.find(id);
  return it == offers_.end() ? nullptr : &it->second;
}

const BusState::OfferRecord* BusState::FindOffer(OfferId id) const {
  auto it = offers_.find(id);
  return it == offers_.end() ? nullptr : &it->second;
}

BusState::GpadlRecord* BusState::FindGpadl(uint32_t handle) {
  auto it = gpadls_.find(handle);
  return it == gpadls_.end() ? nullptr : &it->second;
}

BusState::PendingRequest* BusState::FindRequest(RequestId id) {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : &it->second;
}

void BusState::Inconsistent(absl::string_view what, Actions* out) {
  Ignore(IgnoreReason::kInternalInconsistency,
         absl::InternalError(absl::StrCat("bus state inconsistent: ", what)), out);
}

BusState::OfferRecord* BusState::FindByRelid(uint32_t relid) {
  if (!protocol::IsValidRelid(relid)) return nullptr;
  const OfferId id = relid_index_[relid];
  return id.valid() ? FindOffer(id) : nullptr;
}

// ---- Inspection ----------------------------------------------------------------------------

std::vector<OfferInfo> BusState::Offers() const {
  std::vector<OfferInfo> result;
  for (const auto& [id, rec] : offers_) {
    if (rec.state == OfferState::kActive) result.push_back(rec.info);
  }
  std::sort(result.begin(), result.end(),
            [](const OfferInfo& a, const OfferInfo& b) { return a.relid < b.relid; });
  return result;
}

std::optional<ChannelStatus> BusState::GetChannel(OfferId offer) const {
  const OfferRecord* rec = FindOffer(offer);
  if (rec == nullptr) return std::nullopt;
  ChannelStatus s;
  s.offer = rec->info;
  s.offer_state = rec->state;
  s.channel_state = rec->channel;
  s.published = rec->published;
  s.orphaned = rec->orphaned;
  s.ring_gpadl = rec->ring_gpadl;
  s.gpadls = rec->gpadls;
  std::sort(s.gpadls.begin(), s.gpadls.end());
  return s;
}

std::optional<uint32_t> BusState::RequestGpadl(RequestId request) const {
  auto it = requests_.find(request);
  if (it == requests_.end() || it->second.gpadl == 0) return std::nullopt;
  return it->second.gpadl;
}

std::optional<OfferId> BusState::FindOfferByRelid(uint32_t relid) const {
  if (!protocol::IsValidRelid(relid) || !relid_index_[relid].valid()) return std::nullopt;
  return relid_index_[relid];
}

std::vector<GpadlStatus> BusState::Gpadls() const {
  std::vector<GpadlStatus> result;
  for (const auto& [handle, g] : gpadls_) {
    result.push_back(GpadlStatus{handle, g.offer, g.relid, g.state, g.ring, g.abandoned});
  }
  return result;
}

absl::Status BusState::CheckInvariants() const {
  auto broken = [](auto&&... parts) {
    return absl::InternalError(absl::StrCat("bus invariant broken: ", parts...));
  };
  for (uint32_t relid = 0; relid < protocol::kRelidCount; ++relid) {
    const OfferId id = relid_index_[relid];
    if (!id.valid()) continue;
    const OfferRecord* rec = FindOffer(id);
    if (rec == nullptr) return broken("relid ", relid, " maps to missing offer ", id.value());
    if (rec->info.relid != relid || rec->state == OfferState::kDetached) {
      return broken("relid ", relid, " maps to offer ", id.value(), " (relid ", rec->info.relid,
                    ", ", OfferStateName(rec->state), ")");
    }
    if (refused_relids_.test(relid)) {
      return broken("relid ", relid, " is held by offer ", id.value(),
                    " and also released as a refused offer's");
    }
  }
  for (const auto& [key, id] : instance_index_) {
    const OfferRecord* rec = FindOffer(id);
    if (rec == nullptr || rec->state != OfferState::kActive) {
      return broken("instance index names offer ", id.value(), ", which is not active");
    }
  }
  for (const auto& [id, rec] : offers_) {
    const uint32_t relid = rec.info.relid;
    const bool holds_relid =
        rec.state == OfferState::kActive || rec.state == OfferState::kRescinded;
    if (holds_relid && relid_index_[relid] != id) {
      return broken("offer ", id.value(), " (", OfferStateName(rec.state), ") does not hold relid ",
                    relid);
    }
    if (!holds_relid && relid_index_[relid] == id) {
      return broken(OfferStateName(rec.state), " offer ", id.value(), " still holds relid ", relid);
    }
    if (rec.state == OfferState::kParked) {
      const InstanceKey key{rec.info.interface_type, rec.info.interface_instance, 0};
      auto parked = parked_.find(key);
      if (rec.info.is_sub_channel() || parked == parked_.end() || parked->second != id ||
          !rec.gpadls.empty() || !rec.sub_channels.empty()) {
        return broken("parked offer ", id.value(), " is not a bare primary in the parked index");
      }
    }
    if (rec.state != OfferState::kActive &&
        (rec.channel != ChannelState::kClosed || rec.published)) {
      return broken("removed offer ", id.value(), " has channel ", ChannelStateName(rec.channel));
    }
    const bool should_publish =
        rec.channel == ChannelState::kOpening || rec.channel == ChannelState::kOpen;
    if (rec.published != should_publish) {
      return broken("relid ", relid, " is ", ChannelStateName(rec.channel), " but ",
                    rec.published ? "" : "not ", "published");
    }
    const bool opening =
        rec.channel == ChannelState::kOpeningGpadl || rec.channel == ChannelState::kOpening;
    if (rec.open_request.valid() != opening) {
      return broken("relid ", relid, " is ", ChannelStateName(rec.channel), " with",
                    rec.open_request.valid() ? "" : "out", " an open request");
    }
    if (rec.close_request.valid() && rec.channel != ChannelState::kClosing) {
      return broken("relid ", relid, " has a close request while ", ChannelStateName(rec.channel));
    }
    if (rec.modify_request.valid() && rec.channel != ChannelState::kOpen) {
      return broken("relid ", relid, " has a modify request while ", ChannelStateName(rec.channel));
    }
    const bool has_ring = opening || rec.channel == ChannelState::kOpen;
    if ((rec.ring_gpadl != 0) != has_ring) {
      return broken("relid ", relid, " is ", ChannelStateName(rec.channel), " with ring GPADL 0x",
                    absl::Hex(rec.ring_gpadl));
    }
    if (rec.ring_gpadl != 0) {
      auto g = gpadls_.find(rec.ring_gpadl);
      if (g == gpadls_.end() || !g->second.ring || g->second.offer != id) {
        return broken("relid ", relid, " ring GPADL 0x", absl::Hex(rec.ring_gpadl),
                      " is not its live ring GPADL");
      }
      const GpadlState want =
          rec.channel == ChannelState::kOpeningGpadl ? GpadlState::kCreating : GpadlState::kCreated;
      if (g->second.state != want) {
        return broken("relid ", relid, " is ", ChannelStateName(rec.channel),
                      " but its ring GPADL is ", GpadlStateName(g->second.state));
      }
    }
    for (uint32_t handle : rec.gpadls) {
      auto g = gpadls_.find(handle);
      if (g == gpadls_.end() || g->second.offer != id) {
        return broken("offer ", id.value(), " lists GPADL 0x", absl::Hex(handle),
                      ", which is not its own");
      }
      // A forced unload drops an active offer's GPADLs before its UnloadResponse.
      const bool dropped_ok = rec.state != OfferState::kActive || phase_ == BusPhase::kUnloading;
      const bool dropped_needed = rec.state != OfferState::kActive;
      if (g->second.state == GpadlState::kDropped ? !dropped_ok : dropped_needed) {
        return broken("GPADL 0x", absl::Hex(handle), " is ", GpadlStateName(g->second.state),
                      " on a ", OfferStateName(rec.state), " offer");
      }
    }
    if (phase_ == BusPhase::kDisconnected && rec.state != OfferState::kDetached) {
      return broken("offer ", id.value(), " is ", OfferStateName(rec.state), " while disconnected");
    }
    if (phase_ == BusPhase::kSuspended && rec.state != OfferState::kDetached &&
        rec.state != OfferState::kParked) {
      return broken("offer ", id.value(), " is ", OfferStateName(rec.state), " while suspended");
    }
  }
  for (const auto& [key, id] : parked_) {
    const OfferRecord* rec = FindOffer(id);
    if (rec == nullptr || rec->state != OfferState::kParked) {
      return broken("parked index names offer ", id.value(), ", which is not parked");
    }
  }
  if ((phase_ == BusPhase::kSuspended) && suspended_version_ == 0) {
    return broken("suspended with no version saved for the resume");
  }
  for (const auto& [handle, g] : gpadls_) {
    const OfferRecord* rec = FindOffer(g.offer);
    if (rec == nullptr ||
        std::find(rec->gpadls.begin(), rec->gpadls.end(), handle) == rec->gpadls.end()) {
      return broken("GPADL 0x", absl::Hex(handle), " is not listed by its offer ", g.offer.value());
    }
    if (g.waiter.valid() && !requests_.contains(g.waiter)) {
      return broken("GPADL 0x", absl::Hex(handle), " waits for finished request ",
                    g.waiter.value());
    }
  }
  for (const auto& [id, req] : requests_) {
    if (req.kind == RequestKind::kConnect && id != connect_request_) {
      return broken("stray connect request ", id.value());
    }
    if (req.kind == RequestKind::kUnload && id != unload_request_) {
      return broken("stray unload request ", id.value());
    }
    if (req.kind == RequestKind::kGpadlCreate || req.kind == RequestKind::kGpadlTeardown) {
      auto g = gpadls_.find(req.gpadl);
      if (g == gpadls_.end() || g->second.waiter != id) {
        return broken("request ", id.value(), " waits on GPADL 0x", absl::Hex(req.gpadl),
                      ", which does not know it");
      }
    }
  }
  if ((phase_ == BusPhase::kNegotiating) != (connect_request_.valid() && version_ == 0)) {
    return broken("phase ", BusPhaseName(phase_), " with connect request ",
                  connect_request_.value());
  }
  if ((phase_ == BusPhase::kUnloading) != unload_request_.valid()) {
    return broken("phase ", BusPhaseName(phase_), " with unload request ", unload_request_.value());
  }
  return absl::OkStatus();
}

}  // namespace vbus
