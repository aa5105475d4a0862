#include "mock/guest_memory.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/data/event_page.h"

namespace vbus::mock {
namespace {

static_assert(std::atomic_ref<uint32_t>::is_always_lock_free,
              "doorbells need lock-free 32-bit atomics to work across processes");

absl::Status ErrnoStatus(int err, absl::string_view what) { return absl::ErrnoToStatus(err, what); }

std::atomic_ref<uint32_t> Ref(uint32_t& word) { return std::atomic_ref<uint32_t>(word); }

// Raw futex calls on a word of the shared mapping. No FUTEX_PRIVATE_FLAG: the waiter and the
// waker may live in different processes, so the kernel must key the futex by the file page.
long FutexWait(uint32_t* word, uint32_t expected, const timespec* timeout) {
  return syscall(SYS_futex, word, FUTEX_WAIT, expected, timeout, nullptr, 0);
}
long FutexWake(uint32_t* word) { return syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, 0); }

absl::Status CheckSize(uint64_t size_bytes, const MemoryLayout& layout) {
  if (size_bytes == 0 || size_bytes % protocol::kPageSize != 0) {
    return absl::InvalidArgumentError(absl::StrCat("guest memory size ", size_bytes,
                                                   " bytes is not a positive multiple of ",
                                                   protocol::kPageSize));
  }
  return ValidateLayout(layout, size_bytes / protocol::kPageSize);
}

// How many of `pfns` from the first are consecutive, after checking that each lies in a file of
// `page_count` pages (OutOfRange naming the first that does not).
absl::StatusOr<size_t> ConsecutiveRun(absl::Span<const uint64_t> pfns, uint64_t page_count) {
  size_t run = pfns.size();
  for (size_t i = 0; i < pfns.size(); ++i) {
    if (pfns[i] >= page_count) {
      return absl::OutOfRangeError(absl::StrCat(
          "PFN ", pfns[i], " (index ", i, ") is outside guest memory of ", page_count, " pages"));
    }
    if (i > 0 && run == pfns.size() && pfns[i] != pfns[i - 1] + 1) run = i;
  }
  return run;
}

}  // namespace

absl::Status ValidateLayout(const MemoryLayout& layout, uint64_t page_count) {
  if (layout.revision != kLayoutRevision) {
    return absl::InvalidArgumentError(absl::StrCat("memory layout revision ", layout.revision,
                                                   " unknown (this build knows ", kLayoutRevision,
                                                   ")"));
  }
  if (layout.vp_count == 0 || layout.vp_count > kMaxGuestVps) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory layout: vp_count ", layout.vp_count, " is outside 1..", kMaxGuestVps));
  }
  const std::array<std::pair<const char*, uint64_t>, 5> special = {{
      {"guest_event_page_pfn", layout.guest_event_page_pfn},
      {"host_event_page_pfn", layout.host_event_page_pfn},
      {"doorbell_page_pfn", layout.doorbell_page_pfn},
      {"monitor_page1_pfn", layout.monitor_page1_pfn},
      {"monitor_page2_pfn", layout.monitor_page2_pfn},
  }};
  for (size_t i = 0; i < special.size(); ++i) {
    if (special[i].second >= layout.first_data_pfn) {
      return absl::InvalidArgumentError(
          absl::StrCat("memory layout: ", special[i].first, " ", special[i].second,
                       " is not below first_data_pfn ", layout.first_data_pfn));
    }
    for (size_t j = 0; j < i; ++j) {
      if (special[i].second == special[j].second) {
        return absl::InvalidArgumentError(absl::StrCat("memory layout: ", special[i].first, " and ",
                                                       special[j].first, " are the same page ",
                                                       special[i].second));
      }
    }
  }
  if (layout.first_data_pfn >= page_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory layout: first_data_pfn ", layout.first_data_pfn,
                     " leaves no data page in a file of ", page_count, " pages"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDataPfns(absl::Span<const uint64_t> pfns, const MemoryLayout& layout,
                              uint64_t page_count) {
  absl::flat_hash_set<uint64_t> seen;
  seen.reserve(pfns.size());
  for (size_t i = 0; i < pfns.size(); ++i) {
    const uint64_t pfn = pfns[i];
    if (pfn < layout.first_data_pfn || pfn >= page_count) {
      return absl::OutOfRangeError(absl::StrCat("PFN ", pfn, " (index ", i,
                                                ") is outside the data pages [",
                                                layout.first_data_pfn, ", ", page_count, ")"));
    }
    if (!seen.insert(pfn).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("PFN ", pfn, " (index ", i, ") appears twice"));
    }
  }
  return absl::OkStatus();
}

