#include "hyperv/wire.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data/guid.h"
#include "core/data/protocol.h"
#include "hyperv/wire_internal.h"

namespace vbus::hyperv {

using wire_internal::CheckGpadlHandle;
using wire_internal::CheckRelid;
using wire_internal::CheckWidth;
using wire_internal::ParseGuid;
using wire_internal::WireCopy;
using wire_internal::WireWriter;

namespace wire_internal {

v1::Guid WireCopy::GuidAt(size_t at) const {
  uint8_t wire[16] = {};
  for (size_t i = 0; i < 16; ++i) wire[i] = U8(at + i);
  v1::Guid g;
  g.set_value(Guid::FromWire(wire).ToString());
  return g;
}

absl::Status CheckRelid(WireType type, const char* field, uint32_t relid) {
  if (protocol::IsValidRelid(relid)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(WireTypeName(static_cast<uint32_t>(type)), ": ",
                                                 field, " ", relid, " is outside ",
                                                 protocol::kMinRelid, "..", protocol::kMaxRelid));
}

absl::Status CheckWidth(WireType type, const char* field, uint64_t value, uint64_t max) {
  if (value <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(WireTypeName(static_cast<uint32_t>(type)), ": ",
                                                 field, " ", value, " does not fit its wire field",
                                                 " (at most ", max, ")"));
}

absl::Status CheckGpadlHandle(WireType type, uint32_t gpadl) {
  if (gpadl != 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(WireTypeName(static_cast<uint32_t>(type)), ": GPADL handle 0 names no GPADL"));
}

absl::StatusOr<Guid> ParseGuid(WireType type, const char* field, const v1::Guid& guid) {
  absl::StatusOr<Guid> g = Guid::Parse(guid.value());
  if (g.ok()) return g;
  return absl::InvalidArgumentError(absl::StrCat(WireTypeName(static_cast<uint32_t>(type)), ": ",
                                                 field, ": ", g.status().message()));
}

}  // namespace wire_internal

std::string WireTypeName(uint32_t type) {
  switch (static_cast<WireType>(type)) {
    case WireType::kInvalid:
      return "INVALID";
    case WireType::kOfferChannel:
      return "OFFERCHANNEL";
    case WireType::kRescindChannelOffer:
      return "RESCIND_CHANNELOFFER";
    case WireType::kRequestOffers:
      return "REQUESTOFFERS";
    case WireType::kAllOffersDelivered:
      return "ALLOFFERS_DELIVERED";
    case WireType::kOpenChannel:
      return "OPENCHANNEL";
    case WireType::kOpenChannelResult:
      return "OPENCHANNEL_RESULT";
    case WireType::kCloseChannel:
      return "CLOSECHANNEL";
    case WireType::kGpadlHeader:
      return "GPADL_HEADER";
    case WireType::kGpadlBody:
      return "GPADL_BODY";
    case WireType::kGpadlCreated:
      return "GPADL_CREATED";
    case WireType::kGpadlTeardown:
      return "GPADL_TEARDOWN";
    case WireType::kGpadlTorndown:
      return "GPADL_TORNDOWN";
    case WireType::kRelidReleased:
      return "RELID_RELEASED";
    case WireType::kInitiateContact:
      return "INITIATE_CONTACT";
    case WireType::kVersionResponse:
      return "VERSION_RESPONSE";
    case WireType::kUnload:
      return "UNLOAD";
    case WireType::kUnloadResponse:
      return "UNLOAD_RESPONSE";
    case WireType::kTlConnectRequest:
      return "TL_CONNECT_REQUEST";
    case WireType::kModifyChannel:
      return "MODIFYCHANNEL";
    case WireType::kTlConnectResult:
      return "TL_CONNECT_RESULT";
    case WireType::kModifyChannelResponse:
      return "MODIFYCHANNEL_RESPONSE";
  }
  return absl::StrCat("type ", type);
}

size_t MinimumWireSize(uint32_t type) {
  switch (static_cast<WireType>(type)) {
    case WireType::kOfferChannel:
      return kOfferChannelBytes;
    case WireType::kRescindChannelOffer:
    case WireType::kCloseChannel:
    case WireType::kGpadlTorndown:
    case WireType::kRelidReleased:
      return 12;
    case WireType::kRequestOffers:
    case WireType::kAllOffersDelivered:
    case WireType::kUnload:
    case WireType::kUnloadResponse:
      return kWireHeaderBytes;
    case WireType::kOpenChannel:
      return kOpenChannelBytes;
    case WireType::kOpenChannelResult:
    case WireType::kGpadlCreated:
      return 20;
    case WireType::kGpadlHeader:
      return kGpadlHeaderFixedBytes;
    case WireType::kGpadlBody:
      return kGpadlBodyFixedBytes;
    case WireType::kGpadlTeardown:
    case WireType::kModifyChannel:
    case WireType::kModifyChannelResponse:
      return 16;
    case WireType::kInitiateContact:
      return kInitiateContactBytes;
    case WireType::kVersionResponse:
      return kVersionResponseBytes;
    case WireType::kTlConnectRequest:
      return kTlConnectRequestBytes;
    case WireType::kTlConnectResult:
      return kTlConnectResultBytes;
    case WireType::kInvalid:
      break;
  }
  return 0;
}

namespace {

// ---- Encoding -------------------------------------------------------------------------------

// A message of one fixed form: the writer, or the reason it cannot be encoded.
using Encoded = absl::StatusOr<WireMessage>;

Encoded EncodeOffer(const v1::Offer& m) {
  constexpr WireType t = WireType::kOfferChannel;
  absl::StatusOr<Guid> type = ParseGuid(t, "interface_type", m.interface_type());
  if (!type.ok()) return type.status();
  absl::StatusOr<Guid> instance = ParseGuid(t, "interface_instance", m.interface_instance());
  if (!instance.ok()) return instance.status();
  for (absl::Status s : {
           CheckRelid(t, "child_relid", m.child_relid()),
           CheckWidth(t, "flags", m.flags(), protocol::kMaxOfferFlags),
           CheckWidth(t, "mmio_megabytes", m.mmio_megabytes(), protocol::kMaxMmioMegabytes),
           CheckWidth(t, "user_defined bytes", m.user_defined().size(),
                      protocol::kUserDefinedBytes),
           CheckWidth(t, "sub_channel_index", m.sub_channel_index(), protocol::kMaxSubChannelIndex),
           CheckWidth(t, "mmio_megabytes_optional", m.mmio_megabytes_optional(),
                      protocol::kMaxMmioMegabytes),
           CheckWidth(t, "monitor_id", m.monitor_id(),
                      m.monitor_allocated() ? protocol::kMonitorIdCount - 1 : 0xFF),
           CheckWidth(t, "monitor_allocated_reserved_bits", m.monitor_allocated_reserved_bits(),
                      protocol::kMaxMonitorAllocatedReservedBits),
           CheckWidth(t, "dedicated_interrupt_reserved_bits", m.dedicated_interrupt_reserved_bits(),
                      protocol::kMaxDedicatedInterruptReservedBits),
       }) {
    if (!s.ok()) return s;
  }
  WireWriter w(t, kOfferChannelBytes);
  w.GuidAt(8, *type);
  w.GuidAt(24, *instance);
  w.U64(40, m.interrupt_latency());
  w.U64(48, m.reserved());
  w.U16(56, static_cast<uint16_t>(m.flags()));
  w.U16(58, static_cast<uint16_t>(m.mmio_megabytes()));
  w.Bytes(60, m.user_defined());
  w.U16(180, static_cast<uint16_t>(m.sub_channel_index()));
  w.U16(182, static_cast<uint16_t>(m.mmio_megabytes_optional()));
  w.U32(184, m.child_relid());
  w.U8(188, static_cast<uint8_t>(m.monitor_id()));
  w.U8(189, static_cast<uint8_t>(m.monitor_allocated_reserved_bits() << 1 |
                                 (m.monitor_allocated() ? 1 : 0)));
  w.U16(190, static_cast<uint16_t>(m.dedicated_interrupt_reserved_bits() << 1 |
                                   (m.dedicated_interrupt() ? 1 : 0)));
  w.U32(192, m.connection_id());
  return w.Take();
}

Encoded EncodeOpenChannel(const v1::OpenChannel& m) {
  constexpr WireType t = WireType::kOpenChannel;
  for (absl::Status s : {
           CheckRelid(t, "child_relid", m.child_relid()),
           CheckGpadlHandle(t, m.ring_buffer_gpadl()),
           CheckWidth(t, "user_data bytes", m.user_data().size(), protocol::kUserDefinedBytes),
           CheckWidth(t, "event_flag", m.event_flag(), 0xFFFF),
           CheckWidth(t, "open_flags", m.open_flags(), 0xFFFF),
       }) {
    if (!s.ok()) return s;
  }
  if (!m.has_connection_id() && (m.event_flag() != 0 || m.open_flags() != 0)) {
    return absl::InvalidArgumentError(
        "OPENCHANNEL: event_flag and open_flags travel only with connection_id (the 6.0 form)");
  }
  WireWriter w(t, m.has_connection_id() ? kOpenChannelLongBytes : kOpenChannelBytes);
  w.U32(8, m.child_relid());
  w.U32(12, m.open_id());
  w.U32(16, m.ring_buffer_gpadl());
  w.U32(20, m.target_vp());
  w.U32(24, m.downstream_ring_page_offset());
  w.Bytes(28, m.user_data());
  if (m.has_connection_id()) {
    w.U32(148, m.connection_id());
    w.U16(152, static_cast<uint16_t>(m.event_flag()));
    w.U16(154, static_cast<uint16_t>(m.open_flags()));
  }
  return w.Take();
}

Encoded EncodeInitiateContact(const v1::InitiateContact& m) {
  constexpr WireType t = WireType::kInitiateContact;
  const uint32_t version = m.version_requested();
  const std::string v = protocol::VersionName(version);
  if (protocol::UsesReturnedConnectionId(version)) {
    if (m.interrupt_page() != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("INITIATE_CONTACT: interrupt_page is set, but version ", v,
                       " has none (below 5.0 only)"));
    }
    for (absl::Status s : {CheckWidth(t, "message_sint", m.message_sint(), 0xFF),
                           CheckWidth(t, "message_vtl", m.message_vtl(), 0xFF)}) {
      if (!s.ok()) return s;
    }
  } else if (m.message_sint() != 0 || m.message_vtl() != 0 || m.feature_flags() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("INITIATE_CONTACT: message_sint, message_vtl and feature_flags exist from "
                     "5.0; version ",
                     v, " carries the interrupt page there"));
  }
  Guid client;
  if (m.has_client_id()) {
    if (version < protocol::kVersion6_0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "INITIATE_CONTACT: client_id exists from 6.0; version ", v, " has no such field"));
    }
    absl::StatusOr<Guid> g = ParseGuid(t, "client_id", m.client_id());
    if (!g.ok()) return g.status();
    client = *g;
  }
  WireWriter w(t, m.has_client_id() ? kInitiateContactLongBytes : kInitiateContactBytes);
  w.U32(8, version);
  w.U32(12, m.target_vcpu());
  if (protocol::UsesReturnedConnectionId(version)) {
    w.U8(16, static_cast<uint8_t>(m.message_sint()));
    w.U8(17, static_cast<uint8_t>(m.message_vtl()));
    w.U32(20, m.feature_flags());
  } else {
    w.U64(16, m.interrupt_page());
  }
  w.U64(24, m.monitor_page1());
  w.U64(32, m.monitor_page2());
  if (m.has_client_id()) w.GuidAt(40, client);
  return w.Take();
}

