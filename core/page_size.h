// kPageSize: the one page size of every vbus protocol.
//
// GPADLs, rings, PFNs and the mock's shared guest memory all count 4096-byte pages. Both the
// ring buffer (core/ring_buffer.h) and the backends' Pages (backends/pages.h) need the constant;
// defining it here once lets a translation unit include both (two `inline constexpr`
// definitions of one name in one translation unit do not compile).
#ifndef VBUS_CORE_PAGE_SIZE_H_
#define VBUS_CORE_PAGE_SIZE_H_

#include <cstddef>

namespace vbus {

inline constexpr size_t kPageSize = 4096;

}  // namespace vbus

#endif  // VBUS_CORE_PAGE_SIZE_H_
