#include "core/ring_buffer.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

using ::testing::HasSubstr;

// Page-aligned ring memory; the data area starts poisoned so tests notice stray reads.
class RingMemory {
 public:
  explicit RingMemory(size_t data_pages) : size_((data_pages + 1) * protocol::kPageSize) {
    memory_ = static_cast<uint8_t*>(std::aligned_alloc(protocol::kPageSize, size_));
    std::memset(memory_, 0xEE, size_);
  }
  ~RingMemory() { std::free(memory_); }
  RingMemory(const RingMemory&) = delete;
  RingMemory& operator=(const RingMemory&) = delete;

  absl::Span<uint8_t> span() { return {memory_, size_}; }
  RingControlPage* control() { return reinterpret_cast<RingControlPage*>(memory_); }
  uint8_t* data() { return memory_ + protocol::kPageSize; }
  size_t data_size() const { return size_ - protocol::kPageSize; }

 private:
  size_t size_;
  uint8_t* memory_;
};

std::vector<uint8_t> Pattern(size_t size, uint32_t seed) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(seed * 131 + i * 7 + 1);
  return bytes;
}

// Whether `actual` starts with `expected` (memcmp with a null pointer is undefined even for 0
// bytes).
bool SameBytes(absl::Span<const uint8_t> actual, const std::vector<uint8_t>& expected) {
  return actual.size() >= expected.size() &&
         std::equal(expected.begin(), expected.end(), actual.begin());
}

// A writer and a reader over one initialized ring of `data_pages` data pages.
class RingTest : public ::testing::Test {
 protected:
  void SetUpRing(size_t data_pages, size_t scratch_bytes = 1 << 20) {
    memory_ = std::make_unique<RingMemory>(data_pages);
    scratch_.assign(scratch_bytes, 0);
    ASSERT_TRUE(InitializeRing(memory_->span()).ok());
    absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(memory_->span());
    ASSERT_TRUE(out.ok()) << out.status();
    out_.emplace(std::move(*out));
    absl::StatusOr<IncomingRing> in =
        IncomingRing::Attach(memory_->span(), absl::MakeSpan(scratch_));
    ASSERT_TRUE(in.ok()) << in.status();
    in_.emplace(std::move(*in));
  }
  void SetUp() override { SetUpRing(1); }

  WriteResult MustWrite(size_t payload_size, uint32_t seed, uint64_t trans_id = 0) {
    const std::vector<uint8_t> payload = Pattern(payload_size, seed);
    absl::StatusOr<WriteResult> r =
        out_->Write(PacketType::kDataInband, 0, trans_id ? trans_id : seed, payload);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : WriteResult::kFull;
  }

  // Reads one packet and checks it carries Pattern(payload_size, seed).
  void MustRead(size_t payload_size, uint32_t seed) {
    absl::StatusOr<std::optional<PacketView>> p = in_->Next();
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_TRUE(p->has_value()) << "no packet";
    const PacketView& v = **p;
    EXPECT_EQ(v.trans_id(), seed);
    ASSERT_GE(v.payload().size(), payload_size);
    EXPECT_LT(v.payload().size(), payload_size + 8);
    EXPECT_TRUE(SameBytes(v.payload(), Pattern(payload_size, seed)));
  }

  bool MustCommit() {
    absl::StatusOr<bool> r = in_->CommitRead();
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() && *r;
  }

  void ExpectEmpty() {
    absl::StatusOr<std::optional<PacketView>> p = in_->Next();
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_FALSE(p->has_value());
  }

  std::unique_ptr<RingMemory> memory_;
  std::vector<uint8_t> scratch_;
  std::optional<OutgoingRing> out_;
  std::optional<IncomingRing> in_;
};

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
class PendingSendTest : public RingTest {
 protected:
  void FillAndArm(size_t pending) {
    for (uint32_t i = 1; i <= 31; ++i) ASSERT_EQ(MustWrite(100, i), MustWriteKind(i));
    absl::StatusOr<bool> armed = out_->ArmPendingSend(pending);
    ASSERT_TRUE(armed.ok()) << armed.status();
    ASSERT_FALSE(*armed);
    ASSERT_EQ(memory_->control()->pending_send_sz, pending);
  }
  static WriteResult MustWriteKind(uint32_t i) {
    return i == 1 ? WriteResult::kWrittenSignal : WriteResult::kWritten;
  }
  // Reads and commits `packets` packets; returns whether CommitRead asked to signal.
  bool Consume(int packets) {
    for (int i = 0; i < packets; ++i) {
      absl::StatusOr<std::optional<PacketView>> p = in_->Next();
      EXPECT_TRUE(p.ok() && p->has_value());
    }
    return MustCommit();
  }
};

