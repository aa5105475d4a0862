// Protocol constants of the neutral channel-bus conversation (proto/control.proto): versions
// and the version-dependent features, limits on relids, monitor ids, device-defined bytes,
// GPADL handles and sizes, ring sizes and the 240-byte message payload. Values from
// docs/protocol.md §1–§4, §6, §7, §15 and §16.
//
// The wire limits (GPADL pages, ring pages, device-defined bytes) are those of Hyper-V's
// encoding (docs/wire.md §1): the neutral messages could carry more, but a guest that
// relied on that could not run on a real host. The guest's core refuses a call beyond a limit
// with InvalidArgument before anything is sent; the mock host refuses such a request as a
// real host would (a non-zero status).
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
// 6.0: feature flags, client id, guest-chosen signalling. Its messages' extra fields are
// carried by the neutral protocol and the Hyper-V codec, but vbus does not offer it yet
// (docs/protocol.md §2).
inline constexpr uint32_t kVersion6_0 = MakeVersion(6, 0);

// The versions a vbus guest offers, newest first (Linux's list). Negotiation starts at the
// newest one not above the configured maximum and falls back one by one.
inline constexpr std::array<uint32_t, 8> kGuestVersions = {
    kVersion5_3, kVersion5_2, kVersion5_1, kVersion5_0,
    kVersion4_1, kVersion4_0, kVersion3_0, kVersion2_4,
};
inline constexpr uint32_t kNewestVersion = kVersion5_3;
inline constexpr uint32_t kOldestVersion = kVersion2_4;
// The oldest version an isolated (confidential) guest negotiates (docs/protocol.md §2).
inline constexpr uint32_t kOldestIsolatedVersion = kVersion5_2;

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
// hv_sock's TlConnectRequest exists from 4.0; the host answers a failed one with
// TlConnectResult from 4.1 (docs/protocol.md §5).
constexpr bool HasTlConnect(uint32_t version) { return version >= kVersion4_0; }
constexpr bool HasTlConnectResult(uint32_t version) { return version >= kVersion4_1; }

// Relids name channels: 1..2047 (0 is reserved; event bitmaps have 2048 bits).
inline constexpr uint32_t kMinRelid = 1;
inline constexpr uint32_t kMaxRelid = 2047;
inline constexpr uint32_t kRelidCount = 2048;
constexpr bool IsValidRelid(uint32_t relid) { return relid >= kMinRelid && relid <= kMaxRelid; }

// Monitor ids index the 128-bit monitor trigger groups.
inline constexpr uint32_t kMonitorIdCount = 128;

// Hyper-V carries a control message in a SynIC message slot with at most this many bytes of
// payload (the VMBus message's own 8-byte header included). Every message vbus sends or
// accepts fits: the variable parts below are bounded so that it does (docs/wire.md §1).
inline constexpr size_t kMaxMessagePayloadBytes = 240;
// The largest fixed-size messages: OFFERCHANNEL and OPENCHANNEL (docs/wire.md §1).
inline constexpr size_t kOfferMessageBytes = 196;
inline constexpr size_t kOpenChannelMessageBytes = 148;

// Device-defined bytes in Offer.user_defined (at byte 60 of OFFERCHANNEL) and
// OpenChannel.user_data (at byte 28 of OPENCHANNEL): a fixed 120-byte field in both, so at
// most 120 (shorter = zero-padded; docs/protocol.md §4, §7).
inline constexpr size_t kUserDefinedBytes = 120;
static_assert(60 + kUserDefinedBytes + 16 == kOfferMessageBytes);
static_assert(28 + kUserDefinedBytes == kOpenChannelMessageBytes);
static_assert(kOfferMessageBytes <= kMaxMessagePayloadBytes &&
              kOpenChannelMessageBytes <= kMaxMessagePayloadBytes);

// Wire widths of offer fields that the neutral protocol carries as uint32 (docs/protocol.md
// §4, §16): chn_flags, sub_channel_index and both MMIO sizes are u16; beside the
// monitor_allocated bit sit 7 reserved bits, beside the dedicated-interrupt bit 15.
inline constexpr uint32_t kMaxOfferFlags = 0xFFFF;
inline constexpr uint32_t kMaxSubChannelIndex = 0xFFFF;
inline constexpr uint32_t kMaxMmioMegabytes = 0xFFFF;
inline constexpr uint32_t kMaxMonitorAllocatedReservedBits = 0x7F;
inline constexpr uint32_t kMaxDedicatedInterruptReservedBits = 0x7FFF;

