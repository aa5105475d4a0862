// raw_guest: a minimal guest for the mock host, for demos and manual checks.
//
//   raw_guest --host=unix:/tmp/vbus.sock --name=demo --packets=1000 --stay
//
// Creates shared guest memory, attaches over GuestLink, negotiates 5.3, opens the first echo
// channel it is offered, sends --packets packets of varying sizes through the rings (doorbells
// for signals, no RPC on the data path) and checks every echoed byte. With --stay it then stays
// attached until SIGINT/SIGTERM. Exit 0 on success, 1 with the reason otherwise. It is a raw
// protocol driver (mock/testing/raw_guest_client.h), not core's ChannelBus.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/data/host_text.h"
#include "core/data/protocol.h"
#include "mock/host/device_kinds.h"
#include "mock/testing/raw_guest_client.h"

ABSL_FLAG(std::string, host, "127.0.0.1:50051", "The mock host: HOST:PORT or unix:PATH");
ABSL_FLAG(std::string, name, "raw-guest", "Guest name");
ABSL_FLAG(uint32_t, memory_mb, 16, "Guest memory size in MiB");
ABSL_FLAG(uint32_t, packets, 1000, "Echo packets to exchange");
ABSL_FLAG(bool, stay, false, "Stay attached until SIGINT/SIGTERM");
ABSL_FLAG(int, ready_fd, -1, "If set, write \"ready\\n\" here after the exchange, then close it");

namespace {

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "raw_guest: %s\n", message.c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("A raw test guest that attaches to mock_host and echoes packets.");
  absl::ParseCommandLine(argc, argv);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  auto channel = grpc::CreateChannel(absl::GetFlag(FLAGS_host), grpc::InsecureChannelCredentials());
  auto guest = vbus::mock::testing::RawGuestClient::Attach(
      channel, absl::GetFlag(FLAGS_name), uint64_t{absl::GetFlag(FLAGS_memory_mb)} << 20, deadline);
  if (!guest.ok()) Fail(absl::StrCat("attach: ", guest.status().ToString()));
  auto offers = (*guest)->Connect(vbus::protocol::kNewestVersion, deadline);
  if (!offers.ok()) Fail(absl::StrCat("connect: ", offers.status().ToString()));
  std::printf("raw_guest: attached as %s; %zu offer(s)\n",
              vbus::HostText((*guest)->guest_id()).c_str(), offers->size());

  const uint32_t count = absl::GetFlag(FLAGS_packets);
  for (const vbus::v1::Offer& offer : *offers) {
    if (offer.interface_type().value() != vbus::mock::kEchoDeviceClass.ToString()) continue;
    auto rings = (*guest)->OpenChannel(offer.child_relid(), 8, 8, deadline);
    if (!rings.ok()) Fail(absl::StrCat("open: ", rings.status().ToString()));
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < count; ++i) {
      std::vector<uint8_t> payload(8 + (i * 61) % 2000);
      for (size_t j = 0; j < payload.size(); ++j) payload[j] = static_cast<uint8_t>(i + 3 * j);
      auto sent = (*rings)->SendWaiting(vbus::PacketType::kDataInband, 0, i, payload, deadline);
      if (!sent.ok()) Fail(absl::StrCat("send ", i, ": ", sent.status().ToString()));
      auto echo = (*rings)->WaitForPacket(deadline);
      if (!echo.ok()) Fail(absl::StrCat("echo ", i, ": ", echo.status().ToString()));
      payload.resize((payload.size() + 7) / 8 * 8, 0);
      if (echo->trans_id != i || echo->payload != payload) {
        Fail(absl::StrCat("echo ", i, " differs from what was sent"));
      }
      bytes += payload.size();
    }
    std::printf("raw_guest: %u packets (%llu bytes) echoed on relid %u, every byte checked\n",
                count, static_cast<unsigned long long>(bytes), offer.child_relid());
    break;
  }
  std::fflush(stdout);

  if (const int fd = absl::GetFlag(FLAGS_ready_fd); fd >= 0) {
    if (write(fd, "ready\n", 6) != 6)
      Fail(absl::StrCat("write --ready_fd: ", std::strerror(errno)));
    close(fd);
  }
  if (absl::GetFlag(FLAGS_stay)) {
    int received = 0;
    while (sigwait(&signals, &received) != 0) {
    }
  }
  return 0;
}
