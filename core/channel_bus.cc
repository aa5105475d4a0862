#include "core/channel_bus.h"

#include <pthread.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/runtime_internal.h"

namespace vbus {
namespace {

void AddStats(ChannelStats& sum, const ChannelStats& s) {
  sum.packets_sent += s.packets_sent;
  sum.bytes_sent += s.bytes_sent;
  sum.packets_received += s.packets_received;
  sum.bytes_received += s.bytes_received;
  sum.completions_received += s.completions_received;
  sum.completions_unknown += s.completions_unknown;
  sum.completions_stale += s.completions_stale;
  sum.signals_sent += s.signals_sent;
  sum.signals_received += s.signals_received;
  sum.ring_full += s.ring_full;
  sum.errors += s.errors;
}

BusConfig ConfigFrom(const ContactInfo& contact, uint32_t max_version) {
  BusConfig config;
  config.max_version = max_version;
  config.target_vcpu = contact.target_vcpu;
  config.message_sint = contact.message_sint;
  config.message_vtl = contact.message_vtl;
  config.interrupt_page = contact.interrupt_page_gpa;
  config.monitor_page1 = contact.monitor_page1_gpa;
  config.monitor_page2 = contact.monitor_page2_gpa;
  return config;
}

// Ignored host inputs are logged individually up to this many, then every 1000th.
constexpr uint64_t kIgnoredLogLimit = 20;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Waiter
// ---------------------------------------------------------------------------------------------

void ChannelBus::Waiter::Finish(CallResult result) {
  MutexLock lock(&mu_);
  if (done_) return;
  done_ = true;
  result_ = std::move(result);
  cv_.SignalAll();
}

bool ChannelBus::Waiter::Wait(absl::Time deadline, CallResult* out) {
  MutexLock lock(&mu_);
  if (!cv_.AwaitWithDeadline(&mu_, deadline,
                             [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; })) {
    return false;
  }
  *out = std::move(result_);  // the caller owns the result from here
  return true;
}

// ---------------------------------------------------------------------------------------------
// Construction, threads
// ---------------------------------------------------------------------------------------------

ChannelBus::ChannelBus(Backend* backend, ChannelBusOptions options)
    : backend_(backend),
      options_(std::move(options)),
      devices_(options_.drivers != nullptr ? options_.drivers : &no_drivers_) {}

absl::StatusOr<std::unique_ptr<ChannelBus>> ChannelBus::Create(Backend* backend,
                                                               ChannelBusOptions options) {
  if (backend == nullptr) return absl::InvalidArgumentError("ChannelBus needs a backend");
  if (options.max_version < protocol::kOldestVersion) {
    return absl::InvalidArgumentError(absl::StrCat("max_version ",
                                                   protocol::VersionName(options.max_version),
                                                   " is older than the oldest supported, 2.4"));
  }
  std::unique_ptr<ChannelBus> bus(new ChannelBus(backend, std::move(options)));
  if (absl::Status s = bus->Start(); !s.ok()) return s;
  return bus;
}

absl::Status ChannelBus::Start() {
  absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table_.RegisterDispatcher();
  if (!dispatcher.ok()) return dispatcher.status();
  dispatcher_.emplace(std::move(*dispatcher));
  // Host messages that arrive before the control thread runs wait in its queue; events that
  // are raised before the event page is attached find no published channel anyway (their
  // bits stay set for the first real scan).
  if (absl::Status s = backend_->Start(this); !s.ok()) {
    dispatcher_.reset();
    return s;
  }
  absl::StatusOr<EventPage> page = EventPage::Attach(backend_->ReceiveEventFlags());
  if (!page.ok()) {
    backend_->Stop();
    dispatcher_.reset();
    return absl::Status(page.status().code(),
                        absl::StrCat("backend's receive event flags: ", page.status().message()));
  }
  event_page_.emplace(*page);
  // [E0] release: the event page and dispatcher are set before dispatch may use them; pairs
  // with the acquire in OnEventsPending.
  events_ready_.store(true, std::memory_order_release);
  state_.emplace(ConfigFrom(backend_->contact_info(), options_.max_version));
  control_thread_ = std::thread([this] { ControlLoop(); });
  driver_thread_ = std::thread([this] { DriverLoop(); });
  return absl::OkStatus();
}

ChannelBus::~ChannelBus() { Shutdown(absl::Now() + options_.shutdown_timeout).IgnoreError(); }

bool ChannelBus::OnControlThread() const {
  return control_thread_id_.load(std::memory_order_relaxed) == std::this_thread::get_id();
}

bool ChannelBus::OnDriverThread() const {
  return driver_thread_id_.load(std::memory_order_relaxed) == std::this_thread::get_id();
}

// Both queues wake their thread only on empty → non-empty and hand it everything queued at
// once (WorkQueue), so a burst of posts (offers, pipelined opens) costs one wake-up.
bool ChannelBus::PostControl(std::function<void()> work) {
  return control_queue_.Post(std::move(work));
}

bool ChannelBus::PostDriver(std::function<void()> work) {
  return driver_queue_.Post(std::move(work));
}

void ChannelBus::ControlLoop() {
  control_thread_id_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  pthread_setname_np(pthread_self(), "vbus-control");  // for debuggers and profilers
  // Runs each burst in order; timers are checked between items and when they are due.
  std::deque<std::function<void()>> work;
  for (;;) {
    // timer_queue_ is control-thread state; reading it here (on the control thread) is fine.
    const absl::Time wake =
        timer_queue_.empty() ? absl::InfiniteFuture() : timer_queue_.begin()->first;
    if (!control_queue_.TakeAll(wake, &work)) return;  // closed and drained
    for (; !work.empty(); work.pop_front()) {
      work.front()();
      if (!timer_queue_.empty()) FireTimers();
    }
    FireTimers();
  }
}

void ChannelBus::DriverLoop() {
  driver_thread_id_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  pthread_setname_np(pthread_self(), "vbus-driver");
  std::deque<std::function<void()>> work;
  while (driver_queue_.TakeAll(absl::InfiniteFuture(), &work)) {
    for (; !work.empty(); work.pop_front()) work.front()();
  }
}

void ChannelBus::Log(absl::string_view line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "vbus: %.*s\n", static_cast<int>(line.size()), line.data());
  }
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

absl::Status ChannelBus::CheckBlockingAllowed(absl::string_view what) const {
  if (OnControlThread()) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " called on the bus's control thread (a completion callback) would deadlock"));
  }
  if (internal::InDispatch()) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " called from a dispatch callback would block it"));
  }
  return absl::OkStatus();
}

