// Ring buffer: memory validation, the packet layout, writes and reads, wrap-around, batching
// and the empty → non-empty signal rule. core/data/ring_buffer_peer_test.cc has the peer handshakes
// and hostile peers.
#include "core/data/ring_buffer.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/data/ring_buffer_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

using ::testing::HasSubstr;

using testing::Pattern;
using testing::RingMemory;
using testing::RingTest;
using testing::SameBytes;

// --- Memory validation and initialization ----------------------------------------------------

TEST(RingMemoryTest, ValidateRejectsBadShapes) {
  RingMemory memory(2);
  EXPECT_TRUE(ValidateRingMemory(memory.span()).ok());
  EXPECT_EQ(ValidateRingMemory(memory.span().subspan(0, protocol::kPageSize)).code(),
            absl::StatusCode::kInvalidArgument);  // control page only
  EXPECT_EQ(ValidateRingMemory(memory.span().subspan(0, 2 * protocol::kPageSize - 8)).code(),
            absl::StatusCode::kInvalidArgument);  // not whole pages
  EXPECT_EQ(ValidateRingMemory(memory.span().subspan(4, 2 * protocol::kPageSize)).code(),
            absl::StatusCode::kInvalidArgument);  // misaligned
  EXPECT_EQ(OutgoingRing::Attach(memory.span().subspan(0, 100)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(IncomingRing::Attach(memory.span().subspan(4, 2 * protocol::kPageSize)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RingMemoryTest, InitializeClearsControlPageAndSetsFeatureBit) {
  RingMemory memory(1);
  ASSERT_TRUE(InitializeRing(memory.span()).ok());
  EXPECT_EQ(memory.control()->write_index, 0u);
  EXPECT_EQ(memory.control()->read_index, 0u);
  EXPECT_EQ(memory.control()->interrupt_mask, 0u);
  EXPECT_EQ(memory.control()->pending_send_sz, 0u);
  EXPECT_EQ(memory.control()->feature_bits, kRingFeaturePendingSendSize);
  EXPECT_EQ(memory.control()->reserved2[100], 0);
  EXPECT_EQ(memory.data()[0], 0xEE);  // data area untouched
}

TEST(RingMemoryTest, AttachRejectsCorruptIndices) {
  RingMemory memory(1);
  ASSERT_TRUE(InitializeRing(memory.span()).ok());
  memory.control()->write_index = 4096;
  absl::Status s = OutgoingRing::Attach(memory.span()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("write_index 4096 is outside"));
  memory.control()->write_index = 0;
  memory.control()->read_index = 12;
  s = IncomingRing::Attach(memory.span()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("read_index 12 is not 8-byte aligned"));
}

TEST(RingMemoryTest, SizesMatchTheWireFormat) {
  EXPECT_EQ(PacketRingBytes(0, 0), 24u);
  EXPECT_EQ(PacketRingBytes(0, 1), 32u);
  EXPECT_EQ(PacketRingBytes(0, 8), 32u);
  EXPECT_EQ(PacketRingBytes(8, 9), 48u);
}

// --- Basic writes and reads --------------------------------------------------------------------

TEST_F(RingTest, PacketLayoutIsTheVmbusFormat) {
  const std::vector<uint8_t> payload = Pattern(13, 1);
  ASSERT_TRUE(
      out_->Write(PacketType::kCompletion, kCompletionRequested, 0x1122334455667788, payload).ok());
  PacketDescriptor d;
  std::memcpy(&d, memory_->data(), sizeof(d));
  EXPECT_EQ(d.type, 0xB);
  EXPECT_EQ(d.offset8, 2);
  EXPECT_EQ(d.len8, 4);  // 16 + 13 = 29 → 32 bytes
  EXPECT_EQ(d.flags, 1);
  EXPECT_EQ(d.trans_id, 0x1122334455667788u);
  EXPECT_EQ(std::memcmp(memory_->data() + 16, payload.data(), 13), 0);
  for (int i = 29; i < 32; ++i) EXPECT_EQ(memory_->data()[i], 0) << i;  // zero padding
  uint64_t trailer;
  std::memcpy(&trailer, memory_->data() + 32, 8);
  EXPECT_EQ(trailer, 0u);  // start write_index 0, << 32
  EXPECT_EQ(memory_->control()->write_index, 40u);

  // The second packet's trailer records where it started.
  ASSERT_TRUE(out_->Write(PacketType::kDataInband, 0, 2, payload).ok());
  std::memcpy(&trailer, memory_->data() + 40 + 32, 8);
  EXPECT_EQ(trailer, uint64_t{40} << 32);
}

TEST_F(RingTest, EmptyRingHasNothing) {
  ExpectEmpty();
  absl::StatusOr<size_t> available = in_->AvailableBytes();
  ASSERT_TRUE(available.ok());
  EXPECT_EQ(*available, 0u);
  absl::StatusOr<bool> commit = in_->CommitRead();
  ASSERT_TRUE(commit.ok());
  EXPECT_FALSE(*commit);
}

TEST_F(RingTest, EmptyPayloadAndZeroCopyView) {
  ASSERT_EQ(MustWrite(0, 9), WriteResult::kWrittenSignal);
  absl::StatusOr<std::optional<PacketView>> p = in_->Next();
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_TRUE((*p)->payload().empty());
  EXPECT_TRUE((*p)->sub_header().empty());
  EXPECT_EQ((*p)->ring_bytes(), 24u);
  EXPECT_FALSE((*p)->wrapped());
  // Zero-copy: the view points into the ring's data area.
  EXPECT_EQ((*p)->payload().data(), memory_->data() + 16);
}

TEST_F(RingTest, ReadsInOrderAndCommitFreesSpace) {
  for (uint32_t i = 1; i <= 5; ++i) MustWrite(100 * i, i);
  for (uint32_t i = 1; i <= 5; ++i) MustRead(100 * i, i);
  ExpectEmpty();
  // Space is not returned to the writer until CommitRead.
  EXPECT_EQ(memory_->control()->read_index, 0u);
  absl::StatusOr<size_t> free_before = out_->FreeBytes();
  ASSERT_TRUE(free_before.ok());
  EXPECT_LT(*free_before, 4096u);
  MustCommit();
  EXPECT_EQ(memory_->control()->read_index, memory_->control()->write_index);
  absl::StatusOr<size_t> free_after = out_->FreeBytes();
  ASSERT_TRUE(free_after.ok());
  EXPECT_EQ(*free_after, 4096u);
}

TEST_F(RingTest, ExactlyFullAndExactlyEmpty) {
  // 100-byte payloads take 128 ring bytes: 31 fit, leaving 128 free, and 128 is not > 128.
  for (uint32_t i = 1; i <= 31; ++i) ASSERT_NE(MustWrite(100, i), WriteResult::kFull) << i;
  EXPECT_EQ(MustWrite(100, 32), WriteResult::kFull);
  absl::StatusOr<size_t> free_bytes = out_->FreeBytes();
  ASSERT_TRUE(free_bytes.ok());
  EXPECT_EQ(*free_bytes, 128u);
  // 120 ring bytes (a 96-byte payload) fit into 128: exactly full, 8 bytes left, never 0.
  ASSERT_EQ(PacketRingBytes(0, 96), 120u);
  EXPECT_EQ(MustWrite(96, 32), WriteResult::kWritten);
  free_bytes = out_->FreeBytes();
  ASSERT_TRUE(free_bytes.ok());
  EXPECT_EQ(*free_bytes, 8u);
  EXPECT_EQ(MustWrite(0, 33), WriteResult::kFull);  // even the smallest packet (24)
  EXPECT_EQ(memory_->control()->write_index, 4088u);

  for (uint32_t i = 1; i <= 31; ++i) MustRead(100, i);
  MustRead(96, 32);
  ExpectEmpty();
  MustCommit();
  // Exactly empty: read_index == write_index, the whole ring free.
  EXPECT_EQ(memory_->control()->read_index, memory_->control()->write_index);
  free_bytes = out_->FreeBytes();
  ASSERT_TRUE(free_bytes.ok());
  EXPECT_EQ(*free_bytes, 4096u);
  absl::StatusOr<size_t> available = in_->AvailableBytes();
  ASSERT_TRUE(available.ok());
  EXPECT_EQ(*available, 0u);
}

TEST_F(RingTest, FullWriteLeavesRingUnchanged) {
  for (uint32_t i = 1; i <= 31; ++i) MustWrite(100, i);
  const uint32_t write_index = memory_->control()->write_index;
  std::vector<uint8_t> before(memory_->data(), memory_->data() + 4096);
  EXPECT_EQ(MustWrite(200, 99), WriteResult::kFull);
  EXPECT_EQ(memory_->control()->write_index, write_index);
  EXPECT_EQ(std::memcmp(before.data(), memory_->data(), 4096), 0);
}

TEST_F(RingTest, OversizedPacketsAreInvalidArgument) {
  const std::vector<uint8_t> big(4096);
  absl::StatusOr<WriteResult> r = out_->Write(PacketType::kDataInband, 0, 1, big);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  // A packet that fills the data area completely can never be written either.
  r = out_->Write(PacketType::kDataInband, 0, 1, absl::MakeSpan(big).subspan(0, 4096 - 24));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  // The largest legal packet leaves 8 bytes free.
  r = out_->Write(PacketType::kDataInband, 0, 1, absl::MakeSpan(big).subspan(0, 4096 - 32));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, WriteResult::kWrittenSignal);
  EXPECT_TRUE(out_->status().ok());  // argument errors do not fail the ring
}

TEST(RingLimitsTest, LongerThanLen8CanDescribe) {
  RingMemory memory(256);  // 1 MiB data area
  ASSERT_TRUE(InitializeRing(memory.span()).ok());
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(memory.span());
  ASSERT_TRUE(out.ok());
  std::vector<uint8_t> big(kMaxPacketLength);
  absl::StatusOr<WriteResult> r = out->Write(PacketType::kDataInband, 0, 1, big);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = out->Write(PacketType::kDataInband, 0, 1, absl::MakeSpan(big).subspan(0, 0xFFFF * 8 - 16));
  ASSERT_TRUE(r.ok()) << r.status();
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(memory.span());
  ASSERT_TRUE(in.ok());
  absl::StatusOr<std::optional<PacketView>> p = in->Next();
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_EQ((*p)->len8(), 0xFFFF);
}

// --- Wrap-around ---------------------------------------------------------------------------

TEST_F(RingTest, PacketsWrapAroundTheEnd) {
  // Advance both indices to 4096 - 48, then write a packet that wraps: its descriptor fits
  // before the end but its payload continues at the start of the data area.
  ASSERT_EQ(PacketRingBytes(0, 4096 - 48 - 24), 4096u - 48);
  MustWrite(4096 - 48 - 24, 1);
  MustRead(4096 - 48 - 24, 1);
  MustCommit();
  ASSERT_EQ(memory_->control()->read_index, 4048u);
  MustWrite(300, 2);
  EXPECT_EQ(memory_->control()->write_index, (4048u + PacketRingBytes(0, 300)) % 4096);
  absl::StatusOr<std::optional<PacketView>> p = in_->Next();
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_TRUE((*p)->wrapped());
  EXPECT_EQ((*p)->trans_id(), 2u);
  const std::vector<uint8_t> expected = Pattern(300, 2);
  EXPECT_EQ(std::memcmp((*p)->payload().data(), expected.data(), 300), 0);
  // The copy went to the scratch buffer.
  EXPECT_EQ((*p)->sub_header().data(), scratch_.data());
  MustCommit();
  ExpectEmpty();
}

TEST_F(RingTest, DescriptorSplitAcrossTheEnd) {
  // Position the indices 8 bytes before the end: the descriptor itself wraps.
  MustWrite(4096 - 8 - 24, 1);  // ring bytes 4088
  MustRead(4096 - 8 - 24, 1);
  MustCommit();
  ASSERT_EQ(memory_->control()->write_index, 4088u);
  MustWrite(40, 7, 0xABCDEF0123456789);
  absl::StatusOr<std::optional<PacketView>> p = in_->Next();
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_EQ((*p)->trans_id(), 0xABCDEF0123456789u);
  EXPECT_EQ((*p)->len8(), 7);
  EXPECT_FALSE((*p)->wrapped());  // the body starts after the wrap: contiguous
  EXPECT_EQ((*p)->payload().data(), memory_->data() + 8);
  const std::vector<uint8_t> expected = Pattern(40, 7);
  EXPECT_EQ(std::memcmp((*p)->payload().data(), expected.data(), 40), 0);
}

TEST_F(RingTest, TrailerAloneWrapsToTheStart) {
  // A packet whose body ends exactly at the end: only the trailer is at offset 0.
  MustWrite(4096 - 1024 - 24, 1);
  MustRead(4096 - 1024 - 24, 1);
  MustCommit();
  ASSERT_EQ(memory_->control()->write_index, 3072u);
  MustWrite(1024 - 16, 2);  // 1024 bytes of packet, then the trailer at 0
  EXPECT_EQ(memory_->control()->write_index, 8u);
  uint64_t trailer;
  std::memcpy(&trailer, memory_->data(), 8);
  EXPECT_EQ(trailer, uint64_t{3072} << 32);
  absl::StatusOr<std::optional<PacketView>> p = in_->Next();
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_FALSE((*p)->wrapped());
  MustCommit();
  ExpectEmpty();
}

TEST_F(RingTest, GatherWriteAcrossTheWrap) {
  MustWrite(4096 - 200 - 24, 1);
  MustRead(4096 - 200 - 24, 1);
  MustCommit();
  ASSERT_EQ(memory_->control()->write_index, 3896u);
  // Three payload pieces and a sub-header; the wrap falls inside the second piece.
  const std::vector<uint8_t> sub_header = Pattern(16, 40);
  const std::vector<uint8_t> a = Pattern(100, 41), b = Pattern(250, 42), c = Pattern(3, 43);
  const absl::Span<const uint8_t> pieces[] = {a, {}, b, c};
  OutgoingPacket packet;
  packet.type = PacketType::kDataUsingGpaDirect;
  packet.trans_id = 5;
  packet.sub_header = sub_header;
  packet.payload = pieces;
  absl::StatusOr<WriteResult> r = out_->Write(packet);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, WriteResult::kWrittenSignal);

  absl::StatusOr<std::optional<PacketView>> p = in_->Next();
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_TRUE((*p)->wrapped());
  EXPECT_EQ((*p)->offset8(), 4);  // (16 + 16) / 8
  EXPECT_EQ((*p)->len8(), (16 + 16 + 353 + 7) / 8);
  ASSERT_EQ((*p)->sub_header().size(), 16u);
  EXPECT_EQ(std::memcmp((*p)->sub_header().data(), sub_header.data(), 16), 0);
  std::vector<uint8_t> expected;
  for (const auto& piece : {a, b, c}) expected.insert(expected.end(), piece.begin(), piece.end());
  ASSERT_GE((*p)->payload().size(), expected.size());
  EXPECT_EQ(std::memcmp((*p)->payload().data(), expected.data(), expected.size()), 0);
}

TEST_F(RingTest, SubHeaderMustBeMultipleOfEight) {
  const std::vector<uint8_t> sub_header(12);
  OutgoingPacket packet;
  packet.sub_header = sub_header;
  EXPECT_EQ(out_->Write(packet).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RingTest, WrappedPacketLargerThanScratchIsNotConsumed) {
  SetUpRing(1, /*scratch_bytes=*/64);
  MustWrite(4096 - 48 - 24, 1);
  MustRead(4096 - 48 - 24, 1);
  MustCommit();
  MustWrite(300, 2);
  absl::StatusOr<std::optional<PacketView>> p = in_->Next();
  EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("needs 304 bytes of scratch"));
  EXPECT_TRUE(in_->status().ok());  // not a corrupt ring
  std::vector<uint8_t> bigger(512);
  in_->SetScratch(absl::MakeSpan(bigger));
  MustRead(300, 2);
}

// --- Batches and the writer's signal rule ------------------------------------------------------

TEST_F(RingTest, SignalOnlyOnEmptyToNonEmpty) {
  EXPECT_EQ(MustWrite(10, 1), WriteResult::kWrittenSignal);
  EXPECT_EQ(MustWrite(10, 2), WriteResult::kWritten);  // reader has not drained
  MustRead(10, 1);
  MustCommit();
  EXPECT_EQ(MustWrite(10, 3), WriteResult::kWritten);  // still one unread packet
  MustRead(10, 2);
  MustRead(10, 3);
  MustCommit();
  EXPECT_EQ(MustWrite(10, 4), WriteResult::kWrittenSignal);  // drained: reader may sleep
}

TEST_F(RingTest, ConsumedButUncommittedIsNotEmptyForTheWriter) {
  MustWrite(10, 1);
  MustRead(10, 1);
  // The reader has not published read_index: the writer cannot know it drained.
  EXPECT_EQ(MustWrite(10, 2), WriteResult::kWritten);
}

TEST_F(RingTest, MaskedReaderIsNotSignalled) {
  in_->MaskInterrupts();
  EXPECT_EQ(memory_->control()->interrupt_mask, 1u);
  EXPECT_EQ(MustWrite(10, 1), WriteResult::kWritten);
  // Any non-zero mask counts (the peer may write any value).
  memory_->control()->interrupt_mask = 0xDEADBEEF;
  MustRead(10, 1);
  MustCommit();
  EXPECT_EQ(MustWrite(10, 2), WriteResult::kWritten);
}

TEST_F(RingTest, BatchAppendCommitsOnceAndSignalsOnce) {
  const std::vector<uint8_t> payload = Pattern(20, 0);
  const absl::Span<const uint8_t> pieces[] = {payload};
  OutgoingPacket packet;
  packet.payload = pieces;
  for (uint64_t id = 1; id <= 3; ++id) {
    packet.trans_id = id;
    absl::StatusOr<AppendResult> r = out_->Append(packet);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, AppendResult::kAppended);
  }
  EXPECT_EQ(memory_->control()->write_index, 0u);  // invisible before Commit
  ExpectEmpty();
  EXPECT_TRUE(out_->Commit());
  EXPECT_FALSE(out_->Commit());  // nothing new
  EXPECT_EQ(memory_->control()->write_index, 3 * PacketRingBytes(0, 20));
  for (uint64_t id = 1; id <= 3; ++id) {
    absl::StatusOr<std::optional<PacketView>> p = in_->Next();
    ASSERT_TRUE(p.ok() && p->has_value());
    EXPECT_EQ((*p)->trans_id(), id);
  }
}

TEST_F(RingTest, AppendedPacketsCountAsUsedAndRollbackDiscards) {
  const std::vector<uint8_t> payload(100);
  const absl::Span<const uint8_t> pieces[] = {payload};
  OutgoingPacket packet;
  packet.payload = pieces;
  int appended = 0;
  for (;; ++appended) {
    absl::StatusOr<AppendResult> r = out_->Append(packet);
    ASSERT_TRUE(r.ok());
    if (*r == AppendResult::kFull) break;
  }
  EXPECT_EQ(appended, 31);
  out_->Rollback();
  EXPECT_FALSE(out_->Commit());
  EXPECT_EQ(memory_->control()->write_index, 0u);
  absl::StatusOr<size_t> free_bytes = out_->FreeBytes();
  ASSERT_TRUE(free_bytes.ok());
  EXPECT_EQ(*free_bytes, 4096u);
  ExpectEmpty();
}

TEST_F(RingTest, FullWriteStillCommitsEarlierAppends) {
  const std::vector<uint8_t> payload(100);
  const absl::Span<const uint8_t> pieces[] = {payload};
  OutgoingPacket packet;
  packet.payload = pieces;
  for (int i = 0; i < 31; ++i) ASSERT_EQ(*out_->Append(packet), AppendResult::kAppended);
  absl::StatusOr<WriteResult> r = out_->Write(packet);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, WriteResult::kFull);
  EXPECT_EQ(memory_->control()->write_index, 31 * 128u);
}