v1::MemoryLayout LayoutToProto(const MemoryLayout& layout) {
  v1::MemoryLayout proto;
  proto.set_revision(layout.revision);
  proto.set_guest_event_page_pfn(layout.guest_event_page_pfn);
  proto.set_host_event_page_pfn(layout.host_event_page_pfn);
  proto.set_doorbell_page_pfn(layout.doorbell_page_pfn);
  proto.set_monitor_page1_pfn(layout.monitor_page1_pfn);
  proto.set_monitor_page2_pfn(layout.monitor_page2_pfn);
  proto.set_first_data_pfn(layout.first_data_pfn);
  proto.set_vp_count(layout.vp_count);
  return proto;
}

MemoryLayout LayoutFromProto(const v1::MemoryLayout& proto) {
  MemoryLayout layout;
  layout.revision = proto.revision();
  layout.guest_event_page_pfn = proto.guest_event_page_pfn();
  layout.host_event_page_pfn = proto.host_event_page_pfn();
  layout.doorbell_page_pfn = proto.doorbell_page_pfn();
  layout.monitor_page1_pfn = proto.monitor_page1_pfn();
  layout.monitor_page2_pfn = proto.monitor_page2_pfn();
  layout.first_data_pfn = proto.first_data_pfn();
  layout.vp_count = proto.vp_count() == 0 ? 1 : proto.vp_count();
  return layout;
}

// --- MappedPages --------------------------------------------------------------------------

MappedPages::MappedPages(MappedPages&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      owned_(std::exchange(other.owned_, false)) {}

MappedPages& MappedPages::operator=(MappedPages&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    owned_ = std::exchange(other.owned_, false);
  }
  return *this;
}

MappedPages::~MappedPages() { Reset(); }

void MappedPages::Reset() {
  if (owned_ && data_ != nullptr) munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
  owned_ = false;
}

// --- GuestMemory --------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::Create(const std::string& path,
                                                                 uint64_t size_bytes,
                                                                 const MemoryLayout& layout) {
  if (absl::Status s = CheckSize(size_bytes, layout); !s.ok()) return s;
  int fd = -1;
  std::string final_path = path;
  const bool memfd = path.empty();
  if (memfd) {
    fd = memfd_create("vbus-guest-memory", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return ErrnoStatus(errno, "memfd_create for guest memory");
    final_path = absl::StrCat("/proc/", getpid(), "/fd/", fd);
  } else {
    fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("create guest memory file ", path));
  }
  auto fail = absl::MakeCleanup([&] {
    close(fd);
    if (!memfd) unlink(path.c_str());
  });
  if (ftruncate(fd, static_cast<off_t>(size_bytes)) != 0) {
    return ErrnoStatus(
        errno, absl::StrCat("size guest memory file ", final_path, " to ", size_bytes, " bytes"));
  }
  bool sealed = false;
  if (memfd) {
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
      return ErrnoStatus(errno, absl::StrCat("seal guest memory file ", final_path));
    }
    sealed = true;
  }
  void* base = mmap(nullptr, size_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    return ErrnoStatus(errno, absl::StrCat("map guest memory file ", final_path));
  }
  std::move(fail).Cancel();
  return std::unique_ptr<GuestMemory>(new GuestMemory(final_path, fd, static_cast<uint8_t*>(base),
                                                      size_bytes, layout,
                                                      /*unlink_on_close=*/!memfd, sealed));
}

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::Open(const std::string& path,
                                                               uint64_t size_bytes,
                                                               const MemoryLayout& layout) {
  if (absl::Status s = CheckSize(size_bytes, layout); !s.ok()) return s;
  if (path.empty()) return absl::InvalidArgumentError("guest memory path is empty");
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open guest memory file ", path));
  auto fail = absl::MakeCleanup([fd] { close(fd); });
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, absl::StrCat("stat ", path));
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("guest memory file ", path, " is not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) != size_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "guest memory file ", path, " has ", st.st_size, " bytes, the guest said ", size_bytes));
  }
  const int seals = fcntl(fd, F_GET_SEALS);
  const bool sealed = seals >= 0 && (seals & F_SEAL_SHRINK) != 0;
  void* base = mmap(nullptr, size_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return ErrnoStatus(errno, absl::StrCat("map guest memory file ", path));
  std::move(fail).Cancel();
  return std::unique_ptr<GuestMemory>(new GuestMemory(path, fd, static_cast<uint8_t*>(base),
                                                      size_bytes, layout,
                                                      /*unlink_on_close=*/false, sealed));
}

GuestMemory::~GuestMemory() {
  munmap(base_, size_bytes_);
  close(fd_);
  if (unlink_on_close_) unlink(path_.c_str());
}

