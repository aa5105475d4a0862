#include "examples/trace.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/data/device_classes.h"
#include "core/data/host_text.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"
#include "mock/host/device_kinds.h"

namespace vbus::examples {
namespace {

constexpr char kReset[] = "\033[0m";
constexpr char kBold[] = "\033[1m";
constexpr char kDim[] = "\033[2m";
constexpr char kCyan[] = "\033[36m";
constexpr char kYellow[] = "\033[33m";
constexpr char kRed[] = "\033[31m";
constexpr char kGreen[] = "\033[32m";

// "open_channel" → "OpenChannel".
std::string Camel(absl::string_view snake) {
  std::string out;
  bool upper = true;
  for (char c : snake) {
    if (c == '_') {
      upper = true;
    } else {
      out.push_back(upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c);
      upper = false;
    }
  }
  return out;
}

}  // namespace

std::string DeviceClassName(const std::string& guid_text) {
  static const std::pair<Guid, const char*> kNames[] = {
      {device_class::kHeartbeat, "heartbeat"}, {device_class::kShutdown, "shutdown"},
      {device_class::kTimeSync, "timesync"},   {device_class::kKvp, "kvp"},
      {mock::kEchoDeviceClass, "echo"},        {mock::kSinkDeviceClass, "sink"},
      {mock::kRawDeviceClass, "raw"}};
  for (const auto& [guid, name] : kNames) {
    if (guid.ToString() == guid_text) return name;
  }
  return HostText(guid_text, 36);
}

std::string Trace::Describe(const v1::ControlMessage& message, uint32_t* relid) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* r = message.GetReflection();
  std::vector<const FieldDescriptor*> set;
  r->ListFields(message, &set);
  if (set.empty()) return "(empty message)";
  const FieldDescriptor* which = set[0];
  if (which->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) return which->name();
  const google::protobuf::Message& body = r->GetMessage(message, which);
  const google::protobuf::Reflection* br = body.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  br->ListFields(body, &fields);
  std::string text = Camel(which->name());
  int shown = 0;
  for (const FieldDescriptor* f : fields) {
    if (shown >= 5) break;
    const std::string& name = f->name();
    if (f->is_repeated()) {
      absl::StrAppend(&text, " ", name, "=[", br->FieldSize(body, f), "]");
      ++shown;
      continue;
    }
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_UINT32: {
        const uint32_t v = br->GetUInt32(body, f);
        if (name == "child_relid") {
          *relid = v;
          continue;
        }
        if (absl::StrContains(name, "version")) {
          absl::StrAppend(&text, " ", name, "=", v >> 16, ".", v & 0xFFFF);
        } else if (absl::StrContains(name, "status")) {
          absl::StrAppend(&text, " ", name, absl::StrFormat("=0x%X", v));
        } else {
          absl::StrAppend(&text, " ", name, "=", v);
        }
        ++shown;
        break;
      }
      case FieldDescriptor::CPPTYPE_UINT64:
        absl::StrAppend(&text, " ", name, "=", br->GetUInt64(body, f));
        ++shown;
        break;
      case FieldDescriptor::CPPTYPE_INT32:
        absl::StrAppend(&text, " ", name, "=", br->GetInt32(body, f));
        ++shown;
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        absl::StrAppend(&text, " ", name, "=", br->GetBool(body, f) ? "true" : "false");
        ++shown;
        break;
      case FieldDescriptor::CPPTYPE_MESSAGE:
        if (name == "interface_type") {
          const google::protobuf::Message& guid = br->GetMessage(body, f);
          const FieldDescriptor* t = guid.GetDescriptor()->FindFieldByName("value");
          if (t != nullptr) {
            absl::StrAppend(&text, " ", DeviceClassName(guid.GetReflection()->GetString(guid, t)));
            ++shown;
          }
        }
        break;
      default:
        break;
    }
  }
  return text;
}

std::string Trace::ChannelName(uint32_t relid) {
  if (relid == 0) return "bus";
  std::lock_guard<std::mutex> lock(mu_);
  auto it = kinds_.find(relid);
  return it == kinds_.end() ? absl::StrCat("relid ", relid)
                            : absl::StrCat("relid ", relid, " ", it->second);
}

int Trace::seen(v1::EventKind kind) {
  std::lock_guard<std::mutex> lock(mu_);
  return seen_[kind];
}

void Trace::Add(absl::Time t, TraceDir dir, std::string channel, std::string text) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.push_back({t, dir, std::move(channel), std::move(text)});
}

