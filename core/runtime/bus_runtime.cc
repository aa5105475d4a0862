#include "core/runtime/bus_runtime.h"

#include <pthread.h>

#include <cstdio>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/data/host_text.h"
#include "core/runtime/runtime_internal.h"

namespace vbus::internal {
namespace {

// Buses destroyed from their own threads whose teardown still runs.
struct Teardowns {
  Mutex mu;
  CondVar done;
  int running ABSL_GUARDED_BY(mu) = 0;
};

Teardowns& DeferredTeardowns() {
  static Teardowns* teardowns = new Teardowns();  // never destroyed: reapers may outlive main
  return *teardowns;
}

void TeardownStarted() {
  Teardowns& teardowns = DeferredTeardowns();
  MutexLock lock(&teardowns.mu);
  ++teardowns.running;
}

void TeardownEnded() {
  Teardowns& teardowns = DeferredTeardowns();
  MutexLock lock(&teardowns.mu);
  --teardowns.running;
  teardowns.done.SignalAll();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Construction and threads
// ---------------------------------------------------------------------------------------------

BusRuntime::BusRuntime(Backend* backend, ChannelBusOptions options)
    : backend_(backend),
      options_(std::move(options)),
      runner_("vbus-control",
              {[this] { executor_->RunDue(); }, [this] { return executor_->next_wakeup(); }}),
      devices_(options_.drivers != nullptr ? options_.drivers : &no_drivers_) {}

absl::StatusOr<std::shared_ptr<BusRuntime>> BusRuntime::Create(Backend* backend,
                                                               ChannelBusOptions options) {
  std::shared_ptr<BusRuntime> runtime(new BusRuntime(backend, std::move(options)));
  if (absl::Status s = runtime->Start(); !s.ok()) return s;
  return runtime;
}

absl::Status BusRuntime::Start() {
  // One dispatch point per virtual processor the host signals (docs/protocol.md §12): each
  // scans its own event flags, all deliver through the one relid table.
  const uint32_t vps = backend_->vp_count();
  if (vps == 0 || vps > kMaxEventVps) {
    return absl::InvalidArgumentError(absl::StrCat("the backend takes events on ", vps,
                                                   " virtual processors; 1..", kMaxEventVps,
                                                   " are supported"));
  }
  for (uint32_t vp = 0; vp < vps; ++vp) {
    absl::StatusOr<std::unique_ptr<EventDispatch>> dispatch = EventDispatch::Create(&table_);
    if (!dispatch.ok()) return dispatch.status();
    dispatch_.push_back(*std::move(dispatch));
  }
  // Host messages that arrive before the control thread runs wait in its queue; events raised
  // before the event flags are attached are scanned by Attach's first pass.
  if (absl::Status s = backend_->Start(this); !s.ok()) return s;
  for (uint32_t vp = 0; vp < vps; ++vp) {
    if (absl::Status s = dispatch_[vp]->Attach(backend_->ReceiveEventFlags(vp)); !s.ok()) {
      backend_->Stop();
      return absl::Status(
          s.code(), absl::StrCat("backend's receive event flags of VP ", vp, ": ", s.message()));
    }
  }
  ExecutorOptions executor_options;
  executor_options.stall_report = options_.retire_timeout;
  executor_options.page_sharing =
      options_.isolated ? PageSharing::kHostVisible : PageSharing::kDefault;
  BusConfig bus_config = BusConfigFor(backend_->contact_info(), options_.max_version);
  bus_config.isolated = options_.isolated;
  ChannelLink* link = this;
  ExecutorListener* listener = this;
  executor_ = std::make_unique<BusExecutor>(backend_, &table_, link, listener,
                                            std::move(bus_config), std::move(executor_options));
  started_ = true;
  // The runner's thread keeps the runtime alive while it runs.
  runner_.Start(shared_from_this());
  return absl::OkStatus();
}

BusRuntime::~BusRuntime() {
  // Every thread that used the runtime is gone (they keep it alive while they run); a runtime
  // whose shutdown could not stop everything in time finishes here.
  if (executor_ != nullptr) executor_->Stop();
}

bool BusRuntime::OnOwnThread() const {
  return InExecutor() || strands_.OnStrandThread() || InDispatch();
}

absl::Status BusRuntime::JoinRunner(absl::Time deadline) {
  runner_.Close();
  absl::Status joined = runner_.Join(deadline);
  if (joined.ok()) return joined;
  // A completion callback blocks the executor: finish in the background once it returns.
  TeardownStarted();
  std::thread([self = shared_from_this()] {
    pthread_setname_np(pthread_self(), "vbus-teardown");
    self->runner_.Join(absl::InfiniteFuture()).IgnoreError();
    self->executor_->Stop();
    TeardownEnded();
  }).detach();
  return joined;
}

void BusRuntime::LogLine(absl::string_view line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "vbus: %.*s\n", static_cast<int>(line.size()), line.data());
  }
}

void BusRuntime::Log(absl::string_view line) const { LogLine(line); }

absl::Time BusRuntime::Now() { return absl::Now(); }

// ---------------------------------------------------------------------------------------------
// BackendListener and ChannelLink
// ---------------------------------------------------------------------------------------------

void BusRuntime::OnHostMessage(const v1::ControlMessage& message) {
  // The backend's delivery thread holds no locks of ours or an application's: it may run the
  // executor itself (no hand-off for a reply to an idle bus).
  runner_.Post([this, message] { executor_->OnHostMessage(message); }, /*may_run_here=*/true);
}

void BusRuntime::OnEventsPending(uint32_t vp) {
  // dispatch_ is fixed before the backend starts: no lock.
  if (vp < dispatch_.size()) {
    dispatch_[vp]->Raise();
  } else {
    bad_vp_events_.fetch_add(1, std::memory_order_relaxed);
  }
}

void BusRuntime::OnHostLost(const absl::Status& status) {
  host_lost_.store(true, std::memory_order_relaxed);
  LogLine(absl::StrCat("link to the host lost: ", HostText(status.ToString())));
  const absl::Status reason(status.code(), HostText(status.message()));
  PostControl([this, reason] {
    executor_->OnLinkLost(reason);
    // After the removals it caused (queued on the drivers' strands first).
    if (options_.on_host_lost) {
      strands_.Barrier(
          [self = shared_from_this(), reason] { self->options_.on_host_lost(reason); });
    }
  });
}

bool BusRuntime::Post(std::function<void(BusExecutor&)> work) {
  return PostControl([this, work = std::move(work)] { work(*executor_); });
}

absl::Status BusRuntime::CheckBlockingAllowed(absl::string_view what) const {
  if (InExecutor()) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " called from a completion callback (the bus's executor) would deadlock"));
  }
  if (InDispatch()) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " called from a dispatch callback would block it"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

