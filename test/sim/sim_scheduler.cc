#include "test/sim/sim_scheduler.h"

#include <algorithm>
#include <utility>

namespace vbus::sim {

SimScheduler::EventId SimScheduler::At(absl::Time when, Kind kind, std::string label,
                                       std::function<void()> fn) {
  if (when < now_) when = now_;
  const EventId id = next_id_++;
  const Key key{when, next_order_++};
  queue_.emplace(key, Entry{id, kind, std::move(label), std::move(fn)});
  keys_.emplace(id, key);
  if (kind == kWork) ++work_;
  return id;
}

bool SimScheduler::Cancel(EventId id) {
  auto k = keys_.find(id);
  if (k == keys_.end()) return false;
  auto it = queue_.find(k->second);
  if (it->second.kind == kWork) --work_;
  queue_.erase(it);
  keys_.erase(k);
  return true;
}

bool SimScheduler::RunNext(const std::function<void(absl::string_view label)>& before) {
  if (queue_.empty()) return false;
  auto it = queue_.begin();
  now_ = it->first.first;
  Entry entry = std::move(it->second);
  queue_.erase(it);
  keys_.erase(entry.id);
  if (entry.kind == kWork) --work_;
  if (before) before(entry.label);
  entry.fn();
  return true;
}

void SimScheduler::AdvanceTo(absl::Time when) {
  if (!queue_.empty()) when = std::min(when, queue_.begin()->first.first);
  now_ = std::max(now_, when);
}

std::optional<absl::Time> SimScheduler::NextTime() const {
  if (queue_.empty()) return std::nullopt;
  return queue_.begin()->first.first;
}

}  // namespace vbus::sim
