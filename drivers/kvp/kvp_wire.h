// The KVP (key-value pair) exchange's wire format (docs/integration_components.md §6): operations,
// pools, the value block, UTF-16LE strings and their limits. Both sides use it: the guest's
// KvpDriver parses requests and fills answers, the mock host builds requests and reads
// answers. Every parse checks sizes, the NUL terminators and the UTF-16 encoding.
#ifndef VBUS_DRIVERS_KVP_KVP_WIRE_H_
#define VBUS_DRIVERS_KVP_KVP_WIRE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace vbus::ic {

enum class KvpOperation : uint8_t {
  kGet = 0,
  kSet = 1,
  kDelete = 2,
  kEnumerate = 3,
  kGetIpInfo = 4,
  kSetIpInfo = 5,
};
std::string KvpOperationName(uint8_t op);  // "get", "set", ... or "operation 9"

// Pools. AUTO_INTERNAL (4) is the guest's own and never exchanged.
inline constexpr uint8_t kKvpPoolExternal = 0;
inline constexpr uint8_t kKvpPoolGuest = 1;
inline constexpr uint8_t kKvpPoolAuto = 2;
inline constexpr uint8_t kKvpPoolAutoExternal = 3;
inline constexpr uint8_t kKvpPoolAutoInternal = 4;
inline constexpr uint8_t kKvpPoolCount = 5;
std::string KvpPoolName(uint8_t pool);  // "external", "guest", "auto", ...

// Value types (REG_U64 arrives as 8 from some hosts and 11 from others).
inline constexpr uint32_t kKvpString = 1;
inline constexpr uint32_t kKvpU32 = 4;
inline constexpr uint32_t kKvpU64 = 8;
inline constexpr uint32_t kKvpU64Alt = 11;

// Limits: sizes in bytes including the UTF-16 NUL; characters in UTF-16 units without it.
inline constexpr size_t kKvpKeyBytes = 512;
inline constexpr size_t kKvpValueBytes = 2048;
inline constexpr size_t kKvpMaxKeyChars = 254;
inline constexpr size_t kKvpMaxValueChars = 1022;

// Body layouts (offsets from the start of the IC body): operation @0, pool @1, 2 pad bytes.
// GET / SET: the value block @4.
inline constexpr size_t kKvpBlockAt = 4;
// ENUMERATE: index @4, the value block @8.
inline constexpr size_t kKvpEnumIndexAt = 4;
inline constexpr size_t kKvpEnumBlockAt = 8;
// DELETE: key_size @4, key @8.
inline constexpr size_t kKvpDeleteKeyAt = 8;
// Inside a value block: value_type @0, key_size @4, value_size @8, key @12, value @524.
inline constexpr size_t kKvpBlockSize = 12 + kKvpKeyBytes + kKvpValueBytes;   // 2572
inline constexpr size_t kKvpGetSetBody = kKvpBlockAt + kKvpBlockSize;         // 2576
inline constexpr size_t kKvpEnumerateBody = kKvpEnumBlockAt + kKvpBlockSize;  // 2580
inline constexpr size_t kKvpDeleteBody = kKvpDeleteKeyAt + kKvpKeyBytes;      // 520

// KvpRecord: one pair. Strings are UTF-8 here; REG_U32/REG_U64 values as decimal text.
struct KvpRecord {
  uint32_t value_type = kKvpString;
  std::string key;
  std::string value;
  friend bool operator==(const KvpRecord&, const KvpRecord&) = default;
};

// KvpRequest: a decoded host request.
struct KvpRequest {
  uint8_t operation = 0;
  uint8_t pool = 0;
  uint32_t index = 0;  // ENUMERATE
  KvpRecord record;    // GET: key; SET: all; DELETE: key
};

// ParseKvpRequest
// InvalidArgument naming the field for a body shorter than the operation's layout, a size
// past its field or above the limits, a string without its NUL or not valid UTF-16, a value
// whose size does not match its type, an empty key; Unimplemented for an unknown operation
// or the IP operations.
absl::StatusOr<KvpRequest> ParseKvpRequest(absl::Span<const uint8_t> body);

// EncodeKvpRequest (host side)
// The operation's full body. InvalidArgument if a string is over its limit or a number does
// not parse for its type.
absl::StatusOr<std::vector<uint8_t>> EncodeKvpRequest(const KvpRequest& request);

// FillKvpAnswer (guest side)
// Writes `record` into the value block of a GET or ENUMERATE body (`body` is the request's
// body, at least that operation's size). InvalidArgument as for EncodeKvpRequest.
absl::Status FillKvpAnswer(uint8_t operation, absl::Span<uint8_t> body, const KvpRecord& record);

// ParseKvpAnswer (host side)
// The record in a GET or ENUMERATE answer's body; errors as ParseKvpRequest's.
absl::StatusOr<KvpRecord> ParseKvpAnswer(uint8_t operation, absl::Span<const uint8_t> body);

// UTF-16LE <-> UTF-8.
// Utf16ToUtf8: `bytes` holds `size` bytes of UTF-16LE ending in a NUL unit (trailing NULs
// dropped). InvalidArgument for an odd size, a missing NUL or an unpaired surrogate.
absl::StatusOr<std::string> Utf16ToUtf8(absl::Span<const uint8_t> bytes);
// Utf8ToUtf16: UTF-16LE with a NUL; InvalidArgument for invalid UTF-8 or more than
// `max_chars` UTF-16 units.
absl::StatusOr<std::vector<uint8_t>> Utf8ToUtf16(absl::string_view text, size_t max_chars);

}  // namespace vbus::ic

#endif  // VBUS_DRIVERS_KVP_KVP_WIRE_H_
