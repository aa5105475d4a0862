#include "mock/vbusctl_ic.h"

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"

ABSL_FLAG(bool, reboot, false, "shutdown: reboot instead of powering off");
ABSL_FLAG(bool, hibernate, false, "shutdown: hibernate instead of powering off");
ABSL_FLAG(bool, force, false, "shutdown: forced (applications may not object)");
ABSL_FLAG(std::string, message, "", "shutdown: the message shown to the guest's users");
ABSL_FLAG(std::string, key, "", "kvp: the key");
ABSL_FLAG(std::string, value, "", "kvp set: the value");
ABSL_FLAG(std::string, type, "string", "kvp set: string, u32 or u64");
ABSL_FLAG(std::string, pool, "external", "kvp: external, guest, auto, auto-external or 0..3");
ABSL_FLAG(std::string, skew, "", "time: the host clock's new skew (e.g. 5s, -250ms)");
ABSL_FLAG(bool, sample, false, "time: send a SAMPLE instead of a SYNC");
ABSL_FLAG(int64_t, heartbeat_ms, 0, "ic-config: the heartbeat interval (0 = keep)");
ABSL_FLAG(int64_t, answer_timeout_ms, 0, "ic-config: how long to wait for each answer (0 = keep)");
ABSL_FLAG(int64_t, sample_ms, -1, "ic-config: the time sample interval (0 = none, -1 = keep)");

