// IcEndpoint: the guest's side of one IC channel as a protocol machine — no channel, no
// threads. It takes the payload of each packet the host sent, answers the version negotiation
// itself and hands every later request to its IcService (the heartbeat, shutdown, time sync
// or KVP logic), and returns the bytes to send back (docs/integration_components.md §1, §21).
//
// Bad input never crashes and never goes unanswered when it can be answered:
//   - shorter than the headers: dropped and counted (there is no header to answer with);
//   - a response, or a message without the REQUEST flag: dropped and counted (a host only
//     sends requests; answering a response could loop);
//   - icmsgsize past the payload, an unknown or foreign message type, a request before the
//     negotiation, a body the service rejects: answered with E_FAIL and counted;
//   - a negotiation with no version in common: answered with counts 0/0 and E_FAIL.
//
// Example:
//   HeartbeatDriver service(...);           // an IcService
//   IcEndpoint endpoint(&service);
//   IcEndpoint::Output out = endpoint.Process(packet.payload());
//   if (!out.answer.empty()) channel.Send(out.answer);
//   if (out.after_send) out.after_send();
//
// Thread safety: Process runs one call at a time (the channel's dispatcher); the accessors may
// be called from any thread.
#ifndef VBUS_DRIVERS_IC_IC_ENDPOINT_H_
#define VBUS_DRIVERS_IC_IC_ENDPOINT_H_

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "drivers/ic/ic_wire.h"

namespace vbus::ic {

// IcAnswer: what a service answers to one request.
struct IcAnswer {
  uint32_t status = ic_status::kOk;
  std::vector<uint8_t> body;
  // Runs after the answer has been sent (a shutdown acts only then). May be empty.
  std::function<void()> after_send;
  // One line for the agent's log ("beat 41 -> 42"); may be empty.
  std::string note;
};

// IcService: one IC's request logic.
class IcService {
 public:
  virtual ~IcService() = default;
  // The message type this IC serves.
  virtual MessageType type() const = 0;
  // Message versions it speaks, in preference order.
  virtual absl::Span<const IcVersion> message_versions() const = 0;
  // Handle
  // One request of type() in the negotiated message `version`; `body` is bounded by
  // icmsgsize. An error (InvalidArgument for a short or malformed body) is answered with
  // E_FAIL and counted as malformed.
  virtual absl::StatusOr<IcAnswer> Handle(IcVersion version, absl::Span<const uint8_t> body) = 0;
};

// IcStats: what an endpoint has seen.
struct IcStats {
  uint64_t requests = 0;        // requests answered (negotiations included)
  uint64_t failed_answers = 0;  // answered with a failure status
  uint64_t dropped = 0;         // not answerable: too short, or not a request
  uint64_t negotiations = 0;    // successful negotiations
};

class IcEndpoint {
 public:
  // `service` must outlive the endpoint.
  explicit IcEndpoint(IcService* service) : service_(service) {}
  IcEndpoint(const IcEndpoint&) = delete;
  IcEndpoint& operator=(const IcEndpoint&) = delete;

  struct Output {
    std::vector<uint8_t> answer;       // empty: send nothing
    std::function<void()> after_send;  // run after the answer is sent
    std::string note;                  // what happened, for a log line (may be empty)
    uint64_t trans_id = 0;             // the request's transaction id, echoed by the answer
  };
  Output Process(absl::Span<const uint8_t> payload);

  // The versions agreed, if negotiated.
  std::optional<Negotiated> negotiated() const;
  IcStats stats() const;

 private:
  Output Fail(const IcHeader& request, std::string why);

  IcService* const service_;
  mutable std::mutex mu_;  // guards the two below (read from other threads)
  std::optional<Negotiated> negotiated_;
  IcStats stats_;
};

}  // namespace vbus::ic

#endif  // VBUS_DRIVERS_IC_IC_ENDPOINT_H_
