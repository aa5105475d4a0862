// The vbus demo: a mock host and a guest agent in one process, telling the story of a guest's
// life on the bus as a protocol trace — negotiation, offers and opens, heartbeats, a KVP
// exchange, a time sync, echo traffic, a rescind and a hot-add, and a shutdown the agent
// accepts. Every line is one event; arrows say who spoke to whom.
//
//   bazel run //examples:demo                 # colour on a terminal, none when piped
//   bazel run //examples:demo -- --color=never --echo_packets=50000
//
// Exits 0 when every step happened as it should, 1 (naming the step) otherwise.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "examples/agent.h"
#include "examples/trace.h"
#include "mock/host/mock_host.h"

ABSL_FLAG(std::string, color, "auto", "auto (on a terminal), always or never");
ABSL_FLAG(uint64_t, echo_packets, 200000, "Packets to echo (64 bytes each)");
ABSL_FLAG(uint32_t, heartbeat_ms, 500, "The host's heartbeat interval, milliseconds");

namespace vbus::examples {
namespace {

using Subscription = mock::WatchHub<v1::ProtocolEvent>::Subscription;

class Demo {
 public:
  explicit Demo(bool colour) : trace_(stdout, colour) {}

  int Run() {
    const absl::Time started = absl::Now();
    if (absl::Status s = Step(); !s.ok()) {
      trace_.Flush();
      std::fprintf(stdout, "\ndemo failed: %s\n", s.ToString().c_str());
      return 1;
    }
    trace_.Note(
        absl::StrFormat("demo complete in %.1f s", absl::ToDoubleSeconds(absl::Now() - started)));
    return 0;
  }

 private:
  // Moves the host's events into the trace until none has come for `quiet`, then prints.
  void Drain(absl::Duration quiet = absl::Milliseconds(30)) {
    while (events_ != nullptr) {
      absl::StatusOr<std::optional<v1::ProtocolEvent>> e = events_->Next(absl::Now() + quiet);
      if (!e.ok() || !e->has_value()) break;
      trace_.AddHostEvent(**e);
    }
    trace_.Flush();
  }
  // Drains until `done` holds, or fails at `deadline`.
  absl::Status DrainUntil(absl::string_view what, absl::Time deadline,
                          const std::function<bool()>& done) {
    while (!done()) {
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat("timed out waiting for ", what));
      }
      Drain(absl::Milliseconds(20));
    }
    Drain();
    return absl::OkStatus();
  }

  mock::MockHost& host() { return agent_->embedded_host()->host(); }