void ChannelBus::StartCall(CallStart start, CallDone done, bool barrier_drivers) {
  auto work = [this, start = std::move(start), done, barrier_drivers]() mutable {
    CallDone finish = done;
    if (barrier_drivers) {
      // Complete only after the driver thread has run what was queued before the completion
      // (the probes of the offers that arrived first).
      finish = [this, done](const CallResult& result) {
        if (!PostDriver([done, result] { done(result); })) done(result);
      };
    }
    Actions out;
    absl::StatusOr<RequestId> id = start(&out);
    if (!id.ok()) {
      finish(CallResult{id.status()});
    } else if (!id->valid()) {
      finish(CallResult{absl::OkStatus()});
    } else {
      waiters_[*id] = std::move(finish);
    }
    Execute(std::move(out));
  };
  if (!PostControl(std::move(work))) {
    done(CallResult{absl::FailedPreconditionError("the channel bus is shut down")});
  }
}

ChannelBus::CallResult ChannelBus::AwaitWaiter(Waiter& waiter, absl::Time deadline,
                                               absl::string_view what) {
  CallResult result;
  const absl::Time until =
      deadline == absl::InfiniteFuture() ? deadline : deadline + options_.call_grace;
  if (!waiter.Wait(until, &result)) {
    return CallResult{absl::DeadlineExceededError(
        absl::StrCat(what, ": no result by the deadline (the bus's control thread is late)"))};
  }
  return result;
}