TEST_F(PendingSendTest, SignalsExactlyWhenFreeSpaceCrossesThreshold) {
  // Free space goes 128 → 256 → 384 → 512 → 640 with threshold 384.
  FillAndArm(384);
  EXPECT_FALSE(Consume(1));  // 128 → 256: still below
  EXPECT_FALSE(Consume(1));  // 256 → 384: equal is not enough (writer needs > pending)
  EXPECT_TRUE(Consume(1));   // 384 → 512: crosses
  EXPECT_FALSE(Consume(1));  // 512 → 640: already above
}

TEST_F(PendingSendTest, SignalsWhenOneCommitJumpsOverThreshold) {
  FillAndArm(300);
  EXPECT_TRUE(Consume(2));  // 128 → 384 in one batched commit
}

TEST_F(PendingSendTest, SignalsWhenCommitLandsJustAboveThreshold) {
  FillAndArm(255);
  EXPECT_TRUE(Consume(1));  // 128 → 256 > 255
}

TEST_F(PendingSendTest, NoSignalWhenNothingConsumed) {
  FillAndArm(200);
  EXPECT_FALSE(MustCommit());
}

TEST_F(PendingSendTest, WriterRetriesAfterSignalAndClearsPending) {
  FillAndArm(PacketRingBytes(0, 300));  // 328 bytes
  EXPECT_FALSE(Consume(1));
  EXPECT_TRUE(Consume(1));  // 384 > 328
  EXPECT_EQ(MustWrite(300, 50), WriteResult::kWritten);
  EXPECT_EQ(memory_->control()->pending_send_sz, 0u);  // the wait is over
  EXPECT_FALSE(Consume(1));
}

TEST_F(RingTest, ArmWhenSpaceIsAlreadyThereReturnsTrue) {
  MustWrite(100, 1);
  absl::StatusOr<bool> armed = out_->ArmPendingSend(1000);
  ASSERT_TRUE(armed.ok());
  EXPECT_TRUE(*armed);
  EXPECT_EQ(memory_->control()->pending_send_sz, 0u);
}

TEST_F(RingTest, ArmSeesReaderProgressMadeBeforeIt) {
  for (uint32_t i = 1; i <= 31; ++i) MustWrite(100, i);
  EXPECT_EQ(MustWrite(100, 32), WriteResult::kFull);
  // The reader frees space before the writer arms: the writer's re-check must see it (or
  // it would wait for a signal that never comes).
  MustRead(100, 1);
  MustRead(100, 2);
  EXPECT_FALSE(MustCommit());  // nobody armed yet
  absl::StatusOr<bool> armed = out_->ArmPendingSend(PacketRingBytes(0, 100));
  ASSERT_TRUE(armed.ok());
  EXPECT_TRUE(*armed);
  EXPECT_EQ(MustWrite(100, 32), WriteResult::kWritten);
}

TEST_F(RingTest, ArmRejectsImpossibleSizes) {
  EXPECT_EQ(out_->ArmPendingSend(4096).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out_->ArmPendingSend(0).status().code(), absl::StatusCode::kInvalidArgument);
}

// Re-attaches both sides to the same memory (e.g. after the test changed feature_bits).
void Reattach(RingMemory& memory, std::vector<uint8_t>& scratch, std::optional<OutgoingRing>& out,
              std::optional<IncomingRing>& in) {
  absl::StatusOr<OutgoingRing> o = OutgoingRing::Attach(memory.span());
  absl::StatusOr<IncomingRing> i = IncomingRing::Attach(memory.span(), absl::MakeSpan(scratch));
  ASSERT_TRUE(o.ok() && i.ok());
  out.emplace(*std::move(o));
  in.emplace(*std::move(i));
}

