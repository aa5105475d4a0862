// RelidAllocator: hands out a guest's relids (1..2047) and takes them back.
//
// The host names each channel it offers a guest with a relid. A relid stays taken from the
// offer until the guest's RelidReleased (or until the host withdraws an offer the guest never
// saw), and only then may be handed out again. Allocation is deterministic: the lowest free
// relid that is not excluded, so a test or a simulation seed always sees the same numbers.
//
// Example:
//   RelidAllocator relids;
//   absl::StatusOr<uint32_t> r = relids.Allocate();   // 1
//   relids.Release(*r);
//
// Thread-compatible (the engine owns one per guest).
#ifndef VBUS_MOCK_HOST_RELID_ALLOCATOR_H_
#define VBUS_MOCK_HOST_RELID_ALLOCATOR_H_

#include <bitset>
#include <cstdint>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/protocol.h"

namespace vbus::mock {

class RelidAllocator {
 public:
  // Allocate
  // The lowest free relid not in `exclude`, now taken. ResourceExhausted when all of
  // protocol::kMinRelid..kMaxRelid are taken or excluded.
  absl::StatusOr<uint32_t> Allocate(const absl::flat_hash_set<uint32_t>& exclude = {});

  // Release
  // Frees `relid`. FailedPrecondition if it is not taken; InvalidArgument if out of range.
  absl::Status Release(uint32_t relid);

  // IsTaken: false for out-of-range relids.
  bool IsTaken(uint32_t relid) const;
  uint32_t taken_count() const { return static_cast<uint32_t>(taken_.count()); }

 private:
  std::bitset<protocol::kRelidCount> taken_;  // bit 0 never set
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_RELID_ALLOCATOR_H_
