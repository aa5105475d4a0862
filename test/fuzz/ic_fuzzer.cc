// libFuzzer target: the guest's integration-component parsers against a hostile host. Each
// input drives one IC driver's endpoint (drivers/ic/ic_endpoint.h) — heartbeat, shutdown, time
// sync or KVP — through a valid version negotiation and then a script of arbitrary messages,
// and checks what must hold for any input: the endpoint answers or drops every message (never
// both, never crashes), every answer is a well-formed response to the message it answers
// (flags TRANSACTION | RESPONSE, the request's type and transaction id, icmsgsize and the pipe
// size matching the body), and the counters add up. The raw parsers (negotiation, shutdown,
// time sync, KVP requests, UTF-16) also see every message body; a KVP request that parses
// encodes back to a body that parses to the same request, and UTF-16 text converts both ways.
//
// Input: byte 0 picks the IC (low 2 bits) and the negotiated message version (next 2 bits);
// then messages, each a 2-byte little-endian length and that many bytes (a short tail is one
// last message).
#include <cstring>
#include <memory>
#include <vector>

#include "drivers/heartbeat/heartbeat.h"
#include "drivers/ic/ic_endpoint.h"
#include "drivers/ic/ic_wire.h"
#include "drivers/kvp/kvp.h"
#include "drivers/kvp/kvp_store.h"
#include "drivers/kvp/kvp_wire.h"
#include "drivers/shutdown/shutdown.h"
#include "drivers/timesync/timesync.h"
#include "test/fuzz/fuzz_check.h"

namespace vbus::fuzz {
namespace {

std::unique_ptr<ic::IcDriver> MakeDriver(uint8_t which) {
  switch (which & 3) {
    case 0:
      return std::make_unique<ic::HeartbeatDriver>();
    case 1: {
      ic::ShutdownDriverOptions o;
      o.on_accepted = [](const ic::ShutdownRequest&) {};
      return std::make_unique<ic::ShutdownDriver>(o);
    }
    case 2: {
      ic::TimeSyncDriverOptions o;
      o.reference_now = [] { return uint64_t{123456789}; };
      o.now = [] { return absl::FromUnixSeconds(1767225600); };
      return std::make_unique<ic::TimeSyncDriver>(o);
    }
    default: {
      ic::KvpDriverOptions o;
      o.store = std::make_shared<ic::MemoryKvpStore>(8);
      o.auto_pool = {{ic::kKvpString, "FullyQualifiedDomainName", "fuzz.example"}};
      return std::make_unique<ic::KvpDriver>(o);
    }
  }
}

// Checks an answer against the message it answers.
void CheckAnswer(const std::vector<uint8_t>& answer, absl::Span<const uint8_t> request) {
  absl::StatusOr<ic::IcMessage> a = ic::ParseIcMessage(answer);
  FUZZ_CHECK(a.ok());
  FUZZ_CHECK(a->header.flags == ic::kResponseFlags);
  FUZZ_CHECK(a->header.pipe_flags == ic::kPipeData);
  FUZZ_CHECK(a->header.pipe_size == ic::kIcHeaderSize + a->body.size());
  FUZZ_CHECK(answer.size() == ic::kBodyOffset + a->body.size());
  FUZZ_CHECK(request.size() >= ic::kBodyOffset);
  FUZZ_CHECK(a->header.type == ic::Load16(request, 12));
  FUZZ_CHECK(a->header.transaction_id == request[24]);
}

void FuzzRawParsers(absl::Span<const uint8_t> body, ic::IcVersion version) {
  (void)ic::ParseNegotiateBody(body);
  (void)ic::ParseShutdownBody(body);
  (void)ic::ParseTimeSyncBody(version, body);
  absl::StatusOr<ic::KvpRequest> kvp = ic::ParseKvpRequest(body);
  if (kvp.ok()) {
    absl::StatusOr<std::vector<uint8_t>> again = ic::EncodeKvpRequest(*kvp);
    if (again.ok()) {
      absl::StatusOr<ic::KvpRequest> back = ic::ParseKvpRequest(*again);
      FUZZ_CHECK(back.ok());
      FUZZ_CHECK(back->operation == kvp->operation && back->pool == kvp->pool);
      FUZZ_CHECK(back->index == kvp->index);
      FUZZ_CHECK(back->record.key == kvp->record.key);
      if (kvp->operation == static_cast<uint8_t>(ic::KvpOperation::kSet)) {
        FUZZ_CHECK(back->record == kvp->record);
      }
    }
  }
  absl::StatusOr<std::string> text = ic::Utf16ToUtf8(body.first(body.size() & ~size_t{1}));
  if (text.ok()) {
    absl::StatusOr<std::vector<uint8_t>> utf16 = ic::Utf8ToUtf16(*text, 1 << 20);
    FUZZ_CHECK(utf16.ok());
    absl::StatusOr<std::string> again = ic::Utf16ToUtf8(*utf16);
    FUZZ_CHECK(again.ok() && *again == *text);
  }
}

void Run(const uint8_t* data, size_t size) {
  if (size == 0) return;
  std::unique_ptr<ic::IcDriver> driver = MakeDriver(data[0]);
  const absl::Span<const ic::IcVersion> versions = driver->message_versions();
  const ic::IcVersion version = versions[(data[0] >> 2) % versions.size()];
  // The negotiation: the host offers framework 3.0 and the chosen message version.
  const ic::IcVersion framework[] = {{3, 0}};
  const ic::IcVersion message[] = {version};
  std::vector<uint8_t> negotiate = ic::BuildRequest(ic::MessageType::kNegotiate, {}, {},
                                                    ic::EncodeNegotiateBody(framework, message));
  ic::IcEndpoint::Output out = driver->endpoint().Process(negotiate);
  FUZZ_CHECK(!out.answer.empty());
  FUZZ_CHECK(driver->endpoint().negotiated().has_value());
  FUZZ_CHECK(driver->endpoint().negotiated()->message == version);

  uint64_t processed = 1;
  size_t at = 1;
  while (at < size) {
    size_t length = size - at;
    if (length >= 2) {
      length = std::min<size_t>(data[at] | data[at + 1] << 8, size - at - 2);
      at += 2;
    }
    const absl::Span<const uint8_t> m(data + at, length);
    at += length;
    const ic::IcStats before = driver->endpoint().stats();
    out = driver->endpoint().Process(m);
    ++processed;
    const ic::IcStats after = driver->endpoint().stats();
    if (out.answer.empty()) {
      FUZZ_CHECK(after.dropped == before.dropped + 1);
      FUZZ_CHECK(after.requests == before.requests);
    } else {
      CheckAnswer(out.answer, m);
      FUZZ_CHECK(after.requests == before.requests + 1);
      FUZZ_CHECK(after.dropped == before.dropped);
      if (out.after_send) out.after_send();
    }
    if (m.size() > ic::kBodyOffset) FuzzRawParsers(m.subspan(ic::kBodyOffset), version);
  }
  const ic::IcStats stats = driver->endpoint().stats();
  FUZZ_CHECK(stats.requests + stats.dropped == processed);
}

}  // namespace
}  // namespace vbus::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vbus::fuzz::Run(data, size);
  return 0;
}
