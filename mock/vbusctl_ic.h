// vbusctl's integration-component commands (vbusctl.cc dispatches to them):
//
//   shutdown [--reboot | --hibernate] [--force] [--message=TEXT]
//                                  ask the guest to power off (reboot, hibernate); exits 3 if
//                                  the guest refused
//   kvp get|set|delete --key=K [--value=V] [--type=string|u32|u64] [--pool=P]
//   kvp enum [--pool=P]            one exchange on the guest's KVP pools (P: external, guest,
//                                  auto, auto-external or 0..3; default external); exits 3 if
//                                  the guest answered with a failure
//   time [--skew=5s] [--sample]    send a time SYNC (SAMPLE) now, optionally moving the host
//                                  clock's skew first
//   ic                             the IC channels: state, versions, counters, heartbeats
//   ic-config [--heartbeat_ms=N] [--answer_timeout_ms=N] [--sample_ms=N]
//                                  show (and change) the IC emulators' settings
// Each takes --json for one JSON object instead of the human-readable lines.
#ifndef VBUS_MOCK_VBUSCTL_IC_H_
#define VBUS_MOCK_VBUSCTL_IC_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "proto/mock_host.grpc.pb.h"

namespace vbus::vbusctl {

struct IcContext {
  std::string guest;  // --guest
  bool json = false;  // --json
  // A fresh client context with the command's deadline.
  std::function<std::unique_ptr<grpc::ClientContext>()> context;
  // Prints a failed RPC and returns its exit code (0 for OK).
  std::function<int(const std::string& what, const grpc::Status&)> check;
  // Reports a usage error and exits 2.
  std::function<void(const std::string& why)> usage;
};

// RunIcCommand: the exit code, or nullopt if `args[0]` is not an IC command.
std::optional<int> RunIcCommand(v1::HostControl::Stub& stub, const std::vector<std::string>& args,
                                const IcContext& ctx);

}  // namespace vbus::vbusctl

#endif  // VBUS_MOCK_VBUSCTL_IC_H_
