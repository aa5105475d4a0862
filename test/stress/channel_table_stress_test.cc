// Channel-table stress: signaller threads set random relids in an EventPage while dispatcher
// threads scan it through a ChannelTable and a control thread publishes and unpublishes
// channels (deleting each target as soon as InUse says no dispatcher delivers to it, so ASan
// sees any use after the unpublish). The dispatchers scan until every posted unit of work was
// claimed; there is no final sweep. (test/stress/dispatch_stress_test covers the whole path from
// a futex doorbell through ChannelBus to the channels' callbacks.)
//
// Proven at the end:
// - exactly once: for channels published throughout, the number of OnEvent calls equals the
//   number of Set calls that reported a 0 → 1 transition (each such signal is delivered once);
// - no lost interrupts: every unit of work a signaller posted before its Set (even a Set that
//   found the bit already set) was picked up by some OnEvent;
// - accounting: all 0 → 1 transitions = deliveries + spurious events, over all relids;
// - no delivery to a retired target (a liveness flag checked in OnEvent; ASan and TSan check
//   the memory side).
//
// VBUS_DISPATCH_STRESS_SIGNALS overrides the signals per signaller thread (default 150,000;
// 40,000 under a sanitizer).
#include <atomic>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "core/data/channel_table.h"
#include "core/data/event_page.h"
#include "gtest/gtest.h"
#include "test/stress/stress_util.h"