Encoded EncodeVersionResponse(const v1::VersionResponse& m) {
  constexpr WireType t = WireType::kVersionResponse;
  if (absl::Status s = CheckWidth(t, "connection_state", m.connection_state(), 0xFF); !s.ok()) {
    return s;
  }
  WireWriter w(t, m.has_supported_features() ? kVersionResponseLongBytes : kVersionResponseBytes);
  w.U8(8, m.version_supported() ? 1 : 0);
  w.U8(9, static_cast<uint8_t>(m.connection_state()));
  w.U32(12, m.message_connection_id());
  if (m.has_supported_features()) w.U32(16, m.supported_features());
  return w.Take();
}

Encoded EncodeTlConnectRequest(const v1::TlConnectRequest& m) {
  constexpr WireType t = WireType::kTlConnectRequest;
  absl::StatusOr<Guid> endpoint = ParseGuid(t, "guest_endpoint_id", m.guest_endpoint_id());
  if (!endpoint.ok()) return endpoint.status();
  absl::StatusOr<Guid> service = ParseGuid(t, "host_service_id", m.host_service_id());
  if (!service.ok()) return service.status();
  Guid silo;
  if (m.has_silo_id()) {
    absl::StatusOr<Guid> g = ParseGuid(t, "silo_id", m.silo_id());
    if (!g.ok()) return g.status();
    silo = *g;
  }
  WireWriter w(t, m.has_silo_id() ? kTlConnectRequestLongBytes : kTlConnectRequestBytes);
  w.GuidAt(8, *endpoint);
  w.GuidAt(24, *service);
  if (m.has_silo_id()) w.GuidAt(40, silo);
  return w.Take();
}

