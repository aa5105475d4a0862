// The input format of host_engine_fuzzer, shared with make_seeds: a script of one-byte
// operations, each followed by its argument bytes (missing bytes read as 0). Guest selectors
// pick one of the attached guests (at most three); relid selectors pick relid 1-8 or, with
// bit 7 set, a hostile one (0, 2047, 2048, 0xFFFFFFFF); handle selectors pick 0xE1E10-0xE1E13
// or, with bit 7 set, 0 or 0xFFFFFFFF.
#ifndef VBUS_TEST_FUZZ_HOST_FUZZ_INPUT_H_
#define VBUS_TEST_FUZZ_HOST_FUZZ_INPUT_H_

#include <cstdint>

namespace vbus::fuzz::host {

enum Op : uint8_t {
  kAttach,        // []
  kDetach,        // [guest sel]
  kGuestMessage,  // [guest sel, kind, a, b, c]: see GuestKind
  kGuestRaw,      // [guest sel, length, bytes...]: a serialized GuestToHost
  kOffer,         // [guest sel, device sel (bit 4: monitored), sub-channels, instance sel]
  kRescind,       // [guest sel, relid sel]
  kFault,         // [guest sel, kind (0 message, 1 refuse, 2 disconnect), a, b]
  kConfigure,     // [max version sel, flags (1 max version, 2 remap, 4 remap on, 8 latency)]
  kFailNextMap,   // []
  kAdvance,       // [milliseconds / 4]
  kOpCount,
};

// kGuestMessage kinds and what a, b, c mean for each.
enum GuestKind : uint8_t {
  kInitiateContact,  // a: version sel (0-7: 2.4 .. 5.3; 8: 6.0; 9: 0), b: target vcpu
  kRequestOffers,
  kGpadlCreate,    // a: relid sel, b: handle sel, c: 1 + c % 8 pages (bit 7: PFNs from c & 0x7F,
                   // spread out; bit 6: byte count one too large); first PFN 5 + b % 60
  kGpadlTeardown,  // a: relid sel, b: handle sel
  kOpenChannel,    // a: relid sel (and open id), b: handle sel, c: page offset (c % 10)
  kCloseChannel,   // a: relid sel
  kRelidReleased,  // a: relid sel
  kModifyChannel,  // a: relid sel, b: target vp
  kUnload,
  kHostOnlyOffer,  // a: relid sel — a message only a host may send
  kHostOnlyVersionResponse,
  kEmptyMessage,
  kGuestKindCount,
};

}  // namespace vbus::fuzz::host

#endif  // VBUS_TEST_FUZZ_HOST_FUZZ_INPUT_H_
