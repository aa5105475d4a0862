// GuestMemory: the mock platform's "guest physical memory" — one shared-memory file that the
// guest creates and both the guest and the mock host map.
//
// A page frame number (PFN) is a byte offset in the file divided by 4096. Rings, GPADLs and
// the special pages below are all named by PFN, exactly as Hyper-V names guest memory by
// guest-physical page, so the host reads and writes rings the way a real host would: by PFN,
// through a GPADL, after checking every PFN against the file.
//
// Layout of the first pages (MemoryLayout; the defaults below, chosen by the guest and sent to
// the host in the GuestLink Attach message):
//
//   PFN 0  guest event page   one 2048-bit bitmap per virtual processor the guest takes
//                             events on (vp_count, 1..16), VP v's at offset v * 256; the HOST
//                             sets a channel's relid bit in its target VP's bitmap (host →
//                             guest events), the guest test-and-clears them.
//   PFN 1  host event page    2048-bit bitmap at offset 0; the GUEST sets relid bits here
//                             (guest → host events), the host test-and-clears them.
//   PFN 2  doorbell page      DoorbellPage: futex doorbells, each {value u32, waiters u32}
//                             on its own 64-byte line: the guest's doorbell for VP 0 @0 (rung
//                             by the host, waited on by the guest), the host's doorbell @64
//                             (rung by the guest, waited on by the host), and the guest's
//                             doorbells for VPs 1..15 @128 + (v - 1) * 64.
//   PFN 3  monitor page 1     host → guest monitor page (MonitorPage layout, docs/protocol.md §12).
//   PFN 4  monitor page 2     guest → host monitor page: the guest sets a monitored channel's
//                             bit in trigger_group[id / 32].pending; the host scans these at
//                             the configured monitor latency.
//   PFN 5… data pages         everything the guest hands out for rings and other GPADLs
//                             (first_data_pfn). The host rejects GPADLs naming lower PFNs.
//
// Signalling a channel: the sender sets the relid's bit in the receiver's event page (an atomic
// OR that reports whether the bit was clear), then — only if it was clear — rings the
// receiver's doorbell. The receiver's loop is: `seen = DoorbellValue(d)`, scan the event page
// (test-and-clear each bit, drain that channel), `Wait(d, seen, deadline)`. Because `seen` is
// read before the scan, a Ring that happens during the scan makes Wait return at once: no
// wakeup is lost.
//
// Example (guest side):
//   absl::StatusOr<std::unique_ptr<GuestMemory>> mem =
//       GuestMemory::Create(/*path=*/"", 64 << 20);          // a sealed memfd
//   if (!mem.ok()) return mem.status();
//   attach.set_memory_path((*mem)->path());
//   attach.set_memory_size_bytes((*mem)->size_bytes());
//   *attach.mutable_layout() = LayoutToProto((*mem)->layout());
//   ...
//   absl::StatusOr<EventPage> host_events =                  // core/data/event_page.h
//       EventPage::Attach(absl::MakeSpan((*mem)->HostEventPage(), protocol::kPageSize));
//   absl::StatusOr<bool> was_clear = host_events->Set(relid);
//   if (was_clear.ok() && *was_clear) (*mem)->Ring(Doorbell::kHost);
//
// Example (host side):
//   absl::StatusOr<std::unique_ptr<GuestMemory>> mem = GuestMemory::Open(
//       attach.memory_path(), attach.memory_size_bytes(), LayoutFromProto(attach.layout()));
//   absl::StatusOr<MappedPages> ring = (*mem)->MapPfns(gpadl_pfns);  // contiguous view
//
// Trust: the peer shares every byte of this file. Values read from it are checked before use
// (the host checks PFNs; ring code checks indices). One hazard mmap cannot remove: a process
// that shrinks the file makes the other side's accesses beyond the new end fault (SIGBUS).
// Create() with an empty path therefore makes a sealed memfd (F_SEAL_SHRINK | F_SEAL_GROW),
// and Open() reports through sealed() whether the file it mapped is protected that way.
#ifndef VBUS_MOCK_GUEST_MEMORY_H_
#define VBUS_MOCK_GUEST_MEMORY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "backends/backend.h"
#include "core/data/mirrored_mapping.h"
#include "core/data/protocol.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock {

inline constexpr uint32_t kLayoutRevision = 1;

// MemoryLayout
// Where the special pages sit, as PFNs. The C++ twin of vbus.v1.MemoryLayout; the defaults are
// the layout documented above and what Create() uses unless told otherwise.
// The most virtual processors a guest may take events on (their event flags share one page).
inline constexpr uint32_t kMaxGuestVps = protocol::kPageSize / (protocol::kRelidCount / 8);