absl::StatusOr<uint8_t*> GuestMemory::Translate(uint64_t pfn) const {
  if (pfn >= page_count()) {
    return absl::OutOfRangeError(
        absl::StrCat("PFN ", pfn, " is outside guest memory of ", page_count(), " pages"));
  }
  return base_ + pfn * protocol::kPageSize;
}

absl::StatusOr<uint64_t> GuestMemory::PfnOf(const void* address) const {
  const auto p = reinterpret_cast<uintptr_t>(address);
  const auto base = reinterpret_cast<uintptr_t>(base_);
  if (p < base || p - base >= size_bytes_) {
    return absl::OutOfRangeError("address is outside the guest memory mapping");
  }
  return (p - base) / protocol::kPageSize;
}

absl::StatusOr<MappedPages> GuestMemory::MapPfns(absl::Span<const uint64_t> pfns) const {
  if (pfns.empty()) return absl::InvalidArgumentError("no PFNs to map");
  absl::StatusOr<size_t> run = ConsecutiveRun(pfns, page_count());
  if (!run.ok()) return run.status();
  const bool consecutive = *run == pfns.size();
  const size_t size = pfns.size() * protocol::kPageSize;
  if (consecutive) return MappedPages(base_ + pfns[0] * protocol::kPageSize, size, /*owned=*/false);

  // Reserve the whole range, then map each run of consecutive PFNs over it with MAP_FIXED.
  void* region = mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) return ErrnoStatus(errno, "reserve address space for a GPADL view");
  MappedPages view(static_cast<uint8_t*>(region), size, /*owned=*/true);
  size_t i = 0;
  while (i < pfns.size()) {
    size_t run = 1;
    while (i + run < pfns.size() && pfns[i + run] == pfns[i] + run) ++run;
    void* want = view.data() + i * protocol::kPageSize;
    void* got =
        mmap(want, run * protocol::kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd_,
             static_cast<off_t>(pfns[i] * protocol::kPageSize));
    if (got == MAP_FAILED) {
      return ErrnoStatus(errno, absl::StrCat("map PFN ", pfns[i], " into a GPADL view"));
    }
    i += run;
  }
  return view;
}

absl::StatusOr<MirroredMapping> GuestMemory::MapRingMirrored(
    absl::Span<const uint64_t> pfns) const {
  if (pfns.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ring of ", pfns.size(), " pages cannot be mirrored: it needs two"));
  }
  absl::StatusOr<size_t> run = ConsecutiveRun(pfns, page_count());
  if (!run.ok()) return run.status();
  if (*run != pfns.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ring PFNs are not consecutive at index ", *run, ": cannot mirror"));
  }
  return MirroredMapping::Map(fd_, pfns[0] * protocol::kPageSize,
                              pfns.size() * protocol::kPageSize);
}

uint32_t GuestMemory::DoorbellValue(Doorbell doorbell, uint32_t vp) const {
  // [GM-A1] acquire: pairs with the ringer's [GM-R1] increment, so work published before the Ring
  // (event bits, ring contents) is visible once the new value is seen.
  return Ref(Words(doorbell, vp)->value).load(std::memory_order_acquire);
}

void GuestMemory::Ring(Doorbell doorbell, uint32_t vp) const {
  DoorbellWords* words = Words(doorbell, vp);
  // [GM-R1] seq_cst increment, then [GM-R2] seq_cst load of the waiters count. The waiter does
  // [GM-W1] seq_cst increment of waiters, then [GM-W2] seq_cst load of value. In the single total
  // order of seq_cst operations either [GM-R2] follows [GM-W1] (we see the waiter and wake it) or
  // [GM-W1] follows [GM-R2], so [GM-W2] follows [GM-R1] and the waiter sees the new value and does
  // not sleep. A waiter between [GM-W2] and FUTEX_WAIT is covered by the kernel re-checking the
  // value. [GM-R1] also releases the work published before the Ring ([GM-A1]/[GM-W2]/[GM-A3]).
  Ref(words->value).fetch_add(1, std::memory_order_seq_cst);
  if (Ref(words->waiters).load(std::memory_order_seq_cst) != 0) FutexWake(&words->value);
}