Encoded EncodeTlConnectResult(const v1::TlConnectResult& m) {
  constexpr WireType t = WireType::kTlConnectResult;
  absl::StatusOr<Guid> endpoint = ParseGuid(t, "guest_endpoint_id", m.guest_endpoint_id());
  if (!endpoint.ok()) return endpoint.status();
  absl::StatusOr<Guid> service = ParseGuid(t, "host_service_id", m.host_service_id());
  if (!service.ok()) return service.status();
  WireWriter w(t, kTlConnectResultBytes);
  w.GuidAt(8, *endpoint);
  w.GuidAt(24, *service);
  w.U32(40, m.status());
  return w.Take();
}

// The messages that are a relid and up to two u32 after it.
Encoded EncodeRelidMessage(WireType t, size_t size, uint32_t relid, uint32_t a = 0,
                           uint32_t b = 0) {
  if (absl::Status s = CheckRelid(t, "child_relid", relid); !s.ok()) return s;
  WireWriter w(t, size);
  w.U32(8, relid);
  if (size >= 16) w.U32(12, a);
  if (size >= 20) w.U32(16, b);
  return w.Take();
}

Encoded EncodeGpadlMessage(WireType t, size_t size, uint32_t relid, uint32_t gpadl,
                           uint32_t status) {
  if (absl::Status s = CheckGpadlHandle(t, gpadl); !s.ok()) return s;
  return EncodeRelidMessage(t, size, relid, gpadl, status);
}

