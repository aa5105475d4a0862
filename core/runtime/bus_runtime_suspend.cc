// BusRuntime: Suspend and Resume (ChannelBus::Suspend / Resume, docs/protocol.md §9).
//
// The runtime adds the drivers to what the executor does (bus_executor_suspend.cc): their
// Suspend before the bus closes and unloads, their Resume after the host has offered their
// devices again. Devices are matched across the cycle by (type, instance) in BusState, so a
// driver keeps its Channel object — only its relid and signalling fields change — and never
// has to find its device again.
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/runtime/bus_runtime.h"

namespace vbus::internal {

absl::Status BusRuntime::CheckLifecycleCall(absl::string_view what) const {
  if (host_lost_.load(std::memory_order_relaxed)) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": the link to the host was lost; this bus cannot reconnect"));
  }
  if (absl::Status s = CheckBlockingAllowed(what); !s.ok()) return s;
  if (strands_.OnStrandThread()) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " called on a driver strand would wait for the drivers it runs among"));
  }
  if (shut_down_.load(std::memory_order_relaxed)) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": the channel bus is shut down"));
  }
  return absl::OkStatus();
}

std::vector<OfferId> BusRuntime::BoundPrimaries() const {
  std::vector<OfferId> bound;
  MutexLock lock(&devices_mu_);
  for (const DeviceEntry& entry : devices_.List()) {
    if (entry.binding == Binding::kBound) bound.push_back(entry.offer.id);
  }
  return bound;
}

std::vector<std::pair<OfferId, absl::Status>> BusRuntime::RunOnDevices(
    const std::vector<OfferId>& offers, DeviceWork work, absl::Time deadline) {
  struct Results {
    Mutex mu;
    std::vector<std::pair<OfferId, absl::Status>> failed ABSL_GUARDED_BY(mu);
  };
  auto results = std::make_shared<Results>();
  auto shared_work = std::make_shared<DeviceWork>(std::move(work));
  for (OfferId id : offers) {
    std::shared_ptr<Channel> channel = executor_->GetChannel(id);
    if (channel == nullptr) continue;
    strands_.Post(id.value(), [self = shared_from_this(), channel, results, shared_work] {
      if (!channel->removed_status().ok()) return;  // removed meanwhile: Remove ran instead
      Driver* driver;
      {
        MutexLock lock(&self->devices_mu_);
        driver = self->devices_.driver(channel->id());
      }
      // On the device's strand: a bound driver stays bound until this returns.
      absl::Status s = (*shared_work)(*channel, driver);
      if (s.ok()) return;
      MutexLock lock(&results->mu);
      results->failed.emplace_back(channel->id(), std::move(s));
    });
  }
  auto ticket = std::make_shared<CallTicket>();
  std::vector<std::pair<OfferId, absl::Status>> failed;
  if (!strands_.Barrier([ticket] { CallDone::For(ticket).Finish({}); })) {
    failed.emplace_back(OfferId(), absl::FailedPreconditionError("the channel bus is shut down"));
    return failed;
  }
  absl::Status waited = AwaitTicket(*ticket, deadline, options_.call_grace, "drivers").status;
  MutexLock lock(&results->mu);
  failed = results->failed;
  if (!waited.ok()) {
    failed.emplace_back(OfferId(),
                        absl::DeadlineExceededError("drivers were still busy at the deadline"));
  }
  return failed;
}

absl::Status BusRuntime::ResumeDevices(const std::vector<OfferId>& offers, absl::Time deadline) {
  auto failed = RunOnDevices(
      offers,
      [deadline](Channel& channel, Driver* driver) -> absl::Status {
        if (driver != nullptr) return driver->Resume(channel, deadline);
        if (channel.offer().is_sub_channel() || !channel.open_at_suspend()) {
          return absl::OkStatus();
        }
        return channel.Reopen(deadline);  // a channel the application opened itself
      },
      deadline);
  absl::Status first;
  for (const auto& [id, status] : failed) {
    const absl::Status named(status.code(),
                             absl::StrCat("resume of offer ", id.value(), ": ", status.message()));
    LogLine(named.ToString());
    probe_failures_.fetch_add(1, std::memory_order_relaxed);
    if (first.ok()) first = named;
  }
  return first;
}

