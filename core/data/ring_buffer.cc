#include "core/data/ring_buffer.h"

#include <atomic>
#include <cstring>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/strings/str_format.h"

// Memory-ordering labels used below (each acquire/release names its pair):
//   [RB-W1] writer stores write_index (seq_cst)     pairs with [RB-R1] reader loads write_index
//   [RB-W2] writer loads read_index (seq_cst)       pairs with [RB-R2] reader stores read_index
//   [RB-W3] writer loads interrupt_mask (seq_cst)   pairs with [RB-R3] reader clears interrupt_mask
//   [RB-W4] writer stores pending_send_sz (seq_cst) pairs with [RB-R4] reader loads pending_send_sz
// Two Dekker-style handshakes need the seq_cst total order, not only acquire/release:
//   signal:  writer [RB-W1] then [RB-W3]+[RB-W2]   vs  reader [RB-R2] then [RB-R3] then [RB-R1]
//   pending: writer [RB-W4] then [RB-W2]         vs  reader [RB-R2] then [RB-R4]
// In each, both sides store then load; with all four operations seq_cst at least one side
// sees the other's store, so a wake-up is never lost. On x86-64 seq_cst loads are plain
// loads; the stores are one xchg per commit (not per packet of a batch).

namespace vbus {
namespace {

constexpr size_t kMinPacketRingBytes = kPacketDescriptorSize + kPacketTrailerSize;
constexpr size_t kMaxDataSize = size_t{1} << 30;

std::atomic_ref<uint32_t> Field(uint32_t& field) { return std::atomic_ref<uint32_t>(field); }

// Distance from `from` to `to` going forward around a ring of `size` bytes.
inline uint32_t Forward(uint32_t from, uint32_t to, uint32_t size) {
  return to >= from ? to - from : size - (from - to);
}

inline uint32_t Advance(uint32_t offset, size_t len, uint32_t size) {
  const size_t next = offset + len;  // offset < size <= 1 GiB, len < size: no overflow
  return static_cast<uint32_t>(next >= size ? next - size : next);
}

// Error statuses are built out of line: the hot paths only compare and branch.
ABSL_ATTRIBUTE_NOINLINE absl::Status IndexError(const char* name, uint32_t value,
                                                uint32_t data_size) {
  if (value >= data_size) {
    return absl::DataLossError(
        absl::StrFormat("ring %s %u is outside the %u-byte data area", name, value, data_size));
  }
  return absl::DataLossError(absl::StrFormat("ring %s %u is not 8-byte aligned", name, value));
}

inline absl::Status CheckIndex(const char* name, uint32_t value, uint32_t data_size) {
  if (ABSL_PREDICT_TRUE(value < data_size && value % kPacketAlignment == 0)) {
    return absl::OkStatus();
  }
  return IndexError(name, value, data_size);
}

// The descriptor's first 8 bytes (type, offset8, len8, flags; little-endian) as one word.
inline uint64_t DescriptorHead(uint16_t type, uint16_t offset8, uint16_t len8, uint16_t flags) {
  return uint64_t{type} | uint64_t{offset8} << 16 | uint64_t{len8} << 32 | uint64_t{flags} << 48;
}

inline void Store64(uint8_t* at, uint64_t value) { std::memcpy(at, &value, sizeof(value)); }
inline uint64_t Load64(const uint8_t* at) {
  uint64_t value;
  std::memcpy(&value, at, sizeof(value));
  return value;
}

// Descriptor + sub-header + payload bytes of `packet`, or more than kMaxPacketLength (without
// overflowing) when it is too long.
inline size_t PacketLength(const OutgoingPacket& packet) {
  size_t length = kPacketDescriptorSize + packet.sub_header.size();
  for (absl::Span<const uint8_t> piece : packet.payload) {
    if (piece.size() > kMaxPacketLength) return kMaxPacketLength + 1;  // keeps the sum small
    length += piece.size();
    if (length > kMaxPacketLength) break;
  }
  return length;
}

// Why a packet of `length` bytes (PacketLength) can never be written into the ring.
ABSL_ATTRIBUTE_NOINLINE absl::Status PacketShapeError(const OutgoingPacket& packet, size_t length,
                                                      uint32_t data_size) {
  if (packet.sub_header.size() % kPacketAlignment != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "packet sub-header of %u bytes is not a multiple of 8", packet.sub_header.size()));
  }
  if (length > kMaxPacketLength) {
    return absl::InvalidArgumentError(
        absl::StrFormat("packet longer than the %u bytes len8 can describe", kMaxPacketLength));
  }
  const size_t needed =
      ((length + kPacketAlignment - 1) & ~(kPacketAlignment - 1)) + kPacketTrailerSize;
  return absl::InvalidArgumentError(
      absl::StrFormat("packet needs %u ring bytes; a %u-byte ring holds at most %u", needed,
                      data_size, data_size - kPacketAlignment));
}

