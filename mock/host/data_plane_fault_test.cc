// GuestDataPlane::InjectRingFault against a guest in the same process (real shared memory,
// rings, event pages and doorbells; ProcessEvents called directly): each kind of fault does
// what RingFault in proto/mock_host.proto says, and the guest's ring objects see it.
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/data/protocol.h"
#include "core/data/ring_buffer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/host/data_plane.h"
#include "mock/testing/guest_rings.h"

namespace vbus::mock {
namespace {

using testing::GuestPages;
using testing::GuestRings;
using ::testing::HasSubstr;

constexpr uint64_t kMemoryBytes = 128 * protocol::kPageSize;
constexpr uint32_t kRelid = 3;
constexpr uint32_t kRingDataSize = 3 * protocol::kPageSize;  // 4-page rings

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

std::string RawPacket(uint16_t type, uint16_t offset8, uint16_t len8, size_t body) {
  PacketDescriptor d{type, offset8, len8, 0, 77};
  std::string bytes(sizeof(d) + body, 'x');
  std::memcpy(bytes.data(), &d, sizeof(d));
  return bytes;
}

class DataPlaneFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto guest = GuestMemory::Create("", kMemoryBytes);
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_memory_ = std::move(*guest);
    pages_.emplace(*guest_memory_);
    auto host = GuestMemory::Open(guest_memory_->path(), kMemoryBytes, MemoryLayout{});
    ASSERT_TRUE(host.ok()) << host.status();
    auto plane = GuestDataPlane::Create("guest-1", std::move(*host), nullptr, {});
    ASSERT_TRUE(plane.ok()) << plane.status();
    plane_ = std::move(*plane);
    auto pfns = pages_->Allocate(8);
    ASSERT_TRUE(pfns.ok());
    auto rings = GuestRings::Create(*guest_memory_, kRelid, *pfns, 4);
    ASSERT_TRUE(rings.ok()) << rings.status();
    rings_ = std::move(*rings);
    ASSERT_TRUE(plane_
                    ->MapChannel(kRelid, "echo", absl::MakeConstSpan(*pfns).subspan(0, 4),
                                 absl::MakeConstSpan(*pfns).subspan(4), std::nullopt)
                    .ok());
  }

  static v1::RingFault FieldWrite(v1::RingFault::Ring ring, v1::RingFault::Field field) {
    v1::RingFault f;
    f.set_child_relid(kRelid);
    f.mutable_field_write()->set_ring(ring);
    f.mutable_field_write()->set_field(field);
    return f;
  }

  // One echo round trip: the guest sends, the host drains, the guest reads the answer.
  void ExpectEcho(const std::string& text) {
    ASSERT_TRUE(rings_->Send(PacketType::kDataInband, 0, 5, Bytes(text)).ok());
    plane_->ProcessEvents();
    auto p = rings_->TryReceive();
    ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
    EXPECT_EQ((*p)->trans_id, 5u);
    EXPECT_EQ(std::string((*p)->payload.begin(), (*p)->payload.begin() + text.size()), text);
  }

  std::unique_ptr<GuestMemory> guest_memory_;
  std::optional<GuestPages> pages_;
  std::unique_ptr<GuestDataPlane> plane_;
  std::unique_ptr<GuestRings> rings_;
};

TEST_F(DataPlaneFaultTest, AFieldWriteOnTheInboundRingWithASignalFailsTheGuestsReader) {
  v1::RingFault f = FieldWrite(v1::RingFault::RING_INBOUND, v1::RingFault::FIELD_WRITE_INDEX);
  f.mutable_field_write()->set_set(1 << 20);
  f.mutable_field_write()->set_signal(true);
  const uint32_t doorbell = guest_memory_->DoorbellValue(Doorbell::kGuest);
  absl::StatusOr<v1::RingFaultResult> r = plane_->InjectRingFault(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->data_size(), kRingDataSize);
  EXPECT_EQ(r->value_before(), 0u);
  EXPECT_EQ(r->value_after(), 1u << 20);
  EXPECT_EQ(r->doorbells(), 1u);
  EXPECT_EQ(guest_memory_->DoorbellValue(Doorbell::kGuest), doorbell + 1);
  auto p = rings_->TryReceive();
  EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(p.status().message(), HasSubstr("write_index 1048576 is outside"));
}

