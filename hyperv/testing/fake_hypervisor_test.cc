// The FakeHypervisor itself: every hypercall-validation rule answers its HV_STATUS (raw
// hypercalls, hand-built input blocks), the host side (connections, the post-failure switch,
// guest-memory views, monitor and interrupt pages), guest memory it is given (its owner's PFNs),
// and the per-VP interrupt threads (delivery on their own threads, spurious vectors,
// unregistering, idle, shutdown).
#include "hyperv/testing/fake_hypervisor.h"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hyperv/hypercall_page.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

class FakeHypervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Pages> pages = hv_.AllocatePages(3);
    ASSERT_TRUE(pages.ok());
    pages_ = *std::move(pages);
    ASSERT_TRUE(EnableHypercallPage(hv_, 0, 0x8100000000000000, Gpa(0)).ok());
    hv_.AddMessageConnection(4);
    hv_.AddEventConnection(9, 4);
  }
  uint64_t Gpa(size_t page, size_t offset = 0) const {
    return pages_.pfns()[page] * protocol::kPageSize + offset;
  }
  // Writes an HvPostMessage input block at page 1 + `offset`.
  void PutPost(size_t offset, HvPostMessageInput input) {
    std::memcpy(pages_.page(1) + offset, &input, sizeof(input));
  }
  static HvPostMessageInput Post(uint32_t connection, uint32_t type, uint32_t size) {
    HvPostMessageInput input = {};
    input.connection_id = connection;
    input.message_type = type;
    input.payload_size = size;
    for (uint32_t i = 0; i < kMessagePayloadBytes; ++i) input.payload[i] = static_cast<uint8_t>(i);
    return input;
  }
  uint16_t Call(uint64_t control, uint64_t rdx, uint64_t r8 = 0) {
    return HypercallResultStatus(hv_.Hypercall(control, rdx, r8));
  }
  uint16_t Fast(uint64_t control, uint64_t in0) {
    return HypercallResultStatus(hv_.FastHypercall(control, in0, 0));
  }

  FakeHypervisor hv_;
  Pages pages_;  // page 0: hypercall page; 1: input blocks; 2: spare
};

constexpr uint64_t kPost = HypercallControl(kHvCallPostMessage, false);
constexpr uint64_t kSignalFast = HypercallControl(kHvCallSignalEvent, true);
constexpr uint64_t kSignalMemory = HypercallControl(kHvCallSignalEvent, false);

TEST_F(FakeHypervisorTest, AValidPostSucceedsAndIsRecorded) {
  PutPost(0, Post(4, 1, 3));
  EXPECT_EQ(Call(kPost, Gpa(1)), kHvStatusSuccess);
  std::vector<PostedMessage> posted = hv_.TakePosted();
  ASSERT_THAT(posted, SizeIs(1));
  EXPECT_EQ(posted[0].connection_id, 4u);
  EXPECT_EQ(posted[0].message_type, 1u);
  EXPECT_THAT(posted[0].payload, ElementsAre(0, 1, 2));
}

