#include "core/state/bus_actions.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vbus {
namespace {

std::string Hex(uint64_t value) { return absl::StrCat("0x", absl::Hex(value)); }

std::string Version(uint32_t v) { return absl::StrCat(v >> 16, ".", v & 0xFFFF); }

std::string Pfns(const google::protobuf::RepeatedField<uint64_t>& pfns) {
  constexpr int kShown = 8;
  std::vector<std::string> parts;
  for (int i = 0; i < pfns.size() && i < kShown; ++i) parts.push_back(absl::StrCat(pfns[i]));
  if (pfns.size() > kShown) parts.push_back(absl::StrCat("...(", pfns.size(), " pfns)"));
  return absl::StrCat("[", absl::StrJoin(parts, ","), "]");
}

}  // namespace

absl::string_view RequestKindName(RequestKind kind) {
  switch (kind) {
    case RequestKind::kConnect:
      return "connect";
    case RequestKind::kOpen:
      return "open";
    case RequestKind::kClose:
      return "close";
    case RequestKind::kGpadlCreate:
      return "gpadl_create";
    case RequestKind::kGpadlTeardown:
      return "gpadl_teardown";
    case RequestKind::kModifyChannel:
      return "modify_channel";
    case RequestKind::kUnload:
      return "unload";
  }
  return "unknown_request";
}

absl::string_view ControlMessageKindName(const v1::ControlMessage& m) {
  switch (m.message_case()) {
    case v1::ControlMessage::kInitiateContact:
      return "InitiateContact";
    case v1::ControlMessage::kVersionResponse:
      return "VersionResponse";
    case v1::ControlMessage::kRequestOffers:
      return "RequestOffers";
    case v1::ControlMessage::kOffer:
      return "Offer";
    case v1::ControlMessage::kAllOffersDelivered:
      return "AllOffersDelivered";
    case v1::ControlMessage::kRescindOffer:
      return "RescindOffer";
    case v1::ControlMessage::kRelidReleased:
      return "RelidReleased";
    case v1::ControlMessage::kGpadlCreate:
      return "GpadlCreate";
    case v1::ControlMessage::kGpadlCreated:
      return "GpadlCreated";
    case v1::ControlMessage::kGpadlTeardown:
      return "GpadlTeardown";
    case v1::ControlMessage::kGpadlTorndown:
      return "GpadlTorndown";
    case v1::ControlMessage::kOpenChannel:
      return "OpenChannel";
    case v1::ControlMessage::kOpenResult:
      return "OpenResult";
    case v1::ControlMessage::kCloseChannel:
      return "CloseChannel";
    case v1::ControlMessage::kModifyChannel:
      return "ModifyChannel";
    case v1::ControlMessage::kModifyChannelResponse:
      return "ModifyChannelResponse";
    case v1::ControlMessage::kUnload:
      return "Unload";
    case v1::ControlMessage::kUnloadResponse:
      return "UnloadResponse";
    case v1::ControlMessage::kTlConnectRequest:
      return "TlConnectRequest";
    case v1::ControlMessage::kTlConnectResult:
      return "TlConnectResult";
    case v1::ControlMessage::MESSAGE_NOT_SET:
      break;
  }
  return "Empty";
}