namespace vbus {
namespace {

constexpr uint32_t kStableFirst = 1, kStableCount = 48;     // relids 1..48
constexpr uint32_t kChurnFirst = 100, kChurnCount = 16;     // relids 100..115
constexpr uint32_t kAbsentFirst = 2000, kAbsentCount = 47;  // 2000..2046: never
constexpr int kSignallers = 2, kDispatchers = 2;

class StableTarget : public EventTarget {
 public:
  bool OnEvent(uint32_t relid) override {
    if (relid != relid_) wrong_relid.fetch_add(1, std::memory_order_relaxed);
    events.fetch_add(1, std::memory_order_relaxed);
    // [TST-W2] acq_rel: take all work posted so far; pairs with the signallers' [TST-W1] (the
    // event page's [EP-S1]/[EP-C1] already order it, this keeps the counter itself race-free).
    work_done.fetch_add(work_posted_unclaimed.exchange(0, std::memory_order_acq_rel),
                        std::memory_order_relaxed);
    return false;
  }
  uint32_t relid_ = 0;
  std::atomic<uint64_t> events{0}, work_done{0}, work_posted_unclaimed{0}, wrong_relid{0};
};

// Churned targets are heap objects deleted right after Retire returns.
class ChurnTarget : public EventTarget {
 public:
  explicit ChurnTarget(std::atomic<uint64_t>* deliveries, std::atomic<uint64_t>* violations)
      : deliveries_(deliveries), violations_(violations) {}
  bool OnEvent(uint32_t) override {
    if (!alive_.load(std::memory_order_acquire)) {  // [TST-A2] pairs with [TST-A1]
      violations_->fetch_add(1, std::memory_order_relaxed);
    }
    deliveries_->fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  std::atomic<bool> alive_{true};

 private:
  std::atomic<uint64_t>* deliveries_;
  std::atomic<uint64_t>* violations_;
};

// Both forms of the hazard handshake (channel_table.h, step 6): the process barrier on the
// reader's side, and seq_cst stores on both sides.
class DispatchStressTest : public ::testing::TestWithParam<bool> {};

INSTANTIATE_TEST_SUITE_P(Handshakes, DispatchStressTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "ProcessBarrier" : "SeqCstStores";
                         });

TEST_P(DispatchStressTest, ExactlyOnceNoLostSignalsNoUseAfterRetire) {
  const uint64_t signals_per_thread =
      stress::EnvOr("VBUS_DISPATCH_STRESS_SIGNALS", stress::kSanitized ? 40'000 : 150'000);
  alignas(8) static uint8_t memory[EventPage::kBytes];
  std::memset(memory, 0, sizeof(memory));
  absl::StatusOr<EventPage> page_or = EventPage::Attach(absl::MakeSpan(memory));
  ASSERT_TRUE(page_or.ok());
  EventPage page = *page_or;
  ChannelTable table(/*use_process_barrier=*/GetParam());

  std::vector<StableTarget> stable(kStableCount);
  for (uint32_t i = 0; i < kStableCount; ++i) {
    stable[i].relid_ = kStableFirst + i;
    ASSERT_TRUE(table.Publish(kStableFirst + i, &stable[i]).ok());
  }
  std::atomic<uint64_t> churn_deliveries{0}, violations{0};

  // transitions[t][relid]: Set calls by signaller t that reported the bit was clear.
  std::vector<std::vector<uint64_t>> transitions(kSignallers,
                                                 std::vector<uint64_t>(protocol::kRelidCount, 0));
  std::vector<std::vector<uint64_t>> work_by_thread(kSignallers,
                                                    std::vector<uint64_t>(kStableCount, 0));
  std::atomic<int> producers_running{kSignallers + 1};
  std::atomic<bool> stop_dispatchers{false};
  uint64_t churn_cycles = 0;

  std::vector<std::thread> threads;
  for (int t = 0; t < kSignallers; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1000 + t);
      for (uint64_t i = 0; i < signals_per_thread; ++i) {
        const uint32_t pick = rng() % 100;
        uint32_t relid;
        if (pick < 70) {
          const uint32_t index = rng() % kStableCount;
          relid = kStableFirst + index;
          // Post work before signalling, like a host writing a ring before setting the bit.
          // [TST-W1] release, pairs with [TST-W2]: the work is posted before its signal.
          stable[index].work_posted_unclaimed.fetch_add(1, std::memory_order_release);
          ++work_by_thread[t][index];
        } else if (pick < 95) {
          relid = kChurnFirst + rng() % kChurnCount;
        } else {
          relid = kAbsentFirst + rng() % kAbsentCount;
        }
        absl::StatusOr<bool> was_clear = page.Set(relid);
        if (!was_clear.ok()) {
          ADD_FAILURE() << was_clear.status();
          break;
        }
        transitions[t][relid] += *was_clear;
        // Give the dispatchers (and the control thread) a chance on a small machine, so
        // that signals interleave with scans instead of piling up on already-set bits.
        if (i % 4 == 0) std::this_thread::yield();
      }
      producers_running.fetch_sub(1);
    });
  }

  // Control thread: publish and retire the churned relids over and over.
  threads.emplace_back([&] {
    std::mt19937 rng(77);
    std::vector<ChurnTarget*> live(kChurnCount, nullptr);
    while (producers_running.load() > 1) {
      const uint32_t index = rng() % kChurnCount;
      const uint32_t relid = kChurnFirst + index;
      if (live[index] == nullptr) {
        live[index] = new ChurnTarget(&churn_deliveries, &violations);
        absl::Status s = table.Publish(relid, live[index]);
        if (!s.ok()) ADD_FAILURE() << s;
      } else {
        absl::Status gone = table.Unpublish(relid, live[index]);
        if (gone.ok()) gone = table.WaitUntilUnused(relid, absl::Now() + absl::Seconds(30));
        if (!gone.ok()) {
          ADD_FAILURE() << "retire of relid " << relid << ": " << gone;
          break;
        }
        // [TST-A1] release, pairs with [TST-A2] (a delivery after this is a violation).
        live[index]->alive_.store(false, std::memory_order_release);
        delete live[index];  // ASan: any later OnEvent on it is a use-after-free
        live[index] = nullptr;
        ++churn_cycles;
      }
      if (churn_cycles % 64 == 0) std::this_thread::yield();
    }
    for (uint32_t index = 0; index < kChurnCount; ++index) {
      if (live[index] == nullptr) continue;
      absl::Status gone = table.Unpublish(kChurnFirst + index, live[index]);
      if (gone.ok()) {
        gone = table.WaitUntilUnused(kChurnFirst + index, absl::Now() + absl::Seconds(30));
      }
      if (!gone.ok()) ADD_FAILURE() << gone;
      live[index]->alive_.store(false, std::memory_order_release);  // [TST-A1]
      delete live[index];
    }
    producers_running.fetch_sub(1);
  });

  std::atomic<uint64_t> delivered{0}, spurious{0};
  std::vector<std::thread> dispatchers;
  for (int d = 0; d < kDispatchers; ++d) {
    dispatchers.emplace_back([&] {
      absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table.RegisterDispatcher();
      if (!dispatcher.ok()) {
        ADD_FAILURE() << dispatcher.status();
        return;
      }
      while (!stop_dispatchers.load(std::memory_order_acquire)) {  // [TST-S2], see [TST-S1]
        const DispatchStats stats = dispatcher->Dispatch(page);
        if (stats.delivered + stats.spurious == 0) std::this_thread::yield();
      }
      delivered.fetch_add(dispatcher->delivered());
      spurious.fetch_add(dispatcher->spurious());
    });
  }

  for (std::thread& t : threads) t.join();
  // The dispatchers go on until every bit is taken and every posted unit of work claimed; a
  // signal they lost would leave work unclaimed and the wait below would run out.
  auto drained = [&] {
    for (uint32_t relid = 1; relid < protocol::kRelidCount; ++relid) {
      if (page.IsSet(relid)) return false;
    }
    for (const StableTarget& t : stable) {
      if (t.work_posted_unclaimed.load(std::memory_order_relaxed) != 0) return false;
    }
    return true;
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (!drained() && absl::Now() < deadline) std::this_thread::yield();
  EXPECT_TRUE(drained()) << "signalled work was never delivered";
  // [TST-S1] release: pairs with [TST-S2]; the dispatchers' counters are read after the joins.
  stop_dispatchers.store(true, std::memory_order_release);
  for (std::thread& t : dispatchers) t.join();

  uint64_t all_transitions = 0, stable_events = 0;
  for (uint32_t i = 0; i < kStableCount; ++i) {
    const uint32_t relid = kStableFirst + i;
    uint64_t relid_transitions = 0, posted = 0;
    for (int t = 0; t < kSignallers; ++t) {
      relid_transitions += transitions[t][relid];
      posted += work_by_thread[t][i];
    }
    // Exactly once per signal, and all posted work delivered.
    EXPECT_EQ(stable[i].events.load(), relid_transitions) << "relid " << relid;
    EXPECT_EQ(stable[i].work_done.load(), posted) << "relid " << relid;
    EXPECT_EQ(stable[i].work_posted_unclaimed.load(), 0u) << "relid " << relid;
    EXPECT_EQ(stable[i].wrong_relid.load(), 0u);
    stable_events += stable[i].events.load();
  }
  for (int t = 0; t < kSignallers; ++t) {
    for (uint64_t n : transitions[t]) all_transitions += n;
  }
  EXPECT_EQ(delivered.load() + spurious.load(), all_transitions);
  EXPECT_EQ(delivered.load(), stable_events + churn_deliveries.load());
  EXPECT_EQ(table.spurious_events(), spurious.load());
  EXPECT_EQ(violations.load(), 0u);
  // The run exercised churn and both outcomes for churned relids.
  EXPECT_GT(churn_cycles, 10u);
  EXPECT_GT(churn_deliveries.load(), 0u);
  EXPECT_GT(spurious.load(), 0u);
  std::printf(
      "%llu signals, %llu 0->1 transitions: %llu delivered (%llu to churned targets), %llu "
      "spurious; %llu publish/retire cycles\n",
      static_cast<unsigned long long>(signals_per_thread * kSignallers),
      static_cast<unsigned long long>(all_transitions),
      static_cast<unsigned long long>(delivered.load()),
      static_cast<unsigned long long>(churn_deliveries.load()),
      static_cast<unsigned long long>(spurious.load()),
      static_cast<unsigned long long>(churn_cycles));
}

}  // namespace
}  // namespace vbus