  absl::Status Step() {
    // 1. The agent starts a mock host of its own and connects.
    trace_.Section("1. a guest agent attaches: version negotiation, offers, channel opens");
    AgentOptions options;
    options.name = "demo-vm";
    options.embedded_ic.set_heartbeat_interval_ms(absl::GetFlag(FLAGS_heartbeat_ms));
    options.embedded_ic.set_timesync_sample_interval_ms(0);  // the demo sends its own
    options.embedded_log = [](absl::string_view) {};         // the trace shows it all
    options.log = [this](absl::string_view line) {
      // Each beat already shows as the host's request and the guest's answer.
      if (absl::StartsWith(line, "heartbeat: beat")) return;
      trace_.Add(absl::Now(), TraceDir::kGuest, "agent", std::string(line));
    };
    options.before_attach = [this](mock::MockHostServer& server) {
      absl::StatusOr<std::shared_ptr<Subscription>> sub =
          server.host().WatchEvents(v1::WatchEventsRequest());
      if (sub.ok()) events_ = *sub;
    };
    absl::StatusOr<std::unique_ptr<GuestAgent>> agent =
        GuestAgent::Start(options, absl::Now() + absl::Seconds(20));
    if (!agent.ok()) return agent.status();
    agent_ = std::move(*agent);
    if (events_ == nullptr) return absl::InternalError("could not watch the host's events");
    // The IC channels negotiate their versions as soon as they open.
    if (absl::Status s = DrainUntil("the IC negotiations", absl::Now() + absl::Seconds(10),
                                    [this] { return IcReady(4); });
        !s.ok()) {
      return s;
    }

    // 2. Heartbeats.
    trace_.Section("2. heartbeats: the host beats, the guest answers with sequence + 1");
    const int beats = trace_.seen(v1::EVENT_KIND_IC_ANSWER);
    if (absl::Status s = DrainUntil("two heartbeats", absl::Now() + absl::Seconds(10),
                                    [&] { return HeartbeatCount() >= 2; });
        !s.ok()) {
      return s;
    }
    (void)beats;

    // 3. KVP.
    trace_.Section("3. KVP: the host writes, reads and lists the guest's key-value pools");
    (void)agent_->kvp_store().Set(ic::kKvpPoolGuest,
                                  {ic::kKvpString, "agent/role", "web-frontend"});
    if (absl::Status s = Kvp(v1::KVP_OP_SET, 0, "demo/greeting", "hello from the host"); !s.ok())
      return s;
    if (absl::Status s = Kvp(v1::KVP_OP_GET, 1, "agent/role"); !s.ok()) return s;
    if (absl::Status s = Kvp(v1::KVP_OP_ENUMERATE, 2); !s.ok()) return s;
    absl::StatusOr<std::optional<ic::KvpRecord>> greeting =
        agent_->kvp_store().Get(ic::kKvpPoolExternal, "demo/greeting");
    if (!greeting.ok() || !greeting->has_value()) {
      return absl::InternalError("the host's KVP write did not reach the guest's pool");
    }
    trace_.Note(absl::StrCat("the guest's external pool now holds demo/greeting = \"",
                             (*greeting)->value, "\""));

    // 4. Time sync.
    trace_.Section("4. time sync: the host's clock runs 5 s ahead; the guest reports the offset");
    v1::TimeSyncRequest sync;
    sync.set_skew_ms(5000);
    absl::StatusOr<v1::TimeSyncResponse> synced = host().TimeSync(sync);
    if (!synced.ok()) return synced.status();
    Drain();
    std::optional<ic::TimeSample> sample = agent_->last_time_sample();
    if (!sample || sample->offset < absl::Seconds(4)) {
      return absl::InternalError("the guest did not see the host's clock 5 s ahead");
    }
    trace_.Note(absl::StrCat("the guest's clock is ", absl::FormatDuration(sample->offset),
                             " behind the host's (reported, not set: that is the agent's call)"));

    // 5. Echo traffic.
    trace_.Section("5. echo: packets through the rings in shared memory, no message per packet");
    if (absl::Status s = Echo(absl::GetFlag(FLAGS_echo_packets)); !s.ok()) return s;

    // 6. Rescind and hot-add.
    trace_.Section("6. the host rescinds the echo device, then hot-adds a new one");
    const uint32_t old_relid = agent_->echo()->relid();
    v1::RescindRequest rescind;
    rescind.set_child_relid(old_relid);
    if (absl::StatusOr<v1::RescindResponse> r = host().Rescind(rescind); !r.ok()) return r.status();
    if (absl::Status s =
            DrainUntil("the rescind to reach the agent", absl::Now() + absl::Seconds(10),
                       [this] { return agent_->echo() == nullptr; });
        !s.ok()) {
      return s;
    }
    v1::OfferRequest offer;
    offer.mutable_spec()->set_device("echo");
    if (absl::StatusOr<v1::OfferResponse> r = host().Offer(offer); !r.ok()) return r.status();
    if (absl::Status s = DrainUntil("the hot-added echo to open", absl::Now() + absl::Seconds(10),
                                    [this] { return agent_->echo() != nullptr; });
        !s.ok()) {
      return s;
    }
    trace_.Note(absl::StrCat("hot-added echo bound on relid ", agent_->echo()->relid()));
    if (absl::Status s = Echo(1000); !s.ok()) return s;

    // 7. Shutdown.
    trace_.Section("7. the host asks the guest to power off; the agent accepts and leaves");
    v1::GuestShutdownRequest request;
    request.set_kind(v1::GuestShutdownRequest::KIND_POWER_OFF);
    request.set_message("demo finished");
    absl::StatusOr<v1::GuestShutdownResponse> answer = host().RequestShutdown(request);
    if (!answer.ok()) return answer.status();
    if (!answer->accepted()) return absl::InternalError("the agent refused to shut down");
    std::optional<ic::ShutdownRequest> accepted =
        agent_->WaitForShutdown(absl::Now() + absl::Seconds(10));
    if (!accepted) return absl::InternalError("the agent never acted on the shutdown");
    if (absl::Status s = agent_->Stop(absl::Now() + absl::Seconds(10)); !s.ok()) return s;
    Drain();
    trace_.Note(absl::StrCat("agent accepted ", ic::ShutdownKindName(accepted->kind),
                             ": exit code ", GuestAgent::ExitCodeFor(*accepted)));
    return absl::OkStatus();
  }

