#include "examples/agent.h"

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/data/device_classes.h"
#include "core/data/host_text.h"
#include "drivers/heartbeat/heartbeat.h"
#include "drivers/kvp/kvp.h"
#include "mock/host/device_kinds.h"

namespace vbus::examples {

void GuestAgent::Log(absl::string_view line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "agent: %.*s\n", static_cast<int>(line.size()), line.data());
  }
}

int GuestAgent::ExitCodeFor(const ic::ShutdownRequest& request) {
  switch (request.kind) {
    case ic::ShutdownKind::kPowerOff:
      return kExitPowerOff;
    case ic::ShutdownKind::kReboot:
      return kExitReboot;
    case ic::ShutdownKind::kHibernate:
      return kExitHibernate;
  }
  return kExitPowerOff;
}

absl::Status GuestAgent::RegisterDrivers() {
  ic::IcDriverOptions ic_options;
  ic_options.log = [this](absl::string_view line) { Log(line); };

  absl::Status s =
      drivers_.Register({"heartbeat", device_class::kHeartbeat, [ic_options](const OfferInfo&) {
                           return std::make_unique<ic::HeartbeatDriver>(ic_options);
                         }});
  if (!s.ok()) return s;

  s = drivers_.Register({"shutdown", device_class::kShutdown, [this, ic_options](const OfferInfo&) {
                           ic::ShutdownDriverOptions o;
                           o.ic = ic_options;
                           o.decide = [this](const ic::ShutdownRequest& r) {
                             return r.kind != ic::ShutdownKind::kHibernate ||
                                    options_.accept_hibernate;
                           };
                           o.on_accepted = [this](const ic::ShutdownRequest& r) {
                             std::lock_guard<std::mutex> lock(mu_);
                             if (!accepted_) accepted_ = r;
                             shutdown_cv_.notify_all();
                           };
                           return std::make_unique<ic::ShutdownDriver>(o);
                         }});
  if (!s.ok()) return s;

  s = drivers_.Register({"timesync", device_class::kTimeSync, [this, ic_options](const OfferInfo&) {
                           ic::TimeSyncDriverOptions o;
                           o.ic = ic_options;
                           // The agent reports the offset; setting the clock is the system's
                           // time daemon's business.
                           o.on_sample = [this](const ic::TimeSample& sample) {
                             std::lock_guard<std::mutex> lock(mu_);
                             last_sample_ = sample;
                           };
                           return std::make_unique<ic::TimeSyncDriver>(o);
                         }});
  if (!s.ok()) return s;

  s = drivers_.Register({"kvp", device_class::kKvp, [this, ic_options](const OfferInfo&) {
                           ic::KvpDriverOptions o;
                           o.ic = ic_options;
                           o.store = store_;
                           return std::make_unique<ic::KvpDriver>(o);
                         }});
  if (!s.ok()) return s;

  return drivers_.Register(
      {"echo", mock::kEchoDeviceClass, [this](const OfferInfo&) {
         return std::make_unique<EchoClientDriver>(
             [this](const Channel& c) { return bus_->FindChannel(c.relid()); },
             [this](std::shared_ptr<EchoLink> link) {
               Log(link ? absl::StrCat("echo: channel relid ", link->relid(), " open")
                        : std::string("echo: channel gone"));
               std::lock_guard<std::mutex> lock(mu_);
               echo_ = std::move(link);
             });
       }});
}