absl::Status BusRuntime::Connect(absl::Time deadline) {
  if (host_lost_.load(std::memory_order_relaxed)) {
    return absl::FailedPreconditionError(
        "connect: the link to the host was lost; this bus cannot reconnect");
  }
  if (absl::Status s = CheckBlockingAllowed("connect"); !s.ok()) return s;
  if (strands_.OnStrandThread()) {
    return absl::FailedPreconditionError(
        "connect called on a driver strand would wait for the drivers it runs among");
  }
  auto ticket = std::make_shared<CallTicket>();
  // The connect completes after the drivers have probed the offers that came with it (their
  // strands run what was queued before the barrier). Only then is it claimed; a caller that
  // gave up meanwhile has the connection dropped again.
  std::weak_ptr<BusRuntime> weak = weak_from_this();
  CallDone done = CallDone::Async([weak, ticket](const CallResult& result) {
    std::shared_ptr<BusRuntime> self = weak.lock();
    auto deliver = [weak, ticket, result] {
      if (ticket->Claim()) {
        ticket->Complete(result);
      } else if (result.status.ok()) {
        if (std::shared_ptr<BusRuntime> self = weak.lock()) {
          self->Post([](BusExecutor& executor) {
            executor.Disconnect(absl::CancelledError("connect gave up before the host finished"));
          });
        }
      }
    };
    if (self == nullptr || !self->strands_.Barrier(deliver)) deliver();
  });
  if (!Post([deadline, done](BusExecutor& executor) { executor.Connect(deadline, done); })) {
    return absl::FailedPreconditionError("the channel bus is shut down");
  }
  return AwaitTicket(*ticket, deadline, options_.call_grace, "connect").status;
}

