// RingMemory, Pattern and the RingTest fixture shared by the ring buffer's tests (testonly).
#ifndef VBUS_CORE_DATA_RING_BUFFER_TESTING_H_
#define VBUS_CORE_DATA_RING_BUFFER_TESTING_H_

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "core/data/ring_buffer.h"
#include "gtest/gtest.h"

namespace vbus::testing {

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

inline std::vector<uint8_t> Pattern(size_t size, uint32_t seed) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(seed * 131 + i * 7 + 1);
  return bytes;
}

// Whether `actual` starts with `expected` (memcmp with a null pointer is undefined even for 0
// bytes).
inline bool SameBytes(absl::Span<const uint8_t> actual, const std::vector<uint8_t>& expected) {
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

}  // namespace vbus::testing

#endif  // VBUS_CORE_DATA_RING_BUFFER_TESTING_H_
