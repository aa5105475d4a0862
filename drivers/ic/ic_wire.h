// The wire format every integration component (IC) shares: the pipe header, the icmsg header,
// the flags, the status codes and the framework/message version negotiation
// (docs/integration_components.md §1, §21).
//
// An IC channel carries one IC message per in-band VMBus packet:
//   @0  pipe header (8 bytes): flags u32 (1 = data), msgsize u32 (bytes after the pipe header)
//   @8  icmsg header (20 bytes): framework version, message type, message version,
//       icmsgsize (body bytes), status (an HRESULT), transaction id, flags
//   @28 body (icmsgsize bytes; its layout depends on the message type and version)
// The host sends requests (flags TRANSACTION | REQUEST); the guest answers each with the same
// header, flags TRANSACTION | RESPONSE, a status and a body. The first request on every IC
// channel is NEGOTIATE, which picks one framework and one message version.
//
// Both sides use this library: the guest drivers (drivers/) parse requests and build
// answers, the mock host's emulators (mock/host/ic_host.h) build requests and parse answers.
// Nothing here trusts its input: every parse checks lengths and counts and says what was wrong.
//
// Example (guest side):
//   absl::StatusOr<IcMessage> m = ParseIcMessage(packet_payload);
//   if (!m.ok()) { count and drop }
//   std::vector<uint8_t> answer = BuildResponse(m->header, ic_status::kOk, body);
#ifndef VBUS_DRIVERS_IC_IC_WIRE_H_
#define VBUS_DRIVERS_IC_IC_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vbus::ic {

// Little-endian loads and stores at byte offsets. The caller checks the bounds.
inline uint16_t Load16(absl::Span<const uint8_t> b, size_t at) {
  return static_cast<uint16_t>(b[at] | b[at + 1] << 8);
}
inline uint32_t Load32(absl::Span<const uint8_t> b, size_t at) {
  return uint32_t{Load16(b, at)} | uint32_t{Load16(b, at + 2)} << 16;
}
inline uint64_t Load64(absl::Span<const uint8_t> b, size_t at) {
  return uint64_t{Load32(b, at)} | uint64_t{Load32(b, at + 4)} << 32;
}
inline void Store16(absl::Span<uint8_t> b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v);
  b[at + 1] = static_cast<uint8_t>(v >> 8);
}
inline void Store32(absl::Span<uint8_t> b, size_t at, uint32_t v) {
  Store16(b, at, static_cast<uint16_t>(v));
  Store16(b, at + 2, static_cast<uint16_t>(v >> 16));
}
inline void Store64(absl::Span<uint8_t> b, size_t at, uint64_t v) {
  Store32(b, at, static_cast<uint32_t>(v));
  Store32(b, at + 4, static_cast<uint32_t>(v >> 32));
}

// Sizes and offsets (from the start of the packet payload).
inline constexpr size_t kPipeHeaderSize = 8;
inline constexpr size_t kIcHeaderSize = 20;
inline constexpr size_t kBodyOffset = kPipeHeaderSize + kIcHeaderSize;  // 28
// Pipe header flags: the only kind an IC message uses.
inline constexpr uint32_t kPipeData = 1;

// icflags.
inline constexpr uint8_t kFlagTransaction = 1;
inline constexpr uint8_t kFlagRequest = 2;
inline constexpr uint8_t kFlagResponse = 4;
inline constexpr uint8_t kRequestFlags = kFlagTransaction | kFlagRequest;    // 3
inline constexpr uint8_t kResponseFlags = kFlagTransaction | kFlagResponse;  // 5

// icmsgtype.
enum class MessageType : uint16_t {
  kNegotiate = 0,
  kHeartbeat = 1,
  kKvpExchange = 2,
  kShutdown = 3,
  kTimeSync = 4,
  kVss = 5,
  kFileCopy = 7,
};
// "heartbeat", "kvp", ...; "type 9" for unknown values.
std::string MessageTypeName(uint16_t type);

// Status codes (HRESULTs) in the header's status field.
namespace ic_status {
inline constexpr uint32_t kOk = 0;
inline constexpr uint32_t kFail = 0x80004005;
inline constexpr uint32_t kNoMoreItems = 0x80070103;  // HV_S_CONT: enumeration past the end
inline constexpr uint32_t kNotSupported = 0x80070032;
inline constexpr uint32_t kMachineLocked = 0x800704F7;
inline constexpr uint32_t kDeviceNotConnected = 0x8007048F;
inline constexpr uint32_t kInvalidArgument = 0x80070057;
inline constexpr uint32_t kGuidNotFound = 0x80041002;
inline constexpr uint32_t kAlreadyExists = 0x80070050;
inline constexpr uint32_t kDiskFull = 0x80070070;
}  // namespace ic_status
// "S_OK", "E_FAIL", ... or the hex value.
std::string StatusName(uint32_t status);