ChannelBus::CallResult ChannelBus::AwaitCall(CallStart start, CallDone on_control,
                                             absl::Time deadline, absl::string_view what,
                                             bool barrier_drivers) {
  if (absl::Status s = CheckBlockingAllowed(what); !s.ok()) return CallResult{s};
  auto waiter = std::make_shared<Waiter>();
  StartCall(
      std::move(start),
      [waiter, on_control = std::move(on_control)](const CallResult& result) {
        if (on_control) on_control(result);
        waiter->Finish(result);
      },
      barrier_drivers);
  return AwaitWaiter(*waiter, deadline, what);
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

absl::Status ChannelBus::Connect(absl::Time deadline) {
  if (host_lost_.load(std::memory_order_relaxed)) {
    return absl::FailedPreconditionError(
        "connect: the link to the host was lost; this bus cannot reconnect");
  }
  CallResult result = AwaitCall(
      [this, deadline](Actions* out) -> absl::StatusOr<RequestId> {
        return state_->Connect(deadline, out);
      },
      nullptr, deadline, "connect", /*barrier_drivers=*/true);
  return result.status;
}

std::vector<OfferInfo> ChannelBus::Offers() const {
  std::vector<OfferInfo> offers;
  {
    MutexLock lock(&mirror_mu_);
    offers.reserve(offers_.size());
    for (const auto& [id, offer] : offers_) offers.push_back(offer);
  }
  std::sort(offers.begin(), offers.end(),
            [](const OfferInfo& a, const OfferInfo& b) { return a.relid < b.relid; });
  return offers;
}

std::shared_ptr<Channel> ChannelBus::GetChannel(OfferId offer) const {
  MutexLock lock(&mirror_mu_);
  auto it = channel_mirror_.find(offer);
  return it == channel_mirror_.end() ? nullptr : it->second;
}

std::shared_ptr<Channel> ChannelBus::FindChannel(uint32_t relid) const {
  MutexLock lock(&mirror_mu_);
  for (const auto& [id, offer] : offers_) {
    if (offer.relid != relid) continue;
    auto it = channel_mirror_.find(id);
    return it == channel_mirror_.end() ? nullptr : it->second;
  }
  return nullptr;
}

std::shared_ptr<Channel> ChannelBus::FindChannel(const Guid& instance,
                                                 uint16_t sub_channel_index) const {
  MutexLock lock(&mirror_mu_);
  for (const auto& [id, offer] : offers_) {
    if (offer.interface_instance != instance || offer.sub_channel_index != sub_channel_index) {
      continue;
    }
    auto it = channel_mirror_.find(id);
    return it == channel_mirror_.end() ? nullptr : it->second;
  }
  return nullptr;
}

std::vector<DeviceEntry> ChannelBus::Devices() const {
  MutexLock lock(&devices_mu_);
  return devices_.List();
}

absl::Status ChannelBus::BindDrivers(absl::Time deadline) {
  if (absl::Status s = CheckBlockingAllowed("BindDrivers"); !s.ok()) return s;
  if (OnDriverThread()) {
    return absl::FailedPreconditionError("BindDrivers called on the driver thread would deadlock");
  }
  auto waiter = std::make_shared<Waiter>();
  const bool posted = PostDriver([this, waiter] {
    std::vector<std::pair<OfferInfo, const DriverSpec*>> unbound;
    {
      MutexLock lock(&devices_mu_);
      unbound = devices_.Unbound();
    }
    for (const auto& [offer, spec] : unbound) {
      std::shared_ptr<Channel> channel = GetChannel(offer.id);
      if (channel != nullptr && spec != nullptr) ProbeDevice(offer, spec, channel);
    }
    waiter->Finish(CallResult{});
  });
  if (!posted) return absl::FailedPreconditionError("the channel bus is shut down");
  return AwaitWaiter(*waiter, deadline, "BindDrivers").status;
}

BusStats ChannelBus::stats() const {
  BusStats s;
  auto get = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  s.messages_sent = get(messages_sent_);
  s.messages_received = get(messages_received_);
  s.post_failures = get(post_failures_);
  s.events_raised = get(events_raised_);
  s.events_dispatched = get(events_dispatched_);
  s.spurious_events = table_.spurious_events();
  s.offers_added = get(offers_added_);
  s.offers_removed = get(offers_removed_);
  s.errors = get(errors_);
  std::vector<std::shared_ptr<Channel>> live;
  {
    MutexLock lock(&mirror_mu_);
    s.host_inputs_ignored = host_inputs_ignored_;
    s.channels = released_channel_stats_;
    for (const auto& [id, channel] : channel_mirror_) live.push_back(channel);
  }
  for (const std::shared_ptr<Channel>& channel : live) AddStats(s.channels, channel->stats());
  return s;
}

// ---------------------------------------------------------------------------------------------
// BackendListener
// ---------------------------------------------------------------------------------------------

void ChannelBus::OnHostMessage(const v1::ControlMessage& message) {
  messages_received_.fetch_add(1, std::memory_order_relaxed);
  PostControl([this, message] {
    Actions out;
    state_->OnHostMessage(message, &out);
    Execute(std::move(out));
  });
}

void ChannelBus::OnHostLost(const absl::Status& status) {
  host_lost_.store(true, std::memory_order_relaxed);
  Log(absl::StrCat("link to the host lost: ", status.ToString()));
  PostControl([this, status] {
    Actions out;
    state_->OnLinkLost(status, &out);
    Execute(std::move(out));
    // After the removals it caused (they are queued on the driver thread first).
    if (options_.on_host_lost) PostDriver([this, status] { options_.on_host_lost(status); });
  });
}

void ChannelBus::OnEventsPending() {
  events_raised_.fetch_add(1, std::memory_order_relaxed);
  // [E1] acquire: pairs with [E0]; before it, there is nothing to dispatch to.
  if (!events_ready_.load(std::memory_order_acquire)) return;
  // At most one thread dispatches; a raise that finds one dispatching leaves the work to it.
  // [K1] seq_cst: announce the work before trying to become the dispatcher.
  dispatch_pending_.store(true, std::memory_order_seq_cst);
  for (;;) {
    bool expected = false;
    // [K2] seq_cst (acquire on success): pairs with the previous dispatcher's [K3], so its use
    // of dispatcher_ happens-before ours. On failure the holder's re-check [K4] sees [K1]:
    // in the single seq_cst order, [K1] < our failed [K2] < its [K3] < its [K4].
    if (!dispatching_.compare_exchange_strong(expected, true, std::memory_order_seq_cst)) return;
    {
      internal::ScopedDispatch in_dispatch;
      while (dispatch_pending_.exchange(false, std::memory_order_seq_cst)) {
        const DispatchStats stats = dispatcher_->Dispatch(*event_page_);
        if (stats.delivered != 0) {
          events_dispatched_.fetch_add(stats.delivered, std::memory_order_relaxed);
        }
      }
    }
    dispatching_.store(false, std::memory_order_seq_cst);            // [K3]
    if (!dispatch_pending_.load(std::memory_order_seq_cst)) return;  // [K4]
  }
}

// ---------------------------------------------------------------------------------------------
// The control thread: executing actions
// ---------------------------------------------------------------------------------------------

std::shared_ptr<Channel> ChannelBus::ChannelOf(OfferId offer) const {
  auto it = channels_.find(offer);
  return it == channels_.end() ? nullptr : it->second;
}

void ChannelBus::Execute(Actions actions) {
  // BusState has already changed: publish its phase before any completion wakes a caller.
  UpdateMirrors();
  std::deque<Action> todo(std::make_move_iterator(actions.begin()),
                          std::make_move_iterator(actions.end()));
  while (!todo.empty()) {
    Action action = std::move(todo.front());
    todo.pop_front();
    Actions more;
    ExecuteOne(action, &more);
    if (more.empty()) continue;
    // Carrying out the action fed BusState another input (a failed post, a release): its
    // actions come after the rest of the list.
    UpdateMirrors();
    for (Action& a : more) todo.push_back(std::move(a));
  }
  UpdateMirrors();
}

void ChannelBus::ExecuteOne(Action& action, Actions* more) {
  if (auto* send = std::get_if<SendMessage>(&action)) {
    absl::Status posted = backend_->PostMessage(send->message);
    if (posted.ok()) {
      messages_sent_.fetch_add(1, std::memory_order_relaxed);
    } else {
      post_failures_.fetch_add(1, std::memory_order_relaxed);
      Log(absl::StrCat("post of ", DescribeControlMessage(send->message),
                       " failed: ", posted.ToString()));
      state_->OnPostFailed(send->message, posted, more);
    }
  } else if (auto* ready = std::get_if<ConnectionReady>(&action)) {
    backend_->SetConnection(NegotiatedConnection{ready->version, ready->message_connection_id});
  } else if (auto* publish = std::get_if<PublishChannel>(&action)) {
    std::shared_ptr<Channel> channel = ChannelOf(publish->offer);
    absl::Status s = channel == nullptr ? absl::NotFoundError("no channel object for the offer")
                                        : table_.Publish(publish->relid, channel.get());
    if (!s.ok()) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      Log(absl::StrCat("publish of relid ", publish->relid, " failed: ", s.ToString()));
    }
  } else if (auto* retire = std::get_if<RetireChannel>(&action)) {
    absl::StatusOr<EventTarget*> retired =
        table_.Retire(retire->relid, absl::Now() + options_.retire_timeout);
    const bool quiesced = retired.ok() || retired.status().code() == absl::StatusCode::kNotFound;
    if (!quiesced) {
      // A dispatch callback is still running on this channel: keep its memory for good.
      errors_.fetch_add(1, std::memory_order_relaxed);
      stuck_offers_.push_back(retire->offer);
      Log(absl::StrCat("retire of relid ", retire->relid, ": ", retired.status().ToString(),
                       "; its ring memory is kept until the bus is destroyed"));
    }
    if (std::shared_ptr<Channel> channel = ChannelOf(retire->offer)) {
      std::optional<ChannelStatus> status = state_->GetChannel(retire->offer);
      absl::Status why;
      if (status.has_value() && status->offer_state == OfferState::kRescinded) {
        why = absl::UnavailableError(
            absl::StrCat("relid ", retire->relid, " was rescinded by the host"));
      } else if (status.has_value() && status->offer_state == OfferState::kDetached) {
        why = absl::UnavailableError(
            absl::StrCat("relid ", retire->relid, ": the connection to the host ended"));
      } else {
        why = absl::CancelledError(absl::StrCat("relid ", retire->relid, " was closed"));
      }
      // A removal retires first and reports OfferRemoved next: mark the channel removed now so
      // that senders see Unavailable from the moment the rings are gone.
      if (!absl::IsCancelled(why)) channel->MarkRemoved(why);
      channel->Detach(why, quiesced);
    }
  } else if (auto* added = std::get_if<OfferAdded>(&action)) {
    offers_added_.fetch_add(1, std::memory_order_relaxed);
    std::shared_ptr<Channel> channel(new Channel(this, backend_, added->offer));
    channels_[added->offer.id] = channel;
    {
      MutexLock lock(&mirror_mu_);
      offers_[added->offer.id] = added->offer;
      channel_mirror_[added->offer.id] = channel;
    }
    OfferInfo offer = added->offer;
    PostDriver([this, offer, channel] { AddDevice(offer, channel); });
  } else if (auto* removed = std::get_if<OfferRemoved>(&action)) {
    offers_removed_.fetch_add(1, std::memory_order_relaxed);
    std::shared_ptr<Channel> channel = ChannelOf(removed->offer);
    if (channel == nullptr) {
      // Nothing to hand to drivers; release at once.
      ReleaseOffer(removed->offer, more);
      return;
    }
    channel->MarkRemoved(removed->reason);
    {
      MutexLock lock(&mirror_mu_);
      offers_.erase(removed->offer);
    }
    const OfferInfo offer = channel->offer();
    const absl::Status reason = removed->reason;
    const OfferId id = removed->offer;
    const bool posted = PostDriver([this, offer, reason, id] {
      RemoveDevice(offer, reason);
      PostControl([this, id] {
        Actions out;
        ReleaseOffer(id, &out);
        Execute(std::move(out));
      });
    });
    if (!posted) ReleaseOffer(id, more);  // drivers already stopped (end of shutdown)
  } else if (auto* release = std::get_if<ReleaseGpadl>(&action)) {
    auto it = gpadl_memory_.find(release->gpadl);
    if (it != gpadl_memory_.end()) {
      const bool stuck = std::find(stuck_offers_.begin(), stuck_offers_.end(), release->offer) !=
                         stuck_offers_.end();
      if (stuck) quarantined_memory_.push_back(std::move(it->second));
      gpadl_memory_.erase(it);  // frees the pages (unless quarantined)
    }
    gpadl_offer_.erase(release->gpadl);
  } else if (auto* complete = std::get_if<Complete>(&action)) {
    auto it = waiters_.find(complete->request);
    if (it != waiters_.end()) {
      CallDone done = std::move(it->second);
      waiters_.erase(it);
      done(CallResult{complete->status, complete->gpadl, complete->version});
    }
  } else if (auto* arm = std::get_if<ArmTimer>(&action)) {
    if (auto it = timers_.find(arm->request); it != timers_.end()) {
      timer_queue_.erase(it->second);
      timers_.erase(it);
    }
    timers_[arm->request] = timer_queue_.emplace(arm->deadline, arm->request);
  } else if (auto* cancel = std::get_if<CancelTimer>(&action)) {
    if (auto it = timers_.find(cancel->request); it != timers_.end()) {
      timer_queue_.erase(it->second);
      timers_.erase(it);
    }
  } else if (auto* ignored = std::get_if<InputIgnored>(&action)) {
    ++ignored_logged_;
    if (ignored_logged_ <= kIgnoredLogLimit || ignored_logged_ % 1000 == 0) {
      Log(absl::StrCat("ignored host input #", ignored_logged_, " (",
                       IgnoreReasonName(ignored->reason), "): ", ignored->status.ToString()));
    }
  }
}