std::string DescribeControlMessage(const v1::ControlMessage& m) {
  switch (m.message_case()) {
    case v1::ControlMessage::kInitiateContact: {
      const auto& x = m.initiate_contact();
      return absl::StrCat("InitiateContact{version=", Version(x.version_requested()),
                          " vcpu=", x.target_vcpu(), " sint=", x.message_sint(),
                          " vtl=", x.message_vtl(), " interrupt_page=", Hex(x.interrupt_page()),
                          " monitor1=", Hex(x.monitor_page1()),
                          " monitor2=", Hex(x.monitor_page2()), "}");
    }
    case v1::ControlMessage::kVersionResponse: {
      const auto& x = m.version_response();
      return absl::StrCat("VersionResponse{supported=", x.version_supported() ? 1 : 0,
                          " state=", x.connection_state(), " conn_id=", x.message_connection_id(),
                          "}");
    }
    case v1::ControlMessage::kRequestOffers:
      return "RequestOffers{}";
    case v1::ControlMessage::kOffer: {
      const auto& x = m.offer();
      return absl::StrCat(
          "Offer{relid=", x.child_relid(), " type=", x.interface_type().value(),
          " instance=", x.interface_instance().value(), " sub=", x.sub_channel_index(),
          " flags=", Hex(x.flags()), " conn_id=", x.connection_id(),
          " monitor=", x.monitor_allocated() ? absl::StrCat(x.monitor_id()) : "none",
          " dedicated=", x.dedicated_interrupt() ? 1 : 0, " mmio=", x.mmio_megabytes(), "}");
    }
    case v1::ControlMessage::kAllOffersDelivered:
      return "AllOffersDelivered{}";
    case v1::ControlMessage::kRescindOffer:
      return absl::StrCat("RescindOffer{relid=", m.rescind_offer().child_relid(), "}");
    case v1::ControlMessage::kRelidReleased:
      return absl::StrCat("RelidReleased{relid=", m.relid_released().child_relid(), "}");
    case v1::ControlMessage::kGpadlCreate: {
      const auto& x = m.gpadl_create();
      return absl::StrCat("GpadlCreate{relid=", x.child_relid(), " gpadl=", Hex(x.gpadl()),
                          " bytes=", x.byte_count(), " offset=", x.byte_offset(),
                          " pfns=", Pfns(x.pfns()), "}");
    }
    case v1::ControlMessage::kGpadlCreated: {
      const auto& x = m.gpadl_created();
      return absl::StrCat("GpadlCreated{relid=", x.child_relid(), " gpadl=", Hex(x.gpadl()),
                          " status=", Hex(x.creation_status()), "}");
    }
    case v1::ControlMessage::kGpadlTeardown: {
      const auto& x = m.gpadl_teardown();
      return absl::StrCat("GpadlTeardown{relid=", x.child_relid(), " gpadl=", Hex(x.gpadl()), "}");
    }
    case v1::ControlMessage::kGpadlTorndown:
      return absl::StrCat("GpadlTorndown{gpadl=", Hex(m.gpadl_torndown().gpadl()), "}");
    case v1::ControlMessage::kOpenChannel: {
      const auto& x = m.open_channel();
      return absl::StrCat("OpenChannel{relid=", x.child_relid(), " open_id=", x.open_id(),
                          " gpadl=", Hex(x.ring_buffer_gpadl()), " target_vp=", x.target_vp(),
                          " downstream_offset=", x.downstream_ring_page_offset(),
                          " user_data=", x.user_data().size(), "B}");
    }
    case v1::ControlMessage::kOpenResult: {
      const auto& x = m.open_result();
      return absl::StrCat("OpenResult{relid=", x.child_relid(), " open_id=", x.open_id(),
                          " status=", Hex(x.status()), "}");
    }
    case v1::ControlMessage::kCloseChannel:
      return absl::StrCat("CloseChannel{relid=", m.close_channel().child_relid(), "}");
    case v1::ControlMessage::kModifyChannel: {
      const auto& x = m.modify_channel();
      return absl::StrCat("ModifyChannel{relid=", x.child_relid(), " target_vp=", x.target_vp(),
                          "}");
    }
    case v1::ControlMessage::kModifyChannelResponse: {
      const auto& x = m.modify_channel_response();
      return absl::StrCat("ModifyChannelResponse{relid=", x.child_relid(),
                          " status=", Hex(x.status()), "}");
    }
    case v1::ControlMessage::kUnload:
      return "Unload{}";
    case v1::ControlMessage::kUnloadResponse:
      return "UnloadResponse{}";
    case v1::ControlMessage::kTlConnectRequest: {
      const auto& x = m.tl_connect_request();
      return absl::StrCat("TlConnectRequest{endpoint=", x.guest_endpoint_id().value(),
                          " service=", x.host_service_id().value(),
                          x.has_silo_id() ? absl::StrCat(" silo=", x.silo_id().value()) : "", "}");
    }
    case v1::ControlMessage::kTlConnectResult: {
      const auto& x = m.tl_connect_result();
      return absl::StrCat("TlConnectResult{endpoint=", x.guest_endpoint_id().value(),
                          " service=", x.host_service_id().value(), " status=", Hex(x.status()),
                          "}");
    }
    case v1::ControlMessage::MESSAGE_NOT_SET:
      break;
  }
  return "Empty{}";
}

