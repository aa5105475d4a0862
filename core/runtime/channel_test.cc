// Channel data-path tests over TestHost: sends, receive callbacks, polling, completions
// (matched, unknown, stale, failed on close/rescind), GPA-direct, signal batching, back-pressure,
// a corrupt ring, and the rules for blocking inside callbacks. The host end of each ring is
// real ring code on the TestHost's thread; every wait is a condition wait with a deadline.
#include "core/runtime/channel.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/runtime/channel_bus.h"
#include "core/runtime/channel_bus_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

using testing::Deadline;
using ::testing::ElementsAre;
using testing::HostPacket;
using testing::kInstance1;
using testing::kInstance2;
using testing::kTestClass;
using testing::TestHost;

std::vector<uint8_t> Bytes(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

// The payload without the sender's padding (our test payloads carry no trailing zeros).
std::string Text(absl::Span<const uint8_t> payload) {
  std::string s(payload.begin(), payload.end());
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

// Collects what a receive callback saw (the callback runs on the dispatching thread).
struct Inbox {
  Mutex mu;
  std::vector<std::string> texts ABSL_GUARDED_BY(mu);
  std::vector<uint64_t> trans_ids ABSL_GUARDED_BY(mu);
  std::atomic<size_t> count{0};
  void Add(const PacketView& p) {
    MutexLock lock(&mu);
    texts.push_back(Text(p.payload()));
    trans_ids.push_back(p.trans_id());
    count.fetch_add(1);
  }
  std::vector<std::string> Texts() {
    MutexLock lock(&mu);
    return texts;
  }
};

class ChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_.AddOffer(7, kTestClass, kInstance1);
    host_.AddOffer(8, kTestClass, kInstance2);
    absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&host_, {});
    ASSERT_TRUE(bus.ok()) << bus.status();
    bus_ = std::move(*bus);
    ASSERT_TRUE(bus_->Connect(Deadline()).ok());
    channel_ = bus_->FindChannel(7);
    ASSERT_NE(channel_, nullptr);
  }
  void TearDown() override {
    channel_.reset();
    bus_.reset();
  }
  ChannelOpenOptions Options(uint32_t pages = 4, bool callback = true) {
    ChannelOpenOptions o;
    o.outbound_ring_pages = pages;
    o.inbound_ring_pages = pages;
    if (callback) o.on_packet = [this](const PacketView& p) { inbox_.Add(p); };
    return o;
  }
  bool Eventually(const std::function<bool()>& condition) {
    return host_.WaitFor(condition, Deadline());
  }

  TestHost host_;
  std::unique_ptr<ChannelBus> bus_;
  std::shared_ptr<Channel> channel_;
  Inbox inbox_;
};

// Ring sizes past what one GPADL holds are refused before any page is allocated (the host's
// 4096 data pages could not hold 8191 anyway: the refusal must name the limit, not run out).
TEST_F(ChannelTest, RingsPastOneGpadlAreRefusedBeforeAnyPageIsTaken) {
  ChannelOpenOptions o = Options();
  o.outbound_ring_pages = 4096;
  o.inbound_ring_pages = 4095;  // 8191 pages: one more than a GPADL holds
  absl::Status over = channel_->Open(o, Deadline());
  EXPECT_EQ(over.code(), absl::StatusCode::kInvalidArgument) << over;
  EXPECT_THAT(std::string(over.message()), ::testing::HasSubstr("8191 ring pages"));
  EXPECT_THAT(std::string(over.message()), ::testing::HasSubstr("the 8190 one GPADL holds"));
  o.outbound_ring_pages = 4;
  o.inbound_ring_pages = 1;  // a ring needs its control page and a data page
  EXPECT_EQ(channel_->Open(o, Deadline()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(channel_->Open(Options(), Deadline()).ok());  // the channel is untouched
}

TEST_F(ChannelTest, SendsReachTheHostInOrder) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  ASSERT_TRUE(channel_->Send(Bytes("alpha")).ok());
  const std::vector<uint8_t> a = Bytes("ga"), b = Bytes("th"), c = Bytes("er");
  const absl::Span<const uint8_t> pieces[] = {a, b, c};
  SendOptions answer;
  answer.trans_id = 0x1234;  // an answer echoing its request's id
  ASSERT_TRUE(channel_->SendGather(pieces, answer).ok());
  ASSERT_TRUE(channel_->SendCompletion(0x55, Bytes("done")).ok());
  absl::StatusOr<std::vector<HostPacket>> got = host_.ReadFromGuest(7);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 3u);
  EXPECT_EQ((*got)[1].trans_id, 0x1234u);
  EXPECT_EQ(Text((*got)[0].payload), "alpha");
  EXPECT_EQ((*got)[0].type, static_cast<uint16_t>(PacketType::kDataInband));
  EXPECT_EQ((*got)[0].trans_id, 0u);  // unsolicited
  EXPECT_EQ(Text((*got)[1].payload), "gather");
  EXPECT_EQ((*got)[2].type, static_cast<uint16_t>(PacketType::kCompletion));
  EXPECT_EQ((*got)[2].trans_id, 0x55u);
  ChannelStats stats = channel_->stats();
  EXPECT_EQ(stats.packets_sent, 3u);
  EXPECT_EQ(stats.bytes_sent, 5u + 6u + 4u);
  // Only the first packet found the ring empty: one signal for three packets.
  EXPECT_EQ(stats.signals_sent, 1u);
  EXPECT_EQ(host_.SignalsFrom(7), 1u);
}

