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
// positives; vbus's runtime locks with vbus::Mutex (core/runtime/sync.h, on std::mutex, which TSan
// intercepts).
#include <atomic>
#include <cstdint>

#include "absl/status/status.h"

#if defined(__SANITIZE_THREAD__)
// The definition below copies this Abseil release's Status::UnrefNonInlined; another release
// may implement it differently. Re-check absl/status/status.cc before changing the number.
static_assert(ABSL_LTS_RELEASE_VERSION == 20220623,
              "tsan_absl_status.cc mirrors Abseil 20220623's Status::UnrefNonInlined");
namespace absl {
ABSL_NAMESPACE_BEGIN

// Same as absl/status/status.cc (20220623): drop one reference, delete on the last.
void Status::UnrefNonInlined(uintptr_t rep) {
  status_internal::StatusRep* r = RepToPointer(rep);
  // The last reference needs no decrement: no other thread may still use it.
  // [TS-U1] acquire / [TS-U2] acq_rel: as Abseil's own, each drop of a reference releases this
  // thread's uses and the final one acquires every other thread's, before the delete.
  if (r->ref.load(std::memory_order_acquire) == 1 ||
      r->ref.fetch_sub(1, std::memory_order_acq_rel) - 1 == 0) {
    delete r;
  }
}

ABSL_NAMESPACE_END
}  // namespace absl
#endif
