#include "core/channel_table.h"

#include <vector>

#include "gtest/gtest.h"

namespace vbus {
namespace {

class RecordingTarget : public EventTarget {
 public:
  void OnEvent(uint32_t relid) override { events.push_back(relid); }
  std::vector<uint32_t> events;
};

TEST(ChannelTableTest, PublishDispatchRetire) {
  alignas(8) uint8_t memory[EventPage::kBytes] = {};
  absl::StatusOr<EventPage> page = EventPage::Attach(absl::MakeSpan(memory));
  ASSERT_TRUE(page.ok());
  ChannelTable table;
  absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table.RegisterDispatcher();
  ASSERT_TRUE(dispatcher.ok());
  RecordingTarget target;
  ASSERT_TRUE(table.Publish(7, &target).ok());
  ASSERT_TRUE(page->Set(7).ok());
  ASSERT_TRUE(page->Set(9).ok());  // nobody there: spurious
  DispatchStats stats = dispatcher->Dispatch(*page);
  EXPECT_EQ(stats.delivered, 1u);
  EXPECT_EQ(stats.spurious, 1u);
  EXPECT_EQ(target.events, std::vector<uint32_t>{7});
  absl::StatusOr<EventTarget*> retired = table.Retire(7, absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(retired.ok()) << retired.status();
  EXPECT_EQ(*retired, &target);
  EXPECT_EQ(table.Lookup(7), nullptr);
}

}  // namespace
}  // namespace vbus
