// Fuzz target: the binary VMBus codec's decoder (hyperv/wire.h) against hostile bytes, every
// message type. An input is a stream of wire messages, each a length byte (0..255, so lengths
// past the 240-byte payload occur) and that many bytes, fed to one WireDecoder with small
// reassembly limits, so GPADL parts interleave, collide and exhaust them.
//
// Checked, for every message:
// - decoding never crashes, and a refusal says what was wrong (a non-empty message);
// - whatever decodes also encodes, into messages of at most 240 bytes, and those decode to the
//   same ControlMessage again (the codec's round trip);
// - a message that is not a GPADL part encodes into one message no longer than the input, equal
//   to the input byte for byte except the bytes the codec does not carry (the header padding,
//   VERSION_RESPONSE's padding and its version_supported byte normalised to 0 or 1,
//   INITIATE_CONTACT's two reserved bytes from 5.0) — so a decoded OFFERCHANNEL re-encodes to
//   its own 196 bytes;
// - the reassembler's holdings stay within its limits.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <variant>
#include <vector>

#include "core/data/protocol.h"
#include "google/protobuf/util/message_differencer.h"
#include "hyperv/wire.h"
#include "proto/control.pb.h"
#include "test/fuzz/fuzz_check.h"
#include "test/fuzz/fuzz_reader.h"

namespace vbus::fuzz {
namespace {

using hyperv::DecodedMessage;
using hyperv::WireDecoder;
using hyperv::WireMessage;

constexpr hyperv::GpadlReassembler::Limits kLimits{.max_pending_gpadls = 3,
                                                   .max_pending_pfns = 120};

bool Same(const v1::ControlMessage& a, const v1::ControlMessage& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

// Whether byte `i` of a message of `type` is one the codec does not carry (see above).
bool NotCarried(uint32_t type, const std::vector<uint8_t>& in, size_t i) {
  if (i >= 4 && i < 8) return true;  // header padding
  if (type == static_cast<uint32_t>(hyperv::WireType::kVersionResponse)) {
    return i == 8 || i == 10 || i == 11;
  }
  if (type == static_cast<uint32_t>(hyperv::WireType::kInitiateContact)) {
    const uint32_t version = in[8] | in[9] << 8 | in[10] << 16 | uint32_t{in[11]} << 24;
    return protocol::UsesReturnedConnectionId(version) && (i == 18 || i == 19);
  }
  return false;
}

// Encodes `m`, checks the sizes, and decodes the parts with a fresh decoder: the same message.
std::vector<WireMessage> RoundTrip(const v1::ControlMessage& m) {
  absl::StatusOr<std::vector<WireMessage>> parts = hyperv::EncodeMessage(m);
  FUZZ_CHECK_OK(parts.status());
  FUZZ_CHECK(!parts->empty());
  WireDecoder again;
  for (size_t i = 0; i < parts->size(); ++i) {
    const WireMessage& part = (*parts)[i];
    FUZZ_CHECK(part.size() >= hyperv::kWireHeaderBytes);
    FUZZ_CHECK(part.size() <= protocol::kMaxMessagePayloadBytes);
    absl::StatusOr<std::optional<v1::ControlMessage>> back = again.Decode(part);
    FUZZ_CHECK_OK(back.status());
    FUZZ_CHECK(back->has_value() == (i + 1 == parts->size()));
    if (back->has_value()) FUZZ_CHECK(Same(**back, m));
  }
  return *std::move(parts);
}

void OneMessage(WireDecoder& decoder, const std::vector<uint8_t>& in) {
  // Stateless: the message alone.
  absl::StatusOr<DecodedMessage> one = hyperv::DecodeMessage(in);
  if (!one.ok()) {
    FUZZ_CHECK(!one.status().message().empty());
    if (TraceEnabled()) std::fprintf(stderr, "refused: %s\n", one.status().ToString().c_str());
  } else if (const auto* m = std::get_if<v1::ControlMessage>(&*one)) {
    const std::vector<WireMessage> parts = RoundTrip(*m);
    FUZZ_CHECK(parts.size() == 1);
    const WireMessage& out = parts[0];
    FUZZ_CHECK(out.size() <= in.size());
    const uint32_t type = in[0] | in[1] << 8 | in[2] << 16 | uint32_t{in[3]} << 24;
    for (size_t i = 0; i < out.size(); ++i) {
      if (NotCarried(type, in, i)) continue;
      FUZZ_CHECK(out[i] == in[i]);
    }
    if (type == static_cast<uint32_t>(hyperv::WireType::kVersionResponse)) {
      FUZZ_CHECK(out[8] == (in[8] != 0 ? 1 : 0));
    }
    if (TraceEnabled()) std::fprintf(stderr, "decoded: %s", m->ShortDebugString().c_str());
  }
  // With the reassembler.
  absl::StatusOr<std::optional<v1::ControlMessage>> joined = decoder.Decode(in);
  FUZZ_CHECK(joined.ok() || one.ok() || joined.status() == one.status());
  if (!joined.ok()) {
    FUZZ_CHECK(!joined.status().message().empty());
  } else if (joined->has_value()) {
    RoundTrip(**joined);
  }
  FUZZ_CHECK(decoder.gpadls().pending_gpadls() <= kLimits.max_pending_gpadls);
  FUZZ_CHECK(decoder.gpadls().pending_pfns() <= kLimits.max_pending_pfns);
}

}  // namespace
}  // namespace vbus::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vbus::fuzz::QuietProtobufLogs();
  vbus::fuzz::FuzzReader in(data, std::min<size_t>(size, 4096));
  vbus::hyperv::WireDecoder decoder(vbus::fuzz::kLimits);
  while (!in.done()) {
    const size_t length = in.Byte();
    const std::string bytes = in.Bytes(length);
    vbus::fuzz::OneMessage(decoder, std::vector<uint8_t>(bytes.begin(), bytes.end()));
  }
  return 0;
}
