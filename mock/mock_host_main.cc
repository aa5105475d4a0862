// mock_host: the mock VMBus host as a gRPC server.
//
//   mock_host --listen=127.0.0.1:50051 --offer=echo,sink
//   mock_host --listen=unix:/tmp/vbus.sock --config=host.textproto
//
// Guests attach over GuestLink (a MockBackend, a raw test guest); tests, vbusctl and any gRPC
// client drive HostControl. Server reflection is on. Logs one line per guest attach, detach
// and error on stderr. SIGINT or SIGTERM shuts it down cleanly: guests are detached (their
// streams end with UNAVAILABLE), watch streams end, and the process exits 0.
//
// --config names a text-format vbus.v1.HostConfig (proto/mock_host.proto), e.g.
//   default_offers { device: "echo" }
//   default_offers { device: "sink" sub_channel_count: 2 }
//   settings { max_version: 0x00050000 remap_relids_on_resume: true }
// --offer appends default offers of the named kinds; --ready_fd=N makes the server write its
// target address and a newline to file descriptor N once it serves, then close N (so a parent
// process can wait for readiness without polling).
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "google/protobuf/text_format.h"
#include "mock/host/mock_host.h"
#include "proto/mock_host.pb.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "Where to listen: HOST:PORT (port 0 picks a free one) or unix:PATH");
ABSL_FLAG(std::string, config, "",
          "Text-format vbus.v1.HostConfig file (default offers, settings)");
ABSL_FLAG(std::vector<std::string>, offer, {},
          "Device kinds offered to every guest that attaches, e.g. echo,sink (after --config's)");
ABSL_FLAG(uint64_t, seed, 0x76627573, "Seed of the generated instance GUIDs");
ABSL_FLAG(int, ready_fd, -1, "If set, write the target address and a newline here once serving");
// An integer, not an absl::Duration: a 16-byte flag is read through a sequence lock whose
// fence -fsanitize=thread refuses.
ABSL_FLAG(int64_t, doorbell_poll_us, 20,
          "Microseconds a guest's doorbell thread polls for the next signal before it sleeps (0: "
          "sleep at once)");

namespace {

void Fail(const std::string& message) {
  std::fprintf(stderr, "mock_host: %s\n", message.c_str());
  std::exit(1);
}

vbus::v1::HostConfig LoadConfig(const std::string& path) {
  vbus::v1::HostConfig config;
  if (path.empty()) return config;
  std::ifstream in(path);
  if (!in) Fail(absl::StrCat("cannot read --config ", path, ": ", std::strerror(errno)));
  std::stringstream text;
  text << in.rdbuf();
  if (!google::protobuf::TextFormat::ParseFromString(text.str(), &config)) {
    Fail(absl::StrCat("--config ", path, " is not a text-format vbus.v1.HostConfig"));
  }
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("The mock VMBus host: a gRPC server (GuestLink, HostControl).");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) Fail(absl::StrCat("unexpected argument \"", positional[1], "\""));

  // Block the shutdown signals before any thread starts, so every thread inherits the mask
  // and only sigwait below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  vbus::v1::HostConfig config = LoadConfig(absl::GetFlag(FLAGS_config));
  vbus::mock::MockHostOptions options;
  options.engine.settings = config.settings();
  options.engine.default_offers.assign(config.default_offers().begin(),
                                       config.default_offers().end());
  for (const std::string& kind : absl::GetFlag(FLAGS_offer)) {
    options.engine.default_offers.emplace_back().set_device(kind);
  }
  options.engine.seed = absl::GetFlag(FLAGS_seed);
  options.doorbell_poll = absl::Microseconds(absl::GetFlag(FLAGS_doorbell_poll_us));

  const std::string listen = absl::GetFlag(FLAGS_listen);
  absl::StatusOr<std::unique_ptr<vbus::mock::MockHostServer>> server =
      vbus::mock::MockHostServer::Start(std::move(options), listen);
  if (!server.ok()) Fail(std::string(server.status().message()));
  std::fprintf(stderr, "mock_host: listening on %s\n", (*server)->target().c_str());

  if (const int fd = absl::GetFlag(FLAGS_ready_fd); fd >= 0) {
    const std::string line = (*server)->target() + "\n";
    if (write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      Fail(absl::StrCat("cannot write to --ready_fd ", fd, ": ", std::strerror(errno)));
    }
    close(fd);
  }

  int received = 0;
  while (sigwait(&signals, &received) != 0) {
  }
  std::fprintf(stderr, "mock_host: %s, shutting down\n", strsignal(received));
  (*server)->Shutdown();
  server->reset();
  std::fprintf(stderr, "mock_host: stopped\n");
  return 0;
}
