// Test helper: IC messages written byte by byte at the offsets docs/integration_components.md §1
// documents, independently of the encoder in ic_wire.h.
#ifndef VBUS_DRIVERS_IC_IC_TEST_BYTES_H_
#define VBUS_DRIVERS_IC_IC_TEST_BYTES_H_

#include <cstdint>
#include <vector>

namespace vbus::ic::testing {

inline void Put(std::vector<uint8_t>& b, size_t at, uint64_t v, int bytes) {
  if (b.size() < at + bytes) b.resize(at + bytes, 0);
  for (int i = 0; i < bytes; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint64_t Get(const std::vector<uint8_t>& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | b.at(at + i);
  return v;
}

// A host request: pipe header (DATA, size), icmsg header with the given fields, flags 3,
// `body_size` zero bytes of body (the caller fills them at 28 + offset).
inline std::vector<uint8_t> HostRequest(uint16_t type, uint16_t fw_major, uint16_t fw_minor,
                                        uint16_t msg_major, uint16_t msg_minor, size_t body_size) {
  std::vector<uint8_t> b(28 + body_size, 0);
  Put(b, 0, 1, 4);               // pipe flags: DATA
  Put(b, 4, 20 + body_size, 4);  // pipe msgsize
  Put(b, 8, fw_major, 2);        // icverframe
  Put(b, 10, fw_minor, 2);
  Put(b, 12, type, 2);       // icmsgtype
  Put(b, 14, msg_major, 2);  // icvermsg
  Put(b, 16, msg_minor, 2);
  Put(b, 18, body_size, 2);  // icmsgsize
  Put(b, 20, 0, 4);          // status
  b[24] = 0;                 // ictransaction_id
  b[25] = 3;                 // icflags: TRANSACTION | REQUEST
  return b;
}

// A NEGOTIATE request offering `framework` then `message` versions (pairs major, minor).
inline std::vector<uint8_t> Negotiate(const std::vector<std::pair<uint16_t, uint16_t>>& framework,
                                      const std::vector<std::pair<uint16_t, uint16_t>>& message) {
  std::vector<uint8_t> b = HostRequest(0, 0, 0, 0, 0, 8 + 4 * (framework.size() + message.size()));
  Put(b, 28, framework.size(), 2);
  Put(b, 30, message.size(), 2);
  size_t at = 36;
  for (const auto& [major, minor] : framework) {
    Put(b, at, major, 2);
    Put(b, at + 2, minor, 2);
    at += 4;
  }
  for (const auto& [major, minor] : message) {
    Put(b, at, major, 2);
    Put(b, at + 2, minor, 2);
    at += 4;
  }
  return b;
}

}  // namespace vbus::ic::testing

#endif  // VBUS_DRIVERS_IC_IC_TEST_BYTES_H_
