#include "mock/guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/data/protocol.h"
#include "gtest/gtest.h"

namespace vbus::mock {
namespace {

constexpr uint64_t kSize = 64 * protocol::kPageSize;

std::string TempPath(const std::string& leaf) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", leaf, "-", getpid());
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

absl::Time Soon() { return absl::Now() + absl::Seconds(10); }

TEST(ValidateLayoutTest, DefaultLayoutIsValid) {
  EXPECT_TRUE(ValidateLayout(MemoryLayout{}, 6).ok());
}

TEST(ValidateLayoutTest, RejectsBadLayouts) {
  MemoryLayout revision;
  revision.revision = 2;
  EXPECT_EQ(ValidateLayout(revision, 64).code(), absl::StatusCode::kInvalidArgument);

  MemoryLayout same;
  same.monitor_page2_pfn = same.doorbell_page_pfn;
  absl::Status s = ValidateLayout(same, 64);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("same page"), std::string::npos) << s;

  MemoryLayout above;
  above.host_event_page_pfn = 9;
  s = ValidateLayout(above, 64);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("host_event_page_pfn"), std::string::npos) << s;

  // No data page left.
  EXPECT_EQ(ValidateLayout(MemoryLayout{}, 5).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateLayoutTest, ProtoRoundTrip) {
  MemoryLayout layout;
  layout.guest_event_page_pfn = 10;
  layout.host_event_page_pfn = 11;
  layout.doorbell_page_pfn = 12;
  layout.monitor_page1_pfn = 13;
  layout.monitor_page2_pfn = 14;
  layout.first_data_pfn = 15;
  EXPECT_EQ(LayoutFromProto(LayoutToProto(layout)), layout);
}

TEST(GuestMemoryTest, MemfdIsSealedAndSharedWithOpen) {
  auto guest = GuestMemory::Create("", kSize);
  ASSERT_TRUE(guest.ok()) << guest.status();
  EXPECT_TRUE((*guest)->sealed());
  EXPECT_EQ((*guest)->page_count(), 64u);
  EXPECT_EQ((*guest)->path().rfind("/proc/", 0), 0u) << (*guest)->path();

  auto host = GuestMemory::Open((*guest)->path(), kSize, MemoryLayout{});
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_TRUE((*host)->sealed());

  uint8_t* g = *(*guest)->Translate(20);
  uint8_t* h = *(*host)->Translate(20);
  EXPECT_NE(g, h);  // two mappings
  std::memcpy(g + 100, "hello", 5);
  EXPECT_EQ(std::memcmp(h + 100, "hello", 5), 0);
  h[4095] = 0x5a;
  EXPECT_EQ(g[4095], 0x5a);
  // A sealed file cannot shrink underneath the host.
  const int fd = open((*guest)->path().c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  EXPECT_NE(ftruncate(fd, protocol::kPageSize), 0);
  EXPECT_EQ(errno, EPERM);
  close(fd);
}

TEST(GuestMemoryTest, NamedFileIsExclusiveAndUnlinked) {
  const std::string path = TempPath("named");
  {
    auto guest = GuestMemory::Create(path, kSize);
    ASSERT_TRUE(guest.ok()) << guest.status();
    EXPECT_FALSE((*guest)->sealed());
    EXPECT_TRUE(Exists(path));
    auto again = GuestMemory::Create(path, kSize);
    EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
    auto host = GuestMemory::Open(path, kSize, MemoryLayout{});
    ASSERT_TRUE(host.ok()) << host.status();
    EXPECT_FALSE((*host)->sealed());
  }
  EXPECT_FALSE(Exists(path));
}

TEST(GuestMemoryTest, CreateRejectsBadSizes) {
  EXPECT_EQ(GuestMemory::Create("", 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GuestMemory::Create("", kSize + 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GuestMemory::Create("", 5 * protocol::kPageSize).status().code(),
            absl::StatusCode::kInvalidArgument);  // no data page
  EXPECT_TRUE(GuestMemory::Create("", 6 * protocol::kPageSize).ok());
}

TEST(GuestMemoryTest, OpenChecksTheFile) {
  EXPECT_EQ(GuestMemory::Open(TempPath("missing"), kSize, {}).status().code(),
            absl::StatusCode::kNotFound);
  auto guest = GuestMemory::Create("", kSize);
  ASSERT_TRUE(guest.ok());
  absl::Status wrong_size = GuestMemory::Open((*guest)->path(), 2 * kSize, {}).status();
  EXPECT_EQ(wrong_size.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(wrong_size.message().find("the guest said"), std::string::npos) << wrong_size;
  MemoryLayout bad;
  bad.first_data_pfn = 2;
  EXPECT_EQ(GuestMemory::Open((*guest)->path(), kSize, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GuestMemory::Open("", kSize, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(GuestMemory::Open("/proc", kSize, {}).ok());
}

TEST(GuestMemoryTest, TranslateAndPfnOfAreBoundsChecked) {
  auto mem = GuestMemory::Create("", kSize);
  ASSERT_TRUE(mem.ok());
  auto last = (*mem)->Translate(63);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*(*mem)->PfnOf(*last + 4095), 63u);
  EXPECT_EQ((*mem)->Translate(64).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*mem)->Translate(~uint64_t{0}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*mem)->PfnOf(*last + protocol::kPageSize).status().code(),
            absl::StatusCode::kOutOfRange);
  int on_stack = 0;
  EXPECT_EQ((*mem)->PfnOf(&on_stack).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*mem)->GuestEventPage(), *(*mem)->Translate(0));
  EXPECT_EQ(reinterpret_cast<uint8_t*>((*mem)->GuestToHostMonitorPage()), *(*mem)->Translate(4));
}

TEST(GuestMemoryTest, CheckDataPfns) {
  auto mem = GuestMemory::Create("", kSize);
  ASSERT_TRUE(mem.ok());
  const std::vector<uint64_t> good = {5, 6, 63, 10};
  EXPECT_TRUE((*mem)->CheckDataPfns(good).ok());
  const std::vector<uint64_t> special = {5, 4};
  EXPECT_EQ((*mem)->CheckDataPfns(special).code(), absl::StatusCode::kOutOfRange);
  const std::vector<uint64_t> outside = {5, 64};
  absl::Status s = (*mem)->CheckDataPfns(outside);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("PFN 64 (index 1)"), std::string::npos) << s;
  const std::vector<uint64_t> repeated = {7, 8, 7};
  EXPECT_EQ((*mem)->CheckDataPfns(repeated).code(), absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemoryTest, MapPfnsConsecutiveIsAWindow) {
  auto mem = GuestMemory::Create("", kSize);
  ASSERT_TRUE(mem.ok());
  const std::vector<uint64_t> pfns = {10, 11, 12};
  auto view = (*mem)->MapPfns(pfns);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_FALSE(view->owns_mapping());
  EXPECT_EQ(view->data(), *(*mem)->Translate(10));
  EXPECT_EQ(view->size(), 3 * protocol::kPageSize);
}

TEST(GuestMemoryTest, MapPfnsScatteredIsContiguousView) {
  auto mem = GuestMemory::Create("", kSize);
  ASSERT_TRUE(mem.ok());
  const std::vector<uint64_t> pfns = {30, 31, 9, 40, 41, 42};
  auto view = (*mem)->MapPfns(pfns);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_TRUE(view->owns_mapping());
  ASSERT_EQ(view->page_count(), pfns.size());
  for (size_t i = 0; i < pfns.size(); ++i) {
    uint8_t* page = *(*mem)->Translate(pfns[i]);
    page[0] = static_cast<uint8_t>(i + 1);
    view->data()[i * protocol::kPageSize + 4095] = static_cast<uint8_t>(0x80 + i);
  }
  for (size_t i = 0; i < pfns.size(); ++i) {
    EXPECT_EQ(view->data()[i * protocol::kPageSize], i + 1) << i;
    EXPECT_EQ((*(*mem)->Translate(pfns[i]))[4095], 0x80 + i) << i;
  }
  // Moving keeps one owner.
  MappedPages moved = std::move(*view);
  EXPECT_TRUE(moved.owns_mapping());
  EXPECT_EQ(view->data(), nullptr);
  EXPECT_EQ(moved.data()[0], 1);
}

TEST(GuestMemoryTest, MapPfnsRejectsBadLists) {
  auto mem = GuestMemory::Create("", kSize);
  ASSERT_TRUE(mem.ok());
  EXPECT_EQ((*mem)->MapPfns({}).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<uint64_t> outside = {10, 1000};
  EXPECT_EQ((*mem)->MapPfns(outside).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(DoorbellTest, WaitTimesOutWithoutARing) {
  auto mem = GuestMemory::Create("", kSize);
  ASSERT_TRUE(mem.ok());
  const uint32_t seen = (*mem)->DoorbellValue(Doorbell::kHost);
  const absl::Time start = absl::Now();
  EXPECT_EQ((*mem)->Wait(Doorbell::kHost, seen, start + absl::Milliseconds(30)).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now(), start + absl::Milliseconds(30));
  EXPECT_EQ((*mem)->Doorbells()->host.waiters, 0u);
}

TEST(DoorbellTest, WaitReturnsAtOnceAfterARing) {
  auto mem = GuestMemory::Create("", kSize);
  ASSERT_TRUE(mem.ok());
  const uint32_t seen = (*mem)->DoorbellValue(Doorbell::kGuest);
  (*mem)->Ring(Doorbell::kGuest);
  EXPECT_EQ((*mem)->DoorbellValue(Doorbell::kGuest), seen + 1);
  EXPECT_EQ((*mem)->DoorbellValue(Doorbell::kHost), 0u);  // the other doorbell is untouched
  // A deadline already in the past: the value changed, so it is still OK.
  EXPECT_TRUE((*mem)->Wait(Doorbell::kGuest, seen, absl::InfinitePast()).ok());
}

// Two threads bounce a token through the two doorbells; each ring must wake the other side
// (a lost wakeup would end in DeadlineExceeded). Without polling every wait sleeps; with a
// window longer than the wait's deadline every ring must be seen by the polling loop itself;
// with a short one a wait may end either way.
class DoorbellPingPongTest : public ::testing::TestWithParam<absl::Duration> {};

TEST_P(DoorbellPingPongTest, BetweenThreads) {
  const absl::Duration poll = GetParam();
  auto mem = GuestMemory::Create("", kSize);
  ASSERT_TRUE(mem.ok());
  GuestMemory* m = mem->get();
  constexpr int kRounds = 20000;
  std::atomic<int> failures{0};
  std::thread host([&] {
    uint32_t seen = 0;
    for (int i = 0; i < kRounds; ++i) {
      if (!m->Wait(Doorbell::kHost, seen, Soon(), 0, poll).ok()) {
        failures.fetch_add(1);
        return;
      }
      seen = m->DoorbellValue(Doorbell::kHost);
      m->Ring(Doorbell::kGuest);
    }
  });
  uint32_t seen = 0;
  for (int i = 0; i < kRounds && failures.load() == 0; ++i) {
    m->Ring(Doorbell::kHost);
    if (!m->Wait(Doorbell::kGuest, seen, Soon(), 0, poll).ok()) {
      failures.fetch_add(1);
      break;
    }
    seen = m->DoorbellValue(Doorbell::kGuest);
  }
  host.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(m->DoorbellValue(Doorbell::kGuest), static_cast<uint32_t>(kRounds));
}

INSTANTIATE_TEST_SUITE_P(PollWindows, DoorbellPingPongTest,
                         ::testing::Values(absl::ZeroDuration(), absl::Microseconds(20),
                                           absl::Seconds(60)));

TEST(DoorbellTest, APollWindowLongerThanTheDeadlineEndsAtTheDeadline) {
  auto mem = GuestMemory::Create("", kSize);
  ASSERT_TRUE(mem.ok());
  const uint32_t seen = (*mem)->DoorbellValue(Doorbell::kHost);
  const absl::Time start = absl::Now();
  EXPECT_EQ(
      (*mem)->Wait(Doorbell::kHost, seen, start + absl::Milliseconds(30), 0, absl::Hours(1)).code(),
      absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(absl::Now(), start + absl::Milliseconds(30));
  EXPECT_LT(absl::Now(), start + absl::Seconds(30));
  EXPECT_EQ((*mem)->Doorbells()->host.waiters, 0u);
}

// The same through a second process that maps the file by path: the futexes must be the
// shared (non-private) kind.
TEST(DoorbellTest, PingPongAcrossProcesses) {
  auto mem = GuestMemory::Create("", kSize);
  ASSERT_TRUE(mem.ok());
  constexpr int kRounds = 2000;
  const std::string path = (*mem)->path();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto host = GuestMemory::Open(path, kSize, MemoryLayout{});
    if (!host.ok()) _exit(2);
    uint32_t seen = 0;
    for (int i = 0; i < kRounds; ++i) {
      if (!(*host)->Wait(Doorbell::kHost, seen, Soon()).ok()) _exit(3);
      seen = (*host)->DoorbellValue(Doorbell::kHost);
      (*host)->Ring(Doorbell::kGuest);
    }
    _exit(0);
  }
  uint32_t seen = 0;
  int done = 0;
  for (; done < kRounds; ++done) {
    (*mem)->Ring(Doorbell::kHost);
    if (!(*mem)->Wait(Doorbell::kGuest, seen, Soon()).ok()) break;
    seen = (*mem)->DoorbellValue(Doorbell::kGuest);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(done, kRounds);
}

TEST(MonitorTest, TriggerAndTake) {
  auto guest = GuestMemory::Create("", kSize);
  ASSERT_TRUE(guest.ok());
  auto host = GuestMemory::Open((*guest)->path(), kSize, {});
  ASSERT_TRUE(host.ok());
  ASSERT_TRUE((*guest)->TriggerMonitor(37).ok());
  ASSERT_TRUE((*guest)->TriggerMonitor(39).ok());
  ASSERT_TRUE((*guest)->TriggerMonitor(127).ok());
  EXPECT_EQ((*guest)->TriggerMonitor(128).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*guest)->GuestToHostMonitorPage()->trigger_group[1].pending, (1u << 5) | (1u << 7));
  EXPECT_EQ((*host)->TakeMonitorTriggers(0), 0u);
  EXPECT_EQ((*host)->TakeMonitorTriggers(1), (1u << 5) | (1u << 7));
  EXPECT_EQ((*host)->TakeMonitorTriggers(1), 0u);
  EXPECT_EQ((*host)->TakeMonitorTriggers(3), 1u << 31);
  EXPECT_EQ((*host)->TakeMonitorTriggers(4), 0u);
}

}  // namespace
}  // namespace vbus::mock
