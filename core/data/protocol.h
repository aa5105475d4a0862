// Protocol constants of the neutral channel-bus conversation (proto/control.proto): versions
// and the version-dependent features, limits on relids, monitor ids, device-defined bytes and
// GPADL handles. Values from docs/protocol.md §1–§4, §6, §7 and §15.
//
// Example:
//   if (!protocol::HasModifyChannel(version)) return absl::FailedPreconditionError(...);
//   std::string name = protocol::VersionName(0x00050003);  // "5.3"
#ifndef VBUS_CORE_DATA_PROTOCOL_H_
#define VBUS_CORE_DATA_PROTOCOL_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace vbus::protocol {

// Versions are (major << 16) | minor.
constexpr uint32_t MakeVersion(uint16_t major, uint16_t minor) {
  return static_cast<uint32_t>(major) << 16 | minor;
}
inline constexpr uint32_t kVersion2_4 = MakeVersion(2, 4);  // WIN8: sub-channels, target_vp
inline constexpr uint32_t kVersion3_0 = MakeVersion(3, 0);  // WIN8_1: Unload
inline constexpr uint32_t kVersion4_0 = MakeVersion(4, 0);  // WIN10: hv_sock
inline constexpr uint32_t kVersion4_1 = MakeVersion(4, 1);  // ModifyChannel
inline constexpr uint32_t kVersion5_0 = MakeVersion(5, 0);  // message connection id returned
inline constexpr uint32_t kVersion5_1 = MakeVersion(5, 1);
inline constexpr uint32_t kVersion5_2 = MakeVersion(5, 2);  // minimum for isolated guests
inline constexpr uint32_t kVersion5_3 = MakeVersion(5, 3);  // ModifyChannelResponse

// The versions a vbus guest offers, newest first (Linux's list). Negotiation starts at the
// newest one not above the configured maximum and falls back one by one.
inline constexpr std::array<uint32_t, 8> kGuestVersions = {
    kVersion5_3, kVersion5_2, kVersion5_1, kVersion5_0,
    kVersion4_1, kVersion4_0, kVersion3_0, kVersion2_4,
};
inline constexpr uint32_t kNewestVersion = kVersion5_3;
inline constexpr uint32_t kOldestVersion = kVersion2_4;

// VersionName
// "major.minor", e.g. "5.3" for 0x00050003.
std::string VersionName(uint32_t version);

// Features by version.
// From 5.0 the host returns the connection id for all later messages.
constexpr bool UsesReturnedConnectionId(uint32_t version) { return version >= kVersion5_0; }
// Unload / UnloadResponse exist from 3.0.
constexpr bool HasUnload(uint32_t version) { return version >= kVersion3_0; }
// ModifyChannel exists from 4.1; the host answers it (ModifyChannelResponse) from 5.3.
constexpr bool HasModifyChannel(uint32_t version) { return version >= kVersion4_1; }
constexpr bool HasModifyChannelResponse(uint32_t version) { return version >= kVersion5_3; }

// Relids name channels: 1..2047 (0 is reserved; event bitmaps have 2048 bits).
inline constexpr uint32_t kMinRelid = 1;
inline constexpr uint32_t kMaxRelid = 2047;
inline constexpr uint32_t kRelidCount = 2048;
constexpr bool IsValidRelid(uint32_t relid) { return relid >= kMinRelid && relid <= kMaxRelid; }

// Monitor ids index the 128-bit monitor trigger groups.
inline constexpr uint32_t kMonitorIdCount = 128;

// Device-defined bytes in Offer.user_defined and OpenChannel.user_data.
inline constexpr size_t kUserDefinedBytes = 120;

// Wire widths of offer fields that the neutral protocol carries as uint32.
inline constexpr uint32_t kMaxSubChannelIndex = 0xFFFF;
inline constexpr uint32_t kMaxMmioMegabytes = 0xFFFF;

// GPADL handles: chosen by the guest, non-zero, unique among live ones. vbus counts up from
// Linux's first handle.
inline constexpr uint32_t kFirstGpadlHandle = 0xE1E10;

// Every page the protocol counts (GPADL pages, ring pages, PFNs) is 4096 bytes.
inline constexpr size_t kPageSize = 4096;

// A GPADL's byte_count is a uint32: at most this many whole pages.
inline constexpr size_t kMaxGpadlPages = 0xFFFFFFFFu / 4096;

// A ring (one direction of a channel) is one 4096-byte control page plus a data area of at
// least one page.
inline constexpr uint32_t kMinRingPages = 2;

// NT status codes that vbus names in messages.
inline constexpr uint32_t kStatusSuccess = 0;
inline constexpr uint32_t kStatusUnsuccessful = 0xC0000001;

}  // namespace vbus::protocol

#endif  // VBUS_CORE_DATA_PROTOCOL_H_
