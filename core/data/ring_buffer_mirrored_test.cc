// Rings mapped mirrored (RingMapping::kMirrored over a MirroredMapping): the mapping aliases,
// packets that wrap are written and read in one piece with no scratch, the wire format is the
// same as a single mapping's (each side may use either), and host-written indices are checked
// against the data area, not the doubled range.
#include <cstring>
#include <optional>
#include <vector>

#include "core/data/mirrored_mapping.h"
#include "core/data/ring_buffer.h"
#include "core/data/ring_buffer_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

using ::testing::HasSubstr;
using testing::Pattern;
using testing::SameBytes;

constexpr size_t kRingBytes = 3 * protocol::kPageSize;  // control page + 8 KiB of data
constexpr size_t kDataBytes = kRingBytes - protocol::kPageSize;

MirroredMapping MustMap() {
  absl::StatusOr<MirroredMapping> m = MirroredMapping::Anonymous(kRingBytes);
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

TEST(MirroredMappingTest, TheSecondDataAreaAliasesTheFirst) {
  MirroredMapping m = MustMap();
  ASSERT_EQ(m.memory().size(), kRingBytes + kDataBytes);
  ASSERT_EQ(m.ring().size(), kRingBytes);
  uint8_t* data = m.memory().data() + protocol::kPageSize;
  data[5] = 0x11;
  EXPECT_EQ(data[kDataBytes + 5], 0x11);
  data[kDataBytes + kDataBytes - 1] = 0x22;
  EXPECT_EQ(data[kDataBytes - 1], 0x22);
  // The control page is mapped once: what follows the data area is data again, not it.
  m.memory()[0] = 0x33;
  EXPECT_NE(data[kDataBytes], 0x33);
}

TEST(MirroredMappingTest, RefusesSizesThatAreNotPageMultiples) {
  EXPECT_EQ(MirroredMapping::Map(-1, 0, protocol::kPageSize).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MirroredMapping::Map(-1, 100, kRingBytes).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MirroredMapping::Map(-1, 0, kRingBytes).status().code(),
            absl::StatusCode::kInternal);  // not a file
}

TEST(MirroredRingTest, AttachRefusesMemoryThatIsNotAControlPageAndTwoDataAreas) {
  MirroredMapping m = MustMap();
  ASSERT_TRUE(InitializeRing(m.ring()).ok());
  absl::StatusOr<OutgoingRing> odd =
      OutgoingRing::Attach(m.memory().first(2 * protocol::kPageSize), RingMapping::kMirrored);
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(odd.status().message(), HasSubstr("twice"));
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(m.memory(), RingMapping::kMirrored);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->data_size(), kDataBytes);
}

// Writes packets of `sizes` (cycled) through `out` and reads each through `in`, checking
// every byte; returns how many of the read views wrapped (were copied into scratch).
int Stream(OutgoingRing& out, IncomingRing& in, const std::vector<size_t>& sizes, int count) {
  int wrapped = 0;
  for (int i = 0; i < count; ++i) {
    const size_t size = sizes[i % sizes.size()];
    const std::vector<uint8_t> payload = Pattern(size, i);
    absl::StatusOr<WriteResult> w =
        out.Write(PacketType::kDataInband, 0, static_cast<uint64_t>(i) + 1, payload);
    EXPECT_TRUE(w.ok() && *w != WriteResult::kFull) << "packet " << i;
    absl::StatusOr<std::optional<PacketView>> p = in.Next();
    EXPECT_TRUE(p.ok() && p->has_value()) << "packet " << i << ": " << p.status();
    if (!p.ok() || !p->has_value()) return -1;
    EXPECT_EQ((*p)->trans_id(), static_cast<uint64_t>(i) + 1);
    EXPECT_TRUE(SameBytes((*p)->payload(), payload)) << "packet " << i;
    if ((*p)->wrapped()) ++wrapped;
    EXPECT_TRUE(in.CommitRead().ok());
  }
  return wrapped;
}