void ChannelBus::FireTimers() {
  const absl::Time now = absl::Now();
  while (!timer_queue_.empty() && timer_queue_.begin()->first <= now) {
    const RequestId request = timer_queue_.begin()->second;
    timer_queue_.erase(timer_queue_.begin());
    timers_.erase(request);
    Actions out;
    state_->OnTimer(request, now, &out);
    Execute(std::move(out));
  }
}

void ChannelBus::UpdateMirrors() {
  phase_.store(state_->phase(), std::memory_order_relaxed);
  version_.store(state_->version(), std::memory_order_relaxed);
  MutexLock lock(&mirror_mu_);
  host_inputs_ignored_ = state_->counters().ignored_total;
}

void ChannelBus::ReleaseOffer(OfferId offer, Actions* out) {
  if (absl::Status s = state_->ReleaseOffer(offer, out); !s.ok()) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    Log(absl::StrCat("release of offer ", offer.value(), ": ", s.ToString()));
  }
  auto it = channels_.find(offer);
  if (it == channels_.end()) return;
  std::shared_ptr<Channel> channel = std::move(it->second);
  channels_.erase(it);
  MutexLock lock(&mirror_mu_);
  channel_mirror_.erase(offer);
  offers_.erase(offer);
  AddStats(released_channel_stats_, channel->stats());
}

