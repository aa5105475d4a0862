// vbusctl: a command-line client of the mock host's HostControl service.
//
//   vbusctl [--host=ADDR] [--guest=ID|NAME] COMMAND [ARGS]
//
//   guests                         attached guests and their state
//   channels                       channels (of --guest, or of every guest) with counters
//   offer --kind=echo [--subchannels=N] [--class=GUID] [--instance=GUID] [--monitored]
//                                  offer a device to a guest (hot-add if it has its offers)
//   rescind RELID                  rescind a channel (its sub-channels first)
//   send RELID --hex=HEX | --text=TEXT [--completion] [--txid=N]
//                                  write a packet into the channel's inbound ring
//   watch [--json] [--kinds=GUEST_MESSAGE,HOST_MESSAGE,...] [--relid=N]
//                                  stream protocol events until interrupted
//   packets [--json] [--relid=N]   stream the packets guests write until interrupted
//   shutdown | kvp | time | ic | ic-config
//                                  the integration components (see mock/vbusctl_ic.h)
//
// Errors print the gRPC status code and message and exit 1 (2 for a usage error).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/data/protocol.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "mock/vbusctl_ic.h"
#include "proto/mock_host.grpc.pb.h"

ABSL_FLAG(std::string, host, "127.0.0.1:50051", "The mock host: HOST:PORT or unix:PATH");
ABSL_FLAG(std::string, guest, "",
          "Guest id or name (empty: the only guest; every guest for "
          "channels, watch and packets)");
// Seconds, not absl::Duration: a Duration flag is read through a sequence lock whose fence
// gcc's TSan build rejects.
ABSL_FLAG(double, timeout, 10, "Deadline of each request, in seconds");
ABSL_FLAG(std::string, kind, "echo", "offer: the device kind (echo, sink, raw, ...)");
ABSL_FLAG(uint32_t, subchannels, 0, "offer: sub-channels offered with the primary");
ABSL_FLAG(std::string, class_guid, "", "offer: interface type GUID (default: the kind's)");
ABSL_FLAG(std::string, instance, "", "offer: interface instance GUID (default: generated)");
ABSL_FLAG(bool, monitored, false, "offer: signal through the monitor pages");
ABSL_FLAG(std::string, hex, "", "send: the payload as hex digits");
ABSL_FLAG(std::string, text, "", "send: the payload as text");
ABSL_FLAG(bool, completion, false, "send: send a completion packet (type 11)");
ABSL_FLAG(bool, completion_requested, false, "send: set COMPLETION_REQUESTED");
ABSL_FLAG(uint64_t, txid, 0, "send: the transaction id");
ABSL_FLAG(bool, json, false, "one JSON object (watch, packets: per line)");
ABSL_FLAG(std::vector<std::string>, kinds, {}, "watch: event kinds to stream (default: all)");
ABSL_FLAG(uint32_t, relid, 0, "watch, packets: only this relid");

namespace {

using vbus::v1::HostControl;

const char* CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? kNames[i] : "UNKNOWN";
}

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr, "vbusctl: %s\n%s\n", why.c_str(), absl::ProgramUsageMessage().data());
  std::exit(2);
}

int Check(const std::string& what, const grpc::Status& s) {
  if (s.ok()) return 0;
  std::fprintf(stderr, "vbusctl: %s: %s: %s\n", what.c_str(), CodeName(s.error_code()),
               s.error_message().c_str());
  return 1;
}

std::unique_ptr<grpc::ClientContext> Context(bool streaming = false) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!streaming)
    ctx->set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_timeout))));
  return ctx;
}

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

uint32_t RelidArg(const std::vector<std::string>& args, size_t i) {
  uint32_t relid = 0;
  if (args.size() <= i || !absl::SimpleAtoi(args[i], &relid) || relid == 0) {
    Usage("expected a relid (a positive number)");
  }
  return relid;
}

std::string StateName(vbus::v1::GuestState s) {
  std::string name = vbus::v1::GuestState_Name(s);
  return absl::AsciiStrToLower(name.substr(std::string("GUEST_STATE_").size()));
}

std::string StateName(vbus::v1::ChannelState s) {
  std::string name = vbus::v1::ChannelState_Name(s);
  return absl::AsciiStrToLower(name.substr(std::string("CHANNEL_STATE_").size()));
}

// The negotiated version, "-" before negotiation.
std::string VersionName(uint32_t v) { return v == 0 ? "-" : vbus::protocol::VersionName(v); }

int Guests(HostControl::Stub& stub) {
  vbus::v1::ListGuestsResponse r;
  auto ctx = Context();
  if (int rc = Check("guests", stub.ListGuests(ctx.get(), {}, &r)); rc != 0) return rc;
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", Json(r).c_str());
    return 0;
  }
  std::printf("%-10s %-16s %-16s %-7s %-8s %s\n", "ID", "NAME", "STATE", "VERSION", "CHANNELS",
              "MEMORY");
  for (const auto& g : r.guests()) {
    std::printf("%-10s %-16s %-16s %-7s %-8u %s (%llu MiB)\n", g.guest_id().c_str(),
                g.guest_name().c_str(), StateName(g.state()).c_str(),
                VersionName(g.version()).c_str(), g.channel_count(), g.memory_path().c_str(),
                static_cast<unsigned long long>(g.memory_size_bytes() >> 20));
  }
  if (r.guests().empty()) std::printf("(no guests attached)\n");
  return 0;
}