TEST_F(ChannelTest, ReceiveCallbackSeesHostPacketsInOrder) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(
        host_.WriteToGuest(7, PacketType::kDataInband, 0, 100 + i, Bytes("p" + std::to_string(i)))
            .ok());
  }
  ASSERT_TRUE(Eventually([&] { return inbox_.count.load() == 5; }));
  EXPECT_THAT(inbox_.Texts(), ElementsAre("p0", "p1", "p2", "p3", "p4"));
  ChannelStats stats = channel_->stats();
  EXPECT_EQ(stats.packets_received, 5u);
  EXPECT_EQ(stats.bytes_received, 5u * 8);  // padded to 8
  EXPECT_GE(stats.signals_received, 1u);
}

TEST_F(ChannelTest, EchoWithBackPressureLosesNothing) {
  // Rings of one data page: far smaller than the traffic, so both sides fill up and wait.
  ASSERT_TRUE(channel_->Open(Options(2), Deadline()).ok());
  host_.Update([](TestHost::Rules& r) { r.echo = true; });
  constexpr int kPackets = 5000;
  SendOptions wait;
  wait.deadline = Deadline();
  for (int i = 0; i < kPackets; ++i) {
    const std::string text = "packet-" + std::to_string(i);
    ASSERT_TRUE(channel_->Send(Bytes(text), wait).ok()) << i;
  }
  ASSERT_TRUE(Eventually([&] { return inbox_.count.load() == kPackets; }));
  std::vector<std::string> texts = inbox_.Texts();
  for (int i = 0; i < kPackets; ++i) ASSERT_EQ(texts[i], "packet-" + std::to_string(i));
  ChannelStats stats = channel_->stats();
  EXPECT_EQ(stats.packets_sent, static_cast<uint64_t>(kPackets));
  EXPECT_EQ(stats.packets_received, static_cast<uint64_t>(kPackets));
  EXPECT_GT(stats.ring_full, 0u);  // the small ring did fill up
  EXPECT_EQ(stats.errors, 0u);
}

TEST_F(ChannelTest, CompletionsMatchTheirRequests) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  host_.Update([](TestHost::Rules& r) { r.echo = true; });
  Mutex mu;
  std::vector<std::string> answers;
  const std::vector<uint8_t> q1 = Bytes("question-1"), q2 = Bytes("question-2");
  const absl::Span<const uint8_t> p1[] = {q1};
  const absl::Span<const uint8_t> p2[] = {q2};
  auto record = [&](const Completion& c) {
    ASSERT_TRUE(c.status.ok()) << c.status;
    MutexLock lock(&mu);
    answers.push_back(Text(c.packet->payload()));
  };
  absl::StatusOr<uint64_t> id1 = channel_->SendRequest(p1, record);
  absl::StatusOr<uint64_t> id2 = channel_->SendRequest(p2, record);
  ASSERT_TRUE(id1.ok() && id2.ok());
  EXPECT_NE(*id1, *id2);
  ASSERT_TRUE(Eventually([&] { return channel_->stats().completions_received == 2; }));
  {
    MutexLock lock(&mu);
    EXPECT_THAT(answers, ElementsAre("question-1", "question-2"));
  }
  absl::StatusOr<std::vector<uint8_t>> answer = channel_->Call(Bytes("sync"), Deadline());
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(Text(*answer), "sync");
  EXPECT_EQ(channel_->outstanding_requests(), 0u);
  EXPECT_EQ(inbox_.count.load(), 0u);  // completions never reach on_packet
}

