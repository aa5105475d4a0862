// Test helpers for BusState (testonly): host-message builders and a harness that feeds inputs,
// renders the resulting actions as text (DescribeAction) and checks the state machine's
// invariants after every step.
//
// Example:
//   BusHarness h;
//   EXPECT_THAT(h.Call([&](BusState& b, Actions* out) { return b.Connect(kDeadline, out); }),
//               ElementsAre("send InitiateContact{version=5.3 ...}", "arm_timer request=1
//               at=+10s"));
//   EXPECT_THAT(h.Host(VersionResponseMsg(true, 4)), ElementsAre(...));
#ifndef VBUS_CORE_STATE_BUS_STATE_TESTING_H_
#define VBUS_CORE_STATE_BUS_STATE_TESTING_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "core/data/guid.h"
#include "core/state/bus_state.h"

namespace vbus::testing {

// Every call in the tests uses this deadline unless a test says otherwise: "at=+10s".
inline const absl::Time kDeadline = absl::UnixEpoch() + absl::Seconds(10);

// Device classes and instances used by the tests.
inline constexpr Guid kEchoClass = Guid::Literal("8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501");
inline constexpr Guid kInstanceA = Guid::Literal("11111111-2222-3333-4444-555555555555");
inline constexpr Guid kInstanceB = Guid::Literal("66666666-7777-8888-9999-aaaaaaaaaaaa");

// Host → guest message builders.
v1::ControlMessage VersionResponseMsg(bool supported, uint32_t connection_id = 0);
v1::ControlMessage OfferMsg(uint32_t relid, const Guid& type, const Guid& instance,
                            uint32_t sub_channel_index = 0);
v1::ControlMessage AllOffersDeliveredMsg();
v1::ControlMessage RescindMsg(uint32_t relid);
v1::ControlMessage GpadlCreatedMsg(uint32_t relid, uint32_t gpadl, uint32_t status = 0);
v1::ControlMessage GpadlTorndownMsg(uint32_t gpadl);
v1::ControlMessage OpenResultMsg(uint32_t relid, uint32_t open_id, uint32_t status = 0);
v1::ControlMessage ModifyResponseMsg(uint32_t relid, uint32_t status = 0);
v1::ControlMessage UnloadResponseMsg();

// Ring PFNs for Open: `pages` consecutive PFNs from `first`.
std::vector<uint64_t> Pfns(uint64_t first, size_t pages);
// OpenParams with 2 + 2 ring pages at PFN 100.. (target_vp 0, no user data).
OpenParams SmallRings();

class BusHarness {
 public:
  explicit BusHarness(BusConfig config = {});

  BusState& bus() { return bus_; }
  // Whether every step checks BusState::CheckInvariants (default true; O(channels) per step).
  void set_check_invariants(bool check) { check_invariants_ = check; }
  // Whether a SendMessage that completes a request when posted is taken as posted at once
  // (BusState::OnPosted appended to the step's actions; default true). Tests of post failures
  // turn it off and feed OnPostFailed themselves.
  void set_auto_posted(bool posted) { auto_posted_ = posted; }
  // The raw actions of the last step.
  const Actions& last() const { return last_; }

  // Feeds a host message; returns the described actions. Checks invariants.
  std::vector<std::string> Host(const v1::ControlMessage& message);
  // Runs a call; returns the described actions; *id (if non-null) receives its RequestId.
  std::vector<std::string> Call(const std::function<RequestId(BusState&, Actions*)>& call,
                                RequestId* id = nullptr);
  // Any other input (OnTimer, OnLinkLost, OnPostFailed, ReleaseOffer).
  std::vector<std::string> Do(const std::function<void(BusState&, Actions*)>& input);

  // Drives Connect to completion at `version` (the host refuses newer ones) with no offers
  // yet; returns the connect request. Precondition: a fresh bus with max_version >= version.
  RequestId Connected(uint32_t version = protocol::kVersion5_3, uint32_t connection_id = 4);
  // Feeds an offer that must be accepted; returns its OfferId.
  OfferId Offered(uint32_t relid, const Guid& type = kEchoClass, const Guid& instance = kInstanceA,
                  uint32_t sub_channel_index = 0);
  // Opens the channel of `offer` successfully (GpadlCreated + OpenResult OK); returns the ring
  // GPADL handle.
  uint32_t Opened(OfferId offer);

  // From the last step: the Complete for `id` (fails the test if absent) and the OpenChannel
  // open_id sent (0 if none).
  Complete CompletionOf(RequestId id) const;
  uint32_t SentOpenId() const;
  // The GPADL handle of the last GpadlCreate sent in the last step (0 if none).
  uint32_t SentGpadl() const;

 private:
  std::vector<std::string> Finish();

  BusState bus_;
  Actions last_;
  bool check_invariants_ = true;
  bool auto_posted_ = true;
};

}  // namespace vbus::testing

#endif  // VBUS_CORE_STATE_BUS_STATE_TESTING_H_
