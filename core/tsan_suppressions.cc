// ThreadSanitizer support for vbus's runtime tests (linked into those tests only).
//
// Debian ships Abseil and gRPC prebuilt without TSan instrumentation, so TSan sees neither
// their atomics nor their mutexes. Two consequences, handled here:
//
// 1. absl::Status copies share a heap StatusRep through an atomic reference count. Taking a
//    reference is inline (instrumented), but dropping one — the acquire/release decrement and
//    the `delete` of the last reference — is Status::UnrefNonInlined inside libabsl_status.so.
//    TSan sees the delete (its interceptor) but not the decrement that orders it after the
//    other threads' uses, and reports every Status shared between two threads as a race on
//    the free. Rather than suppress those reports (which would also hide real use-after-free
//    races), this file defines UnrefNonInlined again, with the library's exact semantics, in
//    instrumented code: the test executable's definition interposes on the library's, so TSan
//    sees the decrement. Only in TSan builds.
//
// 2. gRPC threads synchronise with absl::Mutex, invisible to TSan: races reported between two
//    gRPC-internal threads inside Abseil's synchronisation code are suppressed by name (as in
//    mock/testing/tsan_suppressions.cc, which this replaces for tests that link this one).
//
// vbus's own code locks with vbus::Mutex (core/sync.h, on std::mutex, which TSan intercepts).
#include <atomic>
#include <cstdint>

#include "absl/status/status.h"

#if defined(__SANITIZE_THREAD__)
namespace absl {
ABSL_NAMESPACE_BEGIN

// Same as absl/status/status.cc (20220623): drop one reference, delete on the last.
void Status::UnrefNonInlined(uintptr_t rep) {
  status_internal::StatusRep* r = RepToPointer(rep);
  // The last reference needs no decrement: no other thread may still use it.
  if (r->ref.load(std::memory_order_acquire) == 1 ||
      r->ref.fetch_sub(1, std::memory_order_acq_rel) - 1 == 0) {
    delete r;
  }
}

ABSL_NAMESPACE_END
}  // namespace absl
#endif

extern "C" const char* __tsan_default_suppressions() {
  return "race:absl::*::synchronization_internal::*\n"
         "race:absl::*::Mutex::*\n"
         "race:absl::*::CondVar::*\n";
}
