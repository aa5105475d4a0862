// HostEngine: what a resume changes — the relids (and monitor ids) a guest's channels are
// offered under again after its Unload (HostSettings.remap_relids_on_resume and
// permute_relids_on_resume).
#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "mock/host/engine.h"
#include "mock/host/engine_internal.h"

namespace vbus::mock {

void HostEngine::RemapOnResume(Guest& g) {
  std::vector<Channel*> order;
  for (auto& [relid, c] : g.channels) order.push_back(&c);
  std::sort(order.begin(), order.end(),
            [](const Channel* a, const Channel* b) { return a->order < b->order; });
  absl::flat_hash_map<uint32_t, uint32_t> renumber;
  if (settings_.permute_relids_on_resume()) {
    if (order.size() < 2) return;
    // The same relids, rotated by a seeded amount in 1..n-1 (a rotation moves every one).
    std::vector<uint32_t> relids;
    for (const Channel* c : order) relids.push_back(c->relid);
    const size_t shift = 1 + std::uniform_int_distribution<size_t>(0, relids.size() - 2)(rng_);
    for (size_t i = 0; i < relids.size(); ++i) {
      renumber[relids[i]] = relids[(i + shift) % relids.size()];
    }
    // The monitored channels' monitor ids move the same way among themselves.
    std::vector<Channel*> monitored;
    for (Channel* c : order) {
      if (c->monitor_id.has_value()) monitored.push_back(c);
    }
    if (monitored.size() >= 2) {
      std::vector<uint32_t> ids;
      for (const Channel* c : monitored) ids.push_back(*c->monitor_id);
      for (size_t i = 0; i < monitored.size(); ++i) {
        const uint32_t id = ids[(i + 1) % ids.size()];
        monitored[i]->monitor_id = id;
        monitored[i]->offer.set_monitor_id(id);
      }
    }
  } else {
    // Take every new relid while the old ones are still taken, so none coincides with its old
    // number. Without room for that (over 1023 channels), keep the old relids.
    for (Channel* c : order) {
      absl::StatusOr<uint32_t> r = g.relids.Allocate();
      if (!r.ok()) {
        for (const auto& [old_relid, new_relid] : renumber) (void)g.relids.Release(new_relid);
        return;
      }
      renumber[c->relid] = *r;
      g.second_release_expected.erase(*r);
    }
    for (const auto& [old_relid, new_relid] : renumber) (void)g.relids.Release(old_relid);
  }
  absl::btree_map<uint32_t, Channel> remapped;
  for (auto& [old_relid, c] : g.channels) {
    Channel moved = std::move(c);
    moved.relid = renumber.at(old_relid);
    if (moved.primary_relid != 0) moved.primary_relid = renumber.at(moved.primary_relid);
    for (uint32_t& sub : moved.sub_relids) sub = renumber.at(sub);
    moved.offer.set_child_relid(moved.relid);
    moved.offer.set_connection_id(kChannelConnectionIdBase + moved.relid);
    const uint32_t relid = moved.relid;
    remapped.emplace(relid, std::move(moved));
  }
  g.channels = std::move(remapped);
  for (auto& [instance, relid] : g.live_instances) relid = renumber.at(relid);
}

}  // namespace vbus::mock
