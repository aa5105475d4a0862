// A hostile host, end to end through every backend: the mock host sends the guest control
// messages exactly as a malicious or broken host would (InjectFault{send}, whatever the host's
// own state says) while the guest runs an open echo channel. For each message the guest ignores
// it and counts it (BusStats::host_inputs_ignored) or, on Hyper-V, its decoder refuses it
// (HyperVBackendStats::decode_errors); it never crashes (ASan in CI), and the echo channel
// keeps working. Messages the binary encoding cannot carry at all (a relid of 0 or 2048, a
// monitor id of 128 or more) reach only the MockBackend guest; on Hyper-V their byte forms are
// the decoder's hostile vectors (WireHardeningTest). The table of cases is docs/security.md.
//
// Usage: hostile_host_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/guid.h"
#include "core/data/guid_proto.h"
#include "core/runtime/channel_bus.h"
#include "gtest/gtest.h"
#include "mock/host/device_kinds.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/e2e_params.h"
#include "test/e2e/echo_stream.h"
#include "test/e2e/eventually.h"

namespace vbus::e2e {
namespace {

constexpr Guid kStranger = Guid::Literal("0badf00d-1234-4321-8888-000000000001");

// What the hostile message may use: the live echo channel's relid and instance.
struct Live {
  uint32_t relid = 0;
  Guid instance;
};

struct Case {
  const char* name;
  std::function<v1::ControlMessage(const Live&)> message;
  // The binary encoding can carry it (else it reaches only the MockBackend guest).
  bool encodable = true;
};

v1::ControlMessage Offer(uint32_t relid, const Guid& instance, uint32_t sub_index = 0) {
  v1::ControlMessage m;
  v1::Offer* o = m.mutable_offer();
  *o->mutable_interface_type() = GuidToProto(mock::kEchoDeviceClass);
  *o->mutable_interface_instance() = GuidToProto(instance);
  o->set_child_relid(relid);
  o->set_sub_channel_index(sub_index);
  o->set_connection_id(0x10000 + relid);
  return m;
}

const Case kCases[] = {
    {"OfferOfRelid0", [](const Live&) { return Offer(0, kStranger); }, false},
    {"OfferOfRelid2048", [](const Live&) { return Offer(2048, kStranger); }, false},
    {"OfferWithMonitorId200",
     [](const Live&) {
       v1::ControlMessage m = Offer(1500, kStranger);
       m.mutable_offer()->set_monitor_allocated(true);
       m.mutable_offer()->set_monitor_id(200);
       return m;
     },
     false},
    {"OfferOfALiveRelid", [](const Live& l) { return Offer(l.relid, kStranger); }},
    {"PrimaryOfferedAgainUnderANewRelidWhileOpen",
     [](const Live& l) { return Offer(1501, l.instance); }},
    {"SubChannelWithoutPrimary", [](const Live&) { return Offer(1502, kStranger, 1); }},
    {"OpenResultNeverAskedFor",
     [](const Live& l) {
       v1::ControlMessage m;
       m.mutable_open_result()->set_child_relid(l.relid);
       m.mutable_open_result()->set_open_id(77777);
       return m;
     }},
    {"GpadlCreatedForAnUnknownHandle",
     [](const Live& l) {
       v1::ControlMessage m;
       m.mutable_gpadl_created()->set_child_relid(l.relid);
       m.mutable_gpadl_created()->set_gpadl(0xBAD);
       return m;
     }},
    {"GpadlTorndownForAnUnknownHandle",
     [](const Live&) {
       v1::ControlMessage m;
       m.mutable_gpadl_torndown()->set_gpadl(0xBAD);
       return m;
     }},
    {"ModifyChannelResponseNeverAskedFor",
     [](const Live& l) {
       v1::ControlMessage m;
       m.mutable_modify_channel_response()->set_child_relid(l.relid);
       return m;
     }},
    {"VersionResponseNeverAskedFor",
     [](const Live&) {
       v1::ControlMessage m;
       m.mutable_version_response()->set_version_supported(true);
       m.mutable_version_response()->set_message_connection_id(4);
       return m;
     }},
    {"UnloadResponseNeverAskedFor",
     [](const Live&) {
       v1::ControlMessage m;
       m.mutable_unload_response();
       return m;
     }},
    {"AllOffersDeliveredAgain",
     [](const Live&) {
       v1::ControlMessage m;
       m.mutable_all_offers_delivered();
       return m;
     }},
    {"RescindOfARelidNeverOffered",
     [](const Live&) {
       v1::ControlMessage m;
       m.mutable_rescind_offer()->set_child_relid(1999);
       return m;
     }},
};

class HostileHostTest : public ::testing::TestWithParam<std::tuple<Case, BackendKind>> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<E2eHost>> host =
        E2eHost::Start(E2eHost::Mode::kInProcess, absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    ChannelBusOptions options;
    options.log = [](absl::string_view) {};
    E2eGuestOptions guest_options;
    guest_options.backend = std::get<1>(GetParam());
    guest_options.memory_bytes = 16 << 20;
    absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
        E2eGuest::Attach(*host_, kGuest, std::move(options), std::move(guest_options));
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = std::move(*guest);
  }
  void TearDown() override {
    guest_.reset();
    host_.reset();
  }
  // What the guest has refused so far, at either layer.
  uint64_t Refused() {
    uint64_t n = guest_->bus().stats().host_inputs_ignored;
    if (guest_->hyperv_backend() != nullptr) n += guest_->hyperv_backend()->stats().decode_errors;
    return n;
  }
  absl::Status Echo(Channel& channel) {
    const uint8_t ping[8] = {'h', 'o', 's', 't', 'i', 'l', 'e', '!'};
    return CallEcho(channel, ping, absl::Now() + absl::Seconds(10));
  }