bool Trace::AddHostEvent(const v1::ProtocolEvent& e) {
  const absl::Time t = absl::FromUnixNanos(e.unix_nanos());
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++seen_[e.kind()];
  }
  switch (e.kind()) {
    case v1::EVENT_KIND_GUEST_MESSAGE:
    case v1::EVENT_KIND_HOST_MESSAGE: {
      uint32_t relid = 0;
      std::string text = Describe(e.message(), &relid);
      if (e.message().has_offer()) {
        std::lock_guard<std::mutex> lock(mu_);
        kinds_[relid] = DeviceClassName(e.message().offer().interface_type().value());
      }
      if (relid == 0) relid = e.child_relid();
      Add(t,
          e.kind() == v1::EVENT_KIND_GUEST_MESSAGE ? TraceDir::kGuestToHost
                                                   : TraceDir::kHostToGuest,
          ChannelName(relid), std::move(text));
      return true;
    }
    case v1::EVENT_KIND_IC_REQUEST:
    case v1::EVENT_KIND_IC_ANSWER: {
      // "heartbeat: beat 3": the channel already names the kind.
      std::vector<std::string> parts = absl::StrSplit(e.detail(), absl::MaxSplits(": ", 1));
      Add(t,
          e.kind() == v1::EVENT_KIND_IC_REQUEST ? TraceDir::kHostToGuest : TraceDir::kGuestToHost,
          ChannelName(e.child_relid()), parts.size() == 2 ? parts[1] : e.detail());
      return true;
    }
    case v1::EVENT_KIND_HEARTBEAT_MISSED:
    case v1::EVENT_KIND_ERROR:
      Add(t, TraceDir::kProblem, ChannelName(e.child_relid()), e.detail());
      return true;
    case v1::EVENT_KIND_GUEST_ATTACHED:
      Add(t, TraceDir::kHost, "bus", absl::StrCat("guest attached: ", e.detail()));
      return true;
    case v1::EVENT_KIND_GUEST_DETACHED:
      Add(t, TraceDir::kHost, "bus", absl::StrCat("guest detached: ", e.detail()));
      return true;
    case v1::EVENT_KIND_CHANNEL_OPENED:
      Add(t, TraceDir::kHost, ChannelName(e.child_relid()), "rings mapped, channel open");
      return true;
    case v1::EVENT_KIND_CHANNEL_CLOSED:
      Add(t, TraceDir::kHost, ChannelName(e.child_relid()), "channel closed");
      return true;
    case v1::EVENT_KIND_FAULT_FIRED:
      Add(t, TraceDir::kProblem, ChannelName(e.child_relid()), e.detail());
      return true;
    default:
      return false;
  }
}

void Trace::Flush() {
  std::vector<Entry> entries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entries.swap(pending_);
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.t < b.t; });
  for (const Entry& e : entries) Print(e);
  std::fflush(out_);
}

void Trace::Print(const Entry& e) {
  const char* arrow = "";
  const char* tint = "";
  switch (e.dir) {
    case TraceDir::kGuestToHost:
      arrow = "guest → host ";
      tint = kCyan;
      break;
    case TraceDir::kHostToGuest:
      arrow = "host  → guest";
      tint = kYellow;
      break;
    case TraceDir::kGuest:
      arrow = "guest        ";
      tint = kDim;
      break;
    case TraceDir::kHost:
      arrow = "host         ";
      tint = kDim;
      break;
    case TraceDir::kProblem:
      arrow = "!            ";
      tint = kRed;
      break;
  }
  const double seconds = std::max(0.0, absl::ToDoubleSeconds(e.t - start_));
  std::string channel = e.channel.substr(0, 20);
  channel.resize(20, ' ');
  if (colour_) {
    absl::FPrintF(out_, "%s%+8.3fs%s  %s%s%s  %s%s%s  %s%s%s\n", kDim, seconds, kReset, tint, arrow,
                  kReset, kBold, channel, kReset, tint, e.text, kReset);
  } else {
    absl::FPrintF(out_, "%+8.3fs  %s  %s  %s\n", seconds, arrow, channel, e.text);
  }
}

void Trace::Section(absl::string_view title) {
  Flush();
  if (colour_) {
    absl::FPrintF(out_, "\n%s%s== %s%s\n", kBold, kGreen, title, kReset);
  } else {
    absl::FPrintF(out_, "\n== %s\n", title);
  }
  std::fflush(out_);
}

void Trace::Note(absl::string_view text) {
  Flush();
  if (colour_) {
    absl::FPrintF(out_, "%s   %s%s\n", kBold, text, kReset);
  } else {
    absl::FPrintF(out_, "   %s\n", text);
  }
  std::fflush(out_);
}

void Trace::Live(absl::string_view text, bool final) {
  if (colour_) {
    absl::FPrintF(out_, "\r\033[K%s   %s%s%s", kBold, text, kReset, final ? "\n" : "");
  } else if (final) {
    absl::FPrintF(out_, "   %s\n", text);
  }
  std::fflush(out_);
}

}  // namespace vbus::examples
