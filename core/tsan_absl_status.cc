// ThreadSanitizer support for tests that pass absl::Status between threads (linked into those
// tests only; it changes nothing outside TSan builds).
//
// Debian ships Abseil prebuilt without TSan instrumentation. absl::Status copies share a heap
// StatusRep through an atomic reference count: taking a reference is inline (instrumented),
// but dropping one — the acquire/release decrement and the `delete` of the last reference —
// is Status::UnrefNonInlined inside libabsl_status.so. TSan sees the delete (through its
// interceptor) but not the decrement that orders it after the other threads' uses, so it
// reports every Status shared between two threads as a race on the free.
//
// Rather than suppress those reports (which would also hide real use-after-free races), this
// file defines UnrefNonInlined again, with the library's exact semantics, in instrumented
// code: the test executable's definition interposes on the library's, so TSan sees the
// decrement and the happens-before it creates.
//
// Tests that also run gRPC link //mock/testing:tsan_suppressions for gRPC's own false
// positives; vbus's runtime locks with vbus::Mutex (core/sync.h, on std::mutex, which TSan
// intercepts).
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