Encoded EncodeSingle(const v1::ControlMessage& m) {
  using M = v1::ControlMessage;
  switch (m.message_case()) {
    case M::kInitiateContact:
      return EncodeInitiateContact(m.initiate_contact());
    case M::kVersionResponse:
      return EncodeVersionResponse(m.version_response());
    case M::kRequestOffers:
      return WireWriter(WireType::kRequestOffers, kWireHeaderBytes).Take();
    case M::kOffer:
      return EncodeOffer(m.offer());
    case M::kAllOffersDelivered:
      return WireWriter(WireType::kAllOffersDelivered, kWireHeaderBytes).Take();
    case M::kRescindOffer:
      return EncodeRelidMessage(WireType::kRescindChannelOffer, 12,
                                m.rescind_offer().child_relid());
    case M::kRelidReleased:
      return EncodeRelidMessage(WireType::kRelidReleased, 12, m.relid_released().child_relid());
    case M::kGpadlCreated: {
      const auto& x = m.gpadl_created();
      return EncodeGpadlMessage(WireType::kGpadlCreated, 20, x.child_relid(), x.gpadl(),
                                x.creation_status());
    }
    case M::kGpadlTeardown: {
      const auto& x = m.gpadl_teardown();
      return EncodeGpadlMessage(WireType::kGpadlTeardown, 16, x.child_relid(), x.gpadl(), 0);
    }
    case M::kGpadlTorndown: {
      constexpr WireType t = WireType::kGpadlTorndown;
      if (absl::Status s = CheckGpadlHandle(t, m.gpadl_torndown().gpadl()); !s.ok()) return s;
      WireWriter w(t, 12);
      w.U32(8, m.gpadl_torndown().gpadl());
      return w.Take();
    }
    case M::kOpenChannel:
      return EncodeOpenChannel(m.open_channel());
    case M::kOpenResult: {
      const auto& x = m.open_result();
      return EncodeRelidMessage(WireType::kOpenChannelResult, 20, x.child_relid(), x.open_id(),
                                x.status());
    }
    case M::kCloseChannel:
      return EncodeRelidMessage(WireType::kCloseChannel, 12, m.close_channel().child_relid());
    case M::kModifyChannel: {
      const auto& x = m.modify_channel();
      return EncodeRelidMessage(WireType::kModifyChannel, 16, x.child_relid(), x.target_vp());
    }
    case M::kModifyChannelResponse: {
      const auto& x = m.modify_channel_response();
      return EncodeRelidMessage(WireType::kModifyChannelResponse, 16, x.child_relid(), x.status());
    }
    case M::kUnload:
      return WireWriter(WireType::kUnload, kWireHeaderBytes).Take();
    case M::kUnloadResponse:
      return WireWriter(WireType::kUnloadResponse, kWireHeaderBytes).Take();
    case M::kTlConnectRequest:
      return EncodeTlConnectRequest(m.tl_connect_request());
    case M::kTlConnectResult:
      return EncodeTlConnectResult(m.tl_connect_result());
    case M::kGpadlCreate:     // several messages: EncodeMessage handles it
    case M::MESSAGE_NOT_SET:  // rejected by EncodeMessage
      break;
  }
  return absl::InvalidArgumentError("a ControlMessage with no message set cannot be encoded");
}

