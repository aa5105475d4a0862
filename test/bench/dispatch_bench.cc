// Event dispatch: events delivered per second when 1, 64 or 2047 bits (every valid relid; the
// "2048 bits" case, bit 0 being reserved) are set in the event page, for
//   - vbus: ChannelTable::Dispatcher::Dispatch (word-at-a-time scan, one atomic exchange per
//     non-zero word, a lock-free slot load per event, one dispatch section per scan);
//   - the baseline: the same scan, each relid looked up in an absl::flat_hash_map<relid,
//     target*> under a vbus::Mutex (core/runtime/sync.h, on std::mutex; locked per lookup, as a
//     lock-protected channel list would be);
// both calling the same virtual OnEvent. Each iteration sets the bits (plain stores into the
// page: the signaller's cost is not part of dispatch) and dispatches them; 64 bits are spread two
// per word so every word is non-zero. A second variant runs two dispatcher threads on two pages
// sharing one table (the map's mutex is then contended).
//
// Run: bazel run --config=opt //test/bench:dispatch_bench
// Counter: items_per_second = events dispatched per second.
#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "benchmark/benchmark.h"
#include "core/data/channel_table.h"
#include "core/data/event_page.h"
#include "core/runtime/sync.h"

namespace vbus {
namespace {

class CountingTarget : public EventTarget {
 public:
  // A relaxed load + store, not an atomic add: the work a real callback does first (note the
  // event), without making the benchmark measure a contended RMW.
  bool OnEvent(uint32_t relid) override {
    sum_.store(sum_.load(std::memory_order_relaxed) + relid, std::memory_order_relaxed);
    return false;
  }
  std::atomic<uint64_t> sum_{0};
};

// Shared by all benchmark threads: targets for every relid, published in both structures.
struct World {
  World() : targets(protocol::kRelidCount) {
    for (uint32_t relid = 1; relid < protocol::kRelidCount; ++relid) {
      if (!table.Publish(relid, &targets[relid]).ok()) std::abort();
      map[relid] = &targets[relid];
    }
  }
  ~World() {
    for (uint32_t relid = 1; relid < protocol::kRelidCount; ++relid) {
      if (!table.Unpublish(relid, &targets[relid]).ok()) std::abort();
    }
  }
  std::vector<CountingTarget> targets;
  ChannelTable table;
  Mutex mu;
  absl::flat_hash_map<uint32_t, EventTarget*> map ABSL_GUARDED_BY(mu);
};

World& GetWorld() {
  static World* world = new World();
  return *world;
}

// The relids set per iteration: n bits spread evenly over the page.
std::vector<uint32_t> Relids(int n) {
  std::vector<uint32_t> relids;
  if (n >= static_cast<int>(protocol::kRelidCount) - 1) {
    for (uint32_t r = 1; r < protocol::kRelidCount; ++r) relids.push_back(r);
    return relids;
  }
  const uint32_t stride = protocol::kRelidCount / static_cast<uint32_t>(n);
  for (int i = 0; i < n; ++i) relids.push_back(1 + static_cast<uint32_t>(i) * stride);
  return relids;
}

// The page's words with those bits set (what the signaller leaves behind).
std::vector<uint64_t> Words(const std::vector<uint32_t>& relids) {
  std::vector<uint64_t> words(EventPage::kWords, 0);
  for (uint32_t r : relids) words[r / 64] |= uint64_t{1} << (r % 64);
  return words;
}

struct alignas(64) PageMemory {
  uint64_t words[EventPage::kWords];
};

// Sets the bits with plain (relaxed) stores: each page has a single thread here, so this is
// what the signaller's EventPage::Set calls leave behind, without timing the signaller's
// atomic ORs (the other side's cost) as part of dispatch.
void Signal(PageMemory& memory, const std::vector<uint64_t>& words) {
  for (size_t i = 0; i < EventPage::kWords; ++i) {
    if (words[i] != 0) {
      std::atomic_ref<uint64_t>(memory.words[i]).store(words[i], std::memory_order_relaxed);
    }
  }
}

void BM_DispatchChannelTable(benchmark::State& state) {
  World& world = GetWorld();
  const std::vector<uint32_t> relids = Relids(static_cast<int>(state.range(0)));
  const std::vector<uint64_t> words = Words(relids);
  PageMemory memory{};
  EventPage page = *EventPage::Attach({reinterpret_cast<uint8_t*>(memory.words), 256});
  absl::StatusOr<ChannelTable::Dispatcher> dispatcher = world.table.RegisterDispatcher();
  if (!dispatcher.ok()) std::abort();
  for (auto _ : state) {
    Signal(memory, words);
    const DispatchStats stats = dispatcher->Dispatch(page);
    benchmark::DoNotOptimize(stats);
  }
  if (dispatcher->delivered() != static_cast<uint64_t>(state.iterations()) * relids.size()) {
    state.SkipWithError("lost events");
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(relids.size()));
}

void BM_DispatchMutexHashMap(benchmark::State& state) {
  World& world = GetWorld();
  const std::vector<uint32_t> relids = Relids(static_cast<int>(state.range(0)));
  const std::vector<uint64_t> words = Words(relids);
  PageMemory memory{};
  EventPage page = *EventPage::Attach({reinterpret_cast<uint8_t*>(memory.words), 256});
  uint64_t delivered = 0;
  for (auto _ : state) {
    Signal(memory, words);
    page.Scan([&](uint32_t relid) {
      EventTarget* target;
      {
        MutexLock lock(&world.mu);
        auto it = world.map.find(relid);
        target = it == world.map.end() ? nullptr : it->second;
      }
      if (target != nullptr) {
        target->OnEvent(relid);
        ++delivered;
      }
    });
  }
  if (delivered != static_cast<uint64_t>(state.iterations()) * relids.size()) {
    state.SkipWithError("lost events");
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(relids.size()));
}

BENCHMARK(BM_DispatchChannelTable)->Arg(1)->Arg(64)->Arg(2048);
BENCHMARK(BM_DispatchMutexHashMap)->Arg(1)->Arg(64)->Arg(2048);
// Two dispatcher threads (each with its own page) on one table / one map. The targets'
// counters are shared, as two vCPUs delivering to the same channels would share them.
BENCHMARK(BM_DispatchChannelTable)->Arg(64)->Threads(2)->UseRealTime();
BENCHMARK(BM_DispatchMutexHashMap)->Arg(64)->Threads(2)->UseRealTime();

}  // namespace
}  // namespace vbus
