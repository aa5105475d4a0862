// HostEngine driven by a scripted raw guest (mock/testing/engine_harness.h): each protocol path
// and each bad input, with the exact host replies.
#include "mock/host/engine.h"

#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/protocol.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/testing/engine_harness.h"
#include "mock/testing/proto_matchers.h"

namespace vbus::mock {
namespace {

using ::testing::ElementsAre;
using testing::EngineHarness;
using testing::EqualsProto;
using ::testing::IsEmpty;
using testing::ScriptedGuest;
using ::testing::SizeIs;

constexpr uint32_t kGpadl = protocol::kFirstGpadlHandle;

EngineOptions WithOffers(std::vector<std::string> kinds) {
  EngineOptions options;
  for (const std::string& kind : kinds) {
    v1::OfferSpec spec;
    spec.set_device(kind);
    options.default_offers.push_back(spec);
  }
  return options;
}

// The events of `kind` in `events`.
std::vector<v1::ProtocolEvent> OfKind(const std::vector<v1::ProtocolEvent>& events,
                                      v1::EventKind kind) {
  std::vector<v1::ProtocolEvent> out;
  for (const auto& e : events) {
    if (e.kind() == kind) out.push_back(e);
  }
  return out;
}

v1::ChannelInfo Channel(EngineHarness& h, const std::string& guest, uint32_t relid) {
  absl::StatusOr<v1::ListChannelsResponse> list = h.engine().ListChannels(guest);
  EXPECT_TRUE(list.ok()) << list.status();
  for (const auto& c : list->channels()) {
    if (c.child_relid() == relid) return c;
  }
  ADD_FAILURE() << "no relid " << relid;
  return {};
}

// --- Attach ---------------------------------------------------------------------------------

TEST(EngineAttachTest, AttachAnswersAndAnnounces) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  EXPECT_EQ(g.id(), "guest-1");
  std::vector<v1::ProtocolEvent> events = h.TakeEvents();
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_EQ(events[0].kind(), v1::EVENT_KIND_GUEST_ATTACHED);
  EXPECT_EQ(events[0].guest_id(), "guest-1");
  v1::ListGuestsResponse list = h.engine().ListGuests();
  ASSERT_THAT(list.guests(), SizeIs(1));
  EXPECT_EQ(list.guests(0).guest_name(), "vm");
  EXPECT_EQ(list.guests(0).state(), v1::GUEST_STATE_ATTACHED);
  EXPECT_EQ(list.guests(0).memory_size_bytes(), 256 * protocol::kPageSize);
}

TEST(EngineAttachTest, RejectsBadAttach) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  Actions out;
  v1::Attach a;
  a.set_guest_name("vm");
  a.set_memory_size_bytes(64 * protocol::kPageSize);
  *a.mutable_layout() = LayoutToProto(MemoryLayout{});
  EXPECT_EQ(h.engine().Attach(a, h.now(), &out).status().code(), absl::StatusCode::kAlreadyExists);
  a.set_guest_name("");
  EXPECT_EQ(h.engine().Attach(a, h.now(), &out).status().code(),
            absl::StatusCode::kInvalidArgument);
  a.set_guest_name("other");
  a.set_memory_size_bytes(64 * protocol::kPageSize + 1);
  EXPECT_EQ(h.engine().Attach(a, h.now(), &out).status().code(),
            absl::StatusCode::kInvalidArgument);
  a.set_memory_size_bytes(64 * protocol::kPageSize);
  a.mutable_layout()->set_revision(7);
  EXPECT_EQ(h.engine().Attach(a, h.now(), &out).status().code(),
            absl::StatusCode::kInvalidArgument);
  a.mutable_layout()->set_revision(1);
  a.mutable_layout()->set_doorbell_page_pfn(0);  // same page as the guest event page
  EXPECT_EQ(h.engine().Attach(a, h.now(), &out).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out, IsEmpty());
}

TEST(EngineAttachTest, ResolveGuest) {
  EngineHarness h;
  EXPECT_EQ(h.engine().ResolveGuest("").status().code(), absl::StatusCode::kFailedPrecondition);
  ScriptedGuest a(h, "alpha");
  EXPECT_EQ(*h.engine().ResolveGuest(""), a.id());
  ScriptedGuest b(h, "beta");
  EXPECT_EQ(h.engine().ResolveGuest("").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(*h.engine().ResolveGuest("beta"), b.id());
  EXPECT_EQ(*h.engine().ResolveGuest("guest-1"), a.id());
  EXPECT_EQ(h.engine().ResolveGuest("gamma").status().code(), absl::StatusCode::kNotFound);
}

// --- Negotiation ----------------------------------------------------------------------------

TEST(EngineNegotiationTest, AcceptsEverySupportedVersion) {
  for (uint32_t v : kSupportedVersions) {
    EngineHarness h;
    ScriptedGuest g(h, "vm");
    std::vector<v1::HostToGuest> r = g.Send(testing::InitiateContactMsg(v));
    ASSERT_THAT(r, SizeIs(1));
    EXPECT_TRUE(r[0].control().version_response().version_supported()) << protocol::VersionName(v);
    EXPECT_EQ(r[0].control().version_response().message_connection_id(),
              v >= protocol::kVersion5_0 ? kMessageConnectionId : 0u)
        << protocol::VersionName(v);
    EXPECT_EQ(h.engine().ListGuests().guests(0).version(), v);
    EXPECT_EQ(h.engine().ListGuests().guests(0).state(), v1::GUEST_STATE_CONNECTED);
  }
}

TEST(EngineNegotiationTest, ExactReplyAt5_3) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  EXPECT_THAT(g.Send(testing::InitiateContactMsg(protocol::kVersion5_3)),
              ElementsAre(EqualsProto(
                  R"pb(control {
                         version_response { version_supported: true message_connection_id: 4 }
                       })pb")));
}

TEST(EngineNegotiationTest, RefusesUnsupportedVersions) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  for (uint32_t v : {0x0000000Du, 0x00010001u, 0x00060000u, 0x00050004u, 0u}) {
    EXPECT_THAT(g.Send(testing::InitiateContactMsg(v)),
                ElementsAre(EqualsProto("control { version_response { } }")))
        << protocol::VersionName(v);
  }
  EXPECT_EQ(h.engine().ListGuests().guests(0).state(), v1::GUEST_STATE_ATTACHED);
}

TEST(EngineNegotiationTest, GuestFallsBackToTheConfiguredMaximum) {
  EngineOptions options;
  options.settings.set_max_version(protocol::kVersion4_0);
  EngineHarness h(options);
  ScriptedGuest g(h, "vm");
  const uint32_t newest_first[] = {protocol::kVersion5_3, protocol::kVersion5_2,
                                   protocol::kVersion5_1, protocol::kVersion5_0,
                                   protocol::kVersion4_1, protocol::kVersion4_0};
  for (uint32_t v : newest_first) {
    std::vector<v1::HostToGuest> r = g.Send(testing::InitiateContactMsg(v));
    ASSERT_THAT(r, SizeIs(1));
    EXPECT_EQ(r[0].control().version_response().version_supported(), v == protocol::kVersion4_0)
        << protocol::VersionName(v);
  }
  EXPECT_EQ(h.engine().ListGuests().guests(0).version(), protocol::kVersion4_0);
}