// ---------------------------------------------------------------------------------------------
// Channel calls: the control-thread halves
// ---------------------------------------------------------------------------------------------

absl::StatusOr<RequestId> ChannelBus::StartOpen(const std::shared_ptr<Channel>& channel,
                                                const ChannelOpenOptions& options,
                                                absl::Time deadline, Actions* out) {
  if (!channels_.contains(channel->id())) {
    return absl::UnavailableError(
        absl::StrCat("open of relid ", channel->relid(), ": the offer was released"));
  }
  const uint32_t pages = options.outbound_ring_pages + options.inbound_ring_pages;
  absl::StatusOr<Pages> memory = backend_->AllocatePages(pages);
  if (!memory.ok()) {
    return absl::Status(memory.status().code(),
                        absl::StrCat("open of relid ", channel->relid(), ": ", pages,
                                     " ring pages: ", memory.status().message()));
  }
  if (absl::Status s = channel->AttachRings(*memory, options.outbound_ring_pages, options);
      !s.ok()) {
    return s;
  }
  OpenParams params;
  params.ring_pfns.assign(memory->pfns().begin(), memory->pfns().end());
  params.outbound_ring_pages = options.outbound_ring_pages;
  params.target_vp = options.target_vp;
  params.user_data = options.user_data;
  const RequestId id = state_->Open(channel->id(), std::move(params), deadline, out);
  if (std::optional<uint32_t> handle = state_->RequestGpadl(id)) {
    // The host may map these pages from now until the handle's ReleaseGpadl.
    gpadl_memory_[*handle] = std::move(*memory);
    gpadl_offer_[*handle] = channel->id();
  }
  // Otherwise the open finished at once (refused before any GPADL): the pages, never shown to
  // the host, are freed on return; FinishOpen detaches the rings first.
  return id;
}

