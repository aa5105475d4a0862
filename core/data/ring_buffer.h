// Ring buffer: one direction of a VMBus channel, in the exact VMBus ring format.
//
// A ring is a span of whole pages in memory that both sides map (guest memory reached through a
// GPADL): one 4096-byte control page (`RingControlPage`: write_index, read_index,
// interrupt_mask, pending_send_sz, feature_bits), then the data area. Packets are a 16-byte
// `PacketDescriptor`, an optional type-specific sub-header (e.g. GPA-direct page ranges), the
// payload padded to 8 bytes, and an 8-byte trailer. Indices are byte offsets into the data
// area; read_index == write_index means empty, so the ring is never filled completely.
//
// One side writes with an `OutgoingRing`, the other reads the same memory with an
// `IncomingRing`. Both the guest and the host use these classes: the guest writes its outbound
// ring and reads its inbound ring; the mock host does the opposite on the same memory.
//
// Writing is two-phase (as in OpenVMM's ring): `Append` reserves space and copies a packet in
// (gathered from pieces, so callers never assemble a temporary buffer) without making it
// visible; `Commit` publishes everything appended and says whether the reader must be
// signalled. `Write` = Append + Commit.
//
// Reading is zero-copy: `Next` validates the next packet's descriptor and returns a
// `PacketView` whose spans point into the ring (a packet that wraps around the end of the data
// area is copied into a caller-provided scratch buffer instead, so views are always
// contiguous). `CommitRead` frees the space of every packet returned so far in one store and
// says whether the writer must be signalled (the pending_send_sz rule).
//
// The peer is not trusted: every index is read once and checked (inside the data area, 8-byte
// aligned, moving only forward), every descriptor is read once into private memory and checked
// before use. A violation puts the ring object into a sticky failed state: the call and every
// later call return the same DataLoss status naming the reason. Nothing the peer writes can make
// these classes crash, hang, loop forever or touch memory outside the ring.
//
// Hot paths (Append/Commit/Write, Next/CommitRead) allocate nothing, take no lock and make no
// system call. Each ring object is used by one thread at a time (thread-compatible); the two
// sides of one ring run concurrently on different threads or in different processes.
//
// Example (writer):
//   absl::Status init = InitializeRing(memory);           // once, by the ring's owner (guest)
//   absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(memory);
//   absl::StatusOr<WriteResult> r = out->Write(PacketType::kDataInband, kCompletionRequested,
//                                              /*trans_id=*/7, payload);
//   if (!r.ok()) return r.status();                      // ring corrupt or bad arguments
//   if (*r == WriteResult::kFull) { out->ArmPendingSend(...); wait for a signal; retry; }
//   if (*r == WriteResult::kWrittenSignal) SignalPeer();
//
// Example (reader, interrupt-driven; the peer's writer relies on this exact pattern):
//   in.MaskInterrupts();
//   for (;;) {
//     for (;;) {
//       absl::StatusOr<std::optional<PacketView>> p = in.Next();
//       if (!p.ok()) return p.status();                  // ring corrupt: channel is dead
//       if (!p->has_value()) break;
//       Handle(**p);                                     // view valid until the next call
//     }
//     absl::StatusOr<bool> wake_writer = in.CommitRead();
//     if (!wake_writer.ok()) return wake_writer.status();
//     if (*wake_writer) SignalPeer();
//     absl::StatusOr<bool> more = in.UnmaskInterrupts();  // re-checks after unmasking
//     if (!more.ok()) return more.status();
//     if (!*more) break;
//     in.MaskInterrupts();
//   }
#ifndef VBUS_CORE_DATA_RING_BUFFER_H_
#define VBUS_CORE_DATA_RING_BUFFER_H_

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/data/protocol.h"