TEST(EngineNegotiationTest, ConfigureLowersTheMaximumForLaterNegotiations) {
  EngineHarness h;
  v1::ConfigureRequest c;
  c.mutable_settings()->set_max_version(protocol::kVersion4_1);
  absl::StatusOr<v1::HostSettings> s = h.engine().Configure(c);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->max_version(), protocol::kVersion4_1);
  EXPECT_FALSE(s->remap_relids_on_resume());
  EXPECT_EQ(s->monitor_latency_us(), kDefaultMonitorLatencyUs);
  ScriptedGuest g(h, "vm");
  EXPECT_FALSE(g.Send(testing::InitiateContactMsg(protocol::kVersion5_3))[0]
                   .control()
                   .version_response()
                   .version_supported());
  EXPECT_TRUE(g.Send(testing::InitiateContactMsg(protocol::kVersion4_1))[0]
                  .control()
                  .version_response()
                  .version_supported());

  c.mutable_settings()->set_max_version(0x00060000);
  EXPECT_EQ(h.engine().Configure(c).status().code(), absl::StatusCode::kInvalidArgument);
  c.mutable_settings()->clear_max_version();
  c.mutable_settings()->set_monitor_latency_us(0);
  EXPECT_EQ(h.engine().Configure(c).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.engine().settings().max_version(),
            protocol::kVersion4_1);  // unchanged by the failed calls
}

TEST(EngineNegotiationTest, SecondInitiateContactIsAProtocolError) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  g.Connect();
  std::vector<v1::HostToGuest> r = g.Send(testing::InitiateContactMsg(protocol::kVersion5_3));
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r[0].error().message(), ::testing::HasSubstr("already connected at version 5.3"));
}

// --- Offers ---------------------------------------------------------------------------------

TEST(EngineOfferTest, DefaultOffersThenAllOffersDelivered) {
  EngineHarness h(WithOffers({"echo", "sink", "raw"}));
  ScriptedGuest g(h, "vm");
  EXPECT_THAT(g.Inbox(), IsEmpty());  // nothing before RequestOffers
  g.Send(testing::InitiateContactMsg(protocol::kVersion5_3));
  std::vector<v1::HostToGuest> r = g.Send(testing::RequestOffersMsg());
  ASSERT_THAT(r, SizeIs(4));
  EXPECT_EQ(r[0].control().offer().child_relid(), 1u);
  EXPECT_EQ(r[0].control().offer().interface_type().value(), kEchoDeviceClass.ToString());
  EXPECT_EQ(r[1].control().offer().child_relid(), 2u);
  EXPECT_EQ(r[1].control().offer().interface_type().value(), kSinkDeviceClass.ToString());
  EXPECT_EQ(r[2].control().offer().child_relid(), 3u);
  EXPECT_EQ(r[2].control().offer().interface_type().value(), kRawDeviceClass.ToString());
  EXPECT_THAT(r[3], EqualsProto("control { all_offers_delivered { } }"));
  EXPECT_EQ(h.engine().ListGuests().guests(0).state(), v1::GUEST_STATE_OFFERS_DELIVERED);

  // A second RequestOffers on the same connection is out of order.
  r = g.Send(testing::RequestOffersMsg());
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
}

TEST(EngineOfferTest, ExactOfferFields) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  g.Connect();
  absl::StatusOr<v1::OfferResponse> r = h.Offer("vm", R"pb(
    device: "raw"
    interface_type { value: "57164f39-9115-4e78-ab55-382f3bd5422d" }
    interface_instance { value: "00000000-1111-2222-3333-444444444444" }
    user_defined: "pipe"
    flags: 0x10
    mmio_megabytes: 7
    monitored: true
    dedicated_interrupt: true
  )pb");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(*r, EqualsProto(R"pb(child_relid: 1
                                   interface_instance {
                                     value: "00000000-1111-2222-3333-444444444444"
                                   })pb"));
  EXPECT_THAT(g.Inbox(), ElementsAre(EqualsProto(R"pb(
                control {
                  offer {
                    interface_type { value: "57164f39-9115-4e78-ab55-382f3bd5422d" }
                    interface_instance { value: "00000000-1111-2222-3333-444444444444" }
                    child_relid: 1
                    flags: 16
                    mmio_megabytes: 7
                    user_defined: "pipe"
                    monitor_id: 0
                    monitor_allocated: true
                    dedicated_interrupt: true
                    connection_id: 65537
                  }
                })pb")));
}

TEST(EngineOfferTest, HotAddAfterOffersAndHeldBefore) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  ASSERT_TRUE(h.Offer("vm", "device: 'echo'").ok());
  EXPECT_THAT(g.Inbox(), IsEmpty());  // held until RequestOffers
  std::vector<v1::Offer> offers = g.Connect();
  ASSERT_THAT(offers, SizeIs(1));
  absl::StatusOr<v1::OfferResponse> hot = h.Offer("vm", "device: 'sink'");
  ASSERT_TRUE(hot.ok());
  std::vector<v1::HostToGuest> inbox = g.Inbox();
  ASSERT_THAT(inbox, SizeIs(1));  // sent at once, no second AllOffersDelivered
  EXPECT_EQ(inbox[0].control().offer().child_relid(), hot->child_relid());
  EXPECT_EQ(hot->child_relid(), 2u);
}

TEST(EngineOfferTest, SubChannelsShareTheGuids) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  g.Connect();
  absl::StatusOr<v1::OfferResponse> r = h.Offer("", "device: 'echo' sub_channel_count: 2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->child_relid(), 1u);
  EXPECT_THAT(r->sub_channel_relids(), ElementsAre(2u, 3u));
  std::vector<v1::HostToGuest> inbox = g.Inbox();
  ASSERT_THAT(inbox, SizeIs(3));
  for (uint32_t i = 0; i < 3; ++i) {
    const v1::Offer& o = inbox[i].control().offer();
    EXPECT_EQ(o.sub_channel_index(), i);
    EXPECT_EQ(o.child_relid(), i + 1);
    EXPECT_EQ(o.interface_instance().value(), r->interface_instance().value());
  }
}

