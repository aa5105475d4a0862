// BusState as an isolated (confidential) guest (BusConfig::isolated, docs/protocol.md §2, §4):
// versions below 5.2 are never offered to the host, and offers of device classes such a guest
// does not accept are refused with their relids given back.
#include "core/data/device_classes.h"
#include "core/data/protocol.h"
#include "core/state/bus_state.h"
#include "core/state/bus_state_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

BusConfig Isolated(uint32_t max_version = protocol::kNewestVersion) {
  BusConfig config;
  config.max_version = max_version;
  config.isolated = true;
  return config;
}

TEST(BusStateIsolatedTest, NegotiatesOnlyFrom52) {
  BusHarness h(Isolated());
  RequestId connect;
  h.Call([](BusState& b, Actions* o) { return b.Connect(kDeadline, o); }, &connect);
  std::vector<uint32_t> asked;
  while (h.bus().phase() == BusPhase::kNegotiating) {
    asked.push_back(
        std::get<SendMessage>(h.last().front()).message.initiate_contact().version_requested());
    h.Host(VersionResponseMsg(false));
  }
  EXPECT_THAT(asked, ElementsAre(protocol::kVersion5_3, protocol::kVersion5_2));
  EXPECT_EQ(h.CompletionOf(connect).status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(h.CompletionOf(connect).status.message(), HasSubstr("none of versions 5.3, 5.2"));
}

TEST(BusStateIsolatedTest, AMaxVersionBelow52CannotConnect) {
  BusHarness h(Isolated(protocol::kVersion5_1));
  EXPECT_THAT(h.Call([](BusState& b, Actions* o) { return b.Connect(kDeadline, o); }),
              ElementsAre("complete request=1 connect: INVALID_ARGUMENT: connect: an isolated "
                          "guest needs version 5.2 or newer; max_version is 5.1"));
}

TEST(BusStateIsolatedTest, ClassesAnIsolatedGuestDoesNotTakeAreRefusedAndReleased) {
  BusHarness h(Isolated());
  h.Connected(protocol::kVersion5_2);
  EXPECT_THAT(h.Host(OfferMsg(5, device_class::kKvp, kInstanceA)),
              ElementsAre(HasSubstr("ignored offer_not_allowed_isolated: PERMISSION_DENIED: offer "
                                    "of relid 5 (a9a0f4e7-5a45-4d96-b827-8a841e8c03e6): an "
                                    "isolated guest does not accept this device class"),
                          "send RelidReleased{relid=5}"));
  EXPECT_FALSE(h.bus().FindOfferByRelid(5).has_value());
  uint32_t relid = 10;
  for (const Guid& taken :
       {device_class::kScsi, device_class::kNetwork, device_class::kPciPassthrough,
        device_class::kTimeSync, device_class::kHeartbeat, device_class::kShutdown}) {
    EXPECT_TRUE(h.Offered(++relid, taken, kInstanceB).valid()) << taken.ToString();
  }
  // hv_sock offers are accepted whatever their class.
  v1::ControlMessage hv_sock = OfferMsg(30, kEchoClass, kInstanceA);
  hv_sock.mutable_offer()->set_flags(protocol::kOfferFlagTlnpiProvider);
  h.Host(hv_sock);
  EXPECT_TRUE(h.bus().FindOfferByRelid(30).has_value());
  // Not isolated: the same KVP offer is an ordinary one.
  BusHarness plain;
  plain.Connected(protocol::kVersion5_2);
  EXPECT_TRUE(plain.Offered(5, device_class::kKvp, kInstanceA).valid());
}

}  // namespace
}  // namespace vbus::testing