struct MemoryLayout {
  uint32_t revision = kLayoutRevision;
  uint32_t vp_count = 1;
  uint64_t guest_event_page_pfn = 0;
  uint64_t host_event_page_pfn = 1;
  uint64_t doorbell_page_pfn = 2;
  uint64_t monitor_page1_pfn = 3;
  uint64_t monitor_page2_pfn = 4;
  uint64_t first_data_pfn = 5;

  friend bool operator==(const MemoryLayout&, const MemoryLayout&) = default;
};

// ValidateLayout
// OK if `layout` has a known revision, 1..kMaxGuestVps VPs, its five special pages are distinct
// and all below first_data_pfn, and first_data_pfn leaves at least one data page in a file of
// `page_count` pages. Otherwise InvalidArgument naming the offending field.
absl::Status ValidateLayout(const MemoryLayout& layout, uint64_t page_count);

// ValidateDataPfns
// OK if every PFN lies in [layout.first_data_pfn, page_count) and none repeats; otherwise
// OutOfRange (outside) or InvalidArgument (repeated), naming the PFN and its index. Pure: the
// host engine uses it without a mapping; GuestMemory::CheckDataPfns is the same check.
absl::Status ValidateDataPfns(absl::Span<const uint64_t> pfns, const MemoryLayout& layout,
                              uint64_t page_count);

// LayoutToProto / LayoutFromProto
// Field-by-field conversions to and from the GuestLink Attach message's layout. No checking:
// call ValidateLayout on what comes from the peer.
v1::MemoryLayout LayoutToProto(const MemoryLayout& layout);
MemoryLayout LayoutFromProto(const v1::MemoryLayout& proto);

// DoorbellPage
// The doorbell page's layout. Each doorbell is a futex word `value` that the ringer increments
// and the waiter sleeps on, plus a `waiters` count that lets the ringer skip the FUTEX_WAKE
// system call when nobody sleeps. Each sits on its own cache line: the host writes one, the
// guest the other.
struct DoorbellWords {
  uint32_t value;
  uint32_t waiters;
  uint8_t reserved[56];
};
struct DoorbellPage {
  DoorbellWords guest;                        // VP 0's: rung by the host, waited on by the guest
  DoorbellWords host;                         // rung by the guest, waited on by the host
  DoorbellWords guest_vps[kMaxGuestVps - 1];  // VPs 1..15
  uint8_t reserved[protocol::kPageSize - (kMaxGuestVps + 1) * sizeof(DoorbellWords)];
};
static_assert(sizeof(DoorbellWords) == 64);
static_assert(offsetof(DoorbellWords, value) == 0);
static_assert(offsetof(DoorbellWords, waiters) == 4);
static_assert(sizeof(DoorbellPage) == protocol::kPageSize);
static_assert(offsetof(DoorbellPage, guest) == 0);
static_assert(offsetof(DoorbellPage, host) == 64);
static_assert(offsetof(DoorbellPage, guest_vps) == 128);

// MonitorPage
// The Hyper-V monitor page (docs/protocol.md §12), of which the mock uses trigger_group[].pending
// of the guest → host page: monitor id m is bit (m % 32) of trigger_group[m / 32].pending.
struct MonitorTriggerGroup {
  uint32_t pending;
  uint32_t armed;
};
struct MonitorParameter {
  uint32_t connection_id;
  uint16_t flag_number;
  uint16_t reserved;
};
struct MonitorPage {
  uint32_t trigger_state;
  uint32_t reserved1;
  MonitorTriggerGroup trigger_group[4];
  uint64_t reserved2[3];
  int32_t next_checktime[4][32];
  uint16_t latency[4][32];
  uint64_t reserved3[32];
  MonitorParameter parameter[4][32];
  uint8_t reserved4[1984];
};
static_assert(offsetof(MonitorPage, trigger_group) == 0x008);
static_assert(offsetof(MonitorPage, next_checktime) == 0x040);
static_assert(offsetof(MonitorPage, latency) == 0x240);
static_assert(offsetof(MonitorPage, parameter) == 0x440);
static_assert(sizeof(MonitorPage) == protocol::kPageSize);

// Doorbell: which of the two doorbells.
enum class Doorbell {
  kGuest,  // wakes the guest; rung by the host
  kHost,   // wakes the host; rung by the guest
};

// MappedPages
// A contiguous, writable view of some guest pages, in the order their PFNs were given. When
// the PFNs are consecutive it is a window into GuestMemory's own mapping; otherwise it is a
// separate mapping of the same file that places each page at consecutive addresses, unmapped
// when the MappedPages is destroyed. Must not outlive the GuestMemory that made it. Movable,
// not copyable.
class MappedPages {
 public:
  MappedPages() = default;
  MappedPages(MappedPages&& other) noexcept;
  MappedPages& operator=(MappedPages&& other) noexcept;
  MappedPages(const MappedPages&) = delete;
  MappedPages& operator=(const MappedPages&) = delete;
  ~MappedPages();

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  size_t page_count() const { return size_ / protocol::kPageSize; }
  absl::Span<uint8_t> span() const { return absl::Span<uint8_t>(data_, size_); }
  // Whether this view owns a separate mapping (the PFNs were not consecutive).
  bool owns_mapping() const { return owned_; }

