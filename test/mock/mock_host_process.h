// MockHostProcess: runs the //mock:mock_host binary as a child process for integration tests.
//
// Starts it on a free loopback port (--listen=127.0.0.1:0) with --ready_fd pointing at a pipe,
// and waits (poll with a deadline, no sleeping) for the address the server writes there once
// it serves. Stop() sends SIGTERM and waits (again with a deadline) for a clean exit; the
// child's stderr goes to a file whose contents log() returns.
//
//   ASSIGN_OR_RETURN(auto host, MockHostProcess::Start(binary, {"--offer=echo"}, deadline));
//   auto channel = grpc::CreateChannel(host->target(), grpc::InsecureChannelCredentials());
//   ...
//   ASSIGN_OR_RETURN(int exit_code, host->Stop(deadline));
#ifndef VBUS_TEST_MOCK_MOCK_HOST_PROCESS_H_
#define VBUS_TEST_MOCK_MOCK_HOST_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace vbus::mock::testing {

class MockHostProcess {
 public:
  // Start: `binary` is the mock_host path (from $(rootpath //mock:mock_host)); `flags` are
  // added to --ready_fd and, unless they name their own --listen=…, --listen=127.0.0.1:0.
  // Fails if the child cannot start or is not ready by `deadline` (the child is then
  // killed).
  static absl::StatusOr<std::unique_ptr<MockHostProcess>> Start(
      const std::string& binary, const std::vector<std::string>& flags, absl::Time deadline);
  // Kills the child if it still runs.
  ~MockHostProcess();

  const std::string& target() const { return target_; }
  pid_t pid() const { return pid_; }

  // Stop: SIGTERM, then waits for the exit until `deadline`. Returns the exit code (128 + the
  // signal number if it died of a signal). DeadlineExceeded if it has not exited (it is then
  // killed with SIGKILL).
  absl::StatusOr<int> Stop(absl::Time deadline);

  // Kill: SIGKILL now (the host vanishing without a goodbye), then waits for the exit until
  // `deadline`.
  absl::Status Kill(absl::Time deadline);

  // The child's stderr so far.
  std::string log() const;

 private:
  MockHostProcess() = default;
  absl::StatusOr<int> Reap(absl::Time deadline);

  pid_t pid_ = -1;
  std::string target_;
  std::string log_path_;
};

}  // namespace vbus::mock::testing

#endif  // VBUS_TEST_MOCK_MOCK_HOST_PROCESS_H_