TEST(EngineOfferTest, RejectsBadSpecs) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  EXPECT_EQ(h.Offer("vm", "device: 'toaster'").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Offer("vm", "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Offer("vm", "device: 'echo' interface_type { value: 'nope' }").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Offer("vm", "device: 'echo' sub_channel_count: 65").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Offer("vm", "device: 'echo' flags: 65536").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      h.Offer("vm", "device: 'echo' user_defined: '" + std::string(121, 'x') + "'").status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Offer("nobody", "device: 'echo'").status().code(), absl::StatusCode::kNotFound);
  const std::string same =
      "device: 'echo' interface_instance { value: "
      "'00000000-0000-0000-0000-000000000001' }";
  ASSERT_TRUE(h.Offer("vm", same).ok());
  EXPECT_EQ(h.Offer("vm", same).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(h.engine().ListChannels("vm")->channels_size(), 1);

  EngineOptions bad = WithOffers({"toaster"});
  EXPECT_EQ(HostEngine::Create(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EngineOfferTest, RelidsRunOutAt2047) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  for (int i = 0; i < 31; ++i) {
    ASSERT_TRUE(h.Offer("vm", "device: 'raw' sub_channel_count: 64").ok()) << i;  // 31 * 65
  }
  ASSERT_TRUE(h.Offer("vm", "device: 'raw' sub_channel_count: 31").ok());  // = 2047
  EXPECT_EQ(h.Offer("vm", "device: 'raw'").status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(h.engine().ListChannels("vm")->channels_size(), static_cast<int>(protocol::kMaxRelid));
}

TEST(EngineOfferTest, MonitorIdsRunOutAt128) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  ASSERT_TRUE(h.Offer("vm", "device: 'raw' monitored: true sub_channel_count: 63").ok());
  ASSERT_TRUE(h.Offer("vm", "device: 'raw' monitored: true sub_channel_count: 63").ok());
  EXPECT_EQ(h.Offer("vm", "device: 'raw' monitored: true").status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(h.Offer("vm", "device: 'raw'").ok());  // unmonitored still fine
}

TEST(EngineOfferTest, GeneratedGuidsAreSeededAndDeterministic) {
  auto instances = [](uint64_t seed) {
    EngineOptions options;
    options.seed = seed;
    EngineHarness h(options);
    ScriptedGuest g(h, "vm");
    std::vector<std::string> out;
    for (int i = 0; i < 3; ++i)
      out.push_back(h.Offer("vm", "device: 'echo'")->interface_instance().value());
    return out;
  };
  EXPECT_EQ(instances(7), instances(7));
  EXPECT_NE(instances(7), instances(8));
  const std::vector<std::string> ids = instances(7);
  EXPECT_NE(ids[0], ids[1]);
  for (const std::string& id : ids) {
    EXPECT_EQ(id[14], '4') << id;  // version 4
    EXPECT_TRUE(id[19] == '8' || id[19] == '9' || id[19] == 'a' || id[19] == 'b') << id;
  }
}

// --- GPADLs ---------------------------------------------------------------------------------

class EngineChannelTest : public ::testing::Test {
 protected:
  EngineChannelTest() : h_(WithOffers({"echo", "raw"})), g_(h_, "vm", /*pages=*/256) {}
  void SetUp() override {
    offers_ = g_.Connect(protocol::kVersion5_3);
    ASSERT_THAT(offers_, SizeIs(2));
    h_.TakeEvents();
  }

  uint32_t GpadlStatus(const std::vector<v1::HostToGuest>& r) {
    EXPECT_THAT(r, SizeIs(1));
    return r.empty() ? 0 : r[0].control().gpadl_created().creation_status();
  }
  uint32_t OpenStatus(const std::vector<v1::HostToGuest>& r) {
    EXPECT_THAT(r, SizeIs(1));
    return r.empty() ? 0 : r[0].control().open_result().status();
  }
  int ErrorCode(const std::vector<v1::HostToGuest>& r) {
    EXPECT_THAT(r, SizeIs(1));
    return r.empty() ? 0 : r[0].error().code();
  }

  EngineHarness h_;
  ScriptedGuest g_;
  std::vector<v1::Offer> offers_;
};

TEST_F(EngineChannelTest, GpadlCreateAndTeardown) {
  EXPECT_THAT(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10, 11, 12, 13})),
              ElementsAre(EqualsProto(R"pb(control {
                                             gpadl_created { child_relid: 1 gpadl: 925200 }
                                           })pb")));
  ASSERT_NE(h_.engine().Gpadls(g_.id())->Find(kGpadl), nullptr);
  EXPECT_THAT(h_.engine().Gpadls(g_.id())->Find(kGpadl)->pfns, ElementsAre(10, 11, 12, 13));
  EXPECT_THAT(g_.Send(testing::GpadlTeardownMsg(1, kGpadl)),
              ElementsAre(EqualsProto("control { gpadl_torndown { gpadl: 925200 } }")));
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->size(), 0u);
  // The pages are free again.
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl + 1, {12, 13}))), 0u);
}

TEST_F(EngineChannelTest, GpadlWithPfnsOutsideMemoryIsRefused) {
  const uint32_t status = GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10, 256})));
  EXPECT_EQ(status, protocol::kStatusUnsuccessful);
  std::vector<v1::ProtocolEvent> errors = OfKind(h_.TakeEvents(), v1::EVENT_KIND_ERROR);
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_THAT(errors[0].detail(), ::testing::HasSubstr("PFN 256 (index 1) is outside"));
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {~uint64_t{0}}))),
            protocol::kStatusUnsuccessful);
  // Special pages (event pages, doorbells, monitor pages) are not data pages.
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {2}))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->size(), 0u);
}

TEST_F(EngineChannelTest, GpadlOverlapAndDuplicatesAreRefused) {
  ASSERT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10, 11, 12}))), 0u);
  // Overlapping another live GPADL (also one of another channel).
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(2, kGpadl + 1, {20, 12}))),
            protocol::kStatusUnsuccessful);
  std::vector<v1::ProtocolEvent> errors = OfKind(h_.TakeEvents(), v1::EVENT_KIND_ERROR);
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_THAT(errors[0].detail(), ::testing::HasSubstr("already belongs to GPADL 0xe1e10"));
  // A repeated page within one GPADL; a live handle; handle 0; no pages; a bad byte range.
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(2, kGpadl + 1, {20, 20}))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(2, kGpadl, {30}))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(2, 0, {30}))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(2, kGpadl + 2, {}))),
            protocol::kStatusUnsuccessful);
  v1::ControlMessage m = testing::GpadlCreateMsg(2, kGpadl + 3, {30, 31});
  m.mutable_gpadl_create()->set_byte_count(3 * protocol::kPageSize);
  EXPECT_EQ(GpadlStatus(g_.Send(m)), protocol::kStatusUnsuccessful);
  // Unknown relid.
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(99, kGpadl + 4, {40}))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->size(), 1u);
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->page_count(), 3u);
}

TEST_F(EngineChannelTest, GpadlTeardownErrors) {
  EXPECT_EQ(ErrorCode(g_.Send(testing::GpadlTeardownMsg(1, kGpadl))),
            static_cast<int>(absl::StatusCode::kNotFound));
  g_.CreateGpadl(1, kGpadl, 10, 8);
  EXPECT_EQ(ErrorCode(g_.Send(testing::GpadlTeardownMsg(2, kGpadl))),
            static_cast<int>(absl::StatusCode::kInvalidArgument));
  g_.Open(1, kGpadl, 4);
  EXPECT_EQ(ErrorCode(g_.Send(testing::GpadlTeardownMsg(1, kGpadl))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->size(), 1u);
}

// --- Open / close ---------------------------------------------------------------------------

TEST_F(EngineChannelTest, OpenMapsBothRingsAndClose) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  h_.TakeEvents();
  EXPECT_THAT(g_.Send(testing::OpenChannelMsg(1, kGpadl, 3)),
              ElementsAre(EqualsProto(R"pb(control {
                                             open_result { child_relid: 1 open_id: 1 status: 0 }
                                           })pb")));
  ASSERT_THAT(h_.map_requests(), SizeIs(1));
  const MapRings& map = h_.map_requests()[0];
  EXPECT_EQ(map.relid, 1u);
  EXPECT_EQ(map.device, "echo");
  EXPECT_EQ(map.gpadl, kGpadl);
  EXPECT_THAT(map.outbound_pfns, ElementsAre(10, 11, 12));
  EXPECT_THAT(map.inbound_pfns, ElementsAre(13, 14, 15, 16, 17));
  EXPECT_FALSE(map.monitor_id.has_value());
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_CHANNEL_OPENED), SizeIs(1));
  EXPECT_EQ(Channel(h_, "vm", 1).state(), v1::CHANNEL_STATE_OPEN);
  EXPECT_EQ(Channel(h_, "vm", 1).ring_gpadl(), kGpadl);

  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(1)), IsEmpty());  // no answer to a close
  EXPECT_THAT(h_.mapped(), IsEmpty());
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_CHANNEL_CLOSED), SizeIs(1));
  EXPECT_EQ(Channel(h_, "vm", 1).state(), v1::CHANNEL_STATE_OFFERED);
  // The GPADL stays until torn down, and can carry a new open.
  g_.Open(1, kGpadl, 4);
  EXPECT_THAT(h_.map_requests()[1].outbound_pfns, ElementsAre(10, 11, 12, 13));
  EXPECT_EQ(h_.action_violations(), 0);
}

