// GpadlTable: one guest's live GPADLs as the host records them.
//
// A GPADL (guest physical address descriptor list) is guest memory the guest lets the host
// map: a handle the guest chose, the channel it belongs to, and a page-frame list. The table
// checks each new GPADL against the guest's memory (every PFN a data page inside the file, no
// PFN twice) and against every live GPADL (no page shared between two), so a hostile or buggy
// guest can neither point the host outside its memory nor make two rings alias. A GPADL that
// holds an open channel's rings is marked in use and cannot be torn down.
//
// Example:
//   GpadlTable table;
//   absl::Status s = table.Add({.handle = protocol::kFirstGpadlHandle, .relid = 3,
//                               .byte_count = 8 * protocol::kPageSize,
//                               .pfns = {...}}, layout, page_count);
//   if (!s.ok()) answer GpadlCreated with a non-zero status;
//
// Thread-compatible (owned by the engine's per-guest state). Pure: no mapping, no I/O.
#ifndef VBUS_MOCK_HOST_GPADL_TABLE_H_
#define VBUS_MOCK_HOST_GPADL_TABLE_H_

#include <cstdint>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "core/data/protocol.h"
#include "mock/guest_memory.h"

namespace vbus::mock {

struct Gpadl {
  uint32_t handle = 0;
  uint32_t relid = 0;
  uint32_t byte_count = 0;
  uint32_t byte_offset = 0;
  std::vector<uint64_t> pfns;
  // The relid of the channel whose rings live in this GPADL (open or opening), else 0.
  uint32_t used_by = 0;
};

class GpadlTable {
 public:
  // Add
  // Records `gpadl` (used_by is reset to 0). Fails, leaving the table unchanged, with:
  // InvalidArgument for handle 0, an empty PFN list, more than protocol::kMaxGpadlPages (8190)
  // PFNs, byte_offset >= 4096, a byte range that does not cover exactly the listed pages, or a
  // repeated PFN; AlreadyExists for a live
  // handle or a PFN that another live GPADL holds (naming both handles); OutOfRange for a PFN
  // outside the data pages of a file of `page_count` pages laid out as `layout`.
  absl::Status Add(Gpadl gpadl, const MemoryLayout& layout, uint64_t page_count);

  // Find: the live GPADL with this handle, or nullptr.
  Gpadl* Find(uint32_t handle);
  const Gpadl* Find(uint32_t handle) const;

  // Remove
  // Forgets the GPADL and frees its pages. NotFound for an unknown handle; FailedPrecondition
  // while it is in use by a channel.
  absl::Status Remove(uint32_t handle);

  // RemoveForRelid: forgets every GPADL of channel `relid`, in use or not. Returns how many.
  size_t RemoveForRelid(uint32_t relid);

  // Clear: forgets everything (guest unload or detach).
  void Clear();

  size_t size() const { return gpadls_.size(); }
  // Pages held by live GPADLs.
  size_t page_count() const { return owner_of_pfn_.size(); }
  // Live GPADLs by handle, in handle order (deterministic iteration).
  const absl::btree_map<uint32_t, Gpadl>& all() const { return gpadls_; }

 private:
  // Forgets one GPADL; returns the iterator after it.
  absl::btree_map<uint32_t, Gpadl>::iterator Erase(absl::btree_map<uint32_t, Gpadl>::iterator it);

  absl::btree_map<uint32_t, Gpadl> gpadls_;
  absl::flat_hash_map<uint64_t, uint32_t> owner_of_pfn_;  // PFN → handle
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_GPADL_TABLE_H_