absl::Status BusRuntime::BindDrivers(absl::Time deadline) {
  if (absl::Status s = CheckBlockingAllowed("BindDrivers"); !s.ok()) return s;
  if (strands_.OnStrandThread()) {
    return absl::FailedPreconditionError("BindDrivers called on a driver strand would deadlock");
  }
  std::vector<std::pair<OfferInfo, const DriverSpec*>> unbound;
  {
    MutexLock lock(&devices_mu_);
    unbound = devices_.Unbound();
  }
  for (const auto& [offer, spec] : unbound) {
    std::shared_ptr<Channel> channel = executor_->GetChannel(offer.id);
    if (channel == nullptr || spec == nullptr) continue;
    strands_.Post(offer.id.value(), [self = shared_from_this(), offer = offer, spec = spec,
                                     channel] { self->ProbeDevice(offer, spec, channel); });
  }
  auto ticket = std::make_shared<CallTicket>();
  if (!strands_.Barrier([ticket] { CallDone::For(ticket).Finish({}); })) {
    return absl::FailedPreconditionError("the channel bus is shut down");
  }
  return AwaitTicket(*ticket, deadline, options_.call_grace, "BindDrivers").status;
}

absl::Status BusRuntime::Quiesce(absl::Time deadline) {
  // Three hops: control (what is queued there, e.g. removals being executed) → strands (the
  // removals, which queue releases on the control thread) → control (the releases).
  auto ticket = std::make_shared<CallTicket>();
  auto finish = [ticket] { CallDone::For(ticket).Finish({}); };
  std::weak_ptr<BusRuntime> weak = weak_from_this();
  const bool posted = PostControl([weak, finish] {
    std::shared_ptr<BusRuntime> self = weak.lock();
    if (self == nullptr || !self->strands_.Barrier([weak, finish] {
          std::shared_ptr<BusRuntime> self = weak.lock();
          if (self == nullptr || !self->PostControl(finish)) finish();
        })) {
      finish();
    }
  });
  if (!posted) return absl::OkStatus();
  absl::Status s = AwaitTicket(*ticket, deadline, options_.call_grace, "shutdown").status;
  if (!s.ok()) return absl::DeadlineExceededError("shutdown: drivers still busy at the deadline");
  return absl::OkStatus();
}

absl::Status BusRuntime::ForceUnload(absl::Time deadline) {
  if (absl::Status s = CheckBlockingAllowed("forced unload"); !s.ok()) return s;
  if (strands_.OnStrandThread()) {
    return absl::FailedPreconditionError(
        "forced unload called on a driver strand would wait for the drivers it runs among");
  }
  absl::Status unloaded =
      CallAndWait(*this, "forced unload", deadline,
                  [deadline](BusExecutor& executor, CallDone done) {
                    executor.Unload(deadline, std::move(done), UnloadMode::kForced);
                  })
          .status;
  if (!unloaded.ok()) return unloaded;
  // Every driver has been told (Remove ran) and every offer released before this returns.
  return Quiesce(deadline);
}

