// FakeGuestMemory (testonly): the FakeHypervisor's guest physical memory.
//
// One page-aligned buffer standing for the partition's RAM. Page i of it has guest physical
// page number (PFN) first_pfn + i, so GPA = (first_pfn + i) * 4096 + offset; GPAs below
// first_pfn * 4096 are never memory, so 0 is never a valid address. The guest side gets pages
// through Allocate (a PagePool: zero-filled runs, returned by destroying the Pages); the
// hypervisor side reaches any of it by GPA through Translate, as a hypervisor would.
//
// The buffer is either the fake's own (a zeroed heap allocation whose first PFN is kFirstPfn)
// or an External one it does not own: e.g. the data pages of a mock guest-memory file
// (mock/guest_memory.h), numbered as that file numbers them, so that the PFNs a guest on the
// fake hands out are the PFNs a mock host maps (hyperv/testing/mock_host_bridge.h).
//
// Thread safety: Allocate and page releases may run from any thread (PagePool locks);
// Translate is a pure computation. What the memory holds follows the protocols living in it.
#ifndef VBUS_HYPERV_TESTING_FAKE_GUEST_MEMORY_H_
#define VBUS_HYPERV_TESTING_FAKE_GUEST_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "absl/status/statusor.h"
#include "backends/page_pool.h"
#include "backends/pages.h"

namespace vbus::hyperv::testing {

class FakeGuestMemory {
 public:
  // GPA 1 MiB: the first page of the fake's own memory.
  static constexpr uint64_t kFirstPfn = 0x100;

  // Memory the fake does not own: `pages` pages at `base` (page-aligned, zero-filled or not:
  // Allocate zero-fills what it hands out), page i with PFN first_pfn + i (first_pfn >= 1).
  // It must outlive the FakeGuestMemory.
  struct External {
    uint8_t* base = nullptr;
    uint64_t first_pfn = 0;
    size_t pages = 0;
  };

  // `pages` zero-filled pages of the fake's own, from PFN kFirstPfn.
  explicit FakeGuestMemory(size_t pages);
  explicit FakeGuestMemory(External external);
  FakeGuestMemory(const FakeGuestMemory&) = delete;
  FakeGuestMemory& operator=(const FakeGuestMemory&) = delete;
  // Every Pages handed out must be destroyed first (PagePool aborts otherwise).
  ~FakeGuestMemory() = default;

  // Allocate
  // `count` zero-filled pages with consecutive PFNs (PagePool::Allocate's errors).
  absl::StatusOr<Pages> Allocate(size_t count) { return pool_.Allocate(count); }

  // Translate
  // The memory at [gpa, gpa + bytes), or nullptr if any of it lies outside guest memory.
  uint8_t* Translate(uint64_t gpa, size_t bytes) const;

  uint64_t first_pfn() const { return first_pfn_; }
  uint64_t first_gpa() const { return first_pfn_ * protocol::kPageSize; }
  size_t size_bytes() const { return pages_ * protocol::kPageSize; }
  // Pages Allocate can still hand out.
  size_t free_pages() const { return pool_.free_pages(); }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  const size_t pages_;
  const uint64_t first_pfn_;
  // The fake's own buffer (null for External memory). Declared before pool_, so the buffer
  // outlives the pool's last check.
  const std::unique_ptr<uint8_t, Free> owned_;
  uint8_t* const base_;
  PagePool pool_;
};

}  // namespace vbus::hyperv::testing

#endif  // VBUS_HYPERV_TESTING_FAKE_GUEST_MEMORY_H_