namespace vbus {

// ---------------------------------------------------------------------------------------------
// Wire layout (docs/protocol.md §10). Little-endian; every offset is static_assert'ed.
// ---------------------------------------------------------------------------------------------

// RingControlPage
// The first page of every ring. The writer owns write_index and reads interrupt_mask,
// read_index and pending_send_sz; the reader owns read_index and interrupt_mask and reads
// write_index and pending_send_sz. The classes below access these fields only through atomics;
// the struct documents the layout.
struct RingControlPage {
  uint32_t write_index;      // @0: byte offset in the data area of the next packet to write
  uint32_t read_index;       // @4: byte offset in the data area of the next packet to read
  uint32_t interrupt_mask;   // @8: non-zero while the reader drains: writer need not signal
  uint32_t pending_send_sz;  // @12: writer waits for more than this many free bytes (0 = none)
  uint8_t reserved1[48];     // @16
  uint32_t feature_bits;     // @64: bit 0 = the reader honours pending_send_sz
  uint8_t reserved2[protocol::kPageSize - 68];
};
static_assert(sizeof(RingControlPage) == protocol::kPageSize);
static_assert(offsetof(RingControlPage, write_index) == 0);
static_assert(offsetof(RingControlPage, read_index) == 4);
static_assert(offsetof(RingControlPage, interrupt_mask) == 8);
static_assert(offsetof(RingControlPage, pending_send_sz) == 12);
static_assert(offsetof(RingControlPage, feature_bits) == 64);

// feature_bits bit 0: pending_send_sz is supported (set by InitializeRing). Each side reads
// feature_bits once, when it attaches; later changes by the peer are ignored.
inline constexpr uint32_t kRingFeaturePendingSendSize = 1u << 0;

// PacketType
// The descriptor's `type` field. Values from docs/protocol.md §10. The ring passes any value
// through; a type the receiver does not understand is the receiver's decision.
enum class PacketType : uint16_t {
  kInvalid = 0,
  kSynch = 1,
  kAddTransferPageSet = 2,
  kRemoveTransferPageSet = 3,
  kEstablishGpadl = 4,
  kTeardownGpadl = 5,
  kDataInband = 6,
  kDataUsingTransferPages = 7,
  kDataUsingGpadl = 8,
  kDataUsingGpaDirect = 9,
  kCancelRequest = 0xA,
  kCompletion = 0xB,
  kDataUsingAdditionalPacket = 0xC,
  kAdditionalData = 0xD,
};

// Descriptor flag: the sender wants a kCompletion packet carrying the same trans_id.
inline constexpr uint16_t kCompletionRequested = 1;

// PacketDescriptor
// The 16 bytes that start every packet. offset8 and len8 count 8-byte units from the start of
// the descriptor: the data starts at offset8 * 8, the packet (padding included, trailer
// excluded) is len8 * 8 bytes.
struct PacketDescriptor {
  uint16_t type;      // @0: a PacketType value
  uint16_t offset8;   // @2: data offset in 8-byte units (>= 2)
  uint16_t len8;      // @4: packet length in 8-byte units, trailer excluded (>= offset8)
  uint16_t flags;     // @6: kCompletionRequested
  uint64_t trans_id;  // @8: transaction id, echoed by completions
};
static_assert(sizeof(PacketDescriptor) == 16);
static_assert(offsetof(PacketDescriptor, type) == 0);
static_assert(offsetof(PacketDescriptor, offset8) == 2);
static_assert(offsetof(PacketDescriptor, len8) == 4);
static_assert(offsetof(PacketDescriptor, flags) == 6);
static_assert(offsetof(PacketDescriptor, trans_id) == 8);

inline constexpr size_t kPacketAlignment = 8;
inline constexpr size_t kPacketDescriptorSize = sizeof(PacketDescriptor);
inline constexpr size_t kPacketTrailerSize = 8;
// Largest packet the 16-bit len8 can describe (trailer excluded).
inline constexpr size_t kMaxPacketLength = size_t{0xFFFF} * 8;

// GPA-direct sub-header (kDataUsingGpaDirect): follows the descriptor, then `range_count`
// ranges, each a GpaRangeHeader followed by its page frame numbers (u64 each).
struct GpaDirectHeader {
  uint32_t reserved;     // @0
  uint32_t range_count;  // @4
};
static_assert(sizeof(GpaDirectHeader) == 8);
static_assert(offsetof(GpaDirectHeader, range_count) == 4);

// One range of a GPA-direct packet: `byte_count` bytes starting `byte_offset` bytes into the
// first page; ceil((byte_offset + byte_count) / 4096) PFNs follow. byte_count > 0 and
// byte_offset < 4096 (OpenVMM enforces both; so do we).
struct GpaRangeHeader {
  uint32_t byte_count;   // @0
  uint32_t byte_offset;  // @4
};
static_assert(sizeof(GpaRangeHeader) == 8);
static_assert(offsetof(GpaRangeHeader, byte_offset) == 4);

// Transfer-page sub-header (kDataUsingTransferPages): follows the descriptor, then
// `range_count` TransferPageRange entries into a previously established transfer page set.
struct TransferPageHeader {
  uint16_t transfer_page_set_id;  // @0
  uint8_t sender_owns_set;        // @2
  uint8_t reserved;               // @3
  uint32_t range_count;           // @4
};
static_assert(sizeof(TransferPageHeader) == 8);
static_assert(offsetof(TransferPageHeader, sender_owns_set) == 2);
static_assert(offsetof(TransferPageHeader, range_count) == 4);

struct TransferPageRange {
  uint32_t byte_count;   // @0
  uint32_t byte_offset;  // @4
};
static_assert(sizeof(TransferPageRange) == 8);

// ---------------------------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------------------------

// PacketRingBytes
// Bytes a packet with `sub_header_bytes` of sub-header and `payload_bytes` of payload occupies
// in the ring: descriptor + sub-header + payload rounded up to 8, plus the trailer. This is the
// value to pass to OutgoingRing::ArmPendingSend. The writer needs strictly more free bytes
// than this (the ring is never filled completely).
constexpr size_t PacketRingBytes(size_t sub_header_bytes, size_t payload_bytes) {
  return ((kPacketDescriptorSize + sub_header_bytes + payload_bytes + kPacketAlignment - 1) &
          ~(kPacketAlignment - 1)) +
         kPacketTrailerSize;
}

// ValidateRingMemory
// OK if `ring_memory` can hold a ring: at least two pages (control page + one data page), a
// whole number of pages, at most 1 GiB + one page, 8-byte aligned (page alignment is what
// shared memory gives and is best for performance). InvalidArgument naming the problem
// otherwise. Does not look at the contents.
absl::Status ValidateRingMemory(absl::Span<const uint8_t> ring_memory);

// InitializeRing
// Prepares fresh ring memory: zeroes the control page (both indices 0, interrupts unmasked, no
// pending send) and sets feature_bits = kRingFeaturePendingSendSize. Called once by the side
// that allocates the ring (the guest), before either side attaches; never while a peer is
// using the ring. The data area is left as it is. Fails as ValidateRingMemory.
absl::Status InitializeRing(absl::Span<uint8_t> ring_memory);

// RingMapping
// How the ring memory handed to Attach is mapped.
//   kSingle:   the control page and the data area, once (what every backend can give).
//   kMirrored: the control page, the data area, and the same data area mapped a second time
//              right after it (size = 4096 + 2 × data area). A packet that wraps the end of
//              the data area is then contiguous in memory: the writer copies it in one piece
//              and the reader's view points into the ring instead of the scratch buffer.
//              Whoever maps the memory guarantees that the second half aliases the first
//              (two mappings of the same pages, e.g. MirroredMapping in
//              core/data/mirrored_mapping.h); indices and their checks are unchanged.
enum class RingMapping : uint8_t { kSingle, kMirrored };

// DataSize
// The data area's size for `ring_memory` mapped as `mapping`: ValidateRingMemory's rules for
// the ring itself (for kMirrored, its first 4096 + data area bytes), and for kMirrored a size
// of one page plus an even number of pages. InvalidArgument naming the problem otherwise.
absl::StatusOr<uint32_t> DataSize(absl::Span<uint8_t> ring_memory, RingMapping mapping);

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

// WriteResult
// The outcome of a write that did not fail. kFull is an expected, cheap result (no Status is
// built): nothing was written and the ring is unchanged; retry after the reader frees space
// (see ArmPendingSend).
enum class WriteResult : uint8_t {
  kWritten,        // published; the reader is already awake or masked: do not signal
  kWrittenSignal,  // published; the ring was empty and unmasked: signal the reader
  kFull,           // not written: not enough free space
};

// AppendResult
// The outcome of an Append that did not fail.
enum class AppendResult : uint8_t {
  kAppended,  // copied into the ring, not yet visible to the reader (Commit publishes it)
  kFull,      // not written: not enough free space (appended packets count as used)
};

// OutgoingPacket
// A packet to write. The ring builds the descriptor: offset8 = (16 + sub_header.size()) / 8 and
// len8 = ceil((16 + sub_header.size() + payload size) / 8). The padding is written as zeros.
struct OutgoingPacket {
  PacketType type = PacketType::kDataInband;
  uint16_t flags = 0;
  uint64_t trans_id = 0;
  // Bytes between the descriptor and the data (e.g. an encoded GPA-direct header); its size
  // must be a multiple of 8. Empty for in-band data and completions.
  absl::Span<const uint8_t> sub_header;
  // The data, gathered from these pieces in order (any sizes, empty pieces allowed).
  absl::Span<const absl::Span<const uint8_t>> payload;
};

// OutgoingRing
// The writing side of one ring. Movable, not copyable. Thread-compatible: one writer thread at
// a time.
class OutgoingRing {
 public:
  // Attach
  // Attaches to ring memory that InitializeRing prepared (possibly already used: the current
  // write_index is where writing continues). Reads write_index and read_index once and checks
  // them. InvalidArgument as ValidateRingMemory; DataLoss if an index is outside the data area
  // or not 8-byte aligned. The memory must outlive the ring object.
  // With RingMapping::kMirrored, `ring_memory` is the ring mapped as that enum describes.
  static absl::StatusOr<OutgoingRing> Attach(absl::Span<uint8_t> ring_memory,
                                             RingMapping mapping = RingMapping::kSingle);

