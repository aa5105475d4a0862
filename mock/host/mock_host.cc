#include "mock/host/mock_host.h"

#include <cstdio>
#include <deque>
#include <optional>
#include <set>
#include <utility>
#include <variant>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"

namespace vbus::mock {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

template <typename T>
grpc::Status Reply(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return ToGrpc(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

// How long a doorbell thread sleeps when no monitored channel needs scanning (it wakes at
// once when rung; the period only bounds how late it notices a shutdown).
constexpr absl::Duration kIdleScanPeriod = absl::Milliseconds(100);
// How often doorbell threads publish SIGNALS_* events.
constexpr absl::Duration kSignalEventPeriod = absl::Milliseconds(250);

}  // namespace

// --- GuestStream: the GuestLink.Connect reactor ---------------------------------------------

// One guest's stream. Reads are chained (one outstanding at a time); writes are queued and
// sent one at a time; Finish waits for an in-flight write (gRPC allows at most one write in
// flight, and Finish counts as one). Deleted by gRPC's OnDone.
//
// Batching: while a write is in flight, or while the stream is held (the handling of one
// incoming message, so that all its answers leave together), messages only queue. The next
// write then takes every consecutive control message at the head of the queue as one
// ControlBatch (up to CONTROL_BATCH_MAX_MESSAGES and about kBatchBytes), if the guest said in
// its Attach that it accepts batches; anything else (attached, errors, signals) goes alone, so
// the order of all messages is kept.
class GuestStream final : public grpc::ServerBidiReactor<v1::GuestToHost, v1::HostToGuest> {
 public:
  // A batch stops growing once its messages reach this many bytes (far below gRPC's 4 MiB
  // default receive limit; the host's control messages are small anyway).
  static constexpr size_t kBatchBytes = size_t{1} << 20;

  explicit GuestStream(MockHost* host) : host_(host) {}

  // Starts reading unless the stream was finished meanwhile.
  void StartReading() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_) StartRead(&in_);
  }

  // Whether the guest accepts HostToGuest.batch (from its Attach; before `attached` is queued).
  void SetAcceptsBatches(bool accepts) {
    std::lock_guard<std::mutex> lock(mu_);
    accepts_batches_ = accepts;
  }

  // Queues a message for the guest; dropped once the stream is finishing.
  void Enqueue(v1::HostToGuest message) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    queue_.push_back(std::move(message));
    if (!writing_ && holds_ == 0) WriteNextLocked();
  }

  // Hold / Release: while held, Enqueue only queues; the last Release writes what queued up.
  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    ++holds_;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--holds_ == 0 && !writing_ && !finished_ && !queue_.empty()) WriteNextLocked();
  }

  // Ends the stream with `status` (after the write in flight, if any). Queued messages that
  // were not yet written are dropped. Idempotent.
  void FinishWith(grpc::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = true;
    queue_.clear();
    if (writing_) {
      finish_status_ = std::move(status);
    } else {
      Finish(std::move(status));
    }
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      host_->OnStreamEnded(this);
      return;
    }
    // The answers to this message (to all of a batch's messages) leave in one write. gRPC
    // calls OnDone only after this reaction has returned, so `this` outlives the Release.
    Hold();
    const bool more = host_->OnStreamMessage(this, in_);
    Release();
    if (more) StartReading();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (finished_) {
      if (finish_status_) {
        Finish(std::move(*finish_status_));
        finish_status_.reset();
      }
      return;
    }
    if (!ok) {
      // The guest is gone; its read side reports it and the host detaches it.
      queue_.clear();
      return;
    }
    if (!queue_.empty() && holds_ == 0) WriteNextLocked();
  }

  void OnDone() override {
    host_->ForgetStream(this);
    delete this;
  }

 private:
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const bool batch =
        accepts_batches_ && queue_.size() > 1 && queue_[0].has_control() && queue_[1].has_control();
    if (!batch) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
    } else {
      // Swap moves each message in without copying it.
      current_.Clear();
      v1::ControlBatch* out = current_.mutable_batch();
      size_t bytes = 0;
      while (!queue_.empty() && queue_.front().has_control() &&
             out->messages_size() < v1::CONTROL_BATCH_MAX_MESSAGES && bytes < kBatchBytes) {
        bytes += queue_.front().control().ByteSizeLong();
        out->add_messages()->Swap(queue_.front().mutable_control());
        queue_.pop_front();
      }
    }
    writing_ = true;
    StartWrite(&current_);
  }

  MockHost* const host_;
  v1::GuestToHost in_;
  std::mutex mu_;
  std::deque<v1::HostToGuest> queue_ ABSL_GUARDED_BY(mu_);
  v1::HostToGuest current_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool accepts_batches_ ABSL_GUARDED_BY(mu_) = false;
  int holds_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<grpc::Status> finish_status_ ABSL_GUARDED_BY(mu_);
};