void ChannelBus::FinishOpen(const std::shared_ptr<Channel>& channel, const absl::Status& status) {
  if (!status.ok() && table_.Lookup(channel->relid()) == channel.get()) {
    // BusState retires a published channel whose open fails; this only guards the contract.
    table_.Retire(channel->relid(), absl::Now() + options_.retire_timeout).IgnoreError();
  }
  channel->OpenFinished(status);
}

absl::StatusOr<RequestId> ChannelBus::StartClose(const std::shared_ptr<Channel>& channel,
                                                 absl::Time deadline, Actions* out) {
  if (!channels_.contains(channel->id())) return RequestId();  // released: closed
  std::optional<ChannelStatus> status = state_->GetChannel(channel->id());
  if (!status.has_value() || status->channel_state == ChannelState::kClosed) {
    return RequestId();  // already closed (or the offer is gone, which closed it)
  }
  return state_->Close(channel->id(), deadline, out);
}

absl::StatusOr<RequestId> ChannelBus::StartCreateGpadl(const std::shared_ptr<Channel>& channel,
                                                       size_t page_count, absl::Time deadline,
                                                       GpadlBuffer* buffer, Actions* out) {
  if (!channels_.contains(channel->id())) {
    return absl::UnavailableError(
        absl::StrCat("GPADL for relid ", channel->relid(), ": the offer was released"));
  }
  absl::StatusOr<Pages> memory = backend_->AllocatePages(page_count);
  if (!memory.ok()) {
    return absl::Status(memory.status().code(), absl::StrCat("GPADL for relid ", channel->relid(),
                                                             ": ", memory.status().message()));
  }
  GpadlParams params;
  params.pfns.assign(memory->pfns().begin(), memory->pfns().end());
  const RequestId id = state_->CreateGpadl(channel->id(), params, deadline, out);
  if (std::optional<uint32_t> handle = state_->RequestGpadl(id)) {
    buffer->memory = memory->bytes();
    buffer->pfns = params.pfns;
    gpadl_memory_[*handle] = std::move(*memory);
    gpadl_offer_[*handle] = channel->id();
  }
  return id;
}

