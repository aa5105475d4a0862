#include "drivers/shutdown/shutdown.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/host_text.h"

namespace vbus::ic {

absl::string_view ShutdownKindName(ShutdownKind kind) {
  switch (kind) {
    case ShutdownKind::kPowerOff:
      return "power off";
    case ShutdownKind::kReboot:
      return "reboot";
    case ShutdownKind::kHibernate:
      return "hibernate";
  }
  return "unknown";
}

absl::StatusOr<ShutdownRequest> ParseShutdownBody(absl::Span<const uint8_t> body) {
  if (body.size() < kShutdownBodySize) {
    return absl::InvalidArgumentError(absl::StrCat("shutdown body of ", body.size(),
                                                   " bytes is shorter than ", kShutdownBodySize));
  }
  ShutdownRequest r;
  r.reason = Load32(body, kShutdownReasonAt);
  r.timeout_seconds = Load32(body, kShutdownTimeoutAt);
  const uint32_t flags = Load32(body, kShutdownFlagsAt);
  r.force = (flags & kShutdownForce) != 0;
  switch (flags & ~kShutdownForce) {
    case 0:
      r.kind = ShutdownKind::kPowerOff;
      break;
    case kShutdownRestart:
      r.kind = ShutdownKind::kReboot;
      break;
    case kShutdownHibernate:
      r.kind = ShutdownKind::kHibernate;
      break;
    default:
      return absl::UnimplementedError(absl::StrCat("shutdown flags ", flags, " name no request"));
  }
  absl::Span<const uint8_t> text = body.subspan(kShutdownMessageAt, kShutdownMessageBytes);
  const auto nul = std::find(text.begin(), text.end(), uint8_t{0});
  r.message.assign(text.begin(), nul);
  return r;
}

std::vector<uint8_t> EncodeShutdownBody(const ShutdownRequest& request) {
  std::vector<uint8_t> out(kShutdownBodySize, 0);
  absl::Span<uint8_t> b = absl::MakeSpan(out);
  uint32_t flags = request.force ? kShutdownForce : 0;
  if (request.kind == ShutdownKind::kReboot) flags |= kShutdownRestart;
  if (request.kind == ShutdownKind::kHibernate) flags |= kShutdownHibernate;
  Store32(b, kShutdownReasonAt, request.reason);
  Store32(b, kShutdownTimeoutAt, request.timeout_seconds);
  Store32(b, kShutdownFlagsAt, flags);
  const size_t n = std::min(request.message.size(), kShutdownMessageBytes - 1);
  if (n > 0) std::memcpy(out.data() + kShutdownMessageAt, request.message.data(), n);
  return out;
}

ShutdownDriver::ShutdownDriver(ShutdownDriverOptions options)
    : IcDriver("shutdown", options.ic), options_(std::move(options)) {}

absl::StatusOr<IcAnswer> ShutdownDriver::Handle(IcVersion, absl::Span<const uint8_t> body) {
  absl::StatusOr<ShutdownRequest> request = ParseShutdownBody(body);
  IcAnswer answer;
  answer.body.assign(body.begin(), body.end());
  if (!request.ok()) {
    if (request.status().code() == absl::StatusCode::kInvalidArgument) return request.status();
    answer.status = ic_status::kFail;
    answer.note = absl::StrCat("refused: ", request.status().message());
    return answer;
  }
  const bool accept =
      options_.decide ? options_.decide(*request) : request->kind != ShutdownKind::kHibernate;
  const std::string what = absl::StrCat(
      ShutdownKindName(request->kind), request->force ? " (forced)" : "",
      request->message.empty() ? "" : absl::StrCat(", \"", HostText(request->message, 80), "\""));
  if (!accept) {
    answer.status = ic_status::kFail;
    answer.note = absl::StrCat("refused ", what);
    return answer;
  }
  answer.note = absl::StrCat("accepted ", what);
  if (options_.on_accepted) {
    answer.after_send = [on_accepted = options_.on_accepted, r = *request] { on_accepted(r); };
  }
  return answer;
}

}  // namespace vbus::ic
