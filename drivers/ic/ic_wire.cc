#include "drivers/ic/ic_wire.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vbus::ic {

std::string MessageTypeName(uint16_t type) {
  switch (static_cast<MessageType>(type)) {
    case MessageType::kNegotiate:
      return "negotiate";
    case MessageType::kHeartbeat:
      return "heartbeat";
    case MessageType::kKvpExchange:
      return "kvp";
    case MessageType::kShutdown:
      return "shutdown";
    case MessageType::kTimeSync:
      return "timesync";
    case MessageType::kVss:
      return "vss";
    case MessageType::kFileCopy:
      return "fcopy";
  }
  return absl::StrCat("type ", type);
}

std::string StatusName(uint32_t status) {
  switch (status) {
    case ic_status::kOk:
      return "S_OK";
    case ic_status::kFail:
      return "E_FAIL";
    case ic_status::kNoMoreItems:
      return "S_CONT";
    case ic_status::kNotSupported:
      return "NOT_SUPPORTED";
    case ic_status::kMachineLocked:
      return "MACHINE_LOCKED";
    case ic_status::kDeviceNotConnected:
      return "DEVICE_NOT_CONNECTED";
    case ic_status::kInvalidArgument:
      return "INVALIDARG";
    case ic_status::kGuidNotFound:
      return "GUID_NOTFOUND";
    case ic_status::kAlreadyExists:
      return "ALREADY_EXISTS";
    case ic_status::kDiskFull:
      return "DISK_FULL";
  }
  return absl::StrFormat("0x%08X", status);
}

std::string VersionString(IcVersion v) { return absl::StrCat(v.major, ".", v.minor); }

absl::StatusOr<IcMessage> ParseIcMessage(absl::Span<const uint8_t> payload) {
  if (payload.size() < kBodyOffset) {
    return absl::InvalidArgumentError(absl::StrCat("IC message of ", payload.size(),
                                                   " bytes is shorter than its headers (",
                                                   kBodyOffset, ")"));
  }
  IcMessage m;
  IcHeader& h = m.header;
  h.pipe_flags = Load32(payload, 0);
  h.pipe_size = Load32(payload, 4);
  h.framework = {Load16(payload, 8), Load16(payload, 10)};
  h.type = Load16(payload, 12);
  h.version = {Load16(payload, 14), Load16(payload, 16)};
  h.body_size = Load16(payload, 18);
  h.status = Load32(payload, 20);
  h.transaction_id = payload[24];
  h.flags = payload[25];
  h.reserved[0] = payload[26];
  h.reserved[1] = payload[27];
  if (payload.size() - kBodyOffset < h.body_size) {
    return absl::InvalidArgumentError(absl::StrCat("IC message icmsgsize ", h.body_size,
                                                   " runs past the payload (",
                                                   payload.size() - kBodyOffset, " body bytes)"));
  }
  m.body = payload.subspan(kBodyOffset, h.body_size);
  return m;
}