// ---------------------------------------------------------------------------------------------
// The driver thread
// ---------------------------------------------------------------------------------------------

void ChannelBus::AddDevice(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) {
  const DriverSpec* spec;
  {
    MutexLock lock(&devices_mu_);
    spec = devices_.Add(offer);
  }
  if (spec != nullptr) ProbeDevice(offer, spec, channel);
  if (options_.on_offer) options_.on_offer(channel);
}

void ChannelBus::ProbeDevice(const OfferInfo& offer, const DriverSpec* spec,
                             const std::shared_ptr<Channel>& channel) {
  std::unique_ptr<Driver> driver = spec->factory(offer);
  absl::Status probed =
      driver == nullptr
          ? absl::InternalError(absl::StrCat("driver factory of ", spec->name, " returned null"))
          : driver->Probe(*channel);
  MutexLock lock(&devices_mu_);
  if (probed.ok()) {
    if (absl::Status s = devices_.Bind(offer.id, std::move(driver)); !s.ok()) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      Log(absl::StrCat("binding ", spec->name, " to relid ", offer.relid, ": ", s.ToString()));
    }
    return;
  }
  errors_.fetch_add(1, std::memory_order_relaxed);
  Log(absl::StrCat("driver ", spec->name, " failed to probe relid ", offer.relid, ": ",
                   probed.ToString()));
  devices_.ProbeFailed(offer.id, probed).IgnoreError();
}