// Writes a packet that wraps around the end of the data area piece by piece, starting at
// `start`; returns the offset after its trailer.
ABSL_ATTRIBUTE_NOINLINE uint32_t WriteWrapped(uint8_t* data, uint32_t data_size, uint32_t start,
                                              const OutgoingPacket& packet, uint64_t head,
                                              size_t padding, uint64_t trailer) {
  uint32_t pos = start;
  auto copy_in = [&](const void* src, size_t len) {
    const size_t first = std::min<size_t>(len, data_size - pos);
    std::memcpy(data + pos, src, first);
    if (first < len) std::memcpy(data, static_cast<const uint8_t*>(src) + first, len - first);
    pos = Advance(pos, len, data_size);
  };
  copy_in(&head, sizeof(head));
  copy_in(&packet.trans_id, sizeof(packet.trans_id));
  if (!packet.sub_header.empty()) copy_in(packet.sub_header.data(), packet.sub_header.size());
  for (absl::Span<const uint8_t> piece : packet.payload) {
    if (!piece.empty()) copy_in(piece.data(), piece.size());
  }
  static constexpr uint8_t kZeros[kPacketAlignment] = {};
  copy_in(kZeros, padding);
  copy_in(&trailer, sizeof(trailer));
  return pos;
}

// feature_bits, read once when a side attaches: the peer cannot change the protocol of a ring
// in use (it would also be one more shared-memory read on every call).
bool PendingSendSupported(RingControlPage* control) {
  return (Field(control->feature_bits).load(std::memory_order_relaxed) &
          kRingFeaturePendingSendSize) != 0;
}

}  // namespace

absl::Status ValidateRingMemory(absl::Span<const uint8_t> ring_memory) {
  const size_t size = ring_memory.size();
  if (size % protocol::kPageSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ring memory of %u bytes is not a whole number of pages", size));
  }
  if (size < 2 * protocol::kPageSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ring memory of %u bytes: need a control page and at least one data page", size));
  }
  if (size - protocol::kPageSize > kMaxDataSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ring data area of %u bytes exceeds the %u-byte limit",
                        size - protocol::kPageSize, kMaxDataSize));
  }
  if (reinterpret_cast<uintptr_t>(ring_memory.data()) % 8 != 0) {
    return absl::InvalidArgumentError("ring memory is not 8-byte aligned");
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> DataSize(absl::Span<uint8_t> ring_memory, RingMapping mapping) {
  if (mapping == RingMapping::kSingle) {
    if (absl::Status s = ValidateRingMemory(ring_memory); !s.ok()) return s;
    return static_cast<uint32_t>(ring_memory.size() - protocol::kPageSize);
  }
  // Control page + data area + the data area again: the ring itself is the first
  // size - data_size bytes.
  const size_t size = ring_memory.size();
  if (size < protocol::kPageSize || (size - protocol::kPageSize) % (2 * protocol::kPageSize) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "mirrored ring memory of %u bytes is not a control page and twice a whole number of "
        "data pages",
        size));
  }
  const size_t data_size = (size - protocol::kPageSize) / 2;
  if (absl::Status s = ValidateRingMemory(ring_memory.first(protocol::kPageSize + data_size));
      !s.ok()) {
    return s;
  }
  return static_cast<uint32_t>(data_size);
}

