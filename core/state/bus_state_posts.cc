// BusState: what a failed post undoes (docs/protocol.md §5, "When a post fails").
//
// A backend reports a post it could not make with a code whose meaning the Backend contract
// fixes: Unavailable means the link is gone, and the whole bus detaches; NotFound for a 5.x
// InitiateContact means "try the next version"; any other code (ResourceExhausted: the host's
// message buffers stayed full through the backend's retries; InvalidArgument: the backend
// cannot encode the message) means the host never saw this one message. Then only the request
// that sent it fails, and what that request had set up on the guest's side is undone, so the
// caller may simply try again. Messages that end something the host already holds (a
// CloseChannel, a GPADL teardown that nobody waits for) cannot be taken back: the guest keeps
// the memory the host may still map until the host forgets it (rescind, unload, lost link).
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/state/bus_state.h"

namespace vbus {
namespace {

absl::Status PostFailure(const absl::Status& status, absl::string_view what,
                         const v1::ControlMessage& message, absl::string_view consequence = "") {
  return absl::Status(status.code(),
                      absl::StrCat(what, ": posting ", ControlMessageKindName(message),
                                   " failed: ", status.message(), consequence));
}

}  // namespace

void BusState::OnPostFailed(const v1::ControlMessage& message, const absl::Status& status,
                            Actions* out) {
  if (status.ok()) return;  // not a failure: nothing to undo
  if (status.code() == absl::StatusCode::kUnavailable) {
    OnLinkLost(absl::Status(status.code(), absl::StrCat("posting ", ControlMessageKindName(message),
                                                        " failed: ", status.message())),
               out);
    return;
  }
  ++counters_.posts_failed;
  switch (message.message_case()) {
    case v1::ControlMessage::kInitiateContact:
      if (phase_ == BusPhase::kNegotiating &&
          message.initiate_contact().version_requested() == versions_to_try_[attempt_]) {
        if (protocol::UsesReturnedConnectionId(versions_to_try_[attempt_]) &&
            status.code() == absl::StatusCode::kNotFound) {
          TryNextVersion(absl::StrCat("posting InitiateContact for version ",
                                      protocol::VersionName(versions_to_try_[attempt_]),
                                      " failed: ", status.ToString()),
                         out);
        } else if (suspended_version_ != 0) {
          ResumeFailed(PostFailure(status, "resume", message), out);
        } else {
          DetachAll(PostFailure(status, "version negotiation", message), out);
        }
      }
      return;
    case v1::ControlMessage::kRequestOffers:
      // Without RequestOffers the host sends no offers: the connect cannot complete.
      if (phase_ == BusPhase::kConnected && connect_request_.valid()) {
        DetachAll(PostFailure(status, "offer request", message), out);
      }
      return;
    case v1::ControlMessage::kGpadlCreate:
      GpadlCreateNotPosted(message, status, out);
      return;
    case v1::ControlMessage::kOpenChannel:
      OpenChannelNotPosted(message, status, out);
      return;
    case v1::ControlMessage::kModifyChannel: {
      OfferRecord* rec = FindByRelid(message.modify_channel().child_relid());
      if (rec == nullptr || !rec->modify_request.valid()) return;  // no longer current
      const RequestId id = rec->modify_request;
      rec->modify_request = RequestId();
      Finish(id, PostFailure(status, absl::StrCat("modify of relid ", rec->info.relid), message),
             out);
      return;
    }
    case v1::ControlMessage::kGpadlTeardown:
      GpadlTeardownNotPosted(message, status, out);
      return;
    case v1::ControlMessage::kCloseChannel:
      CloseChannelNotPosted(message, status, out);
      return;
    case v1::ControlMessage::kUnload:
      if (phase_ == BusPhase::kUnloading && unload_request_.valid()) {
        // The host never heard of the unload: the bus stays connected as it was.
        const RequestId id = unload_request_;
        unload_request_ = RequestId();
        phase_ = BusPhase::kConnected;
        Finish(id, PostFailure(status, "unload", message), out);
      }
      return;
    default:
      // RelidReleased: nothing waits for it; the host keeps the relid until it forgets the
      // connection. Host → guest kinds are never posted.
      ++counters_.posts_lost;
      return;
  }
}

void BusState::GpadlCreateNotPosted(const v1::ControlMessage& message, const absl::Status& status,
                                    Actions* out) {
  const uint32_t handle = message.gpadl_create().gpadl();
  GpadlRecord* g = FindGpadl(handle);
  if (g == nullptr || g->state != GpadlState::kCreating) return;  // no longer current
  const RequestId waiter = g->waiter;
  const bool abandoned = g->abandoned;
  OfferRecord* rec = FindOffer(g->offer);
  const uint32_t relid = g->relid;
  // The host never mapped it: the memory goes back at once (ReleaseGpadl).
  EraseGpadl(handle, out);
  if (abandoned) {
    if (waiter.valid()) GpadlWaiterDone(waiter, out);  // a Close waited for it to go
    return;
  }
  if (rec != nullptr && rec->ring_gpadl == handle) {
    const RequestId open = rec->open_request;
    rec->open_request = RequestId();
    rec->ring_gpadl = 0;
    rec->channel = ChannelState::kClosed;
    Finish(open,
           PostFailure(status, absl::StrCat("open of relid ", relid), message,
                       absl::StrCat(" (ring GPADL 0x", absl::Hex(handle), ")")),
           out);
    return;
  }
  Finish(waiter,
         PostFailure(status, absl::StrCat("GPADL 0x", absl::Hex(handle), " for relid ", relid),
                     message),
         out);
}

void BusState::OpenChannelNotPosted(const v1::ControlMessage& message, const absl::Status& status,
                                    Actions* out) {
  const v1::OpenChannel& open_message = message.open_channel();
  OfferRecord* rec = FindByRelid(open_message.child_relid());
  if (rec == nullptr || rec->state != OfferState::kActive ||
      rec->channel != ChannelState::kOpening || rec->open_id != open_message.open_id()) {
    return;  // no longer current
  }
  // The host never saw the open, so it cannot signal the channel: retire it, and take back
  // the ring GPADL the host does hold.
  if (rec->published) out->push_back(RetireChannel{rec->info.id, rec->info.relid});
  rec->published = false;
  if (GpadlRecord* g = FindGpadl(rec->ring_gpadl); g != nullptr) {
    StartTeardown(rec->ring_gpadl, *g, RequestId(), out);
  } else {
    Inconsistent(absl::StrCat("relid ", rec->info.relid, "'s ring GPADL is gone"), out);
  }
  const RequestId open = rec->open_request;
  rec->open_request = RequestId();
  rec->ring_gpadl = 0;
  rec->channel = ChannelState::kClosed;
  Finish(open, PostFailure(status, absl::StrCat("open of relid ", rec->info.relid), message), out);
}

void BusState::GpadlTeardownNotPosted(const v1::ControlMessage& message, const absl::Status& status,
                                      Actions* out) {
  const uint32_t handle = message.gpadl_teardown().gpadl();
  GpadlRecord* g = FindGpadl(handle);
  if (g == nullptr || g->state != GpadlState::kTearingDown) return;  // no longer current
  PendingRequest* req = FindRequest(g->waiter);
  if (req != nullptr && req->kind == RequestKind::kGpadlTeardown) {
    // TeardownGpadl: the host still maps it, so it is created again, exactly as before the
    // call, and the caller may try again.
    const RequestId waiter = g->waiter;
    g->state = GpadlState::kCreated;
    g->waiter = RequestId();
    Finish(
        waiter,
        PostFailure(status,
                    absl::StrCat("teardown of GPADL 0x", absl::Hex(handle), " of relid ", g->relid),
                    message),
        out);
    return;
  }
  // Close's ring GPADL (its CloseChannel reached the host), or one torn down in the background
  // (an abandoned creation, the rings of a failed open): nothing else uses it, so it stays
  // being torn down, the Close (if any) keeps waiting, and the teardown is sent again later
  // (RetryUnsentTeardowns, driven by the runtime with a back-off).
  g->teardown_unsent = true;
  ++counters_.teardowns_unsent;
}

void BusState::CloseChannelNotPosted(const v1::ControlMessage& message, const absl::Status& status,
                                     Actions* out) {
  OfferRecord* rec = FindByRelid(message.close_channel().child_relid());
  if (rec == nullptr || rec->state != OfferState::kActive) return;
  // The host may still have the channel open and write its rings: the ring GPADL whose
  // teardown follows this CloseChannel must stay (PostWanted drops that teardown).
  GpadlRecord* ring = nullptr;
  uint32_t handle = 0;
  for (uint32_t h : rec->gpadls) {
    GpadlRecord* g = FindGpadl(h);
    if (g != nullptr && g->ring && g->state == GpadlState::kTearingDown) {
      ring = g;
      handle = h;
    }
  }
  if (ring == nullptr) return;  // no longer current
  ring->state = GpadlState::kCreated;
  ring->waiter = RequestId();
  ++counters_.gpadls_stranded;
  if (!rec->close_request.valid()) return;  // a timed-out open's CloseChannel: nobody waits
  const RequestId close = rec->close_request;
  rec->close_request = RequestId();
  rec->channel = ChannelState::kClosed;
  Finish(close,
         PostFailure(status, absl::StrCat("close of relid ", rec->info.relid), message,
                     absl::StrCat("; the channel no longer dispatches, but the host may still "
                                  "hold it open, so ring GPADL 0x",
                                  absl::Hex(handle),
                                  " stays mapped until the host rescinds the channel or the bus "
                                  "disconnects")),
         out);
}

void BusState::OnPosted(RequestId request, Actions* out) {
  const PendingRequest* req = FindRequest(request);
  if (req == nullptr || req->kind != RequestKind::kModifyChannel) return;
  if (OfferRecord* rec = FindOffer(req->offer); rec != nullptr && rec->modify_request == request) {
    rec->modify_request = RequestId();
  }
  Finish(request, absl::OkStatus(), out);
}

size_t BusState::unsent_teardowns() const {
  size_t n = 0;
  for (const auto& [handle, g] : gpadls_) n += g.teardown_unsent;
  return n;
}

void BusState::RetryUnsentTeardowns(Actions* out) {
  if (phase_ != BusPhase::kConnected) return;  // an unload or a lost link drops them anyway
  for (auto& [handle, g] : gpadls_) {
    if (!g.teardown_unsent || g.state != GpadlState::kTearingDown) continue;
    g.teardown_unsent = false;
    v1::ControlMessage m;
    m.mutable_gpadl_teardown()->set_child_relid(g.relid);
    m.mutable_gpadl_teardown()->set_gpadl(handle);
    Send(std::move(m), out);
  }
}

bool BusState::PostWanted(const v1::ControlMessage& message) const {
  switch (message.message_case()) {
    case v1::ControlMessage::kOpenChannel: {
      const uint32_t relid = message.open_channel().child_relid();
      const OfferId id = relid < protocol::kRelidCount ? relid_index_[relid] : OfferId();
      const OfferRecord* rec = FindOffer(id);
      return rec != nullptr && rec->channel == ChannelState::kOpening && rec->published &&
             rec->open_id == message.open_channel().open_id();
    }
    case v1::ControlMessage::kGpadlTeardown: {
      auto g = gpadls_.find(message.gpadl_teardown().gpadl());
      return g != gpadls_.end() && g->second.state == GpadlState::kTearingDown;
    }
    case v1::ControlMessage::kGpadlCreate: {
      auto g = gpadls_.find(message.gpadl_create().gpadl());
      return g != gpadls_.end() && g->second.state == GpadlState::kCreating;
    }
    default:
      return true;
  }
}

}  // namespace vbus
