// E2eHost and E2eGuest (testonly): the two ends of an end-to-end test.
//
// E2eHost is a mock host either in this process (MockHostServer, reached through an
// in-process gRPC channel) or as a separate //mock:mock_host process (listening on a unix
// socket in TEST_TMPDIR, or a free loopback port when that path is too long; readiness is the
// address the server writes to --ready_fd, awaited with a deadline). Either way the test
// drives it through the same generated HostControl stub, so every scenario runs unchanged
// against both.
//
// E2eGuest is what a guest agent links, on one of two backends attached to that host, and a
// ChannelBus on top of it:
//   - kMock: a MockBackend (mock/guest/mock_backend.h);
//   - kHyperV: a HyperVBackend (hyperv/hyperv_backend.h) on a FakeHypervisor whose host side
//     is bridged to the mock host (hyperv/testing/mock_host_bridge.h): the same host, devices
//     and HostControl, with every control message crossing the binary VMBus codec and every
//     signal the SynIC.
// The scenarios in test/e2e run over every host mode × backend (e2e_params.h).
//
// Example:
//   ASSIGN_OR_RETURN(auto host, E2eHost::Start(E2eHost::Mode::kProcess, Deadline()));
//   E2eGuestOptions hyperv;
//   hyperv.backend = BackendKind::kHyperV;
//   ASSIGN_OR_RETURN(auto guest, E2eGuest::Attach(*host, "vm-1", {}, hyperv));
//   ASSIGN_OR_RETURN(v1::OfferResponse echo, host->Offer("vm-1", "echo"));
//   RETURN_IF_ERROR(guest->bus().Connect(Deadline()));
#ifndef VBUS_TEST_E2E_E2E_HOST_H_
#define VBUS_TEST_E2E_E2E_HOST_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/sync.h"
#include "grpcpp/grpcpp.h"
#include "hyperv/hyperv_backend.h"
#include "hyperv/testing/mock_host_bridge.h"
#include "mock/guest/mock_backend.h"
#include "mock/host/mock_host.h"
#include "proto/mock_host.grpc.pb.h"
#include "test/mock/mock_host_process.h"

namespace vbus::e2e {

// Path of the mock_host binary (the test's first argument, from $(rootpath //mock:mock_host)).
// Set by the test's main before the tests run.
extern std::string g_mock_host_binary;

class E2eHost {
 public:
  enum class Mode { kInProcess, kProcess };

  // ModeTestName: names a test parameterised on Mode "InProcess" or "Process", for
  //   INSTANTIATE_TEST_SUITE_P(Hosts, T, ::testing::Values(Mode::kInProcess, Mode::kProcess),
  //                            E2eHost::ModeTestName());
  struct ModeTestName {
    template <typename ParamInfo>
    std::string operator()(const ParamInfo& info) const {
      return info.param == Mode::kInProcess ? "InProcess" : "Process";
    }
  };

  static absl::StatusOr<std::unique_ptr<E2eHost>> Start(Mode mode, absl::Time deadline);
  // Stops the host (SIGTERM and a bounded wait for a child process).
  ~E2eHost();

  Mode mode() const { return mode_; }
  // The channel guests and HostControl calls use.
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  v1::HostControl::StubInterface& control() { return *control_; }
  // The in-process host itself (kInProcess only, else null): direct calls without an RPC.
  mock::MockHost* in_process_host() const {
    return server_ != nullptr ? &server_->host() : nullptr;
  }

