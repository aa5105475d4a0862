#include "mock/host/relid_allocator.h"

#include "absl/strings/str_cat.h"

namespace vbus::mock {

absl::StatusOr<uint32_t> RelidAllocator::Allocate(const absl::flat_hash_set<uint32_t>& exclude) {
  for (uint32_t relid = protocol::kMinRelid; relid <= protocol::kMaxRelid; ++relid) {
    if (!taken_[relid] && !exclude.contains(relid)) {
      taken_[relid] = true;
      return relid;
    }
  }
  return absl::ResourceExhaustedError(absl::StrCat("all relids ", protocol::kMinRelid, "..",
                                                   protocol::kMaxRelid, " are taken (",
                                                   taken_count(), " in use)"));
}

absl::Status RelidAllocator::Release(uint32_t relid) {
  if (!protocol::IsValidRelid(relid)) {
    return absl::InvalidArgumentError(absl::StrCat("relid ", relid, " is out of range"));
  }
  if (!taken_[relid]) {
    return absl::FailedPreconditionError(absl::StrCat("relid ", relid, " is not taken"));
  }
  taken_[relid] = false;
  return absl::OkStatus();
}

bool RelidAllocator::IsTaken(uint32_t relid) const {
  return protocol::IsValidRelid(relid) && taken_[relid];
}

}  // namespace vbus::mock