// ---- Decoding -------------------------------------------------------------------------------

using Decoded = absl::StatusOr<DecodedMessage>;

Decoded DecodeOffer(const WireCopy& in) {
  constexpr WireType t = WireType::kOfferChannel;
  v1::ControlMessage out;
  v1::Offer& m = *out.mutable_offer();
  m.set_child_relid(in.U32(184));
  if (absl::Status s = CheckRelid(t, "child_relid", m.child_relid()); !s.ok()) return s;
  const uint8_t monitor_byte = in.U8(189);
  const uint16_t interrupt_word = in.U16(190);
  m.set_monitor_id(in.U8(188));
  m.set_monitor_allocated((monitor_byte & 1) != 0);
  if (m.monitor_allocated()) {
    if (absl::Status s = CheckWidth(t, "monitor_id", m.monitor_id(), protocol::kMonitorIdCount - 1);
        !s.ok()) {
      return s;
    }
  }
  *m.mutable_interface_type() = in.GuidAt(8);
  *m.mutable_interface_instance() = in.GuidAt(24);
  m.set_interrupt_latency(in.U64(40));
  m.set_reserved(in.U64(48));
  m.set_flags(in.U16(56));
  m.set_mmio_megabytes(in.U16(58));
  m.set_user_defined(reinterpret_cast<const char*>(in.data(60)), protocol::kUserDefinedBytes);
  m.set_sub_channel_index(in.U16(180));
  m.set_mmio_megabytes_optional(in.U16(182));
  m.set_monitor_allocated_reserved_bits(monitor_byte >> 1);
  m.set_dedicated_interrupt((interrupt_word & 1) != 0);
  m.set_dedicated_interrupt_reserved_bits(interrupt_word >> 1);
  m.set_connection_id(in.U32(192));
  return out;
}

Decoded DecodeOpenChannel(const WireCopy& in) {
  constexpr WireType t = WireType::kOpenChannel;
  v1::ControlMessage out;
  v1::OpenChannel& m = *out.mutable_open_channel();
  m.set_child_relid(in.U32(8));
  m.set_ring_buffer_gpadl(in.U32(16));
  if (absl::Status s = CheckRelid(t, "child_relid", m.child_relid()); !s.ok()) return s;
  if (absl::Status s = CheckGpadlHandle(t, m.ring_buffer_gpadl()); !s.ok()) return s;
  m.set_open_id(in.U32(12));
  m.set_target_vp(in.U32(20));
  m.set_downstream_ring_page_offset(in.U32(24));
  m.set_user_data(reinterpret_cast<const char*>(in.data(28)), protocol::kUserDefinedBytes);
  if (in.size() >= kOpenChannelLongBytes) {
    m.set_connection_id(in.U32(148));
    m.set_event_flag(in.U16(152));
    m.set_open_flags(in.U16(154));
  }
  return out;
}

Decoded DecodeInitiateContact(const WireCopy& in) {
  v1::ControlMessage out;
  v1::InitiateContact& m = *out.mutable_initiate_contact();
  const uint32_t version = in.U32(8);
  m.set_version_requested(version);
  m.set_target_vcpu(in.U32(12));
  if (protocol::UsesReturnedConnectionId(version)) {
    m.set_message_sint(in.U8(16));
    m.set_message_vtl(in.U8(17));
    m.set_feature_flags(in.U32(20));
  } else {
    m.set_interrupt_page(in.U64(16));
  }
  m.set_monitor_page1(in.U64(24));
  m.set_monitor_page2(in.U64(32));
  // The 6.0 form: a 5.x or older request that happens to be longer carries no client id.
  if (version >= protocol::kVersion6_0 && in.size() >= kInitiateContactLongBytes) {
    *m.mutable_client_id() = in.GuidAt(40);
  }
  return out;
}