 private:
  friend class GuestMemory;
  MappedPages(uint8_t* data, size_t size, bool owned) : data_(data), size_(size), owned_(owned) {}
  void Reset();

  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool owned_ = false;
};

// GuestMemory
// One mapping of the shared guest-memory file. Thread-safe: every method may be called from
// any thread (the mapping itself is fixed for the object's lifetime).
class GuestMemory {
 public:
  // Create (guest side)
  // Creates a zero-filled file of `size_bytes` (a multiple of 4096 with at least one data page
  // after the layout's special pages) and maps it. With an empty `path`, the file is a memfd
  // sealed against shrinking and growing; path() is then "/proc/<pid>/fd/<n>", which another
  // process of the same user can open. With a path (normally under /dev/shm), the file must
  // not exist yet (AlreadyExists otherwise) and is unlinked when this object is destroyed.
  // Fails with InvalidArgument for a bad size or layout, or the errno's status for a failed
  // system call, naming the path.
  static absl::StatusOr<std::unique_ptr<GuestMemory>> Create(const std::string& path,
                                                             uint64_t size_bytes,
                                                             const MemoryLayout& layout = {});

  // Open (host side)
  // Maps an existing file created by a guest. Fails with NotFound if it does not exist,
  // FailedPrecondition if it is not a regular file or its size is not `size_bytes`,
  // InvalidArgument for a bad size or layout. Never creates, truncates or unlinks the file.
  static absl::StatusOr<std::unique_ptr<GuestMemory>> Open(const std::string& path,
                                                           uint64_t size_bytes,
                                                           const MemoryLayout& layout);

  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size_bytes() const { return size_bytes_; }
  uint64_t page_count() const { return size_bytes_ / protocol::kPageSize; }
  const MemoryLayout& layout() const { return layout_; }
  // Whether the file cannot shrink (a sealed memfd); see the trust note above.
  bool sealed() const { return sealed_; }

  // Translate
  // The address of page `pfn` in this mapping. OutOfRange if pfn >= page_count(): an
  // out-of-range PFN is reported, never dereferenced.
  absl::StatusOr<uint8_t*> Translate(uint64_t pfn) const;

  // PfnOf
  // The PFN of the page containing `address`; OutOfRange if it is not inside this mapping.
  absl::StatusOr<uint64_t> PfnOf(const void* address) const;

  // CheckDataPfns
  // ValidateDataPfns(pfns, layout(), page_count()).
  absl::Status CheckDataPfns(absl::Span<const uint64_t> pfns) const {
    return ValidateDataPfns(pfns, layout_, page_count());
  }

  // MapPfns
  // A contiguous view of the pages `pfns` (non-empty, each < page_count(), repeats allowed:
  // the caller decides policy with CheckDataPfns). Consecutive PFNs need no new mapping.
  // Fails with OutOfRange for a PFN outside the file, InvalidArgument for an empty list, or
  // the mmap errno's status.
  absl::StatusOr<MappedPages> MapPfns(absl::Span<const uint64_t> pfns) const;

  // MapRingMirrored
  // The ring in the consecutive pages `pfns` (control page first) mapped again as
  // RingMapping::kMirrored (core/data/mirrored_mapping.h). InvalidArgument for fewer than two
  // pages or PFNs that are not consecutive, OutOfRange for a PFN outside the file, the mmap
  // errno's status otherwise.
  absl::StatusOr<MirroredMapping> MapRingMirrored(absl::Span<const uint64_t> pfns) const;

  // The special pages (each protocol::kPageSize bytes).
  uint8_t* GuestEventPage() const { return Page(layout_.guest_event_page_pfn); }
  // VP `vp`'s 256 bytes of host → guest event flags (vp < layout().vp_count); an empty span
  // for a VP out of range.
  absl::Span<uint8_t> GuestEventFlags(uint32_t vp) const {
    if (vp >= layout_.vp_count) return {};
    return absl::MakeSpan(GuestEventPage() + vp * (protocol::kRelidCount / 8),
                          protocol::kRelidCount / 8);
  }
  uint8_t* HostEventPage() const { return Page(layout_.host_event_page_pfn); }
  DoorbellPage* Doorbells() const {
    return reinterpret_cast<DoorbellPage*>(Page(layout_.doorbell_page_pfn));
  }
  MonitorPage* HostToGuestMonitorPage() const {
    return reinterpret_cast<MonitorPage*>(Page(layout_.monitor_page1_pfn));
  }
  MonitorPage* GuestToHostMonitorPage() const {
    return reinterpret_cast<MonitorPage*>(Page(layout_.monitor_page2_pfn));
  }

