// OfferInfo and ValidateOffer: the checked form of a host's Offer message.
//
// The host's v1::Offer is untrusted. ValidateOffer checks everything that can be checked
// from the message alone — relid range, GUID syntax, monitor id, field widths — and returns
// an OfferInfo with native types, or the reason to ignore the offer. Checks that need the
// bus's other offers (duplicates, sub-channel linkage) are the bus state machine's
// (core/state/bus_state.h).
//
// Example:
//   IgnoreReason reason;
//   absl::StatusOr<OfferInfo> offer = ValidateOffer(msg.offer(), &reason);
//   if (!offer.ok()) { Count(reason); Log(offer.status()); return; }
#ifndef VBUS_CORE_STATE_OFFER_VALIDATION_H_
#define VBUS_CORE_STATE_OFFER_VALIDATION_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/data/guid.h"
#include "core/state/bus_ids.h"
#include "core/state/ignore_reason.h"
#include "proto/control.pb.h"

namespace vbus {

// OfferInfo
// One validated offer. Invariants (guaranteed by ValidateOffer): 1 <= relid <= 2047;
// monitor_id < 128 (and 0 unless monitor_allocated); user_defined.size() <= 120; flags and
// every other field fit their wire width.
struct OfferInfo {
  // Assigned by the bus state machine when it accepts the offer; never reused.
  OfferId id;
  // For a sub-channel, the OfferId of its primary at the time it was offered (invalid for
  // primaries). The primary may since have been rescinded: see BusState::GetChannel.
  OfferId primary;
  uint32_t relid = 0;
  Guid interface_type;
  Guid interface_instance;
  // 0 for a primary channel; 1.. for its sub-channels.
  uint16_t sub_channel_index = 0;
  // chn_flags (see proto/control.proto).
  uint32_t flags = 0;
  uint16_t mmio_megabytes = 0;
  // The device-defined bytes as sent (at most 120; shorter means zero-padded).
  std::string user_defined;
  // Signalling: through the monitor pages (monitor_allocated, monitor_id), or the channel's
  // connection id; dedicated_interrupt = no shared send-flag bit.
  bool monitor_allocated = false;
  uint8_t monitor_id = 0;
  bool dedicated_interrupt = false;
  uint32_t connection_id = 0;
  // The wire fields vbus does not interpret, carried as sent (proto/control.proto, Offer):
  // interrupt latency and the reserved u64, the u16 after sub_channel_index, and the reserved
  // bits beside monitor_allocated (7) and dedicated_interrupt (15), shifted down.
  uint64_t interrupt_latency = 0;
  uint64_t reserved = 0;
  uint16_t mmio_megabytes_optional = 0;
  uint8_t monitor_allocated_reserved_bits = 0;
  uint16_t dedicated_interrupt_reserved_bits = 0;

  bool is_sub_channel() const { return sub_channel_index != 0; }
};

// ValidateOffer
// Returns the OfferInfo for `offer` (with id and primary unset), or InvalidArgument naming the
// field and value that are wrong; then *reason (if non-null) says which IgnoreReason applies:
//   relid 0 or >= 2048                        → kOfferRelidOutOfRange
//   interface_type / interface_instance text  → kOfferBadGuid
//   monitor_allocated and monitor_id >= 128   → kOfferBadMonitorId
//   flags, sub_channel_index, mmio_megabytes or mmio_megabytes_optional > 0xFFFF,
//   user_defined > 120 bytes, monitor_allocated_reserved_bits > 0x7F,
//   dedicated_interrupt_reserved_bits > 0x7FFF
//                                             → kOfferFieldOutOfRange
// A monitor_id without monitor_allocated is meaningless and becomes 0 (not an error: hosts
// leave junk there). Pure function; thread-safe.
absl::StatusOr<OfferInfo> ValidateOffer(const v1::Offer& offer, IgnoreReason* reason);

// AllowedInIsolatedGuest
// Whether an isolated (confidential) guest accepts the offer: storage (SCSI), network, PCI
// pass-through, time sync, heartbeat and shutdown by class, and hv_sock offers (flag
// kOfferFlagTlnpiProvider) of any class (docs/protocol.md §4). Pure function.
bool AllowedInIsolatedGuest(const OfferInfo& offer);

}  // namespace vbus

#endif  // VBUS_CORE_STATE_OFFER_VALIDATION_H_
