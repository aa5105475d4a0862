// The ring-fault helpers on plain ring memory, read back by the guest's own ring objects
// (core/data/ring_buffer.h): what a hostile host writes is exactly what a guest then sees.
#include "mock/host/ring_fault.h"

#include <cstring>
#include <optional>
#include <vector>

#include "core/data/protocol.h"
#include "core/data/ring_buffer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::mock {
namespace {

using ::testing::HasSubstr;

constexpr size_t kRingPages = 3;  // a control page and 8192 data bytes
constexpr uint32_t kDataSize = (kRingPages - 1) * protocol::kPageSize;

class RingFaultTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(InitializeRing(ring()).ok()); }

  absl::Span<uint8_t> ring() { return absl::MakeSpan(memory_); }
  RingControlPage& control() { return *reinterpret_cast<RingControlPage*>(memory_.data()); }

  static v1::RingFault::FieldWrite Write(v1::RingFault::Field field) {
    v1::RingFault::FieldWrite w;
    w.set_ring(v1::RingFault::RING_INBOUND);
    w.set_field(field);
    return w;
  }

  // A raw packet: a descriptor with these fields, then `body` bytes of 0xAB.
  static std::vector<uint8_t> Raw(uint16_t type, uint16_t offset8, uint16_t len8, size_t body) {
    PacketDescriptor d{type, offset8, len8, 0, 0x1234};
    std::vector<uint8_t> bytes(sizeof(d) + body, 0xAB);
    std::memcpy(bytes.data(), &d, sizeof(d));
    return bytes;
  }

  std::vector<uint8_t> memory_ = std::vector<uint8_t>(kRingPages * protocol::kPageSize);
};

TEST_F(RingFaultTest, SetAddAndToggleEachField) {
  const struct {
    v1::RingFault::Field field;
    uint32_t RingControlPage::*member;
  } kFields[] = {
      {v1::RingFault::FIELD_WRITE_INDEX, &RingControlPage::write_index},
      {v1::RingFault::FIELD_READ_INDEX, &RingControlPage::read_index},
      {v1::RingFault::FIELD_INTERRUPT_MASK, &RingControlPage::interrupt_mask},
      {v1::RingFault::FIELD_PENDING_SEND_SZ, &RingControlPage::pending_send_sz},
      {v1::RingFault::FIELD_FEATURE_BITS, &RingControlPage::feature_bits},
  };
  for (const auto& f : kFields) {
    SCOPED_TRACE(v1::RingFault::Field_Name(f.field));
    v1::RingFault::FieldWrite w = Write(f.field);
    w.set_set(0x40);
    absl::StatusOr<FieldWriteOutcome> done = WriteRingField(ring(), w);
    ASSERT_TRUE(done.ok()) << done.status();
    EXPECT_EQ(done->data_size, kDataSize);
    EXPECT_EQ(done->after, 0x40u);
    EXPECT_EQ(control().*f.member, 0x40u);

    w.set_toggle(0x41);
    done = WriteRingField(ring(), w);
    ASSERT_TRUE(done.ok());
    EXPECT_EQ(done->before, 0x40u);
    EXPECT_EQ(control().*f.member, 0x01u);

    w.set_add(7);
    done = WriteRingField(ring(), w);
    ASSERT_TRUE(done.ok());
    EXPECT_EQ(control().*f.member, 0x08u);
  }
}

TEST_F(RingFaultTest, AddMovesIndicesAroundTheRingAndOtherFieldsModulo2To32) {
  v1::RingFault::FieldWrite w = Write(v1::RingFault::FIELD_WRITE_INDEX);
  w.set_add(-8);  // from 0: back one unit, to the end of the data area
  absl::StatusOr<FieldWriteOutcome> done = WriteRingField(ring(), w);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->after, kDataSize - 8);
  w.set_add(16 + 5 * int64_t{kDataSize});  // forward past the end, wrapping
  done = WriteRingField(ring(), w);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->after, 8u);
  w.set_add(-3 * int64_t{kDataSize} - 4);
  done = WriteRingField(ring(), w);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->after, 4u);

  v1::RingFault::FieldWrite pending = Write(v1::RingFault::FIELD_PENDING_SEND_SZ);
  pending.set_add(-1);
  done = WriteRingField(ring(), pending);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->after, 0xFFFFFFFFu);
}

TEST_F(RingFaultTest, TimesRepeatsTheWrite) {
  v1::RingFault::FieldWrite w = Write(v1::RingFault::FIELD_INTERRUPT_MASK);
  w.set_toggle(1);
  w.set_times(100000);  // an even count ends where it started
  absl::StatusOr<FieldWriteOutcome> done = WriteRingField(ring(), w);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->before, 0u);
  EXPECT_EQ(done->after, 0u);
  w.set_times(3);
  done = WriteRingField(ring(), w);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->after, 1u);
  w.set_add(8);
  w.set_times(10);
  done = WriteRingField(ring(), w);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->after, 81u);
}

