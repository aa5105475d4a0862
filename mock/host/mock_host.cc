// MockHost's runtime: creation and shutdown, carrying out the engine's Actions (messages to
// guests, events, ring mappings), detaching guests, publishing events, the per-guest doorbell
// threads and the timer thread; and MockHostServer. The GuestLink side is in guest_link.cc,
// the HostControl side in host_control.cc (see mock_host_internal.h).
#include "mock/host/mock_host.h"

#include <cstdio>
#include <deque>
#include <optional>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "mock/host/guest_stream.h"
#include "mock/host/ic_host.h"
#include "mock/host/mock_host_internal.h"

namespace vbus::mock {
namespace {

// How long a doorbell thread sleeps when no monitored channel needs scanning (it wakes at
// once when rung; the period only bounds how late it notices a shutdown).
constexpr absl::Duration kIdleScanPeriod = absl::Milliseconds(100);
// How often doorbell threads publish SIGNALS_* events.
constexpr absl::Duration kSignalEventPeriod = absl::Milliseconds(250);

}  // namespace

// --- MockHost -------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<MockHost>> MockHost::Create(MockHostOptions options) {
  // Without a registry of its own the host serves the default kinds and the IC emulators.
  std::unique_ptr<DeviceRegistry> own_devices;
  std::shared_ptr<IcHub> ic_hub;
  if (options.devices == nullptr) {
    own_devices = std::make_unique<DeviceRegistry>(DeviceRegistry::Default());
    ic_hub = std::make_shared<IcHub>();
    if (absl::Status s = RegisterIcDevices(own_devices.get(), ic_hub); !s.ok()) return s;
    options.devices = own_devices.get();
  }
  const DeviceRegistry* devices = options.devices;
  options.engine.device_classes.clear();
  for (const std::string& name : devices->Names()) {
    options.engine.device_classes[name] = devices->Find(name)->class_id;
  }
  absl::StatusOr<std::unique_ptr<HostEngine>> engine = HostEngine::Create(options.engine);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<MockHost>(new MockHost(std::move(options), std::move(*engine),
                                                std::move(own_devices), std::move(ic_hub)));
}

MockHost::MockHost(MockHostOptions options, std::unique_ptr<HostEngine> engine,
                   std::unique_ptr<DeviceRegistry> own_devices, std::shared_ptr<IcHub> ic_hub)
    : own_devices_(std::move(own_devices)),
      ic_hub_(std::move(ic_hub)),
      options_(std::move(options)),
      devices_(options_.devices != nullptr ? options_.devices : &DeviceRegistry::Default()),
      events_(options_.watch_queue_limit),
      packets_(options_.watch_queue_limit),
      monitor_latency_us_(engine->settings().monitor_latency_us()),
      engine_(std::move(engine)) {
  if (ic_hub_) ic_hub_->SetPublisher([this](v1::ProtocolEvent e) { PublishEvent(std::move(e)); });
  host_control_ = NewHostControlService(this);
  guest_link_ = NewGuestLinkService(this);
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
  MutexLock shutdown_lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  std::vector<std::unique_ptr<Session>> dead;
  {
    MutexLock lock(&mu_);
    shutting_down_ = true;
    timer_cv_.Signal();
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
  {
    MutexLock lock(&mu_);
    dead.swap(retired_sessions_);  // left by doorbell threads for the timer thread
  }
  dead.clear();
  events_.Close();
  packets_.Close();
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
                                              map->inbound_pfns, map->monitor_id, map->target_vp);
      Actions more;
      (void)engine_->CompleteOpen(map->guest_id, map->relid, mapped, absl::Now(), &more);
      // The completion's actions come before everything that followed the MapRings.
      work.insert(work.begin(), std::make_move_iterator(more.begin()),
                  std::make_move_iterator(more.end()));
    } else if (auto* unmap = std::get_if<UnmapRings>(&action)) {
      auto it = sessions_.find(unmap->guest_id);
      if (it == sessions_.end()) continue;
      // What the guest wrote before it closed the channel still reaches the device (an IC
      // guest answers a shutdown request and closes right after).
      (void)it->second->plane->DrainChannel(unmap->relid);
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
    } else if (auto* retarget = std::get_if<RetargetChannel>(&action)) {
      auto it = sessions_.find(retarget->guest_id);
      if (it != sessions_.end()) {
        (void)it->second->plane->SetTargetVp(retarget->relid, retarget->target_vp);
      }
    } else if (auto* disconnect = std::get_if<DisconnectGuest>(&action)) {
      DetachLocked(disconnect->guest_id, disconnect->reason,
                   grpc::Status(grpc::StatusCode::UNAVAILABLE, disconnect->reason), dead);
    }
  }
  if (engine_->NextTimer().has_value()) {
    timer_dirty_ = true;
    timer_cv_.Signal();
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
  MutexLock lock(&names_mu_);
  auto it = guest_names_.find(guest_id);
  return it == guest_names_.end() ? std::string() : it->second;
}

