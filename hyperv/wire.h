// The binary VMBus codec: vbus.v1 ControlMessages to and from Hyper-V's channel messages.
//
// On Hyper-V a control message travels as the payload of a SynIC message, at most 240 bytes,
// packed little-endian, starting with an 8-byte header (message type u32, padding u32). This
// header turns each neutral ControlMessage (proto/control.proto) into those bytes and back, in
// both directions (a guest encodes its requests and decodes the host's; a host, or a fake
// hypervisor bridging to the mock host, does the opposite). The layouts, versions and limits
// are in docs/wire.md §1; the decoder's hardening in §2.
//
// - GUIDs: the neutral text form on one side, Hyper-V's mixed-endian 16 bytes on the other
//   (core/data/guid.h).
// - Version-dependent fields: INITIATE_CONTACT's 8 bytes at offset 16 are the interrupt page
//   below 5.0 and SINT/VTL/feature flags from 5.0, chosen by the message's own
//   version_requested. The 6.0 extensions (InitiateContact.client_id,
//   VersionResponse.supported_features, OpenChannel.connection_id/event_flag/open_flags) and
//   the 5.2 TlConnectRequest.silo_id are longer forms of their messages: a field that is set
//   selects the longer form when encoding; a message long enough for it carries it when
//   decoding.
// - GpadlCreate is the one neutral message that becomes several wire messages: a GPADL_HEADER
//   with up to 26 PFNs and GPADL_BODY messages with up to 28 each. DecodeMessage returns such
//   a part as it is; a GpadlReassembler (or WireDecoder, which holds one) joins the parts.
// - An offer round-trips byte for byte: every one of its 196 bytes but the header's padding
//   is carried by a field of v1::Offer.
//
// Decoding trusts nothing: the payload is copied to private memory first and every field is
// read once from the copy; type, length, relid, monitor id, GPADL geometry and field widths are
// checked, and a violation is InvalidArgument naming the message type, the field and the value.
// Encoding applies the same checks, so whatever encodes also decodes to the same message.
//
// Example (a guest's receive path):
//   WireDecoder decoder;
//   absl::StatusOr<std::optional<v1::ControlMessage>> m = decoder.Decode(slot_payload);
//   if (!m.ok()) { Count(m.status()); return; }      // dropped, the bus goes on
//   if (m->has_value()) bus.OnHostMessage(**m);      // nullopt: part of a GPADL, more to come
// and its send path:
//   absl::StatusOr<std::vector<WireMessage>> parts = EncodeMessage(message);
//   for (const WireMessage& part : *parts) Post(part);
#ifndef VBUS_HYPERV_WIRE_H_
#define VBUS_HYPERV_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "proto/control.pb.h"