// --- Session --------------------------------------------------------------------------------

struct MockHost::Session {
  std::string guest_id;
  std::string name;
  GuestStream* stream = nullptr;  // owned by gRPC; valid while the session is in sessions_
  std::unique_ptr<GuestDataPlane> plane;
  std::thread doorbell;
  // [R4] release store by the destructor, [A4] acquire load by the doorbell loop: the loop
  // ends after seeing it (the Ring that follows wakes it).
  std::atomic<bool> stop{false};
  // Counters of closed opens of each relid since it was offered (guarded by MockHost::mu_).
  absl::flat_hash_map<uint32_t, ChannelCounters> closed_counters;

  ~Session() {
    stop.store(true, std::memory_order_release);  // [R4]
    if (plane) plane->memory().Ring(Doorbell::kHost);
    if (doorbell.joinable()) doorbell.join();
  }
};

// --- Services -------------------------------------------------------------------------------

class MockHost::GuestLinkService final : public v1::GuestLink::CallbackService {
 public:
  explicit GuestLinkService(MockHost* host) : host_(host) {}
  grpc::ServerBidiReactor<v1::GuestToHost, v1::HostToGuest>* Connect(
      grpc::CallbackServerContext* /*context*/) override {
    auto* stream = new GuestStream(host_);
    if (host_->RegisterStream(stream)) stream->StartReading();
    return stream;
  }

 private:
  MockHost* const host_;
};

class MockHost::HostControlService final : public v1::HostControl::Service {
 public:
  explicit HostControlService(MockHost* host) : host_(host) {}

  grpc::Status Offer(grpc::ServerContext*, const v1::OfferRequest* request,
                     v1::OfferResponse* response) override {
    return Reply(host_->Offer(*request), response);
  }
  grpc::Status Rescind(grpc::ServerContext*, const v1::RescindRequest* request,
                       v1::RescindResponse* response) override {
    return Reply(host_->Rescind(*request), response);
  }
  grpc::Status ListGuests(grpc::ServerContext*, const v1::ListGuestsRequest*,
                          v1::ListGuestsResponse* response) override {
    *response = host_->ListGuests();
    return grpc::Status::OK;
  }
  grpc::Status ListChannels(grpc::ServerContext*, const v1::ListChannelsRequest* request,
                            v1::ListChannelsResponse* response) override {
    return Reply(host_->ListChannels(*request), response);
  }
  grpc::Status SendPacket(grpc::ServerContext*, const v1::SendPacketRequest* request,
                          v1::SendPacketResponse* response) override {
    return Reply(host_->SendPacket(*request), response);
  }
  grpc::Status InjectFault(grpc::ServerContext*, const v1::InjectFaultRequest* request,
                           v1::InjectFaultResponse*) override {
    return ToGrpc(host_->InjectFault(*request));
  }
  grpc::Status Configure(grpc::ServerContext*, const v1::ConfigureRequest* request,
                         v1::HostSettings* response) override {
    return Reply(host_->Configure(*request), response);
  }
  grpc::Status WatchEvents(grpc::ServerContext* context, const v1::WatchEventsRequest* request,
                           grpc::ServerWriter<v1::ProtocolEvent>* writer) override {
    auto sub = host_->WatchEvents(*request);
    if (!sub.ok()) return ToGrpc(sub.status());
    grpc::Status s = Pump(context, writer, **sub);
    host_->Unwatch(*sub);
    return s;
  }
  grpc::Status WatchPackets(grpc::ServerContext* context, const v1::WatchPacketsRequest* request,
                            grpc::ServerWriter<v1::GuestPacket>* writer) override {
    auto sub = host_->WatchPackets(*request);
    if (!sub.ok()) return ToGrpc(sub.status());
    grpc::Status s = Pump(context, writer, **sub);
    host_->Unwatch(*sub);
    return s;
  }

