#include "test/e2e/e2e_host.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace vbus::e2e {

std::string g_mock_host_binary;

namespace {

std::chrono::system_clock::time_point RpcDeadline() {
  return absl::ToChronoTime(absl::Now() + absl::Seconds(20));
}

// The interrupt vector a HyperV guest's SINT2 raises (any of 16..255 on the fake).
constexpr uint8_t kHyperVVector = 0x52;

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace

absl::StatusOr<std::unique_ptr<E2eHost>> E2eHost::Start(Mode mode, absl::Time deadline) {
  auto host = std::unique_ptr<E2eHost>(new E2eHost());
  host->mode_ = mode;
  if (mode == Mode::kInProcess) {
    host->log_ = std::make_shared<LogLines>();
    mock::MockHostOptions options;
    options.log = [log = host->log_](absl::string_view line) {
      MutexLock lock(&log->mu);
      log->lines.emplace_back(line);
    };
    absl::StatusOr<std::unique_ptr<mock::MockHostServer>> server =
        mock::MockHostServer::Start(std::move(options), "");
    if (!server.ok()) return server.status();
    host->server_ = std::move(*server);
    host->channel_ = host->server_->InProcessChannel();
  } else {
    if (absl::Status s = host->StartProcess(deadline); !s.ok()) return s;
  }
  host->control_ = v1::HostControl::NewStub(host->channel_);
  return host;
}

absl::Status E2eHost::StartProcess(absl::Time deadline) {
  if (g_mock_host_binary.empty()) {
    return absl::FailedPreconditionError("no mock_host binary (pass $(rootpath //mock:mock_host))");
  }
  // A unix socket in TEST_TMPDIR when its path fits in sockaddr_un (108 bytes), else a free
  // loopback port.
  const char* tmp = std::getenv("TEST_TMPDIR");
  static std::atomic<int> started{0};
  const std::string socket_path =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/mh-", getpid(), "-",
                   started.fetch_add(1, std::memory_order_relaxed), ".sock");
  const std::string listen =
      socket_path.size() < 100 ? absl::StrCat("unix:", socket_path) : "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<mock::testing::MockHostProcess>> process =
      mock::testing::MockHostProcess::Start(g_mock_host_binary, {absl::StrCat("--listen=", listen)},
                                            deadline);
  if (!process.ok()) return process.status();
  process_ = std::move(*process);
  channel_ = grpc::CreateChannel(process_->target(), grpc::InsecureChannelCredentials());
  return absl::OkStatus();
}

E2eHost::~E2eHost() {
  // Close the client channel first: an open channel holds up the server's SIGTERM shutdown.
  control_.reset();
  channel_.reset();
  if (server_ != nullptr) server_->Shutdown();
  if (process_ != nullptr && process_->pid() > 0) {
    (void)process_->Stop(absl::Now() + absl::Seconds(20));  // kills it if it hangs
  }
}

absl::Status E2eHost::Kill() {
  if (process_ == nullptr) return absl::FailedPreconditionError("not a separate process");
  return process_->Kill(absl::Now() + absl::Seconds(20));
}

std::string E2eHost::log() const {
  if (process_ != nullptr) return process_->log();
  MutexLock lock(&log_->mu);
  return absl::StrJoin(log_->lines, "\n");
}

absl::StatusOr<v1::OfferResponse> E2eHost::Offer(const std::string& guest,
                                                 const std::string& device) {
  grpc::ClientContext context;
  context.set_deadline(RpcDeadline());
  v1::OfferRequest request;
  request.set_guest(guest);
  request.mutable_spec()->set_device(device);
  v1::OfferResponse response;
  grpc::Status s = control_->Offer(&context, request, &response);
  if (!s.ok()) return FromGrpc(s);
  return response;
}

absl::Status E2eHost::Rescind(const std::string& guest, uint32_t relid) {
  grpc::ClientContext context;
  context.set_deadline(RpcDeadline());
  v1::RescindRequest request;
  request.set_guest(guest);
  request.set_child_relid(relid);
  v1::RescindResponse response;
  return FromGrpc(control_->Rescind(&context, request, &response));
}

absl::StatusOr<std::vector<v1::ChannelInfo>> E2eHost::Channels(const std::string& guest) {
  grpc::ClientContext context;
  context.set_deadline(RpcDeadline());
  v1::ListChannelsRequest request;
  request.set_guest(guest);
  v1::ListChannelsResponse response;
  grpc::Status s = control_->ListChannels(&context, request, &response);
  if (!s.ok()) return FromGrpc(s);
  return std::vector<v1::ChannelInfo>(response.channels().begin(), response.channels().end());
}