TEST_F(RingTest, WithoutFeatureBitPendingIsNotHonoured) {
  memory_->control()->feature_bits = 0;
  Reattach(*memory_, scratch_, out_, in_);
  EXPECT_EQ(out_->ArmPendingSend(100).status().code(), absl::StatusCode::kFailedPrecondition);
  // A peer that sets pending_send_sz anyway gets no signal from a reader that did not
  // advertise the feature.
  for (uint32_t i = 1; i <= 31; ++i) MustWrite(100, i);
  memory_->control()->pending_send_sz = 200;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(in_->Next().ok());
  EXPECT_FALSE(MustCommit());
}

// Regression: feature_bits used to be re-read from shared memory on every call, so the peer
// could switch the pending_send_sz protocol off (or on) under a ring in use.
TEST_F(PendingSendTest, FeatureBitsAreReadOnceAtAttach) {
  FillAndArm(384);
  memory_->control()->feature_bits = 0;  // the peer changes its mind: ignored
  EXPECT_FALSE(Consume(1));
  EXPECT_FALSE(Consume(1));
  EXPECT_TRUE(Consume(1));  // still signals on the crossing
  absl::StatusOr<bool> armed = out_->ArmPendingSend(100);
  EXPECT_TRUE(armed.ok()) << armed.status();
}

TEST_F(RingTest, HostilePendingValuesDoNotBreakTheReader) {
  for (uint32_t i = 1; i <= 31; ++i) MustWrite(100, i);
  memory_->control()->pending_send_sz = 0xFFFFFFFF;  // can never be satisfied
  for (int i = 0; i < 31; ++i) ASSERT_TRUE(in_->Next().ok());
  EXPECT_FALSE(MustCommit());
  EXPECT_TRUE(in_->status().ok());
}

// --- Hostile peers: the reader --------------------------------------------------------------

struct HostileReaderCase {
  std::string name;
  // Corrupts the ring after two valid packets (payloads of 40 and 64 bytes: ring bytes 64 and
  // 88) were written; `d0` points at the first packet's descriptor.
  std::function<void(RingControlPage* control, uint8_t* data)> corrupt;
  absl::StatusCode code;
  std::string message;
};

void SetDescriptor(uint8_t* data, size_t offset, uint16_t PacketDescriptor::*field,
                   uint16_t value) {
  PacketDescriptor d;
  std::memcpy(&d, data + offset, sizeof(d));
  d.*field = value;
  std::memcpy(data + offset, &d, sizeof(d));
}

class HostileReaderTest : public RingTest,
                          public ::testing::WithParamInterface<HostileReaderCase> {};

TEST_P(HostileReaderTest, YieldsDocumentedErrorAndStaysFailed) {
  const HostileReaderCase& c = GetParam();
  MustWrite(40, 1);
  MustWrite(64, 2);
  c.corrupt(memory_->control(), memory_->data());
  absl::Status error;
  for (int i = 0; i < 10 && error.ok(); ++i) {
    absl::StatusOr<std::optional<PacketView>> p = in_->Next();
    if (!p.ok()) error = p.status();
  }
  ASSERT_FALSE(error.ok()) << "corruption not detected";
  EXPECT_EQ(error.code(), c.code) << error;
  EXPECT_THAT(std::string(error.message()), HasSubstr(c.message));
  // Cleanly failed: every later call returns the same status, none touches the ring.
  EXPECT_EQ(in_->status(), error);
  EXPECT_EQ(in_->Next().status(), error);
  EXPECT_EQ(in_->CommitRead().status(), error);
  EXPECT_EQ(in_->UnmaskInterrupts().status(), error);
  EXPECT_EQ(in_->AvailableBytes().status(), error);
}

