// The echo device's sub-channel request: how a guest driver asks the mock host for
// sub-channels of an open "echo" primary, and the device's answer.
//
// In VMBus a device's driver asks for sub-channels through its own device protocol, on the
// open primary channel; the host answers and then hot-adds them: Offer messages with the
// primary's interface_type and interface_instance and sub_channel_index 1..N. The mock host's
// echo device (mock/host/device.h) speaks this small protocol; every other data packet it
// echoes.
//
//   Request (guest → host): a data packet (type 6, in-band) whose payload is
//     @0   magic  "VBUS-SUBCHANNELS" (16 ASCII bytes, no terminator)
//     @16  count  u16 LE: how many sub-channels the device should have, 1..kMaxSubChannels
//     @18  the sender's 0-7 padding bytes (ignored)
//   Answer (host → guest): the request's trans_id; a completion (type 11) if the request set
//   COMPLETION_REQUESTED, else an in-band packet (type 6); its 24-byte payload is
//     @0   magic  the same 16 bytes
//     @16  status u32 LE: 0 = accepted; protocol::kStatusUnsuccessful = refused (a bad count,
//                 or the host did not take the request)
//     @20  count  u16 LE: the request's count, as it arrived
//     @22  zero   u16
//
// `count` is the total, not an increment: the host brings the primary's live (not rescinded)
// sub-channels up to `count`, offering the lowest unused sub_channel_index values, and offers
// nothing when there are enough already (a repeated request is harmless; sub-channels are
// never taken away by a lower count). "Accepted" means the host queued the work: the offers
// follow the answer shortly, as hot-adds on the control stream. If offering fails after all
// (the primary was closed or rescinded meanwhile, relids or monitor ids ran out), no offer
// comes and the host publishes an ERROR event naming the relid and the reason: a guest waits
// for the offers with a deadline.
//
// Both sides use this library: guest-side code and tests encode requests and parse answers,
// the echo device parses requests and encodes answers. Nothing here trusts its input.
//
// Example (guest side):
//   rings->Send(PacketType::kDataInband, kCompletionRequested, trans_id,
//               EncodeSubChannelRequest(3));
//   ... receive the completion with trans_id ...
//   absl::StatusOr<SubChannelAnswer> a = ParseSubChannelAnswer(packet.payload);
//   if (a.ok() && a->status == 0) { wait for three offers with sub_channel_index 1, 2, 3 }
#ifndef VBUS_MOCK_HOST_SUB_CHANNEL_REQUEST_H_
#define VBUS_MOCK_HOST_SUB_CHANNEL_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "mock/host/device_kinds.h"  // kMaxSubChannels

namespace vbus::mock {

// The 16 bytes that open a request and its answer.
inline constexpr absl::string_view kSubChannelMagic = "VBUS-SUBCHANNELS";
// Bytes of a request before the sender's padding (magic + count).
inline constexpr size_t kSubChannelRequestBytes = 18;
// Bytes of an answer (magic + status + count + zero).
inline constexpr size_t kSubChannelAnswerBytes = 24;

// EncodeSubChannelRequest: the 18-byte request payload for `count` (not checked: a test may
// send a bad count on purpose).
std::vector<uint8_t> EncodeSubChannelRequest(uint16_t count);

// IsSubChannelRequest: whether `payload` opens with the magic and holds a count (at least 18
// bytes). The echo device answers such a packet instead of echoing it.
bool IsSubChannelRequest(absl::Span<const uint8_t> payload);

// ParseSubChannelRequest
// The requested count. InvalidArgument naming what is wrong: too short, a bad magic, or a
// count of 0 or above kMaxSubChannels.
absl::StatusOr<uint16_t> ParseSubChannelRequest(absl::Span<const uint8_t> payload);

// RequestedCount: the count field of a payload IsSubChannelRequest accepts, unchecked (an
// answer repeats it even when it is out of range). 0 for a payload it does not accept.
uint16_t RequestedCount(absl::Span<const uint8_t> payload);

// SubChannelAnswer: the fields of an answer.
struct SubChannelAnswer {
  uint32_t status = 0;  // 0 = accepted, else protocol::kStatusUnsuccessful
  uint16_t count = 0;   // the request's count
};

// EncodeSubChannelAnswer: the 24-byte answer payload.
std::vector<uint8_t> EncodeSubChannelAnswer(uint32_t status, uint16_t count);

// ParseSubChannelAnswer
// The answer's fields. InvalidArgument naming what is wrong: shorter than 24 bytes (padding
// after them is allowed), a bad magic, or a non-zero reserved u16.
absl::StatusOr<SubChannelAnswer> ParseSubChannelAnswer(absl::Span<const uint8_t> payload);

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_SUB_CHANNEL_REQUEST_H_
