// MirroredMapping: ring memory mapped as RingMapping::kMirrored (core/data/ring_buffer.h).
//
// A ring of 4096 + D bytes (control page, data area of D bytes) at `offset` in a file is mapped
// at one virtual range of 4096 + 2D bytes: the control page and the data area, then the data
// area a second time. Both mappings share the file's pages (MAP_SHARED), so a write through
// either is seen through the other, and a packet that wraps the end of the data area is
// contiguous in memory. This is how a backend whose guest memory is a file (the mock
// platform's shared file, a memfd) gives the ring classes a mirrored ring; a backend whose
// memory cannot be mapped twice uses the single mapping.
//
// Example:
//   absl::StatusOr<MirroredMapping> m = MirroredMapping::Map(fd, ring_offset, ring_bytes);
//   if (!m.ok()) return m.status();
//   absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(m->memory(), RingMapping::kMirrored);
//
// Thread-compatible; move-only. The mapping is removed when the object is destroyed: no ring
// object attached to it may be used afterwards.
#ifndef VBUS_CORE_DATA_MIRRORED_MAPPING_H_
#define VBUS_CORE_DATA_MIRRORED_MAPPING_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vbus {

class MirroredMapping {
 public:
  // Map
  // Maps the `ring_bytes` bytes at `offset` of `fd` (readable and writable, shared) mirrored.
  // `offset` and `ring_bytes` must be page multiples and `ring_bytes` at least two pages
  // (InvalidArgument otherwise); the caller keeps `fd`'s pages there for the mapping's life.
  // Internal for a failing mmap (named, with errno).
  static absl::StatusOr<MirroredMapping> Map(int fd, uint64_t offset, size_t ring_bytes);

  // Anonymous
  // A fresh zero-filled ring of `ring_bytes` in its own memory file (memfd), mirrored: for
  // rings a single process owns (benchmarks, tests). Errors as Map.
  static absl::StatusOr<MirroredMapping> Anonymous(size_t ring_bytes);

  MirroredMapping(MirroredMapping&& other) noexcept;
  MirroredMapping& operator=(MirroredMapping&& other) noexcept;
  MirroredMapping(const MirroredMapping&) = delete;
  MirroredMapping& operator=(const MirroredMapping&) = delete;
  ~MirroredMapping();

  // The whole mirrored range (4096 + 2 × data area bytes), for Attach(..., kMirrored).
  absl::Span<uint8_t> memory() const { return {base_, size_}; }
  // The ring as a single mapping (its first 4096 + data area bytes): for InitializeRing and
  // for a peer that does not use the mirror.
  absl::Span<uint8_t> ring() const { return {base_, ring_bytes_}; }

 private:
  MirroredMapping(uint8_t* base, size_t size, size_t ring_bytes, int owned_fd)
      : base_(base), size_(size), ring_bytes_(ring_bytes), owned_fd_(owned_fd) {}
  void Reset();

  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  size_t ring_bytes_ = 0;
  int owned_fd_ = -1;  // Anonymous's memory file
};

}  // namespace vbus

#endif  // VBUS_CORE_DATA_MIRRORED_MAPPING_H_