// Sizes that are not divisors of the data area: packets straddle its end at every offset.
const std::vector<size_t> kSizes = {1, 40, 333, 1500, 3000, 7, 4000};

TEST(MirroredRingTest, PacketsThatWrapAreContiguousWithoutScratch) {
  MirroredMapping m = MustMap();
  ASSERT_TRUE(InitializeRing(m.ring()).ok());
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(m.memory(), RingMapping::kMirrored);
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(m.memory(), {}, RingMapping::kMirrored);
  ASSERT_TRUE(out.ok() && in.ok());
  // No scratch at all: a packet that needed one would be ResourceExhausted.
  EXPECT_EQ(Stream(*out, *in, kSizes, 500), 0);
}

TEST(MirroredRingTest, TheFormatIsTheSameAsASingleMappingsBothWays) {
  std::vector<uint8_t> scratch(kDataBytes);
  {
    // Mirrored writer, single-mapped reader (the peer of a guest with a mirror).
    MirroredMapping m = MustMap();
    ASSERT_TRUE(InitializeRing(m.ring()).ok());
    absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(m.memory(), RingMapping::kMirrored);
    absl::StatusOr<IncomingRing> in = IncomingRing::Attach(m.ring(), absl::MakeSpan(scratch));
    ASSERT_TRUE(out.ok() && in.ok());
    EXPECT_GT(Stream(*out, *in, kSizes, 500), 0);  // the single-mapped side did see wraps
  }
  {
    // Single-mapped writer, mirrored reader.
    MirroredMapping m = MustMap();
    ASSERT_TRUE(InitializeRing(m.ring()).ok());
    absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(m.ring());
    absl::StatusOr<IncomingRing> in = IncomingRing::Attach(m.memory(), {}, RingMapping::kMirrored);
    ASSERT_TRUE(out.ok() && in.ok());
    EXPECT_EQ(Stream(*out, *in, kSizes, 500), 0);
  }
}

TEST(MirroredRingTest, IndicesAreCheckedAgainstTheDataAreaNotTheMirror) {
  MirroredMapping m = MustMap();
  ASSERT_TRUE(InitializeRing(m.ring()).ok());
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(m.memory(), {}, RingMapping::kMirrored);
  ASSERT_TRUE(in.ok());
  // A write_index inside the mirror's range but outside the data area.
  auto* control = reinterpret_cast<RingControlPage*>(m.memory().data());
  control->write_index = kDataBytes + 64;
  absl::StatusOr<std::optional<PacketView>> p = in->Next();
  EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(p.status().message(), HasSubstr("outside"));

  // A descriptor claiming more bytes than are available stays refused near the end.
  MirroredMapping m2 = MustMap();
  ASSERT_TRUE(InitializeRing(m2.ring()).ok());
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(m2.memory(), RingMapping::kMirrored);
  absl::StatusOr<IncomingRing> in2 = IncomingRing::Attach(m2.memory(), {}, RingMapping::kMirrored);
  ASSERT_TRUE(out.ok() && in2.ok());
  ASSERT_EQ(Stream(*out, *in2, {kDataBytes / 2 - 64}, 3), 0);  // ends past the middle
  const std::vector<uint8_t> payload(100, 1);
  ASSERT_TRUE(out->Write(PacketType::kDataInband, 0, 9, payload).ok());
  uint8_t* data = m2.memory().data() + protocol::kPageSize;
  const uint32_t at = reinterpret_cast<RingControlPage*>(m2.memory().data())->read_index;
  const uint16_t huge_len8 = 0xFFFF;
  std::memcpy(data + at + 4, &huge_len8, sizeof(huge_len8));
  absl::StatusOr<std::optional<PacketView>> q = in2->Next();
  EXPECT_EQ(q.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(q.status().message(), HasSubstr("exceeds"));
}

}  // namespace
}  // namespace vbus