namespace {

std::vector<uint8_t> Encode(IcHeader h, absl::Span<const uint8_t> body) {
  std::vector<uint8_t> out(kBodyOffset + body.size());
  absl::Span<uint8_t> b = absl::MakeSpan(out);
  h.pipe_flags = kPipeData;
  h.body_size = static_cast<uint16_t>(body.size());
  h.pipe_size = static_cast<uint32_t>(kIcHeaderSize + body.size());
  Store32(b, 0, h.pipe_flags);
  Store32(b, 4, h.pipe_size);
  Store16(b, 8, h.framework.major);
  Store16(b, 10, h.framework.minor);
  Store16(b, 12, h.type);
  Store16(b, 14, h.version.major);
  Store16(b, 16, h.version.minor);
  Store16(b, 18, h.body_size);
  Store32(b, 20, h.status);
  b[24] = h.transaction_id;
  b[25] = h.flags;
  b[26] = h.reserved[0];
  b[27] = h.reserved[1];
  if (!body.empty()) std::memcpy(out.data() + kBodyOffset, body.data(), body.size());
  return out;
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> EncodeIcMessage(IcHeader header,
                                                     absl::Span<const uint8_t> body) {
  if (body.size() > UINT16_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("IC body of ", body.size(), " bytes exceeds icmsgsize's 65535"));
  }
  return Encode(header, body);
}

std::vector<uint8_t> BuildResponse(const IcHeader& request, uint32_t status,
                                   absl::Span<const uint8_t> body) {
  IcHeader h = request;
  h.flags = kResponseFlags;
  h.status = status;
  return Encode(h, body.first(std::min<size_t>(body.size(), UINT16_MAX)));
}

std::vector<uint8_t> BuildRequest(MessageType type, IcVersion framework, IcVersion version,
                                  absl::Span<const uint8_t> body) {
  IcHeader h;
  h.framework = framework;
  h.type = static_cast<uint16_t>(type);
  h.version = version;
  h.flags = kRequestFlags;
  return Encode(h, body.first(std::min<size_t>(body.size(), UINT16_MAX)));
}

absl::StatusOr<NegotiateBody> ParseNegotiateBody(absl::Span<const uint8_t> body) {
  if (body.size() < 8) {
    return absl::InvalidArgumentError(absl::StrCat("negotiate body of ", body.size(),
                                                   " bytes is shorter than its 8-byte counts"));
  }
  const size_t framework_count = Load16(body, 0);
  const size_t message_count = Load16(body, 2);
  if (framework_count > kMaxNegotiateVersions || message_count > kMaxNegotiateVersions) {
    return absl::InvalidArgumentError(
        absl::StrCat("negotiate lists ", framework_count, " framework and ", message_count,
                     " message versions (at most ", kMaxNegotiateVersions, " each)"));
  }
  const size_t needed = 8 + 4 * (framework_count + message_count);
  if (body.size() < needed) {
    return absl::InvalidArgumentError(absl::StrCat("negotiate body of ", body.size(),
                                                   " bytes is shorter than its version lists (",
                                                   needed, ")"));
  }
  NegotiateBody n;
  size_t at = 8;
  for (size_t i = 0; i < framework_count; ++i, at += 4) {
    n.framework.push_back({Load16(body, at), Load16(body, at + 2)});
  }
  for (size_t i = 0; i < message_count; ++i, at += 4) {
    n.message.push_back({Load16(body, at), Load16(body, at + 2)});
  }
  return n;
}

std::vector<uint8_t> EncodeNegotiateBody(absl::Span<const IcVersion> framework,
                                         absl::Span<const IcVersion> message) {
  std::vector<uint8_t> out(8 + 4 * (framework.size() + message.size()));
  absl::Span<uint8_t> b = absl::MakeSpan(out);
  Store16(b, 0, static_cast<uint16_t>(framework.size()));
  Store16(b, 2, static_cast<uint16_t>(message.size()));
  size_t at = 8;
  for (const IcVersion& v : framework) {
    Store16(b, at, v.major);
    Store16(b, at + 2, v.minor);
    at += 4;
  }
  for (const IcVersion& v : message) {
    Store16(b, at, v.major);
    Store16(b, at + 2, v.minor);
    at += 4;
  }
  return out;
}

absl::StatusOr<Negotiated> ChooseVersions(const NegotiateBody& offered,
                                          absl::Span<const IcVersion> our_framework,
                                          absl::Span<const IcVersion> our_message) {
  auto pick = [](absl::Span<const IcVersion> ours,
                 const std::vector<IcVersion>& theirs) -> const IcVersion* {
    for (const IcVersion& v : ours) {
      if (std::find(theirs.begin(), theirs.end(), v) != theirs.end()) return &v;
    }
    return nullptr;
  };
  auto list = [](const std::vector<IcVersion>& vs) {
    std::string s;
    for (const IcVersion& v : vs) absl::StrAppend(&s, s.empty() ? "" : " ", VersionString(v));
    return s.empty() ? std::string("none") : s;
  };
  const IcVersion* framework = pick(our_framework, offered.framework);
  if (framework == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("no common framework version (host offers ", list(offered.framework), ")"));
  }
  const IcVersion* message = pick(our_message, offered.message);
  if (message == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("no common message version (host offers ", list(offered.message), ")"));
  }
  return Negotiated{*framework, *message};
}

std::vector<uint8_t> NegotiateReplyBody(const Negotiated* chosen) {
  std::vector<uint8_t> out(16, 0);
  if (chosen != nullptr) {
    absl::Span<uint8_t> b = absl::MakeSpan(out);
    Store16(b, 0, 1);
    Store16(b, 2, 1);
    Store16(b, 8, chosen->framework.major);
    Store16(b, 10, chosen->framework.minor);
    Store16(b, 12, chosen->message.major);
    Store16(b, 14, chosen->message.minor);
  }
  return out;
}

absl::StatusOr<Negotiated> ParseNegotiateReply(const IcMessage& reply) {
  if (reply.header.type != static_cast<uint16_t>(MessageType::kNegotiate)) {
    return absl::InvalidArgumentError(
        absl::StrCat("negotiate answer has message type ", MessageTypeName(reply.header.type)));
  }
  if ((reply.header.flags & kFlagResponse) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("negotiate answer has flags ", reply.header.flags, " (no RESPONSE bit)"));
  }
  absl::StatusOr<NegotiateBody> body = ParseNegotiateBody(reply.body);
  if (!body.ok()) return body.status();
  if (reply.header.status != ic_status::kOk || body->framework.size() != 1 ||
      body->message.size() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the guest refused the versions: status ", StatusName(reply.header.status), ", ",
        body->framework.size(), " framework and ", body->message.size(), " message versions"));
  }
  return Negotiated{body->framework[0], body->message[0]};
}

}  // namespace vbus::ic
