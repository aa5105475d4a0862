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
    : pages_(pages),
      first_pfn_(kFirstPfn),
      owned_(AllocateZeroed(pages)),
      base_(owned_.get()),
      pool_(base_, first_pfn_, pages) {}

FakeGuestMemory::FakeGuestMemory(External external)
    : pages_(external.pages),
      first_pfn_(external.first_pfn),
      base_(external.base),
      pool_(base_, first_pfn_, pages_) {}

uint8_t* FakeGuestMemory::Translate(uint64_t gpa, size_t bytes) const {
  const uint64_t first = first_gpa();
  if (gpa < first) return nullptr;
  const uint64_t offset = gpa - first;
  if (offset > size_bytes() || bytes > size_bytes() - offset) return nullptr;
  return base_ + offset;
}

}  // namespace vbus::hyperv::testing
