// The FakeHypervisor's hypercall decoder (testonly): checks a hypercall the way Hyper-V does
// and turns it into a request, or into the HV_STATUS Hyper-V would answer.
//
// Rules, in this order (docs/hyperv.md §7, §8, §12):
//   1. a call code other than HvPostMessage (0x5C) and HvSignalEvent (0x5D)
//      → HV_STATUS_INVALID_HYPERCALL_CODE;
//   2. a reserved-zero bit set in the control value (bits 27-31, 44-47, 60-63; bit 31, the
//      nested bit, is refused too: the fake is never a nested hypervisor's parent), a non-zero
//      variable header size, or a non-zero rep count or rep start index (both calls are simple
//      calls) → HV_STATUS_INVALID_HYPERCALL_INPUT;
//   3. HvPostMessage in the fast form (its 256-byte input needs XMM fast input, which the fake
//      does not offer) → HV_STATUS_INVALID_HYPERCALL_INPUT;
//   4. memory form: an input or output GPA not 8-byte aligned, or an input block crossing a
//      page boundary → HV_STATUS_INVALID_ALIGNMENT; an input block outside guest memory
//      → HV_STATUS_INVALID_PARAMETER;
//   5. reserved input fields non-zero (HvPostMessage's reserved u32 and connection id bits
//      31:24; HvSignalEvent's reserved u16) → HV_STATUS_INVALID_HYPERCALL_INPUT;
//   6. HvPostMessage with message type 0 or with the top bit set, or a payload size over 240
//      → HV_STATUS_INVALID_PARAMETER.
// Connection ids and flag numbers are the FakeHypervisor's to check (it owns the connections).
#ifndef VBUS_HYPERV_TESTING_FAKE_HYPERCALLS_H_
#define VBUS_HYPERV_TESTING_FAKE_HYPERCALLS_H_

#include <cstdint>
#include <variant>
#include <vector>

#include "hyperv/testing/fake_guest_memory.h"

namespace vbus::hyperv::testing {

// A valid HvPostMessage, its input block copied out of guest memory.
struct PostMessageCall {
  uint32_t connection_id = 0;
  uint32_t message_type = 0;
  std::vector<uint8_t> payload;
};

// A valid HvSignalEvent.
struct SignalEventCall {
  uint32_t connection_id = 0;
  uint16_t flag_number = 0;
};

// The HV_STATUS of a refused call.
struct RefusedCall {
  uint16_t hv_status = 0;
};

using DecodedCall = std::variant<RefusedCall, PostMessageCall, SignalEventCall>;

// DecodeHypercall
// `control` as in RCX; `rdx` and `r8` as in those registers: GPAs for the memory form, input
// values for the fast form (chosen by the control value's fast bit). Reads guest memory for
// the memory form; the calling guest thread wrote it, so no other synchronisation is needed.
DecodedCall DecodeHypercall(const FakeGuestMemory& memory, uint64_t control, uint64_t rdx,
                            uint64_t r8);

}  // namespace vbus::hyperv::testing

#endif  // VBUS_HYPERV_TESTING_FAKE_HYPERCALLS_H_
