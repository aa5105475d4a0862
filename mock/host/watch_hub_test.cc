#include "mock/host/watch_hub.h"

#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace vbus::mock {
namespace {

absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

TEST(WatchHubTest, FiltersAndOrders) {
  WatchHub<int> hub(16);
  auto all = hub.Subscribe(nullptr);
  auto even = hub.Subscribe([](const int& i) { return i % 2 == 0; });
  EXPECT_TRUE(hub.HasWatchers());
  int sequence = 0;
  for (int i = 1; i <= 4; ++i) hub.Publish(i, [&](int& v) { v = v * 10 + ++sequence; });
  for (int want : {11, 22, 33, 44}) EXPECT_EQ(**all->Next(Soon()), want);
  EXPECT_EQ(**even->Next(Soon()), 22);
  EXPECT_EQ(**even->Next(Soon()), 44);
  EXPECT_FALSE(even->Next(absl::Now() + absl::Milliseconds(5))->has_value());  // timed out
}

TEST(WatchHubTest, SlowWatchersDropTheOldest) {
  WatchHub<int> hub(3);
  auto sub = hub.Subscribe(nullptr);
  for (int i = 0; i < 5; ++i) hub.Publish(i);
  EXPECT_EQ(sub->dropped(), 2u);
  EXPECT_EQ(**sub->Next(Soon()), 2);
}

TEST(WatchHubTest, CloseEndsWatchesAfterTheirQueue) {
  WatchHub<int> hub(8);
  auto sub = hub.Subscribe(nullptr);
  hub.Publish(7);
  std::thread closer([&] { hub.Close(); });
  closer.join();
  EXPECT_EQ(**sub->Next(Soon()), 7);
  EXPECT_EQ(sub->Next(Soon()).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(hub.HasWatchers());
  auto late = hub.Subscribe(nullptr);
  EXPECT_EQ(late->Next(Soon()).status().code(), absl::StatusCode::kUnavailable);
}

TEST(WatchHubTest, UnsubscribeStopsDelivery) {
  WatchHub<int> hub(8);
  auto sub = hub.Subscribe(nullptr);
  hub.Unsubscribe(sub);
  EXPECT_FALSE(hub.HasWatchers());
  hub.Publish(1);
  EXPECT_EQ(sub->Next(Soon()).status().code(), absl::StatusCode::kUnavailable);
}

TEST(WatchHubTest, NextWakesWhenAnItemArrives) {
  WatchHub<int> hub(8);
  auto sub = hub.Subscribe(nullptr);
  std::thread publisher([&] { hub.Publish(5); });
  EXPECT_EQ(**sub->Next(Soon()), 5);
  publisher.join();
}

}  // namespace
}  // namespace vbus::mock