 private:
  // Streams a subscription until the client goes away or the host shuts down. The initial
  // metadata goes out first: it tells the client that the watch is registered.
  template <typename T>
  static grpc::Status Pump(grpc::ServerContext* context, grpc::ServerWriter<T>* writer,
                           typename WatchHub<T>::Subscription& sub) {
    writer->SendInitialMetadata();
    while (!context->IsCancelled()) {
      absl::StatusOr<std::optional<T>> item = sub.Next(absl::Now() + absl::Milliseconds(200));
      if (!item.ok()) return ToGrpc(item.status());
      if (item->has_value() && !writer->Write(**item)) break;
    }
    return grpc::Status::OK;
  }

  MockHost* const host_;
};

// --- MockHost -------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<MockHost>> MockHost::Create(MockHostOptions options) {
  const DeviceRegistry* devices =
      options.devices != nullptr ? options.devices : &DeviceRegistry::Default();
  options.engine.device_classes.clear();
  for (const std::string& name : devices->Names()) {
    options.engine.device_classes[name] = devices->Find(name)->class_id;
  }
  absl::StatusOr<std::unique_ptr<HostEngine>> engine = HostEngine::Create(options.engine);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<MockHost>(new MockHost(std::move(options), std::move(*engine)));
}

MockHost::MockHost(MockHostOptions options, std::unique_ptr<HostEngine> engine)
    : options_(std::move(options)),
      devices_(options_.devices != nullptr ? options_.devices : &DeviceRegistry::Default()),
      events_(options_.watch_queue_limit),
      packets_(options_.watch_queue_limit),
      monitor_latency_us_(engine->settings().monitor_latency_us()),
      engine_(std::move(engine)) {
  host_control_ = std::make_unique<HostControlService>(this);
  guest_link_ = std::make_unique<GuestLinkService>(this);
  timer_thread_ = std::thread(&MockHost::TimerLoop, this);
}

MockHost::~MockHost() { Shutdown(); }

grpc::Service* MockHost::guest_link_service() { return guest_link_.get(); }
grpc::Service* MockHost::host_control_service() { return host_control_.get(); }

void MockHost::Log(absl::string_view line) {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "mock_host: %.*s\n", static_cast<int>(line.size()), line.data());
  }
}

void MockHost::Shutdown() {
  std::lock_guard<std::mutex> shutdown_lock(shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  std::vector<std::unique_ptr<Session>> dead;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_ = true;
    timer_cv_.notify_one();
    std::vector<std::string> ids = engine_->GuestIds();
    for (const std::string& id : ids) {
      DetachLocked(id, "the host is shutting down",
                   grpc::Status(grpc::StatusCode::UNAVAILABLE, "the mock host is shutting down"),
                   &dead);
    }
    for (GuestStream* stream : unattached_streams_) {
      stream->FinishWith(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "the mock host is shutting down"));
    }
  }
  dead.clear();
  if (timer_thread_.joinable()) timer_thread_.join();
  events_.Close();
  packets_.Close();
}

bool MockHost::RegisterStream(GuestStream* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  if (shutting_down_) {
    stream->FinishWith(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "the mock host is shutting down"));
    return false;
  }
  unattached_streams_.insert(stream);
  return true;
}

void MockHost::ForgetStream(GuestStream* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  unattached_streams_.erase(stream);
  // An attached stream is always detached (and erased from stream_guest_) before it is
  // finished, and OnDone follows Finish.
}