TEST_F(EngineChannelTest, OpenWithABadRingOffsetIsRefused) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  for (uint32_t offset : {0u, 1u, 7u, 8u, 9u, 1000u}) {
    EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, offset))),
              protocol::kStatusUnsuccessful)
        << offset;
  }
  EXPECT_THAT(h_.map_requests(), IsEmpty());
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_ERROR), SizeIs(6));
  g_.Open(1, kGpadl, 6);  // the channel is still usable
}

TEST_F(EngineChannelTest, DuplicateOpenIsRefusedAndTheOpenChannelStays) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  g_.Open(1, kGpadl, 4);
  g_.CreateGpadl(1, kGpadl + 1, 20, 8);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl + 1, 4))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  EXPECT_THAT(h_.map_requests(), SizeIs(1));
  EXPECT_EQ(Channel(h_, "vm", 1).state(), v1::CHANNEL_STATE_OPEN);
  EXPECT_EQ(h_.mapped().size(), 1u);
}

TEST_F(EngineChannelTest, OpenWithABadGpadlIsRefused) {
  // No such GPADL.
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  // The GPADL of another channel.
  g_.CreateGpadl(2, kGpadl, 10, 8);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  // Unknown relid.
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(77, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  // A GPADL that does not start on a page boundary.
  v1::ControlMessage m = testing::GpadlCreateMsg(1, kGpadl + 1, {30, 31, 32, 33});
  m.mutable_gpadl_create()->set_byte_offset(8);
  m.mutable_gpadl_create()->set_byte_count(4 * protocol::kPageSize - 8);
  ASSERT_EQ(GpadlStatus(g_.Send(m)), 0u);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl + 1, 2))),
            protocol::kStatusUnsuccessful);
  // Device bytes over 120.
  g_.CreateGpadl(1, kGpadl + 2, 40, 4);
  v1::ControlMessage big = testing::OpenChannelMsg(1, kGpadl + 2, 2);
  big.mutable_open_channel()->set_user_data(std::string(121, 'u'));
  EXPECT_EQ(OpenStatus(g_.Send(big)), protocol::kStatusUnsuccessful);
  EXPECT_THAT(h_.map_requests(), IsEmpty());
}

TEST_F(EngineChannelTest, FailedMappingFailsTheOpen) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  h_.FailNextMap(absl::InternalError("mmap: out of address space"));
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  std::vector<v1::ProtocolEvent> errors = OfKind(h_.TakeEvents(), v1::EVENT_KIND_ERROR);
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_THAT(errors[0].detail(), ::testing::HasSubstr("out of address space"));
  EXPECT_EQ(Channel(h_, "vm", 1).state(), v1::CHANNEL_STATE_OFFERED);
  g_.Open(1, kGpadl, 4);  // the GPADL was released for a retry
}

TEST_F(EngineChannelTest, CloseErrors) {
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(1))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(5))),
            static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(0))),
            static_cast<int>(absl::StatusCode::kNotFound));
}

TEST_F(EngineChannelTest, CloseThatCrossedARefusedOpenIsAcceptedQuietly) {
  // The guest gave up on an open (its deadline passed) and sent CloseChannel before the
  // refusal reached it. That close is not a protocol error.
  g_.CreateGpadl(1, kGpadl, 10, 8);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 0))),
            protocol::kStatusUnsuccessful);
  h_.TakeEvents();
  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(1)), IsEmpty());
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_ERROR), IsEmpty());
  // Only one close is forgiven: a second one is an error again.
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(1))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  // An injected refusal counts too, and a later successful open clears the allowance.
  ASSERT_TRUE(h_.InjectFault("refuse { request: REQUEST_OPEN_CHANNEL }").ok());
  EXPECT_NE(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))), 0u);
  g_.Open(1, kGpadl, 4);
  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(1)), IsEmpty());  // closes the open channel
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(1))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  // A refused open of a channel that is already open leaves the allowance unset.
  g_.Open(1, kGpadl, 4);
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(1)), IsEmpty());
  EXPECT_EQ(ErrorCode(g_.Send(testing::CloseChannelMsg(1))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
}

TEST_F(EngineChannelTest, CloseWhileTheRuntimeStillMapsUndoesTheMapping) {
  // Drive the engine directly: the runtime has not answered MapRings yet.
  g_.CreateGpadl(1, kGpadl, 10, 8);
  Actions out;
  v1::GuestToHost open;
  *open.mutable_control() = testing::OpenChannelMsg(1, kGpadl, 4);
  ASSERT_TRUE(h_.engine().HandleGuestMessage(g_.id(), open, h_.now(), &out).ok());
  ASSERT_TRUE(std::holds_alternative<MapRings>(out.back()));
  out.clear();
  v1::GuestToHost close;
  *close.mutable_control() = testing::CloseChannelMsg(1);
  ASSERT_TRUE(h_.engine().HandleGuestMessage(g_.id(), close, h_.now(), &out).ok());
  for (const Action& a : out) EXPECT_FALSE(std::holds_alternative<UnmapRings>(a));
  // A reopen waits for the outstanding mapping.
  out.clear();
  ASSERT_TRUE(h_.engine().HandleGuestMessage(g_.id(), open, h_.now(), &out).ok());
  h_.Run(out);
  EXPECT_EQ(h_.TakeInbox(g_.id()).back().control().open_result().status(),
            protocol::kStatusUnsuccessful);
  // The mapping completes: undone at once, no OpenResult.
  out.clear();
  ASSERT_TRUE(h_.engine().CompleteOpen(g_.id(), 1, absl::OkStatus(), h_.now(), &out).ok());
  ASSERT_THAT(out, SizeIs(1));
  ASSERT_TRUE(std::holds_alternative<UnmapRings>(out[0]));
  EXPECT_EQ(std::get<UnmapRings>(out[0]).relid, 1u);
  // No second completion.
  EXPECT_EQ(h_.engine().CompleteOpen(g_.id(), 1, absl::OkStatus(), h_.now(), &out).code(),
            absl::StatusCode::kFailedPrecondition);
}

// --- Rescind and relids ---------------------------------------------------------------------

TEST_F(EngineChannelTest, RescindWhileOpen) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  g_.Open(1, kGpadl, 4);
  h_.TakeEvents();
  absl::StatusOr<v1::RescindResponse> r = h_.Rescind("vm", 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->rescinded_relids(), ElementsAre(1u));
  EXPECT_THAT(h_.mapped(), IsEmpty());  // the host stopped using the rings first
  EXPECT_THAT(g_.Inbox(), ElementsAre(EqualsProto("control { rescind_offer { child_relid: 1 } }")));
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_CHANNEL_CLOSED), SizeIs(1));
  EXPECT_EQ(Channel(h_, "vm", 1).state(), v1::CHANNEL_STATE_RESCINDED);
  EXPECT_EQ(h_.Rescind("vm", 1).status().code(), absl::StatusCode::kFailedPrecondition);

  // The guest closes, tears down and releases, as Linux does.
  EXPECT_THAT(g_.Send(testing::CloseChannelMsg(1)), IsEmpty());
  EXPECT_THAT(g_.Send(testing::GpadlTeardownMsg(1, kGpadl)),
              ElementsAre(EqualsProto("control { gpadl_torndown { gpadl: 925200 } }")));
  // Opening or mapping more memory for a rescinded channel is refused.
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 4))),
            protocol::kStatusUnsuccessful);
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10}))),
            protocol::kStatusUnsuccessful);
  EXPECT_THAT(g_.Send(testing::RelidReleasedMsg(1)), IsEmpty());
  EXPECT_EQ(h_.engine().FindChannel(g_.id(), 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h_.action_violations(), 0);
}

