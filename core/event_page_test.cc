#include "core/event_page.h"

#include <vector>

#include "gtest/gtest.h"

namespace vbus {
namespace {

TEST(EventPageTest, SetReportsTransitionAndScanClears) {
  alignas(8) uint8_t memory[EventPage::kBytes] = {};
  absl::StatusOr<EventPage> page = EventPage::Attach(absl::MakeSpan(memory));
  ASSERT_TRUE(page.ok()) << page.status();
  absl::StatusOr<bool> first = page->Set(5);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(*first);
  absl::StatusOr<bool> second = page->Set(5);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(*second);
  std::vector<uint32_t> seen;
  EXPECT_EQ(page->Scan([&](uint32_t relid) { seen.push_back(relid); }), 1u);
  EXPECT_EQ(seen, std::vector<uint32_t>{5});
  EXPECT_FALSE(page->IsSet(5));
}

}  // namespace
}  // namespace vbus