  // HostControl conveniences (each an RPC with a 20-second deadline).
  absl::StatusOr<v1::OfferResponse> Offer(const std::string& guest, const std::string& device);
  absl::Status Rescind(const std::string& guest, uint32_t relid);
  absl::StatusOr<std::vector<v1::ChannelInfo>> Channels(const std::string& guest);
  absl::StatusOr<v1::ChannelInfo> Channel(const std::string& guest, uint32_t relid);
  absl::Status InjectFault(const v1::InjectFaultRequest& request);
  // InjectFault{ring} for `guest`: what the hostile host did to its rings or events.
  absl::StatusOr<v1::RingFaultResult> RingFault(const std::string& guest,
                                                const v1::RingFault& fault);
  // SendPacket: one packet into an open channel's inbound ring (HostControl.SendPacket).
  absl::Status SendPacket(const v1::SendPacketRequest& request);
  // Stops a child process now (SIGKILL) — the host vanishing without a goodbye.
  absl::Status Kill();

  // The child's stderr, or the in-process host's log lines.
  std::string log() const;

 private:
  E2eHost() = default;
  absl::Status StartProcess(absl::Time deadline);

  // The in-process host's log lines; shared with the host's log callback.
  struct LogLines {
    Mutex mu;
    std::vector<std::string> lines ABSL_GUARDED_BY(mu);
  };

  Mode mode_ = Mode::kInProcess;
  std::unique_ptr<mock::MockHostServer> server_;             // kInProcess
  std::shared_ptr<LogLines> log_;                            // kInProcess
  std::unique_ptr<mock::testing::MockHostProcess> process_;  // kProcess
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::HostControl::Stub> control_;
};

// The backend an E2eGuest runs on.
enum class BackendKind { kMock, kHyperV };

struct E2eGuestOptions {
  BackendKind backend = BackendKind::kMock;
  // The shared guest-memory file (the HyperV guest's memory is its data pages).
  uint64_t memory_bytes = uint64_t{64} << 20;
  // Virtual processors the guest takes events on.
  uint32_t vp_count = 1;
  // Optional: a decorator the bus runs on instead of the backend (e.g. a PostFaultBackend);
  // it lives as long as the guest.
  std::function<std::unique_ptr<Backend>(Backend* backend)> wrap = nullptr;
};

class E2eGuest {
 public:
  // Creates the guest memory, attaches as `name` on the chosen backend and starts a ChannelBus
  // (not connected yet).
  static absl::StatusOr<std::unique_ptr<E2eGuest>> Attach(const E2eHost& host,
                                                          const std::string& name,
                                                          ChannelBusOptions options,
                                                          E2eGuestOptions guest = {});
  // The same on MockBackend, with `memory_bytes` of guest memory.
  static absl::StatusOr<std::unique_ptr<E2eGuest>> Attach(const E2eHost& host,
                                                          const std::string& name,
                                                          ChannelBusOptions options,
                                                          uint64_t memory_bytes);
  // Destroys the bus (shutting it down), then the backend (and the bridge).
  ~E2eGuest();

  BackendKind kind() const { return kind_; }
  ChannelBus& bus() { return *bus_; }
  // Guest pages the backend can still hand out (MockBackend's pool, or the fake's memory).
  size_t free_pages() const;
  // The backends themselves (and the HyperV guest's bridge); null for the other kind.
  mock::MockBackend* mock_backend() const { return mock_.get(); }
  hyperv::HyperVBackend* hyperv_backend() const { return hyperv_.get(); }
  hyperv::testing::MockHostBridge* bridge() const { return bridge_.get(); }
  // A kMock guest's MockBackend (kMock guests only).
  mock::MockBackend& backend() const { return *mock_; }

 private:
  E2eGuest() = default;
  BackendKind kind_ = BackendKind::kMock;
  std::unique_ptr<mock::MockBackend> mock_;
  // Declared before hyperv_: the backend lives on the bridge's FakeHypervisor.
  std::unique_ptr<hyperv::testing::MockHostBridge> bridge_;
  std::unique_ptr<hyperv::HyperVBackend> hyperv_;
  std::unique_ptr<Backend> wrapper_;
  std::unique_ptr<ChannelBus> bus_;
};

}  // namespace vbus::e2e

#endif  // VBUS_TEST_E2E_E2E_HOST_H_