Decoded DecodeVersionResponse(const WireCopy& in) {
  v1::ControlMessage out;
  v1::VersionResponse& m = *out.mutable_version_response();
  m.set_version_supported(in.U8(8) != 0);
  m.set_connection_state(in.U8(9));
  m.set_message_connection_id(in.U32(12));
  if (in.size() >= kVersionResponseLongBytes) m.set_supported_features(in.U32(16));
  return out;
}

Decoded DecodeTl(const WireCopy& in, WireType t) {
  v1::ControlMessage out;
  if (t == WireType::kTlConnectRequest) {
    v1::TlConnectRequest& m = *out.mutable_tl_connect_request();
    *m.mutable_guest_endpoint_id() = in.GuidAt(8);
    *m.mutable_host_service_id() = in.GuidAt(24);
    if (in.size() >= kTlConnectRequestLongBytes) *m.mutable_silo_id() = in.GuidAt(40);
  } else {
    v1::TlConnectResult& m = *out.mutable_tl_connect_result();
    *m.mutable_guest_endpoint_id() = in.GuidAt(8);
    *m.mutable_host_service_id() = in.GuidAt(24);
    m.set_status(in.U32(40));
  }
  return out;
}

// The messages that are a relid and some u32s: checks the relid (and a GPADL handle at 12 for
// the GPADL ones), then lets `fill` copy the fields.
template <typename Fill>
Decoded DecodeRelidMessage(const WireCopy& in, WireType t, Fill fill) {
  if (absl::Status s = CheckRelid(t, "child_relid", in.U32(8)); !s.ok()) return s;
  if (t == WireType::kGpadlCreated || t == WireType::kGpadlTeardown) {
    if (absl::Status s = CheckGpadlHandle(t, in.U32(12)); !s.ok()) return s;
  }
  v1::ControlMessage out;
  fill(out);
  return out;
}

Decoded DecodeChecked(const WireCopy& in, WireType t) {
  v1::ControlMessage out;
  switch (t) {
    case WireType::kOfferChannel:
      return DecodeOffer(in);
    case WireType::kRescindChannelOffer:
      return DecodeRelidMessage(in, t, [&](v1::ControlMessage& m) {
        m.mutable_rescind_offer()->set_child_relid(in.U32(8));
      });
    case WireType::kRequestOffers:
      out.mutable_request_offers();
      return out;
    case WireType::kAllOffersDelivered:
      out.mutable_all_offers_delivered();
      return out;
    case WireType::kOpenChannel:
      return DecodeOpenChannel(in);
    case WireType::kOpenChannelResult:
      return DecodeRelidMessage(in, t, [&](v1::ControlMessage& m) {
        v1::OpenResult* x = m.mutable_open_result();
        x->set_child_relid(in.U32(8));
        x->set_open_id(in.U32(12));
        x->set_status(in.U32(16));
      });
    case WireType::kCloseChannel:
      return DecodeRelidMessage(in, t, [&](v1::ControlMessage& m) {
        m.mutable_close_channel()->set_child_relid(in.U32(8));
      });
    case WireType::kGpadlHeader: {
      absl::StatusOr<GpadlHeaderPart> part = wire_internal::DecodeGpadlHeader(in);
      if (!part.ok()) return part.status();
      return DecodedMessage(std::move(*part));
    }
    case WireType::kGpadlBody: {
      absl::StatusOr<GpadlBodyPart> part = wire_internal::DecodeGpadlBody(in);
      if (!part.ok()) return part.status();
      return DecodedMessage(std::move(*part));
    }
    case WireType::kGpadlCreated:
      return DecodeRelidMessage(in, t, [&](v1::ControlMessage& m) {
        v1::GpadlCreated* x = m.mutable_gpadl_created();
        x->set_child_relid(in.U32(8));
        x->set_gpadl(in.U32(12));
        x->set_creation_status(in.U32(16));
      });
    case WireType::kGpadlTeardown:
      return DecodeRelidMessage(in, t, [&](v1::ControlMessage& m) {
        m.mutable_gpadl_teardown()->set_child_relid(in.U32(8));
        m.mutable_gpadl_teardown()->set_gpadl(in.U32(12));
      });
    case WireType::kGpadlTorndown:
      if (absl::Status s = CheckGpadlHandle(t, in.U32(8)); !s.ok()) return s;
      out.mutable_gpadl_torndown()->set_gpadl(in.U32(8));
      return out;
    case WireType::kRelidReleased:
      return DecodeRelidMessage(in, t, [&](v1::ControlMessage& m) {
        m.mutable_relid_released()->set_child_relid(in.U32(8));
      });
    case WireType::kInitiateContact:
      return DecodeInitiateContact(in);
    case WireType::kVersionResponse:
      return DecodeVersionResponse(in);
    case WireType::kUnload:
      out.mutable_unload();
      return out;
    case WireType::kUnloadResponse:
      out.mutable_unload_response();
      return out;
    case WireType::kTlConnectRequest:
    case WireType::kTlConnectResult:
      return DecodeTl(in, t);
    case WireType::kModifyChannel:
      return DecodeRelidMessage(in, t, [&](v1::ControlMessage& m) {
        m.mutable_modify_channel()->set_child_relid(in.U32(8));
        m.mutable_modify_channel()->set_target_vp(in.U32(12));
      });
    case WireType::kModifyChannelResponse:
      return DecodeRelidMessage(in, t, [&](v1::ControlMessage& m) {
        m.mutable_modify_channel_response()->set_child_relid(in.U32(8));
        m.mutable_modify_channel_response()->set_status(in.U32(12));
      });
    case WireType::kInvalid:
      break;
  }
  return absl::InternalError("unreachable: every accepted type is decoded above");
}

}  // namespace

