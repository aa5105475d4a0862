// GuestAgent: a small, real guest agent built on vbus — what software inside a VM runs to answer
// its host. It binds the four integration-component drivers (heartbeat, shutdown, time sync,
// KVP; drivers/) and an echo client to a ChannelBus, logs what happens in readable lines and
// tells its owner when the host asked it to shut down and it accepted.
//
// It talks to a mock host: one at an address (AgentOptions::host, e.g. a //mock:mock_host
// started with --offer=heartbeat,shutdown,timesync,kvp,echo), or, by default, one it embeds in
// its own process (offering those five devices), so that it runs anywhere.
//
// Example (examples/guest_agent_main.cc is the whole program):
//   AgentOptions options;
//   options.kvp_store = "/var/lib/vbus/kvp";  // pools survive restarts
//   ASSIGN_OR_RETURN(std::unique_ptr<GuestAgent> agent,
//                    GuestAgent::Start(options, absl::Now() + absl::Seconds(10)));
//   std::optional<ic::ShutdownRequest> r = agent->WaitForShutdown(absl::InfiniteFuture());
//   return GuestAgent::ExitCodeFor(*r);
//
// Thread safety: every method may be called from any thread.
#ifndef VBUS_EXAMPLES_AGENT_H_
#define VBUS_EXAMPLES_AGENT_H_

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/runtime/channel_bus.h"
#include "drivers/kvp/kvp_store.h"
#include "drivers/shutdown/shutdown.h"
#include "drivers/timesync/timesync.h"
#include "examples/echo_client.h"
#include "grpcpp/grpcpp.h"
#include "mock/guest/mock_backend.h"
#include "mock/host/mock_host.h"
#include "proto/mock_host.pb.h"

namespace vbus::examples {

// Exit codes for an accepted shutdown request: a supervisor powers the machine off on 0 and
// starts it again on kExitReboot (kExitHibernate: suspend it).
inline constexpr int kExitPowerOff = 0;
inline constexpr int kExitReboot = 64;
inline constexpr int kExitHibernate = 65;

struct AgentOptions {
  // The mock host's address ("unix:PATH", "HOST:PORT"); empty = embed one in this process.
  std::string host;
  // The guest's name at the host.
  std::string name = "vbus-agent";
  // File for the KVP pools (written atomically on each change); empty = in memory.
  std::string kvp_store;
  // Accept hibernate requests too (by default they are refused: E_FAIL).
  bool accept_hibernate = false;
  // The agent's log lines (one event each); empty = stderr.
  std::function<void(absl::string_view)> log;

  // Embedded host only:
  // what it offers to the agent when it attaches;
  std::vector<std::string> embedded_offers = {"heartbeat", "shutdown", "timesync", "kvp", "echo"};
  // its IC settings (unset fields keep the host's defaults);
  v1::IcSettings embedded_ic;
  // its log lines (attach, detach, errors); empty = stderr;
  std::function<void(absl::string_view)> embedded_log;
  // called once the embedded host serves, before the agent attaches (e.g. to watch its
  // events from the very start).
  std::function<void(mock::MockHostServer&)> before_attach;
};

class GuestAgent {
 public:
  // Start
  // Starts (or dials) the host, binds the drivers, connects: negotiates, receives the offers,
  // opens every channel a driver claims. Errors: the KVP store's (DataLoss for a corrupt
  // file), the host's (Unavailable), Connect's (DeadlineExceeded at `deadline`).
  static absl::StatusOr<std::unique_ptr<GuestAgent>> Start(AgentOptions options,
                                                           absl::Time deadline);
  // Shuts the bus down (if Stop was not called), then the backend and an embedded host.
  ~GuestAgent();
  GuestAgent(const GuestAgent&) = delete;
  GuestAgent& operator=(const GuestAgent&) = delete;

  // WaitForShutdown
  // The shutdown request the agent accepted (after it answered the host), or nullopt if none
  // came by `deadline`.
  std::optional<ic::ShutdownRequest> WaitForShutdown(absl::Time deadline);
  // The exit code for an accepted request (kExitPowerOff, kExitReboot, kExitHibernate).
  static int ExitCodeFor(const ic::ShutdownRequest& request);

  // Stop: closes every channel and unloads (ChannelBus::Shutdown).
  absl::Status Stop(absl::Time deadline);

  ChannelBus& bus() { return *bus_; }
  // The embedded host, or nullptr when the agent dialled one.
  mock::MockHostServer* embedded_host() { return server_.get(); }
  // The echo channel now, or nullptr (none offered, or rescinded).
  std::shared_ptr<EchoLink> echo() const;
  ic::KvpStore& kvp_store() { return *store_; }
  // The last time sample the host sent.
  std::optional<ic::TimeSample> last_time_sample() const;

 private:
  explicit GuestAgent(AgentOptions options) : options_(std::move(options)) {}
  void Log(absl::string_view line) const;
  absl::Status RegisterDrivers();

  const AgentOptions options_;
  std::shared_ptr<ic::KvpStore> store_;
  DriverRegistry drivers_;
  // Declared in the order they are built; destroyed in reverse (bus, backend, host).
  std::unique_ptr<mock::MockHostServer> server_;
  std::unique_ptr<mock::MockBackend> backend_;
  std::unique_ptr<ChannelBus> bus_;

  mutable std::mutex mu_;
  std::condition_variable shutdown_cv_;
  std::optional<ic::ShutdownRequest> accepted_;  // guarded by mu_
  std::shared_ptr<EchoLink> echo_;               // guarded by mu_
  std::optional<ic::TimeSample> last_sample_;    // guarded by mu_
};

}  // namespace vbus::examples

#endif  // VBUS_EXAMPLES_AGENT_H_
