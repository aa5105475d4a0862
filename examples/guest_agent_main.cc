// guest_agent: a vbus guest agent. Answers the host's heartbeats, shutdown, time sync and KVP
// requests and echoes on an echo channel; exits when it accepts a shutdown request, with
// 0 (power off), 64 (reboot) or 65 (hibernate, if --accept_hibernate).
//
//   guest_agent                                  # against a mock host embedded in-process
//   guest_agent --host=unix:/tmp/mock.sock --kvp-store=/var/lib/vbus/kvp
//
// Other exits: 1 when it cannot start, 2 when the host went away, 130/143 on SIGINT/SIGTERM
// (after closing its channels and unloading).
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "examples/agent.h"

ABSL_FLAG(std::string, host, "",
          "The mock host (unix:PATH or HOST:PORT); empty = start one in this process");
ABSL_FLAG(std::string, name, "vbus-agent", "The guest's name at the host");
ABSL_FLAG(std::string, kvp_store, "",
          "File keeping the KVP pools across restarts (--kvp-store works too); empty = memory");
ABSL_FLAG(bool, accept_hibernate, false, "Accept hibernate requests (refused by default)");
ABSL_FLAG(int, ready_fd, -1, "If set, write \"ready\" and a newline here once connected");
ABSL_FLAG(double, connect_timeout, 20, "Seconds to connect");

namespace {

volatile std::sig_atomic_t g_signal = 0;
void OnSignal(int signal) { g_signal = signal; }

}  // namespace

int main(int argc, char** argv) {
  // Flags are spelled with underscores; accept the dashed spelling of --kvp-store as well.
  std::vector<std::string> args(argv, argv + argc);
  std::vector<char*> fixed;
  for (std::string& a : args) {
    if (absl::StartsWith(a, "--kvp-store")) a.replace(0, 11, "--kvp_store");
    fixed.push_back(a.data());
  }
  absl::SetProgramUsageMessage("A vbus guest agent: heartbeat, shutdown, time sync, KVP, echo");
  absl::ParseCommandLine(static_cast<int>(fixed.size()), fixed.data());
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  vbus::examples::AgentOptions options;
  options.host = absl::GetFlag(FLAGS_host);
  options.name = absl::GetFlag(FLAGS_name);
  options.kvp_store = absl::GetFlag(FLAGS_kvp_store);
  options.accept_hibernate = absl::GetFlag(FLAGS_accept_hibernate);
  const absl::Time started = absl::Now();
  options.log = [started](absl::string_view line) {
    std::fprintf(stderr, "[%8.3f] %.*s\n", absl::ToDoubleSeconds(absl::Now() - started),
                 static_cast<int>(line.size()), line.data());
  };
  absl::StatusOr<std::unique_ptr<vbus::examples::GuestAgent>> agent =
      vbus::examples::GuestAgent::Start(
          options, absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_connect_timeout)));
  if (!agent.ok()) {
    std::fprintf(stderr, "guest_agent: %s\n", agent.status().ToString().c_str());
    return 1;
  }
  if (const int fd = absl::GetFlag(FLAGS_ready_fd); fd >= 0) {
    (void)!write(fd, "ready\n", 6);
    close(fd);
  }
  while (true) {
    // Woken by the shutdown driver at once; the period only bounds how late a signal is seen.
    std::optional<vbus::ic::ShutdownRequest> request =
        (*agent)->WaitForShutdown(absl::Now() + absl::Milliseconds(200));
    if (request) {
      const int code = vbus::examples::GuestAgent::ExitCodeFor(*request);
      options.log(absl::StrCat("shutdown accepted (", vbus::ic::ShutdownKindName(request->kind),
                               "): closing channels, exit code ", code));
      absl::Status stopped = (*agent)->Stop(absl::Now() + absl::Seconds(10));
      if (!stopped.ok()) options.log(absl::StrCat("stop: ", stopped.ToString()));
      return code;
    }
    if (g_signal != 0) {
      options.log(absl::StrCat("signal ", static_cast<int>(g_signal), ": closing channels"));
      (void)(*agent)->Stop(absl::Now() + absl::Seconds(10));
      return 128 + g_signal;
    }
    if ((*agent)->bus().phase() == vbus::BusPhase::kDisconnected) {
      options.log("the host went away");
      return 2;
    }
  }
}