  OutgoingRing(OutgoingRing&&) = default;
  OutgoingRing& operator=(OutgoingRing&&) = default;
  OutgoingRing(const OutgoingRing&) = delete;
  OutgoingRing& operator=(const OutgoingRing&) = delete;

  // Write
  // Appends `packet` and commits. Returns kWrittenSignal when the caller must signal the
  // reader, kWritten when not, kFull when there is no room (nothing written; appended-but-
  // uncommitted packets, if any, are still committed). Errors: InvalidArgument for a packet
  // that can never fit (sub_header size not a multiple of 8, longer than kMaxPacketLength or
  // than the ring allows); DataLoss (sticky) when the reader's read_index is corrupt.
  absl::StatusOr<WriteResult> Write(const OutgoingPacket& packet);
  // Convenience: one contiguous payload, no sub-header.
  absl::StatusOr<WriteResult> Write(PacketType type, uint16_t flags, uint64_t trans_id,
                                    absl::Span<const uint8_t> payload) {
    const absl::Span<const uint8_t> pieces[1] = {payload};
    OutgoingPacket packet;
    packet.type = type;
    packet.flags = flags;
    packet.trans_id = trans_id;
    packet.payload = absl::MakeConstSpan(pieces);
    return Write(packet);
  }

  // Append
  // Phase one of a write: reserves space after everything appended so far and copies the
  // packet in. The reader cannot see it until Commit. Same errors as Write.
  absl::StatusOr<AppendResult> Append(const OutgoingPacket& packet);