INSTANTIATE_TEST_SUITE_P(
    Corruptions, HostileReaderTest,
    ::testing::Values(
        HostileReaderCase{"WriteIndexAtEnd",
                          [](RingControlPage* c, uint8_t*) { c->write_index = 4096; },
                          absl::StatusCode::kDataLoss, "write_index 4096 is outside"},
        HostileReaderCase{"WriteIndexFarPastEnd",
                          [](RingControlPage* c, uint8_t*) { c->write_index = 0xFFFFFFF8; },
                          absl::StatusCode::kDataLoss, "is outside the 4096-byte data area"},
        HostileReaderCase{"WriteIndexMisaligned",
                          [](RingControlPage* c, uint8_t*) { c->write_index = 60; },
                          absl::StatusCode::kDataLoss, "write_index 60 is not 8-byte aligned"},
        HostileReaderCase{"LessThanMinimalPacket",
                          [](RingControlPage* c, uint8_t*) { c->write_index = 16; },
                          absl::StatusCode::kDataLoss, "less than a minimal packet"},
        HostileReaderCase{
            "Len8Zero",
            [](RingControlPage*, uint8_t* d) { SetDescriptor(d, 0, &PacketDescriptor::len8, 0); },
            absl::StatusCode::kDataLoss, "len8 0 is shorter"},
        HostileReaderCase{
            "Len8One",
            [](RingControlPage*, uint8_t* d) { SetDescriptor(d, 0, &PacketDescriptor::len8, 1); },
            absl::StatusCode::kDataLoss, "len8 1 is shorter"},
        HostileReaderCase{"Len8LargerThanAvailable",
                          [](RingControlPage*, uint8_t* d) {
                            // 152 bytes available: 18 * 8 + 8 = 152 fits, 19 does not.
                            SetDescriptor(d, 0, &PacketDescriptor::len8, 19);
                          },
                          absl::StatusCode::kDataLoss, "len8 19 (152 bytes + trailer) exceeds"},
        HostileReaderCase{"Len8Huge",
                          [](RingControlPage*, uint8_t* d) {
                            SetDescriptor(d, 0, &PacketDescriptor::len8, 0xFFFF);
                          },
                          absl::StatusCode::kDataLoss, "exceeds the 152 bytes available"},
        HostileReaderCase{
            "SecondPacketLen8TooLarge",
            [](RingControlPage*, uint8_t* d) { SetDescriptor(d, 64, &PacketDescriptor::len8, 11); },
            absl::StatusCode::kDataLoss, "packet at read offset 64: len8 11"},
        HostileReaderCase{"Offset8Zero",
                          [](RingControlPage*, uint8_t* d) {
                            SetDescriptor(d, 0, &PacketDescriptor::offset8, 0);
                          },
                          absl::StatusCode::kDataLoss, "offset8 0 is outside [2, len8 7]"},
        HostileReaderCase{"Offset8One",
                          [](RingControlPage*, uint8_t* d) {
                            SetDescriptor(d, 0, &PacketDescriptor::offset8, 1);
                          },
                          absl::StatusCode::kDataLoss, "offset8 1 is outside"},
        HostileReaderCase{"Offset8PastLen8",
                          [](RingControlPage*, uint8_t* d) {
                            SetDescriptor(d, 0, &PacketDescriptor::offset8, 8);
                          },
                          absl::StatusCode::kDataLoss, "offset8 8 is outside [2, len8 7]"},
        HostileReaderCase{"Len8PointsIntoNextPacketsGarbage",
                          [](RingControlPage*, uint8_t* d) {
                            // Skips 8 bytes too few: the next "descriptor" is the trailer
                            // (len8 0).
                            SetDescriptor(d, 0, &PacketDescriptor::len8, 8);
                            std::memset(d + 72, 0, 8);
                          },
                          absl::StatusCode::kDataLoss, "packet at read offset 72: len8 0"}),
    [](const ::testing::TestParamInfo<HostileReaderCase>& info) { return info.param.name; });

TEST_F(RingTest, WriteIndexMovingBackwardsIsDetected) {
  MustWrite(40, 1);
  MustWrite(64, 2);
  absl::StatusOr<size_t> available = in_->AvailableBytes();
  ASSERT_TRUE(available.ok());
  ASSERT_EQ(*available, 152u);
  memory_->control()->write_index = 64;  // takes back the second packet
  absl::StatusOr<size_t> again = in_->AvailableBytes();
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(again.status().message()),
              HasSubstr("write_index moved from 152 to 64: backwards"));
  EXPECT_EQ(in_->Next().status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(RingTest, WriteIndexBackwardsAfterDrainLooksLikeOverrunAndIsDetected) {
  MustWrite(40, 1);
  MustWrite(64, 2);
  MustRead(40, 1);
  MustRead(64, 2);
  // Not committed: the writer cannot have wrapped around to 64 (it would have overwritten
  // unread packets).
  memory_->control()->write_index = 64;
  absl::StatusOr<std::optional<PacketView>> p = in_->Next();
  EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("over unread packets"));
}