int Channels(HostControl::Stub& stub) {
  vbus::v1::ListChannelsRequest req;
  req.set_guest(absl::GetFlag(FLAGS_guest));
  vbus::v1::ListChannelsResponse r;
  auto ctx = Context();
  if (int rc = Check("channels", stub.ListChannels(ctx.get(), req, &r)); rc != 0) return rc;
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", Json(r).c_str());
    return 0;
  }
  std::printf("%-10s %-5s %-6s %-9s %-3s %-36s %-10s %-10s %-10s\n", "GUEST", "RELID", "DEVICE",
              "STATE", "SUB", "INSTANCE", "PKTS_IN", "PKTS_OUT", "GPADL");
  for (const auto& c : r.channels()) {
    std::printf("%-10s %-5u %-6s %-9s %-3u %-36s %-10llu %-10llu %s\n", c.guest_id().c_str(),
                c.child_relid(), c.device().c_str(), StateName(c.state()).c_str(),
                c.sub_channel_index(), c.interface_instance().value().c_str(),
                static_cast<unsigned long long>(c.packets_from_guest()),
                static_cast<unsigned long long>(c.packets_to_guest()),
                c.ring_gpadl() == 0 ? "-" : absl::StrFormat("0x%x", c.ring_gpadl()).c_str());
  }
  if (r.channels().empty()) std::printf("(no channels)\n");
  return 0;
}

int Offer(HostControl::Stub& stub) {
  vbus::v1::OfferRequest req;
  req.set_guest(absl::GetFlag(FLAGS_guest));
  vbus::v1::OfferSpec* spec = req.mutable_spec();
  spec->set_device(absl::GetFlag(FLAGS_kind));
  spec->set_sub_channel_count(absl::GetFlag(FLAGS_subchannels));
  if (!absl::GetFlag(FLAGS_class_guid).empty()) {
    spec->mutable_interface_type()->set_value(absl::GetFlag(FLAGS_class_guid));
  }
  if (!absl::GetFlag(FLAGS_instance).empty()) {
    spec->mutable_interface_instance()->set_value(absl::GetFlag(FLAGS_instance));
  }
  spec->set_monitored(absl::GetFlag(FLAGS_monitored));
  vbus::v1::OfferResponse r;
  auto ctx = Context();
  if (int rc = Check("offer", stub.Offer(ctx.get(), req, &r)); rc != 0) return rc;
  std::printf("offered %s as relid %u (instance %s)", spec->device().c_str(), r.child_relid(),
              r.interface_instance().value().c_str());
  if (!r.sub_channel_relids().empty()) {
    std::printf(", sub-channels %s", absl::StrJoin(r.sub_channel_relids(), ",").c_str());
  }
  std::printf("\n");
  return 0;
}

int Rescind(HostControl::Stub& stub, const std::vector<std::string>& args) {
  vbus::v1::RescindRequest req;
  req.set_guest(absl::GetFlag(FLAGS_guest));
  req.set_child_relid(RelidArg(args, 1));
  vbus::v1::RescindResponse r;
  auto ctx = Context();
  if (int rc = Check("rescind", stub.Rescind(ctx.get(), req, &r)); rc != 0) return rc;
  std::printf("rescinded relids %s\n", absl::StrJoin(r.rescinded_relids(), ",").c_str());
  return 0;
}

int Send(HostControl::Stub& stub, const std::vector<std::string>& args) {
  vbus::v1::SendPacketRequest req;
  req.set_guest(absl::GetFlag(FLAGS_guest));
  req.set_child_relid(RelidArg(args, 1));
  const std::string hex = absl::GetFlag(FLAGS_hex);
  const std::string text = absl::GetFlag(FLAGS_text);
  if (hex.empty() == text.empty()) Usage("send needs exactly one of --hex and --text");
  if (!hex.empty()) {
    if (hex.size() % 2 != 0 || hex.find_first_not_of("0123456789abcdefABCDEF") != hex.npos) {
      Usage("--hex needs an even number of hex digits");
    }
    req.set_payload(absl::HexStringToBytes(hex));
  } else {
    req.set_payload(text);
  }
  req.set_type(absl::GetFlag(FLAGS_completion) ? vbus::v1::PACKET_TYPE_COMPLETION
                                               : vbus::v1::PACKET_TYPE_DATA_INBAND);
  req.set_completion_requested(absl::GetFlag(FLAGS_completion_requested));
  req.set_transaction_id(absl::GetFlag(FLAGS_txid));
  vbus::v1::SendPacketResponse r;
  auto ctx = Context();
  if (int rc = Check("send", stub.SendPacket(ctx.get(), req, &r)); rc != 0) return rc;
  std::printf("sent %zu bytes to relid %u%s\n", req.payload().size(), req.child_relid(),
              r.signalled() ? " (guest signalled)" : "");
  return 0;
}