absl::StatusOr<std::vector<WireMessage>> EncodeMessage(const v1::ControlMessage& message) {
  if (message.message_case() == v1::ControlMessage::MESSAGE_NOT_SET) {
    return absl::InvalidArgumentError("a ControlMessage with no message set cannot be encoded");
  }
  if (message.has_gpadl_create()) return wire_internal::EncodeGpadlCreate(message.gpadl_create());
  Encoded one = EncodeSingle(message);
  if (!one.ok()) return one.status();
  std::vector<WireMessage> out;
  out.push_back(std::move(*one));
  return out;
}

absl::StatusOr<DecodedMessage> DecodeMessage(absl::Span<const uint8_t> payload) {
  // Length first, before anything is copied or read (docs/wire.md §2).
  if (payload.size() > protocol::kMaxMessagePayloadBytes) {
    return absl::InvalidArgumentError(absl::StrCat("a message of ", payload.size(),
                                                   " bytes is longer than the SynIC payload (",
                                                   protocol::kMaxMessagePayloadBytes, ")"));
  }
  if (payload.size() < kWireHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat("a message of ", payload.size(),
                                                   " bytes is shorter than the ", kWireHeaderBytes,
                                                   "-byte channel-message header"));
  }
  const WireCopy in(payload);  // every read below is from this private copy
  const uint32_t type = in.U32(0);
  if (type == 0) return absl::InvalidArgumentError("message type 0 (INVALID)");
  if (type >= kWireTypeCount) {
    return absl::InvalidArgumentError(absl::StrCat(
        "message type ", type, " is out of range (types are below ", kWireTypeCount, ")"));
  }
  const size_t minimum = MinimumWireSize(type);
  if (minimum == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("message type ", type, " is not one a guest or its host exchanges"));
  }
  if (in.size() < minimum) {
    return absl::InvalidArgumentError(absl::StrCat(WireTypeName(type), " of ", in.size(),
                                                   " bytes is shorter than its ", minimum));
  }
  return DecodeChecked(in, static_cast<WireType>(type));
}

absl::StatusOr<std::optional<v1::ControlMessage>> WireDecoder::Decode(
    absl::Span<const uint8_t> payload) {
  absl::StatusOr<DecodedMessage> decoded = DecodeMessage(payload);
  if (!decoded.ok()) return decoded.status();
  absl::StatusOr<std::optional<v1::GpadlCreate>> gpadl;
  if (auto* header = std::get_if<GpadlHeaderPart>(&*decoded)) {
    gpadl = gpadls_.Add(std::move(*header));
  } else if (auto* body = std::get_if<GpadlBodyPart>(&*decoded)) {
    gpadl = gpadls_.Add(std::move(*body));
  } else {
    return std::optional<v1::ControlMessage>(std::move(std::get<v1::ControlMessage>(*decoded)));
  }
  if (!gpadl.ok()) return gpadl.status();
  if (!gpadl->has_value()) return std::optional<v1::ControlMessage>();
  v1::ControlMessage m;
  *m.mutable_gpadl_create() = std::move(**gpadl);
  return std::optional<v1::ControlMessage>(std::move(m));
}

}  // namespace vbus::hyperv