template <typename Fn>
auto MockHost::Run(Fn&& fn) -> decltype(fn(absl::Time(), static_cast<Actions*>(nullptr))) {
  std::vector<std::unique_ptr<Session>> dead;
  std::unique_lock<std::mutex> lock(mu_);
  Actions out;
  SyncMessageEventsLocked();
  auto result = fn(absl::Now(), &out);
  Execute(std::move(out), &dead);
  lock.unlock();
  dead.clear();  // joins doorbell threads outside the lock
  return result;
}

void MockHost::Execute(Actions actions, std::vector<std::unique_ptr<Session>>* dead) {
  std::deque<Action> work(std::make_move_iterator(actions.begin()),
                          std::make_move_iterator(actions.end()));
  while (!work.empty()) {
    Action action = std::move(work.front());
    work.pop_front();
    if (auto* send = std::get_if<SendToGuest>(&action)) {
      auto it = sessions_.find(send->guest_id);
      if (it != sessions_.end() && it->second->stream != nullptr) {
        it->second->stream->Enqueue(std::move(send->message));
      }
    } else if (auto* event = std::get_if<::vbus::mock::PublishEvent>(&action)) {
      PublishEvent(std::move(event->event));
    } else if (auto* map = std::get_if<MapRings>(&action)) {
      auto it = sessions_.find(map->guest_id);
      absl::Status mapped =
          it == sessions_.end()
              ? absl::FailedPreconditionError("the guest has no data plane")
              : it->second->plane->MapChannel(map->relid, map->device, map->outbound_pfns,
                                              map->inbound_pfns, map->monitor_id);
      Actions more;
      (void)engine_->CompleteOpen(map->guest_id, map->relid, mapped, absl::Now(), &more);
      // The completion's actions come before everything that followed the MapRings.
      work.insert(work.begin(), std::make_move_iterator(more.begin()),
                  std::make_move_iterator(more.end()));
    } else if (auto* unmap = std::get_if<UnmapRings>(&action)) {
      auto it = sessions_.find(unmap->guest_id);
      if (it == sessions_.end()) continue;
      absl::StatusOr<ChannelCounters> last = it->second->plane->UnmapChannel(unmap->relid);
      if (last.ok()) {
        ChannelCounters& sum = it->second->closed_counters[unmap->relid];
        sum.packets_to_guest += last->packets_to_guest;
        sum.bytes_to_guest += last->bytes_to_guest;
        sum.packets_from_guest += last->packets_from_guest;
        sum.bytes_from_guest += last->bytes_from_guest;
        sum.signals_to_guest += last->signals_to_guest;
        sum.signals_from_guest += last->signals_from_guest;
      }
    } else if (auto* signal = std::get_if<SignalChannel>(&action)) {
      auto it = sessions_.find(signal->guest_id);
      if (it != sessions_.end()) (void)it->second->plane->RaiseEvent(signal->relid);
    } else if (auto* disconnect = std::get_if<DisconnectGuest>(&action)) {
      DetachLocked(disconnect->guest_id, disconnect->reason,
                   grpc::Status(grpc::StatusCode::UNAVAILABLE, disconnect->reason), dead);
    }
  }
  if (engine_->NextTimer().has_value()) {
    timer_dirty_ = true;
    timer_cv_.notify_one();
  }
}

void MockHost::SyncMessageEventsLocked() {
  // Relaxed hint, but exact where it matters: a watcher registered before a message was sent
  // (its metadata received, then the message sent) is visible here, as that order is a
  // happens-before chain through gRPC.
  engine_->SetMessageEvents(events_.HasWatchers());
}

void MockHost::DetachLocked(const std::string& guest_id, const std::string& reason,
                            const grpc::Status& stream_status,
                            std::vector<std::unique_ptr<Session>>* dead) {
  Actions out;
  if (!engine_->Detach(guest_id, reason, absl::Now(), &out).ok()) return;
  Execute(std::move(out), dead);  // unmaps the open channels, publishes GUEST_DETACHED
  auto it = sessions_.find(guest_id);
  if (it == sessions_.end()) return;
  std::unique_ptr<Session> session = std::move(it->second);
  sessions_.erase(it);
  if (session->stream != nullptr) {
    stream_guest_.erase(session->stream);
    session->stream->FinishWith(stream_status);
    session->stream = nullptr;
  }
  dead->push_back(std::move(session));
}

