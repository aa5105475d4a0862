// Ring faults: what a hostile host writes into a ring's shared memory (the mock host's
// InjectFault{ring}, RingFault in proto/mock_host.proto), as pure functions on the ring's
// memory — its control page and data area as core/data/ring_buffer.h lays them out. No locks,
// no signals, no host state: GuestDataPlane (mock/host/data_plane.h) takes the channel's lock,
// calls these, lets its own ring object catch up where the fault says so and signals the guest.
//
// Example (a host that moves the write_index of the guest's inbound ring back by 8):
//   v1::RingFault::FieldWrite w;
//   w.set_ring(v1::RingFault::RING_INBOUND);
//   w.set_field(v1::RingFault::FIELD_WRITE_INDEX);
//   w.set_add(-8);
//   absl::StatusOr<FieldWriteOutcome> done = WriteRingField(inbound_ring_memory, w);
#ifndef VBUS_MOCK_HOST_RING_FAULT_H_
#define VBUS_MOCK_HOST_RING_FAULT_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock {

// The most times a field write is applied, and the most rounds of an event storm.
inline constexpr uint32_t kMaxRingFaultRepeats = 1000000;
// The largest raw packet (descriptor and body) a fault writes.
inline constexpr size_t kMaxRawPacketBytes = 65536;
// The most relids one event storm names.
inline constexpr size_t kMaxStormRelids = 64;

// FieldWriteOutcome: the ring's data size and the field before the first and after the last
// write.
struct FieldWriteOutcome {
  uint32_t data_size = 0;
  uint32_t before = 0;
  uint32_t after = 0;
};

// WriteRingField
// Applies `write` (set, add or toggle, `times` times back to back, each one atomic store) to
// its field of the ring in `ring_memory`; `write.ring` and `write.signal` are the caller's.
// InvalidArgument for an unset field or value, `times` above kMaxRingFaultRepeats, or memory
// that cannot hold a ring (ValidateRingMemory).
absl::StatusOr<FieldWriteOutcome> WriteRingField(absl::Span<uint8_t> ring_memory,
                                                 const v1::RingFault::FieldWrite& write);

// WriteRawPacket
// Writes `bytes` as one packet at the ring's write_index (wrapping at the end of the data
// area), then zero padding to a multiple of 8 and the trailer, and publishes write_index past
// them. Returns the offset the packet starts at. InvalidArgument for an empty packet or one
// above kMaxRawPacketBytes; FailedPrecondition (nothing written) if write_index or read_index
// is out of range or misaligned; ResourceExhausted if it does not fit (a writer needs strictly
// more free bytes than it writes).
absl::StatusOr<uint32_t> WriteRawPacket(absl::Span<uint8_t> ring_memory,
                                        absl::Span<const uint8_t> bytes);

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_RING_FAULT_H_
