// Helpers shared by the data-plane stress tests.
#ifndef VBUS_TEST_STRESS_STRESS_UTIL_H_
#define VBUS_TEST_STRESS_STRESS_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "core/runtime/sync.h"

namespace vbus::stress {

// Reads a positive integer from the environment, or returns `fallback`.
inline uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  const uint64_t parsed = std::strtoull(value, nullptr, 10);
  return parsed == 0 ? fallback : parsed;
}

// True when built with a sanitizer that slows execution down a lot (defaults shrink).
constexpr bool kSanitized =
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
    true;
#else
    false;
#endif
#else
    false;
#endif

// Doorbell: an edge-triggered interrupt latch between two threads. Ring() latches; Wait()
// returns once latched (and clears the latch) or at the deadline. Stands in for the SINT /
// futex doorbell a real backend uses, so a lost wake-up shows up as a missed deadline.
class Doorbell {
 public:
  void Ring() {
    MutexLock lock(&mu_);
    latched_ = true;
    cv_.Signal();
  }
  // True if rung, false at the deadline.
  bool Wait(absl::Time deadline) {
    MutexLock lock(&mu_);
    if (!cv_.AwaitWithDeadline(&mu_, deadline,
                               [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return latched_; })) {
      return false;
    }
    latched_ = false;
    return true;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  bool latched_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vbus::stress

#endif  // VBUS_TEST_STRESS_STRESS_UTIL_H_
