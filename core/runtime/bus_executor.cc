// BusExecutor: inputs, calls and carrying out BusState's actions. Receive quiescence (retiring
// channels) is in bus_executor_retire.cc.
#include "core/runtime/bus_executor.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data/host_text.h"

namespace vbus {
namespace {

// Ignored host inputs are logged individually up to this many, then every 1000th.
constexpr uint64_t kIgnoredLogLimit = 20;

void Add(std::atomic<uint64_t>& counter) { counter.fetch_add(1, std::memory_order_relaxed); }

}  // namespace

BusConfig BusConfigFor(const ContactInfo& contact, uint32_t max_version) {
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

BusExecutor::BusExecutor(Backend* backend, ChannelTable* table, ChannelLink* link,
                         ExecutorListener* listener, BusConfig config, ExecutorOptions options)
    : backend_(backend),
      table_(table),
      link_(link),
      listener_(listener),
      options_(std::move(options)),
      state_(config) {}

BusExecutor::~BusExecutor() = default;

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

void BusExecutor::OnHostMessage(const v1::ControlMessage& message) {
  if (stopped_) return;
  Add(counters_.messages_received);
  Actions out;
  state_.OnHostMessage(message, &out);
  Execute(std::move(out));
}

void BusExecutor::OnLinkLost(const absl::Status& status) {
  if (stopped_) return;
  Actions out;
  state_.OnLinkLost(status, &out);
  Execute(std::move(out));
}

void BusExecutor::Disconnect(const absl::Status& reason) { OnLinkLost(reason); }

void BusExecutor::RunDue() {
  if (stopped_) return;
  const absl::Time now = listener_->Now();
  FireTimers(now);
  if (!retiring_.empty() && now >= next_retire_check_) RecheckRetiring();
  RetryUndos(now);
  RetryTeardowns(now);
  ExpireHeldCloses(now);
  ReportStalls(now);
}

absl::Time BusExecutor::next_wakeup() const {
  absl::Time next = timer_queue_.empty() ? absl::InfiniteFuture() : timer_queue_.begin()->first;
  if (!retiring_.empty()) next = std::min(next, next_retire_check_);
  if (!undo_retries_.empty()) next = std::min(next, undo_retries_.begin()->first);
  next = std::min(next, teardown_retry_at_);
  for (const auto& [offer, entry] : retiring_) {
    for (const HeldClose& held : entry.held_closes) next = std::min(next, held.deadline);
    if (!entry.reported) next = std::min(next, entry.since + options_.stall_report);
  }
  return next;
}

void BusExecutor::FireTimers(absl::Time now) {
  while (!timer_queue_.empty() && timer_queue_.begin()->first <= now) {
    const RequestId request = timer_queue_.begin()->second;
    timer_queue_.erase(timer_queue_.begin());
    timers_.erase(request);
    Actions out;
    state_.OnTimer(request, now, &out);
    Execute(std::move(out));
  }
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

void BusExecutor::Track(RequestId id, PendingCall call) { calls_[id] = std::move(call); }

void BusExecutor::Connect(absl::Time deadline, CallDone done) {
  if (stopped_) {
    done.Finish({absl::FailedPreconditionError("the channel bus is shut down")});
    return;
  }
  Actions out;
  const RequestId id = state_.Connect(deadline, &out);
  Track(id, PendingCall{RequestKind::kConnect, nullptr, std::move(done), deadline});
  Execute(std::move(out));
}

void BusExecutor::Open(const std::shared_ptr<Channel>& channel, const ChannelOpenOptions& options,
                       absl::Time deadline, CallDone done) {
  auto fail = [&](absl::Status s) { done.Finish({std::move(s)}); };
  const std::string name = absl::StrCat("open of relid ", channel->relid());
  if (stopped_) return fail(absl::FailedPreconditionError("the channel bus is shut down"));
  if (ChannelOf(channel->id()) != channel) {
    return fail(absl::UnavailableError(absl::StrCat(name, ": the offer was released")));
  }
  if (retiring_.contains(channel->id())) {
    return fail(absl::UnavailableError(
        absl::StrCat(name, ": a receive callback of its previous open is still running; retry")));
  }
  // Checked before anything is touched: a refused open leaves an open channel as it is.
  if (absl::Status s = channel->CheckCanOpen(); !s.ok()) return fail(std::move(s));
  if (absl::Status s = CheckTargetVp(name, options.target_vp); !s.ok()) return fail(std::move(s));
  const uint32_t pages = options.outbound_ring_pages + options.inbound_ring_pages;
  absl::StatusOr<Pages> memory = backend_->AllocatePages(pages, options_.page_sharing);
  if (!memory.ok()) {
    return fail(
        absl::Status(memory.status().code(),
                     absl::StrCat(name, ": ", pages, " ring pages: ", memory.status().message())));
  }
  if (absl::Status s = channel->AttachRings(*memory, options.outbound_ring_pages, options);
      !s.ok()) {
    return fail(std::move(s));
  }
  OpenParams params;
  params.ring_pfns.assign(memory->pfns().begin(), memory->pfns().end());
  params.outbound_ring_pages = options.outbound_ring_pages;
  params.target_vp = options.target_vp;
  params.user_data = options.user_data;
  Actions out;
  const RequestId id = state_.Open(channel->id(), std::move(params), deadline, &out);
  if (std::optional<uint32_t> handle = state_.RequestGpadl(id)) {
    // The host may map these pages from now until the handle's ReleaseGpadl.
    gpadl_memory_[*handle] = FiledMemory{*std::move(memory), channel->id()};
  }
  target_vp_[channel->id()] = options.target_vp;
  Track(id, PendingCall{RequestKind::kOpen, channel, std::move(done), deadline});
  Execute(std::move(out));
  // Refused before any GPADL: the rings were never shown to the host. The open's completion
  // (already executed) started letting go of the receive side; the pages stay until it is done.
  if (memory.ok() && !memory->empty()) FreeOrHold(channel->id(), *std::move(memory));
}

void BusExecutor::Close(const std::shared_ptr<Channel>& channel, absl::Time deadline,
                        CallDone done) {
  const OfferId offer = channel->id();
  if (stopped_) {
    done.Finish({absl::FailedPreconditionError("the channel bus is shut down")});
    return;
  }
  std::optional<ChannelStatus> status = state_.GetChannel(offer);
  if (ChannelOf(offer) != channel || !status.has_value() ||
      status->channel_state == ChannelState::kClosed) {
    // Already closed (or the offer is gone, which closed it). OK once no callback runs.
    CallResult ok;
    if (auto it = retiring_.find(offer); it != retiring_.end()) {
      it->second.held_closes.push_back(HeldClose{std::move(done), ok, deadline});
      return;
    }
    done.Finish(ok);
    return;
  }
  Actions out;
  const RequestId id = state_.Close(offer, deadline, &out);
  Track(id, PendingCall{RequestKind::kClose, channel, std::move(done), deadline});
  Execute(std::move(out));
}

void BusExecutor::CreateGpadl(const std::shared_ptr<Channel>& channel, size_t page_count,
                              absl::Time deadline, CallDone done) {
  const std::string name = absl::StrCat("GPADL for relid ", channel->relid());
  if (stopped_ || ChannelOf(channel->id()) != channel) {
    done.Finish({stopped_
                     ? absl::FailedPreconditionError("the channel bus is shut down")
                     : absl::UnavailableError(absl::StrCat(name, ": the offer was released"))});
    return;
  }
  absl::StatusOr<Pages> memory = backend_->AllocatePages(page_count, options_.page_sharing);
  if (!memory.ok()) {
    done.Finish({absl::Status(memory.status().code(),
                              absl::StrCat(name, ": ", memory.status().message()))});
    return;
  }
  GpadlParams params;
  params.pfns.assign(memory->pfns().begin(), memory->pfns().end());
  Actions out;
  const RequestId id = state_.CreateGpadl(channel->id(), params, deadline, &out);
  if (std::optional<uint32_t> handle = state_.RequestGpadl(id)) {
    gpadl_memory_[*handle] = FiledMemory{*std::move(memory), channel->id()};
  }
  Track(id, PendingCall{RequestKind::kGpadlCreate, channel, std::move(done), deadline});
  Execute(std::move(out));
}

void BusExecutor::TeardownGpadl(const std::shared_ptr<Channel>& channel, uint32_t handle,
                                absl::Time deadline, CallDone done) {
  if (stopped_ || ChannelOf(channel->id()) != channel) {
    // Released: nothing is mapped any more.
    done.Finish({stopped_ ? absl::FailedPreconditionError("the channel bus is shut down")
                          : absl::OkStatus()});
    return;
  }
  Actions out;
  const RequestId id = state_.TeardownGpadl(channel->id(), handle, deadline, &out);
  Track(id, PendingCall{RequestKind::kGpadlTeardown, channel, std::move(done), deadline});
  Execute(std::move(out));
}

absl::Status BusExecutor::CheckTargetVp(absl::string_view what, uint32_t target_vp) const {
  // The host signals a channel in its target VP's event flags: one the backend does not take
  // events on would never be scanned (docs/protocol.md §12).
  if (target_vp < backend_->vp_count()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, ": target VP ", target_vp,
                                                 ", but the backend takes events on VPs 0..",
                                                 backend_->vp_count() - 1));
}

void BusExecutor::ModifyChannel(const std::shared_ptr<Channel>& channel, uint32_t target_vp,
                                absl::Time deadline, CallDone done) {
  if (stopped_ || ChannelOf(channel->id()) != channel) {
    done.Finish({stopped_ ? absl::FailedPreconditionError("the channel bus is shut down")
                          : absl::UnavailableError(absl::StrCat(
                                "modify of relid ", channel->relid(), ": offer released"))});
    return;
  }
  if (absl::Status s = CheckTargetVp(absl::StrCat("modify of relid ", channel->relid()), target_vp);
      !s.ok()) {
    done.Finish({std::move(s)});
    return;
  }
  PendingCall call{RequestKind::kModifyChannel, channel, std::move(done), deadline};
  call.previous_vp = target_vp_[channel->id()];
  Actions out;
  const RequestId id = state_.ModifyChannel(channel->id(), target_vp, deadline, &out);
  Track(id, std::move(call));
  target_vp_[channel->id()] = target_vp;
  Execute(std::move(out));
}

void BusExecutor::Unload(absl::Time deadline, CallDone done, UnloadMode mode) {
  if (stopped_) {
    done.Finish({absl::FailedPreconditionError("the channel bus is shut down")});
    return;
  }
  Actions out;
  const RequestId id = state_.Unload(deadline, &out, mode);
  Track(id, PendingCall{RequestKind::kUnload, nullptr, std::move(done), deadline});
  Execute(std::move(out));
}

void BusExecutor::CloseAll(absl::Time deadline, CallDone done) {
  struct Count {
    size_t pending = 0;
    bool started = false;
    absl::Status first;
    CallDone done;
    void Check() {
      if (started && pending == 0) done.Finish({first});
    }
  };
  auto count = std::make_shared<Count>();
  count->done = std::move(done);
  std::vector<std::shared_ptr<Channel>> open;
  for (const auto& [id, channel] : channels_) {
    std::optional<ChannelStatus> status = state_.GetChannel(id);
    if (!status.has_value() || status->offer_state != OfferState::kActive ||
        status->channel_state == ChannelState::kClosed ||
        status->channel_state == ChannelState::kClosing) {
      continue;
    }
    open.push_back(channel);
  }
  // Sub-channels first: their CloseChannel reaches the host before their primary's.
  std::stable_partition(open.begin(), open.end(), [](const std::shared_ptr<Channel>& c) {
    return c->offer().is_sub_channel();
  });
  count->pending = open.size();
  for (const std::shared_ptr<Channel>& channel : open) {
    Close(channel, deadline, CallDone::Async([count](const CallResult& r) {
            if (!r.status.ok() && count->first.ok()) count->first = r.status;
            --count->pending;
            count->Check();
          }));
  }
  count->started = true;
  count->Check();
}

void BusExecutor::ReleaseOffer(OfferId offer) {
  if (stopped_) return;
  Actions out;
  if (absl::Status s = state_.ReleaseOffer(offer, &out); !s.ok()) {
    Error(absl::StrCat("release of offer ", offer.value(), ": ", s.ToString()));
  }
  auto it = channels_.find(offer);
  if (it != channels_.end()) {
    std::shared_ptr<Channel> channel = std::move(it->second);
    channels_.erase(it);
    target_vp_.erase(offer);
    MutexLock lock(&mirror_mu_);
    channel_mirror_.erase(offer);
    offers_.erase(offer);
    released_stats_.Add(channel->stats());
  }
  Execute(std::move(out));
}

void BusExecutor::Stop() {
  if (stopped_) return;
  stopped_ = true;
  // Calls still waiting fail; channels become inert; memory goes back to the backend. No
  // dispatcher runs (the backend stopped), so every receive side can go at once.
  std::map<RequestId, PendingCall> calls = std::move(calls_);
  calls_.clear();
  for (auto& [id, call] : calls) {
    call.done.Finish({absl::CancelledError("the channel bus shut down")});
  }
  {
    // Taken out first: a completion may start a call of its own.
    std::map<OfferId, Retiring> retiring = std::move(retiring_);
    retiring_.clear();
    for (auto& [offer, entry] : retiring) {
      for (HeldClose& held : entry.held_closes) held.done.Finish(held.result);
    }
  }  // held memory goes back to the backend here
  for (auto& [id, channel] : channels_) {
    table_->Unpublish(channel->relid(), channel->event_target()).IgnoreError();
    channel->MarkBusGone();
  }
  {
    MutexLock lock(&mirror_mu_);
    for (auto& [id, channel] : channel_mirror_) released_stats_.Add(channel->stats());
    channel_mirror_.clear();
    offers_.clear();
  }
  channels_.clear();
  gpadl_memory_.clear();
  timer_queue_.clear();
  undoing_.clear();
  undo_retries_.clear();
  teardown_retry_at_ = absl::InfiniteFuture();
  timers_.clear();
  phase_.store(BusPhase::kDisconnected, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------
// Carrying out actions
// ---------------------------------------------------------------------------------------------

void BusExecutor::Execute(Actions actions) {
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
    // Carrying out the action fed BusState another input (a failed post or publish, an undo):
    // its actions come after the rest of the list.
    UpdateMirrors();
    for (Action& a : more) todo.push_back(std::move(a));
  }
  // Teardowns go unsent only when a post fails; while retries run, their count is watched.
  if (undone_in_pass_ || teardown_backoff_ != absl::ZeroDuration()) ScheduleTeardownRetry();
  undone_in_pass_ = false;
  UpdateMirrors();
}

void BusExecutor::ExecuteOne(Action& action, Actions* more) {
  if (auto* send = std::get_if<SendMessage>(&action)) {
    Post(*send, more);
  } else if (auto* ready = std::get_if<ConnectionReady>(&action)) {
    backend_->SetConnection(NegotiatedConnection{ready->version, ready->message_connection_id});
  } else if (auto* publish = std::get_if<PublishChannel>(&action)) {
    Publish(*publish, more);
  } else if (auto* retire = std::get_if<RetireChannel>(&action)) {
    std::shared_ptr<Channel> channel = ChannelOf(retire->offer);
    if (channel == nullptr) return;
    std::optional<ChannelStatus> status = state_.GetChannel(retire->offer);
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
    BeginRetire(channel, retire->relid, /*published=*/true, why);
  } else if (auto* added = std::get_if<OfferAdded>(&action)) {
    Added(*added);
  } else if (auto* removed = std::get_if<OfferRemoved>(&action)) {
    Removed(*removed, more);
  } else if (auto* parked = std::get_if<OfferParked>(&action)) {
    Parked(*parked);
  } else if (auto* resumed = std::get_if<OfferResumed>(&action)) {
    Resumed(*resumed);
  } else if (auto* release = std::get_if<ReleaseGpadl>(&action)) {
    Released(*release);
  } else if (auto* complete = std::get_if<Complete>(&action)) {
    Completed(*complete, more);
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
    Ignored(*ignored);
  }
}

void BusExecutor::Post(const SendMessage& send, Actions* more) {
  const v1::ControlMessage& message = send.message;
  // E.g. the OpenChannel behind a failed publish, or the ring teardown behind a CloseChannel
  // the host never received.
  if (undone_in_pass_ && !state_.PostWanted(message)) return;
  absl::Status posted = backend_->PostMessage(message);
  if (posted.ok()) {
    Add(counters_.messages_sent);
    if (send.completes.valid()) state_.OnPosted(send.completes, more);
    return;
  }
  Add(counters_.post_failures);
  listener_->Log(absl::StrCat("post of ", DescribeControlMessage(message),
                              " failed: ", HostText(posted.ToString())));
  undone_in_pass_ = true;
  state_.OnPostFailed(message, posted, more);
}

void BusExecutor::Publish(const PublishChannel& publish, Actions* more) {
  std::shared_ptr<Channel> channel = ChannelOf(publish.offer);
  absl::Status s = channel == nullptr ? absl::NotFoundError("no channel object for the offer")
                                      : table_->Publish(publish.relid, channel->event_target());
  if (s.ok()) return;
  Error(absl::StrCat("publish of relid ", publish.relid, " failed: ", s.ToString()));
  undone_in_pass_ = true;
  state_.OnPublishFailed(publish.offer, s, more);
}

void BusExecutor::Added(const OfferAdded& added) {
  Add(counters_.offers_added);
  std::shared_ptr<Channel> channel(new Channel(link_, backend_, added.offer, options_.fault));
  channels_[added.offer.id] = channel;
  {
    MutexLock lock(&mirror_mu_);
    offers_[added.offer.id] = added.offer;
    channel_mirror_[added.offer.id] = channel;
  }
  listener_->OfferAdded(added.offer, channel);
}

void BusExecutor::Removed(const OfferRemoved& removed, Actions* more) {
  Add(counters_.offers_removed);
  std::shared_ptr<Channel> channel = ChannelOf(removed.offer);
  {
    MutexLock lock(&mirror_mu_);
    offers_.erase(removed.offer);
  }
  if (channel == nullptr) {
    // Nothing to hand to drivers: release at once.
    if (absl::Status s = state_.ReleaseOffer(removed.offer, more); !s.ok()) {
      Error(absl::StrCat("release of offer ", removed.offer.value(), ": ", s.ToString()));
    }
    return;
  }
  channel->MarkRemoved(removed.reason);
  if (auto it = retiring_.find(removed.offer); it != retiring_.end()) {
    // Its driver's Remove must not race the callback still running: passed on once done.
    it->second.held_removal = removed.reason;
    return;
  }
  listener_->OfferRemoved(channel->offer(), channel, removed.reason);
}

void BusExecutor::Released(const ReleaseGpadl& release) {
  auto it = gpadl_memory_.find(release.gpadl);
  if (it == gpadl_memory_.end()) return;
  FiledMemory filed = std::move(it->second);
  gpadl_memory_.erase(it);
  FreeOrHold(filed.offer, std::move(filed.pages));
}

void BusExecutor::Completed(const Complete& complete, Actions* more) {
  auto it = calls_.find(complete.request);
  if (it == calls_.end()) {
    UndoCompleted(complete);  // an internal call (an undo): nobody waits for it
    return;
  }
  PendingCall call = std::move(it->second);
  calls_.erase(it);
  CallResult result(complete.status);
  result.gpadl = complete.gpadl;
  result.version = complete.version;
  if (complete.kind == RequestKind::kGpadlCreate && complete.status.ok()) {
    if (auto m = gpadl_memory_.find(complete.gpadl); m != gpadl_memory_.end()) {
      result.memory = m->second.pages.bytes();
      result.pfns.assign(m->second.pages.pfns().begin(), m->second.pages.pfns().end());
    }
  }
  const std::shared_ptr<Channel>& channel = call.channel;
  if (complete.kind == RequestKind::kOpen && !complete.status.ok() && channel != nullptr) {
    // Sending stops; the receive side goes once no poller or callback holds it (a published
    // channel was retired by BusState already).
    BeginRetire(channel, channel->relid(), /*published=*/false, complete.status);
  }
  if (complete.kind == RequestKind::kClose && channel != nullptr) {
    if (auto r = retiring_.find(complete.offer); r != retiring_.end()) {
      // OK only once no callback runs; held until then (or until the close's deadline).
      r->second.held_closes.push_back(HeldClose{std::move(call.done), result, call.deadline});
      return;
    }
  }
  const bool undoable =
      complete.status.ok() &&
      (complete.kind == RequestKind::kOpen || complete.kind == RequestKind::kGpadlCreate ||
       complete.kind == RequestKind::kModifyChannel || complete.kind == RequestKind::kConnect);
  if (!call.done.claim()) {
    // The caller gave up first: it was told DeadlineExceeded, so undo what succeeded.
    if (undoable && !Planted(PlantedFault::kCompleteAbandoned)) {
      Undo(call, complete, more);
      return;
    }
    if (!undoable) return;
  }
  if (complete.kind == RequestKind::kOpen && complete.status.ok()) channel->OpenSucceeded();
  call.done.complete(result);
}

void BusExecutor::Ignored(const InputIgnored& ignored) {
  Add(counters_.host_inputs_ignored);
  ++ignored_logged_;
  if (ignored_logged_ <= kIgnoredLogLimit || ignored_logged_ % 1000 == 0) {
    listener_->Log(absl::StrCat("ignored host input #", ignored_logged_, " (",
                                IgnoreReasonName(ignored.reason),
                                "): ", HostText(ignored.status.ToString())));
  }
}

// ---------------------------------------------------------------------------------------------
// Snapshots and helpers
// ---------------------------------------------------------------------------------------------

void BusExecutor::UpdateMirrors() {
  phase_.store(state_.phase(), std::memory_order_relaxed);
  version_.store(state_.version(), std::memory_order_relaxed);
}

std::shared_ptr<Channel> BusExecutor::ChannelOf(OfferId offer) const {
  auto it = channels_.find(offer);
  return it == channels_.end() ? nullptr : it->second;
}

void BusExecutor::Error(absl::string_view line) {
  Add(counters_.errors);
  listener_->Log(line);
}

std::vector<OfferInfo> BusExecutor::Offers() const {
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

std::shared_ptr<Channel> BusExecutor::GetChannel(OfferId offer) const {
  MutexLock lock(&mirror_mu_);
  auto it = channel_mirror_.find(offer);
  return it == channel_mirror_.end() ? nullptr : it->second;
}

std::shared_ptr<Channel> BusExecutor::FindChannel(uint32_t relid) const {
  MutexLock lock(&mirror_mu_);
  for (const auto& [id, offer] : offers_) {
    if (offer.relid != relid) continue;
    auto it = channel_mirror_.find(id);
    return it == channel_mirror_.end() ? nullptr : it->second;
  }
  return nullptr;
}

std::shared_ptr<Channel> BusExecutor::FindChannel(const Guid& instance,
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

std::vector<std::shared_ptr<Channel>> BusExecutor::Channels() const {
  std::vector<std::shared_ptr<Channel>> live;
  MutexLock lock(&mirror_mu_);
  for (const auto& [id, channel] : channel_mirror_) live.push_back(channel);
  return live;
}

ExecutorCounters BusExecutor::counters() const {
  ExecutorCounters c;
  auto get = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };
  c.messages_sent = get(counters_.messages_sent);
  c.messages_received = get(counters_.messages_received);
  c.host_inputs_ignored = get(counters_.host_inputs_ignored);
  c.post_failures = get(counters_.post_failures);
  c.offers_added = get(counters_.offers_added);
  c.offers_removed = get(counters_.offers_removed);
  c.offers_resumed = get(counters_.offers_resumed);
  c.errors = get(counters_.errors);
  c.calls_undone = get(counters_.calls_undone);
  c.deferred_retires = get(counters_.deferred_retires);
  MutexLock lock(&mirror_mu_);
  c.released_channels = released_stats_;
  return c;
}

}  // namespace vbus