namespace vbus::vbusctl {
namespace {

// Exit code when the guest answered with a failure status.
constexpr int kRefused = 3;

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

int Shutdown(v1::HostControl::Stub& stub, const IcContext& c) {
  v1::GuestShutdownRequest req;
  req.set_guest(c.guest);
  if (absl::GetFlag(FLAGS_reboot) && absl::GetFlag(FLAGS_hibernate)) {
    c.usage("--reboot and --hibernate exclude each other");
  }
  req.set_kind(absl::GetFlag(FLAGS_reboot)      ? v1::GuestShutdownRequest::KIND_REBOOT
               : absl::GetFlag(FLAGS_hibernate) ? v1::GuestShutdownRequest::KIND_HIBERNATE
                                                : v1::GuestShutdownRequest::KIND_POWER_OFF);
  req.set_force(absl::GetFlag(FLAGS_force));
  req.set_message(absl::GetFlag(FLAGS_message));
  v1::GuestShutdownResponse r;
  auto ctx = c.context();
  if (int rc = c.check("shutdown", stub.RequestShutdown(ctx.get(), req, &r)); rc != 0) return rc;
  if (c.json) {
    std::printf("%s\n", Json(r).c_str());
  } else {
    std::printf("%s %s (%s)\n", r.accepted() ? "accepted:" : "refused:",
                absl::GetFlag(FLAGS_reboot)      ? "reboot"
                : absl::GetFlag(FLAGS_hibernate) ? "hibernate"
                                                 : "power off",
                r.status_name().c_str());
  }
  return r.accepted() ? 0 : kRefused;
}

uint32_t PoolArg(const IcContext& c) {
  const std::string p = absl::AsciiStrToLower(absl::GetFlag(FLAGS_pool));
  static const char* const kNames[] = {"external", "guest", "auto", "auto-external"};
  for (uint32_t i = 0; i < 4; ++i) {
    if (p == kNames[i]) return i;
  }
  uint32_t n = 0;
  if (!absl::SimpleAtoi(p, &n) || n > 3) c.usage("unknown --pool \"" + p + "\"");
  return n;
}

int Kvp(v1::HostControl::Stub& stub, const std::vector<std::string>& args, const IcContext& c) {
  if (args.size() < 2) c.usage("kvp needs get, set, delete or enum");
  v1::KvpRequest req;
  req.set_guest(c.guest);
  req.set_pool(PoolArg(c));
  const std::string& op = args[1];
  if (op == "get") {
    req.set_op(v1::KVP_OP_GET);
  } else if (op == "set") {
    req.set_op(v1::KVP_OP_SET);
  } else if (op == "delete") {
    req.set_op(v1::KVP_OP_DELETE);
  } else if (op == "enum" || op == "enumerate") {
    req.set_op(v1::KVP_OP_ENUMERATE);
  } else {
    c.usage("unknown kvp operation \"" + op + "\"");
  }
  if (req.op() != v1::KVP_OP_ENUMERATE && absl::GetFlag(FLAGS_key).empty()) {
    c.usage("kvp " + op + " needs --key");
  }
  req.mutable_item()->set_key(absl::GetFlag(FLAGS_key));
  req.mutable_item()->set_value(absl::GetFlag(FLAGS_value));
  const std::string type = absl::GetFlag(FLAGS_type);
  req.mutable_item()->set_value_type(type == "u32" ? 4 : type == "u64" ? 8 : 1);
  if (type != "string" && type != "u32" && type != "u64")
    c.usage("unknown --type \"" + type + "\"");
  v1::KvpResponse r;
  auto ctx = c.context();
  if (int rc = c.check("kvp " + op, stub.KvpExchange(ctx.get(), req, &r)); rc != 0) return rc;
  const bool ok = r.status_name() == "S_OK" ||
                  (req.op() == v1::KVP_OP_ENUMERATE && r.status_name() == "S_CONT");
  if (c.json) {
    std::printf("%s\n", Json(r).c_str());
  } else if (!ok) {
    std::printf("the guest answered %s\n", r.status_name().c_str());
  } else if (req.op() == v1::KVP_OP_ENUMERATE) {
    size_t width = 3;
    for (const v1::KvpItem& i : r.items()) width = std::max(width, i.key().size());
    std::printf("%-*s  %s\n", static_cast<int>(width), "KEY", "VALUE");
    for (const v1::KvpItem& i : r.items()) {
      std::printf("%-*s  %s\n", static_cast<int>(width), i.key().c_str(), i.value().c_str());
    }
    if (r.items().empty()) std::printf("(pool is empty)\n");
  } else if (req.op() == v1::KVP_OP_GET && r.items_size() == 1) {
    std::printf("%s = %s\n", r.items(0).key().c_str(), r.items(0).value().c_str());
  } else {
    std::printf("%s\n", r.status_name().c_str());
  }
  return ok ? 0 : kRefused;
}

int Time(v1::HostControl::Stub& stub, const IcContext& c) {
  v1::TimeSyncRequest req;
  req.set_guest(c.guest);
  req.set_sample(absl::GetFlag(FLAGS_sample));
  if (const std::string skew = absl::GetFlag(FLAGS_skew); !skew.empty()) {
    absl::Duration d;
    if (!absl::ParseDuration(skew, &d))
      c.usage("--skew \"" + skew + "\" is no duration (5s, -250ms)");
    req.set_skew_ms(absl::ToInt64Milliseconds(d));
  }
  v1::TimeSyncResponse r;
  auto ctx = c.context();
  if (int rc = c.check("time", stub.TimeSync(ctx.get(), req, &r)); rc != 0) return rc;
  if (c.json) {
    std::printf("%s\n", Json(r).c_str());
  } else {
    std::printf("sent %s (time sync %s): host clock %s, skew %s; the guest answered %s\n",
                req.sample() ? "a sample" : "a sync", r.message_version().c_str(),
                absl::FormatTime("%Y-%m-%d %H:%M:%E3S UTC",
                                 absl::FromUnixNanos(r.host_unix_nanos()), absl::UTCTimeZone())
                    .c_str(),
                absl::FormatDuration(absl::Milliseconds(r.skew_ms())).c_str(),
                r.status_name().c_str());
  }
  return r.status_name() == "S_OK" ? 0 : kRefused;
}

int Status(v1::HostControl::Stub& stub, const IcContext& c) {
  v1::IcStatusRequest req;
  req.set_guest(c.guest);
  v1::IcStatusResponse r;
  auto ctx = c.context();
  if (int rc = c.check("ic", stub.IcStatus(ctx.get(), req, &r)); rc != 0) return rc;
  if (c.json) {
    std::printf("%s\n", Json(r).c_str());
    return 0;
  }
  std::printf("%-10s %-5s %-9s %-11s %-9s %-8s %-8s %-17s %s\n", "GUEST", "RELID", "DEVICE",
              "STATE", "VERSIONS", "REQUESTS", "FAILURES", "HEARTBEAT", "DETAIL");
  for (const v1::IcChannelStatus& s : r.channels()) {
    const std::string versions =
        s.framework_version().empty()
            ? "-"
            : absl::StrCat(s.framework_version(), "/", s.message_version());
    std::string beat = "-";
    if (s.device() == "heartbeat") {
      beat = absl::StrCat(s.beats(), " ok ", s.missed_beats(), " missed");
    }
    std::printf("%-10s %-5u %-9s %-11s %-9s %-8llu %-8llu %-17s %s\n", s.guest_id().c_str(),
                s.child_relid(), s.device().c_str(), s.state().c_str(), versions.c_str(),
                static_cast<unsigned long long>(s.requests()),
                static_cast<unsigned long long>(s.failures()), beat.c_str(), s.detail().c_str());
  }
  if (r.channels().empty()) std::printf("(no open IC channels)\n");
  return 0;
}

int Config(v1::HostControl::Stub& stub, const IcContext& c) {
  v1::ConfigureIcRequest req;
  if (int64_t v = absl::GetFlag(FLAGS_heartbeat_ms); v > 0) {
    req.mutable_settings()->set_heartbeat_interval_ms(static_cast<uint32_t>(v));
  }
  if (int64_t v = absl::GetFlag(FLAGS_answer_timeout_ms); v > 0) {
    req.mutable_settings()->set_answer_timeout_ms(static_cast<uint32_t>(v));
  }
  if (int64_t v = absl::GetFlag(FLAGS_sample_ms); v >= 0) {
    req.mutable_settings()->set_timesync_sample_interval_ms(static_cast<uint32_t>(v));
  }
  v1::IcSettings r;
  auto ctx = c.context();
  if (int rc = c.check("ic-config", stub.ConfigureIc(ctx.get(), req, &r)); rc != 0) return rc;
  if (c.json) {
    std::printf("%s\n", Json(r).c_str());
  } else {
    std::printf(
        "heartbeat every %u ms, answers awaited %u ms, time samples every %u ms, skew %lld ms\n",
        r.heartbeat_interval_ms(), r.answer_timeout_ms(), r.timesync_sample_interval_ms(),
        static_cast<long long>(r.timesync_skew_ms()));
  }
  return 0;
}

}  // namespace

std::optional<int> RunIcCommand(v1::HostControl::Stub& stub, const std::vector<std::string>& args,
                                const IcContext& ctx) {
  const std::string& command = args[0];
  if (command == "shutdown") return Shutdown(stub, ctx);
  if (command == "kvp") return Kvp(stub, args, ctx);
  if (command == "time") return Time(stub, ctx);
  if (command == "ic" || command == "heartbeat") return Status(stub, ctx);
  if (command == "ic-config") return Config(stub, ctx);
  return std::nullopt;
}

}  // namespace vbus::vbusctl
