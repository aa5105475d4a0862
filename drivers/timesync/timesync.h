// TimeSyncDriver: the host's clock samples (docs/integration_components.md §5). The host sends a
// SYNC after the negotiation and SAMPLEs periodically; the driver converts the host time (100 ns
// units since 1601-01-01 UTC) to Unix time, works out how far the guest's clock is from it and
// reports that to the agent's handler. The library never sets the clock: the agent decides
// (step on SYNC, slew past a drift threshold on SAMPLE, or just report).
//
// Message versions below 4.0 carry parenttime/childtime/roundtriptime; version 4.0 carries
// parenttime and the partition reference time at which the host read its clock, so the guest
// can add the time the message spent in flight: host_now = parenttime + (ref_now - reftime).
#ifndef VBUS_DRIVERS_TIMESYNC_TIMESYNC_H_
#define VBUS_DRIVERS_TIMESYNC_TIMESYNC_H_

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "drivers/ic/ic_driver.h"

namespace vbus::ic {

// Time sync message versions, in preference order.
inline constexpr IcVersion kTimeSyncVersions[] = {{4, 0}, {3, 0}, {1, 0}};

// 100 ns intervals between 1601-01-01 and 1970-01-01 (UTC).
inline constexpr uint64_t kEpochDelta1601 = 116444736000000000ull;
// Unix time of a Windows (1601 epoch, 100 ns) time; times before 1970 come out negative.
absl::Time FromHostTime(uint64_t time_1601);
// The Windows time of a Unix time (0 for times before 1601).
uint64_t ToHostTime(absl::Time t);

// Flags of a time sync message.
enum class TimeSyncFlag : uint8_t { kProbe = 0, kSync = 1, kSample = 2 };

// Body layouts (offsets from the start of the body).
// Versions < 4: parenttime @0, childtime @8, roundtriptime @16, flags @24.
inline constexpr size_t kTimeSyncV3FlagsAt = 24;
inline constexpr size_t kTimeSyncV3MinBody = 25;
// Version 4: parenttime @0, vmreferencetime @8, flags @16, leapflags @17, stratum @18.
inline constexpr size_t kTimeSyncV4FlagsAt = 16;
inline constexpr size_t kTimeSyncV4MinBody = 22;
// A SYNC whose reference time is older than this is stale (reported, flagged).
inline constexpr absl::Duration kTimeSyncStaleAfter = absl::Seconds(600);

// TimeSyncMessage: a decoded body.
struct TimeSyncMessage {
  uint64_t parent_time = 0;     // host time, 1601 epoch, 100 ns
  uint64_t reference_time = 0;  // version 4: partition reference time of the reading
  uint8_t flags = 0;            // TimeSyncFlag, raw
  uint8_t leap_flags = 0;       // version 4
  uint8_t stratum = 0;          // version 4
};
// ParseTimeSyncBody: InvalidArgument for a body shorter than the version's layout.
absl::StatusOr<TimeSyncMessage> ParseTimeSyncBody(IcVersion version,
                                                  absl::Span<const uint8_t> body);
// EncodeTimeSyncBody: the host's side (the version's minimal layout, reserved bytes zero).
std::vector<uint8_t> EncodeTimeSyncBody(IcVersion version, const TimeSyncMessage& message);

// TimeSample: what the agent's handler gets.
struct TimeSample {
  TimeSyncFlag kind = TimeSyncFlag::kSample;
  absl::Time host_time;   // the host's clock now (reference-time corrected on 4.0)
  absl::Time guest_time;  // the guest's clock when the sample was handled
  absl::Duration offset;  // host_time - guest_time: how far the guest is behind
  bool stale = false;     // a SYNC older than kTimeSyncStaleAfter
  IcVersion version;
};

struct TimeSyncDriverOptions {
  IcDriverOptions ic;
  // Each SYNC and SAMPLE (PROBEs are answered, not reported). Runs on the dispatching thread:
  // must not block. May be empty.
  std::function<void(const TimeSample&)> on_sample;
  // The partition reference counter, 100 ns units (version 4). Empty = CLOCK_MONOTONIC, which
  // is what the mock host reads (both ends on one machine).
  std::function<uint64_t()> reference_now;
  // The guest's clock. Empty = absl::Now.
  std::function<absl::Time()> now;
};

class TimeSyncDriver final : public IcDriver {
 public:
  explicit TimeSyncDriver(TimeSyncDriverOptions options = {});

  // The last SYNC or SAMPLE, if any.
  std::optional<TimeSample> last_sample() const;

  // IcService
  MessageType type() const override { return MessageType::kTimeSync; }
  absl::Span<const IcVersion> message_versions() const override { return kTimeSyncVersions; }
  absl::StatusOr<IcAnswer> Handle(IcVersion version, absl::Span<const uint8_t> body) override;

 private:
  const TimeSyncDriverOptions options_;
  mutable std::mutex mu_;
  std::optional<TimeSample> last_;
};

// The CLOCK_MONOTONIC reference counter in 100 ns units (the default reference_now).
uint64_t MonotonicReferenceTime();

}  // namespace vbus::ic

#endif  // VBUS_DRIVERS_TIMESYNC_TIMESYNC_H_