std::string DescribeAction(const Action& action) {
  struct Visitor {
    std::string operator()(const SendMessage& a) const {
      return absl::StrCat("send ", DescribeControlMessage(a.message));
    }
    std::string operator()(const ConnectionReady& a) const {
      return absl::StrCat("connection_ready version=", Version(a.version),
                          " message_connection_id=", a.message_connection_id);
    }
    std::string operator()(const PublishChannel& a) const {
      return absl::StrCat("publish offer=", a.offer.value(), " relid=", a.relid);
    }
    std::string operator()(const RetireChannel& a) const {
      return absl::StrCat("retire offer=", a.offer.value(), " relid=", a.relid);
    }
    std::string operator()(const OfferAdded& a) const {
      const OfferInfo& o = a.offer;
      std::string text = absl::StrCat("offer_added offer=", o.id.value(), " relid=", o.relid,
                                      " type=", o.interface_type.ToString(),
                                      " instance=", o.interface_instance.ToString());
      if (o.is_sub_channel()) {
        absl::StrAppend(&text, " sub=", o.sub_channel_index, " primary=", o.primary.value());
      }
      return text;
    }
    std::string operator()(const OfferRemoved& a) const {
      return absl::StrCat("offer_removed offer=", a.offer.value(), " relid=", a.relid, ": ",
                          a.reason.ToString());
    }
    std::string operator()(const OfferParked& a) const {
      return absl::StrCat("offer_parked offer=", a.offer.value(), " relid=", a.relid);
    }
    std::string operator()(const OfferResumed& a) const {
      return absl::StrCat("offer_resumed offer=", a.offer.id.value(), " relid=", a.old_relid, "->",
                          a.offer.relid, " connection_id=", Hex(a.offer.connection_id),
                          a.offer.monitor_allocated ? absl::StrCat(" monitor=", a.offer.monitor_id)
                                                    : std::string());
    }
    std::string operator()(const ReleaseGpadl& a) const {
      return absl::StrCat("release_gpadl offer=", a.offer.value(), " gpadl=", Hex(a.gpadl));
    }
    std::string operator()(const Complete& a) const {
      std::string text =
          absl::StrCat("complete request=", a.request.value(), " ", RequestKindName(a.kind));
      if (a.offer.valid()) absl::StrAppend(&text, " offer=", a.offer.value());
      if (a.gpadl != 0) absl::StrAppend(&text, " gpadl=", Hex(a.gpadl));
      if (a.version != 0) absl::StrAppend(&text, " version=", Version(a.version));
      absl::StrAppend(&text, ": ", a.status.ToString());
      return text;
    }
    std::string operator()(const ArmTimer& a) const {
      return absl::StrCat("arm_timer request=", a.request.value(), " at=+",
                          absl::FormatDuration(a.deadline - absl::UnixEpoch()));
    }
    std::string operator()(const CancelTimer& a) const {
      return absl::StrCat("cancel_timer request=", a.request.value());
    }
    std::string operator()(const InputIgnored& a) const {
      return absl::StrCat("ignored ", IgnoreReasonName(a.reason), ": ", a.status.ToString());
    }
  };
  return std::visit(Visitor{}, action);
}

std::vector<std::string> DescribeActions(const Actions& actions) {
  std::vector<std::string> out;
  out.reserve(actions.size());
  for (const Action& a : actions) out.push_back(DescribeAction(a));
  return out;
}

}  // namespace vbus
