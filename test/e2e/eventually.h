// Eventually (testonly): a bounded wait for a condition on remote state.
#ifndef VBUS_TEST_E2E_EVENTUALLY_H_
#define VBUS_TEST_E2E_EVENTUALLY_H_

#include <algorithm>
#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/runtime/sync.h"

namespace vbus::e2e {

// Waits for a condition on remote state (the host over RPC, or a bus snapshot) until it holds
// or the deadline passes. Nothing signals such state, so it is re-checked every 2 ms (a
// bounded condition wait, not a sleep to let things settle: the result is the condition).
inline bool Eventually(const std::function<bool()>& condition,
                       absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time deadline = absl::Now() + timeout;
  Mutex mu;
  CondVar never_signalled;
  for (;;) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return false;
    MutexLock lock(&mu);
    never_signalled.WaitWithDeadline(&mu, std::min(deadline, absl::Now() + absl::Milliseconds(2)));
  }
}

}  // namespace vbus::e2e

#endif  // VBUS_TEST_E2E_EVENTUALLY_H_
