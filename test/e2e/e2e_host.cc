#include "test/e2e/e2e_host.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace vbus::e2e {

std::string g_mock_host_binary;

namespace {

std::chrono::system_clock::time_point RpcDeadline() {
  return absl::ToChronoTime(absl::Now() + absl::Seconds(20));
}

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

int MillisUntil(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return ms < 0 ? 0 : static_cast<int>(std::min<int64_t>(ms, 60000));
}

// Waits for `pid` to exit until `deadline` (pidfd + poll: no sleeping). True if it exited.
bool Reap(pid_t pid, absl::Time deadline) {
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return waitpid(pid, nullptr, 0) == pid;  // already a zombie or gone
  pollfd p{pidfd, POLLIN, 0};
  int n;
  do {
    n = poll(&p, 1, MillisUntil(deadline));
  } while (n < 0 && errno == EINTR);
  close(pidfd);
  if (n <= 0) return false;
  return waitpid(pid, nullptr, 0) == pid;
}

}  // namespace

absl::StatusOr<std::unique_ptr<E2eHost>> E2eHost::Start(Mode mode, absl::Time deadline) {
  auto host = std::unique_ptr<E2eHost>(new E2eHost());
  host->mode_ = mode;
  if (mode == Mode::kInProcess) {
    host->log_lines_ = std::make_shared<std::vector<std::string>>();
    auto lines = host->log_lines_;
    auto mu = std::make_shared<std::mutex>();
    mock::MockHostOptions options;
    options.log = [lines, mu](absl::string_view line) {
      std::lock_guard<std::mutex> lock(*mu);
      lines->emplace_back(line);
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
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = tmp != nullptr ? tmp : "/tmp";
  static int counter = 0;
  const std::string tag = absl::StrCat(getpid(), "-", ++counter);
  log_path_ = absl::StrCat(dir, "/mock_host-", tag, ".log");
  // A unix socket in TEST_TMPDIR when its path fits in sockaddr_un (108 bytes), else a free
  // loopback port.
  const std::string socket_path = absl::StrCat(dir, "/mh-", tag, ".sock");
  const std::string listen =
      socket_path.size() < 100 ? absl::StrCat("unix:", socket_path) : "127.0.0.1:0";

  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe");
  const int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::ErrnoToStatus(errno, "open the mock_host log");
  // Everything the child needs is prepared before fork (no allocation after it).
  constexpr int kReadyFd = 3;
  std::vector<std::string> args = {g_mock_host_binary, absl::StrCat("--listen=", listen),
                                   absl::StrCat("--ready_fd=", kReadyFd)};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    dup2(ready[1], kReadyFd);
    dup2(log_fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  pid_ = pid;
  close(ready[1]);
  close(log_fd);

  // Readiness: the server writes "<target>\n" once it serves.
  std::string line;
  while (line.find('\n') == std::string::npos) {
    pollfd p{ready[0], POLLIN, 0};
    const int n = poll(&p, 1, MillisUntil(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(ready[0]);
      return absl::DeadlineExceededError(
          absl::StrCat("mock_host did not report ready; its log:\n", log()));
    }
    char buf[256];
    const ssize_t got = read(ready[0], buf, sizeof(buf));
    if (got <= 0) {
      close(ready[0]);
      return absl::UnavailableError(
          absl::StrCat("mock_host exited before it was ready; its log:\n", log()));
    }
    line.append(buf, static_cast<size_t>(got));
  }
  close(ready[0]);
  const std::string target(absl::StripSuffix(line.substr(0, line.find('\n')), "\r"));
  channel_ = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  return absl::OkStatus();
}

E2eHost::~E2eHost() {
  control_.reset();
  channel_.reset();
  if (server_ != nullptr) server_->Shutdown();
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    if (!Reap(pid_, absl::Now() + absl::Seconds(20))) {
      kill(pid_, SIGKILL);
      Reap(pid_, absl::Now() + absl::Seconds(20));
    }
  }
}

absl::Status E2eHost::Kill() {
  if (pid_ <= 0) return absl::FailedPreconditionError("not a separate process");
  kill(pid_, SIGKILL);
  const bool reaped = Reap(pid_, absl::Now() + absl::Seconds(20));
  pid_ = -1;
  return reaped ? absl::OkStatus() : absl::DeadlineExceededError("mock_host did not die");
}

std::string E2eHost::log() const {
  if (log_lines_ != nullptr) return absl::StrJoin(*log_lines_, "\n");
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
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

absl::StatusOr<std::unique_ptr<E2eGuest>> E2eGuest::Attach(const E2eHost& host,
                                                           const std::string& name,
                                                           ChannelBusOptions options,
                                                           uint64_t memory_bytes) {
  auto guest = std::unique_ptr<E2eGuest>(new E2eGuest());
  mock::MockBackendOptions backend_options;
  backend_options.guest_name = name;
  backend_options.memory_bytes = memory_bytes;
  absl::StatusOr<std::unique_ptr<mock::MockBackend>> backend =
      mock::MockBackend::Connect(host.channel(), backend_options);
  if (!backend.ok()) return backend.status();
  guest->backend_ = std::move(*backend);
  absl::StatusOr<std::unique_ptr<ChannelBus>> bus =
      ChannelBus::Create(guest->backend_.get(), std::move(options));
  if (!bus.ok()) return bus.status();
  guest->bus_ = std::move(*bus);
  return guest;
}

E2eGuest::~E2eGuest() {
  bus_.reset();
  backend_.reset();
}

}  // namespace vbus::e2e