TEST_F(EngineChannelTest, RelidsAreReusedOnlyAfterRelease) {
  ASSERT_TRUE(h_.Rescind("vm", 1).ok());
  g_.Inbox();
  // Relid 1 is still taken (rescinded, not released): the next offer gets 3.
  absl::StatusOr<v1::OfferResponse> a = h_.Offer("vm", "device: 'echo'");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->child_relid(), 3u);
  EXPECT_THAT(g_.Inbox(), SizeIs(1));  // the hot-added offer
  EXPECT_THAT(g_.Send(testing::RelidReleasedMsg(1)), IsEmpty());
  absl::StatusOr<v1::OfferResponse> b = h_.Offer("vm", "device: 'echo'");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->child_relid(), 1u);
  g_.Inbox();
  // Releasing a relid that is not rescinded, or unknown, is a protocol error.
  EXPECT_EQ(ErrorCode(g_.Send(testing::RelidReleasedMsg(2))),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(ErrorCode(g_.Send(testing::RelidReleasedMsg(2000))),
            static_cast<int>(absl::StatusCode::kNotFound));
}

TEST_F(EngineChannelTest, RescindSubChannelsBeforeThePrimary) {
  absl::StatusOr<v1::OfferResponse> o = h_.Offer("vm", "device: 'echo' sub_channel_count: 2");
  ASSERT_TRUE(o.ok());
  g_.Inbox();
  absl::StatusOr<v1::RescindResponse> r = h_.Rescind("vm", o->child_relid());
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->rescinded_relids(), ElementsAre(4u, 5u, 3u));
  EXPECT_THAT(g_.Inbox(), ElementsAre(EqualsProto("control { rescind_offer { child_relid: 4 } }"),
                                      EqualsProto("control { rescind_offer { child_relid: 5 } }"),
                                      EqualsProto("control { rescind_offer { child_relid: 3 } }")));
}

TEST(EngineRescindTest, RescindOfAnOfferNeverSentIsSilent) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  ASSERT_TRUE(h.Offer("vm", "device: 'echo'").ok());
  absl::StatusOr<v1::RescindResponse> r = h.Rescind("vm", 1);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->rescinded_relids(), ElementsAre(1u));
  EXPECT_THAT(g.Inbox(), IsEmpty());
  EXPECT_THAT(g.Connect(), IsEmpty());                            // nothing offered any more
  EXPECT_EQ(h.Offer("vm", "device: 'echo'")->child_relid(), 1u);  // and the relid is free
  EXPECT_EQ(h.Rescind("vm", 9).status().code(), absl::StatusCode::kNotFound);
}

// --- Modify ---------------------------------------------------------------------------------

TEST_F(EngineChannelTest, ModifyChannelAt5_3Answers) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  g_.Open(1, kGpadl, 4);
  EXPECT_THAT(g_.Send(testing::ModifyChannelMsg(1, 3)),
              ElementsAre(EqualsProto(R"pb(control {
                                             modify_channel_response { child_relid: 1 status: 0 }
                                           })pb")));
  EXPECT_EQ(Channel(h_, "vm", 1).target_vp(), 3u);
  // Not open.
  EXPECT_THAT(
      g_.Send(testing::ModifyChannelMsg(2, 1)),
      ElementsAre(EqualsProto(R"pb(control {
                                     modify_channel_response { child_relid: 2 status: 0xC0000001 }
                                   })pb")));
}

TEST(EngineModifyTest, NoAnswerBefore5_3AndRefusedBefore4_1) {
  {
    EngineHarness h(WithOffers({"echo"}));
    ScriptedGuest g(h, "vm");
    g.Connect(protocol::kVersion5_0);
    g.CreateGpadl(1, kGpadl, 10, 8);
    g.Open(1, kGpadl, 4);
    EXPECT_THAT(g.Send(testing::ModifyChannelMsg(1, 2)), IsEmpty());
    EXPECT_EQ(Channel(h, "vm", 1).target_vp(), 2u);
    std::vector<v1::HostToGuest> r = g.Send(testing::ModifyChannelMsg(9, 2));
    ASSERT_THAT(r, SizeIs(1));
    EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kNotFound));
  }
  {
    EngineHarness h(WithOffers({"echo"}));
    ScriptedGuest g(h, "vm");
    g.Connect(protocol::kVersion4_0);
    std::vector<v1::HostToGuest> r = g.Send(testing::ModifyChannelMsg(1, 2));
    ASSERT_THAT(r, SizeIs(1));
    EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(r[0].error().message(), ::testing::HasSubstr("needs version 4.1"));
  }
}

// --- Unload and resume ----------------------------------------------------------------------

TEST_F(EngineChannelTest, UnloadClosesEverything) {
  g_.CreateGpadl(1, kGpadl, 10, 8);
  g_.Open(1, kGpadl, 4);
  g_.CreateGpadl(2, kGpadl + 1, 20, 4);
  EXPECT_THAT(g_.Send(testing::UnloadMsg()),
              ElementsAre(EqualsProto("control { unload_response { } }")));
  EXPECT_THAT(h_.mapped(), IsEmpty());
  EXPECT_EQ(h_.engine().Gpadls(g_.id())->size(), 0u);
  v1::GuestInfo info = h_.engine().ListGuests().guests(0);
  EXPECT_EQ(info.state(), v1::GUEST_STATE_UNLOADED);
  EXPECT_EQ(info.version(), 0u);
  // Only a new negotiation is accepted now.
  std::vector<v1::HostToGuest> r = g_.Send(testing::RequestOffersMsg());
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r[0].error().message(), ::testing::HasSubstr("unloaded"));
  // Resume without remapping: the same relids come back.
  std::vector<v1::Offer> again = g_.Connect(protocol::kVersion5_3);
  ASSERT_THAT(again, SizeIs(2));
  EXPECT_EQ(again[0].child_relid(), 1u);
  EXPECT_EQ(again[1].child_relid(), 2u);
  g_.CreateGpadl(1, kGpadl, 10, 8);  // the old pages are free
  g_.Open(1, kGpadl, 4);
  EXPECT_EQ(h_.action_violations(), 0);
}

