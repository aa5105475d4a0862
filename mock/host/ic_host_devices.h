// The four IC emulators of the mock host (docs/integration_components.md §3-§25), each an
// IcHostChannel (mock/host/ic_host.h) with its own periodic work and HostControl entry point:
//   HeartbeatHost  beats every heartbeat_interval_ms with sequence n and expects n + 1 back;
//                  a beat not answered (in time, or with the wrong sequence) is missed and
//                  published as HEARTBEAT_MISSED;
//   ShutdownHost   sends one shutdown request at a time (HostControl.RequestShutdown) and
//                  reports whether the guest accepted;
//   TimeSyncHost   sends a SYNC right after the negotiation, then a SAMPLE every
//                  timesync_sample_interval_ms, from the host clock plus timesync_skew_ms;
//   KvpHost        GET / SET / DELETE / ENUMERATE on the guest's pools (HostControl.KvpExchange).
#ifndef VBUS_MOCK_HOST_IC_HOST_DEVICES_H_
#define VBUS_MOCK_HOST_IC_HOST_DEVICES_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/runtime/sync.h"
#include "mock/host/ic_host.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock {

inline constexpr char kHeartbeatKind[] = "heartbeat";
inline constexpr char kShutdownKind[] = "shutdown";
inline constexpr char kTimeSyncKind[] = "timesync";
inline constexpr char kKvpKind[] = "kvp";

class HeartbeatHost final : public IcHostChannel {
 public:
  explicit HeartbeatHost(IcHub* hub);

 private:
  void OnReady() override { next_ = absl::Now(); }
  absl::Time NextTick() const override { return next_; }
  void Tick() override;
  void FillStatus(v1::IcChannelStatus& status) const override;

  // Worker only.
  absl::Time next_ = absl::InfiniteFuture();
  uint64_t sequence_ = 0;
  // Read by Status from any thread.
  mutable Mutex mu_;
  uint64_t beats_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t missed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_beat_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

class ShutdownHost final : public IcHostChannel {
 public:
  explicit ShutdownHost(IcHub* hub);
  // Sends the request and waits for the answer until `deadline`. FailedPrecondition while
  // another request is in flight; the rest as IcHostChannel::Call.
  absl::StatusOr<v1::GuestShutdownResponse> Request(const v1::GuestShutdownRequest& request,
                                                    absl::Time deadline);

 private:
  Mutex mu_;
  bool in_flight_ ABSL_GUARDED_BY(mu_) = false;
};

class TimeSyncHost final : public IcHostChannel {
 public:
  explicit TimeSyncHost(IcHub* hub);
  // Sends a SYNC (or a SAMPLE) now, from the worker, and waits for the answer.
  absl::StatusOr<v1::TimeSyncResponse> SyncNow(bool sample, absl::Time deadline);

 private:
  void OnReady() override;
  absl::Time NextTick() const override { return next_sample_; }
  void Tick() override;
  // Sends one message (worker only).
  absl::StatusOr<v1::TimeSyncResponse> Send(bool sample);
  void ScheduleSample();

  absl::Time next_sample_ = absl::InfiniteFuture();  // worker only
};

class KvpHost final : public IcHostChannel {
 public:
  explicit KvpHost(IcHub* hub);
  // One operation (ENUMERATE: one request per index until the guest stops) with `deadline`
  // for the whole. InvalidArgument for an operation, pool or item that cannot be encoded.
  absl::StatusOr<v1::KvpResponse> Exchange(const v1::KvpRequest& request, absl::Time deadline);
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_IC_HOST_DEVICES_H_
