// HostText: text that came from the other side of the bus, made safe for a log line or an
// error message.
//
// Anything the host wrote (a GUID string in an offer, an error message on a closed link, a
// status string) is untrusted: it may be megabytes long, hold control characters that forge
// log lines, or be invalid UTF-8. Every such string goes through HostText before it is logged
// or embedded in a Status message: printable ASCII passes through, everything else (and the
// backslash) becomes a \xNN escape, and the result covers at most `max_bytes` of the input,
// followed by a note of how much was cut.
//
// Example:
//   Log(absl::StrCat("offer refused: instance ", HostText(message.instance().text())));
//   // "offer refused: instance ab\x0a\xffcd...[+4194290 bytes]"
#ifndef VBUS_CORE_DATA_HOST_TEXT_H_
#define VBUS_CORE_DATA_HOST_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace vbus {

// Input bytes a log line keeps from one host-supplied string by default.
inline constexpr size_t kHostTextLimit = 160;

// HostText
// `text` with every byte outside 0x20..0x7E and every backslash escaped as \xNN, cut after
// `max_bytes` input bytes ("...[+N bytes]" follows a cut). The output is at most
// 4 * max_bytes + 32 bytes long, whatever the input.
std::string HostText(absl::string_view text, size_t max_bytes = kHostTextLimit);

}  // namespace vbus

#endif  // VBUS_CORE_DATA_HOST_TEXT_H_
