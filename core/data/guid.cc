#include "core/data/guid.h"

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vbus {

absl::StatusOr<Guid> Guid::Parse(absl::string_view text) {
  if (text.size() != kTextLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("GUID \"", absl::CHexEscape(text), "\": expected ", kTextLength,
                     " characters (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), got ", text.size()));
  }
  Bytes bytes{};
  size_t out = 0;
  for (size_t i = 0; i < kTextLength;) {
    if (IsDashPosition(i)) {
      if (text[i] != '-') {
        return absl::InvalidArgumentError(
            absl::StrCat("GUID \"", absl::CHexEscape(text), "\": expected '-' at position ", i));
      }
      ++i;
      continue;
    }
    for (size_t j = i; j < i + 2; ++j) {
      if (HexValue(text[j]) < 0) {
        return absl::InvalidArgumentError(absl::StrCat("GUID \"", absl::CHexEscape(text),
                                                       "\": expected a hex digit at position ", j));
      }
    }
    bytes[out++] = static_cast<uint8_t>(HexValue(text[i]) << 4 | HexValue(text[i + 1]));
    i += 2;
  }
  return Guid(bytes);
}

namespace {
// Text-order byte index for each wire-order byte: the first three fields are byte-reversed.
constexpr int kWireToText[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
}  // namespace

Guid Guid::FromWire(const uint8_t wire[16]) {
  Bytes bytes{};
  for (int i = 0; i < 16; ++i) bytes[kWireToText[i]] = wire[i];
  return Guid(bytes);
}

void Guid::ToWire(uint8_t wire[16]) const {
  for (int i = 0; i < 16; ++i) wire[i] = bytes_[kWireToText[i]];
}

std::string Guid::ToString() const {
  const Bytes& b = bytes_;
  return absl::StrFormat("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                         b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                         b[12], b[13], b[14], b[15]);
}

}  // namespace vbus