void ChannelBus::RemoveDevice(const OfferInfo& offer, const absl::Status& reason) {
  std::unique_ptr<Driver> driver;
  {
    MutexLock lock(&devices_mu_);
    driver = devices_.Remove(offer.id);
  }
  if (driver != nullptr) driver->Remove();
  driver.reset();
  if (options_.on_offer_removed) options_.on_offer_removed(offer, reason);
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

absl::Status ChannelBus::CloseAllChannels(absl::Time deadline) {
  struct Count {
    Mutex mu;
    CondVar cv;
    size_t pending ABSL_GUARDED_BY(mu) = 0;
    bool started ABSL_GUARDED_BY(mu) = false;
    absl::Status first ABSL_GUARDED_BY(mu);
  };
  auto count = std::make_shared<Count>();
  const bool posted = PostControl([this, count, deadline] {
    Actions out;
    size_t started = 0;
    std::vector<RequestId> ids;
    for (const auto& [id, channel] : channels_) {
      std::optional<ChannelStatus> status = state_->GetChannel(id);
      if (!status.has_value() || status->offer_state != OfferState::kActive ||
          status->channel_state == ChannelState::kClosed ||
          status->channel_state == ChannelState::kClosing) {
        continue;
      }
      ids.push_back(state_->Close(id, deadline, &out));
      ++started;
    }
    {
      MutexLock lock(&count->mu);
      count->pending += started;
      count->started = true;
      count->cv.SignalAll();
    }
    for (RequestId id : ids) {
      waiters_[id] = [count](const CallResult& result) {
        MutexLock lock(&count->mu);
        if (!result.status.ok() && count->first.ok()) count->first = result.status;
        --count->pending;
        count->cv.SignalAll();
      };
    }
    Execute(std::move(out));
  });
  if (!posted) return absl::OkStatus();
  MutexLock lock(&count->mu);
  if (!count->cv.AwaitWithDeadline(&count->mu, deadline + options_.call_grace, [&] {
        count->mu.AssertHeld();
        return count->started && count->pending == 0;
      })) {
    return absl::DeadlineExceededError("shutdown: channels still closing at the deadline");
  }
  return count->first;
}

absl::Status ChannelBus::Quiesce(absl::Time deadline) {
  // Three hops: control (what is queued there, e.g. removals being executed) → driver (the
  // removals, which queue releases on the control thread) → control (the releases).
  auto waiter = std::make_shared<Waiter>();
  auto finish = [waiter] { waiter->Finish(CallResult{}); };
  const bool posted = PostControl([this, finish] {
    if (!PostDriver([this, finish] {
          if (!PostControl(finish)) finish();
        })) {
      finish();
    }
  });
  if (!posted) return absl::OkStatus();
  CallResult result;
  if (!waiter->Wait(deadline + options_.call_grace, &result)) {
    return absl::DeadlineExceededError("shutdown: drivers still busy at the deadline");
  }
  return absl::OkStatus();
}

absl::Status ChannelBus::Shutdown(absl::Time deadline) {
  if (OnControlThread() || OnDriverThread() || internal::InDispatch()) {
    return absl::FailedPreconditionError(
        "Shutdown called from the bus's own thread or a dispatch callback would deadlock");
  }
  MutexLock serial(&shutdown_mu_);
  if (shut_down_.load(std::memory_order_relaxed)) return absl::OkStatus();
  if (!control_thread_.joinable()) {  // Start failed: nothing runs
    dispatcher_.reset();
    shut_down_.store(true, std::memory_order_relaxed);
    return absl::OkStatus();
  }
  absl::Status first;
  auto note = [&first](absl::Status s) {
    if (first.ok() && !s.ok()) first = std::move(s);
  };

  // 1. Close every open channel (drivers keep their binding until the offers go).
  if (phase() == BusPhase::kConnected) note(CloseAllChannels(deadline));

  // 2. Unload (3.0+): the host forgets the guest's channels; every offer is removed.
  bool dropped = false;
  if (phase() == BusPhase::kConnected && protocol::HasUnload(version())) {
    CallResult unloaded = AwaitCall(
        [this, deadline](Actions* out) -> absl::StatusOr<RequestId> {
          return state_->Unload(deadline, out);
        },
        nullptr, deadline, "unload");
    note(unloaded.status);
    dropped = unloaded.status.ok();
  }
  // 3. Otherwise (older version, failed unload) drop the offers locally.
  if (!dropped && phase() != BusPhase::kDisconnected) {
    PostControl([this] {
      Actions out;
      state_->OnLinkLost(absl::CancelledError("the channel bus is shutting down"), &out);
      Execute(std::move(out));
    });
  }
  // 4. Let the drivers' Remove calls and the releases they queue run.
  note(Quiesce(deadline));

  // 5. No more host input; then stop the threads (each runs what is still queued).
  backend_->Stop();
  driver_queue_.Close();
  if (driver_thread_.joinable()) driver_thread_.join();
  control_queue_.Close();
  if (control_thread_.joinable()) control_thread_.join();

  // 6. The threads are gone: this thread owns the control state now. Calls still waiting fail;
  // channels become inert; memory goes back to the backend.
  for (auto& [id, done] : waiters_) {
    done(CallResult{absl::CancelledError("the channel bus shut down")});
  }
  waiters_.clear();
  for (auto& [id, channel] : channels_) {
    if (table_.Lookup(channel->relid()) == channel.get()) {
      table_.Retire(channel->relid(), absl::Now() + options_.retire_timeout).IgnoreError();
    }
    channel->MarkBusGone();
  }
  {
    MutexLock lock(&mirror_mu_);
    for (auto& [id, channel] : channel_mirror_) {
      AddStats(released_channel_stats_, channel->stats());
    }
    channel_mirror_.clear();
    offers_.clear();
  }
  channels_.clear();
  gpadl_memory_.clear();
  gpadl_offer_.clear();
  quarantined_memory_.clear();
  dispatcher_.reset();
  phase_.store(BusPhase::kDisconnected, std::memory_order_relaxed);
  shut_down_.store(true, std::memory_order_relaxed);
  return first;
}

}  // namespace vbus
