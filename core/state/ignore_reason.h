// IgnoreReason: why the bus state machine ignored a host message.
//
// A hostile or buggy host must never crash the guest or wedge the bus: every host message the
// state machine cannot accept is dropped, counted under one of these reasons, and reported as
// an InputIgnored action carrying a Status that names what was wrong. The bus stays usable.
#ifndef VBUS_CORE_STATE_IGNORE_REASON_H_
#define VBUS_CORE_STATE_IGNORE_REASON_H_

#include <cstddef>

#include "absl/strings/string_view.h"

namespace vbus {

enum class IgnoreReason {
  // The ControlMessage has no field set.
  kMalformedMessage,
  // A kind only guests send (InitiateContact, OpenChannel, …) arrived from the host.
  kGuestToHostKind,
  // Anything but VersionResponse before a version was agreed (or after the bus disconnected).
  kNotNegotiated,
  // VersionResponse with no InitiateContact waiting (e.g. a second answer).
  kUnexpectedVersionResponse,
  // AllOffersDelivered when all offers were already delivered.
  kUnexpectedAllOffersDelivered,
  // Offer checks (core/state/offer_validation.h and the bus's own linkage checks).
  kOfferRelidOutOfRange,
  kOfferBadGuid,
  kOfferBadMonitorId,
  kOfferFieldOutOfRange,
  kOfferDuplicateRelid,
  kOfferDuplicateInstance,
  kSubChannelWithoutPrimary,
  // An isolated guest's refusal of a device class it does not accept (docs/protocol.md §4).
  kOfferNotAllowedIsolated,
  // RescindOffer for a relid with no offer, or one already rescinded.
  kRescindUnknownRelid,
  kRescindRepeated,
  // OpenResult for a relid with no offer, or one not waiting for this open.
  kOpenResultUnknownRelid,
  kOpenResultUnexpected,
  // GpadlCreated / GpadlTorndown naming no live GPADL, or one not waiting for this answer.
  kGpadlCreatedUnknown,
  kGpadlCreatedUnexpected,
  kGpadlTorndownUnknown,
  kGpadlTorndownUnexpected,
  // ModifyChannelResponse with no ModifyChannel waiting (or below 5.3).
  kModifyResponseUnexpected,
  // UnloadResponse with no Unload waiting.
  kUnloadResponseUnexpected,
  // TlConnectResult: vbus sends no TlConnectRequest (it does not use hv_sock yet), so no
  // result is ever expected.
  kTlConnectResultUnexpected,
  // Handling the message found the state machine's own tables disagreeing (a bug in vbus; the
  // message is dropped instead of crashing the guest).
  kInternalInconsistency,
};

inline constexpr size_t kIgnoreReasonCount =
    static_cast<size_t>(IgnoreReason::kInternalInconsistency) + 1;

// IgnoreReasonName
// A stable snake_case name ("offer_relid_out_of_range") for logs, counters and tests.
absl::string_view IgnoreReasonName(IgnoreReason reason);

}  // namespace vbus

#endif  // VBUS_CORE_STATE_IGNORE_REASON_H_
