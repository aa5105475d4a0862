#include "test/mock/mock_host_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace vbus::mock::testing {
namespace {

int MillisUntil(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return ms <= 0 ? 0 : static_cast<int>(std::min<int64_t>(ms, 60000));
}

}  // namespace

absl::StatusOr<std::unique_ptr<MockHostProcess>> MockHostProcess::Start(
    const std::string& binary, const std::vector<std::string>& flags, absl::Time deadline) {
  auto process = std::unique_ptr<MockHostProcess>(new MockHostProcess());
  const char* tmp = std::getenv("TEST_TMPDIR");
  static std::atomic<int> started{0};
  process->log_path_ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/mock_host-", getpid(), "-",
                                    started.fetch_add(1, std::memory_order_relaxed), ".log");
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe");
  const int log_fd =
      open(process->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::ErrnoToStatus(errno, "open the mock_host log");

  // Everything the child needs is prepared before fork (no allocation after it).
  constexpr int kReadyFd = 3;
  std::vector<std::string> args = {binary, absl::StrCat("--ready_fd=", kReadyFd)};
  if (std::none_of(flags.begin(), flags.end(),
                   [](const std::string& f) { return absl::StartsWith(f, "--listen="); })) {
    args.push_back("--listen=127.0.0.1:0");
  }
  args.insert(args.end(), flags.begin(), flags.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const pid_t pid = fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    // Child: the pipe's write end becomes fd 3, stderr goes to the log.
    dup2(ready[1], kReadyFd);
    dup2(log_fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  process->pid_ = pid;
  close(ready[1]);
  close(log_fd);

  // Wait for "<target>\n" on the pipe.
  std::string line;
  while (line.find('\n') == std::string::npos) {
    pollfd p{ready[0], POLLIN, 0};
    const int n = poll(&p, 1, MillisUntil(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(ready[0]);
      return absl::DeadlineExceededError(
          absl::StrCat("mock_host did not report ready; its log:\n", process->log()));
    }
    char buf[256];
    const ssize_t got = read(ready[0], buf, sizeof(buf));
    if (got <= 0) {
      close(ready[0]);
      return absl::UnavailableError(
          absl::StrCat("mock_host exited before it was ready; its log:\n", process->log()));
    }
    line.append(buf, static_cast<size_t>(got));
  }
  close(ready[0]);
  process->target_ = std::string(absl::StripSuffix(line.substr(0, line.find('\n')), "\r"));
  return process;
}

MockHostProcess::~MockHostProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
}

absl::StatusOr<int> MockHostProcess::Reap(absl::Time deadline) {
  // pidfd_open (Linux 5.3) lets poll wait for the exit with a deadline.
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    int n;
    do {
      n = poll(&p, 1, MillisUntil(deadline));
    } while (n < 0 && errno == EINTR);
    close(pidfd);
    if (n == 0) return absl::DeadlineExceededError("mock_host has not exited");
  }
  int status = 0;
  // Without pidfd support: a bounded loop of non-blocking checks.
  while (true) {
    const pid_t r = waitpid(pid_, &status, pidfd >= 0 ? 0 : WNOHANG);
    if (r == pid_) break;
    if (r < 0 && errno != EINTR) return absl::ErrnoToStatus(errno, "waitpid");
    if (absl::Now() >= deadline) return absl::DeadlineExceededError("mock_host has not exited");
    if (r == 0) {
      pollfd none{-1, 0, 0};
      poll(&none, 0, 5);  // wait 5 ms between checks (no pidfd: nothing to block on)
    }
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

absl::StatusOr<int> MockHostProcess::Stop(absl::Time deadline) {
  if (pid_ <= 0) return absl::FailedPreconditionError("mock_host is not running");
  kill(pid_, SIGTERM);
  absl::StatusOr<int> code = Reap(deadline);
  if (!code.ok()) {
    kill(pid_, SIGKILL);
    (void)Reap(absl::Now() + absl::Seconds(10));
  }
  return code;
}

absl::Status MockHostProcess::Kill(absl::Time deadline) {
  if (pid_ <= 0) return absl::FailedPreconditionError("mock_host is not running");
  kill(pid_, SIGKILL);
  return Reap(deadline).status();
}

std::string MockHostProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace vbus::mock::testing