absl::Status BusRuntime::Shutdown(absl::Time deadline) {
  if (OnOwnThread()) {
    return absl::FailedPreconditionError(
        "Shutdown called from the bus's own thread or a callback would wait for itself; destroy "
        "the bus there instead (its teardown then finishes in the background)");
  }
  MutexLock serial(&shutdown_mu_);
  if (shut_down_.load(std::memory_order_relaxed)) return absl::OkStatus();
  if (!started_) {
    shut_down_.store(true, std::memory_order_relaxed);
    return absl::OkStatus();
  }
  absl::Status first;
  auto note = [&first](absl::Status s) {
    if (first.ok() && !s.ok()) first = std::move(s);
  };
  auto phase = [this] { return executor_->phase(); };

  // 1. Close every open channel (drivers keep their binding until the offers go).
  if (phase() == BusPhase::kConnected) {
    note(CallAndWait(*this, "shutdown: closing channels", deadline,
                     [deadline](BusExecutor& executor, CallDone done) {
                       executor.CloseAll(deadline, std::move(done));
                     })
             .status);
  }
  // 2. Unload (3.0+): the host forgets the guest's channels; every offer is removed.
  bool dropped = false;
  if (phase() == BusPhase::kConnected && protocol::HasUnload(executor_->version())) {
    absl::Status unloaded =
        CallAndWait(*this, "unload", deadline, [deadline](BusExecutor& executor, CallDone done) {
          executor.Unload(deadline, std::move(done));
        }).status;
    note(unloaded);
    dropped = unloaded.ok();
  }
  // 3. Otherwise (older version, failed unload) drop the offers locally.
  if (!dropped && phase() != BusPhase::kDisconnected) {
    Post([](BusExecutor& executor) {
      executor.Disconnect(absl::CancelledError("the channel bus is shutting down"));
    });
  }
  // 4. Let the drivers' Remove calls and the releases they queue run.
  note(Quiesce(deadline));

  // 5. No more host input or events; then stop the threads (each runs what is still queued).
  backend_->Stop();
  strands_.Close();
  note(strands_.Join(deadline + options_.call_grace));
  const absl::Status runner = JoinRunner(deadline + options_.call_grace);
  note(runner);

  // 6. Nothing runs the executor any more: this thread owns it now. Calls still waiting fail;
  // channels become inert; memory goes back to the backend. (An executor still stuck in a
  // completion callback is stopped in the background once it returns.)
  if (runner.ok()) executor_->Stop();
  shut_down_.store(true, std::memory_order_relaxed);
  return first;
}

// ---------------------------------------------------------------------------------------------
// Offers and drivers
// ---------------------------------------------------------------------------------------------

namespace {

// The driver strand an offer's events run on: a device's own, shared by its sub-channels, so
// that the primary's Probe runs before its sub-channels are announced to the driver, and its
// Remove after every SubChannelRemoved queued before it — and none of them concurrently.
uint64_t StrandKey(const OfferInfo& offer) {
  return offer.is_sub_channel() && offer.primary.valid() ? offer.primary.value() : offer.id.value();
}

}  // namespace

void BusRuntime::OfferAdded(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) {
  strands_.Post(StrandKey(offer),
                [self = shared_from_this(), offer, channel] { self->AddDevice(offer, channel); });
}

void BusRuntime::OfferRemoved(const OfferInfo& offer, const std::shared_ptr<Channel>& channel,
                              const absl::Status& reason) {
  const OfferId id = offer.id;
  auto release = [weak = weak_from_this(), id] {
    if (std::shared_ptr<BusRuntime> self = weak.lock()) {
      self->Post([id](BusExecutor& executor) { executor.ReleaseOffer(id); });
    }
  };
  const bool posted =
      strands_.Post(StrandKey(offer), [self = shared_from_this(), offer, channel, reason, release] {
        self->RemoveDevice(offer, channel, reason);
        release();
      });
  if (!posted) release();  // drivers already stopped (end of shutdown)
}

void BusRuntime::AddDevice(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) {
  const DriverSpec* spec;
  Driver* primary_driver = nullptr;
  {
    MutexLock lock(&devices_mu_);
    spec = devices_.Add(offer);
    if (offer.is_sub_channel()) primary_driver = devices_.driver(offer.primary);
    if (primary_driver != nullptr) announced_sub_channels_.insert(offer.id);
  }
  if (spec != nullptr) ProbeDevice(offer, spec, channel);
  // On the primary's strand: its driver, if bound, stays bound until this returns.
  if (primary_driver != nullptr) primary_driver->SubChannelOffered(*channel);
  if (options_.on_offer) options_.on_offer(channel);
}

