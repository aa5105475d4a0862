#include "mock/host/ring_fault.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"
#include "core/data/ring_buffer.h"

// Memory-ordering labels used below:
//   [RF-W1] a raw packet's write_index store (release) pairs with the reader's acquire load of
//           write_index ([RB-R1] in core/data/ring_buffer.cc): the packet's bytes are visible
//           before the index that covers them.
//   [RF-W2] the read_index load before a raw packet (acquire) pairs with the reader's store of
//           read_index ([RB-R2]): its reads of the bytes it freed happen before they are
//           overwritten.
// Field writes are relaxed: they publish nothing but the value itself.

namespace vbus::mock {
namespace {

// The control-page field a FieldWrite names, or nullptr.
uint32_t* FieldOf(RingControlPage* control, v1::RingFault::Field field) {
  switch (field) {
    case v1::RingFault::FIELD_WRITE_INDEX:
      return &control->write_index;
    case v1::RingFault::FIELD_READ_INDEX:
      return &control->read_index;
    case v1::RingFault::FIELD_INTERRUPT_MASK:
      return &control->interrupt_mask;
    case v1::RingFault::FIELD_PENDING_SEND_SZ:
      return &control->pending_send_sz;
    case v1::RingFault::FIELD_FEATURE_BITS:
      return &control->feature_bits;
    default:
      return nullptr;
  }
}

bool IsIndex(v1::RingFault::Field field) {
  return field == v1::RingFault::FIELD_WRITE_INDEX || field == v1::RingFault::FIELD_READ_INDEX;
}

uint32_t Apply(const v1::RingFault::FieldWrite& write, uint32_t value, uint32_t data_size) {
  switch (write.value_case()) {
    case v1::RingFault::FieldWrite::kSet:
      return write.set();
    case v1::RingFault::FieldWrite::kToggle:
      return value ^ write.toggle();
    case v1::RingFault::FieldWrite::kAdd: {
      if (!IsIndex(write.field())) {
        return static_cast<uint32_t>(value + static_cast<uint64_t>(write.add()));
      }
      const int64_t size = data_size;
      const int64_t moved = (int64_t{value} + write.add() % size) % size;
      return static_cast<uint32_t>(moved < 0 ? moved + size : moved);
    }
    case v1::RingFault::FieldWrite::VALUE_NOT_SET:
      break;
  }
  return value;
}

}  // namespace

absl::StatusOr<FieldWriteOutcome> WriteRingField(absl::Span<uint8_t> ring_memory,
                                                 const v1::RingFault::FieldWrite& write) {
  if (absl::Status s = ValidateRingMemory(ring_memory); !s.ok()) return s;
  auto* control = reinterpret_cast<RingControlPage*>(ring_memory.data());
  uint32_t* field = FieldOf(control, write.field());
  if (field == nullptr) return absl::InvalidArgumentError("ring field write: field is unset");
  if (write.value_case() == v1::RingFault::FieldWrite::VALUE_NOT_SET) {
    return absl::InvalidArgumentError("ring field write: no value (set, add or toggle)");
  }
  if (write.times() > kMaxRingFaultRepeats) {
    return absl::InvalidArgumentError(absl::StrCat("ring field write: ", write.times(),
                                                   " times is above ", kMaxRingFaultRepeats));
  }
  FieldWriteOutcome outcome;
  outcome.data_size = static_cast<uint32_t>(ring_memory.size() - protocol::kPageSize);
  std::atomic_ref<uint32_t> shared(*field);
  outcome.before = shared.load(std::memory_order_relaxed);
  uint32_t value = outcome.before;
  const uint32_t times = std::max<uint32_t>(write.times(), 1);
  for (uint32_t i = 0; i < times; ++i) {
    value = Apply(write, value, outcome.data_size);
    shared.store(value, std::memory_order_relaxed);
  }
  outcome.after = value;
  return outcome;
}

absl::StatusOr<uint32_t> WriteRawPacket(absl::Span<uint8_t> ring_memory,
                                        absl::Span<const uint8_t> bytes) {
  if (absl::Status s = ValidateRingMemory(ring_memory); !s.ok()) return s;
  if (bytes.empty() || bytes.size() > kMaxRawPacketBytes) {
    return absl::InvalidArgumentError(absl::StrCat("raw packet of ", bytes.size(), " bytes: 1..",
                                                   kMaxRawPacketBytes, " allowed"));
  }
  auto* control = reinterpret_cast<RingControlPage*>(ring_memory.data());
  uint8_t* data = ring_memory.data() + protocol::kPageSize;
  const auto size = static_cast<uint32_t>(ring_memory.size() - protocol::kPageSize);
  // The host is this ring's only writer: its own write_index needs no ordering.
  const uint32_t start =
      std::atomic_ref<uint32_t>(control->write_index).load(std::memory_order_relaxed);
  // [RF-W2] acquire: pairs with the reader's [RB-R2] store of read_index.
  const uint32_t read =
      std::atomic_ref<uint32_t>(control->read_index).load(std::memory_order_acquire);
  if (start >= size || start % 8 != 0 || read >= size || read % 8 != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("raw packet: the ring's indices are corrupt (write_index ", start,
                     ", read_index ", read, ", data size ", size, ")"));
  }
  const size_t padded = (bytes.size() + 7) / 8 * 8;
  const size_t needed = padded + kPacketTrailerSize;
  const size_t used = start >= read ? start - read : size - (read - start);
  if (size - used <= needed) {
    return absl::ResourceExhaustedError(
        absl::StrCat("raw packet of ", needed, " ring bytes: ", size - used, " bytes free"));
  }
  uint32_t pos = start;
  auto copy_in = [&](const uint8_t* src, size_t len) {
    const size_t first = std::min<size_t>(len, size - pos);
    std::memcpy(data + pos, src, first);
    if (first < len) std::memcpy(data, src + first, len - first);
    pos = static_cast<uint32_t>((pos + len) % size);
  };
  copy_in(bytes.data(), bytes.size());
  static constexpr uint8_t kZeros[8] = {};
  copy_in(kZeros, padded - bytes.size());
  const uint64_t trailer = uint64_t{start} << 32;
  copy_in(reinterpret_cast<const uint8_t*>(&trailer), sizeof(trailer));
  // [RF-W1] release: pairs with the reader's [RB-R1] acquire load of write_index.
  std::atomic_ref<uint32_t>(control->write_index).store(pos, std::memory_order_release);
  return start;
}

}  // namespace vbus::mock