TEST_F(ChannelTest, UnknownAndStaleCompletionsAreCountedAndDropped) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  std::atomic<int> calls{0};
  const std::vector<uint8_t> q = Bytes("q");
  const absl::Span<const uint8_t> pieces[] = {q};
  absl::StatusOr<uint64_t> id =
      channel_->SendRequest(pieces, [&](const Completion&) { calls.fetch_add(1); });
  ASSERT_TRUE(id.ok());
  // Unknown: 0, a slot beyond the table, a pointer-looking value.
  for (uint64_t bad : {uint64_t{0}, uint64_t{100000}, uint64_t{0x00007f0012345678}}) {
    ASSERT_TRUE(host_.WriteToGuest(7, PacketType::kCompletion, 0, bad, Bytes("x")).ok());
  }
  // The right slot with the wrong generation: stale.
  ASSERT_TRUE(
      host_.WriteToGuest(7, PacketType::kCompletion, 0, *id + (uint64_t{1} << 32), Bytes("x"))
          .ok());
  // The real one, twice: the second is stale.
  ASSERT_TRUE(host_.WriteToGuest(7, PacketType::kCompletion, 0, *id, Bytes("ok")).ok());
  ASSERT_TRUE(host_.WriteToGuest(7, PacketType::kCompletion, 0, *id, Bytes("ok")).ok());
  ASSERT_TRUE(Eventually([&] {
    ChannelStats s = channel_->stats();
    return s.completions_unknown + s.completions_stale + s.completions_received == 6;
  }));
  ChannelStats stats = channel_->stats();
  EXPECT_EQ(stats.completions_unknown, 3u);
  EXPECT_EQ(stats.completions_stale, 2u);
  EXPECT_EQ(stats.completions_received, 1u);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_TRUE(channel_->is_open());
}

TEST_F(ChannelTest, CallDeadlineMakesTheLateCompletionStale) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  absl::StatusOr<std::vector<uint8_t>> answer =
      channel_->Call(Bytes("nobody answers"), absl::Now() + absl::Milliseconds(100));
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kDeadlineExceeded);
  absl::StatusOr<std::vector<HostPacket>> sent = host_.ReadFromGuest(7);
  ASSERT_TRUE(sent.ok());
  ASSERT_EQ(sent->size(), 1u);
  EXPECT_EQ((*sent)[0].flags & kCompletionRequested, kCompletionRequested);
  ASSERT_TRUE(
      host_.WriteToGuest(7, PacketType::kCompletion, 0, (*sent)[0].trans_id, Bytes("late")).ok());
  ASSERT_TRUE(Eventually([&] { return channel_->stats().completions_stale == 1; }));
  EXPECT_EQ(channel_->outstanding_requests(), 0u);
}

TEST_F(ChannelTest, CloseFailsOutstandingRequestsWithCancelled) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  Mutex mu;
  std::vector<absl::StatusCode> codes;
  const std::vector<uint8_t> q = Bytes("q");
  const absl::Span<const uint8_t> pieces[] = {q};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(channel_
                    ->SendRequest(pieces,
                                  [&](const Completion& c) {
                                    MutexLock lock(&mu);
                                    codes.push_back(c.status.code());
                                  })
                    .ok());
  }
  EXPECT_EQ(channel_->outstanding_requests(), 3u);
  ASSERT_TRUE(channel_->Close(Deadline()).ok());
  MutexLock lock(&mu);
  EXPECT_THAT(codes, ElementsAre(absl::StatusCode::kCancelled, absl::StatusCode::kCancelled,
                                 absl::StatusCode::kCancelled));
}