TEST_F(RingTest, WriterMayLegitimatelyWrapAfterCommit) {
  MustWrite(40, 1);
  MustRead(40, 1);
  MustCommit();
  // 64 + 4032 = 4096: a writer that saw read_index 64 may fill up to 8 bytes short of it.
  MustWrite(4096 - 64 - 8 - 24, 2);
  MustRead(4096 - 64 - 8 - 24, 2);
  MustCommit();
  EXPECT_TRUE(in_->status().ok());
}

TEST_F(RingTest, CorruptionFoundByCommitReadFailsTheRing) {
  for (uint32_t i = 1; i <= 31; ++i) MustWrite(100, i);
  memory_->control()->pending_send_sz = 300;
  MustRead(100, 1);
  memory_->control()->write_index = 12;
  absl::StatusOr<bool> r = in_->CommitRead();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(in_->status().ok());
}

// --- Hostile peers: the writer --------------------------------------------------------------

TEST_F(RingTest, CorruptReadIndexFailsTheWriter) {
  MustWrite(100, 1);
  memory_->control()->read_index = 4100;
  absl::StatusOr<size_t> free_bytes = out_->FreeBytes();
  EXPECT_EQ(free_bytes.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(free_bytes.status().message()), HasSubstr("read_index 4100"));
  // Sticky: writes fail the same way and nothing is written.
  const uint32_t write_index = memory_->control()->write_index;
  absl::StatusOr<WriteResult> r = out_->Write(PacketType::kDataInband, 0, 1, {});
  EXPECT_EQ(r.status(), free_bytes.status());
  EXPECT_FALSE(out_->Commit());
  EXPECT_EQ(memory_->control()->write_index, write_index);
  EXPECT_EQ(out_->ArmPendingSend(100).status(), free_bytes.status());
}

TEST_F(RingTest, MisalignedReadIndexFailsTheWriter) {
  for (uint32_t i = 1; i <= 31; ++i) MustWrite(100, i);
  memory_->control()->read_index = 3;
  absl::StatusOr<WriteResult> r = out_->Write(PacketType::kDataInband, 0, 1, Pattern(100, 0));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("not 8-byte aligned"));
}

TEST_F(RingTest, ReadIndexPastWrittenRegionFailsTheWriter) {
  MustWrite(100, 1);                     // 128 bytes written
  memory_->control()->read_index = 256;  // the reader claims to have read unwritten bytes
  absl::StatusOr<size_t> free_bytes = out_->FreeBytes();
  EXPECT_EQ(free_bytes.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(free_bytes.status().message()),
              HasSubstr("read_index moved from 0 to 256, outside the written region"));
}

// --- GPA-direct sub-headers ------------------------------------------------------------------

TEST_F(RingTest, GpaDirectRoundTrip) {
  const uint64_t pfns_a[] = {0x1000, 0x1001};
  const uint64_t pfns_b[] = {0x77};
  const GpaRangeSpec ranges[] = {{5000, 100, pfns_a}, {4096, 0, pfns_b}};
  std::vector<uint8_t> sub_header(GpaDirectSubHeaderSize(ranges));
  ASSERT_EQ(sub_header.size(), 8u + 8 + 16 + 8 + 8);
  absl::StatusOr<size_t> n = EncodeGpaDirectSubHeader(ranges, absl::MakeSpan(sub_header));
  ASSERT_TRUE(n.ok()) << n.status();
  const std::vector<uint8_t> payload = Pattern(33, 3);
  const absl::Span<const uint8_t> pieces[] = {payload};
  OutgoingPacket packet;
  packet.type = PacketType::kDataUsingGpaDirect;
  packet.flags = kCompletionRequested;
  packet.trans_id = 9;
  packet.sub_header = sub_header;
  packet.payload = pieces;
  ASSERT_TRUE(out_->Write(packet).ok());

  absl::StatusOr<std::optional<PacketView>> p = in_->Next();
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->offset8(), (16 + 48) / 8);
  absl::StatusOr<GpaDirectView> view = GpaDirectView::Parse(**p);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->range_count(), 2u);
  std::vector<GpaRangeView> seen;
  ASSERT_TRUE(view->ForEachRange([&](const GpaRangeView& r) { seen.push_back(r); }).ok());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].byte_count, 5000u);
  EXPECT_EQ(seen[0].byte_offset, 100u);
  ASSERT_EQ(seen[0].pfn_count(), 2u);
  EXPECT_EQ(seen[0].pfn(1), 0x1001u);
  EXPECT_EQ(seen[1].pfn_count(), 1u);
  EXPECT_EQ(seen[1].pfn(0), 0x77u);
  EXPECT_EQ(std::memcmp((*p)->payload().data(), payload.data(), 33), 0);
}

