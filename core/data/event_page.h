// EventPage: the 2048-bit relid bitmap one side sets to tell the other "channel N has work".
//
// On Hyper-V it is the SINT2 slot of the SynIC event-flags page; on the mock it is a page in
// shared guest memory (one per direction). Bit N belongs to the channel with relid N; bit 0 is
// reserved (it meant "look at the legacy interrupt page" before VMBus 2.4) and is never
// dispatched. The bitmap is 256 bytes of caller-provided memory, read as 32 little-endian
// 64-bit words with atomic operations: the peer may set bits at any time.
//
// The signalling side calls Set(relid): an atomic OR that reports whether the bit was clear,
// which decides whether an interrupt (doorbell, SINT) must be raised. The receiving side calls
// Scan(visitor): word by word, zero words are skipped with one relaxed load; a non-zero word is
// test-and-cleared with one atomic exchange and its set bits are visited lowest first (count
// trailing zeros). Bits set after a word was exchanged stay set for the next scan, so no
// signal is lost and each 0 → 1 transition reported by Set is visited exactly once.
//
// Example:
//   absl::StatusOr<EventPage> page = EventPage::Attach(memory);      // 256 bytes, 8-aligned
//   absl::StatusOr<bool> raise = page->Set(relid);                   // signaller
//   if (raise.ok() && *raise) RingDoorbell();
//   page->Scan([&](uint32_t relid) { table.Lookup(relid)... });      // receiver
//
// Set and Scan may run concurrently from any number of threads (a relid's bit is visited by
// exactly one scanner). Nothing allocates, locks or makes a system call.
#ifndef VBUS_CORE_DATA_EVENT_PAGE_H_
#define VBUS_CORE_DATA_EVENT_PAGE_H_

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/data/protocol.h"

namespace vbus {

// ValidateRelid
// OK for 1 <= relid < protocol::kRelidCount; InvalidArgument naming the relid otherwise.
absl::Status ValidateRelid(uint32_t relid);

// EventPage is a view: cheap to copy, copies refer to the same memory.
class EventPage {
 public:
  static constexpr size_t kBits = protocol::kRelidCount;
  static constexpr size_t kWords = kBits / 64;
  static constexpr size_t kBytes = kBits / 8;  // 256

  // Attach
  // Uses the first kBytes of `memory` (which must outlive the object). InvalidArgument if
  // `memory` is shorter than 256 bytes or not 8-byte aligned. Does not clear the bits.
  static absl::StatusOr<EventPage> Attach(absl::Span<uint8_t> memory);

  // Set
  // Atomically sets the bit for `relid`. Returns true if it was clear (the receiver may be
  // idle: raise the interrupt), false if it was already set (an interrupt is pending; the
  // receiver will see this signal in the same scan). InvalidArgument for relid 0 or
  // relid >= 2048. Any thread.
  absl::StatusOr<bool> Set(uint32_t relid);

  // Scan
  // Test-and-clears every set bit and calls `visit(uint32_t relid)` for each, lowest relid
  // first within a word. Bit 0 is cleared but never visited. Returns the number of visits.
  // The visitor runs on the calling thread and must not block. Any thread; concurrent scans
  // split the bits between them.
  template <typename Visitor>
  size_t Scan(Visitor&& visit);

  // IsSet
  // Whether `relid`'s bit is currently set (a relaxed snapshot, for tests and diagnostics);
  // false for out-of-range relids.
  bool IsSet(uint32_t relid) const;

  // Clear
  // Clears `relid`'s bit and returns whether it was set. For a receiver that knows a set bit is
  // stale (left for a channel that no longer exists, before its relid is used again): a bit a
  // signaller sets after this is kept. InvalidArgument for relid 0 or relid >= 2048.
  absl::StatusOr<bool> Clear(uint32_t relid);

  // ClearAll
  // Clears every bit (e.g. when a bus reconnects). Signals racing with it may be lost: call it
  // only while no peer is signalling.
  void ClearAll();

 private:
  explicit EventPage(uint64_t* words) : words_(words) {}
  std::atomic_ref<uint64_t> Word(size_t i) const { return std::atomic_ref<uint64_t>(words_[i]); }

  uint64_t* words_;
};

template <typename Visitor>
size_t EventPage::Scan(Visitor&& visit) {
  size_t visited = 0;
  for (size_t i = 0; i < kWords; ++i) {
    std::atomic_ref<uint64_t> word = Word(i);
    // A relaxed peek only decides whether the word is worth an exchange: a bit set after it
    // is seen by the next scan (the signaller's interrupt follows its Set).
    if (word.load(std::memory_order_relaxed) == 0) continue;
    // [EP-C1] acq_rel exchange: the test-and-clear of all 64 bits at once. Acquire pairs with
    // the signaller's release in Set [EP-S1], so everything the signaller wrote before setting
    // the bit (ring contents, write_index) is visible to the visitor.
    uint64_t bits = word.exchange(0, std::memory_order_acq_rel);
    if (i == 0) bits &= ~uint64_t{1};  // bit 0: reserved, never dispatched
    while (bits != 0) {
      const uint32_t bit = static_cast<uint32_t>(std::countr_zero(bits));
      bits &= bits - 1;
      visit(static_cast<uint32_t>(i * 64 + bit));
      ++visited;
    }
  }
  return visited;
}

}  // namespace vbus

#endif  // VBUS_CORE_DATA_EVENT_PAGE_H_
