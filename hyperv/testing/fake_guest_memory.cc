#include "hyperv/testing/fake_guest_memory.h"

#include <cstdlib>
#include <cstring>

namespace vbus::hyperv::testing {

namespace {

uint8_t* AllocateZeroed(size_t pages) {
  auto* base =
      static_cast<uint8_t*>(std::aligned_alloc(protocol::kPageSize, pages * protocol::kPageSize));
  std::memset(base, 0, pages * protocol::kPageSize);
  return base;
}

}  // namespace

FakeGuestMemory::FakeGuestMemory(size_t pages)
    : pages_(pages), base_(AllocateZeroed(pages)), pool_(base_.get(), kFirstPfn, pages) {}

uint8_t* FakeGuestMemory::Translate(uint64_t gpa, size_t bytes) const {
  const uint64_t first = first_gpa();
  if (gpa < first) return nullptr;
  const uint64_t offset = gpa - first;
  if (offset > size_bytes() || bytes > size_bytes() - offset) return nullptr;
  return base_.get() + offset;
}

}  // namespace vbus::hyperv::testing
