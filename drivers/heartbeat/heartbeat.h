// HeartbeatDriver: answers the host's heartbeats (docs/integration_components.md §3). Each request
// carries a sequence number; the answer carries it plus one, and the host counts a beat as missed
// when no such answer comes. The driver keeps the last sequence and when it came.
#ifndef VBUS_DRIVERS_HEARTBEAT_HEARTBEAT_H_
#define VBUS_DRIVERS_HEARTBEAT_HEARTBEAT_H_

#include <cstdint>
#include <mutex>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "drivers/ic/ic_driver.h"

namespace vbus::ic {

// Heartbeat message versions, in preference order.
inline constexpr IcVersion kHeartbeatVersions[] = {{3, 0}, {1, 0}};
// Bytes of a heartbeat body the driver needs: the sequence number.
inline constexpr size_t kHeartbeatMinBody = 8;

// HeartbeatStatus: a snapshot.
struct HeartbeatStatus {
  uint64_t beats = 0;          // heartbeats answered
  uint64_t last_sequence = 0;  // the host's sequence number in the last one
  absl::Time last_time = absl::InfinitePast();
};

class HeartbeatDriver final : public IcDriver {
 public:
  explicit HeartbeatDriver(IcDriverOptions options = {});

  HeartbeatStatus status() const;

  // IcService
  MessageType type() const override { return MessageType::kHeartbeat; }
  absl::Span<const IcVersion> message_versions() const override { return kHeartbeatVersions; }
  // The answer is the body as received with seq_num + 1 (wrapping). InvalidArgument for a body
  // shorter than the sequence number.
  absl::StatusOr<IcAnswer> Handle(IcVersion version, absl::Span<const uint8_t> body) override;

 private:
  mutable std::mutex mu_;
  HeartbeatStatus status_;
};

}  // namespace vbus::ic

#endif  // VBUS_DRIVERS_HEARTBEAT_HEARTBEAT_H_
