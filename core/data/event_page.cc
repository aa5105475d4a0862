#include "core/data/event_page.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace vbus {

absl::Status ValidateRelid(uint32_t relid) {
  if (relid == 0) return absl::InvalidArgumentError("relid 0 is reserved");
  if (relid >= protocol::kRelidCount) {
    return absl::InvalidArgumentError(absl::StrFormat("relid %u is out of range (must be below %u)",
                                                      relid, protocol::kRelidCount));
  }
  return absl::OkStatus();
}

absl::StatusOr<EventPage> EventPage::Attach(absl::Span<uint8_t> memory) {
  if (memory.size() < kBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "event page memory of %u bytes is shorter than the %u-byte bitmap", memory.size(), kBytes));
  }
  if (reinterpret_cast<uintptr_t>(memory.data()) % alignof(uint64_t) != 0) {
    return absl::InvalidArgumentError("event page memory is not 8-byte aligned");
  }
  return EventPage(reinterpret_cast<uint64_t*>(memory.data()));
}

absl::StatusOr<bool> EventPage::Set(uint32_t relid) {
  if (absl::Status s = ValidateRelid(relid); !s.ok()) return s;
  const uint64_t bit = uint64_t{1} << (relid % 64);
  // [EP-S1] release (acq_rel) OR: pairs with the scanner's [EP-C1] exchange, publishing everything
  // the signaller wrote before (ring packets, write_index) to the visitor that sees the bit.
  const uint64_t before = Word(relid / 64).fetch_or(bit, std::memory_order_acq_rel);
  return (before & bit) == 0;
}

bool EventPage::IsSet(uint32_t relid) const {
  if (relid >= protocol::kRelidCount) return false;
  return (Word(relid / 64).load(std::memory_order_relaxed) >> (relid % 64)) & 1;
}

absl::StatusOr<bool> EventPage::Clear(uint32_t relid) {
  if (absl::Status s = ValidateRelid(relid); !s.ok()) return s;
  const uint64_t mask = uint64_t{1} << (relid % 64);
  // Relaxed: the caller discards the bit and reads nothing its signaller wrote.
  return (Word(relid / 64).fetch_and(~mask, std::memory_order_relaxed) & mask) != 0;
}

void EventPage::ClearAll() {
  for (size_t i = 0; i < kWords; ++i) Word(i).store(0, std::memory_order_relaxed);
}

}  // namespace vbus