TEST_F(ChannelTest, RescindFailsOutstandingRequestsWithUnavailable) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  std::atomic<int> unavailable{0};
  const std::vector<uint8_t> q = Bytes("q");
  const absl::Span<const uint8_t> pieces[] = {q};
  ASSERT_TRUE(channel_
                  ->SendRequest(pieces,
                                [&](const Completion& c) {
                                  if (c.status.code() == absl::StatusCode::kUnavailable) {
                                    unavailable.fetch_add(1);
                                  }
                                })
                  .ok());
  host_.Rescind(7);
  ASSERT_TRUE(Eventually([&] { return unavailable.load() == 1; }));
  EXPECT_FALSE(channel_->is_open());
  EXPECT_EQ(channel_->Send(Bytes("x")).code(), absl::StatusCode::kUnavailable);
}

TEST_F(ChannelTest, PollingModeReceive) {
  ASSERT_TRUE(channel_->Open(Options(4, /*callback=*/false), Deadline()).ok());
  EXPECT_EQ(channel_->WaitForPackets(absl::Now() + absl::Milliseconds(50)).code(),
            absl::StatusCode::kDeadlineExceeded);
  std::thread writer([&] {
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(
          host_.WriteToGuest(7, PacketType::kDataInband, 0, i, Bytes("m" + std::to_string(i)))
              .ok());
    }
  });
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<ReceivedPacket> p = channel_->Receive(Deadline());
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(Text(p->payload), "m" + std::to_string(i));
    EXPECT_EQ(p->trans_id, static_cast<uint64_t>(i));
  }
  writer.join();
  EXPECT_EQ(channel_->Receive(absl::Now() + absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  // Poll matches completions on the caller's thread.
  host_.Update([](TestHost::Rules& r) { r.echo = true; });
  std::atomic<int> completed{0};
  const std::vector<uint8_t> q = Bytes("q");
  const absl::Span<const uint8_t> pieces[] = {q};
  ASSERT_TRUE(
      channel_->SendRequest(pieces, [&](const Completion& c) { completed += c.status.ok(); }).ok());
  ASSERT_TRUE(channel_->WaitForPackets(Deadline()).ok());
  absl::StatusOr<size_t> polled = channel_->Poll([](const PacketView&) {});
  ASSERT_TRUE(polled.ok());
  EXPECT_EQ(*polled, 0u);  // a completion is not a data packet
  EXPECT_EQ(completed.load(), 1);
}

TEST_F(ChannelTest, PollIsRefusedInCallbackMode) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  EXPECT_EQ(channel_->Poll([](const PacketView&) {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ChannelTest, BatchedSendsSignalOnce) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  SendOptions more;
  more.more = true;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(channel_->Send(Bytes("b"), more).ok());
  // Appended, not yet visible, no signal.
  absl::StatusOr<std::vector<HostPacket>> none = host_.ReadFromGuest(7);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(channel_->stats().signals_sent, 0u);
  ASSERT_TRUE(channel_->Flush().ok());
  EXPECT_EQ(channel_->stats().signals_sent, 1u);
  absl::StatusOr<std::vector<HostPacket>> all = host_.ReadFromGuest(7);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 10u);
  // A send without `more` publishes the batch too.
  ASSERT_TRUE(channel_->Send(Bytes("1"), more).ok());
  ASSERT_TRUE(channel_->Send(Bytes("2")).ok());
  EXPECT_EQ(host_.ReadFromGuest(7)->size(), 2u);
  EXPECT_EQ(channel_->stats().signals_sent, 2u);
  EXPECT_TRUE(channel_->Flush().ok());  // nothing pending
}

// Adaptive batching: the host plays "draining" by setting interrupt_mask itself and reads when
// the test says so.
TEST_F(ChannelTest, AdaptiveBatchingDefersTheSignalOnlyWhileTheHostDrains) {
  ChannelOpenOptions o = Options();
  o.send_batch_packets = 4;
  o.send_batch_delay = absl::Milliseconds(1);
  ASSERT_TRUE(channel_->Open(o, Deadline()).ok());
  std::atomic_ref<uint32_t> mask(host_.GuestOutboundControl(7)->interrupt_mask);
  // An idle host is signalled at the send, as without batching.
  ASSERT_TRUE(channel_->Send(Bytes("0")).ok());
  EXPECT_EQ(channel_->stats().signals_sent, 1u);
  EXPECT_EQ(host_.ReadFromGuest(7)->size(), 1u);
  // The host drains: the first send decides (no signal: masked), the next three only publish,
  // the fifth decides for them.
  mask.store(1, std::memory_order_relaxed);
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(channel_->Send(Bytes(std::to_string(i))).ok());
  EXPECT_EQ(channel_->stats().sends_batched, 3u);  // 2, 3 and 4
  EXPECT_EQ(channel_->stats().signals_sent, 1u);
  absl::StatusOr<std::vector<HostPacket>> visible = host_.ReadFromGuest(7);
  ASSERT_TRUE(visible.ok());
  EXPECT_EQ(visible->size(), 5u);  // published at once, batched or not
  // The host finishes and goes idle right after packet 5 was published without a decision:
  // nobody sends again, so the batch timer must decide (and signal) within the delay.
  mask.store(0, std::memory_order_relaxed);
  ASSERT_TRUE(channel_->Send(Bytes("6")).ok());  // the last decision saw the mask: batched
  EXPECT_EQ(channel_->stats().sends_batched, 4u);
  ASSERT_TRUE(host_.WaitFor([&] { return host_.SignalsFrom(7) >= 2; }, Deadline()));
  EXPECT_EQ(channel_->stats().signals_sent, 2u);
  EXPECT_EQ(host_.ReadFromGuest(7)->size(), 1u);
  // Idle again: the next send decides and signals at once.
  ASSERT_TRUE(channel_->Send(Bytes("7")).ok());
  EXPECT_EQ(channel_->stats().signals_sent, 3u);
  EXPECT_EQ(channel_->stats().sends_batched, 4u);
}

TEST_F(ChannelTest, FlushMakesTheDecisionAdaptiveBatchingLeftOwed) {
  ChannelOpenOptions o = Options();
  o.send_batch_packets = 16;
  o.send_batch_delay = absl::Seconds(1);  // the timer must not be what signals here
  ASSERT_TRUE(channel_->Open(o, Deadline()).ok());
  std::atomic_ref<uint32_t> mask(host_.GuestOutboundControl(7)->interrupt_mask);
  mask.store(1, std::memory_order_relaxed);
  ASSERT_TRUE(channel_->Send(Bytes("a")).ok());
  ASSERT_TRUE(channel_->Send(Bytes("b")).ok());  // batched
  mask.store(0, std::memory_order_relaxed);
  EXPECT_EQ(channel_->stats().signals_sent, 0u);
  ASSERT_TRUE(channel_->Flush().ok());
  EXPECT_EQ(channel_->stats().signals_sent, 1u);
  EXPECT_EQ(host_.ReadFromGuest(7)->size(), 2u);
  EXPECT_TRUE(channel_->Flush().ok());  // nothing owed any more
  EXPECT_EQ(channel_->stats().signals_sent, 1u);
}

TEST_F(ChannelTest, AdaptiveBatchingOptionsAreChecked) {
  ChannelOpenOptions o = Options();
  o.send_batch_packets = 0;
  EXPECT_EQ(channel_->Open(o, Deadline()).code(), absl::StatusCode::kInvalidArgument);
  o.send_batch_packets = 8;
  o.send_batch_delay = absl::ZeroDuration();
  EXPECT_EQ(channel_->Open(o, Deadline()).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ChannelTest, FullRingFailsFastOrAtTheDeadline) {
  ASSERT_TRUE(channel_->Open(Options(2), Deadline()).ok());
  const std::vector<uint8_t> big(1000, 0x5A);
  int sent = 0;
  absl::Status s;
  while ((s = channel_->Send(big)).ok()) ++sent;
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(sent, 3);  // 4096-byte data area: three 1032-byte packets (+8 trailer) fit
  SendOptions wait;
  wait.deadline = absl::Now() + absl::Milliseconds(100);
  EXPECT_EQ(channel_->Send(big, wait).code(), absl::StatusCode::kDeadlineExceeded);
  // Once the host drains, the waiting sender gets through.
  std::thread drainer([&] {
    ASSERT_TRUE(host_.WaitFor(
        [&] {
          // The guest stores pending_send_sz atomically; the host reads it the same way.
          return std::atomic_ref<uint32_t>(host_.GuestOutboundControl(7)->pending_send_sz)
                     .load(std::memory_order_relaxed) != 0;
        },
        Deadline()));
    ASSERT_TRUE(host_.ReadFromGuest(7).ok());
  });
  wait.deadline = Deadline();
  EXPECT_TRUE(channel_->Send(big, wait).ok());
  drainer.join();
  EXPECT_GE(channel_->stats().ring_full, 3u);
  // A packet the ring can never hold.
  EXPECT_EQ(channel_->Send(std::vector<uint8_t>(8000)).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ChannelTest, GpaDirectCarriesTheRanges) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  absl::StatusOr<GpadlBuffer> buffer = channel_->CreateGpadl(2, Deadline());
  ASSERT_TRUE(buffer.ok());
  GpaRangeSpec range;
  range.byte_offset = 16;
  range.byte_count = 5000;
  range.pfns = buffer->pfns;
  const std::vector<uint8_t> header = Bytes("hdr");
  const absl::Span<const uint8_t> pieces[] = {header};
  absl::StatusOr<uint64_t> id = channel_->SendGpaDirect({&range, 1}, pieces);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, 0u);
  absl::StatusOr<std::vector<HostPacket>> got = host_.ReadFromGuest(7);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 1u);
  const HostPacket& p = (*got)[0];
  EXPECT_EQ(p.type, static_cast<uint16_t>(PacketType::kDataUsingGpaDirect));
  ASSERT_EQ(p.sub_header.size(), 8u + 8u + 16u);  // header, range header, two PFNs
  uint32_t range_count, byte_count, byte_offset;
  uint64_t pfn1;
  std::memcpy(&range_count, &p.sub_header[4], 4);
  std::memcpy(&byte_count, &p.sub_header[8], 4);
  std::memcpy(&byte_offset, &p.sub_header[12], 4);
  std::memcpy(&pfn1, &p.sub_header[24], 8);
  EXPECT_EQ(range_count, 1u);
  EXPECT_EQ(byte_count, 5000u);
  EXPECT_EQ(byte_offset, 16u);
  EXPECT_EQ(pfn1, buffer->pfns[1]);
  EXPECT_EQ(Text(p.payload), "hdr");
  // A range whose PFN count does not match its bytes is refused.
  range.byte_count = 9000;
  EXPECT_EQ(channel_->SendGpaDirect({&range, 1}, pieces).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ChannelTest, CorruptRingFailsOnlyThatChannel) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  std::shared_ptr<Channel> other = bus_->FindChannel(8);
  Inbox other_inbox;
  ChannelOpenOptions o = Options();
  o.on_packet = [&](const PacketView& p) { other_inbox.Add(p); };
  ASSERT_TRUE(other->Open(o, Deadline()).ok());
  // The host writes a misaligned write_index into relid 7's inbound ring and signals.
  host_.GuestInboundControl(7)->write_index = 13;
  ASSERT_TRUE(host_.RaiseEvent(7).ok());
  ASSERT_TRUE(Eventually([&] { return !channel_->is_open(); }));
  EXPECT_EQ(channel_->stats().errors, 1u);
  EXPECT_EQ(channel_->Send(Bytes("x")).code(), absl::StatusCode::kDataLoss);
  // Relid 8 is unaffected.
  ASSERT_TRUE(host_.WriteToGuest(8, PacketType::kDataInband, 0, 1, Bytes("fine")).ok());
  ASSERT_TRUE(Eventually([&] { return other_inbox.count.load() == 1; }));
  // Closing and reopening gives relid 7 fresh rings.
  ASSERT_TRUE(channel_->Close(Deadline()).ok());
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  EXPECT_TRUE(channel_->Send(Bytes("again")).ok());
}