// --- The reader's interrupt-mask re-check ------------------------------------------------------

TEST_F(RingTest, UnmaskRecheckFindsPacketsWrittenWhileMasked) {
  MustWrite(10, 1);
  in_->MaskInterrupts();
  MustRead(10, 1);
  ExpectEmpty();
  MustCommit();
  // The writer adds a packet between the reader's last Next and its unmask: masked, so no
  // signal. The re-check after unmasking must find it.
  EXPECT_EQ(MustWrite(10, 2), WriteResult::kWritten);
  absl::StatusOr<bool> more = in_->UnmaskInterrupts();
  ASSERT_TRUE(more.ok());
  EXPECT_TRUE(*more);
  EXPECT_EQ(memory_->control()->interrupt_mask, 0u);
  MustRead(10, 2);
  MustCommit();
  more = in_->UnmaskInterrupts();
  ASSERT_TRUE(more.ok());
  EXPECT_FALSE(*more);
  // Empty and unmasked: the next packet is signalled.
  EXPECT_EQ(MustWrite(10, 3), WriteResult::kWrittenSignal);
}

// Appends Pattern(size, seed) and publishes it without the signal decision.
void AppendAndPublish(OutgoingRing& out, size_t size, uint32_t seed) {
  const std::vector<uint8_t> payload = Pattern(size, seed);
  const absl::Span<const uint8_t> pieces[] = {payload};
  OutgoingPacket packet;
  packet.payload = pieces;
  packet.trans_id = seed;  // what MustRead checks
  absl::StatusOr<AppendResult> r = out.Append(packet);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(*r, AppendResult::kAppended);
  out.Publish();
}

