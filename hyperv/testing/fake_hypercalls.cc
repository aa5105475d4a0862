#include "hyperv/testing/fake_hypercalls.h"

#include <cstring>

#include "core/data/protocol.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv::testing {

namespace {

// Rule 4: the memory-form input block of `bytes` at `input_gpa`, or the status refusing it.
std::variant<RefusedCall, const uint8_t*> InputBlock(const FakeGuestMemory& memory,
                                                     uint64_t input_gpa, uint64_t output_gpa,
                                                     size_t bytes) {
  if (input_gpa % 8 != 0 || output_gpa % 8 != 0) return RefusedCall{kHvStatusInvalidAlignment};
  if (input_gpa % protocol::kPageSize + bytes > protocol::kPageSize) {
    return RefusedCall{kHvStatusInvalidAlignment};
  }
  const uint8_t* block = memory.Translate(input_gpa, bytes);
  if (block == nullptr) return RefusedCall{kHvStatusInvalidParameter};
  return block;
}

DecodedCall DecodePostMessage(const FakeGuestMemory& memory, bool fast, uint64_t rdx, uint64_t r8) {
  if (fast) return RefusedCall{kHvStatusInvalidHypercallInput};
  auto block = InputBlock(memory, rdx, r8, sizeof(HvPostMessageInput));
  if (const RefusedCall* refused = std::get_if<RefusedCall>(&block)) return *refused;
  HvPostMessageInput input;
  std::memcpy(&input, std::get<const uint8_t*>(block), sizeof(input));
  if (input.reserved != 0 || (input.connection_id & ~kConnectionIdMask) != 0) {
    return RefusedCall{kHvStatusInvalidHypercallInput};
  }
  if (input.message_type == kMessageTypeNone ||
      (input.message_type & kMessageTypeHypervisorBit) != 0 ||
      input.payload_size > kMessagePayloadBytes) {
    return RefusedCall{kHvStatusInvalidParameter};
  }
  return PostMessageCall{input.connection_id, input.message_type,
                         std::vector<uint8_t>(input.payload, input.payload + input.payload_size)};
}

DecodedCall DecodeSignalEvent(const FakeGuestMemory& memory, bool fast, uint64_t rdx, uint64_t r8) {
  HvSignalEventInput input;
  if (fast) {
    input.connection_id = static_cast<uint32_t>(rdx);
    input.flag_number = static_cast<uint16_t>(rdx >> 32);
    input.reserved = static_cast<uint16_t>(rdx >> 48);
  } else {
    auto block = InputBlock(memory, rdx, r8, sizeof(HvSignalEventInput));
    if (const RefusedCall* refused = std::get_if<RefusedCall>(&block)) return *refused;
    std::memcpy(&input, std::get<const uint8_t*>(block), sizeof(input));
  }
  if (input.reserved != 0 || (input.connection_id & ~kConnectionIdMask) != 0) {
    return RefusedCall{kHvStatusInvalidHypercallInput};
  }
  return SignalEventCall{input.connection_id, input.flag_number};
}

}  // namespace

DecodedCall DecodeHypercall(const FakeGuestMemory& memory, uint64_t control, uint64_t rdx,
                            uint64_t r8) {
  const uint16_t code = static_cast<uint16_t>(control & kHypercallCodeMask);
  if (code != kHvCallPostMessage && code != kHvCallSignalEvent) {
    return RefusedCall{kHvStatusInvalidHypercallCode};
  }
  if ((control & (kHypercallRsvdZ | kHypercallVarHeaderMask | kHypercallRepCountMask |
                  kHypercallRepStartMask)) != 0) {
    return RefusedCall{kHvStatusInvalidHypercallInput};
  }
  const bool fast = (control & kHypercallFast) != 0;
  return code == kHvCallPostMessage ? DecodePostMessage(memory, fast, rdx, r8)
                                    : DecodeSignalEvent(memory, fast, rdx, r8);
}

}  // namespace vbus::hyperv::testing
