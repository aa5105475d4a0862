// RecordingListener: a BackendListener for backend tests that records what the backend
// delivers (host messages, event notifications, lost-link reports) and lets a test wait for a
// condition on them with a deadline.
//
// Example:
//   RecordingListener recorder;
//   ASSERT_TRUE(backend->Start(&recorder).ok());
//   ASSERT_TRUE(recorder.WaitFor([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(recorder.mu_) {
//     return recorder.messages_.size() == 2;
//   }));
//
// Thread-safe: the backend's threads call the listener methods; conditions passed to WaitFor
// run with mu_ held and may read the fields directly (annotated as requiring mu_, so clang
// checks that they read nothing else unlocked).
#ifndef VBUS_MOCK_TESTING_RECORDING_LISTENER_H_
#define VBUS_MOCK_TESTING_RECORDING_LISTENER_H_

#include <cstddef>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "core/runtime/sync.h"
#include "proto/control.pb.h"

namespace vbus::mock {

class RecordingListener : public BackendListener {
 public:
  // How long WaitFor waits before it gives up.
  static constexpr absl::Duration kWait = absl::Seconds(20);

  void OnHostMessage(const v1::ControlMessage& message) override {
    MutexLock lock(&mu_);
    messages_.push_back(message);
    cv_.SignalAll();
  }
  void OnEventsPending(uint32_t /*vp*/) override {
    MutexLock lock(&mu_);
    ++events_;
    cv_.SignalAll();
  }
  void OnHostLost(const absl::Status& status) override {
    MutexLock lock(&mu_);
    lost_.push_back(status);
    cv_.SignalAll();
  }

  // Waits until pred() (called with mu_ held) holds, at most `wait`; returns its last value.
  bool WaitFor(const std::function<bool()>& pred, absl::Duration wait = kWait) {
    MutexLock lock(&mu_);
    return cv_.AwaitWithDeadline(&mu_, absl::Now() + wait, pred);
  }
  std::vector<v1::ControlMessage> messages() {
    MutexLock lock(&mu_);
    return messages_;
  }
  size_t message_count() {
    MutexLock lock(&mu_);
    return messages_.size();
  }
  int events() {
    MutexLock lock(&mu_);
    return events_;
  }
  std::vector<absl::Status> lost() {
    MutexLock lock(&mu_);
    return lost_;
  }

  // What was recorded (WaitFor's conditions read it directly).
  Mutex mu_;
  CondVar cv_;
  std::vector<v1::ControlMessage> messages_ ABSL_GUARDED_BY(mu_);
  int events_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<absl::Status> lost_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_TESTING_RECORDING_LISTENER_H_