absl::Status InitializeRing(absl::Span<uint8_t> ring_memory) {
  if (absl::Status s = ValidateRingMemory(ring_memory); !s.ok()) return s;
  std::memset(ring_memory.data(), 0, protocol::kPageSize);
  auto* control = reinterpret_cast<RingControlPage*>(ring_memory.data());
  Field(control->feature_bits).store(kRingFeaturePendingSendSize, std::memory_order_relaxed);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// OutgoingRing
// ---------------------------------------------------------------------------------------------

OutgoingRing::OutgoingRing(RingControlPage* control, uint8_t* data, uint32_t data_size,
                           uint32_t write, uint32_t read, bool mirrored)
    : control_(control),
      data_(data),
      data_size_(data_size),
      contiguous_(mirrored ? 2 * data_size : data_size),
      committed_write_(write),
      decided_write_(write),
      write_(write),
      cached_read_(read),
      pending_send_supported_(PendingSendSupported(control)) {}

absl::StatusOr<OutgoingRing> OutgoingRing::Attach(absl::Span<uint8_t> ring_memory,
                                                  RingMapping mapping) {
  absl::StatusOr<uint32_t> data_size_or = DataSize(ring_memory, mapping);
  if (!data_size_or.ok()) return data_size_or.status();
  const uint32_t data_size = *data_size_or;
  auto* control = reinterpret_cast<RingControlPage*>(ring_memory.data());
  // Nobody writes write_index but us; read_index with acquire as in [RB-W2].
  const uint32_t write = Field(control->write_index).load(std::memory_order_relaxed);
  const uint32_t read = Field(control->read_index).load(std::memory_order_acquire);
  if (absl::Status s = CheckIndex("write_index", write, data_size); !s.ok()) return s;
  if (absl::Status s = CheckIndex("read_index", read, data_size); !s.ok()) return s;
  return OutgoingRing(control, ring_memory.data() + protocol::kPageSize, data_size, write, read,
                      mapping == RingMapping::kMirrored);
}

absl::Status OutgoingRing::Fail(absl::Status status) {
  status_ = std::move(status);
  write_ = committed_write_;
  return status_;
}

size_t OutgoingRing::FreeFromCachedRead() const {
  return data_size_ - Forward(cached_read_, write_, data_size_);
}

absl::Status OutgoingRing::RefreshReadIndex() {
  // [RB-W2] seq_cst load of read_index. Acquire pairs with the reader's [RB-R2] store: the reader's
  // copies out of the bytes it freed happen-before we overwrite them. seq_cst for the pending
  // handshake (after [RB-W4] in ArmPendingSend).
  const uint32_t read = Field(control_->read_index).load(std::memory_order_seq_cst);
  if (read == cached_read_) return absl::OkStatus();
  if (absl::Status s = CheckIndex("read_index", read, data_size_); !s.ok()) return Fail(s);
  // The reader can only consume what we published: read_index moves forward from where it
  // was, and never past the committed write_index.
  if (Forward(cached_read_, read, data_size_) >
      Forward(cached_read_, committed_write_, data_size_)) {
    return Fail(absl::DataLossError(absl::StrFormat(
        "ring read_index moved from %u to %u, outside the written region ending at %u",
        cached_read_, read, committed_write_)));
  }
  cached_read_ = read;
  return absl::OkStatus();
}

absl::StatusOr<AppendResult> OutgoingRing::Append(const OutgoingPacket& packet) {
  if (!status_.ok()) return status_;
  const size_t length = PacketLength(packet);
  const size_t padded = (length + kPacketAlignment - 1) & ~(kPacketAlignment - 1);
  const size_t needed = padded + kPacketTrailerSize;
  if (ABSL_PREDICT_FALSE(packet.sub_header.size() % kPacketAlignment != 0 ||
                         length > kMaxPacketLength || needed >= data_size_)) {
    return PacketShapeError(packet, length, data_size_);
  }
  // The ring is never filled completely: read_index == write_index means empty. The cached
  // read_index only lags the real one, so it can only under-estimate free space; look at the
  // shared line only when the cached value says the packet does not fit.
  if (FreeFromCachedRead() <= needed) {
    if (absl::Status s = RefreshReadIndex(); !s.ok()) return s;
    if (FreeFromCachedRead() <= needed) return AppendResult::kFull;
  }

  const uint32_t start = write_;
  const uint64_t head =
      DescriptorHead(static_cast<uint16_t>(packet.type),
                     static_cast<uint16_t>((kPacketDescriptorSize + packet.sub_header.size()) / 8),
                     static_cast<uint16_t>(padded / 8), packet.flags);
  const uint64_t trailer = uint64_t{start} << 32;
  uint32_t pos;
  if (ABSL_PREDICT_TRUE(start + needed <= contiguous_)) {
    // The packet and its trailer do not wrap (or the mirror makes them contiguous). Whole 8-byte
    // stores for the descriptor, padding and trailer (a descriptor built on the stack and copied as
    // one 16-byte block would stall on store forwarding).
    uint8_t* p = data_ + start;
    Store64(p, head);
    Store64(p + 8, packet.trans_id);
    // The padding: zero the packet's last 8 bytes first; the data then overwrites all but
    // the 0-7 padding bytes (padded > length implies padded - 8 >= 16, inside the body).
    if (padded != length) Store64(p + padded - 8, 0);
    size_t at = kPacketDescriptorSize;
    if (!packet.sub_header.empty()) {
      std::memcpy(p + at, packet.sub_header.data(), packet.sub_header.size());
      at += packet.sub_header.size();
    }
    for (absl::Span<const uint8_t> piece : packet.payload) {
      if (!piece.empty()) std::memcpy(p + at, piece.data(), piece.size());
      at += piece.size();
    }
    Store64(p + padded, trailer);
    pos = Advance(start, needed, data_size_);
  } else {
    pos = WriteWrapped(data_, data_size_, start, packet, head, padded - length, trailer);
  }
  write_ = pos;

  if (pending_armed_) {
    // The wait is over; a stale value seen by the reader only costs one spurious signal.
    Field(control_->pending_send_sz).store(0, std::memory_order_relaxed);
    pending_armed_ = false;
  }
  return AppendResult::kAppended;
}

void OutgoingRing::Publish() {
  if (!status_.ok() || write_ == committed_write_) return;
  // [RB-W5] release store of write_index, pairs with the reader's [RB-R1] acquire load (the
  // packet bytes before the index). No signal handshake: that is the owed Commit's [RB-W1].
  Field(control_->write_index).store(write_, std::memory_order_release);
  committed_write_ = write_;
}

bool OutgoingRing::Commit() {
  if (!status_.ok() || (write_ == committed_write_ && !signal_owed())) return false;
  const uint32_t old_write = committed_write_;
  const bool owed = signal_owed();
  // [RB-W1] seq_cst store of write_index. Release pairs with the reader's [RB-R1] acquire load: the
  // packet bytes copied above are visible before the index that covers them. seq_cst for the
  // signal handshake with [RB-W3]/[RB-W2] below. With nothing new appended (a decision owed by
  // Publish) it stores the same value again: the handshake needs the seq_cst store.
  Field(control_->write_index).store(write_, std::memory_order_seq_cst);
  committed_write_ = write_;
  decided_write_ = write_;

  // The reader's promise (the VMBus reader protocol): it sets interrupt_mask while draining,
  // and after clearing it re-checks write_index; a reader that is not masking drains until it
  // sees the ring empty, having published read_index first. So the reader can only be asleep
  // if it saw the ring empty: signal only on an empty → non-empty transition with the mask
  // clear, and otherwise rely on its re-check to find these packets.
  // [RB-W3] seq_cst load of interrupt_mask, pairs with the reader's [RB-R3] clear.
  saw_mask_ = Field(control_->interrupt_mask).load(std::memory_order_seq_cst) != 0;
  if (saw_mask_) return false;
  // [RB-W2] seq_cst load of read_index (the same pairing as in RefreshReadIndex). Only compared:
  // any value the peer wrote is harmless here.
  const uint32_t read = Field(control_->read_index).load(std::memory_order_seq_cst);
  // After undecided publishes the reader may have read some of them, seen the ring empty and
  // gone idle before the rest landed: it may be asleep whenever it has not read everything.
  if (owed) return read != write_;
  return read == old_write;
}

void OutgoingRing::Rollback() { write_ = committed_write_; }

absl::StatusOr<WriteResult> OutgoingRing::Write(const OutgoingPacket& packet) {
  absl::StatusOr<AppendResult> appended = Append(packet);
  if (!appended.ok()) return appended.status();
  const bool signal = Commit();
  if (*appended == AppendResult::kFull) return WriteResult::kFull;
  return signal ? WriteResult::kWrittenSignal : WriteResult::kWritten;
}

absl::StatusOr<bool> OutgoingRing::ArmPendingSend(size_t ring_bytes) {
  if (!status_.ok()) return status_;
  if (!pending_send_supported_) {
    return absl::FailedPreconditionError(
        "ring feature_bits do not advertise pending_send_sz support");
  }
  if (ring_bytes >= data_size_ || ring_bytes == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pending send of %u bytes can never be satisfied by a %u-byte ring",
                        ring_bytes, data_size_));
  }
  // [RB-W4] seq_cst store of pending_send_sz, then [RB-W2] re-reads read_index: pairs with the
  // reader's [RB-R2] store and [RB-R4] load. Either the reader sees our threshold when it commits
  // (and signals on the crossing), or we see its new read_index here.
  Field(control_->pending_send_sz)
      .store(static_cast<uint32_t>(ring_bytes), std::memory_order_seq_cst);
  pending_armed_ = true;
  if (absl::Status s = RefreshReadIndex(); !s.ok()) return s;
  if (FreeFromCachedRead() > ring_bytes) {
    DisarmPendingSend();
    return true;
  }
  return false;
}

