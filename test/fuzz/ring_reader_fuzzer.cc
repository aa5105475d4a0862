// libFuzzer target: the ring reader (and writer) over arbitrary control-page and data bytes,
// with a script of calls interleaved with a hostile peer's changes to shared memory (input
// format: ring_fuzz_input.h). Checks, beyond "no crash, no hang, no out-of-bounds access"
// (ASan/UBSan): every view lies inside the data area or the scratch buffer and describes a
// well-formed packet; errors use the documented codes; a failed ring stays failed with the
// same status.
#include <cstring>
#include <optional>
#include <vector>

#include "core/data/ring_buffer.h"
#include "test/fuzz/fuzz_check.h"
#include "test/fuzz/ring_fuzz_input.h"

namespace vbus::fuzz {
namespace {

class Harness {
 public:
  Harness(const uint8_t* data, size_t size) : input_(data), size_(size) {}

  void Run() {
    if (size_ < kScriptOffset) return;
    const uint8_t shape = input_[kShapeOffset];
    data_size_ = ((shape & 1) + 1) * protocol::kPageSize;
    const size_t ring_size = data_size_ + protocol::kPageSize;
    std::memset(memory_, 0, ring_size);
    std::memcpy(memory_, input_ + kControlOffset, 16);           // write, read, mask, pending
    std::memcpy(memory_ + 64, input_ + kControlOffset + 16, 4);  // feature_bits
    const size_t script_length = input_[kScriptLengthOffset];
    const size_t script_end = std::min(size_, kScriptOffset + script_length);
    if (script_end < size_) {
      std::memcpy(memory_ + protocol::kPageSize, input_ + script_end,
                  std::min(size_ - script_end, data_size_));
    }
    static constexpr size_t kScratchSizes[] = {0, 64, 600, 0};
    const size_t scratch_size =
        ((shape >> 1) & 3) == 3 ? data_size_ : kScratchSizes[(shape >> 1) & 3];
    scratch_.assign(scratch_size, 0);  // exact size: ASan catches any overrun

    const absl::Span<uint8_t> ring(memory_, ring_size);
    absl::StatusOr<IncomingRing> in = IncomingRing::Attach(ring, absl::MakeSpan(scratch_));
    if (!in.ok()) {
      FUZZ_CHECK(in.status().code() == absl::StatusCode::kDataLoss);
      return;
    }
    in_.emplace(std::move(*in));
    absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(ring);
    if (out.ok()) out_.emplace(std::move(*out));

    script_ = input_ + kScriptOffset;
    script_size_ = script_end - kScriptOffset;
    if (script_size_ == 0) {  // no script: just drain
      Drain();
      Commit();
      return;
    }
    while (pos_ < script_size_) Step(script_[pos_++] % kOpCount);
  }

 private:
  uint32_t Arg16() {
    uint32_t value = 0;
    for (int i = 0; i < 2 && pos_ < script_size_; ++i) value = value << 8 | script_[pos_++];
    return value;
  }

  void Step(uint8_t op) {
    switch (op) {
      case kDrain:
        Drain();
        break;
      case kNext:
        NextOnce();
        break;
      case kCommitRead:
        Commit();
        break;
      case kUnmask: {
        in_->MaskInterrupts();
        absl::StatusOr<bool> more = in_->UnmaskInterrupts();
        CheckSticky(more.status(),
                    {absl::StatusCode::kDataLoss, absl::StatusCode::kFailedPrecondition});
        break;
      }
      case kAvailable: {
        absl::StatusOr<size_t> available = in_->AvailableBytes();
        CheckSticky(available.status(), {absl::StatusCode::kDataLoss});
        if (available.ok()) FUZZ_CHECK(*available < data_size_);
        break;
      }
      case kPeerWriteIndex:
        Control()->write_index = Arg16() * 8;
        break;
      case kPeerDataByte: {
        const uint32_t offset = Arg16() % data_size_;
        memory_[protocol::kPageSize + offset] = pos_ < script_size_ ? script_[pos_++] : 0;
        break;
      }
      case kPeerPending:
        Control()->pending_send_sz = Arg16();
        break;
      case kWrite: {
        if (!out_.has_value()) break;
        const size_t payload = (pos_ < script_size_ ? script_[pos_++] : 0) * 9;
        std::vector<uint8_t> bytes(payload, 0xA5);
        absl::StatusOr<WriteResult> r = out_->Write(PacketType::kDataInband, 0, 7, bytes);
        if (!r.ok()) FUZZ_CHECK(r.status().code() == absl::StatusCode::kDataLoss);
        break;
      }
      case kPeerReadIndex:
        Control()->read_index = Arg16() * 8;
        break;
      default:
        break;
    }
  }