absl::StatusOr<std::unique_ptr<GuestAgent>> GuestAgent::Start(AgentOptions options,
                                                              absl::Time deadline) {
  std::unique_ptr<GuestAgent> agent(new GuestAgent(std::move(options)));
  const AgentOptions& o = agent->options_;
  if (o.kvp_store.empty()) {
    agent->store_ = std::make_shared<ic::MemoryKvpStore>();
  } else {
    absl::StatusOr<std::unique_ptr<ic::FileKvpStore>> store = ic::FileKvpStore::Open(o.kvp_store);
    if (!store.ok()) return store.status();
    agent->Log(absl::StrCat("kvp: pools in ", o.kvp_store, " (", (*store)->List(0).size(),
                            " external, ", (*store)->List(1).size(), " guest records)"));
    agent->store_ = std::move(*store);
  }
  if (absl::Status s = agent->RegisterDrivers(); !s.ok()) return s;

  mock::MockBackendOptions backend_options;
  backend_options.guest_name = o.name;
  if (o.host.empty()) {
    mock::MockHostOptions host_options;
    host_options.log = o.embedded_log;
    for (const std::string& kind : o.embedded_offers) {
      host_options.engine.default_offers.emplace_back().set_device(kind);
    }
    absl::StatusOr<std::unique_ptr<mock::MockHostServer>> server =
        mock::MockHostServer::Start(std::move(host_options), "");
    if (!server.ok()) return server.status();
    agent->server_ = std::move(*server);
    v1::ConfigureIcRequest configure;
    *configure.mutable_settings() = o.embedded_ic;
    if (absl::StatusOr<v1::IcSettings> s = agent->server_->host().ConfigureIc(configure); !s.ok()) {
      return s.status();
    }
    if (o.before_attach) o.before_attach(*agent->server_);
    absl::StatusOr<std::unique_ptr<mock::MockBackend>> backend =
        mock::MockBackend::Connect(agent->server_->InProcessChannel(), backend_options);
    if (!backend.ok()) return backend.status();
    agent->backend_ = std::move(*backend);
  } else {
    absl::StatusOr<std::unique_ptr<mock::MockBackend>> backend =
        mock::MockBackend::Dial(o.host, backend_options);
    if (!backend.ok()) return backend.status();
    agent->backend_ = std::move(*backend);
  }

  ChannelBusOptions bus_options;
  bus_options.drivers = &agent->drivers_;
  GuestAgent* raw = agent.get();
  bus_options.log = [raw](absl::string_view line) { raw->Log(absl::StrCat("bus: ", line)); };
  bus_options.on_offer_removed = [raw](const OfferInfo& offer, const absl::Status& why) {
    raw->Log(absl::StrCat("offer relid ", offer.relid, " removed: ",
                          why.ok() ? std::string("unloaded") : std::string(why.message())));
  };
  absl::StatusOr<std::unique_ptr<ChannelBus>> bus =
      ChannelBus::Create(agent->backend_.get(), std::move(bus_options));
  if (!bus.ok()) return bus.status();
  agent->bus_ = std::move(*bus);
  if (absl::Status s = agent->bus_->Connect(deadline); !s.ok()) return s;
  std::string bound;
  for (const DeviceEntry& d : agent->bus_->Devices()) {
    absl::StrAppend(&bound, bound.empty() ? "" : ", ",
                    d.driver.empty() ? std::string("(unclaimed)") : d.driver, " ", d.offer.relid);
  }
  agent->Log(absl::StrFormat("connected to %s as %s, protocol %d.%d: %s",
                             o.host.empty() ? std::string("the embedded host") : o.host, o.name,
                             agent->bus_->version() >> 16, agent->bus_->version() & 0xFFFF, bound));
  return agent;
}

GuestAgent::~GuestAgent() {
  if (bus_) (void)bus_->Shutdown(absl::Now() + absl::Seconds(10));
  bus_.reset();
  backend_.reset();
  if (server_) server_->Shutdown();
}

absl::Status GuestAgent::Stop(absl::Time deadline) { return bus_->Shutdown(deadline); }

std::optional<ic::ShutdownRequest> GuestAgent::WaitForShutdown(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  while (!accepted_) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return std::nullopt;
    shutdown_cv_.wait_for(lock, absl::ToChronoNanoseconds(std::min(left, absl::Hours(1))));
  }
  return accepted_;
}

std::shared_ptr<EchoLink> GuestAgent::echo() const {
  std::lock_guard<std::mutex> lock(mu_);
  return echo_;
}

std::optional<ic::TimeSample> GuestAgent::last_time_sample() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_sample_;
}

}  // namespace vbus::examples
