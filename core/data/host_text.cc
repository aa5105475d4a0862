#include "core/data/host_text.h"

#include "absl/strings/str_cat.h"

namespace vbus {

std::string HostText(absl::string_view text, size_t max_bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  const size_t kept = text.size() < max_bytes ? text.size() : max_bytes;
  std::string out;
  out.reserve(kept + 16);
  for (size_t i = 0; i < kept; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c <= 0x7E && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out.append({'\\', 'x', kHex[c >> 4], kHex[c & 0xF]});
    }
  }
  if (kept < text.size()) absl::StrAppend(&out, "...[+", text.size() - kept, " bytes]");
  return out;
}

}  // namespace vbus