namespace vbus::hyperv {

// Channel message types (docs/wire.md §1). 18–20 exist but are never used by guests;
// vbus neither sends nor accepts them.
enum class WireType : uint32_t {
  kInvalid = 0,
  kOfferChannel = 1,
  kRescindChannelOffer = 2,
  kRequestOffers = 3,
  kAllOffersDelivered = 4,
  kOpenChannel = 5,
  kOpenChannelResult = 6,
  kCloseChannel = 7,
  kGpadlHeader = 8,
  kGpadlBody = 9,
  kGpadlCreated = 10,
  kGpadlTeardown = 11,
  kGpadlTorndown = 12,
  kRelidReleased = 13,
  kInitiateContact = 14,
  kVersionResponse = 15,
  kUnload = 16,
  kUnloadResponse = 17,
  kTlConnectRequest = 21,
  kModifyChannel = 22,
  kTlConnectResult = 23,
  kModifyChannelResponse = 24,
};
// Types at or above this are out of range.
inline constexpr uint32_t kWireTypeCount = 25;

// WireTypeName
// "OFFERCHANNEL", "GPADL_BODY", …; "type N" for numbers that name no message vbus knows.
std::string WireTypeName(uint32_t type);

// Sizes, in bytes, of the message forms (header included; docs/wire.md §1).
inline constexpr size_t kWireHeaderBytes = 8;
inline constexpr size_t kOfferChannelBytes = 196;
inline constexpr size_t kOpenChannelBytes = 148;
inline constexpr size_t kOpenChannelLongBytes = 156;  // 6.0: connection id, event flag, flags
inline constexpr size_t kInitiateContactBytes = 40;
inline constexpr size_t kInitiateContactLongBytes = 56;  // 6.0: client id
inline constexpr size_t kVersionResponseBytes = 16;
inline constexpr size_t kVersionResponseLongBytes = 20;  // 6.0: supported features
inline constexpr size_t kTlConnectRequestBytes = 40;
inline constexpr size_t kTlConnectRequestLongBytes = 56;  // 5.2: silo id
inline constexpr size_t kTlConnectResultBytes = 44;
inline constexpr size_t kGpadlHeaderFixedBytes = 20;  // before the range
inline constexpr size_t kGpadlBodyFixedBytes = 16;    // before the PFNs

// MinimumWireSize
// The fewest bytes a message of `type` may have (its short form; for GPADL_HEADER and
// GPADL_BODY the part before the PFNs), or 0 for a type vbus does not accept. Longer messages
// are accepted: newer hosts append fields.
size_t MinimumWireSize(uint32_t type);

// One wire message: the SynIC payload, 8 to 240 bytes.
using WireMessage = std::vector<uint8_t>;

// EncodeMessage
// The wire messages carrying `message`, in sending order: one for every kind but GpadlCreate,
// which becomes a GPADL_HEADER and as many GPADL_BODY messages as its PFNs need (at most 293
// in all). Reserved and padding bytes are written 0, GPADL_BODY message numbers 0 (as Linux
// does). InvalidArgument, naming the field, for a message that cannot be encoded: an empty
// ControlMessage, a malformed GUID, a value wider than its wire field, a relid outside
// 1..2047, a monitor id of 128 or more on a monitored offer, a GPADL whose geometry is not one
// range of 1..8190 whole pages, device-defined bytes over 120, a version-dependent field that
// the message's version does not have (interrupt_page from 5.0, SINT/VTL/feature flags below
// 5.0, client_id below 6.0), event_flag or open_flags without connection_id. Pure function;
// thread-safe.
absl::StatusOr<std::vector<WireMessage>> EncodeMessage(const v1::ControlMessage& message);

// The two parts of a GPADL as DecodeMessage returns them, before reassembly.
struct GpadlHeaderPart {
  uint32_t child_relid = 0;
  uint32_t gpadl = 0;
  uint32_t byte_count = 0;
  uint32_t byte_offset = 0;
  // How many PFNs the whole GPADL has (from its range; 1..8190).
  uint32_t total_pfns = 0;
  // The PFNs this message carries (1..26, and at most total_pfns).
  std::vector<uint64_t> pfns;
};
struct GpadlBodyPart {
  // msgnumber: carried for inspection; Linux leaves it 0 and vbus does not check it.
  uint32_t message_number = 0;
  uint32_t gpadl = 0;
  // 1..28 PFNs.
  std::vector<uint64_t> pfns;
};
using DecodedMessage = std::variant<v1::ControlMessage, GpadlHeaderPart, GpadlBodyPart>;

// DecodeMessage
// Decodes one wire message (`payload`: the SynIC payload, its length the message's). Returns a
// ControlMessage for every type but GPADL_HEADER and GPADL_BODY, whose parts need reassembly.
// InvalidArgument names what was wrong (docs/wire.md §2): a payload over 240 bytes or
// shorter than the header, type 0, a type of 25 or more or one of 18–20, a message shorter than
// its type's minimum, a relid outside 1..2047, a monitored offer's monitor id of 128 or more, a
// GPADL handle of 0, a GPADL_HEADER whose range count is not 1 or whose range is not whole
// pages within 8190 (range_buflen not 8 + 8 × pages, byte_offset of 4096 or more, byte_count
// 0), a GPADL part with no PFN or a length that is not a whole number of PFNs. The payload is
// copied once before any field is read, so a peer changing it meanwhile changes nothing.
// Stateless; thread-safe.
absl::StatusOr<DecodedMessage> DecodeMessage(absl::Span<const uint8_t> payload);

// GpadlReassembler
// Joins GPADL_HEADER and GPADL_BODY parts into GpadlCreate messages. Keeps, per GPADL handle
// being assembled, the header's fields and the PFNs so far; a GPADL completes when it has all
// the PFNs its range promised. Bounded: at most `max_pending_gpadls` GPADLs in assembly and
// `max_pending_pfns` PFNs among them (ResourceExhausted past either). A part that does not fit
// (a header for a handle already in assembly, a body for none, a body with more PFNs than
// remain) is InvalidArgument, and the GPADL it names is dropped, so a hostile peer cannot
// leave half a GPADL behind. Not thread-safe: one per receiving direction.
class GpadlReassembler {
 public:
  struct Limits {
    size_t max_pending_gpadls = 64;
    size_t max_pending_pfns = 64 * 8190;
  };
  GpadlReassembler() : GpadlReassembler(Limits{}) {}
  explicit GpadlReassembler(Limits limits) : limits_(limits) {}

  // Add
  // Takes one part. Returns the GpadlCreate it completes, or nullopt if more parts are due.
  absl::StatusOr<std::optional<v1::GpadlCreate>> Add(GpadlHeaderPart part);
  absl::StatusOr<std::optional<v1::GpadlCreate>> Add(GpadlBodyPart part);

  // Forget / Clear
  // Drops one GPADL in assembly (its channel went away) or all of them (unload, link loss).
  void Forget(uint32_t gpadl);
  void Clear();

  // GPADLs in assembly and the PFNs they hold.
  size_t pending_gpadls() const { return pending_.size(); }
  size_t pending_pfns() const { return pending_pfns_; }

 private:
  struct Pending {
    v1::GpadlCreate message;  // everything but the PFNs still due
    uint32_t total_pfns = 0;
  };
  void Erase(uint32_t gpadl);

  Limits limits_;
  absl::flat_hash_map<uint32_t, Pending> pending_;
  // Reserved at the header: the whole GPADL's PFN count, for every GPADL in assembly.
  size_t pending_pfns_ = 0;
};

// WireDecoder
// DecodeMessage plus a GpadlReassembler: one wire message in, a complete ControlMessage out,
// or nullopt when the message was a GPADL part and the GPADL is not complete yet. Errors are
// DecodeMessage's and the reassembler's. Not thread-safe: one per receiving direction.
class WireDecoder {
 public:
  WireDecoder() = default;
  explicit WireDecoder(GpadlReassembler::Limits limits) : gpadls_(limits) {}

  absl::StatusOr<std::optional<v1::ControlMessage>> Decode(absl::Span<const uint8_t> payload);

  GpadlReassembler& gpadls() { return gpadls_; }

 private:
  GpadlReassembler gpadls_;
};

}  // namespace vbus::hyperv

#endif  // VBUS_HYPERV_WIRE_H_
