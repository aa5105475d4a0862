// FakeGuestMemory (testonly): the FakeHypervisor's guest physical memory.
//
// One page-aligned heap buffer standing for the partition's RAM. Page i of it has guest
// physical page number (PFN) kFirstPfn + i, so GPA = (kFirstPfn + i) * 4096 + offset; GPAs
// below kFirstPfn * 4096 are never memory, so 0 is never a valid address. The guest side gets
// pages through Allocate (a PagePool: zero-filled runs, returned by destroying the Pages); the
// hypervisor side reaches any of it by GPA through Translate, as a hypervisor would.
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
  // GPA 1 MiB: the first page of memory.
  static constexpr uint64_t kFirstPfn = 0x100;

  explicit FakeGuestMemory(size_t pages);
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

  uint64_t first_gpa() const { return kFirstPfn * protocol::kPageSize; }
  size_t size_bytes() const { return pages_ * protocol::kPageSize; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  const size_t pages_;
  // Declared before pool_, so the buffer outlives the pool's last check.
  const std::unique_ptr<uint8_t, Free> base_;
  PagePool pool_;
};

}  // namespace vbus::hyperv::testing

#endif  // VBUS_HYPERV_TESTING_FAKE_GUEST_MEMORY_H_