  bool IcReady(size_t want) {
    v1::IcStatusRequest request;
    absl::StatusOr<v1::IcStatusResponse> s = host().IcStatus(request);
    if (!s.ok()) return false;
    size_t ready = 0;
    for (const v1::IcChannelStatus& c : s->channels()) ready += c.state() == "ready";
    return ready >= want;
  }
  uint64_t HeartbeatCount() {
    absl::StatusOr<v1::IcStatusResponse> s = host().IcStatus(v1::IcStatusRequest());
    if (!s.ok()) return 0;
    for (const v1::IcChannelStatus& c : s->channels()) {
      if (c.device() == "heartbeat") return c.beats();
    }
    return 0;
  }

  absl::Status Kvp(v1::KvpOp op, uint32_t pool, const std::string& key = "",
                   const std::string& value = "") {
    v1::KvpRequest request;
    request.set_op(op);
    request.set_pool(pool);
    request.mutable_item()->set_key(key);
    request.mutable_item()->set_value(value);
    absl::StatusOr<v1::KvpResponse> r = host().KvpExchange(request);
    if (!r.ok()) return r.status();
    Drain();
    const bool ok =
        r->status_name() == "S_OK" || (op == v1::KVP_OP_ENUMERATE && r->status_name() == "S_CONT");
    if (!ok) {
      return absl::InternalError(
          absl::StrCat("KVP ", v1::KvpOp_Name(op), " answered ", r->status_name()));
    }
    return absl::OkStatus();
  }

  absl::Status Echo(uint64_t packets) {
    std::shared_ptr<EchoLink> link = agent_->echo();
    if (link == nullptr) return absl::FailedPreconditionError("no echo channel");
    Drain();
    absl::StatusOr<EchoLink::Progress> done = link->Pump(
        packets, 64, absl::Now() + absl::Seconds(30), [this](const EchoLink::Progress& p) {
          trace_.Live(
              absl::StrFormat("echo  %8d sent  %8d back  %9.0f packets/s", p.sent, p.received,
                              p.received / std::max(1e-9, absl::ToDoubleSeconds(p.elapsed))),
              false);
        });
    if (!done.ok()) return done.status();
    trace_.Live(
        absl::StrFormat("echo  %d packets of 64 bytes on relid %d, every one back in "
                        "order: %.0f packets/s (round trips through the mock host)",
                        done->received, link->relid(),
                        done->received / std::max(1e-9, absl::ToDoubleSeconds(done->elapsed))),
        true);
    Drain();
    return absl::OkStatus();
  }

  Trace trace_;
  std::shared_ptr<Subscription> events_;
  std::unique_ptr<GuestAgent> agent_;
};

}  // namespace
}  // namespace vbus::examples

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("The vbus demo: a mock host and a guest agent, as a protocol trace");
  absl::ParseCommandLine(argc, argv);
  const std::string color = absl::GetFlag(FLAGS_color);
  const bool colour = color == "always" || (color == "auto" && isatty(fileno(stdout)) &&
                                            std::getenv("NO_COLOR") == nullptr);
  return vbus::examples::Demo(colour).Run();
}
