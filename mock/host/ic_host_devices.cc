#include "mock/host/ic_host_devices.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/data/device_classes.h"
#include "core/data/host_text.h"
#include "drivers/heartbeat/heartbeat.h"
#include "drivers/kvp/kvp.h"
#include "drivers/kvp/kvp_wire.h"
#include "drivers/shutdown/shutdown.h"
#include "drivers/timesync/timesync.h"

namespace vbus::mock {
namespace {

template <typename T>
std::vector<ic::IcVersion> Versions(const T& list) {
  return std::vector<ic::IcVersion>(std::begin(list), std::end(list));
}

// The versions a host offers, oldest first (as hosts list them).
std::vector<ic::IcVersion> HostOffers(std::vector<ic::IcVersion> versions) {
  std::sort(versions.begin(), versions.end());
  return versions;
}

}  // namespace

// --- Heartbeat -------------------------------------------------------------------------------

HeartbeatHost::HeartbeatHost(IcHub* hub)
    : IcHostChannel(hub, kHeartbeatKind, ic::MessageType::kHeartbeat,
                    HostOffers(Versions(ic::kHeartbeatVersions))) {}

void HeartbeatHost::Tick() {
  const v1::IcSettings settings = hub()->settings();
  const absl::Duration interval = absl::Milliseconds(settings.heartbeat_interval_ms());
  const absl::Duration timeout =
      std::min(interval, absl::Milliseconds(settings.answer_timeout_ms()));
  ++sequence_;
  std::vector<uint8_t> body(40, 0);
  ic::Store64(absl::MakeSpan(body), 0, sequence_);
  Publish(v1::EVENT_KIND_IC_REQUEST, absl::StrCat("beat ", sequence_));
  absl::StatusOr<IcExchange> answer = IcHostChannel::Exchange(std::move(body), timeout);
  std::string problem;
  if (!answer.ok()) {
    problem = std::string(answer.status().message());
  } else if (answer->header.status != ic::ic_status::kOk) {
    problem = absl::StrCat("answered ", ic::StatusName(answer->header.status));
  } else if (answer->body.size() < 8) {
    problem = absl::StrCat("answer of ", answer->body.size(), " body bytes");
  } else if (ic::Load64(answer->body, 0) != sequence_ + 1) {
    problem = absl::StrCat("answered sequence ", ic::Load64(answer->body, 0), ", expected ",
                           sequence_ + 1);
  }
  {
    MutexLock lock(&mu_);
    last_sequence_ = sequence_;
    if (problem.empty()) {
      ++beats_;
      last_beat_ = absl::Now();
    } else {
      ++missed_;
    }
  }
  Count(problem.empty(), problem);
  if (problem.empty()) {
    Publish(v1::EVENT_KIND_IC_ANSWER, absl::StrCat("beat ", sequence_ + 1));
  } else {
    Publish(v1::EVENT_KIND_HEARTBEAT_MISSED,
            absl::StrCat("beat ", sequence_, " missed: ", problem));
  }
  // The guest answers the next request with n + 1 of this one's: go on from there.
  next_ = absl::Now() + interval;
}

void HeartbeatHost::FillStatus(v1::IcChannelStatus& status) const {
  MutexLock lock(&mu_);
  status.set_beats(beats_);
  status.set_missed_beats(missed_);
  status.set_last_sequence(last_sequence_);
  status.set_last_beat_unix_nanos(
      last_beat_ == absl::InfinitePast() ? 0 : absl::ToUnixNanos(last_beat_));
}

// --- Shutdown --------------------------------------------------------------------------------

ShutdownHost::ShutdownHost(IcHub* hub)
    : IcHostChannel(hub, kShutdownKind, ic::MessageType::kShutdown,
                    HostOffers(Versions(ic::kShutdownVersions))) {}

absl::StatusOr<v1::GuestShutdownResponse> ShutdownHost::Request(
    const v1::GuestShutdownRequest& request, absl::Time deadline) {
  ic::ShutdownRequest r;
  switch (request.kind()) {
    case v1::GuestShutdownRequest::KIND_POWER_OFF:
      r.kind = ic::ShutdownKind::kPowerOff;
      break;
    case v1::GuestShutdownRequest::KIND_REBOOT:
      r.kind = ic::ShutdownKind::kReboot;
      break;
    case v1::GuestShutdownRequest::KIND_HIBERNATE:
      r.kind = ic::ShutdownKind::kHibernate;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("shutdown kind ", request.kind(), " is not valid"));
  }
  if (request.message().size() >= ic::kShutdownMessageBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("shutdown message of ", request.message().size(), " bytes exceeds 2047"));
  }
  r.force = request.force();
  r.reason = request.reason() != 0 ? request.reason() : ic::kShutdownReasonPlanned;
  r.timeout_seconds = request.timeout_seconds();
  r.message = request.message();
  {
    MutexLock lock(&mu_);
    if (in_flight_) {
      return absl::FailedPreconditionError("a shutdown request is already in flight");
    }
    in_flight_ = true;
  }
  Publish(
      v1::EVENT_KIND_IC_REQUEST,
      absl::StrCat(ic::ShutdownKindName(r.kind), r.force ? " (forced)" : "",
                   r.message.empty() ? "" : absl::StrCat(": \"", HostText(r.message, 60), "\"")));
  absl::StatusOr<IcExchange> answer = Call(ic::EncodeShutdownBody(r), deadline);
  {
    MutexLock lock(&mu_);
    in_flight_ = false;
  }
  if (!answer.ok()) {
    Count(false, std::string(answer.status().message()));
    return answer.status();
  }
  v1::GuestShutdownResponse response;
  response.set_status(answer->header.status);
  response.set_status_name(ic::StatusName(answer->header.status));
  response.set_accepted(answer->header.status == ic::ic_status::kOk);
  Count(true);
  Publish(v1::EVENT_KIND_IC_ANSWER, absl::StrCat(response.accepted() ? "accepted" : "refused", " (",
                                                 response.status_name(), ")"));
  return response;
}

