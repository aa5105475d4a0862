// BusRuntime: the threads and plumbing behind ChannelBus (internal to core). A ChannelBus is a
// handle to one; the runtime is shared so that a bus destroyed from one of its own threads can
// finish its teardown on a background thread (ChannelBus::~ChannelBus).
//
// It wires the pieces together:
//   - the backend's listener: host messages and link loss go to the control thread, event
//     raises to the EventDispatch of their virtual processor;
//   - the executor's runner (core/runtime/serial_runner.h): every input and the executor's
//     timers, one at a time — a host message on the backend's delivery thread when the executor is
//     idle (no hand-off for a reply), everything else on the runner's own "vbus-control" thread;
//   - the ChannelLink every Channel uses to reach the executor;
//   - the executor's listener: offers go to their drivers on DriverStrands, removed offers are
//     released once their drivers let go.
#ifndef VBUS_CORE_RUNTIME_BUS_RUNTIME_H_
#define VBUS_CORE_RUNTIME_BUS_RUNTIME_H_

#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "core/data/channel_table.h"
#include "core/runtime/bus_executor.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/driver.h"
#include "core/runtime/driver_strands.h"
#include "core/runtime/event_dispatch.h"
#include "core/runtime/serial_runner.h"
#include "core/runtime/sync.h"

namespace vbus::internal {

class BusRuntime final : public std::enable_shared_from_this<BusRuntime>,
                         private BackendListener,
                         private ChannelLink,
                         private ExecutorListener {
 public:
  // Starts the backend and the control thread (see ChannelBus::Create).
  static absl::StatusOr<std::shared_ptr<BusRuntime>> Create(Backend* backend,
                                                            ChannelBusOptions options);
  ~BusRuntime() override;
  BusRuntime(const BusRuntime&) = delete;
  BusRuntime& operator=(const BusRuntime&) = delete;

  // ChannelBus's calls.
  absl::Status Connect(absl::Time deadline);
  absl::Status BindDrivers(absl::Time deadline);
  absl::Status Shutdown(absl::Time deadline);
  absl::Status ForceUnload(absl::Time deadline);
  // bus_runtime_suspend.cc
  absl::Status Suspend(absl::Time deadline);
  absl::Status Resume(absl::Time deadline);
  std::vector<DeviceEntry> Devices() const;
  BusStats stats() const;
  const BusExecutor& executor() const { return *executor_; }
  const ChannelBusOptions& options() const { return options_; }

  // Whether the caller is on one of the bus's own threads: the control thread, a driver
  // strand, or inside a dispatch callback.
  bool OnOwnThread() const;

 private:
  BusRuntime(Backend* backend, ChannelBusOptions options);
  absl::Status Start();

  // BackendListener.
  void OnHostMessage(const v1::ControlMessage& message) override;
  void OnEventsPending(uint32_t vp) override;
  void OnHostLost(const absl::Status& status) override;
  // ChannelLink.
  bool Post(std::function<void(BusExecutor&)> work) override;
  absl::Status CheckBlockingAllowed(absl::string_view what) const override;
  absl::Duration call_grace() const override { return options_.call_grace; }
  void Log(absl::string_view line) const override;
  // ExecutorListener.
  absl::Time Now() override;
  void OfferAdded(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) override;
  void OfferRemoved(const OfferInfo& offer, const std::shared_ptr<Channel>& channel,
                    const absl::Status& reason) override;
  void OfferResumed(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) override;
  void Log(absl::string_view line) override { LogLine(line); }

  void LogLine(absl::string_view line) const;
  // Queues work for the executor (run by the runner's thread, or by the one running now).
  bool PostControl(std::function<void()> work) {
    return runner_.Post(std::move(work), /*may_run_here=*/false);
  }
  // Whether the calling thread is running executor work now (a completion callback).
  bool InExecutor() const { return runner_.InRunner(); }
  // Waits until the executor has done everything queued before, and the driver strands
  // everything that work queued, and the executor the releases those queued.
  absl::Status Quiesce(absl::Time deadline);
  // Closes the runner and waits for it to go idle and its thread to end. On DeadlineExceeded
  // (a completion callback blocks it) a background thread finishes the job later, counted as
  // a deferred teardown.
  absl::Status JoinRunner(absl::Time deadline);

  // Driver strands.
  void AddDevice(const OfferInfo& offer, const std::shared_ptr<Channel>& channel);
  void ProbeDevice(const OfferInfo& offer, const DriverSpec* spec,
                   const std::shared_ptr<Channel>& channel);
  void RemoveDevice(const OfferInfo& offer, const std::shared_ptr<Channel>& channel,
                    const absl::Status& reason);

  // Suspend and resume (bus_runtime_suspend.cc).
  // FailedPrecondition where Suspend/Resume may not run (own thread, strand, host lost).
  absl::Status CheckLifecycleCall(absl::string_view what) const;
  // Runs `work` on the strand of each of `offers` still active (not removed), all devices side
  // by side, and waits until every one ran or the deadline. Returns each failure by offer; a
  // deadline is reported as DeadlineExceeded under an invalid OfferId.
  using DeviceWork = std::function<absl::Status(Channel& channel, Driver* driver)>;
  std::vector<std::pair<OfferId, absl::Status>> RunOnDevices(const std::vector<OfferId>& offers,
                                                             DeviceWork work, absl::Time deadline);
  // The primaries with a bound driver.
  std::vector<OfferId> BoundPrimaries() const;
  // Drivers' Resume (or Reopen of a driverless channel open at the suspend) for `offers`;
  // the first failure, after logging each.
  absl::Status ResumeDevices(const std::vector<OfferId>& offers, absl::Time deadline);

  Backend* const backend_;
  const ChannelBusOptions options_;
  ChannelTable table_;
  std::vector<std::unique_ptr<EventDispatch>> dispatch_;  // one per VP; fixed after Start
  std::atomic<uint64_t> bad_vp_events_{0};                // raises for a VP out of range
  std::unique_ptr<BusExecutor> executor_;
  bool started_ = false;

  SerialRunner runner_;
  DriverStrands strands_{"vbus-driver"};

  DriverRegistry no_drivers_;
  mutable Mutex devices_mu_;
  DeviceList devices_ ABSL_GUARDED_BY(devices_mu_);
  // Sub-channels announced to their primary's driver (SubChannelOffered), until removed.
  absl::flat_hash_set<OfferId> announced_sub_channels_ ABSL_GUARDED_BY(devices_mu_);

  // Resume: primaries parked by the suspend that the host has not offered again yet.
  Mutex resume_mu_;
  CondVar resume_cv_;
  absl::flat_hash_set<OfferId> awaiting_resume_ ABSL_GUARDED_BY(resume_mu_);

  // Serialises Shutdown, Suspend and Resume.
  Mutex shutdown_mu_;
  std::atomic<bool> shut_down_{false};
  std::atomic<bool> host_lost_{false};
  std::atomic<uint64_t> probe_failures_{0};
};

// Runs `runtime`'s shutdown on a background thread (a bus destroyed from its own thread).
void DeferTeardown(std::shared_ptr<BusRuntime> runtime);
// Waits until every deferred teardown (and every control thread left running past its
// shutdown) has ended.
absl::Status WaitForDeferredTeardowns(absl::Time deadline);

}  // namespace vbus::internal

#endif  // VBUS_CORE_RUNTIME_BUS_RUNTIME_H_