void BusRuntime::ProbeDevice(const OfferInfo& offer, const DriverSpec* spec,
                             const std::shared_ptr<Channel>& channel) {
  std::unique_ptr<Driver> driver = spec->factory(offer);
  absl::Status probed =
      driver == nullptr
          ? absl::InternalError(absl::StrCat("driver factory of ", spec->name, " returned null"))
          : driver->Probe(*channel);
  MutexLock lock(&devices_mu_);
  if (probed.ok()) {
    if (absl::Status s = devices_.Bind(offer.id, std::move(driver)); !s.ok()) {
      probe_failures_.fetch_add(1, std::memory_order_relaxed);
      LogLine(absl::StrCat("binding ", spec->name, " to relid ", offer.relid, ": ", s.ToString()));
    }
    return;
  }
  probe_failures_.fetch_add(1, std::memory_order_relaxed);
  LogLine(absl::StrCat("driver ", spec->name, " failed to probe relid ", offer.relid, ": ",
                       probed.ToString()));
  devices_.ProbeFailed(offer.id, probed).IgnoreError();
}

void BusRuntime::RemoveDevice(const OfferInfo& offer, const std::shared_ptr<Channel>& channel,
                              const absl::Status& reason) {
  std::unique_ptr<Driver> driver;
  Driver* primary_driver = nullptr;
  {
    MutexLock lock(&devices_mu_);
    driver = devices_.Remove(offer.id);
    if (announced_sub_channels_.erase(offer.id) > 0) {
      primary_driver = devices_.driver(offer.primary);
    }
  }
  if (primary_driver != nullptr) primary_driver->SubChannelRemoved(*channel, reason);
  if (driver != nullptr) driver->Remove();
  driver.reset();
  if (options_.on_offer_removed) options_.on_offer_removed(offer, reason);
}

std::vector<DeviceEntry> BusRuntime::Devices() const {
  MutexLock lock(&devices_mu_);
  return devices_.List();
}

BusStats BusRuntime::stats() const {
  BusStats s;
  const ExecutorCounters c = executor_->counters();
  s.messages_sent = c.messages_sent;
  s.messages_received = c.messages_received;
  s.host_inputs_ignored = c.host_inputs_ignored;
  s.post_failures = c.post_failures;
  s.offers_added = c.offers_added;
  s.offers_removed = c.offers_removed;
  s.offers_resumed = c.offers_resumed;
  s.errors = c.errors + probe_failures_.load(std::memory_order_relaxed);
  s.calls_undone = c.calls_undone;
  s.retires_deferred = c.deferred_retires;
  s.events_raised = bad_vp_events_.load(std::memory_order_relaxed);
  for (const std::unique_ptr<EventDispatch>& dispatch : dispatch_) {
    const EventDispatchStats d = dispatch->stats();
    s.events_raised += d.raised;
    s.events_dispatched += d.delivered;
    s.events_dispatched_per_vp.push_back(d.delivered);
  }
  s.spurious_events = table_.spurious_events();
  s.channels = c.released_channels;
  for (const std::shared_ptr<Channel>& channel : executor_->Channels()) {
    s.channels.Add(channel->stats());
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Deferred teardown
// ---------------------------------------------------------------------------------------------

void DeferTeardown(std::shared_ptr<BusRuntime> runtime) {
  TeardownStarted();
  std::thread([runtime = std::move(runtime)]() mutable {
    pthread_setname_np(pthread_self(), "vbus-teardown");
    runtime->Shutdown(absl::Now() + runtime->options().shutdown_timeout).IgnoreError();
    runtime.reset();
    TeardownEnded();
  }).detach();
}

absl::Status WaitForDeferredTeardowns(absl::Time deadline) {
  Teardowns& teardowns = DeferredTeardowns();
  MutexLock lock(&teardowns.mu);
  if (!teardowns.done.AwaitWithDeadline(
          &teardowns.mu, deadline,
          [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(teardowns.mu) { return teardowns.running == 0; })) {
    return absl::DeadlineExceededError(
        absl::StrCat(teardowns.running, " bus teardown(s) still running at the deadline"));
  }
  return absl::OkStatus();
}

}  // namespace vbus::internal