  // Commit
  // Phase two: publishes every appended packet with one store of write_index. Returns true
  // when the caller must signal the reader: interrupt_mask was clear and the ring was empty
  // before this batch (the reader has drained it and may sleep). False when nothing was
  // appended or the ring has failed. After Publish, Commit also makes the decision Publish
  // left owed (even with nothing new appended), by a rule that holds for any number of
  // undecided publishes: signal when the mask is clear and the reader has not read up to the
  // write index.
  bool Commit();

  // Publish
  // Publishes every appended packet as Commit does — one store of write_index — but without
  // the signal decision: no full barrier and no load of the reader's fields. The decision is
  // owed to the next Commit. A reader that is draining finds the packets in its re-check
  // after unmasking; one that went idle just before the store is not signalled until that
  // Commit, so the caller must bound the time until it (the channel's adaptive batching
  // does: core/runtime/channel.h). No-op on a failed ring.
  void Publish();

  // Whether published packets still await Commit's signal decision.
  bool signal_owed() const { return decided_write_ != committed_write_; }
  // Whether the last Commit that decided found interrupt_mask set (the reader was draining).
  // A hint for batching only: the reader may have finished since.
  bool reader_was_draining() const { return saw_mask_; }

  // Rollback
  // Discards appended-but-uncommitted packets (the space is reused by the next Append).
  void Rollback();