void OutgoingRing::DisarmPendingSend() {
  // Only if we armed it: a store to the shared control line on every send would pull that
  // line from the reader each time. (A value the peer wrote there itself is its own problem.)
  if (!pending_armed_) return;
  Field(control_->pending_send_sz).store(0, std::memory_order_relaxed);
  pending_armed_ = false;
}

absl::StatusOr<size_t> OutgoingRing::FreeBytes() {
  if (!status_.ok()) return status_;
  if (absl::Status s = RefreshReadIndex(); !s.ok()) return s;
  return FreeFromCachedRead();
}

// ---------------------------------------------------------------------------------------------
// IncomingRing
// ---------------------------------------------------------------------------------------------

IncomingRing::IncomingRing(RingControlPage* control, uint8_t* data, uint32_t data_size,
                           uint32_t write, uint32_t read, absl::Span<uint8_t> scratch,
                           bool mirrored)
    : control_(control),
      data_(data),
      scratch_(scratch),
      data_size_(data_size),
      contiguous_(mirrored ? 2 * data_size : data_size),
      committed_read_(read),
      read_(read),
      last_write_(write),
      available_(Forward(read, write, data_size)),
      pending_send_supported_(PendingSendSupported(control)) {}

absl::StatusOr<IncomingRing> IncomingRing::Attach(absl::Span<uint8_t> ring_memory,
                                                  absl::Span<uint8_t> scratch,
                                                  RingMapping mapping) {
  absl::StatusOr<uint32_t> data_size_or = DataSize(ring_memory, mapping);
  if (!data_size_or.ok()) return data_size_or.status();
  const uint32_t data_size = *data_size_or;
  auto* control = reinterpret_cast<RingControlPage*>(ring_memory.data());
  // [RB-R1] acquire, as in RefreshWriteIndex. read_index is ours.
  const uint32_t write = Field(control->write_index).load(std::memory_order_acquire);
  const uint32_t read = Field(control->read_index).load(std::memory_order_relaxed);
  if (absl::Status s = CheckIndex("write_index", write, data_size); !s.ok()) return s;
  if (absl::Status s = CheckIndex("read_index", read, data_size); !s.ok()) return s;
  return IncomingRing(control, ring_memory.data() + protocol::kPageSize, data_size, write, read,
                      scratch, mapping == RingMapping::kMirrored);
}

