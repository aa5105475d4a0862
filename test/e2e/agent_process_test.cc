// The guest agent (//examples:guest_agent) as a separate process against a //mock:mock_host
// process, driven through HostControl: it answers the ICs, exits with the code of the shutdown
// it accepts (64 for reboot, 0 for power off), keeps refusing hibernate, and its file-backed
// KVP pool survives a restart.
//
// Usage: agent_process_test <mock_host> <guest_agent>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mock_host.grpc.pb.h"
#include "test/e2e/eventually.h"
#include "test/mock/mock_host_process.h"

namespace vbus::e2e {
namespace {

std::string g_mock_host;
std::string g_agent;

absl::Time Deadline(absl::Duration d = absl::Seconds(30)) { return absl::Now() + d; }

// A child process: started with a pipe on --ready_fd, awaited through a pidfd (poll with a
// deadline, no sleeping).
class Agent {
 public:
  static absl::StatusOr<std::unique_ptr<Agent>> Start(const std::vector<std::string>& flags,
                                                      absl::Time deadline) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
    std::vector<std::string> args = {g_agent};
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back(absl::StrCat("--ready_fd=", 100));
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      dup2(pipe_fds[1], 100);  // dup2 clears O_CLOEXEC on the copy
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(pipe_fds[1]);
    auto agent = std::unique_ptr<Agent>(new Agent(pid));
    agent->pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    // Ready: "ready\n" on the pipe (EOF first means the agent failed).
    struct pollfd p = {pipe_fds[0], POLLIN, 0};
    const int timeout_ms =
        static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
    char buf[16] = {};
    const bool ready = poll(&p, 1, timeout_ms) == 1 && read(pipe_fds[0], buf, sizeof(buf)) > 0;
    close(pipe_fds[0]);
    if (!ready) return absl::DeadlineExceededError("the agent did not get ready");
    return agent;
  }

  ~Agent() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (pidfd_ >= 0) close(pidfd_);
  }

  // The exit code (128 + signal for a signal), DeadlineExceeded if still running.
  absl::StatusOr<int> Wait(absl::Time deadline) {
    struct pollfd p = {pidfd_, POLLIN, 0};
    const int timeout_ms =
        static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
    if (poll(&p, 1, timeout_ms) != 1) return absl::DeadlineExceededError("the agent still runs");
    int status = 0;
    if (waitpid(pid_, &status, 0) != pid_) return absl::InternalError("waitpid failed");
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  explicit Agent(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  int pidfd_ = -1;
};

class AgentProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<mock::testing::MockHostProcess>> host =
        mock::testing::MockHostProcess::Start(
            g_mock_host, {"--offer=heartbeat,shutdown,timesync,kvp,echo"}, Deadline());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    control_ = v1::HostControl::NewStub(
        grpc::CreateChannel(host_->target(), grpc::InsecureChannelCredentials()));
    const char* dir = std::getenv("TEST_TMPDIR");
    store_ = absl::StrCat(dir != nullptr ? dir : "/tmp", "/agent_kvp_pools");
    std::remove(store_.c_str());
  }
  void TearDown() override {
    if (HasFailure() && host_ != nullptr) std::cerr << "mock_host log:\n" << host_->log();
  }

  std::unique_ptr<Agent> StartAgent() {
    absl::StatusOr<std::unique_ptr<Agent>> agent =
        Agent::Start({absl::StrCat("--host=", host_->target()), "--name=agent-1",
                      absl::StrCat("--kvp-store=", store_)},
                     Deadline());
    EXPECT_TRUE(agent.ok()) << agent.status();
    if (!agent.ok()) return nullptr;
    // Connect returned once every channel was open; the KVP channel's negotiation follows.
    AwaitReady("kvp");
    AwaitReady("shutdown");
    return std::move(*agent);
  }

  void AwaitReady(const std::string& kind) {
    const bool ready = Eventually(
        [&] {
          grpc::ClientContext context;
          v1::IcStatusRequest request;
          request.set_guest("agent-1");
          v1::IcStatusResponse response;
          if (!control_->IcStatus(&context, request, &response).ok()) return false;
          for (const v1::IcChannelStatus& c : response.channels()) {
            if (c.device() == kind && c.state() == "ready") return true;
          }
          return false;
        },
        Deadline() - absl::Now());
    if (!ready) ADD_FAILURE() << kind << " never became ready";
  }

  grpc::Status Kvp(v1::KvpOp op, const std::string& key, const std::string& value,
                   v1::KvpResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::KvpRequest request;
    request.set_guest("agent-1");
    request.set_op(op);
    request.set_pool(0);
    request.mutable_item()->set_key(key);
    request.mutable_item()->set_value(value);
    return control_->KvpExchange(&context, request, response);
  }

  grpc::Status Shutdown(v1::GuestShutdownRequest::Kind kind, v1::GuestShutdownResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::GuestShutdownRequest request;
    request.set_guest("agent-1");
    request.set_kind(kind);
    return control_->RequestShutdown(&context, request, response);
  }

  std::unique_ptr<mock::testing::MockHostProcess> host_;
  std::unique_ptr<v1::HostControl::Stub> control_;
  std::string store_;
};

TEST_F(AgentProcessTest, ShutdownExitCodesAndKvpSurvivingARestart) {
  std::unique_ptr<Agent> agent = StartAgent();
  ASSERT_NE(agent, nullptr);
  v1::KvpResponse kvp;
  grpc::Status s = Kvp(v1::KVP_OP_SET, "persisted", "across restarts", &kvp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(kvp.status_name(), "S_OK");

  // Hibernate is refused and the agent keeps running.
  v1::GuestShutdownResponse answer;
  s = Shutdown(v1::GuestShutdownRequest::KIND_HIBERNATE, &answer);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(answer.accepted());
  EXPECT_EQ(agent->Wait(absl::Now()).status().code(), absl::StatusCode::kDeadlineExceeded);

  // Reboot: accepted, exit code 64.
  s = Shutdown(v1::GuestShutdownRequest::KIND_REBOOT, &answer);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(answer.accepted());
  absl::StatusOr<int> code = agent->Wait(Deadline());
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 64);

  // The restarted agent has the host's pair from its file.
  agent = StartAgent();
  ASSERT_NE(agent, nullptr);
  s = Kvp(v1::KVP_OP_GET, "persisted", "", &kvp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(kvp.status_name(), "S_OK");
  ASSERT_EQ(kvp.items_size(), 1);
  EXPECT_EQ(kvp.items(0).value(), "across restarts");

  // Power off: exit code 0.
  s = Shutdown(v1::GuestShutdownRequest::KIND_POWER_OFF, &answer);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(answer.accepted());
  code = agent->Wait(Deadline());
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace vbus::e2e

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc > 2) {
    vbus::e2e::g_mock_host = argv[1];
    vbus::e2e::g_agent = argv[2];
  }
  return RUN_ALL_TESTS();
}