  // ArmPendingSend
  // After kFull: asks the reader to signal once more than `ring_bytes` bytes are free
  // (PacketRingBytes of the packet that did not fit) by storing pending_send_sz, then
  // re-checks. Returns true if the space is already there (retry now; pending_send_sz is
  // cleared), false if armed (wait for the reader's signal, then retry). The next successful
  // Append clears pending_send_sz. FailedPrecondition if the ring's feature_bits do not
  // advertise kRingFeaturePendingSendSize; InvalidArgument if `ring_bytes` can never fit;
  // DataLoss (sticky) for a corrupt read_index.
  absl::StatusOr<bool> ArmPendingSend(size_t ring_bytes);

  // DisarmPendingSend
  // Clears pending_send_sz if this writer armed it (e.g. it gave up waiting); otherwise
  // touches nothing.
  void DisarmPendingSend();

  // FreeBytes
  // Bytes currently free for new packets (appended packets count as used); a packet of
  // PacketRingBytes(h, p) fits iff that is < FreeBytes(). DataLoss (sticky) for a corrupt
  // read_index.
  absl::StatusOr<size_t> FreeBytes();

  // status: OK, or the sticky DataLoss that failed this ring.
  const absl::Status& status() const { return status_; }
  // Size of the data area in bytes (ring memory minus the control page).
  size_t data_size() const { return data_size_; }

 private:
  OutgoingRing(RingControlPage* control, uint8_t* data, uint32_t data_size, uint32_t write,
               uint32_t read, bool mirrored);
  // Loads and checks read_index; fails the ring on corruption.
  absl::Status RefreshReadIndex();
  absl::Status Fail(absl::Status status);
  size_t FreeFromCachedRead() const;

  RingControlPage* control_;
  uint8_t* data_;
  uint32_t data_size_;
  uint32_t contiguous_;       // bytes from data_ mapped contiguously: data_size_, or 2x mirrored
  uint32_t committed_write_;  // private copy of the published write_index
  uint32_t decided_write_;    // committed_write_ at the last signal decision
  bool saw_mask_ = false;     // interrupt_mask at the last signal decision
  uint32_t write_;            // end of appended packets (== committed_write_ when none)
  uint32_t cached_read_;      // last read_index seen (validated)
  bool pending_armed_ = false;
  bool pending_send_supported_;  // feature_bits at attach
  absl::Status status_;
};

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

// PacketView
// One received packet. The descriptor fields were copied out of shared memory once and
// checked; `sub_header()` and `payload()` point into the ring (or into the scratch buffer for
// a packet that wrapped). Those bytes are still shared with the peer: a driver that parses them
// must read each field once (or copy them first, e.g. with CopyPayload) because a hostile peer
// may change them under it. A view is valid until the next non-const call on its IncomingRing.
class PacketView {
 public:
  PacketView() = default;

  // The descriptor's type, as sent (may be a value PacketType does not name).
  PacketType type() const { return static_cast<PacketType>(type_); }
  uint16_t raw_type() const { return type_; }
  uint16_t flags() const { return flags_; }
  uint64_t trans_id() const { return trans_id_; }
  bool completion_requested() const { return (flags_ & kCompletionRequested) != 0; }
  uint16_t offset8() const { return offset8_; }
  uint16_t len8() const { return len8_; }

  // Bytes between the descriptor and offset8 * 8 (empty for in-band packets).
  absl::Span<const uint8_t> sub_header() const { return {body_, sub_header_size()}; }
  // Bytes from offset8 * 8 to len8 * 8. VMBus does not carry the unpadded length: this
  // includes the sender's 0-7 padding bytes; protocols carry their own lengths.
  absl::Span<const uint8_t> payload() const {
    return {body_ + sub_header_size(), size_t{len8_} * 8 - size_t{offset8_} * 8};
  }
  // Bytes this packet occupies in the ring (len8 * 8 + trailer).
  size_t ring_bytes() const { return size_t{len8_} * 8 + kPacketTrailerSize; }
  // True if the packet wrapped around the end of the data area and was copied into scratch.
  bool wrapped() const { return wrapped_; }

 private:
  friend class IncomingRing;
  size_t sub_header_size() const { return size_t{offset8_} * 8 - kPacketDescriptorSize; }