TEST_F(DataPlaneFaultTest, AFieldWriteOnTheOutboundRingLandsInTheGuestsControlPage) {
  ExpectEcho("before");  // read_index is no longer 0
  v1::RingFault f = FieldWrite(v1::RingFault::RING_OUTBOUND, v1::RingFault::FIELD_READ_INDEX);
  f.mutable_field_write()->set_add(-8);
  absl::StatusOr<v1::RingFaultResult> r = plane_->InjectRingFault(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value_before(), 32u);  // one 6-byte packet: 16 + 8 + trailer
  EXPECT_EQ(r->value_after(), 24u);
  EXPECT_EQ(r->doorbells(), 0u);  // no signal asked for
  EXPECT_EQ(rings_->outbound_control()->read_index, 24u);
}

TEST_F(DataPlaneFaultTest, ARawPacketReachesTheGuestAndTheHostWritesOnBehindIt) {
  v1::RingFault f;
  f.set_child_relid(kRelid);
  f.set_raw_packet(RawPacket(0x77, 2, 3, 8));
  absl::StatusOr<v1::RingFaultResult> r = plane_->InjectRingFault(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->packet_offset(), 0u);
  EXPECT_EQ(r->doorbells(), 1u);  // always signalled
  auto p = rings_->TryReceive();
  ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
  EXPECT_EQ((*p)->type, 0x77);
  EXPECT_EQ((*p)->trans_id, 77u);
  // The echo's answer goes behind the raw packet, not over it.
  ExpectEcho("after the raw packet");
  f.set_raw_packet(RawPacket(6, 9, 3, 8));
  r = plane_->InjectRingFault(f);
  ASSERT_TRUE(r.ok()) << r.status();
  // Behind the raw packet (24 bytes and the trailer) and the echo's answer.
  EXPECT_EQ(r->packet_offset(), 32u + PacketRingBytes(0, 20));
  p = rings_->TryReceive();
  EXPECT_THAT(p.status().message(), HasSubstr("offset8 9 is outside"));
}

TEST_F(DataPlaneFaultTest, ARawPacketThatDoesNotFitIsRefusedAndTheChannelGoesOn) {
  v1::RingFault f;
  f.set_child_relid(kRelid);
  f.set_raw_packet(std::string(kRingDataSize - 8, 'x'));
  EXPECT_EQ(plane_->InjectRingFault(f).status().code(), absl::StatusCode::kResourceExhausted);
  f.set_raw_packet("");
  EXPECT_EQ(plane_->InjectRingFault(f).status().code(), absl::StatusCode::kInvalidArgument);
  ExpectEcho("still here");
}

TEST_F(DataPlaneFaultTest, StopReadingPausesTheDeviceAndResumeDrainsWhatWaits) {
  v1::RingFault stop;
  stop.set_child_relid(kRelid);
  stop.set_reading(v1::RingFault::READING_STOP);
  ASSERT_TRUE(plane_->InjectRingFault(stop).ok());
  ASSERT_TRUE(rings_->Send(PacketType::kDataInband, 0, 1, Bytes("one")).ok());
  ASSERT_TRUE(rings_->Send(PacketType::kDataInband, 0, 2, Bytes("two")).ok());
  EXPECT_EQ(plane_->ProcessEvents(), 1u);                       // the signal is taken...
  EXPECT_EQ(plane_->Counters(kRelid)->packets_from_guest, 0u);  // ...and nothing read
  auto none = rings_->TryReceive();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  v1::RingFault resume = stop;
  resume.set_reading(v1::RingFault::READING_RESUME);
  ASSERT_TRUE(plane_->InjectRingFault(resume).ok());
  EXPECT_EQ(plane_->Counters(kRelid)->packets_from_guest, 2u);
  for (uint64_t id : {1, 2}) {
    auto p = rings_->TryReceive();
    ASSERT_TRUE(p.ok() && p->has_value()) << p.status();
    EXPECT_EQ((*p)->trans_id, id);
  }
  ExpectEcho("served again");
}

