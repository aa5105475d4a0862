#include "mock/host/gpadl_table.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data/protocol.h"

namespace vbus::mock {

absl::Status GpadlTable::Add(Gpadl gpadl, const MemoryLayout& layout, uint64_t page_count) {
  const std::string name = absl::StrFormat("GPADL 0x%x", gpadl.handle);
  if (gpadl.handle == 0) return absl::InvalidArgumentError("GPADL handle 0 is reserved");
  if (gpadls_.contains(gpadl.handle)) {
    return absl::AlreadyExistsError(absl::StrCat(name, " is already live"));
  }
  const uint64_t pages = gpadl.pfns.size();
  if (pages == 0) return absl::InvalidArgumentError(absl::StrCat(name, " lists no pages"));
  if (pages > protocol::kMaxGpadlPages) {  // docs/protocol.md §6: Hyper-V could not carry it
    return absl::InvalidArgumentError(
        absl::StrCat(name, " lists ", pages, " pages, more than the ", protocol::kMaxGpadlPages,
                     " one GPADL holds (its range length is 16 bits)"));
  }
  if (gpadl.byte_offset >= protocol::kPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": byte_offset ", gpadl.byte_offset, " is not inside the first page"));
  }
  const uint64_t end = uint64_t{gpadl.byte_offset} + gpadl.byte_count;
  if (gpadl.byte_count == 0 || end > pages * protocol::kPageSize ||
      end <= (pages - 1) * protocol::kPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": byte range (offset ", gpadl.byte_offset, ", count ", gpadl.byte_count,
                     ") does not cover exactly its ", pages, " pages"));
  }
  if (absl::Status s = ValidateDataPfns(gpadl.pfns, layout, page_count); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(name, ": ", s.message()));
  }
  for (size_t i = 0; i < gpadl.pfns.size(); ++i) {
    auto it = owner_of_pfn_.find(gpadl.pfns[i]);
    if (it != owner_of_pfn_.end()) {
      return absl::AlreadyExistsError(
          absl::StrFormat("%s: PFN %d (index %d) already belongs to "
                          "GPADL 0x%x",
                          name, gpadl.pfns[i], i, it->second));
    }
  }
  for (uint64_t pfn : gpadl.pfns) owner_of_pfn_[pfn] = gpadl.handle;
  gpadl.used_by = 0;
  const uint32_t handle = gpadl.handle;
  gpadls_.emplace(handle, std::move(gpadl));
  return absl::OkStatus();
}

Gpadl* GpadlTable::Find(uint32_t handle) {
  auto it = gpadls_.find(handle);
  return it == gpadls_.end() ? nullptr : &it->second;
}

const Gpadl* GpadlTable::Find(uint32_t handle) const {
  auto it = gpadls_.find(handle);
  return it == gpadls_.end() ? nullptr : &it->second;
}

absl::Status GpadlTable::Remove(uint32_t handle) {
  auto it = gpadls_.find(handle);
  if (it == gpadls_.end()) {
    return absl::NotFoundError(absl::StrFormat("GPADL 0x%x is not live", handle));
  }
  if (it->second.used_by != 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("GPADL 0x%x holds the rings of open relid %d", handle, it->second.used_by));
  }
  Erase(it);
  return absl::OkStatus();
}

size_t GpadlTable::RemoveForRelid(uint32_t relid) {
  size_t removed = 0;
  for (auto it = gpadls_.begin(); it != gpadls_.end();) {
    if (it->second.relid == relid) {
      it = Erase(it);  // btree erase invalidates other iterators: continue from its result
      ++removed;
    } else {
      ++it;
    }
  }
  return removed;
}

void GpadlTable::Clear() {
  gpadls_.clear();
  owner_of_pfn_.clear();
}

absl::btree_map<uint32_t, Gpadl>::iterator GpadlTable::Erase(
    absl::btree_map<uint32_t, Gpadl>::iterator it) {
  for (uint64_t pfn : it->second.pfns) owner_of_pfn_.erase(pfn);
  return gpadls_.erase(it);
}

}  // namespace vbus::mock