// chn_flags bits vbus names (docs/protocol.md §4).
inline constexpr uint32_t kOfferFlagTlnpiProvider = 0x2000;  // an hv_sock offer

// GPADL handles: chosen by the guest, non-zero, unique among live ones. vbus counts up from
// Linux's first handle.
inline constexpr uint32_t kFirstGpadlHandle = 0xE1E10;

// Every page the protocol counts (GPADL pages, ring pages, PFNs) is 4096 bytes.
inline constexpr size_t kPageSize = 4096;

// GPADL size (docs/protocol.md §6). On Hyper-V a GPADL travels as one GPADL_HEADER (its
// first PFN at byte 28: at most 26 PFNs in 240 bytes) and GPADL_BODY messages (PFNs from byte
// 16: at most 28 each). The header's range_buflen is a u16 holding the one range's bytes,
// 8 (byte_count, byte_offset) + 8 per PFN, so one GPADL holds at most 8190 pages (32 MiB less
// 8 KiB): 8 + 8 × 8190 = 65528, while 8191 pages would need 65536.
inline constexpr size_t kGpadlHeaderFirstPfnOffset = 28;
inline constexpr size_t kGpadlBodyFirstPfnOffset = 16;
inline constexpr size_t kMaxGpadlHeaderPfns =
    (kMaxMessagePayloadBytes - kGpadlHeaderFirstPfnOffset) / 8;
inline constexpr size_t kMaxGpadlBodyPfns =
    (kMaxMessagePayloadBytes - kGpadlBodyFirstPfnOffset) / 8;
inline constexpr size_t kMaxGpadlRangeBytes = 0xFFFF;  // range_buflen is a u16
inline constexpr size_t kGpadlRangeHeaderBytes = 8;    // byte_count u32, byte_offset u32
inline constexpr size_t kMaxGpadlPages = (kMaxGpadlRangeBytes - kGpadlRangeHeaderBytes) / 8;
static_assert(kMaxGpadlHeaderPfns == 26 && kMaxGpadlBodyPfns == 28);
static_assert(kMaxGpadlPages == 8190);
// A GPADL's byte_count (u32) always fits: 8190 pages are 33,546,240 bytes.
static_assert(kMaxGpadlPages * kPageSize <= 0xFFFFFFFFu);

// GpadlMessageCount
// How many Hyper-V messages (one header, then bodies) carry a GPADL of `pages` PFNs; 293 for
// the largest (a header and 292 bodies).
constexpr size_t GpadlMessageCount(size_t pages) {
  return pages <= kMaxGpadlHeaderPfns
             ? 1
             : 1 + (pages - kMaxGpadlHeaderPfns + kMaxGpadlBodyPfns - 1) / kMaxGpadlBodyPfns;
}
static_assert(GpadlMessageCount(kMaxGpadlPages) == 293);

// Ring sizes (docs/protocol.md §7). A channel's two rings share one GPADL, outbound (guest →
// host) first; OpenChannel.downstream_ring_page_offset is the outbound ring's page count. A
// ring is one 4096-byte control page plus at least one data page, so each ring has 2 pages or
// more and the pair at most kMaxGpadlPages; the GPADL starts at byte 0 of its first page and
// covers its pages whole.
inline constexpr uint32_t kMinRingPages = 2;
inline constexpr uint32_t kMaxRingPairPages = static_cast<uint32_t>(kMaxGpadlPages);
// One ring's most pages: the other ring of the pair needs its kMinRingPages.
inline constexpr uint32_t kMaxRingPages = kMaxRingPairPages - kMinRingPages;

// RingSplitFits
// Whether a ring GPADL of `gpadl_pages` pages split at `outbound_pages` (the downstream
// offset) gives two rings of at least kMinRingPages within one GPADL's kMaxGpadlPages.
constexpr bool RingSplitFits(uint64_t gpadl_pages, uint64_t outbound_pages) {
  return gpadl_pages <= kMaxRingPairPages && outbound_pages >= kMinRingPages &&
         outbound_pages <= gpadl_pages && gpadl_pages - outbound_pages >= kMinRingPages;
}

// NT status codes that vbus names in messages.
inline constexpr uint32_t kStatusSuccess = 0;
inline constexpr uint32_t kStatusUnsuccessful = 0xC0000001;

}  // namespace vbus::protocol

#endif  // VBUS_CORE_DATA_PROTOCOL_H_