void MockHost::PublishEvent(v1::ProtocolEvent event) {
  switch (event.kind()) {
    case v1::EVENT_KIND_GUEST_ATTACHED:
      Log(absl::StrCat(event.guest_id(), " attached: ", event.detail()));
      break;
    case v1::EVENT_KIND_GUEST_DETACHED:
      Log(absl::StrCat(event.guest_id(), " detached: ", event.detail()));
      break;
    case v1::EVENT_KIND_ERROR:
      Log(absl::StrCat(event.guest_id(), " error",
                       event.child_relid() != 0 ? absl::StrCat(" (relid ", event.child_relid(), ")")
                                                : std::string(),
                       ": ", event.detail()));
      break;
    default:
      break;
  }
  events_.Publish(std::move(event),
                  [this](v1::ProtocolEvent& e) { e.set_sequence(++event_sequence_); });
}

std::string MockHost::NameOf(const std::string& guest_id) {
  std::lock_guard<std::mutex> lock(names_mu_);
  auto it = guest_names_.find(guest_id);
  return it == guest_names_.end() ? std::string() : it->second;
}

// --- GuestLink ------------------------------------------------------------------------------

bool MockHost::OnStreamMessage(GuestStream* stream, const v1::GuestToHost& message) {
  std::string guest_id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = stream_guest_.find(stream);
    if (it != stream_guest_.end()) guest_id = it->second;
  }
  if (guest_id.empty()) return Attach(stream, message);
  if (message.has_batch()) return OnStreamBatch(guest_id, message.batch());
  absl::Status handled = Run([&](absl::Time now, Actions* out) {
    return engine_->HandleGuestMessage(guest_id, message, now, out);
  });
  return handled.ok();  // NotFound: detached meanwhile, the stream is finishing
}

bool MockHost::OnStreamBatch(const std::string& guest_id, const v1::ControlBatch& batch) {
  std::vector<std::unique_ptr<Session>> dead;
  absl::Status handled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Actions out;
    absl::StatusOr<bool> well_formed = engine_->CheckBatch(guest_id, batch, absl::Now(), &out);
    Execute(std::move(out), &dead);  // the refusal of a malformed batch
    if (!well_formed.ok()) {
      handled = well_formed.status();
    } else if (*well_formed) {
      // One message at a time, each one's actions carried out before the next (the engine's
      // MapRings contract): exactly what the messages sent alone would do, under one lock.
      for (const v1::ControlMessage& m : batch.messages()) {
        Actions actions;
        SyncMessageEventsLocked();
        handled = engine_->HandleGuestControl(guest_id, m, absl::Now(), &actions);
        if (!handled.ok()) break;  // NotFound: detached by one of the earlier messages
        Execute(std::move(actions), &dead);
      }
    }
  }
  dead.clear();  // joins doorbell threads outside the lock
  return handled.ok();
}

void MockHost::OnStreamEnded(GuestStream* stream) {
  std::vector<std::unique_ptr<Session>> dead;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = stream_guest_.find(stream);
    if (it != stream_guest_.end()) {
      DetachLocked(it->second, "the guest closed its stream", grpc::Status::OK, &dead);
    } else {
      unattached_streams_.erase(stream);
      stream->FinishWith(grpc::Status::OK);
    }
  }
  dead.clear();
}

