// TransactionTable: matches completions to the requests that asked for them.
//
// A guest that sends a packet with kCompletionRequested gives it a transaction id; the host's
// completion packet carries the same id back. The id is the only thing the host returns, and
// the host is not trusted, so ids are never pointers (docs/protocol.md §13): an id names a
// slot in a fixed table, and a completion is accepted only if its slot is in range and outstanding.
//
// Id layout (64 bits, as the ring descriptor's trans_id):
//   bits  0..31  slot index + 1 (0 is reserved for unsolicited packets, which want no answer)
//   bits 32..63  the slot's generation: it changes every time the slot is handed out, so a
//                late completion of a request that already finished (timed out, cancelled)
//                cannot complete the slot's next request. Never 0.
// A completion whose low half is 0 or beyond the table is *unknown*; one whose slot is free or
// holds another generation is *stale*. Both are reported (and counted by the channel) and
// otherwise dropped.
//
// Example:
//   TransactionTable table(256);
//   absl::StatusOr<uint64_t> id = table.Allocate(std::move(callback));   // ResourceExhausted
//   ... write the packet with trans_id = *id ...
//   TransactionTable::Match m = table.Take(completion.trans_id());
//   if (m.outcome == TransactionTable::Outcome::kMatched) m.callback(...);
//
// Thread-safe: senders allocate on their threads while the dispatching thread takes
// completions; one short mutex section per call, no allocation except the callback's own.
#ifndef VBUS_CORE_RUNTIME_TRANSACTION_TABLE_H_
#define VBUS_CORE_RUNTIME_TRANSACTION_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/runtime/sync.h"

namespace vbus {

class PacketView;

// Completion
// What a completion callback receives: the host's answer, or why there will be none.
struct Completion {
  // OK: the host answered and `packet` is its completion packet. Otherwise no answer will come:
  // Cancelled (the guest closed the channel or gave up), Unavailable (the channel was
  // rescinded or the link to the host lost), DataLoss (the inbound ring is corrupt).
  absl::Status status;
  // The request's transaction id.
  uint64_t trans_id = 0;
  // The completion packet (OK only); valid only during the callback (copy what you keep).
  const PacketView* packet = nullptr;
};

// CompletionCallback
// Runs once per request: on the dispatching thread for an answer (must not block), or on the
// thread that closed or lost the channel for a failure.
using CompletionCallback = std::function<void(const Completion&)>;

class TransactionTable {
 public:
  // Largest table a channel may ask for.
  static constexpr uint32_t kMaxCapacity = 1u << 16;

  enum class Outcome {
    kMatched,  // outstanding; now free, `callback` is the request's
    kUnknown,  // id 0 or a slot index beyond the table
    kStale,    // the slot is free or was handed out again since (another generation)
  };
  struct Match {
    Outcome outcome = Outcome::kUnknown;
    CompletionCallback callback;
  };

  // Up to `capacity` slots (1..kMaxCapacity; clamped into that range). Slots are created as
  // needed (the table starts with a few and doubles when all are outstanding), so a channel
  // that allows many requests but has few in flight stays small.
  explicit TransactionTable(uint32_t capacity);
  TransactionTable(const TransactionTable&) = delete;
  TransactionTable& operator=(const TransactionTable&) = delete;

  // Allocate
  // Hands out a free slot for `callback` and returns its transaction id (never 0).
  // ResourceExhausted when every slot is outstanding. Any thread.
  absl::StatusOr<uint64_t> Allocate(CompletionCallback callback);

  // Take
  // The completion with `trans_id` arrived: frees the slot and returns its callback if the id
  // is outstanding (kMatched); otherwise says why not and changes nothing. Any thread.
  Match Take(uint64_t trans_id);

  // Cancel
  // Frees an outstanding slot without calling its callback (the request was never written,
  // or its waiter gave up); returns the callback if it was outstanding, nullptr otherwise
  // (a completion took it first). A later completion with this id is stale. Any thread.
  CompletionCallback Cancel(uint64_t trans_id);

  // TakeAll
  // Frees every outstanding slot; returns (trans_id, callback) pairs in slot order, for the
  // caller to fail (channel closed or lost). Any thread.
  std::vector<std::pair<uint64_t, CompletionCallback>> TakeAll();

  // The most slots the table will have.
  uint32_t capacity() const { return capacity_; }
  size_t outstanding() const;

  // Decoding helpers (also for tests and logs).
  static uint32_t SlotOf(uint64_t trans_id) { return static_cast<uint32_t>(trans_id) - 1; }
  static uint32_t GenerationOf(uint64_t trans_id) { return static_cast<uint32_t>(trans_id >> 32); }

 private:
  struct Slot {
    uint32_t generation = 0;  // of the current (or last) use; 0 = never used
    bool outstanding = false;
    CompletionCallback callback;
  };
  static uint64_t MakeId(uint32_t index, uint32_t generation) {
    return (uint64_t{generation} << 32) | (uint64_t{index} + 1);
  }
  // The slot an id names if it is in range, else nullptr (mu_ held).
  Slot* Find(uint64_t trans_id, uint32_t* index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint32_t capacity_;
  mutable Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);  // grows up to capacity_, never shrinks
  // Free slot indices, used as a stack (the most recently freed slot is reused first: warm).
  std::vector<uint32_t> free_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vbus

#endif  // VBUS_CORE_RUNTIME_TRANSACTION_TABLE_H_