absl::Status IncomingRing::Fail(absl::Status status) {
  status_ = std::move(status);
  available_ = 0;
  return status_;
}

absl::Status IncomingRing::RefreshWriteIndex() {
  // [RB-R1] seq_cst load of write_index. Acquire pairs with the writer's [RB-W1] store: the packet
  // bytes it covers are visible. seq_cst for the signal handshake (after [RB-R3] in
  // UnmaskInterrupts, after [RB-R2] in CommitRead).
  const uint32_t write = Field(control_->write_index).load(std::memory_order_seq_cst);
  if (write == last_write_) {  // validated when first seen
    available_ = Forward(read_, write, data_size_);
    return absl::OkStatus();
  }
  if (absl::Status s = CheckIndex("write_index", write, data_size_); !s.ok()) return Fail(s);
  // The writer only adds packets, and only into space it saw free: from the last write_index
  // we saw it can advance by at most the free space at that time minus 8 (it never fills
  // the ring completely; it sees our committed read_index or an older one). Anything else is
  // write_index moving backwards or over unread packets.
  const uint32_t advance = Forward(last_write_, write, data_size_);
  const uint32_t limit =
      data_size_ - Forward(committed_read_, last_write_, data_size_) - kPacketAlignment;
  if (advance > limit) {
    return Fail(absl::DataLossError(absl::StrFormat(
        "ring write_index moved from %u to %u: backwards, or over unread packets (read_index "
        "%u)",
        last_write_, write, committed_read_)));
  }
  last_write_ = write;
  const uint32_t available = Forward(read_, write, data_size_);
  available_ = available;
  return absl::OkStatus();
}

void IncomingRing::CopyOut(uint32_t offset, uint8_t* out, size_t len) const {
  const size_t first = std::min<size_t>(len, data_size_ - offset);
  std::memcpy(out, data_ + offset, first);
  if (first < len) std::memcpy(out + first, data_, len - first);
}

