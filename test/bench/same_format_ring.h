// The same-format reference ring for benchmarks: the VMBus ring format (docs/protocol.md §10) with
// the barrier placement of Linux's guest driver and NO validation of anything the peer writes.
// It is the honest upper bound for this format — every byte and every fence the protocol
// itself requires, nothing else — and the peer vbus's OutgoingRing/IncomingRing are measured
// against. Never use it on memory a peer you do not trust can write.
//
// Writer (per packet, or per batch with Commit after several Appends):
//   copy descriptor + payload + padding + trailer; full barrier; store write_index;
//   full barrier; load interrupt_mask (set: no signal); load read_index; signal iff it equals
//   the write_index before the batch (the ring went from empty to non-empty).
// Reader:
//   acquire-load write_index; walk packets through a private read offset; on commit, store
//   read_index; full barrier; load pending_send_sz; signal iff the free space crossed it.
// A packet that wraps is copied in two pieces (the format's single mapping).
#ifndef VBUS_TEST_BENCH_SAME_FORMAT_RING_H_
#define VBUS_TEST_BENCH_SAME_FORMAT_RING_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/data/ring_buffer.h"

namespace vbus::bench {

class SameFormatRing {
 public:
  // `memory` is the ring memory (control page + data area), initialised by InitializeRing.
  SameFormatRing(uint8_t* memory, size_t size)
      : control_(reinterpret_cast<RingControlPage*>(memory)),
        data_(memory + protocol::kPageSize),
        size_(static_cast<uint32_t>(size - protocol::kPageSize)) {}

  // --- writer ---

  // Copies one packet in without publishing it; false if it does not fit.
  bool Append(uint16_t type, uint16_t flags, uint64_t trans_id, const uint8_t* payload,
              size_t len) {
    const uint32_t padded = static_cast<uint32_t>((kPacketDescriptorSize + len + 7) & ~size_t{7});
    const uint32_t total = padded + kPacketTrailerSize;
    // [SFR-5] acquire load of read_index, pairs with [SFR-6]: the reader's copies out of the
    // bytes it freed happen-before we overwrite them.
    const uint32_t read = Ref(control_->read_index).load(std::memory_order_acquire);
    const uint32_t used = write_ >= read ? write_ - read : size_ - (read - write_);
    if (size_ - used <= total) return false;
    PacketDescriptor d{type, static_cast<uint16_t>(kPacketDescriptorSize / 8),
                       static_cast<uint16_t>(padded / 8), flags, trans_id};
    uint32_t pos = CopyIn(write_, &d, sizeof(d));
    pos = CopyIn(pos, payload, len);
    static constexpr uint8_t kZeros[8] = {};
    pos = CopyIn(pos, kZeros, padded - kPacketDescriptorSize - len);
    const uint64_t trailer = uint64_t{write_} << 32;
    write_ = CopyIn(pos, &trailer, sizeof(trailer));
    return true;
  }

  // Publishes the appended packets; true if the reader must be signalled.
  bool Commit() {
    if (write_ == published_write_) return false;
    const uint32_t old_write = published_write_;
    // [SFR-1] full barrier, then store write_index: pairs with [SFR-3] (the reader's acquire
    // load of write_index) — the packet bytes are visible before the index covering them.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    Ref(control_->write_index).store(write_, std::memory_order_relaxed);
    published_write_ = write_;
    // [SFR-2] full barrier between the write_index store and the interrupt_mask/read_index
    // loads: pairs with the reader's [SFR-4] fence (store read_index, then load).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (Ref(control_->interrupt_mask).load(std::memory_order_relaxed) != 0) return false;
    return Ref(control_->read_index).load(std::memory_order_relaxed) == old_write;
  }

  // --- reader ---

  // Copies the next packet's payload (len8 * 8 - 16 bytes) into `out` and returns its
  // descriptor's trans_id through `trans_id`; false if the ring is empty.
  bool Next(uint8_t* out, size_t out_size, uint64_t* trans_id) {
    if (available_ == 0) {
      // [SFR-3] acquire load of write_index, pairs with [SFR-1].
      const uint32_t write = Ref(control_->write_index).load(std::memory_order_acquire);
      available_ = write >= read_ ? write - read_ : size_ - (read_ - write);
      if (available_ == 0) return false;
    }
    PacketDescriptor d;
    CopyOut(read_, &d, sizeof(d));
    const uint32_t length = uint32_t{d.len8} * 8;
    const uint32_t body = Advance(read_, d.offset8 * 8u);
    const size_t payload = length - d.offset8 * 8u;
    CopyOut(body, out, payload < out_size ? payload : out_size);
    *trans_id = d.trans_id;
    read_ = Advance(read_, length + kPacketTrailerSize);
    available_ -= length + kPacketTrailerSize;
    return true;
  }

  // Publishes read_index; true if the writer must be signalled (pending_send_sz crossed).
  bool CommitRead() {
    if (read_ == published_read_) return false;
    const uint32_t before = published_read_;
    // [SFR-6] release store of read_index, pairs with [SFR-5].
    Ref(control_->read_index).store(read_, std::memory_order_release);
    published_read_ = read_;
    // [SFR-4] full barrier between the read_index store and the pending_send_sz load: pairs
    // with the writer's [SFR-2] fence.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint32_t pending = Ref(control_->pending_send_sz).load(std::memory_order_relaxed);
    if (pending == 0) return false;
    const uint32_t write = Ref(control_->write_index).load(std::memory_order_relaxed);
    const uint32_t free_after = size_ - (write >= read_ ? write - read_ : size_ - (read_ - write));
    const uint32_t freed = read_ >= before ? read_ - before : size_ - (before - read_);
    return free_after > pending && free_after - freed <= pending;
  }

  void MaskInterrupts() { Ref(control_->interrupt_mask).store(1, std::memory_order_relaxed); }

 private:
  static std::atomic_ref<uint32_t> Ref(uint32_t& field) { return std::atomic_ref<uint32_t>(field); }
  uint32_t Advance(uint32_t at, uint32_t len) const {
    const uint32_t next = at + len;
    return next >= size_ ? next - size_ : next;
  }
  uint32_t CopyIn(uint32_t at, const void* src, size_t len) {
    const size_t first = len < size_ - at ? len : size_ - at;
    std::memcpy(data_ + at, src, first);
    if (first < len) std::memcpy(data_, static_cast<const uint8_t*>(src) + first, len - first);
    return Advance(at, static_cast<uint32_t>(len));
  }
  void CopyOut(uint32_t at, void* dst, size_t len) const {
    const size_t first = len < size_ - at ? len : size_ - at;
    std::memcpy(dst, data_ + at, first);
    if (first < len) std::memcpy(static_cast<uint8_t*>(dst) + first, data_, len - first);
  }

  RingControlPage* control_;
  uint8_t* data_;
  uint32_t size_;
  uint32_t write_ = 0;  // writer: end of appended packets
  uint32_t published_write_ = 0;
  uint32_t read_ = 0;  // reader: start of the next packet
  uint32_t published_read_ = 0;
  uint32_t available_ = 0;
};

}  // namespace vbus::bench

#endif  // VBUS_TEST_BENCH_SAME_FORMAT_RING_H_