// Every rule of fake_hypercalls.h, each with the status Hyper-V answers.
TEST_F(FakeHypervisorTest, EveryValidationRuleAnswersItsStatus) {
  PutPost(0, Post(4, 1, 3));
  PutPost(4096 - 256, Post(4, 1, 3));  // ends exactly at the page's end: fine
  struct Case {
    const char* rule;
    uint16_t status;
    uint16_t expected;
  };
  HvPostMessageInput reserved = Post(4, 1, 3);
  reserved.reserved = 1;
  PutPost(256, reserved);
  PutPost(512, Post(4 | 1u << 24, 1, 3));
  PutPost(768, Post(4, 0, 3));
  PutPost(1024, Post(4, 0x80000010, 3));
  PutPost(1280, Post(4, 1, 241));
  PutPost(1536, Post(77, 1, 3));
  HvSignalEventInput signal = {9, 1, 0};
  std::memcpy(pages_.page(1) + 2048, &signal, sizeof(signal));
  const Case cases[] = {
      {"unknown call code", Call(0x7FFF, Gpa(1)), kHvStatusInvalidHypercallCode},
      {"rsvdz bit 27", Call(kPost | 1ull << 27, Gpa(1)), kHvStatusInvalidHypercallInput},
      {"nested bit 31", Call(kPost | 1ull << 31, Gpa(1)), kHvStatusInvalidHypercallInput},
      {"rsvdz bit 44", Call(kPost | 1ull << 44, Gpa(1)), kHvStatusInvalidHypercallInput},
      {"rsvdz bit 63", Call(kPost | 1ull << 63, Gpa(1)), kHvStatusInvalidHypercallInput},
      {"rep count", Call(HypercallControl(kHvCallPostMessage, false, 1), Gpa(1)),
       kHvStatusInvalidHypercallInput},
      {"rep start", Call(HypercallControl(kHvCallPostMessage, false, 0, 1), Gpa(1)),
       kHvStatusInvalidHypercallInput},
      {"variable header", Call(kPost | 1ull << 17, Gpa(1)), kHvStatusInvalidHypercallInput},
      {"fast post", Call(kPost | kHypercallFast, Gpa(1)), kHvStatusInvalidHypercallInput},
      {"input gpa alignment", Call(kPost, Gpa(1, 4)), kHvStatusInvalidAlignment},
      {"output gpa alignment", Call(kPost, Gpa(1), Gpa(2, 4)), kHvStatusInvalidAlignment},
      {"block crosses a page", Call(kPost, Gpa(1, 3848)), kHvStatusInvalidAlignment},
      {"block outside memory", Call(kPost, 0x1000), kHvStatusInvalidParameter},
      {"reserved field", Call(kPost, Gpa(1, 256)), kHvStatusInvalidHypercallInput},
      {"connection id bits 31:24", Call(kPost, Gpa(1, 512)), kHvStatusInvalidHypercallInput},
      {"message type 0", Call(kPost, Gpa(1, 768)), kHvStatusInvalidParameter},
      {"hypervisor message type", Call(kPost, Gpa(1, 1024)), kHvStatusInvalidParameter},
      {"payload 241", Call(kPost, Gpa(1, 1280)), kHvStatusInvalidParameter},
      {"unknown connection", Call(kPost, Gpa(1, 1536)), kHvStatusInvalidConnectionId},
      {"post at the end of a page", Call(kPost, Gpa(1, 4096 - 256)), kHvStatusSuccess},
      {"signal reserved bits", Fast(kSignalFast, SignalEventFastInput(9, 0) | 1ull << 48),
       kHvStatusInvalidHypercallInput},
      {"signal unknown connection", Fast(kSignalFast, SignalEventFastInput(10, 0)),
       kHvStatusInvalidConnectionId},
      {"signal flag out of range", Fast(kSignalFast, SignalEventFastInput(9, 4)),
       kHvStatusInvalidParameter},
      {"signal rep count", Fast(HypercallControl(kHvCallSignalEvent, true, 2), 9),
       kHvStatusInvalidHypercallInput},
      {"signal, memory form", Call(kSignalMemory, Gpa(1, 2048)), kHvStatusSuccess},
      {"signal, memory form, misaligned", Call(kSignalMemory, Gpa(1, 2044)),
       kHvStatusInvalidAlignment},
      {"signal, fast", Fast(kSignalFast, SignalEventFastInput(9, 3)), kHvStatusSuccess},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(c.status, c.expected) << c.rule << ": got " << HvStatusName(c.status);
  }
  EXPECT_EQ(hv_.hypercall_count(), std::size(cases));
  EXPECT_THAT(hv_.TakePosted(), SizeIs(1));
  std::vector<SignalledEvent> signals = hv_.TakeSignals();
  ASSERT_THAT(signals, SizeIs(2));
  EXPECT_EQ(signals[0].flag_number, 1);
  EXPECT_EQ(signals[1].flag_number, 3);
  EXPECT_THAT(hv_.TakeFaults(), IsEmpty());
}