// IcVersion: major.minor, as the header and the negotiation carry it.
struct IcVersion {
  uint16_t major = 0;
  uint16_t minor = 0;
  friend constexpr bool operator==(const IcVersion&, const IcVersion&) = default;
  friend constexpr auto operator<=>(const IcVersion&, const IcVersion&) = default;
};
std::string VersionString(IcVersion v);  // "3.0"

// IcHeader: the pipe header and the icmsg header, as on the wire.
struct IcHeader {
  uint32_t pipe_flags = kPipeData;
  uint32_t pipe_size = 0;  // bytes after the pipe header
  IcVersion framework;
  uint16_t type = 0;  // MessageType, kept raw: a peer may send any value
  IcVersion version;  // the message version
  uint16_t body_size = 0;
  uint32_t status = 0;
  uint8_t transaction_id = 0;
  uint8_t flags = 0;
  uint8_t reserved[2] = {0, 0};
};

// IcMessage: a parsed message. `body` points into the parsed buffer (valid as long as it).
struct IcMessage {
  IcHeader header;
  absl::Span<const uint8_t> body;
};

// ParseIcMessage
// Reads the headers and bounds the body by icmsgsize. InvalidArgument, naming the field, if
// the payload is shorter than the two headers or icmsgsize runs past its end. The pipe header
// is not checked (peers disagree on what they put there); trailing bytes (the VMBus packet's
// padding) are ignored.
absl::StatusOr<IcMessage> ParseIcMessage(absl::Span<const uint8_t> payload);

// EncodeIcMessage
// The headers (pipe flags DATA, both sizes set from `body`) followed by `body`.
// InvalidArgument if the body exceeds icmsgsize's 16 bits.
absl::StatusOr<std::vector<uint8_t>> EncodeIcMessage(IcHeader header,
                                                     absl::Span<const uint8_t> body);

// BuildResponse
// The guest's answer to `request`: its header as received with flags TRANSACTION | RESPONSE,
// `status` and `body` (at most 65535 bytes; longer bodies are cut, which never happens for
// the bodies the drivers build).
std::vector<uint8_t> BuildResponse(const IcHeader& request, uint32_t status,
                                   absl::Span<const uint8_t> body);

// BuildRequest
// A host request: flags TRANSACTION | REQUEST, status 0, transaction id 0.
std::vector<uint8_t> BuildRequest(MessageType type, IcVersion framework, IcVersion version,
                                  absl::Span<const uint8_t> body);

// ---- Version negotiation (docs/integration_components.md §2)
// ----------------------------------------------

// Framework versions vbus speaks, in preference order.
inline constexpr IcVersion kFrameworkVersions[] = {{3, 0}, {1, 0}};
// Most versions of either kind a negotiation message may list.
inline constexpr size_t kMaxNegotiateVersions = 100;

// NegotiateBody: the lists of a NEGOTIATE body.
struct NegotiateBody {
  std::vector<IcVersion> framework;
  std::vector<IcVersion> message;
};

// ParseNegotiateBody
// InvalidArgument if a count exceeds kMaxNegotiateVersions or the lists run past the body.
absl::StatusOr<NegotiateBody> ParseNegotiateBody(absl::Span<const uint8_t> body);

// EncodeNegotiateBody
// Counts, 4 reserved bytes, then the framework and message versions.
std::vector<uint8_t> EncodeNegotiateBody(absl::Span<const IcVersion> framework,
                                         absl::Span<const IcVersion> message);

// Negotiated: the versions both sides agreed on.
struct Negotiated {
  IcVersion framework;
  IcVersion message;
};

// ChooseVersions
// The first of `ours` (in our preference order) that `offered` lists, for both kinds;
// NotFound naming the kind when the lists have none in common.
absl::StatusOr<Negotiated> ChooseVersions(const NegotiateBody& offered,
                                          absl::Span<const IcVersion> our_framework,
                                          absl::Span<const IcVersion> our_message);

// NegotiateReplyBody
// The guest's answer body: counts 1/1 and the chosen pair, or counts 0/0 (and zero versions)
// when `chosen` is empty. Always 16 bytes.
std::vector<uint8_t> NegotiateReplyBody(const Negotiated* chosen);

// ParseNegotiateReply (host side)
// The versions the guest chose. FailedPrecondition if the guest reported failure (a status
// other than S_OK, or counts other than 1/1); InvalidArgument for a malformed answer.
absl::StatusOr<Negotiated> ParseNegotiateReply(const IcMessage& reply);

}  // namespace vbus::ic

#endif  // VBUS_DRIVERS_IC_IC_WIRE_H_
