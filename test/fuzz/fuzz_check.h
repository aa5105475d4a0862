// FUZZ_CHECK: aborts (a crash libFuzzer reports, and a test failure in the corpus replay) when
// an invariant of the code under test does not hold.
#ifndef VBUS_TEST_FUZZ_FUZZ_CHECK_H_
#define VBUS_TEST_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "google/protobuf/stubs/logging.h"

#define FUZZ_CHECK(condition)                                                                 \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

namespace vbus::fuzz {
// Whether VBUS_FUZZ_TRACE is set: the targets then print what each step did (for reading a
// crash input with the replay driver).
inline bool TraceEnabled() {
  static const bool trace = std::getenv("VBUS_FUZZ_TRACE") != nullptr;
  return trace;
}

// Protobuf logs every string field with invalid UTF-8 it parses; arbitrary inputs make that
// most of a target's time. Silences it (once).
inline void QuietProtobufLogs() {
  static const bool quiet = [] {
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)quiet;
}
}  // namespace vbus::fuzz

// FUZZ_CHECK_OK: the same for an absl::Status that must be OK; prints the status.
#define FUZZ_CHECK_OK(expr)                                                                    \
  do {                                                                                         \
    if (const absl::Status fuzz_status_ = (expr); !fuzz_status_.ok()) {                        \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK_OK failed: %s: %s\n", __FILE__, __LINE__, #expr, \
                   fuzz_status_.ToString().c_str());                                           \
      std::abort();                                                                            \
    }                                                                                          \
  } while (0)

#endif  // VBUS_TEST_FUZZ_FUZZ_CHECK_H_
