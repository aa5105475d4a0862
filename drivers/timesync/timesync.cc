#include "drivers/timesync/timesync.h"

#include <time.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace vbus::ic {

absl::Time FromHostTime(uint64_t time_1601) {
  const int64_t since_1970 = static_cast<int64_t>(time_1601 - kEpochDelta1601);
  if (time_1601 < kEpochDelta1601) {
    return absl::UnixEpoch() -
           absl::Nanoseconds(100) * static_cast<int64_t>(kEpochDelta1601 - time_1601);
  }
  return absl::UnixEpoch() + absl::Nanoseconds(100) * since_1970;
}

uint64_t ToHostTime(absl::Time t) {
  const absl::Duration since = t - FromHostTime(0);
  if (since < absl::ZeroDuration()) return 0;
  // In two parts: the nanoseconds since 1601 overflow an int64.
  const int64_t seconds = absl::ToInt64Seconds(since);
  const int64_t rest = absl::ToInt64Nanoseconds(since - absl::Seconds(seconds));
  return static_cast<uint64_t>(seconds) * 10000000ull + static_cast<uint64_t>(rest / 100);
}

uint64_t MonotonicReferenceTime() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 10000000ull + static_cast<uint64_t>(ts.tv_nsec) / 100;
}

absl::StatusOr<TimeSyncMessage> ParseTimeSyncBody(IcVersion version,
                                                  absl::Span<const uint8_t> body) {
  TimeSyncMessage m;
  if (version.major >= 4) {
    if (body.size() < kTimeSyncV4MinBody) {
      return absl::InvalidArgumentError(absl::StrCat(
          "time sync 4.0 body of ", body.size(), " bytes is shorter than ", kTimeSyncV4MinBody));
    }
    m.parent_time = Load64(body, 0);
    m.reference_time = Load64(body, 8);
    m.flags = body[kTimeSyncV4FlagsAt];
    m.leap_flags = body[17];
    m.stratum = body[18];
    return m;
  }
  if (body.size() < kTimeSyncV3MinBody) {
    return absl::InvalidArgumentError(absl::StrCat("time sync ", VersionString(version),
                                                   " body of ", body.size(),
                                                   " bytes is shorter than ", kTimeSyncV3MinBody));
  }
  m.parent_time = Load64(body, 0);
  m.flags = body[kTimeSyncV3FlagsAt];
  return m;
}

std::vector<uint8_t> EncodeTimeSyncBody(IcVersion version, const TimeSyncMessage& message) {
  std::vector<uint8_t> out(version.major >= 4 ? kTimeSyncV4MinBody : kTimeSyncV3MinBody, 0);
  absl::Span<uint8_t> b = absl::MakeSpan(out);
  Store64(b, 0, message.parent_time);
  if (version.major >= 4) {
    Store64(b, 8, message.reference_time);
    b[kTimeSyncV4FlagsAt] = message.flags;
    b[17] = message.leap_flags;
    b[18] = message.stratum;
  } else {
    b[kTimeSyncV3FlagsAt] = message.flags;
  }
  return out;
}

TimeSyncDriver::TimeSyncDriver(TimeSyncDriverOptions options)
    : IcDriver("timesync", options.ic), options_(std::move(options)) {}

std::optional<TimeSample> TimeSyncDriver::last_sample() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

absl::StatusOr<IcAnswer> TimeSyncDriver::Handle(IcVersion version, absl::Span<const uint8_t> body) {
  absl::StatusOr<TimeSyncMessage> m = ParseTimeSyncBody(version, body);
  if (!m.ok()) return m.status();
  IcAnswer answer;
  answer.body.assign(body.begin(), body.end());
  if (m->flags == static_cast<uint8_t>(TimeSyncFlag::kProbe)) {
    answer.note = "probe";
    return answer;
  }
  if (m->flags != static_cast<uint8_t>(TimeSyncFlag::kSync) &&
      m->flags != static_cast<uint8_t>(TimeSyncFlag::kSample)) {
    answer.status = ic_status::kFail;
    answer.note = absl::StrCat("refused: time sync flags ", m->flags);
    return answer;
  }
  TimeSample sample;
  sample.kind = static_cast<TimeSyncFlag>(m->flags);
  sample.version = version;
  sample.guest_time = options_.now ? options_.now() : absl::Now();
  sample.host_time = FromHostTime(m->parent_time);
  if (version.major >= 4) {
    const uint64_t ref_now =
        options_.reference_now ? options_.reference_now() : MonotonicReferenceTime();
    // In flight since the host read its clock (a reference time from the future counts 0).
    const uint64_t in_flight = ref_now > m->reference_time ? ref_now - m->reference_time : 0;
    sample.host_time += absl::Nanoseconds(100) * static_cast<int64_t>(in_flight);
    sample.stale = sample.kind == TimeSyncFlag::kSync &&
                   absl::Nanoseconds(100) * static_cast<int64_t>(in_flight) > kTimeSyncStaleAfter;
  }
  sample.offset = sample.host_time - sample.guest_time;
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_ = sample;
  }
  answer.note = absl::StrFormat(
      "%s: host clock %s, guest %s by %s%s", sample.kind == TimeSyncFlag::kSync ? "sync" : "sample",
      absl::FormatTime("%Y-%m-%d %H:%M:%E3S UTC", sample.host_time, absl::UTCTimeZone()),
      sample.offset >= absl::ZeroDuration() ? "behind" : "ahead",
      absl::FormatDuration(absl::AbsDuration(sample.offset)), sample.stale ? " (stale)" : "");
  if (options_.on_sample) options_.on_sample(sample);
  return answer;
}

}  // namespace vbus::ic