absl::Status GuestMemory::Wait(Doorbell doorbell, uint32_t seen, absl::Time deadline, uint32_t vp,
                               absl::Duration poll) const {
  DoorbellWords* words = Words(doorbell, vp);
  auto value = Ref(words->value);
  auto waiters = Ref(words->waiters);
  // Polling: look without counting ourselves in, so a Ring meanwhile is one atomic increment
  // and no FUTEX_WAKE. Yield between looks: on a machine with fewer CPUs than busy threads the
  // ringer may need this CPU to ring at all.
  if (poll > absl::ZeroDuration()) {
    const absl::Time until = std::min(deadline, absl::Now() + poll);
    for (;;) {
      // [GM-A3] acquire: pairs with [GM-R1], as [GM-A2] does.
      if (value.load(std::memory_order_acquire) != seen) return absl::OkStatus();
      if (absl::Now() >= until) break;
      std::this_thread::yield();
    }
  }
  while (true) {
    waiters.fetch_add(1, std::memory_order_seq_cst);  // [GM-W1], see Ring().
    // [GM-W2] seq_cst load (also an acquire: pairs with [GM-R1]).
    const uint32_t now_value = value.load(std::memory_order_seq_cst);
    if (now_value != seen) {
      waiters.fetch_sub(1, std::memory_order_relaxed);
      return absl::OkStatus();
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      waiters.fetch_sub(1, std::memory_order_relaxed);
      return absl::DeadlineExceededError("doorbell wait timed out");
    }
    const timespec timeout = absl::ToTimespec(left);
    FutexWait(&words->value, seen, &timeout);  // EAGAIN, EINTR, ETIMEDOUT: all re-checked.
    waiters.fetch_sub(1, std::memory_order_relaxed);
    // [GM-A2] acquire re-check: pairs with [GM-R1].
    if (value.load(std::memory_order_acquire) != seen) return absl::OkStatus();
  }
}

vbus::ContactInfo GuestMemory::GuestContactInfo() const {
  vbus::ContactInfo contact;
  contact.target_vcpu = 0;
  contact.message_sint = 2;
  contact.interrupt_page_gpa = layout_.host_event_page_pfn * protocol::kPageSize;
  contact.monitor_page1_gpa = layout_.monitor_page1_pfn * protocol::kPageSize;
  contact.monitor_page2_gpa = layout_.monitor_page2_pfn * protocol::kPageSize;
  return contact;
}

absl::StatusOr<GuestMemory::Signalled> GuestMemory::SignalChannel(
    uint32_t relid, std::optional<uint32_t> monitor_id) const {
  absl::StatusOr<EventPage> host_events =
      EventPage::Attach(absl::MakeSpan(HostEventPage(), EventPage::kBytes));
  if (!host_events.ok()) return host_events.status();
  // [EP-S1] inside Set is a release OR: the ring writes before this signal are visible to the
  // host's scan that takes the bit, and, for a monitored channel, the bit is visible to the
  // host once it has taken the trigger below ([GM-R3] comes after it).
  absl::StatusOr<bool> was_clear = host_events->Set(relid);
  if (!was_clear.ok()) return was_clear.status();
  if (monitor_id.has_value()) {
    if (absl::Status s = TriggerMonitor(*monitor_id); !s.ok()) return s;
    return Signalled::kMonitored;
  }
  // Ring only on a 0 → 1 transition: a set bit means the host has not scanned yet and will
  // see this channel in that scan.
  if (!*was_clear) return Signalled::kCoalesced;
  Ring(Doorbell::kHost);
  return Signalled::kRang;
}

absl::Status GuestMemory::TriggerMonitor(uint32_t monitor_id) const {
  if (monitor_id >= protocol::kMonitorIdCount) {
    return absl::InvalidArgumentError(
        absl::StrCat("monitor id ", monitor_id, " is not below ", protocol::kMonitorIdCount));
  }
  MonitorPage* page = GuestToHostMonitorPage();
  // [GM-R3] release: the ring contents written before the trigger are visible to the host's
  // [GM-A3] exchange that takes this bit.
  Ref(page->trigger_group[monitor_id / 32].pending)
      .fetch_or(1u << (monitor_id % 32), std::memory_order_release);
  return absl::OkStatus();
}

uint32_t GuestMemory::TakeMonitorTriggers(uint32_t group) const {
  if (group >= 4) return 0;
  MonitorPage* page = GuestToHostMonitorPage();
  // [GM-A3] acquire: pairs with the guest's [GM-R3] fetch_or.
  return Ref(page->trigger_group[group].pending).exchange(0, std::memory_order_acquire);
}

void GuestMemory::ClearMonitorTrigger(uint32_t monitor_id) const {
  if (monitor_id >= protocol::kMonitorIdCount) return;
  MonitorPage* page = GuestToHostMonitorPage();
  // Relaxed: the bit is dropped unread; whatever it announced belonged to an earlier channel.
  Ref(page->trigger_group[monitor_id / 32].pending)
      .fetch_and(~(uint32_t{1} << (monitor_id % 32)), std::memory_order_relaxed);
}

}  // namespace vbus::mock
