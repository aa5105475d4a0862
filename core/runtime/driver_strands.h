// DriverStrands: where a bus runs its drivers — one strand per device, the devices side by side.
//
// Work posted under one key (a device) runs in order, one item at a time; work under different
// keys runs side by side on a pool of worker threads. A burst of short items is run by the
// workers already awake (one wake-up per burst, not per item); when ready work waits behind
// workers none of which finished an item for a millisecond, it gets workers of its own. So a
// driver may block in Probe or Remove (an Open waiting for a silent host) and hold up another
// device by about a millisecond, not by its own wait. A Barrier runs its callback once every
// strand has finished what was queued before it, which is how the bus waits for "every driver
// probed" without serialising the probes.
//
// Example:
//   DriverStrands strands("vbus-driver");
//   strands.Post(offer_id, [&] { driver->Probe(channel); });
//   strands.Barrier([&] { connect_done.Notify(); });  // runs on the application strand
//   ...
//   strands.Close();
//   absl::Status joined = strands.Join(deadline);
//
// Thread-safe. Threads that are still busy at Join's deadline are detached; they keep only the
// strands' own shared state alive, so work items must keep alive what they use themselves.
#ifndef VBUS_CORE_RUNTIME_DRIVER_STRANDS_H_
#define VBUS_CORE_RUNTIME_DRIVER_STRANDS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace vbus {

class DriverStrands {
 public:
  // The strand of application callbacks (on_host_lost, barrier callbacks); device keys are
  // offer ids, which are never 0.
  static constexpr uint64_t kApplicationKey = 0;

  // `thread_name` names the threads (for debuggers and profilers; at most 15 characters).
  explicit DriverStrands(std::string thread_name);
  // Closes and joins (waiting as long as work runs); call Join with a deadline first.
  ~DriverStrands();
  DriverStrands(const DriverStrands&) = delete;
  DriverStrands& operator=(const DriverStrands&) = delete;

  // Post
  // Queues `work` on `key`'s strand. False (dropped) once closed.
  bool Post(uint64_t key, std::function<void()> work);

  // Barrier
  // Runs `done` on the application strand once every strand has finished the work queued
  // before this call. False (dropped) once closed.
  bool Barrier(std::function<void()> done);

  // Close
  // No more posts or barriers; what is queued still runs.
  void Close();

  // Join
  // Waits until every strand ran dry and its thread ended (the calling thread, if it is a
  // strand thread, is not waited for). DeadlineExceeded naming how many strands were still
  // busy at `deadline`; their threads are detached and finish on their own.
  absl::Status Join(absl::Time deadline);

  // Whether the calling thread is running one of these strands' work.
  bool OnStrandThread() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace vbus

#endif  // VBUS_CORE_RUNTIME_DRIVER_STRANDS_H_
