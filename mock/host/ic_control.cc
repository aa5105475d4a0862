// MockHost's HostControl methods for the integration components: find the guest's open IC
// channel of the kind (ic_host.h) and hand it the request. None of them holds the host's lock
// while waiting for the guest.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "mock/host/ic_host.h"
#include "mock/host/ic_host_devices.h"
#include "mock/host/mock_host.h"
#include "mock/host/mock_host_internal.h"

namespace vbus::mock {
namespace {

// How long a HostControl IC call waits: the answer timeout plus the time to get its turn
// behind the channel's periodic work.
absl::Time CallDeadline(const IcHub& hub) {
  return absl::Now() + absl::Milliseconds(hub.settings().answer_timeout_ms()) + absl::Seconds(2);
}

}  // namespace

absl::StatusOr<std::shared_ptr<IcHostChannel>> MockHost::FindIc(const std::string& guest,
                                                                const std::string& kind) {
  if (!ic_hub_) {
    return absl::NotFoundError("this mock host runs its own device registry without IC emulators");
  }
  std::string id;
  {
    MutexLock lock(&mu_);
    absl::StatusOr<std::string> resolved = engine_->ResolveGuest(guest);
    if (!resolved.ok()) return resolved.status();
    id = *resolved;
  }
  std::shared_ptr<IcHostChannel> channel = ic_hub_->Find(id, kind);
  if (channel == nullptr) {
    return absl::NotFoundError(absl::StrCat("guest ", id, " has no open ", kind, " channel"));
  }
  return channel;
}

absl::StatusOr<v1::GuestShutdownResponse> MockHost::RequestShutdown(
    const v1::GuestShutdownRequest& request) {
  absl::StatusOr<std::shared_ptr<IcHostChannel>> c = FindIc(request.guest(), kShutdownKind);
  if (!c.ok()) return c.status();
  return static_cast<ShutdownHost&>(**c).Request(request, CallDeadline(*ic_hub_));
}

absl::StatusOr<v1::KvpResponse> MockHost::KvpExchange(const v1::KvpRequest& request) {
  absl::StatusOr<std::shared_ptr<IcHostChannel>> c = FindIc(request.guest(), kKvpKind);
  if (!c.ok()) return c.status();
  // ENUMERATE makes one request per item: give it room.
  const absl::Time deadline = request.op() == v1::KVP_OP_ENUMERATE
                                  ? CallDeadline(*ic_hub_) + absl::Seconds(20)
                                  : CallDeadline(*ic_hub_);
  return static_cast<KvpHost&>(**c).Exchange(request, deadline);
}

absl::StatusOr<v1::TimeSyncResponse> MockHost::TimeSync(const v1::TimeSyncRequest& request) {
  absl::StatusOr<std::shared_ptr<IcHostChannel>> c = FindIc(request.guest(), kTimeSyncKind);
  if (!c.ok()) return c.status();
  if (request.has_skew_ms()) {
    v1::IcSettings change;
    change.set_timesync_skew_ms(request.skew_ms());
    if (absl::StatusOr<v1::IcSettings> s = ic_hub_->Configure(change); !s.ok()) return s.status();
  }
  return static_cast<TimeSyncHost&>(**c).SyncNow(request.sample(), CallDeadline(*ic_hub_));
}

absl::StatusOr<v1::IcStatusResponse> MockHost::IcStatus(const v1::IcStatusRequest& request) {
  v1::IcStatusResponse response;
  if (!ic_hub_) return response;
  std::string id;
  if (!request.guest().empty()) {
    MutexLock lock(&mu_);
    absl::StatusOr<std::string> resolved = engine_->ResolveGuest(request.guest());
    if (!resolved.ok()) return resolved.status();
    id = *resolved;
  }
  for (const std::shared_ptr<IcHostChannel>& c : ic_hub_->List(id)) {
    *response.add_channels() = c->Status();
  }
  return response;
}

absl::StatusOr<v1::IcSettings> MockHost::ConfigureIc(const v1::ConfigureIcRequest& request) {
  if (!ic_hub_) {
    return absl::FailedPreconditionError(
        "this mock host runs its own device registry without IC emulators");
  }
  return ic_hub_->Configure(request.settings());
}

}  // namespace vbus::mock