TEST(GpaDirectTest, EncodeRejectsBadRanges) {
  const uint64_t one[] = {1};
  std::vector<uint8_t> out(64);
  const GpaRangeSpec zero_count[] = {{0, 0, one}};
  EXPECT_EQ(EncodeGpaDirectSubHeader(zero_count, absl::MakeSpan(out)).status().code(),
            absl::StatusCode::kInvalidArgument);
  const GpaRangeSpec big_offset[] = {{1, 4096, one}};
  EXPECT_EQ(EncodeGpaDirectSubHeader(big_offset, absl::MakeSpan(out)).status().code(),
            absl::StatusCode::kInvalidArgument);
  const GpaRangeSpec wrong_pfns[] = {{4000, 200, one}};  // spans 2 pages
  EXPECT_EQ(EncodeGpaDirectSubHeader(wrong_pfns, absl::MakeSpan(out)).status().code(),
            absl::StatusCode::kInvalidArgument);
  const GpaRangeSpec ok[] = {{10, 0, one}};
  EXPECT_EQ(EncodeGpaDirectSubHeader(ok, absl::MakeSpan(out).subspan(0, 16)).status().code(),
            absl::StatusCode::kInvalidArgument);  // needs 24 bytes
}

// Writes a GPA-direct packet whose sub-header is `words` (u64s) and parses it.
absl::Status ParseHostileGpa(std::vector<uint64_t> words, PacketType type) {
  RingMemory memory(1);
  if (absl::Status s = InitializeRing(memory.span()); !s.ok()) return s;
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(memory.span());
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(memory.span());
  if (!out.ok() || !in.ok()) return absl::InternalError("attach");
  OutgoingPacket packet;
  packet.type = type;
  packet.sub_header =
      absl::MakeSpan(reinterpret_cast<const uint8_t*>(words.data()), words.size() * 8);
  if (!out->Write(packet).ok()) return absl::InternalError("write");
  absl::StatusOr<std::optional<PacketView>> p = in->Next();
  if (!p.ok() || !p->has_value()) return absl::InternalError("read");
  return GpaDirectView::Parse(**p).status();
}

uint64_t Range(uint32_t byte_count, uint32_t byte_offset) {
  return uint64_t{byte_count} | uint64_t{byte_offset} << 32;
}

// Regression: bytes after the last range were accepted although the ranges must fill the
// sub-header exactly.
TEST(GpaDirectTest, ParseRejectsBytesAfterTheLastRange) {
  const uint64_t count1 = uint64_t{1} << 32;
  EXPECT_TRUE(ParseHostileGpa({count1, Range(10, 0), 5}, PacketType::kDataUsingGpaDirect).ok());
  absl::Status trailing =
      ParseHostileGpa({count1, Range(10, 0), 5, 0xdead}, PacketType::kDataUsingGpaDirect);
  EXPECT_EQ(trailing.code(), absl::StatusCode::kDataLoss) << trailing;
  EXPECT_EQ(ParseHostileGpa({0, 0}, PacketType::kDataUsingGpaDirect).code(),
            absl::StatusCode::kDataLoss);  // no ranges, 8 stray bytes
}

