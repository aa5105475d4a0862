// ChannelBus: the public handle over the bus runtime (core/runtime/bus_runtime.h).
#include "core/runtime/channel_bus.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/runtime/bus_runtime.h"

namespace vbus {

ChannelBus::ChannelBus(std::shared_ptr<internal::BusRuntime> runtime)
    : runtime_(std::move(runtime)) {}

absl::StatusOr<std::unique_ptr<ChannelBus>> ChannelBus::Create(Backend* backend,
                                                               ChannelBusOptions options) {
  if (backend == nullptr) return absl::InvalidArgumentError("ChannelBus needs a backend");
  if (options.max_version < protocol::kOldestVersion) {
    return absl::InvalidArgumentError(absl::StrCat("max_version ",
                                                   protocol::VersionName(options.max_version),
                                                   " is older than the oldest supported, 2.4"));
  }
  if (options.isolated && options.max_version < protocol::kOldestIsolatedVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an isolated guest needs version ", protocol::VersionName(protocol::kOldestIsolatedVersion),
        " or newer; max_version is ", protocol::VersionName(options.max_version)));
  }
  absl::StatusOr<std::shared_ptr<internal::BusRuntime>> runtime =
      internal::BusRuntime::Create(backend, std::move(options));
  if (!runtime.ok()) return runtime.status();
  return std::unique_ptr<ChannelBus>(new ChannelBus(*std::move(runtime)));
}

ChannelBus::~ChannelBus() {
  if (runtime_ == nullptr) return;
  if (runtime_->OnOwnThread()) {
    // Shutting down here would wait for this very thread: finish it in the background.
    internal::DeferTeardown(std::move(runtime_));
    return;
  }
  runtime_->Shutdown(absl::Now() + runtime_->options().shutdown_timeout).IgnoreError();
}

absl::Status ChannelBus::Connect(absl::Time deadline) { return runtime_->Connect(deadline); }

std::vector<OfferInfo> ChannelBus::Offers() const { return runtime_->executor().Offers(); }

std::shared_ptr<Channel> ChannelBus::GetChannel(OfferId offer) const {
  return runtime_->executor().GetChannel(offer);
}

std::shared_ptr<Channel> ChannelBus::FindChannel(uint32_t relid) const {
  return runtime_->executor().FindChannel(relid);
}

std::shared_ptr<Channel> ChannelBus::FindChannel(const Guid& instance,
                                                 uint16_t sub_channel_index) const {
  return runtime_->executor().FindChannel(instance, sub_channel_index);
}

std::vector<DeviceEntry> ChannelBus::Devices() const { return runtime_->Devices(); }

absl::Status ChannelBus::BindDrivers(absl::Time deadline) {
  return runtime_->BindDrivers(deadline);
}

absl::Status ChannelBus::Shutdown(absl::Time deadline) { return runtime_->Shutdown(deadline); }

absl::Status ChannelBus::ForceUnload(absl::Time deadline) {
  return runtime_->ForceUnload(deadline);
}

absl::Status ChannelBus::Suspend(absl::Time deadline) { return runtime_->Suspend(deadline); }

absl::Status ChannelBus::Resume(absl::Time deadline) { return runtime_->Resume(deadline); }

BusPhase ChannelBus::phase() const { return runtime_->executor().phase(); }

uint32_t ChannelBus::version() const { return runtime_->executor().version(); }

BusStats ChannelBus::stats() const { return runtime_->stats(); }

absl::Status ChannelBus::WaitForDeferredTeardowns(absl::Time deadline) {
  return internal::WaitForDeferredTeardowns(deadline);
}

}  // namespace vbus