// --- Time sync -------------------------------------------------------------------------------

TimeSyncHost::TimeSyncHost(IcHub* hub)
    : IcHostChannel(hub, kTimeSyncKind, ic::MessageType::kTimeSync,
                    HostOffers(Versions(ic::kTimeSyncVersions))) {}

void TimeSyncHost::OnReady() {
  (void)Send(/*sample=*/false);
  ScheduleSample();
}

void TimeSyncHost::Tick() {
  (void)Send(/*sample=*/true);
  ScheduleSample();
}

void TimeSyncHost::ScheduleSample() {
  const uint32_t ms = hub()->settings().timesync_sample_interval_ms();
  next_sample_ = ms == 0 ? absl::InfiniteFuture() : absl::Now() + absl::Milliseconds(ms);
}

absl::StatusOr<v1::TimeSyncResponse> TimeSyncHost::Send(bool sample) {
  const v1::IcSettings settings = hub()->settings();
  const ic::IcVersion version = message_version().value_or(ic::IcVersion{4, 0});
  const absl::Time host_time = absl::Now() + absl::Milliseconds(settings.timesync_skew_ms());
  ic::TimeSyncMessage m;
  m.parent_time = ic::ToHostTime(host_time);
  m.reference_time = ic::MonotonicReferenceTime();
  m.flags = static_cast<uint8_t>(sample ? ic::TimeSyncFlag::kSample : ic::TimeSyncFlag::kSync);
  Publish(v1::EVENT_KIND_IC_REQUEST,
          absl::StrCat(
              sample ? "sample" : "sync", ": host clock ",
              absl::FormatTime("%H:%M:%E3S UTC", host_time, absl::UTCTimeZone()),
              settings.timesync_skew_ms() != 0
                  ? absl::StrCat(
                        " (skew ",
                        absl::FormatDuration(absl::Milliseconds(settings.timesync_skew_ms())), ")")
                  : ""));
  absl::StatusOr<IcExchange> answer = IcHostChannel::Exchange(
      ic::EncodeTimeSyncBody(version, m), absl::Milliseconds(settings.answer_timeout_ms()));
  if (!answer.ok()) {
    Count(false, std::string(answer.status().message()));
    return answer.status();
  }
  Count(answer->header.status == ic::ic_status::kOk,
        absl::StrCat("answered ", ic::StatusName(answer->header.status)));
  Publish(v1::EVENT_KIND_IC_ANSWER, ic::StatusName(answer->header.status));
  v1::TimeSyncResponse response;
  response.set_status(answer->header.status);
  response.set_status_name(ic::StatusName(answer->header.status));
  response.set_host_unix_nanos(absl::ToUnixNanos(host_time));
  response.set_skew_ms(settings.timesync_skew_ms());
  response.set_message_version(ic::VersionString(version));
  return response;
}

absl::StatusOr<v1::TimeSyncResponse> TimeSyncHost::SyncNow(bool sample, absl::Time deadline) {
  auto result =
      std::make_shared<absl::StatusOr<v1::TimeSyncResponse>>(absl::UnknownError("not run"));
  auto result_mu = std::make_shared<Mutex>();
  absl::Status ran = Run(
      [this, sample, result, result_mu](absl::Status ready) {
        if (!ready.ok()) return ready;
        absl::StatusOr<v1::TimeSyncResponse> r = Send(sample);
        MutexLock lock(result_mu.get());
        *result = r;
        return r.status();
      },
      deadline);
  if (!ran.ok()) return ran;
  MutexLock lock(result_mu.get());
  return *result;
}

// --- KVP -------------------------------------------------------------------------------------

KvpHost::KvpHost(IcHub* hub)
    : IcHostChannel(hub, kKvpKind, ic::MessageType::kKvpExchange,
                    HostOffers(Versions(ic::kKvpVersions))) {}