absl::StatusOr<v1::ChannelInfo> E2eHost::Channel(const std::string& guest, uint32_t relid) {
  absl::StatusOr<std::vector<v1::ChannelInfo>> all = Channels(guest);
  if (!all.ok()) return all.status();
  for (const v1::ChannelInfo& c : *all) {
    if (c.child_relid() == relid) return c;
  }
  return absl::NotFoundError(absl::StrCat("host lists no relid ", relid, " for ", guest));
}

absl::Status E2eHost::InjectFault(const v1::InjectFaultRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(RpcDeadline());
  v1::InjectFaultResponse response;
  return FromGrpc(control_->InjectFault(&context, request, &response));
}

absl::StatusOr<v1::RingFaultResult> E2eHost::RingFault(const std::string& guest,
                                                       const v1::RingFault& fault) {
  grpc::ClientContext context;
  context.set_deadline(RpcDeadline());
  v1::InjectFaultRequest request;
  request.set_guest(guest);
  *request.mutable_ring() = fault;
  v1::InjectFaultResponse response;
  grpc::Status s = control_->InjectFault(&context, request, &response);
  if (!s.ok()) return FromGrpc(s);
  return response.ring();
}

absl::Status E2eHost::SendPacket(const v1::SendPacketRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(RpcDeadline());
  v1::SendPacketResponse response;
  return FromGrpc(control_->SendPacket(&context, request, &response));
}

absl::StatusOr<std::unique_ptr<E2eGuest>> E2eGuest::Attach(const E2eHost& host,
                                                           const std::string& name,
                                                           ChannelBusOptions options,
                                                           E2eGuestOptions guest_options) {
  auto guest = std::unique_ptr<E2eGuest>(new E2eGuest());
  guest->kind_ = guest_options.backend;
  Backend* backend = nullptr;
  if (guest_options.backend == BackendKind::kMock) {
    mock::MockBackendOptions backend_options;
    backend_options.guest_name = name;
    backend_options.memory_bytes = guest_options.memory_bytes;
    backend_options.vp_count = guest_options.vp_count;
    absl::StatusOr<std::unique_ptr<mock::MockBackend>> mock =
        mock::MockBackend::Connect(host.channel(), backend_options);
    if (!mock.ok()) return mock.status();
    guest->mock_ = std::move(*mock);
    backend = guest->mock_.get();
  } else {
    hyperv::testing::MockHostBridgeOptions bridge_options;
    bridge_options.guest_name = name;
    bridge_options.memory_bytes = guest_options.memory_bytes;
    bridge_options.vp_count = guest_options.vp_count;
    absl::StatusOr<std::unique_ptr<hyperv::testing::MockHostBridge>> bridge =
        hyperv::testing::MockHostBridge::Connect(host.channel(), std::move(bridge_options));
    if (!bridge.ok()) return bridge.status();
    guest->bridge_ = std::move(*bridge);
    if (absl::Status s = guest->bridge_->Start(); !s.ok()) return s;
    hyperv::HyperVBackendOptions hv;
    hv.vector = kHyperVVector;
    hv.vp_count = guest_options.vp_count;
    hv.guest_os_id = hyperv::testing::kBridgeGuestOsId;
    // A post only fails when the host is gone (its connections closed): report it soon.
    hv.post_timeout = absl::Seconds(1);
    absl::StatusOr<std::unique_ptr<hyperv::HyperVBackend>> hyperv =
        hyperv::HyperVBackend::Create(guest->bridge_->hypervisor(), std::move(hv));
    if (!hyperv.ok()) return hyperv.status();
    guest->hyperv_ = std::move(*hyperv);
    backend = guest->hyperv_.get();
  }
  if (guest_options.wrap) {
    guest->wrapper_ = guest_options.wrap(backend);
    backend = guest->wrapper_.get();
  }
  absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(backend, std::move(options));
  if (!bus.ok()) return bus.status();
  guest->bus_ = std::move(*bus);
  return guest;
}

absl::StatusOr<std::unique_ptr<E2eGuest>> E2eGuest::Attach(const E2eHost& host,
                                                           const std::string& name,
                                                           ChannelBusOptions options,
                                                           uint64_t memory_bytes) {
  E2eGuestOptions guest_options;
  guest_options.memory_bytes = memory_bytes;
  return Attach(host, name, std::move(options), std::move(guest_options));
}

E2eGuest::~E2eGuest() {
  bus_.reset();
  wrapper_.reset();
  mock_.reset();
  hyperv_.reset();
  bridge_.reset();
}

size_t E2eGuest::free_pages() const {
  if (mock_ != nullptr) return mock_->pool().free_pages();
  return bridge_->hypervisor().free_pages();
}

}  // namespace vbus::e2e