bool MockHost::Attach(GuestStream* stream, const v1::GuestToHost& message) {
  auto refuse = [&](const absl::Status& why, const std::string& name) {
    Log(absl::StrCat("attach of \"", name, "\" refused: ", why.message()));
    {
      std::lock_guard<std::mutex> lock(mu_);
      unattached_streams_.erase(stream);
    }
    stream->FinishWith(ToGrpc(why));
    return false;
  };
  if (!message.has_attach()) {
    return refuse(absl::InvalidArgumentError("the first GuestLink message must be `attach`"), "");
  }
  const v1::Attach& attach = message.attach();
  absl::StatusOr<std::unique_ptr<GuestMemory>> memory = GuestMemory::Open(
      attach.memory_path(), attach.memory_size_bytes(), LayoutFromProto(attach.layout()));
  if (!memory.ok()) return refuse(memory.status(), attach.guest_name());

  std::vector<std::unique_ptr<Session>> dead;
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) {
      refused = absl::UnavailableError("the mock host is shutting down");
    } else {
      Actions out;
      absl::StatusOr<std::string> id = engine_->Attach(attach, absl::Now(), &out);
      if (!id.ok()) {
        refused = id.status();
      } else {
        {
          std::lock_guard<std::mutex> names_lock(names_mu_);
          guest_names_[*id] = attach.guest_name();
        }
        DataPlaneHooks hooks;
        hooks.wants_packets = [this] { return packets_.HasWatchers(); };
        hooks.on_packet = [this](v1::GuestPacket p) { packets_.Publish(std::move(p)); };
        hooks.on_event = [this](v1::ProtocolEvent e) { PublishEvent(std::move(e)); };
        absl::StatusOr<std::unique_ptr<GuestDataPlane>> plane =
            GuestDataPlane::Create(*id, std::move(*memory), devices_, std::move(hooks));
        if (!plane.ok()) {
          Actions ignored;
          (void)engine_->Detach(*id, "no data plane", absl::Now(), &ignored);
          refused = plane.status();
        } else {
          auto session = std::make_unique<Session>();
          session->guest_id = *id;
          session->name = attach.guest_name();
          session->stream = stream;
          session->plane = std::move(*plane);
          session->doorbell = std::thread(&MockHost::DoorbellLoop, this, session.get());
          sessions_.emplace(*id, std::move(session));
          stream_guest_[stream] = *id;
          unattached_streams_.erase(stream);
          stream->SetAcceptsBatches(attach.accepts_batches());
          Execute(std::move(out), &dead);  // the Attached answer, the event
        }
      }
    }
  }
  dead.clear();
  if (!refused.ok()) return refuse(refused, attach.guest_name());
  return true;
}

// --- Threads --------------------------------------------------------------------------------

void MockHost::DoorbellLoop(Session* session) {
  GuestDataPlane& plane = *session->plane;
  GuestMemory& memory = plane.memory();
  absl::Time last_flush = absl::Now();
  while (!session->stop.load(std::memory_order_acquire)) {  // [A4]
    // Read the doorbell before scanning: a ring during the scan makes the wait return at once.
    const uint32_t seen = memory.DoorbellValue(Doorbell::kHost);
    plane.ProcessEvents();
    const absl::Time now = absl::Now();
    if (now - last_flush >= kSignalEventPeriod) {
      plane.FlushSignalEvents();
      last_flush = now;
    }
    const absl::Duration period =
        plane.HasMonitoredChannels()
            ? absl::Microseconds(monitor_latency_us_.load(std::memory_order_relaxed))
            : kIdleScanPeriod;
    (void)memory.Wait(Doorbell::kHost, seen, now + period);  // a timeout is the scan tick
  }
  plane.FlushSignalEvents();
}

void MockHost::TimerLoop() {
  std::vector<std::unique_ptr<Session>> dead;
  std::unique_lock<std::mutex> lock(mu_);
  while (!shutting_down_) {
    const std::optional<absl::Time> next = engine_->NextTimer();
    const absl::Time now = absl::Now();
    if (next.has_value() && *next <= now) {
      Actions out;
      SyncMessageEventsLocked();
      engine_->AdvanceTime(now, &out);
      Execute(std::move(out), &dead);
      if (!dead.empty()) {
        lock.unlock();
        dead.clear();
        lock.lock();
      }
      continue;
    }
    timer_dirty_ = false;
    const absl::Time wake =
        next.has_value() ? std::min(*next, now + absl::Seconds(1)) : now + absl::Seconds(1);
    timer_cv_.wait_until(lock, absl::ToChronoTime(wake),
                         [this] { return timer_dirty_ || shutting_down_; });
  }
}

// --- HostControl ----------------------------------------------------------------------------