TEST_F(ChannelTest, CallbacksMaySendButNotBlock) {
  std::atomic<int> replies{0};
  absl::Status blocking;
  Mutex mu;
  ChannelOpenOptions o = Options();
  o.on_packet = [&](const PacketView& p) {
    // Replying from the callback is fine (no waiting).
    if (channel_->SendCompletion(p.trans_id(), Bytes("ack")).ok()) replies.fetch_add(1);
    // Anything that would block is refused rather than stalling dispatch.
    absl::Status call = channel_->Call(Bytes("x"), Deadline()).status();
    absl::Status close = channel_->Close(Deadline());
    MutexLock lock(&mu);
    blocking = call.code() == absl::StatusCode::kFailedPrecondition ? close : call;
  };
  ASSERT_TRUE(channel_->Open(o, Deadline()).ok());
  ASSERT_TRUE(
      host_.WriteToGuest(7, PacketType::kDataInband, kCompletionRequested, 77, Bytes("req")).ok());
  ASSERT_TRUE(Eventually([&] { return replies.load() == 1; }));
  {
    MutexLock lock(&mu);
    EXPECT_EQ(blocking.code(), absl::StatusCode::kFailedPrecondition) << blocking;
  }
  absl::StatusOr<std::vector<HostPacket>> got = host_.ReadFromGuest(7);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].trans_id, 77u);
  EXPECT_EQ((*got)[0].type, static_cast<uint16_t>(PacketType::kCompletion));
}

