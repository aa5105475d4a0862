// HostEngine driven by a scripted raw guest (mock/testing/engine_harness.h): attach, negotiation,
// offers, bad input, control batches, several guests, events and determinism, with the exact
// host replies. Channels (GPADLs, open/close, rescind, modify, unload, faults) are in
// engine_channel_test.cc.
#include "mock/host/engine.h"

#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/host/engine_test_util.h"
#include "mock/testing/engine_harness.h"
#include "mock/testing/proto_matchers.h"

namespace vbus::mock {
namespace {

using testing::Channel;
using ::testing::ElementsAre;
using testing::EngineChannelTest;
using testing::EngineHarness;
using testing::EqualsProto;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::kGpadl;
using testing::OfKind;
using testing::ScriptedGuest;
using ::testing::SizeIs;
using testing::WithOffers;

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

// Below 5.0 InitiateContact names the guest's interrupt page, whose send half the guest sets
// for every signal; on the mock platform that must be the host event page (docs/protocol.md
// §12). Naming another (or none) refuses the version, with an ERROR event saying why.
TEST(EngineNegotiationTest, BelowFiveTheInterruptPageMustBeTheHostEventPage) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  v1::ControlMessage contact = testing::InitiateContactMsg(protocol::kVersion4_1);
  contact.mutable_initiate_contact()->set_interrupt_page(0);
  std::vector<v1::HostToGuest> r = g.Send(contact);
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_FALSE(r[0].control().version_response().version_supported());
  bool reported = false;
  for (const v1::ProtocolEvent& e : h.TakeEvents()) {
    reported |= e.kind() == v1::EVENT_KIND_ERROR &&
                absl::StrContains(e.detail(), "names interrupt page 0x0");
  }
  EXPECT_TRUE(reported);
  r = g.Send(testing::InitiateContactMsg(protocol::kVersion4_1));  // the right page
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_TRUE(r[0].control().version_response().version_supported());
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

// The wire fields vbus carries without interpreting: the spec's values reach the offer as they
// are, and one past a wire width is refused.
TEST(EngineOfferTest, UninterpretedWireFieldsAreOffered) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  g.Connect();
  ASSERT_TRUE(h.Offer("vm", R"pb(
                 device: "raw"
                 interrupt_latency: 0x1122334455667788
                 reserved: 9
                 mmio_megabytes_optional: 0xFFFF
                 monitor_allocated_reserved_bits: 0x7F
                 dedicated_interrupt_reserved_bits: 0x7FFF
               )pb")
                  .ok());
  std::vector<v1::HostToGuest> inbox = g.Inbox();
  ASSERT_THAT(inbox, SizeIs(1));
  const v1::Offer& o = inbox[0].control().offer();
  EXPECT_EQ(o.interrupt_latency(), 0x1122334455667788u);
  EXPECT_EQ(o.reserved(), 9u);
  EXPECT_EQ(o.mmio_megabytes_optional(), 0xFFFFu);
  EXPECT_EQ(o.monitor_allocated_reserved_bits(), 0x7Fu);
  EXPECT_EQ(o.dedicated_interrupt_reserved_bits(), 0x7FFFu);
  EXPECT_THAT(h.Offer("vm", "device: 'raw' mmio_megabytes_optional: 65536").status().message(),
              HasSubstr("mmio_megabytes_optional 65536 does not fit a u16"));
  EXPECT_THAT(
      h.Offer("vm", "device: 'raw' monitor_allocated_reserved_bits: 128").status().message(),
      HasSubstr("do not fit 7 bits"));
  EXPECT_THAT(
      h.Offer("vm", "device: 'raw' dedicated_interrupt_reserved_bits: 32768").status().message(),
      HasSubstr("do not fit 15 bits"));
}

// hv_sock: the mock host has no services, so it refuses every TlConnectRequest with a
// TlConnectResult echoing the ids (from 4.1); before 4.0 the message does not exist.
TEST(EngineOfferTest, TlConnectRequestIsRefused) {
  EngineHarness h;
  ScriptedGuest g(h, "vm");
  g.Connect();
  const std::string ids = R"pb(
    guest_endpoint_id { value: "00000000-1111-2222-3333-444444444444" }
    host_service_id { value: "57164f39-9115-4e78-ab55-382f3bd5422d" })pb";
  EXPECT_THAT(
      g.Send("tl_connect_request {" + ids + "}"),
      ElementsAre(EqualsProto("control { tl_connect_result {" + ids + " status: 0xC0000001 } }")));
  ScriptedGuest old(h, "old");
  old.Connect(protocol::kVersion3_0);
  std::vector<v1::HostToGuest> r = old.Send("tl_connect_request {" + ids + "}");
  ASSERT_THAT(r, SizeIs(1));
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r[0].error().message(), HasSubstr("tl_connect_request needs version 4.0"));
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
