// Internal pieces of the binary VMBus codec (hyperv/wire.h) shared by wire.cc and
// wire_gpadl.cc: the private copy a decoder reads from, the writer an encoder fills, and the
// field checks both directions apply. Not part of the codec's interface.
#ifndef VBUS_HYPERV_WIRE_INTERNAL_H_
#define VBUS_HYPERV_WIRE_INTERNAL_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/data/guid.h"
#include "core/data/protocol.h"
#include "hyperv/wire.h"
#include "proto/control.pb.h"

namespace vbus::hyperv::wire_internal {

// WireCopy: the decoder's private copy of one message. Constructed only from a payload of at
// most 240 bytes; every field is read from here, once. Reads are little-endian; a read past the
// message's length yields 0 (callers check lengths first, so this never decides anything).
class WireCopy {
 public:
  explicit WireCopy(absl::Span<const uint8_t> payload) : size_(payload.size()) {
    std::memcpy(bytes_.data(), payload.data(), payload.size());
  }
  size_t size() const { return size_; }
  uint8_t U8(size_t at) const { return at < size_ ? bytes_[at] : 0; }
  uint16_t U16(size_t at) const { return static_cast<uint16_t>(Read(at, 2)); }
  uint32_t U32(size_t at) const { return static_cast<uint32_t>(Read(at, 4)); }
  uint64_t U64(size_t at) const { return Read(at, 8); }
  // The GUID in wire order at `at`, as the neutral text form.
  v1::Guid GuidAt(size_t at) const;
  const uint8_t* data(size_t at) const { return bytes_.data() + at; }

 private:
  uint64_t Read(size_t at, size_t width) const {
    uint64_t v = 0;
    for (size_t i = 0; i < width; ++i) v |= static_cast<uint64_t>(U8(at + i)) << (8 * i);
    return v;
  }
  std::array<uint8_t, protocol::kMaxMessagePayloadBytes> bytes_{};
  size_t size_;
};

// WireWriter: one message being encoded, zero-filled, with its type in the header.
class WireWriter {
 public:
  WireWriter(WireType type, size_t size) : bytes_(size, 0) { U32(0, static_cast<uint32_t>(type)); }
  void U8(size_t at, uint8_t v) { bytes_.at(at) = v; }
  void U16(size_t at, uint16_t v) { Write(at, v, 2); }
  void U32(size_t at, uint32_t v) { Write(at, v, 4); }
  void U64(size_t at, uint64_t v) { Write(at, v, 8); }
  void Bytes(size_t at, const std::string& b) {
    for (size_t i = 0; i < b.size(); ++i) bytes_.at(at + i) = static_cast<uint8_t>(b[i]);
  }
  void GuidAt(size_t at, const Guid& g) {
    uint8_t wire[16];
    g.ToWire(wire);
    for (size_t i = 0; i < 16; ++i) bytes_.at(at + i) = wire[i];
  }
  WireMessage Take() { return std::move(bytes_); }

 private:
  void Write(size_t at, uint64_t v, size_t width) {
    for (size_t i = 0; i < width; ++i) bytes_.at(at + i) = static_cast<uint8_t>(v >> (8 * i));
  }
  WireMessage bytes_;
};

// The checks both directions make; each names the message type and field on failure.
absl::Status CheckRelid(WireType type, const char* field, uint32_t relid);
absl::Status CheckWidth(WireType type, const char* field, uint64_t value, uint64_t max);
absl::Status CheckGpadlHandle(WireType type, uint32_t gpadl);
// The PFN count a range of (byte_offset, byte_count) covers, or InvalidArgument unless the
// range is one of 1..8190 whole pages starting in its first page (docs/protocol.md §6).
absl::StatusOr<uint32_t> GpadlRangePages(uint32_t byte_offset, uint32_t byte_count);
absl::StatusOr<Guid> ParseGuid(WireType type, const char* field, const v1::Guid& guid);

// The GPADL half of the codec (wire_gpadl.cc).
absl::StatusOr<std::vector<WireMessage>> EncodeGpadlCreate(const v1::GpadlCreate& m);
absl::StatusOr<GpadlHeaderPart> DecodeGpadlHeader(const WireCopy& in);
absl::StatusOr<GpadlBodyPart> DecodeGpadlBody(const WireCopy& in);

}  // namespace vbus::hyperv::wire_internal

#endif  // VBUS_HYPERV_WIRE_INTERNAL_H_
