#include "core/state/offer_validation.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/data/device_classes.h"
#include "core/data/guid_proto.h"
#include "core/data/protocol.h"

namespace vbus {
namespace {

absl::Status Reject(IgnoreReason why, IgnoreReason* reason, std::string message) {
  if (reason != nullptr) *reason = why;
  return absl::InvalidArgumentError(std::move(message));
}

}  // namespace

bool AllowedInIsolatedGuest(const OfferInfo& offer) {
  if ((offer.flags & protocol::kOfferFlagTlnpiProvider) != 0) return true;  // hv_sock
  for (const Guid& allowed :
       {device_class::kScsi, device_class::kNetwork, device_class::kPciPassthrough,
        device_class::kTimeSync, device_class::kHeartbeat, device_class::kShutdown}) {
    if (offer.interface_type == allowed) return true;
  }
  return false;
}

absl::StatusOr<OfferInfo> ValidateOffer(const v1::Offer& offer, IgnoreReason* reason) {
  const uint32_t relid = offer.child_relid();
  if (!protocol::IsValidRelid(relid)) {
    return Reject(IgnoreReason::kOfferRelidOutOfRange, reason,
                  absl::StrCat("offer with relid ", relid, " is outside ", protocol::kMinRelid,
                               "..", protocol::kMaxRelid));
  }
  absl::StatusOr<Guid> type = GuidFromProto(offer.interface_type());
  if (!type.ok()) {
    return Reject(IgnoreReason::kOfferBadGuid, reason,
                  absl::StrCat("offer of relid ", relid,
                               " has a bad interface_type: ", type.status().message()));
  }
  absl::StatusOr<Guid> instance = GuidFromProto(offer.interface_instance());
  if (!instance.ok()) {
    return Reject(IgnoreReason::kOfferBadGuid, reason,
                  absl::StrCat("offer of relid ", relid,
                               " has a bad interface_instance: ", instance.status().message()));
  }
  if (offer.monitor_allocated() && offer.monitor_id() >= protocol::kMonitorIdCount) {
    return Reject(IgnoreReason::kOfferBadMonitorId, reason,
                  absl::StrCat("offer of relid ", relid, " has monitor id ", offer.monitor_id(),
                               ", not below ", protocol::kMonitorIdCount));
  }
  // Every field the wire carries narrower than the neutral uint32 (docs/wire.md §1).
  const struct {
    const char* name;
    uint32_t value;
    uint32_t max;
  } widths[] = {
      {"flags", offer.flags(), protocol::kMaxOfferFlags},
      {"sub_channel_index", offer.sub_channel_index(), protocol::kMaxSubChannelIndex},
      {"mmio_megabytes", offer.mmio_megabytes(), protocol::kMaxMmioMegabytes},
      {"mmio_megabytes_optional", offer.mmio_megabytes_optional(), protocol::kMaxMmioMegabytes},
      {"monitor_allocated_reserved_bits", offer.monitor_allocated_reserved_bits(),
       protocol::kMaxMonitorAllocatedReservedBits},
      {"dedicated_interrupt_reserved_bits", offer.dedicated_interrupt_reserved_bits(),
       protocol::kMaxDedicatedInterruptReservedBits},
  };
  for (const auto& w : widths) {
    if (w.value > w.max) {
      return Reject(
          IgnoreReason::kOfferFieldOutOfRange, reason,
          absl::StrCat("offer of relid ", relid, " has ", w.name, " ", w.value, ", above ", w.max));
    }
  }
  if (offer.user_defined().size() > protocol::kUserDefinedBytes) {
    return Reject(IgnoreReason::kOfferFieldOutOfRange, reason,
                  absl::StrCat("offer of relid ", relid, " has ", offer.user_defined().size(),
                               " user-defined bytes, more than ", protocol::kUserDefinedBytes));
  }
  OfferInfo info;
  info.relid = relid;
  info.interface_type = *type;
  info.interface_instance = *instance;
  info.sub_channel_index = static_cast<uint16_t>(offer.sub_channel_index());
  info.flags = offer.flags();
  info.mmio_megabytes = static_cast<uint16_t>(offer.mmio_megabytes());
  info.user_defined = offer.user_defined();
  info.monitor_allocated = offer.monitor_allocated();
  info.monitor_id = offer.monitor_allocated() ? static_cast<uint8_t>(offer.monitor_id()) : 0;
  info.dedicated_interrupt = offer.dedicated_interrupt();
  info.connection_id = offer.connection_id();
  info.interrupt_latency = offer.interrupt_latency();
  info.reserved = offer.reserved();
  info.mmio_megabytes_optional = static_cast<uint16_t>(offer.mmio_megabytes_optional());
  info.monitor_allocated_reserved_bits =
      static_cast<uint8_t>(offer.monitor_allocated_reserved_bits());
  info.dedicated_interrupt_reserved_bits =
      static_cast<uint16_t>(offer.dedicated_interrupt_reserved_bits());
  return info;
}

}  // namespace vbus