absl::StatusOr<std::optional<PacketView>> IncomingRing::Next() {
  if (!status_.ok()) return status_;
  if (available_ == 0) {
    if (absl::Status s = RefreshWriteIndex(); !s.ok()) return s;
    if (available_ == 0) return std::nullopt;
  }
  if (available_ < kMinPacketRingBytes) {
    return Fail(absl::DataLossError(
        absl::StrFormat("ring has %u bytes available at read offset %u, less than a minimal packet",
                        available_, read_)));
  }
  // The descriptor is copied out once; only the copy is trusted from here on.
  // The descriptor is copied out once, as two whole words (the data area is a multiple of 8
  // bytes and read_ is 8-byte aligned, so a descriptor can wrap only between its words).
  PacketDescriptor descriptor;
  const uint64_t head = Load64(data_ + read_);
  descriptor.trans_id = Load64(data_ + Advance(read_, 8, data_size_));
  descriptor.type = static_cast<uint16_t>(head);
  descriptor.offset8 = static_cast<uint16_t>(head >> 16);
  descriptor.len8 = static_cast<uint16_t>(head >> 32);
  descriptor.flags = static_cast<uint16_t>(head >> 48);
  const size_t length = size_t{descriptor.len8} * 8;
  const size_t offset = size_t{descriptor.offset8} * 8;
  if (length < kPacketDescriptorSize) {
    return Fail(absl::DataLossError(
        absl::StrFormat("packet at read offset %u: len8 %u is shorter than the 16-byte descriptor",
                        read_, descriptor.len8)));
  }
  if (length + kPacketTrailerSize > available_) {
    return Fail(absl::DataLossError(absl::StrFormat(
        "packet at read offset %u: len8 %u (%u bytes + trailer) exceeds the %u bytes available",
        read_, descriptor.len8, length, available_)));
  }
  if (offset < kPacketDescriptorSize || offset > length) {
    return Fail(absl::DataLossError(
        absl::StrFormat("packet at read offset %u: offset8 %u is outside [2, len8 %u]", read_,
                        descriptor.offset8, descriptor.len8)));
  }

  PacketView view;
  view.type_ = descriptor.type;
  view.flags_ = descriptor.flags;
  view.trans_id_ = descriptor.trans_id;
  view.offset8_ = descriptor.offset8;
  view.len8_ = descriptor.len8;
  const uint32_t body = Advance(read_, kPacketDescriptorSize, data_size_);
  const size_t body_length = length - kPacketDescriptorSize;
  if (body + body_length <= contiguous_) {
    view.body_ = data_ + body;  // zero-copy: always with a mirror, else unless it wraps
  } else {
    if (scratch_.size() < body_length) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "packet at read offset %u wraps the ring and needs %u bytes of scratch; %u provided",
          read_, body_length, scratch_.size()));
    }
    CopyOut(body, scratch_.data(), body_length);
    view.body_ = scratch_.data();
    view.wrapped_ = true;
  }
  const size_t ring_bytes = length + kPacketTrailerSize;
  read_ = Advance(read_, ring_bytes, data_size_);
  available_ -= static_cast<uint32_t>(ring_bytes);
  return view;
}

absl::StatusOr<bool> IncomingRing::CommitRead() {
  if (!status_.ok()) return status_;
  if (read_ == committed_read_) return false;
  const uint32_t freed = Forward(committed_read_, read_, data_size_);
  // [RB-R2] seq_cst store of read_index. Release pairs with the writer's [RB-W2] acquire load: our
  // reads of the freed bytes happen-before the writer reuses them. seq_cst for both
  // handshakes ([RB-R4] below; [RB-R3]/[RB-R1] in UnmaskInterrupts).
  Field(control_->read_index).store(read_, std::memory_order_seq_cst);
  committed_read_ = read_;

  // The writer's promise: it stores pending_send_sz before re-reading read_index, and waits
  // for our signal only if it then still saw too little space. So signal exactly when this
  // commit moves free space across its threshold: a writer that saw enough space already does
  // not wait, and one that armed later sees our read_index.
  if (!pending_send_supported_) return false;
  // [RB-R4] seq_cst load of pending_send_sz, pairs with the writer's [RB-W4] store.
  const uint32_t pending = Field(control_->pending_send_sz).load(std::memory_order_seq_cst);
  if (pending == 0) return false;
  // Free space is measured against the current write_index (the writer may have added
  // packets since our last look; a stale value would over-estimate the space before).
  if (absl::Status s = RefreshWriteIndex(); !s.ok()) return s;
  const size_t free_after = data_size_ - available_;
  // A writer that already used the space we just freed (it saw our read_index on its own)
  // is not waiting for a signal.
  if (free_after < freed) return false;
  const size_t free_before = free_after - freed;
  return free_before <= pending && free_after > pending;
}

