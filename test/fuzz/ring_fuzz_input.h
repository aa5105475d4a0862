// The input format of ring_reader_fuzzer, shared with the seed generator.
//
//   byte 0        shape: bit 0 → 1 or 2 data pages; bits 1-2 → scratch size (0, 64, 600, full)
//   bytes 1-20    control page: write_index, read_index, interrupt_mask, pending_send_sz,
//                 feature_bits (u32 little-endian each)
//   byte 21       n = length of the operation script
//   bytes 22..    the script: n bytes of operations and their arguments (see Op)
//   the rest      the data area's first bytes (the remainder of the data area is zero)
#ifndef VBUS_TEST_FUZZ_RING_FUZZ_INPUT_H_
#define VBUS_TEST_FUZZ_RING_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>

namespace vbus::fuzz {

inline constexpr size_t kShapeOffset = 0;
inline constexpr size_t kControlOffset = 1;
inline constexpr size_t kControlBytes = 20;
inline constexpr size_t kScriptLengthOffset = 21;
inline constexpr size_t kScriptOffset = 22;

// Operations (script byte % kOpCount). The peer's moves (kPeer*) change shared memory between
// calls, as a hostile peer running concurrently would.
enum Op : uint8_t {
  kDrain = 0,           // Next until nothing, an error, or 64 packets
  kNext = 1,            // one Next
  kCommitRead = 2,      // CommitRead
  kUnmask = 3,          // MaskInterrupts then UnmaskInterrupts
  kAvailable = 4,       // AvailableBytes
  kPeerWriteIndex = 5,  // next 2 script bytes * 8 → write_index (may be out of range)
  kPeerDataByte = 6,    // next 2 bytes: data offset, next 1: value
  kPeerPending = 7,     // next 2 bytes → pending_send_sz
  kWrite = 8,           // our writer on the same ring: next byte → payload size
  kPeerReadIndex = 9,   // next 2 bytes * 8 → read_index (hostile reader for the writer)
  kOpCount = 10,
};

}  // namespace vbus::fuzz

#endif  // VBUS_TEST_FUZZ_RING_FUZZ_INPUT_H_
