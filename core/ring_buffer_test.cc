#include "core/ring_buffer.h"

#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

// Page-aligned ring memory for tests.
class RingMemory {
 public:
  explicit RingMemory(size_t data_pages) : size_((data_pages + 1) * kPageSize) {
    memory_ = static_cast<uint8_t*>(std::aligned_alloc(kPageSize, size_));
    std::memset(memory_, 0xEE, size_);
  }
  ~RingMemory() { std::free(memory_); }
  absl::Span<uint8_t> span() { return {memory_, size_}; }
  RingControlPage* control() { return reinterpret_cast<RingControlPage*>(memory_); }
  uint8_t* data() { return memory_ + kPageSize; }

 private:
  size_t size_;
  uint8_t* memory_;
};

TEST(RingBufferTest, WriteThenReadOnePacket) {
  RingMemory memory(1);
  ASSERT_TRUE(InitializeRing(memory.span()).ok());
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(memory.span());
  ASSERT_TRUE(out.ok()) << out.status();
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(memory.span());
  ASSERT_TRUE(in.ok()) << in.status();

  const std::vector<uint8_t> payload = {1, 2, 3, 4, 5};
  absl::StatusOr<WriteResult> r =
      out->Write(PacketType::kDataInband, kCompletionRequested, 42, payload);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, WriteResult::kWrittenSignal);  // empty ring, unmasked
  EXPECT_EQ(memory.control()->write_index, PacketRingBytes(0, 5));

  absl::StatusOr<std::optional<PacketView>> p = in->Next();
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(p->has_value());
  EXPECT_EQ((*p)->type(), PacketType::kDataInband);
  EXPECT_EQ((*p)->trans_id(), 42u);
  EXPECT_TRUE((*p)->completion_requested());
  EXPECT_EQ((*p)->offset8(), 2);
  EXPECT_EQ((*p)->len8(), 3);
  ASSERT_EQ((*p)->payload().size(), 8u);  // padded
  EXPECT_EQ(std::memcmp((*p)->payload().data(), payload.data(), payload.size()), 0);
  EXPECT_EQ((*p)->payload()[5], 0);  // padding is zero
}

}  // namespace
}  // namespace vbus