TEST(EngineUnloadTest, ResumeRemapsRelidsWhenConfigured) {
  EngineOptions options = WithOffers({"echo", "raw"});
  options.settings.set_remap_relids_on_resume(true);
  EngineHarness h(options);
  ScriptedGuest g(h, "vm");
  std::vector<v1::Offer> before = g.Connect();
  ASSERT_TRUE(h.Offer("vm", "device: 'sink' sub_channel_count: 1").ok());
  g.Inbox();
  ASSERT_THAT(g.Send(testing::UnloadMsg()), SizeIs(1));
  std::vector<v1::Offer> after = g.Connect();
  ASSERT_THAT(after, SizeIs(4));
  std::set<uint32_t> old_relids = {1, 2, 3, 4};
  for (const v1::Offer& o : after) {
    EXPECT_FALSE(old_relids.contains(o.child_relid())) << o.ShortDebugString();
    EXPECT_EQ(o.connection_id(), kChannelConnectionIdBase + o.child_relid());
  }
  // Same devices, same order, instances kept.
  EXPECT_EQ(after[0].interface_instance().value(), before[0].interface_instance().value());
  EXPECT_EQ(after[1].interface_instance().value(), before[1].interface_instance().value());
  EXPECT_EQ(after[3].sub_channel_index(), 1u);
  EXPECT_EQ(after[3].interface_instance().value(), after[2].interface_instance().value());
  // Rescinding the remapped primary takes the remapped sub-channel with it.
  absl::StatusOr<v1::RescindResponse> r = h.Rescind("vm", after[2].child_relid());
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->rescinded_relids(), ElementsAre(after[3].child_relid(), after[2].child_relid()));
}

// An instance in use by a live primary is refused; once that primary is rescinded (before or
// after its release), remapped or never sent, the instance is free again, and the refusal
// names the relid that holds it now.
TEST(EngineOfferTest, InstancesAreFreedByRescindAndFollowRemapping) {
  EngineOptions options;
  options.settings.set_remap_relids_on_resume(true);
  EngineHarness h(options);
  ScriptedGuest g(h, "vm");
  const std::string spec =
      "device: 'echo' sub_channel_count: 1 interface_instance { value: "
      "'00000000-0000-0000-0000-0000000000aa' }";
  // Offered before the guest asked: rescinding forgets it at once.
  ASSERT_EQ(h.Offer("vm", spec)->child_relid(), 1u);
  ASSERT_TRUE(h.Rescind("vm", 1).ok());
  ASSERT_EQ(h.Offer("vm", spec)->child_relid(), 1u);
  g.Connect();
  absl::Status taken = h.Offer("vm", spec).status();
  EXPECT_EQ(taken.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(taken.message()), ::testing::HasSubstr("relid 1"));
  // Rescinded but not released: the instance is free, the relids are not.
  ASSERT_TRUE(h.Rescind("vm", 1).ok());
  ASSERT_EQ(h.Offer("vm", spec)->child_relid(), 3u);
  g.Inbox();
  EXPECT_THAT(g.Send(testing::RelidReleasedMsg(2)), IsEmpty());
  EXPECT_THAT(g.Send(testing::RelidReleasedMsg(1)), IsEmpty());
  // Releasing the old primary does not free the instance of the new one.
  EXPECT_EQ(h.Offer("vm", spec).status().code(), absl::StatusCode::kAlreadyExists);
  // After a remapping resume the holder is named by its new relid.
  ASSERT_THAT(g.Send(testing::UnloadMsg()), SizeIs(1));
  std::vector<v1::Offer> after = g.Connect();
  ASSERT_THAT(after, SizeIs(2));
  taken = h.Offer("vm", spec).status();
  EXPECT_EQ(taken.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(taken.message()),
              ::testing::HasSubstr(absl::StrCat("relid ", after[0].child_relid())));
  ASSERT_TRUE(h.Rescind("vm", after[0].child_relid()).ok());
  EXPECT_TRUE(h.Offer("vm", spec).ok());
}

TEST(EngineUnloadTest, UnloadNeedsVersion3) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  g.Connect(protocol::kVersion2_4);
  std::vector<v1::HostToGuest> r = g.Send(testing::UnloadMsg());
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
}

TEST(EngineUnloadTest, RescindedChannelsAreForgottenOnUnload) {
  EngineHarness h(WithOffers({"echo"}));
  ScriptedGuest g(h, "vm");
  g.Connect();
  ASSERT_TRUE(h.Rescind("vm", 1).ok());
  g.Inbox();
  g.Send(testing::UnloadMsg());
  EXPECT_THAT(g.Connect(), IsEmpty());
  EXPECT_EQ(h.Offer("vm", "device: 'raw'")->child_relid(), 1u);
}

// --- Bad input ------------------------------------------------------------------------------

TEST(EngineBadInputTest, MessagesBeforeInitiateContact) {
  EngineHarness h(WithOffers({"echo"}));
  ScriptedGuest g(h, "vm");
  h.TakeEvents();
  for (const v1::ControlMessage& m :
       {testing::RequestOffersMsg(), testing::GpadlCreateMsg(1, kGpadl, {10}),
        testing::OpenChannelMsg(1, kGpadl, 2), testing::CloseChannelMsg(1), testing::UnloadMsg(),
        testing::RelidReleasedMsg(1)}) {
    std::vector<v1::HostToGuest> r = g.Send(m);
    ASSERT_THAT(r, SizeIs(1)) << m.ShortDebugString();
    EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(r[0].error().message(), ::testing::HasSubstr("before a successful"));
  }
  EXPECT_THAT(OfKind(h.TakeEvents(), v1::EVENT_KIND_ERROR), SizeIs(6));
  EXPECT_THAT(g.Connect(), SizeIs(1));  // still usable
}

TEST(EngineBadInputTest, MalformedMessages) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  std::vector<v1::HostToGuest> r = g.Send(v1::ControlMessage());
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  r = g.SendRaw(v1::GuestToHost());
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  r = g.Send("open_result { child_relid: 1 }");
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r[0].error().message(), ::testing::HasSubstr("host → guest"));
  v1::GuestToHost attach;
  attach.mutable_attach()->set_guest_name("again");
  r = g.SendRaw(attach);
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  // Unknown guest ids are the caller's error.
  Actions out;
  EXPECT_EQ(h.engine().HandleGuestMessage("guest-9", attach, h.now(), &out).code(),
            absl::StatusCode::kNotFound);
}

// --- Control batches ------------------------------------------------------------------------

TEST(EngineBatchTest, AttachedSaysTheHostAcceptsBatches) {
  EngineHarness h;
  v1::Attach attach;
  attach.set_guest_name("vm");
  attach.set_memory_path("/dev/shm/vm");
  attach.set_memory_size_bytes(256 * protocol::kPageSize);
  *attach.mutable_layout() = LayoutToProto(MemoryLayout{});
  Actions out;
  ASSERT_TRUE(h.engine().Attach(attach, h.now(), &out).ok());
  ASSERT_FALSE(out.empty());
  const auto* send = std::get_if<SendToGuest>(&out[0]);
  ASSERT_NE(send, nullptr);
  EXPECT_TRUE(send->message.attached().accepts_batches());
}