TEST_F(DataPlaneFaultTest, AnEventStormRingsOnlyWhenABitWasClear) {
  v1::RingFault f;
  f.mutable_event_storm()->add_relids(5);
  f.mutable_event_storm()->add_relids(2047);
  f.mutable_event_storm()->set_count(100000);
  const uint32_t doorbell = guest_memory_->DoorbellValue(Doorbell::kGuest);
  absl::StatusOr<v1::RingFaultResult> r = plane_->InjectRingFault(f);
  ASSERT_TRUE(r.ok()) << r.status();
  // Nobody scanned the guest's flags meanwhile: each bit was clear once.
  EXPECT_EQ(r->doorbells(), 2u);
  EXPECT_EQ(guest_memory_->DoorbellValue(Doorbell::kGuest), doorbell + 2);
  ExpectEcho("no harm done");
}

TEST_F(DataPlaneFaultTest, BadFaultsAreRefusedWithoutTouchingTheRings) {
  v1::RingFault unknown_relid =
      FieldWrite(v1::RingFault::RING_INBOUND, v1::RingFault::FIELD_WRITE_INDEX);
  unknown_relid.mutable_field_write()->set_set(8);
  unknown_relid.set_child_relid(9);
  EXPECT_EQ(plane_->InjectRingFault(unknown_relid).status().code(), absl::StatusCode::kNotFound);
  v1::RingFault no_ring =
      FieldWrite(v1::RingFault::RING_UNSPECIFIED, v1::RingFault::FIELD_WRITE_INDEX);
  no_ring.mutable_field_write()->set_set(8);
  EXPECT_EQ(plane_->InjectRingFault(no_ring).status().code(), absl::StatusCode::kInvalidArgument);
  v1::RingFault no_kind;
  no_kind.set_child_relid(kRelid);
  EXPECT_EQ(plane_->InjectRingFault(no_kind).status().code(), absl::StatusCode::kInvalidArgument);
  v1::RingFault no_reading;
  no_reading.set_child_relid(kRelid);
  no_reading.set_reading(v1::RingFault::READING_UNSPECIFIED);
  EXPECT_EQ(plane_->InjectRingFault(no_reading).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (uint32_t relid : {0u, 2048u}) {
    v1::RingFault storm;
    storm.mutable_event_storm()->add_relids(relid);
    EXPECT_EQ(plane_->InjectRingFault(storm).status().code(), absl::StatusCode::kInvalidArgument);
  }
  v1::RingFault storm;
  storm.mutable_event_storm()->add_relids(5);
  storm.mutable_event_storm()->set_target_vp(1);  // the guest takes events on VP 0 only
  EXPECT_EQ(plane_->InjectRingFault(storm).status().code(), absl::StatusCode::kInvalidArgument);
  storm.mutable_event_storm()->set_target_vp(0);
  storm.mutable_event_storm()->set_count(2000000);
  EXPECT_EQ(plane_->InjectRingFault(storm).status().code(), absl::StatusCode::kInvalidArgument);
  v1::RingFault empty_storm;
  empty_storm.mutable_event_storm();
  EXPECT_EQ(plane_->InjectRingFault(empty_storm).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rings_->inbound_control()->write_index, 0u);
  ExpectEcho("untouched");
}

TEST_F(DataPlaneFaultTest, AChannelTheGuestCorruptedTakesNoMoreFaults) {
  rings_->outbound_control()->write_index = 5;  // the guest's own corruption
  rings_->SignalHost();
  plane_->ProcessEvents();
  ASSERT_FALSE(plane_->ChannelStatus(kRelid).ok());
  v1::RingFault f;
  f.set_child_relid(kRelid);
  f.set_raw_packet(RawPacket(6, 2, 2, 0));
  EXPECT_EQ(plane_->InjectRingFault(f).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace vbus::mock