void IncomingRing::MaskInterrupts() {
  // Relaxed: the mask only lets the writer skip signals. Coherence on the single location
  // keeps it ordered with the later [RB-R3] clear, and the re-check after [RB-R3] covers any packet
  // written meanwhile.
  Field(control_->interrupt_mask).store(1, std::memory_order_relaxed);
}

absl::StatusOr<bool> IncomingRing::UnmaskInterrupts() {
  if (!status_.ok()) return status_;
  if (read_ != committed_read_) {
    return absl::FailedPreconditionError(
        "UnmaskInterrupts with uncommitted reads: call CommitRead first, or the writer sees a "
        "non-empty ring and never signals");
  }
  // [RB-R3] seq_cst clear of interrupt_mask, pairs with the writer's [RB-W3] load; then [RB-R1]
  // re-reads write_index. Either we see the writer's new packets now, or the writer sees the
  // mask clear and the ring empty, and signals.
  Field(control_->interrupt_mask).store(0, std::memory_order_seq_cst);
  if (absl::Status s = RefreshWriteIndex(); !s.ok()) return s;
  return available_ != 0;
}

absl::StatusOr<size_t> IncomingRing::AvailableBytes() {
  if (!status_.ok()) return status_;
  if (absl::Status s = RefreshWriteIndex(); !s.ok()) return s;
  return available_;
}

// ---------------------------------------------------------------------------------------------
// GPA-direct
// ---------------------------------------------------------------------------------------------

uint64_t GpaRangeView::pfn(size_t i) const {
  uint64_t value;
  std::memcpy(&value, pfn_bytes.data() + i * 8, sizeof(value));
  return value;
}

absl::StatusOr<GpaRangeView> GpaDirectView::ReadRange(uint32_t index, size_t* pos) const {
  const size_t size = sub_header_.size();
  if (*pos > size || size - *pos < sizeof(GpaRangeHeader)) {
    return absl::DataLossError(
        absl::StrFormat("GPA-direct range %u of %u: header past the %u-byte sub-header", index,
                        range_count_, size));
  }
  GpaRangeHeader header;
  std::memcpy(&header, sub_header_.data() + *pos, sizeof(header));
  if (header.byte_count == 0) {
    return absl::DataLossError(
        absl::StrFormat("GPA-direct range %u of %u: byte_count is 0", index, range_count_));
  }
  if (header.byte_offset >= protocol::kPageSize) {
    return absl::DataLossError(
        absl::StrFormat("GPA-direct range %u of %u: byte_offset %u is not inside the first page",
                        index, range_count_, header.byte_offset));
  }
  const uint64_t pages =
      (uint64_t{header.byte_count} + header.byte_offset + protocol::kPageSize - 1) /
      protocol::kPageSize;
  const size_t rest = size - *pos - sizeof(GpaRangeHeader);
  if (pages > rest / 8) {
    return absl::DataLossError(absl::StrFormat(
        "GPA-direct range %u of %u: %u bytes need %u PFNs, only %u fit in the sub-header", index,
        range_count_, header.byte_count, pages, rest / 8));
  }
  GpaRangeView view;
  view.byte_count = header.byte_count;
  view.byte_offset = header.byte_offset;
  view.pfn_bytes = sub_header_.subspan(*pos + sizeof(GpaRangeHeader), pages * 8);
  *pos += sizeof(GpaRangeHeader) + pages * 8;
  return view;
}

absl::StatusOr<GpaDirectView> GpaDirectView::Parse(const PacketView& packet) {
  if (packet.type() != PacketType::kDataUsingGpaDirect) {
    return absl::InvalidArgumentError(
        absl::StrFormat("packet type %u is not GPA-direct (%u)", packet.raw_type(),
                        static_cast<uint16_t>(PacketType::kDataUsingGpaDirect)));
  }
  GpaDirectView view;
  view.sub_header_ = packet.sub_header();
  if (view.sub_header_.size() < sizeof(GpaDirectHeader)) {
    return absl::DataLossError(absl::StrFormat(
        "GPA-direct packet: sub-header of %u bytes is shorter than its 8-byte header",
        view.sub_header_.size()));
  }
  GpaDirectHeader header;
  std::memcpy(&header, view.sub_header_.data(), sizeof(header));
  view.range_count_ = header.range_count;
  // Each range takes at least 16 bytes: this bounds the walk below by the sub-header size.
  if (header.range_count > (view.sub_header_.size() - sizeof(GpaDirectHeader)) / 16) {
    return absl::DataLossError(
        absl::StrFormat("GPA-direct packet: %u ranges cannot fit in a %u-byte sub-header",
                        header.range_count, view.sub_header_.size()));
  }
  size_t pos = sizeof(GpaDirectHeader);
  for (uint32_t i = 0; i < view.range_count_; ++i) {
    absl::StatusOr<GpaRangeView> range = view.ReadRange(i, &pos);
    if (!range.ok()) return range.status();
  }
  if (pos != view.sub_header_.size()) {
    return absl::DataLossError(absl::StrFormat(
        "GPA-direct packet: %u bytes follow the last of its %u ranges (the ranges must fill the "
        "%u-byte sub-header)",
        view.sub_header_.size() - pos, view.range_count_, view.sub_header_.size()));
  }
  return view;
}