// The case the owed decision exists for: the reader drains a published packet, re-checks and
// goes idle, and only then the next packet is published. The later Commit (with nothing new
// appended) must signal: the reader sleeps with a packet unread. ("Was the ring empty before
// this commit?" would say no here and lose the wakeup.)
TEST_F(RingTest, PublishLeavesTheSignalDecisionToTheNextCommit) {
  in_->MaskInterrupts();
  EXPECT_EQ(MustWrite(10, 1), WriteResult::kWritten);  // decided: the reader is draining
  EXPECT_TRUE(out_->reader_was_draining());
  EXPECT_FALSE(out_->signal_owed());
  AppendAndPublish(*out_, 10, 2);
  EXPECT_TRUE(out_->signal_owed());
  EXPECT_EQ(memory_->control()->write_index, 2 * PacketRingBytes(0, 10));  // visible at once
  MustRead(10, 1);
  MustRead(10, 2);
  MustCommit();
  absl::StatusOr<bool> more = in_->UnmaskInterrupts();
  ASSERT_TRUE(more.ok());
  EXPECT_FALSE(*more);  // idle now
  AppendAndPublish(*out_, 10, 3);
  EXPECT_TRUE(out_->Commit());  // owed: the reader is unmasked with packet 3 unread
  EXPECT_FALSE(out_->signal_owed());
  EXPECT_FALSE(out_->reader_was_draining());
  EXPECT_FALSE(out_->Commit());  // nothing new, nothing owed
  MustRead(10, 3);
}