  const uint8_t* body_ = nullptr;  // byte 16 of the packet, contiguous up to len8 * 8
  uint64_t trans_id_ = 0;
  uint16_t type_ = 0;
  uint16_t flags_ = 0;
  uint16_t offset8_ = 2;
  uint16_t len8_ = 2;
  bool wrapped_ = false;
};

// IncomingRing
// The reading side of one ring. Movable, not copyable. Thread-compatible: one reader thread at
// a time.
class IncomingRing {
 public:
  // Attach
  // Attaches to ring memory (see OutgoingRing::Attach). `scratch` receives packets that wrap
  // around the end of the data area; it should hold the largest packet the protocol allows
  // (len8 * 8 - 16 bytes): a wrapped packet larger than it is ResourceExhausted (see Next).
  // A kMirrored ring never needs scratch. Both spans must outlive the ring object. Errors as
  // OutgoingRing::Attach.
  static absl::StatusOr<IncomingRing> Attach(absl::Span<uint8_t> ring_memory,
                                             absl::Span<uint8_t> scratch = {},
                                             RingMapping mapping = RingMapping::kSingle);

  IncomingRing(IncomingRing&&) = default;
  IncomingRing& operator=(IncomingRing&&) = default;
  IncomingRing(const IncomingRing&) = delete;
  IncomingRing& operator=(const IncomingRing&) = delete;

  // Next
  // The next packet, or nullopt when none is available. Consumes it from this object's view;
  // its ring space is freed only by CommitRead. Errors:
  // - DataLoss (sticky, the ring object is failed) naming the corruption: write_index outside
  //   the data area, misaligned, moved backwards or over unread packets; fewer bytes available
  //   than a minimal packet; len8 * 8 < 16 or larger than the bytes available; offset8 * 8 < 16 or
  //   past len8.
  // - ResourceExhausted (not sticky; the packet is not consumed) for a packet that wraps and
  //   is larger than the scratch buffer.
  absl::StatusOr<std::optional<PacketView>> Next();

  // CommitRead
  // Publishes read_index past every packet Next returned, in one store. Returns true when the
  // caller must signal the writer: the writer armed pending_send_sz (and feature_bits
  // advertise it) and free space went from <= pending_send_sz to > pending_send_sz with this
  // commit. False when nothing was consumed. DataLoss (sticky) if write_index is corrupt.
  absl::StatusOr<bool> CommitRead();

  // MaskInterrupts
  // Sets interrupt_mask: the writer stops signalling while this side drains.
  void MaskInterrupts();

  // UnmaskInterrupts
  // Clears interrupt_mask and then checks for data again. Returns true if packets arrived
  // (drain them: the writer did not signal), false if the ring is empty (the writer will
  // signal the next packet). FailedPrecondition if packets returned by Next are not committed
  // yet (CommitRead first: the writer signals only when it sees the ring empty); DataLoss
  // (sticky) for a corrupt write_index.
  absl::StatusOr<bool> UnmaskInterrupts();

  // AvailableBytes
  // Bytes written by the peer and not yet returned by Next (packets and trailers). DataLoss
  // (sticky) for a corrupt write_index.
  absl::StatusOr<size_t> AvailableBytes();

  // SetScratch
  // Replaces the scratch buffer (e.g. after ResourceExhausted). Views returned earlier that
  // pointed into the old scratch stay valid as long as the old buffer does.
  void SetScratch(absl::Span<uint8_t> scratch) { scratch_ = scratch; }

  // status: OK, or the sticky DataLoss that failed this ring.
  const absl::Status& status() const { return status_; }
  size_t data_size() const { return data_size_; }

 private:
  IncomingRing(RingControlPage* control, uint8_t* data, uint32_t data_size, uint32_t write,
               uint32_t read, absl::Span<uint8_t> scratch, bool mirrored);
  // Loads write_index, checks it, updates available_. Fails the ring on corruption.
  absl::Status RefreshWriteIndex();
  absl::Status Fail(absl::Status status);
  void CopyOut(uint32_t offset, uint8_t* out, size_t len) const;