  // DoorbellValue / Ring / Wait take `vp` for the guest's doorbells (one per VP; a VP out of
  // range means VP 0); the host's doorbell has none.

  // DoorbellValue
  // The doorbell's current count (acquire). Read it before scanning the event page and pass
  // it to Wait().
  uint32_t DoorbellValue(Doorbell doorbell, uint32_t vp = 0) const;

  // Ring
  // Increments the doorbell and, if anyone waits on it, wakes every waiter (FUTEX_WAKE on the
  // shared mapping, so waiters in other processes wake). Call after making the work visible
  // (setting the event bit). Never blocks.
  void Ring(Doorbell doorbell, uint32_t vp = 0) const;

  // Wait
  // Blocks until the doorbell's value differs from `seen` (OK) or `deadline` passes
  // (DeadlineExceeded). Spurious wakeups and EINTR are absorbed. Several threads may wait at
  // once. The waiters count lives in shared memory that the peer can scribble on; that can
  // only cost the peer its own wakeups, and every wait still ends by its deadline.
  // With `poll` > 0 it first watches the value for up to that long (never past `deadline`),
  // yielding the CPU between looks, and only then sleeps — what a hypervisor's halt polling
  // does for a vCPU that halts: a ring that comes within the window costs the ringer no
  // FUTEX_WAKE and the waiter no sleep and wake-up.
  absl::Status Wait(Doorbell doorbell, uint32_t seen, absl::Time deadline, uint32_t vp = 0,
                    absl::Duration poll = absl::ZeroDuration()) const;

  // TriggerMonitor (guest side)
  // Sets monitor id `monitor_id`'s pending bit in the guest → host monitor page (release).
  // InvalidArgument if monitor_id >= 128. A guest signalling a channel uses SignalChannel,
  // which also sets the channel's interrupt bit first.
  absl::Status TriggerMonitor(uint32_t monitor_id) const;

  // ContactInfo (guest side)
  // What a guest on this memory tells the host in InitiateContact: the monitor pages and, for
  // versions below 5.0, the interrupt page, which on the mock platform is the host event page
  // (the send half the guest sets for every signal; docs/protocol.md §12). VP 0 takes control
  // messages on SINT 2.
  vbus::ContactInfo GuestContactInfo() const;

  // SignalChannel (guest side)
  // The guest's whole signal for channel `relid` (docs/protocol.md §12): its bit in the host
  // event page (the send half of the interrupt page) first, with release order; then, for a
  // monitored channel, its monitor trigger bit (the host scans those at its monitor latency:
  // no doorbell), otherwise the host's doorbell if the bit was clear. InvalidArgument for
  // relid 0 or >= 2048 or a monitor id >= 128.
  enum class Signalled { kRang, kCoalesced, kMonitored };
  absl::StatusOr<Signalled> SignalChannel(uint32_t relid, std::optional<uint32_t> monitor_id) const;

  // TakeMonitorTriggers (host side)
  // Atomically takes (and clears) the pending bits of trigger group `group` (0..3) of the
  // guest → host monitor page; bit b means monitor id group * 32 + b. Returns 0 for a bad
  // group.
  uint32_t TakeMonitorTriggers(uint32_t group) const;

  // ClearMonitorTrigger (host side)
  // Drops monitor id `monitor_id`'s pending bit unread (a trigger left by an earlier channel
  // with the same monitor id, before a new one is mapped). Ignores ids >= 128.
  void ClearMonitorTrigger(uint32_t monitor_id) const;

 private:
  GuestMemory(std::string path, int fd, uint8_t* base, uint64_t size_bytes, MemoryLayout layout,
              bool unlink_on_close, bool sealed)
      : path_(std::move(path)),
        fd_(fd),
        base_(base),
        size_bytes_(size_bytes),
        layout_(layout),
        unlink_on_close_(unlink_on_close),
        sealed_(sealed) {}

  // Only for the special pages, which ValidateLayout placed inside the file.
  uint8_t* Page(uint64_t pfn) const { return base_ + pfn * protocol::kPageSize; }
  DoorbellWords* Words(Doorbell doorbell, uint32_t vp) const {
    if (doorbell == Doorbell::kHost) return &Doorbells()->host;
    if (vp == 0 || vp >= layout_.vp_count) return &Doorbells()->guest;
    return &Doorbells()->guest_vps[vp - 1];
  }

  const std::string path_;
  const int fd_;
  uint8_t* const base_;
  const uint64_t size_bytes_;
  const MemoryLayout layout_;
  const bool unlink_on_close_;
  const bool sealed_;
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_GUEST_MEMORY_H_