TEST(GpaDirectTest, ParseRejectsHostileSubHeaders) {
  const uint64_t count1 = uint64_t{1} << 32, count2 = uint64_t{2} << 32;
  EXPECT_TRUE(ParseHostileGpa({count1, Range(10, 0), 5}, PacketType::kDataUsingGpaDirect).ok());
  EXPECT_EQ(ParseHostileGpa({count1, Range(10, 0), 5}, PacketType::kDataInband).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseHostileGpa({}, PacketType::kDataUsingGpaDirect).code(),
            absl::StatusCode::kDataLoss);  // no GpaDirectHeader
  EXPECT_EQ(ParseHostileGpa({count1, Range(0, 0), 5}, PacketType::kDataUsingGpaDirect).code(),
            absl::StatusCode::kDataLoss);  // byte_count 0
  EXPECT_EQ(ParseHostileGpa({count1, Range(10, 4096), 5}, PacketType::kDataUsingGpaDirect).code(),
            absl::StatusCode::kDataLoss);  // offset outside the first page
  EXPECT_EQ(ParseHostileGpa({count1, Range(5000, 0), 5}, PacketType::kDataUsingGpaDirect).code(),
            absl::StatusCode::kDataLoss);  // needs 2 PFNs, has 1
  EXPECT_EQ(ParseHostileGpa({count2, Range(10, 0), 5}, PacketType::kDataUsingGpaDirect).code(),
            absl::StatusCode::kDataLoss);  // second range missing
  EXPECT_EQ(ParseHostileGpa({uint64_t{0xFFFFFFFF} << 32, Range(10, 0), 5},
                            PacketType::kDataUsingGpaDirect)
                .code(),
            absl::StatusCode::kDataLoss);  // absurd range count
  EXPECT_EQ(ParseHostileGpa({count1, Range(0xFFFFFFFF, 0xFFF), 5}, PacketType::kDataUsingGpaDirect)
                .code(),
            absl::StatusCode::kDataLoss);  // huge range: no overflow, just too few PFNs
}

TEST(TransferPageTest, ParseReadsHeaderAndRanges) {
  RingMemory memory(1);
  ASSERT_TRUE(InitializeRing(memory.span()).ok());
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(memory.span());
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(memory.span());
  ASSERT_TRUE(out.ok() && in.ok());
  auto write = [&](PacketType type, std::vector<uint8_t> sub) {
    OutgoingPacket packet;
    packet.type = type;
    packet.sub_header = sub;
    ASSERT_TRUE(out->Write(packet).ok());
  };
  // set id 0x0102, owns the set, 2 ranges: (100 @ 0), (50 @ 4096).
  write(PacketType::kDataUsingTransferPages,
        {0x02, 0x01, 1, 0, 2, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 50, 0, 0, 0, 0, 0x10, 0, 0});
  write(PacketType::kDataUsingTransferPages, {1, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0});
  write(PacketType::kDataInband, {});

  absl::StatusOr<std::optional<PacketView>> p = in->Next();
  ASSERT_TRUE(p.ok() && p->has_value());
  absl::StatusOr<TransferPageView> v = TransferPageView::Parse(**p);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->transfer_page_set_id(), 0x0102);
  EXPECT_TRUE(v->sender_owns_set());
  ASSERT_EQ(v->range_count(), 2u);
  EXPECT_EQ(v->range(0).byte_count, 100u);
  EXPECT_EQ(v->range(1).byte_count, 50u);
  EXPECT_EQ(v->range(1).byte_offset, 4096u);
  EXPECT_EQ(v->range(2).byte_count, 0u);  // out of range: zero, not a stray read

  p = in->Next();  // claims 3 ranges, holds 1
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ(TransferPageView::Parse(**p).status().code(), absl::StatusCode::kDataLoss);
  p = in->Next();
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ(TransferPageView::Parse(**p).status().code(), absl::StatusCode::kInvalidArgument);
}

// --- A randomized single-threaded model check ------------------------------------------------