absl::StatusOr<TransferPageView> TransferPageView::Parse(const PacketView& packet) {
  if (packet.type() != PacketType::kDataUsingTransferPages) {
    return absl::InvalidArgumentError(
        absl::StrFormat("packet type %u is not transfer-page data (%u)", packet.raw_type(),
                        static_cast<uint16_t>(PacketType::kDataUsingTransferPages)));
  }
  TransferPageView view;
  view.sub_header_ = packet.sub_header();
  if (view.sub_header_.size() < sizeof(TransferPageHeader)) {
    return absl::DataLossError(absl::StrFormat(
        "transfer-page packet: sub-header of %u bytes is shorter than its 8-byte header",
        view.sub_header_.size()));
  }
  std::memcpy(&view.header_, view.sub_header_.data(), sizeof(view.header_));
  const size_t room =
      (view.sub_header_.size() - sizeof(TransferPageHeader)) / sizeof(TransferPageRange);
  if (view.header_.range_count > room) {
    return absl::DataLossError(
        absl::StrFormat("transfer-page packet: %u ranges do not fit in a %u-byte sub-header",
                        view.header_.range_count, view.sub_header_.size()));
  }
  return view;
}

TransferPageRange TransferPageView::range(uint32_t i) const {
  TransferPageRange range{};
  if (i >= header_.range_count) return range;  // the contract says i < range_count()
  std::memcpy(&range, sub_header_.data() + sizeof(TransferPageHeader) + size_t{i} * sizeof(range),
              sizeof(range));
  return range;
}

size_t GpaDirectSubHeaderSize(absl::Span<const GpaRangeSpec> ranges) {
  size_t size = sizeof(GpaDirectHeader);
  for (const GpaRangeSpec& r : ranges) size += sizeof(GpaRangeHeader) + r.pfns.size() * 8;
  return size;
}

absl::StatusOr<size_t> EncodeGpaDirectSubHeader(absl::Span<const GpaRangeSpec> ranges,
                                                absl::Span<uint8_t> out) {
  for (size_t i = 0; i < ranges.size(); ++i) {
    const GpaRangeSpec& r = ranges[i];
    if (r.byte_count == 0 || r.byte_offset >= protocol::kPageSize) {
      return absl::InvalidArgumentError(
          absl::StrFormat("GPA range %u: byte_count %u must be > 0 and byte_offset %u < 4096", i,
                          r.byte_count, r.byte_offset));
    }
    const uint64_t pages =
        (uint64_t{r.byte_count} + r.byte_offset + protocol::kPageSize - 1) / protocol::kPageSize;
    if (r.pfns.size() != pages) {
      return absl::InvalidArgumentError(
          absl::StrFormat("GPA range %u: %u bytes at offset %u span %u pages but %u PFNs given", i,
                          r.byte_count, r.byte_offset, pages, r.pfns.size()));
    }
  }
  const size_t size = GpaDirectSubHeaderSize(ranges);
  if (out.size() < size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GPA-direct sub-header needs %u bytes, buffer has %u", size, out.size()));
  }
  GpaDirectHeader header{0, static_cast<uint32_t>(ranges.size())};
  std::memcpy(out.data(), &header, sizeof(header));
  size_t pos = sizeof(header);
  for (const GpaRangeSpec& r : ranges) {
    GpaRangeHeader range{r.byte_count, r.byte_offset};
    std::memcpy(out.data() + pos, &range, sizeof(range));
    pos += sizeof(range);
    std::memcpy(out.data() + pos, r.pfns.data(), r.pfns.size() * 8);
    pos += r.pfns.size() * 8;
  }
  return pos;
}

}  // namespace vbus