absl::StatusOr<v1::KvpResponse> KvpHost::Exchange(const v1::KvpRequest& request,
                                                  absl::Time deadline) {
  if (request.pool() >= ic::kKvpPoolAutoInternal) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVP pool ", request.pool(), " cannot be exchanged (0..3)"));
  }
  ic::KvpRequest r;
  r.pool = static_cast<uint8_t>(request.pool());
  r.record.key = request.item().key();
  r.record.value = request.item().value();
  r.record.value_type =
      request.item().value_type() == 0 ? ic::kKvpString : request.item().value_type();
  switch (request.op()) {
    case v1::KVP_OP_GET:
      r.operation = static_cast<uint8_t>(ic::KvpOperation::kGet);
      break;
    case v1::KVP_OP_SET:
      r.operation = static_cast<uint8_t>(ic::KvpOperation::kSet);
      break;
    case v1::KVP_OP_DELETE:
      r.operation = static_cast<uint8_t>(ic::KvpOperation::kDelete);
      break;
    case v1::KVP_OP_ENUMERATE:
      r.operation = static_cast<uint8_t>(ic::KvpOperation::kEnumerate);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("KVP operation ", request.op(), " is not valid"));
  }
  const bool enumerate = request.op() == v1::KVP_OP_ENUMERATE;
  if (!enumerate && r.record.key.empty()) {
    return absl::InvalidArgumentError("the KVP request names no key");
  }
  v1::KvpResponse response;
  // ENUMERATE asks index after index until the guest answers anything but S_OK (S_CONT at the
  // end); a guest that never stops is cut off at the store's limit.
  constexpr uint32_t kMaxItems = 4096;
  for (uint32_t index = 0; index < (enumerate ? kMaxItems : 1); ++index) {
    r.index = index;
    absl::StatusOr<std::vector<uint8_t>> body = ic::EncodeKvpRequest(r);
    if (!body.ok()) return body.status();
    const std::string what = absl::StrCat(
        ic::KvpOperationName(r.operation), " ", ic::KvpPoolName(r.pool),
        enumerate ? absl::StrCat(" #", index)
                  : absl::StrCat(" ", HostText(r.record.key, 60),
                                 request.op() == v1::KVP_OP_SET
                                     ? absl::StrCat(" = ", HostText(r.record.value, 60))
                                     : ""));
    Publish(v1::EVENT_KIND_IC_REQUEST, what);
    absl::StatusOr<IcExchange> answer = Call(std::move(*body), deadline);
    if (!answer.ok()) {
      Count(false, std::string(answer.status().message()));
      return answer.status();
    }
    response.set_status(answer->header.status);
    response.set_status_name(ic::StatusName(answer->header.status));
    if (answer->header.status != ic::ic_status::kOk) {
      Count(enumerate && answer->header.status == ic::ic_status::kNoMoreItems,
            absl::StrCat(what, ": ", response.status_name()));
      Publish(v1::EVENT_KIND_IC_ANSWER, response.status_name());
      break;
    }
    Count(true);
    if (request.op() == v1::KVP_OP_GET || enumerate) {
      absl::StatusOr<ic::KvpRecord> record = ic::ParseKvpAnswer(r.operation, answer->body);
      if (!record.ok()) {
        Count(false, std::string(record.status().message()));
        return absl::DataLossError(
            absl::StrCat("the guest's KVP answer is malformed: ", record.status().message()));
      }
      v1::KvpItem* item = response.add_items();
      item->set_key(record->key);
      item->set_value(record->value);
      item->set_value_type(record->value_type);
      Publish(v1::EVENT_KIND_IC_ANSWER,
              absl::StrCat(HostText(record->key, 60), " = ", HostText(record->value, 60)));
    } else {
      Publish(v1::EVENT_KIND_IC_ANSWER, response.status_name());
    }
  }
  return response;
}

// --- Registration ----------------------------------------------------------------------------

absl::Status RegisterIcDevices(DeviceRegistry* registry, std::shared_ptr<IcHub> hub) {
  struct Kind {
    const char* name;
    Guid class_id;
    const char* description;
    std::function<std::shared_ptr<IcHostChannel>(IcHub*)> make;
  };
  const Kind kinds[] = {
      {kHeartbeatKind, device_class::kHeartbeat, "heartbeat IC: beats and counts missed beats",
       [](IcHub* h) { return std::make_shared<HeartbeatHost>(h); }},
      {kShutdownKind, device_class::kShutdown, "shutdown IC: power off / reboot / hibernate",
       [](IcHub* h) { return std::make_shared<ShutdownHost>(h); }},
      {kTimeSyncKind, device_class::kTimeSync, "time sync IC: the host clock, with a skew",
       [](IcHub* h) { return std::make_shared<TimeSyncHost>(h); }},
      {kKvpKind, device_class::kKvp, "KVP IC: get / set / delete / enumerate pools",
       [](IcHub* h) { return std::make_shared<KvpHost>(h); }},
  };
  for (const Kind& k : kinds) {
    absl::Status s = registry->Register(
        {k.name, k.class_id, k.description, [hub, make = k.make]() -> std::unique_ptr<Device> {
           return std::make_unique<IcDevice>(hub.get(), make(hub.get()));
         }});
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace vbus::mock