TEST_F(RingFaultTest, IncompleteFieldWritesAreRefused) {
  v1::RingFault::FieldWrite no_field;
  no_field.set_set(1);
  EXPECT_EQ(WriteRingField(ring(), no_field).status().code(), absl::StatusCode::kInvalidArgument);
  v1::RingFault::FieldWrite no_value = Write(v1::RingFault::FIELD_READ_INDEX);
  EXPECT_THAT(WriteRingField(ring(), no_value).status().message(), HasSubstr("no value"));
  v1::RingFault::FieldWrite too_many = Write(v1::RingFault::FIELD_READ_INDEX);
  too_many.set_set(0);
  too_many.set_times(kMaxRingFaultRepeats + 1);
  EXPECT_EQ(WriteRingField(ring(), too_many).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteRingField(ring().subspan(0, 100), Write(v1::RingFault::FIELD_READ_INDEX))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(control().read_index, 0u);
}

TEST_F(RingFaultTest, ARawPacketIsReadBackExactlyAsWritten) {
  const std::vector<uint8_t> bytes = Raw(0x77, 2, 4, 16);  // 32 bytes: a valid layout
  absl::StatusOr<uint32_t> at = WriteRawPacket(ring(), bytes);
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(*at, 0u);
  EXPECT_EQ(control().write_index, 32u + kPacketTrailerSize);
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(ring());
  ASSERT_TRUE(in.ok());
  absl::StatusOr<std::optional<PacketView>> p = in->Next();
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_EQ((*p)->raw_type(), 0x77);
  EXPECT_EQ((*p)->trans_id(), 0x1234u);
  EXPECT_EQ((*p)->payload().size(), 16u);
  EXPECT_EQ((*p)->payload()[0], 0xAB);
  // The next packet goes behind it (an ordinary writer, attached now, continues there).
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(ring());
  ASSERT_TRUE(out.ok());
  const uint8_t hello[5] = {'h', 'e', 'l', 'l', 'o'};
  ASSERT_TRUE(out->Write(PacketType::kDataInband, 0, 9, hello).ok());
  p = in->Next();
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_EQ((*p)->trans_id(), 9u);
}

TEST_F(RingFaultTest, ARawPacketWrapsAroundTheEndAndIsPaddedWithZeros) {
  control().write_index = control().read_index = kDataSize - 24;
  const std::vector<uint8_t> bytes = Raw(6, 2, 5, 21);  // 37 bytes, padded to 40
  absl::StatusOr<uint32_t> at = WriteRawPacket(ring(), bytes);
  ASSERT_TRUE(at.ok()) << at.status();
  EXPECT_EQ(*at, kDataSize - 24);
  EXPECT_EQ(control().write_index, 40u + 8u - 24u);
  std::vector<uint8_t> scratch(kDataSize);
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(ring(), absl::MakeSpan(scratch));
  ASSERT_TRUE(in.ok());
  absl::StatusOr<std::optional<PacketView>> p = in->Next();
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_TRUE((*p)->wrapped());
  ASSERT_EQ((*p)->payload().size(), 24u);
  EXPECT_EQ((*p)->payload()[20], 0xAB);
  EXPECT_EQ((*p)->payload()[21], 0);  // padding
  EXPECT_EQ((*p)->payload()[23], 0);
}

// The descriptors a hostile host writes, and the guest reader's verdict on each.
TEST_F(RingFaultTest, HostileDescriptorsMeetTheReadersChecks) {
  const struct {
    const char* name;
    std::vector<uint8_t> bytes;
    const char* verdict;
  } kCases[] = {
      {"shorter than a packet", std::vector<uint8_t>(8, 0), "less than a minimal packet"},
      {"len8 below the descriptor", Raw(6, 2, 1, 0), "len8 1 is shorter than the 16-byte"},
      {"data offset past the length", Raw(6, 9, 3, 8), "offset8 9 is outside [2, len8 3]"},
      {"data offset inside the descriptor", Raw(6, 1, 3, 8), "offset8 1 is outside"},
      {"longer than the ring", Raw(6, 2, 0xFFFF, 8), "len8 65535"},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(InitializeRing(ring()).ok());
    ASSERT_TRUE(WriteRawPacket(ring(), c.bytes).ok());
    absl::StatusOr<IncomingRing> in = IncomingRing::Attach(ring());
    ASSERT_TRUE(in.ok());
    absl::StatusOr<std::optional<PacketView>> p = in->Next();
    EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(p.status().message(), HasSubstr(c.verdict));
  }
}

TEST_F(RingFaultTest, RawPacketsThatCannotBeWritten) {
  EXPECT_EQ(WriteRawPacket(ring(), {}).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<uint8_t> huge(kMaxRawPacketBytes + 1);
  EXPECT_EQ(WriteRawPacket(ring(), huge).status().code(), absl::StatusCode::kInvalidArgument);
  // No room: a writer needs strictly more free bytes than it writes.
  const std::vector<uint8_t> whole(kDataSize - kPacketTrailerSize);
  EXPECT_EQ(WriteRawPacket(ring(), whole).status().code(), absl::StatusCode::kResourceExhausted);
  // Corrupt indices: nothing is written.
  control().read_index = 12;
  EXPECT_EQ(WriteRawPacket(ring(), Raw(6, 2, 2, 0)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  control().read_index = 0;
  control().write_index = kDataSize;
  EXPECT_EQ(WriteRawPacket(ring(), Raw(6, 2, 2, 0)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(control().write_index, kDataSize);
}

}  // namespace
}  // namespace vbus::mock
