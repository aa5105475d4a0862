// Ring buffer against its peer: the pending_send_sz handshake, a peer that writes hostile
// indices, lengths and offsets (every failure is a sticky DataLoss naming the reason), and the
// typed views of GPA-direct and transfer-page sub-headers.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/data/ring_buffer.h"
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