std::string Describe(const vbus::v1::ProtocolEvent& e) {
  std::string kind = vbus::v1::EventKind_Name(e.kind()).substr(std::string("EVENT_KIND_").size());
  std::string line = absl::StrFormat(
      "#%d %s %s %s", e.sequence(),
      absl::FormatTime("%H:%M:%E6S", absl::FromUnixNanos(e.unix_nanos()), absl::LocalTimeZone()),
      e.guest_id(), kind);
  if (e.child_relid() != 0) absl::StrAppend(&line, " relid=", e.child_relid());
  if (e.has_message()) absl::StrAppend(&line, " ", e.message().ShortDebugString());
  if (e.count() != 0) absl::StrAppend(&line, " count=", e.count());
  if (!e.detail().empty()) absl::StrAppend(&line, " ", e.detail());
  return line;
}

int Watch(HostControl::Stub& stub) {
  vbus::v1::WatchEventsRequest req;
  req.set_guest(absl::GetFlag(FLAGS_guest));
  req.set_child_relid(absl::GetFlag(FLAGS_relid));
  for (const std::string& k : absl::GetFlag(FLAGS_kinds)) {
    vbus::v1::EventKind kind;
    std::string name = absl::AsciiStrToUpper(k);
    if (name.rfind("EVENT_KIND_", 0) != 0) name = "EVENT_KIND_" + name;
    if (!vbus::v1::EventKind_Parse(name, &kind)) Usage("unknown event kind \"" + k + "\"");
    req.add_kinds(kind);
  }
  auto ctx = Context(/*streaming=*/true);
  auto reader = stub.WatchEvents(ctx.get(), req);
  vbus::v1::ProtocolEvent e;
  const bool json = absl::GetFlag(FLAGS_json);
  while (reader->Read(&e)) {
    std::printf("%s\n", json ? Json(e).c_str() : Describe(e).c_str());
    std::fflush(stdout);
  }
  return Check("watch", reader->Finish());
}

int Packets(HostControl::Stub& stub) {
  vbus::v1::WatchPacketsRequest req;
  req.set_guest(absl::GetFlag(FLAGS_guest));
  req.set_child_relid(absl::GetFlag(FLAGS_relid));
  auto ctx = Context(/*streaming=*/true);
  auto reader = stub.WatchPackets(ctx.get(), req);
  vbus::v1::GuestPacket p;
  const bool json = absl::GetFlag(FLAGS_json);
  while (reader->Read(&p)) {
    if (json) {
      std::printf("%s\n", Json(p).c_str());
    } else {
      std::printf("%s relid=%u type=%u flags=%u txid=%llu %zu bytes: %s\n", p.guest_id().c_str(),
                  p.child_relid(), p.type(), p.flags(),
                  static_cast<unsigned long long>(p.transaction_id()), p.payload().size(),
                  absl::BytesToHexString(p.payload().substr(0, 64)).c_str());
    }
    std::fflush(stdout);
  }
  return Check("packets", reader->Finish());
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "usage: vbusctl [--host=ADDR] [--guest=ID|NAME] COMMAND [ARGS]\n"
      "  guests | channels | offer --kind=K | rescind RELID |\n"
      "  send RELID --hex=HEX|--text=TEXT | watch [--json] | packets [--json] |\n"
      "  shutdown [--reboot|--hibernate] [--force] [--message=M] |\n"
      "  kvp get|set|delete|enum [--key=K] [--value=V] [--pool=P] | time [--skew=5s] |\n"
      "  ic | ic-config [--heartbeat_ms=N]");
  std::vector<char*> raw = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(raw.begin() + 1, raw.end());
  if (args.empty()) Usage("no command");
  auto channel = grpc::CreateChannel(absl::GetFlag(FLAGS_host), grpc::InsecureChannelCredentials());
  std::unique_ptr<HostControl::Stub> stub = HostControl::NewStub(channel);
  const std::string& command = args[0];
  if (command == "guests") return Guests(*stub);
  if (command == "channels") return Channels(*stub);
  if (command == "offer") return Offer(*stub);
  if (command == "rescind") return Rescind(*stub, args);
  if (command == "send") return Send(*stub, args);
  if (command == "watch") return Watch(*stub);
  if (command == "packets") return Packets(*stub);
  vbus::vbusctl::IcContext ic;
  ic.guest = absl::GetFlag(FLAGS_guest);
  ic.json = absl::GetFlag(FLAGS_json);
  ic.context = [] { return Context(); };
  ic.check = Check;
  ic.usage = [](const std::string& why) { Usage(why); };
  if (std::optional<int> rc = vbus::vbusctl::RunIcCommand(*stub, args, ic)) return *rc;
  Usage("unknown command \"" + command + "\"");
}
