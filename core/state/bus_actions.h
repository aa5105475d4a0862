// Bus actions: the outputs of the bus state machine (core/state/bus_state.h).
//
// The state machine does no I/O. Each input (a host message, a call, a timer expiry) appends
// Actions to a list, and whoever drives it — the ChannelBus runtime with its control thread,
// or a deterministic simulation — carries them out *in list order*. Order matters: a
// PublishChannel precedes the OpenChannel message that lets the host signal the channel; a
// RetireChannel (which waits until no dispatcher still uses the channel) precedes the
// RelidReleased message that lets the host reuse the relid.
//
// Example (a runtime's executor):
//   for (Action& a : actions) {
//     if (auto* send = std::get_if<SendMessage>(&a)) {
//       if (absl::Status s = backend.PostMessage(send->message); !s.ok())
//         bus.OnPostFailed(send->message, s, &more);
//     } else if (auto* c = std::get_if<Complete>(&a)) {
//       waiters.Wake(c->request, c->status);
//     } ...
//   }
//
// DescribeAction / DescribeControlMessage render them as one-line text for logs and tests.
#ifndef VBUS_CORE_STATE_BUS_ACTIONS_H_
#define VBUS_CORE_STATE_BUS_ACTIONS_H_

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/state/bus_ids.h"
#include "core/state/ignore_reason.h"
#include "core/state/offer_validation.h"
#include "proto/control.pb.h"

namespace vbus {

// The kinds of waiting operation a RequestId can name.
enum class RequestKind {
  kConnect,
  kOpen,
  kClose,
  kGpadlCreate,
  kGpadlTeardown,
  kModifyChannel,
  kUnload,
};
// "connect", "open", "close", "gpadl_create", "gpadl_teardown", "modify_channel", "unload".
absl::string_view RequestKindName(RequestKind kind);

// SendMessage: post this guest → host control message (Backend::PostMessage). If posting
// fails, feed the failure back with BusState::OnPostFailed; once one has failed, ask
// BusState::PostWanted before posting the later messages of the same list. If it succeeds and
// `completes` is valid, feed BusState::OnPosted(completes).
struct SendMessage {
  v1::ControlMessage message;
  RequestId completes;
};

// ConnectionReady: a version was agreed; hand it to the backend (Backend::SetConnection)
// before posting the messages that follow. message_connection_id is the one the host returned
// from 5.0, and 0 below 5.0 ("the backend's fixed connection").
struct ConnectionReady {
  uint32_t version = 0;
  uint32_t message_connection_id = 0;
};

// PublishChannel: make the channel reachable from event dispatch: store it in the channel
// table slot `relid` (release order). Emitted before the OpenChannel message.
struct PublishChannel {
  OfferId offer;
  uint32_t relid = 0;
};

// RetireChannel: clear table slot `relid` and wait until every dispatcher has passed a
// quiescent point; only then carry out the next action. After it, no callback of the channel
// runs again.
struct RetireChannel {
  OfferId offer;
  uint32_t relid = 0;
};

// OfferAdded: a new validated offer (at connect or hot-added); give it to the driver registry.
struct OfferAdded {
  OfferInfo offer;
};

// OfferRemoved: the offer is gone — rescinded by the host, or the connection ended (link lost,
// unloaded). Its channel is already closed and retired. `reason` says why (Unavailable for a
// rescind or a lost link, Cancelled for an unload). When the runtime has finished with the
// channel (the driver's Remove returned), it must call BusState::ReleaseOffer.
struct OfferRemoved {
  OfferId offer;
  uint32_t relid = 0;
  absl::Status reason;
};

// OfferParked: a suspend parked this primary (OfferState::kParked): it is not offered now, but
// keeps its OfferId, and the runtime its channel (closed) and driver, for the resume.
struct OfferParked {
  OfferId offer;
  uint32_t relid = 0;
};

// OfferResumed: after a Resume the host offered again a primary that the suspend parked; it
// keeps its OfferId (and the runtime its channel and driver) but `offer` carries the new relid,
// connection id, monitor id and every other field. The channel is closed and unpublished;
// nothing was published under either relid since the suspend.
struct OfferResumed {
  OfferInfo offer;
  uint32_t old_relid = 0;
};

// ReleaseGpadl: the host no longer maps GPADL `gpadl` (torn down, refused at creation, or its
// channel released): the memory it described may be freed or reused. Emitted exactly once per
// handle the state machine allocated.
struct ReleaseGpadl {
  OfferId offer;
  uint32_t gpadl = 0;
};

// Complete: the operation `request` finished with `status`. For kGpadlCreate on success,
// `gpadl` is the new handle; for kConnect on success, `version` is the agreed version.
struct Complete {
  RequestId request;
  RequestKind kind = RequestKind::kConnect;
  OfferId offer;
  absl::Status status;
  uint32_t gpadl = 0;
  uint32_t version = 0;
};

// ArmTimer / CancelTimer: call BusState::OnTimer(request, now) at or after `deadline`, unless
// cancelled first. Arming an armed timer moves its deadline.
struct ArmTimer {
  RequestId request;
  absl::Time deadline;
};
struct CancelTimer {
  RequestId request;
};

// InputIgnored: a host message was dropped and counted; `status` names what was wrong. For
// logging; nothing else to do.
struct InputIgnored {
  IgnoreReason reason = IgnoreReason::kMalformedMessage;
  absl::Status status;
};

using Action = std::variant<SendMessage, ConnectionReady, PublishChannel, RetireChannel, OfferAdded,
                            OfferRemoved, OfferParked, OfferResumed, ReleaseGpadl, Complete,
                            ArmTimer, CancelTimer, InputIgnored>;
using Actions = std::vector<Action>;

// ControlMessageKindName
// The message kind's name, e.g. "OpenResult"; "Empty" when no field is set.
absl::string_view ControlMessageKindName(const v1::ControlMessage& message);

// DescribeControlMessage
// One line naming the kind and its fields, e.g.
// "OpenChannel{relid=7 open_id=1 gpadl=0xe1e10 target_vp=0 downstream_offset=2 user_data=0B}".
std::string DescribeControlMessage(const v1::ControlMessage& message);

// DescribeAction
// One line per action, e.g. "send CloseChannel{relid=7}", "publish offer=1 relid=7",
// "complete request=2 open offer=1: OK", "ignored open_result_unknown_relid: NOT_FOUND: …".
std::string DescribeAction(const Action& action);

// DescribeActions
// DescribeAction of each action, in order.
std::vector<std::string> DescribeActions(const Actions& actions);

}  // namespace vbus

#endif  // VBUS_CORE_STATE_BUS_ACTIONS_H_