// Random appends (gathered, with sub-headers), commits, rollbacks, reads and read commits,
// compared against a queue model: every packet comes out once, in order, intact; free space
// and available bytes always match the model; the signal results follow the rules.
TEST(RingModelTest, RandomOperationsMatchAQueueModel) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    const size_t pages = 1 + rng() % 3;
    RingMemory memory(pages);
    const size_t size = memory.data_size();
    ASSERT_TRUE(InitializeRing(memory.span()).ok());
    std::vector<uint8_t> scratch(size);
    absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(memory.span());
    absl::StatusOr<IncomingRing> in = IncomingRing::Attach(memory.span(), absl::MakeSpan(scratch));
    ASSERT_TRUE(out.ok() && in.ok());

    struct Model {
      uint64_t id;
      size_t sub, payload;
    };
    std::deque<Model> committed, appended;
    size_t used_committed = 0, used_appended = 0, consumed_uncommitted = 0;
    uint64_t next_id = 1;
    auto ring_bytes = [](const Model& m) { return PacketRingBytes(m.sub, m.payload); };
    for (int step = 0; step < 3000; ++step) {
      const int op = rng() % 10;
      if (op < 4) {  // append
        Model m{next_id, (rng() % 3) * 8, rng() % (op == 0 ? size : 300)};
        const std::vector<uint8_t> sub = Pattern(m.sub, static_cast<uint32_t>(m.id) + 1000);
        const std::vector<uint8_t> payload = Pattern(m.payload, static_cast<uint32_t>(m.id));
        const size_t cut1 = m.payload ? rng() % (m.payload + 1) : 0;
        const size_t cut2 = cut1 + (m.payload - cut1 ? rng() % (m.payload - cut1 + 1) : 0);
        const absl::Span<const uint8_t> all(payload);
        const absl::Span<const uint8_t> pieces[] = {
            all.subspan(0, cut1), all.subspan(cut1, cut2 - cut1), all.subspan(cut2)};
        OutgoingPacket packet;
        packet.trans_id = m.id;
        packet.sub_header = sub;
        packet.payload = pieces;
        absl::StatusOr<AppendResult> r = out->Append(packet);
        const size_t need = ring_bytes(m);
        if (need >= size || m.sub + m.payload + 16 > kMaxPacketLength) {
          EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
          continue;
        }
        ASSERT_TRUE(r.ok()) << r.status();
        const size_t free_space = size - used_committed - used_appended;
        if (free_space > need) {
          ASSERT_EQ(*r, AppendResult::kAppended);
          appended.push_back(m);
          used_appended += need;
          ++next_id;
        } else {
          ASSERT_EQ(*r, AppendResult::kFull);
        }
      } else if (op < 6) {  // commit (maybe rollback first)
        if (rng() % 8 == 0) {
          out->Rollback();
          next_id -= appended.size();
          appended.clear();
          used_appended = 0;
        }
        const bool reader_idle = memory.control()->read_index == memory.control()->write_index;
        const bool signal = out->Commit();
        EXPECT_EQ(signal, !appended.empty() && reader_idle);
        for (const Model& m : appended) committed.push_back(m);
        used_committed += used_appended;
        appended.clear();
        used_appended = 0;
      } else if (op < 9) {  // read
        absl::StatusOr<std::optional<PacketView>> p = in->Next();
        ASSERT_TRUE(p.ok()) << p.status();
        if (committed.size() == consumed_uncommitted) {
          ASSERT_FALSE(p->has_value());
          continue;
        }
        ASSERT_TRUE(p->has_value());
        const Model& m = committed[consumed_uncommitted++];
        EXPECT_EQ((*p)->trans_id(), m.id);
        ASSERT_EQ((*p)->sub_header().size(), m.sub);
        ASSERT_GE((*p)->payload().size(), m.payload);
        const std::vector<uint8_t> sub = Pattern(m.sub, static_cast<uint32_t>(m.id) + 1000);
        const std::vector<uint8_t> payload = Pattern(m.payload, static_cast<uint32_t>(m.id));
        EXPECT_TRUE(SameBytes((*p)->sub_header(), sub));
        EXPECT_TRUE(SameBytes((*p)->payload(), payload));
      } else {  // commit reads
        ASSERT_TRUE(in->CommitRead().ok());
        for (; consumed_uncommitted > 0; --consumed_uncommitted) {
          used_committed -= ring_bytes(committed.front());
          committed.pop_front();
        }
      }
      absl::StatusOr<size_t> free_bytes = out->FreeBytes();
      ASSERT_TRUE(free_bytes.ok());
      ASSERT_EQ(*free_bytes, size - used_committed - used_appended);
    }
  }
}

}  // namespace
}  // namespace vbus