  static constexpr char kGuest[] = "hostile";
  std::unique_ptr<E2eHost> host_;
  std::unique_ptr<E2eGuest> guest_;
};

TEST_P(HostileHostTest, TheGuestRefusesItCountsItAndKeepsServing) {
  const auto& [c, backend] = GetParam();
  if (!c.encodable && backend == BackendKind::kHyperV) {
    GTEST_SKIP() << "the binary encoding cannot carry it; its byte form is WireHardeningTest's";
  }
  absl::StatusOr<v1::OfferResponse> echo = host_->Offer(kGuest, "echo");
  ASSERT_TRUE(echo.ok()) << echo.status();
  ChannelBus& bus = guest_->bus();
  ASSERT_TRUE(bus.Connect(absl::Now() + absl::Seconds(10)).ok());
  std::shared_ptr<Channel> channel = bus.FindChannel(echo->child_relid());
  ASSERT_NE(channel, nullptr);
  ASSERT_TRUE(channel->Open(SmallCallbackRings(), absl::Now() + absl::Seconds(10)).ok());
  ASSERT_TRUE(Echo(*channel).ok());

  const Live live{echo->child_relid(), channel->offer().interface_instance};
  const uint64_t before = Refused();
  const size_t offers = bus.Offers().size();
  v1::InjectFaultRequest send;
  send.set_guest(kGuest);
  *send.mutable_send() = c.message(live);
  ASSERT_TRUE(host_->InjectFault(send).ok());
  EXPECT_TRUE(Eventually([&] { return Refused() > before; }))
      << c.name << " was neither ignored nor refused";
  // Nothing changed: the same offers, the channel open and echoing.
  EXPECT_EQ(bus.Offers().size(), offers);
  EXPECT_EQ(bus.FindChannel(live.relid), channel);
  EXPECT_TRUE(channel->is_open());
  const absl::Status echoed = Echo(*channel);
  EXPECT_TRUE(echoed.ok()) << echoed;
  EXPECT_EQ(bus.phase(), BusPhase::kConnected);
  EXPECT_TRUE(bus.Shutdown(absl::Now() + absl::Seconds(10)).ok());
}

INSTANTIATE_TEST_SUITE_P(Cases, HostileHostTest,
                         ::testing::Combine(::testing::ValuesIn(kCases),
                                            ::testing::Values(BackendKind::kMock,
                                                              BackendKind::kHyperV)),
                         [](const auto& info) {
                           return absl::StrCat(std::get<0>(info.param).name, "_",
                                               BackendName(std::get<1>(info.param)));
                         });

}  // namespace
}  // namespace vbus::e2e
