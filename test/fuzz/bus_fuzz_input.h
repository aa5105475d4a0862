// The input format of bus_state_fuzzer, shared with make_seeds: a script of one-byte
// operations, each followed by its argument bytes (missing bytes read as 0). Arguments are
// selectors rather than raw values, so that short inputs reach deep states: a relid selector
// names one of relids 0-7 or a hostile one (2047, 2048, 0xFFFFFFFF), a GPADL or open selector
// names one the bus actually sent (or, with bit 7 set, a made-up one), an offer selector one
// of the bus's offers.
#ifndef VBUS_TEST_FUZZ_BUS_FUZZ_INPUT_H_
#define VBUS_TEST_FUZZ_BUS_FUZZ_INPUT_H_

#include <cstdint>
#include <initializer_list>
#include <vector>

namespace vbus::fuzz::bus {

enum Op : uint8_t {
  // Host → guest messages.
  kVersionResponse,     // [flags]: bit 0 supported, bits 1-7 message connection id
  kOffer,               // [relid sel, guid sel, sub-channel index]
  kAllOffersDelivered,  // []
  kRescind,             // [relid sel]
  kGpadlCreated,        // [gpadl sel, status sel]
  kGpadlTorndown,       // [gpadl sel]
  kOpenResult,          // [open sel, status sel]
  kModifyResponse,      // [relid sel, status sel]
  kUnloadResponse,      // []
  kRawMessage,          // [length, bytes...]: a serialized ControlMessage, as received
  // Calls, as drivers make them through the runtime.
  kConnect,        // []
  kOpen,           // [offer sel, ring pages]
  kClose,          // [offer sel]
  kCreateGpadl,    // [offer sel, pages]
  kTeardownGpadl,  // [offer sel, gpadl sel]
  kModify,         // [offer sel, target vp]
  kUnload,         // []
  // What the runtime does on its own.
  kRelease,     // [removed-offer sel]: ReleaseOffer, as after a retire
  kTimer,       // [timer sel]: an armed timer fires (bit 7: one second early)
  kLinkLost,    // []
  kPostFailed,  // [sent-message sel, code sel]
  kAdvance,     // [seconds]: virtual time passes
  kOpCount,
};

// Selector bytes with a fixed meaning.
inline constexpr uint8_t kMadeUp = 0x80;  // bit 7 of a gpadl/open selector: not a sent one
inline constexpr uint8_t kStatusOk = 0;   // status selectors: 3 (mod 4) means a failure
inline constexpr uint8_t kStatusFail = 3;

// Builds a script: Script({kConnect}).Add({kVersionResponse, 1}).bytes.
struct Script {
  std::vector<uint8_t> bytes;
  Script& Add(std::initializer_list<uint8_t> op_and_args) {
    bytes.insert(bytes.end(), op_and_args);
    return *this;
  }
};

}  // namespace vbus::fuzz::bus

#endif  // VBUS_TEST_FUZZ_BUS_FUZZ_INPUT_H_
