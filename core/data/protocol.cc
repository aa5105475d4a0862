#include "core/data/protocol.h"

#include "absl/strings/str_cat.h"

namespace vbus::protocol {

std::string VersionName(uint32_t version) {
  return absl::StrCat(version >> 16, ".", version & 0xFFFF);
}

}  // namespace vbus::protocol