  RingControlPage* Control() { return reinterpret_cast<RingControlPage*>(memory_); }

  void Drain() {
    for (int i = 0; i < 64; ++i) {
      if (!NextOnce()) return;
    }
  }

  void Commit() {
    absl::StatusOr<bool> wake = in_->CommitRead();
    CheckSticky(wake.status(), {absl::StatusCode::kDataLoss});
  }

  // Returns true if a packet was returned.
  bool NextOnce() {
    absl::StatusOr<std::optional<PacketView>> p = in_->Next();
    if (!p.ok()) {
      if (p.status().code() == absl::StatusCode::kResourceExhausted) {
        FUZZ_CHECK(in_->status().ok());  // not sticky
        return false;
      }
      CheckSticky(p.status(), {absl::StatusCode::kDataLoss});
      return false;
    }
    if (!p->has_value()) return false;
    CheckView(**p);
    return true;
  }

  bool Inside(absl::Span<const uint8_t> s) const {
    if (s.empty()) return true;
    const uint8_t* data = memory_ + protocol::kPageSize;
    if (s.data() >= data && s.data() + s.size() <= data + data_size_) return true;
    return !scratch_.empty() && s.data() >= scratch_.data() &&
           s.data() + s.size() <= scratch_.data() + scratch_.size();
  }

  void CheckView(const PacketView& v) {
    FUZZ_CHECK(v.offset8() >= 2 && v.offset8() <= v.len8());
    FUZZ_CHECK(v.ring_bytes() < data_size_);
    FUZZ_CHECK(v.sub_header().size() + v.payload().size() + kPacketDescriptorSize ==
               size_t{v.len8()} * 8);
    FUZZ_CHECK(Inside(v.sub_header()) && Inside(v.payload()));
    // Touch every byte (ASan checks the reads).
    uint8_t sum = 0;
    for (uint8_t b : v.sub_header()) sum ^= b;
    for (uint8_t b : v.payload()) sum ^= b;
    sink_ ^= sum;
    if (v.type() == PacketType::kDataUsingGpaDirect) {
      absl::StatusOr<GpaDirectView> gpa = GpaDirectView::Parse(v);
      if (!gpa.ok()) {
        FUZZ_CHECK(gpa.status().code() == absl::StatusCode::kDataLoss);
        return;
      }
      const absl::Span<const uint8_t> sub = v.sub_header();
      uint32_t ranges = 0;
      absl::Status s = gpa->ForEachRange([&](const GpaRangeView& r) {
        ++ranges;
        FUZZ_CHECK(r.byte_count > 0 && r.byte_offset < protocol::kPageSize);
        FUZZ_CHECK(r.pfn_bytes.data() >= sub.data() &&
                   r.pfn_bytes.data() + r.pfn_bytes.size() <= sub.data() + sub.size());
        FUZZ_CHECK(r.pfn_count() ==
                   (uint64_t{r.byte_count} + r.byte_offset + protocol::kPageSize - 1) /
                       protocol::kPageSize);
        for (size_t i = 0; i < r.pfn_count(); ++i) sink_ ^= static_cast<uint8_t>(r.pfn(i));
      });
      FUZZ_CHECK(s.ok() && ranges == gpa->range_count());
    }
  }

  // A failed call must use an allowed code; a DataLoss failure is sticky and repeated.
  void CheckSticky(const absl::Status& status, std::initializer_list<absl::StatusCode> allowed) {
    if (status.ok()) {
      FUZZ_CHECK(in_->status().ok());
      return;
    }
    bool listed = false;
    for (absl::StatusCode code : allowed) listed |= status.code() == code;
    FUZZ_CHECK(listed);
    if (status.code() == absl::StatusCode::kDataLoss) {
      FUZZ_CHECK(in_->status() == status);
      FUZZ_CHECK(in_->Next().status() == status);
      FUZZ_CHECK(in_->CommitRead().status() == status);
    }
  }

  const uint8_t* input_;
  size_t size_;
  const uint8_t* script_ = nullptr;
  size_t script_size_ = 0;
  size_t pos_ = 0;
  size_t data_size_ = 0;
  alignas(protocol::kPageSize) uint8_t memory_[3 * protocol::kPageSize];
  std::vector<uint8_t> scratch_;
  std::optional<IncomingRing> in_;
  std::optional<OutgoingRing> out_;
  uint8_t sink_ = 0;
};

}  // namespace
}  // namespace vbus::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto harness = std::make_unique<vbus::fuzz::Harness>(data, size);
  harness->Run();
  return 0;
}