// A checked batch fed message by message (with the actions run in between, as MockHost does)
// answers exactly what the messages sent alone would, in order, bad members included.
TEST(EngineBatchTest, BatchIsHandledMessageByMessageInOrder) {
  auto run = [](bool batched) {
    EngineHarness h(WithOffers({"echo"}));
    ScriptedGuest g(h, "vm");
    std::vector<v1::ControlMessage> messages = {
        testing::InitiateContactMsg(protocol::kVersion5_3),
        testing::RequestOffersMsg(),
        v1::ControlMessage(),
        testing::GpadlCreateMsg(1, kGpadl, {10, 11, 12, 13}),
        testing::OpenChannelMsg(1, kGpadl, 2),
        testing::CloseChannelMsg(1),
        testing::GpadlTeardownMsg(1, kGpadl)};
    std::vector<v1::HostToGuest> answers;
    if (batched) {
      v1::ControlBatch batch;
      for (const v1::ControlMessage& m : messages) *batch.add_messages() = m;
      Actions out;
      absl::StatusOr<bool> ok = h.engine().CheckBatch(g.id(), batch, h.now(), &out);
      EXPECT_TRUE(ok.ok() && *ok) << ok.status();
      EXPECT_TRUE(out.empty());
      for (const v1::ControlMessage& m : batch.messages()) {
        Actions actions;
        EXPECT_TRUE(h.engine().HandleGuestControl(g.id(), m, h.now(), &actions).ok());
        h.Run(std::move(actions));
      }
      answers = g.Inbox();
    } else {
      for (const v1::ControlMessage& m : messages) {
        for (v1::HostToGuest& a : g.Send(m)) answers.push_back(std::move(a));
      }
    }
    EXPECT_EQ(h.action_violations(), 0);
    EXPECT_TRUE(h.mapped().empty());
    std::string log;
    for (const v1::HostToGuest& a : answers) log += a.ShortDebugString() + "\n";
    for (const v1::ProtocolEvent& e : h.TakeEvents()) log += e.ShortDebugString() + "\n";
    return std::make_pair(answers, log);
  };
  auto [answers, log] = run(true);
  ASSERT_THAT(answers, SizeIs(7));  // CloseChannel has no answer
  EXPECT_TRUE(answers[0].control().version_response().version_supported());
  EXPECT_EQ(answers[1].control().offer().child_relid(), 1u);
  EXPECT_TRUE(answers[2].control().has_all_offers_delivered());
  EXPECT_EQ(answers[3].error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(answers[4].control().gpadl_created().creation_status(), 0u);
  EXPECT_EQ(answers[5].control().open_result().status(), 0u);
  EXPECT_EQ(answers[6].control().gpadl_torndown().gpadl(), kGpadl);
  EXPECT_EQ(log, run(false).second);
}

TEST(EngineBatchTest, MalformedBatchesAreRefusedWhole) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  h.TakeEvents();
  Actions out;
  absl::StatusOr<bool> ok = h.engine().CheckBatch(g.id(), v1::ControlBatch(), h.now(), &out);
  ASSERT_TRUE(ok.ok());
  EXPECT_FALSE(*ok);
  h.Run(std::move(out));
  std::vector<v1::HostToGuest> r = g.Inbox();
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r[0].error().message(), ::testing::HasSubstr("empty control batch"));

  v1::ControlBatch too_long;
  for (int i = 0; i <= v1::CONTROL_BATCH_MAX_MESSAGES; ++i) {
    *too_long.add_messages() = testing::InitiateContactMsg(protocol::kVersion5_3);
  }
  out.clear();
  ok = h.engine().CheckBatch(g.id(), too_long, h.now(), &out);
  ASSERT_TRUE(ok.ok());
  EXPECT_FALSE(*ok);
  h.Run(std::move(out));
  r = g.Inbox();
  ASSERT_THAT(r, SizeIs(1));  // the refusal only: no member was handled
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r[0].error().message(),
              ::testing::HasSubstr("257 messages exceeds the limit of 256"));
  EXPECT_THAT(OfKind(h.TakeEvents(), v1::EVENT_KIND_ERROR), SizeIs(2));

  // A batch of exactly the limit is well-formed.
  too_long.mutable_messages()->RemoveLast();
  out.clear();
  ok = h.engine().CheckBatch(g.id(), too_long, h.now(), &out);
  EXPECT_TRUE(ok.ok() && *ok);
  EXPECT_TRUE(out.empty());

  // A batch handed to HandleGuestMessage is the runtime's mistake: refused, nothing emitted.
  v1::GuestToHost wrapped;
  *wrapped.mutable_batch()->add_messages() = testing::InitiateContactMsg(protocol::kVersion5_3);
  EXPECT_EQ(h.engine().HandleGuestMessage(g.id(), wrapped, h.now(), &out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(out.empty());
  // Unknown guests.
  EXPECT_EQ(h.engine().CheckBatch("guest-9", too_long, h.now(), &out).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(
      h.engine().HandleGuestControl("guest-9", testing::RequestOffersMsg(), h.now(), &out).code(),
      absl::StatusCode::kNotFound);
  EXPECT_TRUE(out.empty());
  EXPECT_THAT(g.Connect(), IsEmpty());  // still usable
}

TEST_F(EngineChannelTest, SlowPathSignals) {
  v1::GuestToHost s;
  s.mutable_signal()->set_child_relid(1);
  std::vector<v1::HostToGuest> r = g_.SendRaw(s);
  ASSERT_THAT(r, SizeIs(1));  // not open
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  g_.CreateGpadl(1, kGpadl, 10, 8);
  g_.Open(1, kGpadl, 4);
  EXPECT_THAT(g_.SendRaw(s), IsEmpty());
  ASSERT_THAT(h_.signals(), SizeIs(1));
  EXPECT_EQ(h_.signals()[0].relid, 1u);
  s.mutable_signal()->set_child_relid(3000);
  r = g_.SendRaw(s);
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kNotFound));
}

// --- Faults ---------------------------------------------------------------------------------

TEST_F(EngineChannelTest, DropDuplicateAndDelayFaults) {
  ASSERT_TRUE(h_.InjectFault("message { message_type: 'gpadl_created' action: ACTION_DROP }").ok());
  EXPECT_THAT(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10, 11, 12, 13})), IsEmpty());
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_FAULT_FIRED), SizeIs(1));
  // The GPADL was created all the same: only the answer was lost.
  EXPECT_NE(h_.engine().Gpadls(g_.id())->Find(kGpadl), nullptr);

  ASSERT_TRUE(
      h_.InjectFault("message { message_type: 'open_result' action: ACTION_DUPLICATE }").ok());
  EXPECT_THAT(g_.Send(testing::OpenChannelMsg(1, kGpadl, 2)), SizeIs(2));

  ASSERT_TRUE(h_.InjectFault(
                    "message { message_type: 'offer' action: ACTION_DELAY delay_ms: 250 count: 2 }")
                  .ok());
  ASSERT_TRUE(h_.Offer("vm", "device: 'echo'").ok());
  ASSERT_TRUE(h_.Offer("vm", "device: 'echo'").ok());
  ASSERT_TRUE(h_.Offer("vm", "device: 'echo'").ok());  // the third is not delayed
  std::vector<v1::HostToGuest> inbox = g_.Inbox();
  ASSERT_THAT(inbox, SizeIs(1));
  EXPECT_EQ(inbox[0].control().offer().child_relid(), 5u);
  ASSERT_TRUE(h_.engine().NextTimer().has_value());
  EXPECT_EQ(*h_.engine().NextTimer(), h_.now() + absl::Milliseconds(250));
  h_.Advance(absl::Milliseconds(249));
  EXPECT_THAT(g_.Inbox(), IsEmpty());
  h_.Advance(absl::Milliseconds(1));
  inbox = g_.Inbox();
  ASSERT_THAT(inbox, SizeIs(2));
  EXPECT_EQ(inbox[0].control().offer().child_relid(), 3u);
  EXPECT_EQ(inbox[1].control().offer().child_relid(), 4u);
  EXPECT_FALSE(h_.engine().NextTimer().has_value());
}