TEST_F(ChannelTest, BusStatsSumTheChannels) {
  ASSERT_TRUE(channel_->Open(Options(), Deadline()).ok());
  host_.Update([](TestHost::Rules& r) { r.echo = true; });
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(channel_->Send(Bytes("s")).ok());
  ASSERT_TRUE(Eventually([&] { return inbox_.count.load() == 20; }));
  BusStats stats = bus_->stats();
  EXPECT_EQ(stats.channels.packets_sent, 20u);
  EXPECT_EQ(stats.channels.packets_received, 20u);
  EXPECT_GE(stats.events_dispatched, 1u);
  EXPECT_GE(stats.messages_sent, 4u);  // contact, offers, gpadl, open
  EXPECT_GE(stats.messages_received, 4u);
  // Released channels still count.
  host_.Rescind(7);
  ASSERT_TRUE(host_.WaitFor([&] { return host_.Released().size() == 1; }, Deadline()));
  ASSERT_TRUE(Eventually([&] { return bus_->GetChannel(channel_->id()) == nullptr; }));
  EXPECT_EQ(bus_->stats().channels.packets_sent, 20u);
}

TEST_F(ChannelTest, WhenWritableCallsBackOnceTheHostMadeRoom) {
  ASSERT_TRUE(channel_->Open(Options(2), Deadline()).ok());  // 4096-byte data area
  const std::vector<uint8_t> big(1500, 'b');
  absl::Status s;
  int sent = 0;
  while ((s = channel_->Send(big)).ok()) ++sent;
  ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  std::atomic<int> ready{0};
  ASSERT_TRUE(channel_->WhenWritable(big.size(), [&] { ready.fetch_add(1); }).ok());
  EXPECT_EQ(ready.load(), 0);
  EXPECT_NE(std::atomic_ref<uint32_t>(host_.GuestOutboundControl(7)->pending_send_sz).load(), 0u);
  // The host drains: its read crosses pending_send_sz, it signals, the callback runs.
  absl::StatusOr<std::vector<HostPacket>> got = host_.ReadFromGuest(7);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->size(), static_cast<size_t>(sent));
  ASSERT_TRUE(Eventually([&] { return ready.load() == 1; }));
  EXPECT_TRUE(channel_->Send(big).ok());
  // Fits now: called at once; never fits: refused.
  ASSERT_TRUE(channel_->WhenWritable(8, [&] { ready.fetch_add(1); }).ok());
  EXPECT_EQ(ready.load(), 2);
  EXPECT_EQ(channel_->WhenWritable(5000, [] {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ChannelTest, ManySendersOneChannel) {
  ASSERT_TRUE(channel_->Open(Options(4), Deadline()).ok());
  host_.Update([](TestHost::Rules& r) { r.echo = true; });
  constexpr int kThreads = 4, kEach = 1000;
  std::vector<std::thread> senders;
  for (int t = 0; t < kThreads; ++t) {
    senders.emplace_back([&, t] {
      SendOptions wait;
      wait.deadline = Deadline();
      for (int i = 0; i < kEach; ++i) {
        ASSERT_TRUE(channel_->Send(Bytes(std::to_string(t) + ":" + std::to_string(i)), wait).ok());
      }
    });
  }
  for (std::thread& t : senders) t.join();
  ASSERT_TRUE(Eventually([&] { return inbox_.count.load() == kThreads * kEach; }));
  // Per sender, order is kept.
  std::vector<int> next(kThreads, 0);
  for (const std::string& text : inbox_.Texts()) {
    const int t = text[0] - '0';
    ASSERT_EQ(text, std::to_string(t) + ":" + std::to_string(next[t]));
    ++next[t];
  }
}

}  // namespace
}  // namespace vbus