absl::Status BusRuntime::Suspend(absl::Time deadline) {
  if (absl::Status s = CheckLifecycleCall("suspend"); !s.ok()) return s;
  MutexLock serial(&shutdown_mu_);
  if (executor_->phase() != BusPhase::kConnected) {
    return absl::FailedPreconditionError(
        absl::StrCat("suspend: the bus is ", BusPhaseName(executor_->phase())));
  }
  if (!protocol::HasUnload(executor_->version())) {
    return absl::FailedPreconditionError(
        absl::StrCat("suspend needs protocol 3.0 or newer (it unloads); negotiated ",
                     protocol::VersionName(executor_->version())));
  }
  // 1. Which channels are open: the defaults of Driver::Resume and the bus reopen those.
  CallResult noted = CallAndWait(*this, "suspend", deadline, [](BusExecutor& e, CallDone done) {
    e.NoteSuspend();
    done.Finish({});
  });
  if (!noted.status.ok()) return noted.status;
  // 2. The drivers quiesce and close their channels.
  const std::vector<OfferId> bound = BoundPrimaries();
  auto failed = RunOnDevices(
      bound,
      [deadline](Channel& channel, Driver* driver) {
        return driver != nullptr ? driver->Suspend(channel, deadline) : absl::OkStatus();
      },
      deadline);
  auto back_out = [&](absl::Status why) {
    // The host still has the connection: every device reopens where it was.
    std::vector<OfferId> failed_ids;
    for (const auto& [id, status] : failed) failed_ids.push_back(id);
    std::vector<OfferId> suspended;
    for (OfferId id : bound) {
      if (std::find(failed_ids.begin(), failed_ids.end(), id) == failed_ids.end()) {
        suspended.push_back(id);
      }
    }
    ResumeDevices(suspended, deadline).IgnoreError();
    LogLine(why.ToString());
    return why;
  };
  if (!failed.empty()) {
    const auto& [id, status] = failed.front();
    std::string driver_name = "a driver";
    for (const DeviceEntry& entry : Devices()) {
      if (entry.offer.id == id)
        driver_name = absl::StrCat("driver ", entry.driver, " (relid ", entry.offer.relid, ")");
    }
    return back_out(
        absl::Status(status.code(), absl::StrCat("suspend: ", driver_name, " failed to suspend: ",
                                                 status.message(), "; the bus stays connected")));
  }
  // 3. The bus: close what is left, tear down GPADLs, unload; the primaries are parked.
  absl::Status suspended =
      CallAndWait(*this, "suspend", deadline, [deadline](BusExecutor& e, CallDone done) {
        e.Suspend(deadline, std::move(done));
      }).status;
  const BusPhase phase = executor_->phase();
  if (phase == BusPhase::kSuspended) {
    // 4. Nothing from the host is taken until Resume (offers sent meanwhile wait).
    backend_->PauseDelivery();
    return suspended;
  }
  if (phase == BusPhase::kConnected) {
    return back_out(absl::Status(suspended.code(),
                                 absl::StrCat(suspended.message(), "; the bus stays connected")));
  }
  return suspended;  // the link was lost: every device is being removed
}

absl::Status BusRuntime::Resume(absl::Time deadline) {
  if (absl::Status s = CheckLifecycleCall("resume"); !s.ok()) return s;
  MutexLock serial(&shutdown_mu_);
  if (executor_->phase() != BusPhase::kSuspended) {
    return absl::FailedPreconditionError(
        absl::StrCat("resume: the bus is ", BusPhaseName(executor_->phase()), ", not suspended"));
  }
  auto parked = std::make_shared<std::vector<OfferInfo>>();
  CallResult listed =
      CallAndWait(*this, "resume", deadline, [parked](BusExecutor& e, CallDone done) {
        *parked = e.state().ParkedOffers();
        done.Finish({});
      });
  if (!listed.status.ok()) return listed.status;
  {
    MutexLock lock(&resume_mu_);
    awaiting_resume_.clear();
    for (const OfferInfo& offer : *parked) awaiting_resume_.insert(offer.id);
  }
  backend_->ResumeDelivery();
  absl::Status resumed =
      CallAndWait(*this, "resume", deadline, [deadline](BusExecutor& e, CallDone done) {
        e.Resume(deadline, std::move(done));
      }).status;
  if (executor_->phase() == BusPhase::kSuspended) {
    backend_->PauseDelivery();
    return resumed;
  }
  if (executor_->phase() == BusPhase::kDisconnected) return resumed;  // link lost
  // Devices that existed before and have not come back yet get a little longer.
  const absl::Time until = std::min(deadline, absl::Now() + options_.resume_offer_wait);
  std::vector<OfferId> missing;
  {
    MutexLock lock(&resume_mu_);
    resume_cv_.AwaitWithDeadline(
        &resume_mu_, until,
        [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(resume_mu_) { return awaiting_resume_.empty(); });
    missing.assign(awaiting_resume_.begin(), awaiting_resume_.end());
    awaiting_resume_.clear();
  }
  for (const OfferInfo& offer : *parked) {
    if (std::find(missing.begin(), missing.end(), offer.id) == missing.end()) continue;
    LogLine(absl::StrCat("resume: device ", offer.interface_type.ToString(), " instance ",
                         offer.interface_instance.ToString(), " (relid ", offer.relid,
                         " before the suspend) was not offered again; removing it"));
  }
  if (!missing.empty()) {
    CallAndWait(*this, "resume", deadline, [](BusExecutor& e, CallDone done) {
      e.DropParked(absl::NotFoundError("the device was not offered again after the resume"));
      done.Finish({});
    }).status.IgnoreError();
  }
  std::vector<OfferId> ids;
  for (const OfferInfo& offer : *parked) ids.push_back(offer.id);
  // A resume that ran out of time after the version was agreed (no AllOffersDelivered) still
  // reopens the devices that did come back, within the grace every waiting call has.
  const absl::Time drivers_deadline =
      resumed.ok() ? deadline : std::max(deadline, absl::Now()) + options_.call_grace;
  absl::Status drivers = ResumeDevices(ids, drivers_deadline);
  return resumed.ok() ? drivers : resumed;
}

void BusRuntime::OfferResumed(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) {
  (void)channel;  // already rebound by the executor
  {
    MutexLock lock(&devices_mu_);
    devices_.Update(offer);
  }
  MutexLock lock(&resume_mu_);
  awaiting_resume_.erase(offer.id);
  resume_cv_.SignalAll();
}

}  // namespace vbus::internal