absl::StatusOr<v1::OfferResponse> MockHost::Offer(const v1::OfferRequest& request) {
  return Run([&](absl::Time now, Actions* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::StatusOr<v1::OfferResponse> r = engine_->Offer(request, now, out);
    if (r.ok()) {
      // A relid offered anew starts with fresh counters.
      absl::StatusOr<std::string> id = engine_->ResolveGuest(request.guest());
      auto it = id.ok() ? sessions_.find(*id) : sessions_.end();
      if (it != sessions_.end()) {
        it->second->closed_counters.erase(r->child_relid());
        for (uint32_t sub : r->sub_channel_relids()) it->second->closed_counters.erase(sub);
      }
    }
    return r;
  });
}

absl::StatusOr<v1::RescindResponse> MockHost::Rescind(const v1::RescindRequest& request) {
  return Run([&](absl::Time now, Actions* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return engine_->Rescind(request, now, out);
  });
}

v1::ListGuestsResponse MockHost::ListGuests() {
  std::lock_guard<std::mutex> lock(mu_);
  return engine_->ListGuests();
}

absl::StatusOr<v1::ListChannelsResponse> MockHost::ListChannels(
    const v1::ListChannelsRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<v1::ListChannelsResponse> r = engine_->ListChannels(request.guest());
  if (!r.ok()) return r;
  for (v1::ChannelInfo& c : *r->mutable_channels()) {
    auto it = sessions_.find(c.guest_id());
    if (it == sessions_.end()) continue;
    ChannelCounters sum;
    if (auto closed = it->second->closed_counters.find(c.child_relid());
        closed != it->second->closed_counters.end()) {
      sum = closed->second;
    }
    if (absl::StatusOr<ChannelCounters> live = it->second->plane->Counters(c.child_relid());
        live.ok()) {
      sum.packets_to_guest += live->packets_to_guest;
      sum.bytes_to_guest += live->bytes_to_guest;
      sum.packets_from_guest += live->packets_from_guest;
      sum.bytes_from_guest += live->bytes_from_guest;
      sum.signals_to_guest += live->signals_to_guest;
      sum.signals_from_guest += live->signals_from_guest;
    }
    c.set_packets_to_guest(sum.packets_to_guest);
    c.set_bytes_to_guest(sum.bytes_to_guest);
    c.set_packets_from_guest(sum.packets_from_guest);
    c.set_bytes_from_guest(sum.bytes_from_guest);
    c.set_signals_to_guest(sum.signals_to_guest);
    c.set_signals_from_guest(sum.signals_from_guest);
  }
  return r;
}

