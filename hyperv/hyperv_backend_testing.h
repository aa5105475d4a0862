// Test helpers shared by the HyperVBackend tests: a listener that records every call in order
// (with the backend's interrupt count at the time, to tell interrupts apart), a fake clock
// for the post retries (no test sleeps), and the options every test starts from.
#ifndef VBUS_HYPERV_HYPERV_BACKEND_TESTING_H_
#define VBUS_HYPERV_HYPERV_BACKEND_TESTING_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "core/runtime/sync.h"
#include "hyperv/hyperv_backend.h"
#include "hyperv/tlfs.h"
#include "proto/control.pb.h"

namespace vbus::hyperv::testing {

inline absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

inline constexpr uint8_t kTestVector = 0x52;
inline constexpr uint64_t kTestGuestOsId = OpenSourceGuestOsId(kGuestOsTypeLinux, 0, 0x50F00, 1);

// One listener call.
struct ListenerCall {
  enum class Kind { kEvents, kMessage, kLost };
  Kind kind = Kind::kEvents;
  uint32_t vp = 0;             // kEvents
  v1::ControlMessage message;  // kMessage
  uint64_t interrupt = 0;      // the backend's interrupt count when the call came
  std::thread::id thread;
};

// RecordingListener
// Records every call, then runs the hook for it (outside the lock; hooks are set before
// Start and not changed after). Thread-safe.
class RecordingListener : public BackendListener {
 public:
  // The backend whose interrupt count each call records (set before Start).
  HyperVBackend* backend = nullptr;
  std::function<void(const v1::ControlMessage&)> on_message;
  std::function<void(uint32_t vp)> on_events;

  void OnHostMessage(const v1::ControlMessage& message) override {
    Record(ListenerCall::Kind::kMessage, 0, message);
    {
      MutexLock lock(&mu_);
      in_message_ = true;
    }
    if (on_message) on_message(message);
    MutexLock lock(&mu_);
    in_message_ = false;
    changed_.SignalAll();
  }
  void OnEventsPending(uint32_t vp) override {
    Record(ListenerCall::Kind::kEvents, vp, {});
    if (on_events) on_events(vp);
  }
  void OnHostLost(const absl::Status&) override { Record(ListenerCall::Kind::kLost, 0, {}); }

  // Waits until `done(calls)` holds (evaluated with the lock held) or the deadline passes.
  bool WaitFor(const std::function<bool(const std::vector<ListenerCall>&)>& done,
               absl::Time deadline = Deadline()) {
    MutexLock lock(&mu_);
    return changed_.AwaitWithDeadline(
        &mu_, deadline, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done(calls_); });
  }
  bool WaitForMessages(size_t n, absl::Time deadline = Deadline()) {
    return WaitFor([n](const std::vector<ListenerCall>& calls) { return Count(calls) >= n; },
                   deadline);
  }
  bool WaitForEvents(uint32_t vp, absl::Time deadline = Deadline()) {
    return WaitFor(
        [vp](const std::vector<ListenerCall>& calls) {
          for (const ListenerCall& c : calls) {
            if (c.kind == ListenerCall::Kind::kEvents && c.vp == vp) return true;
          }
          return false;
        },
        deadline);
  }

  std::vector<ListenerCall> calls() const {
    MutexLock lock(&mu_);
    return calls_;
  }
  std::vector<v1::ControlMessage> messages() const {
    MutexLock lock(&mu_);
    std::vector<v1::ControlMessage> out;
    for (const ListenerCall& c : calls_) {
      if (c.kind == ListenerCall::Kind::kMessage) out.push_back(c.message);
    }
    return out;
  }
  size_t message_count() const {
    MutexLock lock(&mu_);
    return Count(calls_);
  }
  // Whether an OnHostMessage call is running now.
  bool in_message() const {
    MutexLock lock(&mu_);
    return in_message_;
  }

  static size_t Count(const std::vector<ListenerCall>& calls) {
    size_t n = 0;
    for (const ListenerCall& c : calls) n += c.kind == ListenerCall::Kind::kMessage ? 1 : 0;
    return n;
  }

 private:
  void Record(ListenerCall::Kind kind, uint32_t vp, const v1::ControlMessage& message) {
    ListenerCall call;
    call.kind = kind;
    call.vp = vp;
    call.message = message;
    call.interrupt = backend != nullptr ? backend->stats().interrupts : 0;
    call.thread = std::this_thread::get_id();
    MutexLock lock(&mu_);
    calls_.push_back(std::move(call));
    changed_.SignalAll();
  }

  mutable Mutex mu_;
  CondVar changed_;
  std::vector<ListenerCall> calls_ ABSL_GUARDED_BY(mu_);
  bool in_message_ ABSL_GUARDED_BY(mu_) = false;
};

// FakeClock
// The post retries' clock and wait: a wait advances the clock and is recorded; nothing sleeps.
class FakeClock {
 public:
  absl::Time Now() const {
    MutexLock lock(&mu_);
    return now_;
  }
  void Wait(absl::Duration d) {
    MutexLock lock(&mu_);
    now_ += d;
    waits_.push_back(d);
  }
  std::vector<absl::Duration> waits() const {
    MutexLock lock(&mu_);
    return waits_;
  }

 private:
  mutable Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::FromUnixSeconds(1'000'000);
  std::vector<absl::Duration> waits_ ABSL_GUARDED_BY(mu_);
};

// The options the tests start from: two VPs, messages on VP 0, a GUEST_OS_ID (the fake's
// hypercall page starts disabled, so the backend enables it), retries on `clock`.
inline HyperVBackendOptions TestOptions(FakeClock* clock, uint32_t vp_count = 2) {
  HyperVBackendOptions options;
  options.vector = kTestVector;
  options.vp_count = vp_count;
  options.guest_os_id = kTestGuestOsId;
  options.post_retry.now = [clock] { return clock->Now(); };
  options.post_retry.wait = [clock](absl::Duration d) { clock->Wait(d); };
  options.log = [](absl::string_view) {};
  return options;
}

}  // namespace vbus::hyperv::testing

#endif  // VBUS_HYPERV_HYPERV_BACKEND_TESTING_H_
