#include "core/runtime/transaction_table.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace vbus {

namespace {
constexpr uint32_t kInitialSlots = 16;
}  // namespace

TransactionTable::TransactionTable(uint32_t capacity)
    : capacity_(std::clamp<uint32_t>(capacity, 1, kMaxCapacity)) {
  const uint32_t initial = std::min(capacity_, kInitialSlots);
  slots_.resize(initial);
  free_.reserve(initial);
  // Push in reverse so that slot 0 is handed out first.
  for (uint32_t i = initial; i > 0; --i) free_.push_back(i - 1);
}

absl::StatusOr<uint64_t> TransactionTable::Allocate(CompletionCallback callback) {
  MutexLock lock(&mu_);
  if (free_.empty() && slots_.size() < capacity_) {
    // Grow: double, up to the capacity. New slots start at generation 0 like the first ones.
    const uint32_t old_size = static_cast<uint32_t>(slots_.size());
    const uint32_t new_size = std::min(capacity_, old_size * 2);
    slots_.resize(new_size);
    for (uint32_t i = new_size; i > old_size; --i) free_.push_back(i - 1);
  }
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("all %u transaction slots are waiting for completions", slots_.size()));
  }
  const uint32_t index = free_.back();
  free_.pop_back();
  Slot& slot = slots_[index];
  // A new generation per use; 0 is skipped so an id is never all-zero in its high half.
  slot.generation = slot.generation == UINT32_MAX ? 1 : slot.generation + 1;
  slot.outstanding = true;
  slot.callback = std::move(callback);
  return MakeId(index, slot.generation);
}

TransactionTable::Slot* TransactionTable::Find(uint64_t trans_id, uint32_t* index) {
  const uint32_t low = static_cast<uint32_t>(trans_id);
  // Slots not created yet were never handed out: such ids are unknown, as beyond capacity.
  if (low == 0 || low > slots_.size()) return nullptr;
  *index = low - 1;
  return &slots_[low - 1];
}

TransactionTable::Match TransactionTable::Take(uint64_t trans_id) {
  Match match;
  MutexLock lock(&mu_);
  uint32_t index = 0;
  Slot* slot = Find(trans_id, &index);
  if (slot == nullptr) {
    match.outcome = Outcome::kUnknown;
    return match;
  }
  if (!slot->outstanding || slot->generation != GenerationOf(trans_id)) {
    match.outcome = Outcome::kStale;
    return match;
  }
  slot->outstanding = false;
  match.outcome = Outcome::kMatched;
  match.callback = std::move(slot->callback);
  slot->callback = nullptr;
  free_.push_back(index);
  return match;
}

CompletionCallback TransactionTable::Cancel(uint64_t trans_id) {
  MutexLock lock(&mu_);
  uint32_t index = 0;
  Slot* slot = Find(trans_id, &index);
  if (slot == nullptr || !slot->outstanding || slot->generation != GenerationOf(trans_id)) {
    return nullptr;
  }
  slot->outstanding = false;
  CompletionCallback callback = std::move(slot->callback);
  slot->callback = nullptr;
  free_.push_back(index);
  return callback;
}

std::vector<std::pair<uint64_t, CompletionCallback>> TransactionTable::TakeAll() {
  std::vector<std::pair<uint64_t, CompletionCallback>> taken;
  MutexLock lock(&mu_);
  for (uint32_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    if (!slot.outstanding) continue;
    slot.outstanding = false;
    taken.emplace_back(MakeId(i, slot.generation), std::move(slot.callback));
    slot.callback = nullptr;
    free_.push_back(i);
  }
  return taken;
}

size_t TransactionTable::outstanding() const {
  MutexLock lock(&mu_);
  return slots_.size() - free_.size();
}

}  // namespace vbus