  RingControlPage* control_;
  uint8_t* data_;
  absl::Span<uint8_t> scratch_;
  uint32_t data_size_;
  uint32_t contiguous_;          // bytes from data_ mapped contiguously: data_size_, or 2x mirrored
  uint32_t committed_read_;      // private copy of the published read_index
  uint32_t read_;                // start of the next packet Next returns
  uint32_t last_write_;          // the last write_index seen (validated)
  uint32_t available_;           // bytes known written beyond read_ (from the last write_index)
  bool pending_send_supported_;  // feature_bits at attach
  absl::Status status_;
};

// ---------------------------------------------------------------------------------------------
// Typed views of sub-headers
// ---------------------------------------------------------------------------------------------

// GpaRangeView: one range of a GPA-direct packet, fields copied out once.
struct GpaRangeView {
  uint32_t byte_count = 0;
  uint32_t byte_offset = 0;
  // The range's PFNs, little-endian u64s, still in the packet's memory.
  absl::Span<const uint8_t> pfn_bytes;
  size_t pfn_count() const { return pfn_bytes.size() / 8; }
  uint64_t pfn(size_t i) const;  // i < pfn_count()
};

// GpaDirectView
// The ranges of a kDataUsingGpaDirect packet.
//   absl::StatusOr<GpaDirectView> v = GpaDirectView::Parse(packet);
//   if (!v.ok()) return v.status();
//   absl::Status s = v->ForEachRange([&](const GpaRangeView& r) { ... });
class GpaDirectView {
 public:
  // Parse
  // Checks the type, the sub-header length and every range (byte_count > 0, byte_offset <
  // 4096, its PFNs inside the sub-header, the ranges filling the sub-header exactly).
  // InvalidArgument for a packet of another type; DataLoss naming the first bad range.
  static absl::StatusOr<GpaDirectView> Parse(const PacketView& packet);

  uint32_t range_count() const { return range_count_; }

  // ForEachRange
  // Calls fn(const GpaRangeView&) for each range in order. Each field is read once per call
  // and re-checked, so a peer changing the bytes after Parse yields DataLoss, never an
  // out-of-bounds read.
  template <typename Fn>
  absl::Status ForEachRange(Fn&& fn) const {
    size_t pos = sizeof(GpaDirectHeader);
    for (uint32_t i = 0; i < range_count_; ++i) {
      absl::StatusOr<GpaRangeView> r = ReadRange(i, &pos);
      if (!r.ok()) return r.status();
      fn(*r);
    }
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<GpaRangeView> ReadRange(uint32_t index, size_t* pos) const;
  absl::Span<const uint8_t> sub_header_;
  uint32_t range_count_ = 0;
};

// TransferPageView
// The header and ranges of a kDataUsingTransferPages packet (ranges index into a transfer page
// set the sender established earlier; checking them against that set is the caller's job).
class TransferPageView {
 public:
  // Parse
  // Copies the header out and checks that `range_count` ranges fit in the sub-header.
  // InvalidArgument for a packet of another type; DataLoss for a short sub-header or too many
  // ranges.
  static absl::StatusOr<TransferPageView> Parse(const PacketView& packet);

  uint16_t transfer_page_set_id() const { return header_.transfer_page_set_id; }
  bool sender_owns_set() const { return header_.sender_owns_set != 0; }
  uint32_t range_count() const { return header_.range_count; }
  // Range i (< range_count()), read from the packet's memory when called.
  TransferPageRange range(uint32_t i) const;

 private:
  absl::Span<const uint8_t> sub_header_;
  TransferPageHeader header_{};
};

// GpaRangeSpec: a range to encode (byte_offset < 4096, byte_count > 0, and exactly
// ceil((byte_offset + byte_count) / 4096) pfns).
struct GpaRangeSpec {
  uint32_t byte_count = 0;
  uint32_t byte_offset = 0;
  absl::Span<const uint64_t> pfns;
};

// GpaDirectSubHeaderSize: bytes EncodeGpaDirectSubHeader writes for these ranges.
size_t GpaDirectSubHeaderSize(absl::Span<const GpaRangeSpec> ranges);

// EncodeGpaDirectSubHeader
// Writes the GPA-direct sub-header (GpaDirectHeader + ranges) into `out` for use as
// OutgoingPacket::sub_header. Returns the bytes written. InvalidArgument for a range that
// breaks the rules above or when `out` is too small.
absl::StatusOr<size_t> EncodeGpaDirectSubHeader(absl::Span<const GpaRangeSpec> ranges,
                                                absl::Span<uint8_t> out);

}  // namespace vbus

#endif  // VBUS_CORE_DATA_RING_BUFFER_H_