TEST_F(FakeHypervisorTest, InjectedStatusAnswersNTimesThenClears) {
  PutPost(0, Post(4, 1, 3));
  hv_.InjectPostMessageStatus(2);
  EXPECT_EQ(Call(kPost, Gpa(1)), kHvStatusInsufficientBuffers);
  EXPECT_EQ(Call(kPost, Gpa(1)), kHvStatusInsufficientBuffers);
  EXPECT_EQ(Call(kPost, Gpa(1)), kHvStatusSuccess);
  hv_.InjectPostMessageStatus(std::nullopt, kHvStatusInsufficientMemory);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Call(kPost, Gpa(1)), kHvStatusInsufficientMemory);
  hv_.ClearPostMessageStatus();
  EXPECT_EQ(Call(kPost, Gpa(1)), kHvStatusSuccess);
  EXPECT_THAT(hv_.TakePosted(), SizeIs(2));  // only the accepted posts reached the host
  // Validation comes first: an invalid post is refused for what it is.
  hv_.InjectPostMessageStatus(1);
  PutPost(256, Post(77, 1, 3));
  EXPECT_EQ(Call(kPost, Gpa(1, 256)), kHvStatusInvalidConnectionId);
  EXPECT_EQ(Call(kPost, Gpa(1)), kHvStatusInsufficientBuffers);
}

TEST_F(FakeHypervisorTest, HandlersRunOnTheGuestThreadAndMayCallBack) {
  std::vector<std::thread::id> threads;
  hv_.AddMessageConnection(5, [&](const PostedMessage& m) {
    threads.push_back(std::this_thread::get_id());
    // A host that answers at once: queue a reply for VP 0 (the SynIC is off: it waits).
    EXPECT_TRUE(hv_.QueueMessage(0, 2, 1, m.payload).ok());
  });
  PutPost(0, Post(5, 1, 3));
  EXPECT_EQ(Call(kPost, Gpa(1)), kHvStatusSuccess);
  EXPECT_THAT(threads, ElementsAre(std::this_thread::get_id()));
  EXPECT_EQ(hv_.queued_messages(0, 2), 1u);
  hv_.RemoveMessageConnection(5);
  EXPECT_EQ(Call(kPost, Gpa(1)), kHvStatusInvalidConnectionId);
  hv_.RemoveEventConnection(9);
  EXPECT_EQ(Fast(kSignalFast, 9), kHvStatusInvalidConnectionId);
}