absl::StatusOr<v1::SendPacketResponse> MockHost::SendPacket(const v1::SendPacketRequest& request) {
  PacketType type;
  switch (request.type()) {
    case v1::PACKET_TYPE_UNSPECIFIED:
    case v1::PACKET_TYPE_DATA_INBAND:
      type = PacketType::kDataInband;
      break;
    case v1::PACKET_TYPE_COMPLETION:
      type = PacketType::kCompletion;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("packet type ", request.type(), " cannot be sent (in-band or completion)"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<std::string> id = engine_->ResolveGuest(request.guest());
  if (!id.ok()) return id.status();
  absl::StatusOr<HostEngine::ChannelSnapshot> channel =
      engine_->FindChannel(*id, request.child_relid());
  if (!channel.ok()) return channel.status();
  if (channel->state != HostEngine::ChannelState::kOpen) {
    return absl::FailedPreconditionError(
        absl::StrCat("relid ", request.child_relid(), " of ", *id, " is not open"));
  }
  const std::string& payload = request.payload();
  absl::StatusOr<bool> signalled = sessions_.at(*id)->plane->SendPacket(
      request.child_relid(), type, request.completion_requested() ? kCompletionRequested : 0,
      request.transaction_id(),
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()));
  if (!signalled.ok()) {
    if (signalled.status().code() == absl::StatusCode::kNotFound) {
      return absl::FailedPreconditionError(signalled.status().message());
    }
    return signalled.status();
  }
  v1::SendPacketResponse response;
  response.set_signalled(*signalled);
  return response;
}

absl::Status MockHost::InjectFault(const v1::InjectFaultRequest& request) {
  return Run([&](absl::Time now, Actions* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return engine_->InjectFault(request, now, out);
  });
}

absl::StatusOr<v1::HostSettings> MockHost::Configure(const v1::ConfigureRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<v1::HostSettings> s = engine_->Configure(request);
  if (s.ok()) monitor_latency_us_.store(s->monitor_latency_us(), std::memory_order_relaxed);
  return s;
}

absl::StatusOr<std::shared_ptr<WatchHub<v1::ProtocolEvent>::Subscription>> MockHost::WatchEvents(
    const v1::WatchEventsRequest& request) {
  absl::flat_hash_set<int> kinds;
  for (int kind : request.kinds()) {
    if (!v1::EventKind_IsValid(kind) || kind == v1::EVENT_KIND_UNSPECIFIED) {
      return absl::InvalidArgumentError(absl::StrCat("event kind ", kind, " is not valid"));
    }
    kinds.insert(kind);
  }
  const std::string guest = request.guest();
  const uint32_t relid = request.child_relid();
  return events_.Subscribe([this, guest, kinds, relid](const v1::ProtocolEvent& e) {
    if (!kinds.empty() && !kinds.contains(e.kind())) return false;
    if (relid != 0 && e.child_relid() != relid) return false;
    return guest.empty() || e.guest_id() == guest || NameOf(e.guest_id()) == guest;
  });
}

absl::StatusOr<std::shared_ptr<WatchHub<v1::GuestPacket>::Subscription>> MockHost::WatchPackets(
    const v1::WatchPacketsRequest& request) {
  const std::string guest = request.guest();
  const uint32_t relid = request.child_relid();
  return packets_.Subscribe([this, guest, relid](const v1::GuestPacket& p) {
    if (relid != 0 && p.child_relid() != relid) return false;
    return guest.empty() || p.guest_id() == guest || NameOf(p.guest_id()) == guest;
  });
}

void MockHost::Unwatch(const std::shared_ptr<WatchHub<v1::ProtocolEvent>::Subscription>& sub) {
  events_.Unsubscribe(sub);
}

void MockHost::Unwatch(const std::shared_ptr<WatchHub<v1::GuestPacket>::Subscription>& sub) {
  packets_.Unsubscribe(sub);
}

// --- MockHostServer -------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<MockHostServer>> MockHostServer::Start(
    MockHostOptions options, const std::string& listen_address) {
  auto server = std::unique_ptr<MockHostServer>(new MockHostServer());
  absl::StatusOr<std::unique_ptr<MockHost>> host = MockHost::Create(std::move(options));
  if (!host.ok()) return host.status();
  server->host_ = std::move(*host);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  if (!listen_address.empty()) {
    builder.AddListeningPort(listen_address, grpc::InsecureServerCredentials(), &port);
  }
  builder.RegisterService(server->host_->guest_link_service());
  builder.RegisterService(server->host_->host_control_service());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || (!listen_address.empty() && port == 0)) {
    server->host_->Shutdown();
    return absl::UnavailableError(absl::StrCat("cannot listen on \"", listen_address, "\""));
  }
  if (listen_address.rfind("unix:", 0) == 0) {
    server->target_ = listen_address;
  } else if (!listen_address.empty()) {
    const size_t colon = listen_address.rfind(':');
    std::string host_part = listen_address.substr(0, colon);
    if (host_part.empty() || host_part == "0.0.0.0" || host_part == "[::]") {
      host_part = "127.0.0.1";
    }
    server->target_ = absl::StrCat(host_part, ":", port);
  }
  return server;
}

MockHostServer::~MockHostServer() { Shutdown(); }

std::shared_ptr<grpc::Channel> MockHostServer::InProcessChannel() {
  return server_->InProcessChannel(grpc::ChannelArguments());
}

void MockHostServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  if (host_ != nullptr) host_->Shutdown();  // null only if Start failed early
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
    server_->Wait();
  }
}

}  // namespace vbus::mock
