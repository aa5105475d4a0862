// Helpers shared by the HostEngine tests (engine_test.cc, engine_channel_test.cc): options with
// default offers, event filters, a channel lookup, and EngineChannelTest (a guest connected at
// 5.3 to an echo and a raw device).
#ifndef VBUS_MOCK_HOST_ENGINE_TEST_UTIL_H_
#define VBUS_MOCK_HOST_ENGINE_TEST_UTIL_H_

#include <string>
#include <vector>

#include "core/data/protocol.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/host/engine.h"
#include "mock/testing/engine_harness.h"

namespace vbus::mock::testing {

inline constexpr uint32_t kGpadl = protocol::kFirstGpadlHandle;

inline EngineOptions WithOffers(std::vector<std::string> kinds) {
  EngineOptions options;
  for (const std::string& kind : kinds) {
    v1::OfferSpec spec;
    spec.set_device(kind);
    options.default_offers.push_back(spec);
  }
  return options;
}

// The events of `kind` in `events`.
inline std::vector<v1::ProtocolEvent> OfKind(const std::vector<v1::ProtocolEvent>& events,
                                             v1::EventKind kind) {
  std::vector<v1::ProtocolEvent> out;
  for (const auto& e : events) {
    if (e.kind() == kind) out.push_back(e);
  }
  return out;
}

inline v1::ChannelInfo Channel(EngineHarness& h, const std::string& guest, uint32_t relid) {
  absl::StatusOr<v1::ListChannelsResponse> list = h.engine().ListChannels(guest);
  EXPECT_TRUE(list.ok()) << list.status();
  for (const auto& c : list->channels()) {
    if (c.child_relid() == relid) return c;
  }
  ADD_FAILURE() << "no relid " << relid;
  return {};
}

class EngineChannelTest : public ::testing::Test {
 protected:
  EngineChannelTest() : h_(WithOffers({"echo", "raw"})), g_(h_, "vm", /*pages=*/256) {}
  void SetUp() override {
    offers_ = g_.Connect(protocol::kVersion5_3);
    ASSERT_THAT(offers_, ::testing::SizeIs(2));
    h_.TakeEvents();
  }

  uint32_t GpadlStatus(const std::vector<v1::HostToGuest>& r) {
    EXPECT_THAT(r, ::testing::SizeIs(1));
    return r.empty() ? 0 : r[0].control().gpadl_created().creation_status();
  }
  uint32_t OpenStatus(const std::vector<v1::HostToGuest>& r) {
    EXPECT_THAT(r, ::testing::SizeIs(1));
    return r.empty() ? 0 : r[0].control().open_result().status();
  }
  int ErrorCode(const std::vector<v1::HostToGuest>& r) {
    EXPECT_THAT(r, ::testing::SizeIs(1));
    return r.empty() ? 0 : r[0].error().code();
  }

  EngineHarness h_;
  ScriptedGuest g_;
  std::vector<v1::Offer> offers_;
};

}  // namespace vbus::mock::testing

#endif  // VBUS_MOCK_HOST_ENGINE_TEST_UTIL_H_