TEST_F(FakeHypervisorTest, HostViewCoversGuestMemoryOnly) {
  absl::StatusOr<absl::Span<uint8_t>> view = hv_.HostView(Gpa(2, 8), 16);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->data(), pages_.page(2) + 8);
  EXPECT_EQ(hv_.HostView(0, 8).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(hv_.HostView(Gpa(0), 257 * 4096).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FakeHypervisorTest, MonitorTriggersAreTakenOnce) {
  auto* monitor = reinterpret_cast<HvMonitorPage*>(pages_.page(2));
  // The guest triggers monitor ids 3, 40 and 127 (relaxed: nothing else is published here).
  std::atomic_ref<uint32_t>(monitor->trigger_group[0].pending)
      .fetch_or(1u << 3, std::memory_order_relaxed);
  std::atomic_ref<uint32_t>(monitor->trigger_group[1].pending)
      .fetch_or(1u << 8, std::memory_order_relaxed);
  std::atomic_ref<uint32_t>(monitor->trigger_group[3].pending)
      .fetch_or(1u << 31, std::memory_order_relaxed);
  EXPECT_THAT(hv_.TakeMonitorTriggers(Gpa(2)).value(), ElementsAre(3, 40, 127));
  EXPECT_THAT(hv_.TakeMonitorTriggers(Gpa(2)).value(), IsEmpty());
  EXPECT_EQ(hv_.TakeMonitorTriggers(0x2000).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FakeHypervisorTest, InterruptPageSendHalfBitsAreTakenOnce) {
  uint8_t* page = pages_.page(2);
  page[0] = 0xFF;  // the receive half is not the host's to take
  std::atomic_ref<uint8_t>(page[2048 + 1]).fetch_or(0x02, std::memory_order_relaxed);    // relid 9
  std::atomic_ref<uint8_t>(page[2048 + 255]).fetch_or(0x80, std::memory_order_relaxed);  // 2047
  EXPECT_THAT(hv_.TakeInterruptPageBits(Gpa(2)).value(), ElementsAre(9, 2047));
  EXPECT_THAT(hv_.TakeInterruptPageBits(Gpa(2)).value(), IsEmpty());
  EXPECT_EQ(page[0], 0xFF);
}

// ---- Interrupt threads ---------------------------------------------------------------------

// Counts handler runs per VP and remembers the threads they ran on.
class Recorder {
 public:
  std::function<void()> Handler(uint32_t vp) {
    return [this, vp] {
      std::lock_guard<std::mutex> lock(mu_);
      ++runs_[vp];
      threads_[vp].insert(std::this_thread::get_id());
      cv_.notify_all();
    };
  }
  bool WaitForRuns(uint32_t vp, int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, absl::ToChronoTime(Deadline()), [&] { return runs_[vp] >= n; });
  }
  int runs(uint32_t vp) {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_[vp];
  }
  std::set<std::thread::id> threads(uint32_t vp) {
    std::lock_guard<std::mutex> lock(mu_);
    return threads_[vp];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int runs_[4] = {};
  std::set<std::thread::id> threads_[4];
};

// Enables VP `vp`'s SynIC by hand: SIMP and SIEFP on two spare pages, SINT2 on `vector`.
void EnableSynic(FakeHypervisor& hv, uint32_t vp, const Pages& pages, uint8_t vector) {
  const uint64_t keep = FakePartition::kPageMsrPattern;
  ASSERT_TRUE(hv.WriteMsr(vp, kMsrSimp, keep | pages.pfns()[0] << 12 | 1).ok());
  ASSERT_TRUE(hv.WriteMsr(vp, kMsrSiefp, keep | pages.pfns()[1] << 12 | 1).ok());
  ASSERT_TRUE(
      hv.WriteMsr(vp, MsrSint(2), FakePartition::kSintPattern | vector | kSintAutoEoi).ok());
  ASSERT_TRUE(hv.WriteMsr(vp, kMsrScontrol, FakePartition::kScontrolPattern | 1).ok());
}

// Memory the fake is given keeps its owner's numbering: pages come from its first PFN, the
// host side reaches them (and only them) at the owner's addresses, and the owner sees what
// the guest wrote.
TEST(FakeHypervisorMemoryTest, ExternalMemoryKeepsItsOwnersPfns) {
  constexpr uint64_t kFirstPfn = 5;
  constexpr size_t kPages = 8;
  std::vector<uint8_t> buffer((kPages + 1) * protocol::kPageSize, 0xEE);
  // Page-aligned start inside the buffer.
  uint8_t* base =
      buffer.data() +
      (protocol::kPageSize - reinterpret_cast<uintptr_t>(buffer.data()) % protocol::kPageSize) %
          protocol::kPageSize;
  FakeHypervisor hv({.external_memory = FakeGuestMemory::External{base, kFirstPfn, kPages}});
  EXPECT_EQ(hv.free_pages(), kPages);
  absl::StatusOr<Pages> pages = hv.AllocatePages(2);
  ASSERT_TRUE(pages.ok()) << pages.status();
  EXPECT_EQ(pages->pfns()[0], kFirstPfn);
  EXPECT_EQ(pages->page(0), base);
  EXPECT_EQ(pages->page(0)[0], 0);  // handed out zero-filled
  EXPECT_EQ(hv.free_pages(), kPages - 2);
  pages->page(1)[7] = 0x42;
  absl::StatusOr<absl::Span<uint8_t>> view = hv.HostView((kFirstPfn + 1) * protocol::kPageSize, 8);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ((*view)[7], 0x42);
  EXPECT_EQ(base[protocol::kPageSize + 7], 0x42);
  EXPECT_FALSE(hv.HostView((kFirstPfn - 1) * protocol::kPageSize, 8).ok());
  EXPECT_FALSE(hv.HostView((kFirstPfn + kPages) * protocol::kPageSize, 8).ok());
}

TEST(FakeHypervisorThreadsTest, EachVpDeliversOnItsOwnThread) {
  Recorder recorder;
  FakeHypervisorOptions options;
  options.vp_count = 3;
  FakeHypervisor hv(options);
  std::vector<Pages> pages;
  for (uint32_t vp = 0; vp < 3; ++vp) {
    pages.push_back(hv.AllocatePages(2).value());
    ASSERT_TRUE(hv.RegisterInterrupt(vp, 0x30, recorder.Handler(vp)).ok());
    EnableSynic(hv, vp, pages.back(), 0x30);
  }
  for (uint32_t vp = 0; vp < 3; ++vp) ASSERT_TRUE(hv.SetEventFlag(vp, 2, 1).value());
  for (uint32_t vp = 0; vp < 3; ++vp) ASSERT_TRUE(recorder.WaitForRuns(vp, 1));
  std::set<std::thread::id> all;
  for (uint32_t vp = 0; vp < 3; ++vp) {
    ASSERT_THAT(recorder.threads(vp), SizeIs(1));
    all.insert(*recorder.threads(vp).begin());
  }
  EXPECT_THAT(all, SizeIs(3));
  EXPECT_EQ(all.count(std::this_thread::get_id()), 0u);
  for (uint32_t vp = 0; vp < 3; ++vp) hv.UnregisterInterrupt(vp, 0x30);
  EXPECT_THAT(hv.TakeFaults(), IsEmpty());
}

TEST(FakeHypervisorThreadsTest, AVectorWithoutHandlerIsASpuriousInterrupt) {
  FakeHypervisor hv;
  Pages pages = hv.AllocatePages(2).value();
  EnableSynic(hv, 0, pages, 0x31);
  ASSERT_TRUE(hv.SetEventFlag(0, 2, 1).value());
  ASSERT_TRUE(hv.WaitForIdle(Deadline()));
  std::vector<FakeFault> faults = hv.TakeFaults();
  ASSERT_THAT(faults, SizeIs(1));
  EXPECT_EQ(faults[0].kind, FakeFault::Kind::kSpuriousInterrupt);
}

TEST(FakeHypervisorThreadsTest, RegistrationRules) {
  FakeHypervisor hv;
  EXPECT_EQ(hv.RegisterInterrupt(0, 15, [] {}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(hv.RegisterInterrupt(1, 0x40, [] {}).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(hv.RegisterInterrupt(0, 0x40, [] {}).ok());
  EXPECT_EQ(hv.RegisterInterrupt(0, 0x40, [] {}).code(), absl::StatusCode::kAlreadyExists);
  hv.UnregisterInterrupt(0, 0x40);
  hv.UnregisterInterrupt(0, 0x41);  // unknown: ignored
  EXPECT_TRUE(hv.RegisterInterrupt(0, 0x40, [] {}).ok());
  hv.UnregisterInterrupt(0, 0x40);
}

// UnregisterInterrupt returns only once a running handler has finished.
TEST(FakeHypervisorThreadsTest, UnregisterWaitsForTheRunningHandler) {
  FakeHypervisor hv;
  Pages pages = hv.AllocatePages(2).value();
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false;
  bool release = false;
  std::atomic<bool> finished{false};
  ASSERT_TRUE(hv.RegisterInterrupt(0, 0x32, [&] {
                  std::unique_lock<std::mutex> lock(mu);
                  entered = true;
                  cv.notify_all();
                  cv.wait_until(lock, absl::ToChronoTime(Deadline()), [&] { return release; });
                  finished = true;
                }).ok());
  EnableSynic(hv, 0, pages, 0x32);
  ASSERT_TRUE(hv.SetEventFlag(0, 2, 1).value());
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_until(lock, absl::ToChronoTime(Deadline()), [&] { return entered; }));
  }
  std::thread releaser([&] {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
    cv.notify_all();
  });
  hv.UnregisterInterrupt(0, 0x32);
  EXPECT_TRUE(finished);
  releaser.join();
}

// The destructor stops and joins the VP threads even with interrupts still pending and
// handlers registered (a hang here fails the test by its timeout).
TEST(FakeHypervisorThreadsTest, ShutsDownWithInterruptsPendingAndHandlersRegistered) {
  Recorder recorder;
  FakeHypervisorOptions options;
  options.vp_count = 2;
  auto hv = std::make_unique<FakeHypervisor>(options);
  Pages pages = hv->AllocatePages(2).value();
  ASSERT_TRUE(hv->RegisterInterrupt(0, 0x33, recorder.Handler(0)).ok());
  EnableSynic(*hv, 0, pages, 0x33);
  ASSERT_TRUE(hv->SetEventFlag(0, 2, 1).value());
  ASSERT_TRUE(recorder.WaitForRuns(0, 1));
  for (uint32_t flag = 2; flag < 50; ++flag) ASSERT_TRUE(hv->SetEventFlag(0, 2, flag).ok());
  pages.Reset();
  hv.reset();
  const int runs = recorder.runs(0);
  EXPECT_GE(runs, 1);
  EXPECT_LE(runs, 49);  // at most one run per raised interrupt
}

}  // namespace
}  // namespace vbus::hyperv::testing