// --- Threads --------------------------------------------------------------------------------

void MockHost::DoorbellLoop(Session* session) {
  GuestDataPlane& plane = *session->plane;
  GuestMemory& memory = plane.memory();
  absl::Time last_flush = absl::Now();
  while (!session->stop.load(std::memory_order_acquire)) {  // [MH-A1], pairs with [MHI-R1]
    // Read the doorbell before scanning: a ring during the scan makes the wait return at once.
    const uint32_t seen = memory.DoorbellValue(Doorbell::kHost);
    plane.ProcessEvents();
    RunSubChannelRequests(session);  // outside the data plane's locks: mu_ may be taken
    const absl::Time now = absl::Now();
    if (now - last_flush >= kSignalEventPeriod) {
      plane.FlushSignalEvents();
      last_flush = now;
    }
    const absl::Duration period =
        plane.HasMonitoredChannels()
            ? absl::Microseconds(monitor_latency_us_.load(std::memory_order_relaxed))
            : kIdleScanPeriod;
    // A timeout is the scan tick.
    (void)memory.Wait(Doorbell::kHost, seen, now + period, /*vp=*/0, options_.doorbell_poll);
  }
  plane.FlushSignalEvents();
}

void MockHost::RunSubChannelRequests(Session* session) {
  std::vector<QueuedSubChannelRequest> requests;
  {
    MutexLock lock(&session->requests_mu);
    requests.swap(session->sub_channel_requests);
  }
  if (requests.empty()) return;
  MutexLock lock(&mu_);
  // Detached meanwhile (the session is kept alive until this thread is joined): drop them.
  if (shutting_down_ || !sessions_.contains(session->guest_id)) return;
  std::vector<std::unique_ptr<Session>> dead;
  for (const QueuedSubChannelRequest& r : requests) {
    Actions out;
    SyncMessageEventsLocked();
    const absl::Time now = absl::Now();
    absl::StatusOr<std::vector<uint32_t>> offered =
        engine_->OfferSubChannels(session->guest_id, r.relid, r.count, now, &out);
    if (!offered.ok()) {
      v1::ProtocolEvent e;
      e.set_unix_nanos(absl::ToUnixNanos(now));
      e.set_guest_id(session->guest_id);
      e.set_kind(v1::EVENT_KIND_ERROR);
      e.set_child_relid(r.relid);
      e.set_detail(absl::StrCat("the device's request for ", r.count, " sub-channels of relid ",
                                r.relid, " was not carried out: ", offered.status().message()));
      out.push_back(::vbus::mock::PublishEvent{std::move(e)});
    }
    Execute(std::move(out), &dead);
  }
  // Offers and events detach nobody, so `dead` stays empty; should an action ever detach a
  // guest here, the timer thread destroys the session (this thread may be its doorbell).
  if (!dead.empty()) {
    for (std::unique_ptr<Session>& s : dead) retired_sessions_.push_back(std::move(s));
    timer_dirty_ = true;
    timer_cv_.Signal();
  }
}

void MockHost::TimerLoop() {
  std::vector<std::unique_ptr<Session>> dead;
  while (true) {
    {
      MutexLock lock(&mu_);
      if (shutting_down_) return;
      const bool retired = !retired_sessions_.empty();
      for (std::unique_ptr<Session>& s : retired_sessions_) dead.push_back(std::move(s));
      retired_sessions_.clear();
      const std::optional<absl::Time> next = engine_->NextTimer();
      const absl::Time now = absl::Now();
      if (next.has_value() && *next <= now) {
        Actions out;
        SyncMessageEventsLocked();
        engine_->AdvanceTime(now, &out);
        Execute(std::move(out), &dead);
      } else if (!retired) {  // else destroy them first, then look again
        timer_dirty_ = false;
        const absl::Time wake =
            next.has_value() ? std::min(*next, now + absl::Seconds(1)) : now + absl::Seconds(1);
        timer_cv_.AwaitWithDeadline(&mu_, wake, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return timer_dirty_ || shutting_down_;
        });
      }
    }
    dead.clear();  // joins doorbell threads outside the lock
  }
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
