// EngineHarness and ScriptedGuest: drive a HostEngine without gRPC, threads or memory.
//
// EngineHarness owns an engine and a fake clock, runs every Action the engine emits and
// records it: control messages go to the addressed guest's inbox, events to an event log,
// MapRings are answered at once with CompleteOpen (with a result the test may set), and the
// set of currently mapped rings is tracked so a test can assert that every MapRings is undone
// exactly once. ScriptedGuest is a raw test guest: it attaches under a name and sends protocol
// messages exactly as a test writes them, returning what the host answered.
//
// Example:
//   EngineHarness h;
//   ScriptedGuest g(h, "vm");
//   EXPECT_THAT(g.Send(InitiateContactMsg(protocol::kVersion5_3)),
//               ElementsAre(EqualsProto(R"pb(control { version_response { ... } })pb")));
//
// Single-threaded. Test-only.
#ifndef VBUS_MOCK_TESTING_ENGINE_HARNESS_H_
#define VBUS_MOCK_TESTING_ENGINE_HARNESS_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/data/protocol.h"
#include "mock/host/engine.h"
#include "proto/control.pb.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock::testing {

class EngineHarness {
 public:
  // Fails the calling test (via a gtest assertion) if the options are invalid.
  explicit EngineHarness(EngineOptions options = {});

  HostEngine& engine() { return *engine_; }
  absl::Time now() const { return now_; }

  // Advance: moves the clock and runs the engine's timers.
  void Advance(absl::Duration d);

  // Run: executes `actions` as described above. Every engine call made through the harness
  // ends here; tests that call engine() directly pass their Actions to it.
  void Run(Actions actions);

  // HostControl calls, run at now().
  absl::StatusOr<v1::OfferResponse> Offer(const std::string& guest, const std::string& text_spec);
  absl::StatusOr<v1::RescindResponse> Rescind(const std::string& guest, uint32_t relid);
  absl::Status InjectFault(const std::string& text_request);

  // The messages addressed to `guest_id` since the last Take, in order.
  std::vector<v1::HostToGuest> TakeInbox(const std::string& guest_id);
  // Events since the last TakeEvents.
  std::vector<v1::ProtocolEvent> TakeEvents();
  // Guests the engine asked to disconnect.
  const std::vector<DisconnectGuest>& disconnects() const { return disconnects_; }
  const std::vector<SignalChannel>& signals() const { return signals_; }
  // Every MapRings emitted, in order.
  const std::vector<MapRings>& map_requests() const { return map_requests_; }
  // (guest id, relid) with mapped rings right now.
  const std::set<std::pair<std::string, uint32_t>>& mapped() const { return mapped_; }
  // Number of protocol violations the harness saw in the engine's actions (UnmapRings for
  // rings not mapped, a second MapRings for mapped rings). Tests expect 0.
  int action_violations() const { return action_violations_; }

  // The result the next MapRings completes with (then back to OK).
  void FailNextMap(absl::Status status) { next_map_result_ = std::move(status); }

 private:
  std::unique_ptr<HostEngine> engine_;
  absl::Time now_ = absl::FromUnixSeconds(1700000000);
  absl::flat_hash_map<std::string, std::vector<v1::HostToGuest>> inbox_;
  std::vector<v1::ProtocolEvent> events_;
  std::vector<DisconnectGuest> disconnects_;
  std::vector<SignalChannel> signals_;
  std::vector<MapRings> map_requests_;
  std::set<std::pair<std::string, uint32_t>> mapped_;
  absl::Status next_map_result_;
  int action_violations_ = 0;
};

// ScriptedGuest: one attached raw guest.
// Virtual processors a ScriptedGuest takes events on (channels may target VPs 0..3).
inline constexpr uint32_t kHarnessVps = 4;

class ScriptedGuest {
 public:
  // Attaches `name` with `pages` pages of memory in the default layout with kHarnessVps VPs (no
  // file exists: the engine only checks numbers). Fails the calling test if the attach is
  // refused.
  ScriptedGuest(EngineHarness& harness, const std::string& name, uint64_t pages = 256);

  const std::string& id() const { return id_; }

  // Send / SendRaw: hands one message to the engine and returns what the host sent this
  // guest in response (control messages and ProtocolErrors, in order).
  std::vector<v1::HostToGuest> Send(const v1::ControlMessage& message);
  std::vector<v1::HostToGuest> Send(const std::string& text_control_message);
  std::vector<v1::HostToGuest> SendRaw(const v1::GuestToHost& message);
  // Inbox: what the host sent this guest since the last Send/Inbox (e.g. hot-add offers).
  std::vector<v1::HostToGuest> Inbox();

  // Conversation steps that must succeed (they fail the calling test otherwise):
  // Connect negotiates `version` and requests offers; returns the offers.
  std::vector<v1::Offer> Connect(uint32_t version = protocol::kNewestVersion);
  // Creates a GPADL of `pages` consecutive pages starting at `first_pfn`.
  void CreateGpadl(uint32_t relid, uint32_t handle, uint64_t first_pfn, uint32_t pages);
  // Opens `relid` on GPADL `handle` split at `offset`.
  void Open(uint32_t relid, uint32_t handle, uint32_t offset);

 private:
  EngineHarness& harness_;
  std::string id_;
};

// Message builders (text-free shorthand for the common messages).
v1::ControlMessage InitiateContactMsg(uint32_t version);
v1::ControlMessage RequestOffersMsg();
v1::ControlMessage GpadlCreateMsg(uint32_t relid, uint32_t handle,
                                  const std::vector<uint64_t>& pfns);
v1::ControlMessage GpadlTeardownMsg(uint32_t relid, uint32_t handle);
v1::ControlMessage OpenChannelMsg(uint32_t relid, uint32_t handle, uint32_t offset);
v1::ControlMessage CloseChannelMsg(uint32_t relid);
v1::ControlMessage RelidReleasedMsg(uint32_t relid);
v1::ControlMessage ModifyChannelMsg(uint32_t relid, uint32_t target_vp);
v1::ControlMessage UnloadMsg();

}  // namespace vbus::mock::testing

#endif  // VBUS_MOCK_TESTING_ENGINE_HARNESS_H_
