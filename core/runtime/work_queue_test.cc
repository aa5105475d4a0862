#include "core/runtime/work_queue.h"

#include <deque>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

TEST(WorkQueueTest, TakesEverythingQueuedInOrderAndAppends) {
  WorkQueue<int> queue;
  ASSERT_TRUE(queue.Post(1));
  ASSERT_TRUE(queue.Post(2));
  std::deque<int> out = {0};
  ASSERT_TRUE(queue.TakeAll(absl::InfiniteFuture(), &out));
  EXPECT_EQ(out, (std::deque<int>{0, 1, 2}));
  ASSERT_TRUE(queue.Post(3));
  out.clear();
  ASSERT_TRUE(queue.TakeAll(absl::InfiniteFuture(), &out));
  EXPECT_EQ(out, (std::deque<int>{3}));
}

TEST(WorkQueueTest, WakeDeadlineReturnsEmptyHanded) {
  WorkQueue<int> queue;
  std::deque<int> out;
  EXPECT_TRUE(queue.TakeAll(absl::Now() + absl::Milliseconds(1), &out));
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(queue.TakeAll(absl::InfinitePast(), &out));
  EXPECT_TRUE(out.empty());
}

TEST(WorkQueueTest, CloseRefusesPostsButDrainsWhatIsQueued) {
  WorkQueue<int> queue;
  ASSERT_TRUE(queue.Post(7));
  queue.Close();
  EXPECT_FALSE(queue.Post(8));
  std::deque<int> out;
  ASSERT_TRUE(queue.TakeAll(absl::InfiniteFuture(), &out));
  EXPECT_EQ(out, (std::deque<int>{7}));
  out.clear();
  EXPECT_FALSE(queue.TakeAll(absl::InfiniteFuture(), &out));
  EXPECT_TRUE(out.empty());
}

// One consumer, several producers: every item arrives exactly once, each producer's in order,
// and Close ends the consumer after the last.
TEST(WorkQueueTest, ProducersAndConsumerAcrossThreads) {
  constexpr int kProducers = 4;
  constexpr int kItems = 20000;
  WorkQueue<int> queue;
  std::vector<int> next(kProducers, 0);
  int taken = 0;
  std::thread consumer([&] {
    std::deque<int> out;
    while (queue.TakeAll(absl::Now() + absl::Seconds(60), &out)) {
      for (int item : out) {
        const int producer = item / kItems;
        ASSERT_EQ(item % kItems, next[producer]);
        ++next[producer];
        ++taken;
      }
      out.clear();
    }
  });
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&queue, p] {
      for (int i = 0; i < kItems; ++i) ASSERT_TRUE(queue.Post(p * kItems + i));
    });
  }
  for (std::thread& t : producers) t.join();
  queue.Close();
  consumer.join();
  EXPECT_EQ(taken, kProducers * kItems);
  for (int p = 0; p < kProducers; ++p) EXPECT_EQ(next[p], kItems);
}

}  // namespace
}  // namespace vbus