TEST_F(EngineChannelTest, RefuseNextRequests) {
  ASSERT_TRUE(h_.InjectFault("refuse { request: REQUEST_GPADL_CREATE status: 0xC000009A }").ok());
  EXPECT_EQ(GpadlStatus(g_.Send(testing::GpadlCreateMsg(1, kGpadl, {10, 11, 12, 13}))),
            0xC000009Au);
  g_.CreateGpadl(1, kGpadl, 10, 4);  // only the next one
  ASSERT_TRUE(h_.InjectFault("refuse { request: REQUEST_OPEN_CHANNEL }").ok());
  EXPECT_EQ(OpenStatus(g_.Send(testing::OpenChannelMsg(1, kGpadl, 2))),
            protocol::kStatusUnsuccessful);
  g_.Open(1, kGpadl, 2);
  ASSERT_TRUE(h_.InjectFault("refuse { request: REQUEST_MODIFY_CHANNEL status: 5 }").ok());
  std::vector<v1::HostToGuest> r = g_.Send(testing::ModifyChannelMsg(1, 1));
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].control().modify_channel_response().status(), 5u);
  EXPECT_THAT(OfKind(h_.TakeEvents(), v1::EVENT_KIND_FAULT_FIRED), SizeIs(3));
}

TEST_F(EngineChannelTest, DisconnectFaultAndBadFaults) {
  ASSERT_TRUE(h_.InjectFault("disconnect: true").ok());
  ASSERT_THAT(h_.disconnects(), SizeIs(1));
  EXPECT_EQ(h_.disconnects()[0].guest_id, g_.id());
  EXPECT_EQ(h_.InjectFault("message { message_type: 'open_channel' action: ACTION_DROP }").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.InjectFault("message { message_type: 'offer' }").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.InjectFault("refuse { }").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.InjectFault("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h_.InjectFault("guest: 'zzz' disconnect: true").code(), absl::StatusCode::kNotFound);
}

// --- Several guests, detach, events, determinism --------------------------------------------

TEST(EngineGuestsTest, GuestsAreIndependent) {
  EngineHarness h(WithOffers({"echo"}));
  ScriptedGuest a(h, "a");
  ScriptedGuest b(h, "b");
  ASSERT_THAT(a.Connect(), SizeIs(1));
  ASSERT_THAT(b.Connect(), SizeIs(1));
  a.CreateGpadl(1, kGpadl, 10, 8);
  b.CreateGpadl(1, kGpadl, 10, 8);  // same handle and PFNs: a different guest's memory
  a.Open(1, kGpadl, 4);
  b.Open(1, kGpadl, 4);
  ASSERT_TRUE(h.Rescind("a", 1).ok());
  EXPECT_THAT(a.Inbox(), SizeIs(1));
  EXPECT_THAT(b.Inbox(), IsEmpty());
  EXPECT_EQ(Channel(h, "b", 1).state(), v1::CHANNEL_STATE_OPEN);

  Actions out;
  ASSERT_TRUE(h.engine().Detach(b.id(), "stream closed", h.now(), &out).ok());
  h.Run(out);
  EXPECT_EQ(h.mapped().size(), 0u);  // a's was unmapped by the rescind, b's by the detach
  EXPECT_EQ(h.engine().ListGuests().guests_size(), 1);
  EXPECT_EQ(h.engine().ListChannels("b").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.engine().Detach(b.id(), "again", h.now(), &out).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.action_violations(), 0);
}

TEST(EngineEventsTest, EveryControlMessageEachWayIsAnEvent) {
  EngineHarness h(WithOffers({"echo"}));
  ScriptedGuest g(h, "vm");
  h.TakeEvents();
  g.Connect();
  std::vector<v1::ProtocolEvent> events = h.TakeEvents();
  ASSERT_THAT(events, SizeIs(5));
  EXPECT_EQ(events[0].kind(), v1::EVENT_KIND_GUEST_MESSAGE);
  EXPECT_TRUE(events[0].message().has_initiate_contact());
  EXPECT_EQ(events[1].kind(), v1::EVENT_KIND_HOST_MESSAGE);
  EXPECT_TRUE(events[1].message().has_version_response());
  EXPECT_EQ(events[2].kind(), v1::EVENT_KIND_GUEST_MESSAGE);
  EXPECT_EQ(events[3].kind(), v1::EVENT_KIND_HOST_MESSAGE);
  EXPECT_EQ(events[3].child_relid(), 1u);
  EXPECT_EQ(events[4].kind(), v1::EVENT_KIND_HOST_MESSAGE);
  EXPECT_TRUE(events[4].message().has_all_offers_delivered());
  for (const auto& e : events) {
    EXPECT_EQ(e.guest_id(), g.id());
    EXPECT_EQ(e.unix_nanos(), absl::ToUnixNanos(h.now()));
  }
}

TEST(EngineEventsTest, MessageEventsCanBeSwitchedOff) {
  EngineHarness h(WithOffers({"echo"}));
  ScriptedGuest g(h, "vm");
  h.TakeEvents();
  h.engine().SetMessageEvents(false);
  g.Connect();
  ASSERT_THAT(g.Send(v1::ControlMessage()), SizeIs(1));  // a refusal is still an ERROR event
  std::vector<v1::ProtocolEvent> events = h.TakeEvents();
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_EQ(events[0].kind(), v1::EVENT_KIND_ERROR);
  h.engine().SetMessageEvents(true);
  ASSERT_THAT(g.Send(testing::InitiateContactMsg(protocol::kVersion5_3)),
              SizeIs(1));  // refused: connected
  EXPECT_THAT(OfKind(h.TakeEvents(), v1::EVENT_KIND_GUEST_MESSAGE), SizeIs(1));
}

TEST(EngineDeterminismTest, SameInputsSameOutputs) {
  auto run = [] {
    EngineHarness h(WithOffers({"echo", "sink"}));
    ScriptedGuest g(h, "vm");
    g.Connect();
    h.Offer("vm", "device: 'raw' sub_channel_count: 3").IgnoreError();
    g.Inbox();
    g.CreateGpadl(2, kGpadl, 50, 6);
    g.Open(2, kGpadl, 3);
    h.Rescind("vm", 3).IgnoreError();
    g.Send(testing::UnloadMsg());
    g.Connect(protocol::kVersion4_1);
    std::string log;
    for (const auto& e : h.TakeEvents()) log += e.ShortDebugString() + "\n";
    return log;
  };
  const std::string first = run();
  EXPECT_EQ(first, run());
  EXPECT_GT(first.size(), 1000u);
}

}  // namespace
}  // namespace vbus::mock
