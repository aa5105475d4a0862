// ShutdownDriver: the host asks the guest to power off, reboot or hibernate
// (docs/integration_components.md §4). The driver decodes the request and asks the agent's handler,
// which accepts or refuses; the answer (S_OK or E_FAIL) goes to the host first, and only then does
// an accepted request reach the agent's `on_accepted` (the agent acts on it: the library never
// shuts anything down itself).
#ifndef VBUS_DRIVERS_SHUTDOWN_SHUTDOWN_H_
#define VBUS_DRIVERS_SHUTDOWN_SHUTDOWN_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "drivers/ic/ic_driver.h"

namespace vbus::ic {

// Shutdown message versions, in preference order.
inline constexpr IcVersion kShutdownVersions[] = {{3, 2}, {3, 1}, {3, 0}, {1, 0}};

// Body layout (offsets from the start of the body).
inline constexpr size_t kShutdownReasonAt = 0;
inline constexpr size_t kShutdownTimeoutAt = 4;
inline constexpr size_t kShutdownFlagsAt = 8;
inline constexpr size_t kShutdownMessageAt = 12;
inline constexpr size_t kShutdownMessageBytes = 2048;
inline constexpr size_t kShutdownBodySize = kShutdownMessageAt + kShutdownMessageBytes;  // 2060
// Flag bits.
inline constexpr uint32_t kShutdownForce = 1;
inline constexpr uint32_t kShutdownRestart = 2;
inline constexpr uint32_t kShutdownHibernate = 4;
// The reason a host sends for a planned shutdown.
inline constexpr uint32_t kShutdownReasonPlanned = 0x80000000;

enum class ShutdownKind { kPowerOff, kReboot, kHibernate };
absl::string_view ShutdownKindName(ShutdownKind kind);  // "power off", "reboot", "hibernate"

// ShutdownRequest: a decoded request.
struct ShutdownRequest {
  ShutdownKind kind = ShutdownKind::kPowerOff;
  bool force = false;
  uint32_t reason = 0;
  uint32_t timeout_seconds = 0;
  // The display message up to its first NUL, as the host sent it (untrusted bytes: escape it
  // before logging, e.g. with core/data/host_text.h).
  std::string message;
};

// ParseShutdownBody
// InvalidArgument for a body shorter than kShutdownBodySize; Unimplemented for flags that
// name no known request (restart and hibernate together, or unknown bits).
absl::StatusOr<ShutdownRequest> ParseShutdownBody(absl::Span<const uint8_t> body);
// EncodeShutdownBody: the host's side (kShutdownBodySize bytes; the message cut to 2047 bytes).
std::vector<uint8_t> EncodeShutdownBody(const ShutdownRequest& request);

struct ShutdownDriverOptions {
  IcDriverOptions ic;
  // Decides: true accepts (answered S_OK), false refuses (E_FAIL). Runs on the dispatching
  // thread: decide quickly. Empty = accept power off and reboot, refuse hibernate.
  std::function<bool(const ShutdownRequest&)> decide;
  // An accepted request, after the host has been answered. Must not block (hand the work to
  // another thread). May be empty.
  std::function<void(const ShutdownRequest&)> on_accepted;
};

class ShutdownDriver final : public IcDriver {
 public:
  explicit ShutdownDriver(ShutdownDriverOptions options);

  // IcService
  MessageType type() const override { return MessageType::kShutdown; }
  absl::Span<const IcVersion> message_versions() const override { return kShutdownVersions; }
  // S_OK when accepted, E_FAIL when refused or the flags are unknown; the body is echoed.
  absl::StatusOr<IcAnswer> Handle(IcVersion version, absl::Span<const uint8_t> body) override;

 private:
  const ShutdownDriverOptions options_;
};

}  // namespace vbus::ic

#endif  // VBUS_DRIVERS_SHUTDOWN_SHUTDOWN_H_
