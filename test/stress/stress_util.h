// Helpers shared by the data-plane stress tests.
#ifndef VBUS_TEST_STRESS_STRESS_UTIL_H_
#define VBUS_TEST_STRESS_STRESS_UTIL_H_

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>

#include "absl/time/time.h"

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
//
// Built on std::mutex / std::condition_variable rather than absl::Mutex on purpose: Debian's
// libabsl is not built with TSan, so TSan cannot see absl::Mutex's happens-before edges and
// reports false races on the data it guards; pthread mutexes are intercepted by TSan.
class Doorbell {
 public:
  void Ring() {
    std::lock_guard<std::mutex> lock(mu_);
    latched_ = true;
    cv_.notify_one();
  }
  // True if rung, false at the deadline.
  bool Wait(absl::Time deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_until(lock, absl::ToChronoTime(deadline), [this] { return latched_; })) {
      return false;
    }
    latched_ = false;
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool latched_ = false;  // guarded by mu_
};

}  // namespace vbus::stress

#endif  // VBUS_TEST_STRESS_STRESS_UTIL_H_
