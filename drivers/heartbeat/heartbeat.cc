#include "drivers/heartbeat/heartbeat.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace vbus::ic {

HeartbeatDriver::HeartbeatDriver(IcDriverOptions options)
    : IcDriver("heartbeat", std::move(options)) {}

HeartbeatStatus HeartbeatDriver::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

absl::StatusOr<IcAnswer> HeartbeatDriver::Handle(IcVersion, absl::Span<const uint8_t> body) {
  if (body.size() < kHeartbeatMinBody) {
    return absl::InvalidArgumentError(
        absl::StrCat("heartbeat body of ", body.size(), " bytes lacks the 8-byte sequence number"));
  }
  const uint64_t seq = Load64(body, 0);
  IcAnswer answer;
  answer.body.assign(body.begin(), body.end());
  Store64(absl::MakeSpan(answer.body), 0, seq + 1);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++status_.beats;
    status_.last_sequence = seq;
    status_.last_time = absl::Now();
  }
  answer.note = absl::StrCat("beat ", seq, " -> ", seq + 1);
  return answer;
}

}  // namespace vbus::ic
