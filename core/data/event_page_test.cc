#include "core/data/event_page.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace vbus {
namespace {

struct alignas(8) PageMemory {
  uint8_t bytes[EventPage::kBytes + 8] = {};
};

class EventPageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<EventPage> page = EventPage::Attach(absl::MakeSpan(memory_.bytes));
    ASSERT_TRUE(page.ok()) << page.status();
    page_.emplace(*page);
  }
  std::vector<uint32_t> ScanAll() {
    std::vector<uint32_t> seen;
    const size_t n = page_->Scan([&](uint32_t relid) { seen.push_back(relid); });
    EXPECT_EQ(n, seen.size());
    return seen;
  }
  bool MustSet(uint32_t relid) {
    absl::StatusOr<bool> r = page_->Set(relid);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() && *r;
  }

  PageMemory memory_;
  std::optional<EventPage> page_;
};

TEST(EventPageAttachTest, RejectsShortOrMisalignedMemory) {
  PageMemory memory;
  EXPECT_EQ(EventPage::Attach(absl::MakeSpan(memory.bytes, 255)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EventPage::Attach(absl::MakeSpan(memory.bytes + 4, 256)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(EventPage::Attach(absl::MakeSpan(memory.bytes, 256)).ok());
}

TEST_F(EventPageTest, SetReportsWhetherTheBitWasClear) {
  EXPECT_TRUE(MustSet(5));
  EXPECT_FALSE(MustSet(5));  // interrupt already pending
  EXPECT_TRUE(page_->IsSet(5));
  EXPECT_EQ(ScanAll(), std::vector<uint32_t>{5});
  EXPECT_FALSE(page_->IsSet(5));
  EXPECT_TRUE(MustSet(5));  // clear again after the scan
}

TEST_F(EventPageTest, RejectsReservedAndOutOfRangeRelids) {
  EXPECT_EQ(page_->Set(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(page_->Set(2048).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(page_->Set(0xFFFFFFFF).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MustSet(2047));
  EXPECT_TRUE(MustSet(1));
  EXPECT_FALSE(page_->IsSet(4096));
  EXPECT_TRUE(ValidateRelid(1).ok());
  EXPECT_EQ(ValidateRelid(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateRelid(2048).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EventPageTest, BitLayoutIsLittleEndianWordsAsHyperV) {
  MustSet(1);
  MustSet(65);
  MustSet(2047);
  EXPECT_EQ(memory_.bytes[0], 0x02);
  EXPECT_EQ(memory_.bytes[8], 0x02);  // relid 65 = byte 8, bit 1
  EXPECT_EQ(memory_.bytes[255], 0x80);
  EXPECT_EQ(memory_.bytes[256], 0);  // nothing past the bitmap
}

TEST_F(EventPageTest, BitZeroIsClearedButNeverDispatched) {
  memory_.bytes[0] = 0x01;  // set by the peer (legacy meaning)
  EXPECT_TRUE(ScanAll().empty());
  EXPECT_EQ(memory_.bytes[0], 0);
  memory_.bytes[0] = 0x03;
  EXPECT_EQ(ScanAll(), std::vector<uint32_t>{1});
}

TEST_F(EventPageTest, ScansInRelidOrderAcrossWords) {
  const std::vector<uint32_t> relids = {1, 2, 63, 64, 127, 128, 700, 1024, 2000, 2046, 2047};
  for (auto it = relids.rbegin(); it != relids.rend(); ++it) MustSet(*it);
  EXPECT_EQ(ScanAll(), relids);
  EXPECT_TRUE(ScanAll().empty());
  for (uint8_t b : memory_.bytes) EXPECT_EQ(b, 0);
}

TEST_F(EventPageTest, EveryBitSetIsVisitedExactlyOnce) {
  std::memset(memory_.bytes, 0xFF, EventPage::kBytes);  // a hostile peer sets everything
  const std::vector<uint32_t> seen = ScanAll();
  ASSERT_EQ(seen.size(), 2047u);
  for (uint32_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i + 1);
  EXPECT_TRUE(ScanAll().empty());
}

TEST_F(EventPageTest, RandomSetsMatchASetModel) {
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::set<uint32_t> expected;
    const int n = rng() % 100;
    for (int i = 0; i < n; ++i) {
      const uint32_t relid = 1 + rng() % 2047;
      EXPECT_EQ(MustSet(relid), expected.insert(relid).second);
    }
    EXPECT_EQ(ScanAll(), std::vector<uint32_t>(expected.begin(), expected.end()));
  }
}

TEST_F(EventPageTest, SetFromInsideTheVisitorIsSeenByTheNextScan) {
  MustSet(10);
  std::vector<uint32_t> seen;
  page_->Scan([&](uint32_t relid) {
    seen.push_back(relid);
    if (relid == 10) {
      EXPECT_TRUE(MustSet(10));   // already cleared: a new signal
      EXPECT_TRUE(MustSet(500));  // a later word: may be seen in this scan
    }
  });
  std::vector<uint32_t> rest = ScanAll();
  seen.insert(seen.end(), rest.begin(), rest.end());
  // Each signal delivered exactly once over the two scans.
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 10u), 2);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 500u), 1);
}

TEST_F(EventPageTest, ClearAllDropsEverything) {
  MustSet(3);
  MustSet(1999);
  page_->ClearAll();
  EXPECT_TRUE(ScanAll().empty());
}

TEST_F(EventPageTest, ClearTakesOneBitAndLeavesItsNeighbours) {
  MustSet(64);
  MustSet(65);
  EXPECT_TRUE(*page_->Clear(65));
  EXPECT_FALSE(*page_->Clear(65));  // already clear
  EXPECT_TRUE(MustSet(65));         // the next signal is a 0 -> 1 transition again
  EXPECT_EQ(ScanAll(), (std::vector<uint32_t>{64, 65}));
  EXPECT_EQ(page_->Clear(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(page_->Clear(2048).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vbus
