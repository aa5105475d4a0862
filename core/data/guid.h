// Guid: a 128-bit identifier (device classes, device instances) as a value type.
//
// vbus names GUIDs by their canonical text, "f8615163-df3e-46c5-913f-f2d2f965ed0e". Internally
// a Guid holds the 16 bytes in text order (the order the hex digits are written). Two other
// forms exist and this header converts to both:
// - Hyper-V wire order (`FromWire` / `ToWire`): the first three fields (4, 2 and 2 bytes) are
//   little-endian, the last 8 bytes as written. f8615163-df3e-46c5-… is sent as
//   63 51 61 f8 3e df c5 46 ….
// - The protocol's `vbus.v1.Guid` message: the canonical text (core/data/guid_proto.h).
//
// Example:
//   absl::StatusOr<Guid> g = Guid::Parse("57164f39-9115-4e78-ab55-382f3bd5422d");
//   if (!g.ok()) return g.status();
//   std::string s = g->ToString();  // lowercase canonical form
//
// Compile-time constants: `constexpr Guid kX = Guid::Literal("…");` fails to compile if the
// literal is malformed.
#ifndef VBUS_CORE_DATA_GUID_H_
#define VBUS_CORE_DATA_GUID_H_

#include <array>
#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vbus {

class Guid {
 public:
  static constexpr size_t kTextLength = 36;
  using Bytes = std::array<uint8_t, 16>;

  // The nil GUID (all zero).
  constexpr Guid() = default;
  // From 16 bytes in text order.
  constexpr explicit Guid(const Bytes& bytes) : bytes_(bytes) {}

  // Parse
  // Parses the canonical 36-character form, hex digits in either case. Anything else (wrong
  // length, braces, misplaced or missing dashes, non-hex characters) is InvalidArgument with
  // the offending position.
  static absl::StatusOr<Guid> Parse(absl::string_view text);

  // Literal
  // The compile-time form of Parse for constants; a malformed literal does not compile.
  static consteval Guid Literal(const char (&text)[kTextLength + 1]) {
    Bytes bytes{};
    size_t out = 0;
    for (size_t i = 0; i < kTextLength;) {
      if (IsDashPosition(i)) {
        if (text[i] != '-') throw "Guid::Literal: expected '-'";  // compile-time error
        ++i;
        continue;
      }
      const int hi = HexValue(text[i]);
      const int lo = HexValue(text[i + 1]);
      if (hi < 0 || lo < 0) throw "Guid::Literal: expected a hex digit";
      bytes[out++] = static_cast<uint8_t>(hi << 4 | lo);
      i += 2;
    }
    return Guid(bytes);
  }

  // FromWire / ToWire
  // Converts from / to the 16-byte Hyper-V wire order (first three fields little-endian).
  static Guid FromWire(const uint8_t wire[16]);
  void ToWire(uint8_t wire[16]) const;

  // ToString
  // The canonical lowercase form, 36 characters.
  std::string ToString() const;

  constexpr bool IsNil() const {
    for (uint8_t b : bytes_) {
      if (b != 0) return false;
    }
    return true;
  }
  constexpr const Bytes& bytes() const { return bytes_; }

  friend constexpr bool operator==(const Guid& a, const Guid& b) = default;
  friend constexpr auto operator<=>(const Guid& a, const Guid& b) = default;

  template <typename H>
  friend H AbslHashValue(H h, const Guid& g) {
    return H::combine(std::move(h), g.bytes_);
  }

  friend std::ostream& operator<<(std::ostream& os, const Guid& g) { return os << g.ToString(); }

 private:
  static constexpr bool IsDashPosition(size_t i) { return i == 8 || i == 13 || i == 18 || i == 23; }
  static constexpr int HexValue(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  Bytes bytes_{};
};

}  // namespace vbus

#endif  // VBUS_CORE_DATA_GUID_H_
