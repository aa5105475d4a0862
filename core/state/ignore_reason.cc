#include "core/state/ignore_reason.h"

namespace vbus {

absl::string_view IgnoreReasonName(IgnoreReason reason) {
  switch (reason) {
    case IgnoreReason::kMalformedMessage:
      return "malformed_message";
    case IgnoreReason::kGuestToHostKind:
      return "guest_to_host_kind";
    case IgnoreReason::kNotNegotiated:
      return "not_negotiated";
    case IgnoreReason::kUnexpectedVersionResponse:
      return "unexpected_version_response";
    case IgnoreReason::kUnexpectedAllOffersDelivered:
      return "unexpected_all_offers_delivered";
    case IgnoreReason::kOfferRelidOutOfRange:
      return "offer_relid_out_of_range";
    case IgnoreReason::kOfferBadGuid:
      return "offer_bad_guid";
    case IgnoreReason::kOfferBadMonitorId:
      return "offer_bad_monitor_id";
    case IgnoreReason::kOfferFieldOutOfRange:
      return "offer_field_out_of_range";
    case IgnoreReason::kOfferDuplicateRelid:
      return "offer_duplicate_relid";
    case IgnoreReason::kOfferDuplicateInstance:
      return "offer_duplicate_instance";
    case IgnoreReason::kSubChannelWithoutPrimary:
      return "sub_channel_without_primary";
    case IgnoreReason::kOfferNotAllowedIsolated:
      return "offer_not_allowed_isolated";
    case IgnoreReason::kRescindUnknownRelid:
      return "rescind_unknown_relid";
    case IgnoreReason::kRescindRepeated:
      return "rescind_repeated";
    case IgnoreReason::kOpenResultUnknownRelid:
      return "open_result_unknown_relid";
    case IgnoreReason::kOpenResultUnexpected:
      return "open_result_unexpected";
    case IgnoreReason::kGpadlCreatedUnknown:
      return "gpadl_created_unknown";
    case IgnoreReason::kGpadlCreatedUnexpected:
      return "gpadl_created_unexpected";
    case IgnoreReason::kGpadlTorndownUnknown:
      return "gpadl_torndown_unknown";
    case IgnoreReason::kGpadlTorndownUnexpected:
      return "gpadl_torndown_unexpected";
    case IgnoreReason::kModifyResponseUnexpected:
      return "modify_response_unexpected";
    case IgnoreReason::kUnloadResponseUnexpected:
      return "unload_response_unexpected";
    case IgnoreReason::kTlConnectResultUnexpected:
      return "tl_connect_result_unexpected";
    case IgnoreReason::kInternalInconsistency:
      return "internal_inconsistency";
  }
  return "unknown_reason";
}

}  // namespace vbus