TEST_F(RingTest, AnOwedDecisionSignalsNobodyWhoReadEverythingOrIsDraining) {
  AppendAndPublish(*out_, 10, 1);
  MustRead(10, 1);
  MustCommit();
  EXPECT_FALSE(out_->Commit());  // read everything: nothing to wake it for
  AppendAndPublish(*out_, 10, 2);
  in_->MaskInterrupts();
  EXPECT_FALSE(out_->Commit());  // draining: its re-check finds packet 2
  EXPECT_TRUE(out_->reader_was_draining());
  EXPECT_FALSE(out_->signal_owed());
  MustRead(10, 2);
}

// The channel disarms after every send that found no other sender waiting: a store there each
// time would pull the shared control line from the reader per packet.
TEST_F(RingTest, DisarmTouchesTheControlPageOnlyAfterAnArm) {
  memory_->control()->pending_send_sz = 0x1234;  // whatever the peer left there
  out_->DisarmPendingSend();
  EXPECT_EQ(memory_->control()->pending_send_sz, 0x1234u);
  memory_->control()->pending_send_sz = 0;
  for (uint32_t i = 1; i <= 31; ++i) ASSERT_NE(MustWrite(100, i), WriteResult::kFull);
  absl::StatusOr<bool> room = out_->ArmPendingSend(PacketRingBytes(0, 100));
  ASSERT_TRUE(room.ok());
  EXPECT_FALSE(*room);
  EXPECT_NE(memory_->control()->pending_send_sz, 0u);
  out_->DisarmPendingSend();
  EXPECT_EQ(memory_->control()->pending_send_sz, 0u);
}

TEST_F(RingTest, UnmaskWithUncommittedReadsIsRefused) {
  MustWrite(10, 1);
  in_->MaskInterrupts();
  MustRead(10, 1);
  absl::StatusOr<bool> more = in_->UnmaskInterrupts();
  EXPECT_EQ(more.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(memory_->control()->interrupt_mask, 1u);  // still masked
  MustCommit();
  more = in_->UnmaskInterrupts();
  ASSERT_TRUE(more.ok());
  EXPECT_FALSE(*more);
}

// --- pending_send_sz: every crossing case --------------------------------------------------

// Fills the ring with 31 packets of 128 ring bytes (free space 128) and arms `pending`.
}  // namespace
}  // namespace vbus
