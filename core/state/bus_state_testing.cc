#include "core/state/bus_state_testing.h"

#include <variant>

#include "core/data/guid_proto.h"
#include "gtest/gtest.h"

namespace vbus::testing {

v1::ControlMessage VersionResponseMsg(bool supported, uint32_t connection_id) {
  v1::ControlMessage m;
  m.mutable_version_response()->set_version_supported(supported);
  m.mutable_version_response()->set_message_connection_id(connection_id);
  return m;
}

v1::ControlMessage OfferMsg(uint32_t relid, const Guid& type, const Guid& instance,
                            uint32_t sub_channel_index) {
  v1::ControlMessage m;
  v1::Offer* o = m.mutable_offer();
  o->set_child_relid(relid);
  *o->mutable_interface_type() = GuidToProto(type);
  *o->mutable_interface_instance() = GuidToProto(instance);
  o->set_sub_channel_index(sub_channel_index);
  o->set_connection_id(0x10000 + relid);
  return m;
}

v1::ControlMessage AllOffersDeliveredMsg() {
  v1::ControlMessage m;
  m.mutable_all_offers_delivered();
  return m;
}

v1::ControlMessage RescindMsg(uint32_t relid) {
  v1::ControlMessage m;
  m.mutable_rescind_offer()->set_child_relid(relid);
  return m;
}

v1::ControlMessage GpadlCreatedMsg(uint32_t relid, uint32_t gpadl, uint32_t status) {
  v1::ControlMessage m;
  m.mutable_gpadl_created()->set_child_relid(relid);
  m.mutable_gpadl_created()->set_gpadl(gpadl);
  m.mutable_gpadl_created()->set_creation_status(status);
  return m;
}

v1::ControlMessage GpadlTorndownMsg(uint32_t gpadl) {
  v1::ControlMessage m;
  m.mutable_gpadl_torndown()->set_gpadl(gpadl);
  return m;
}

v1::ControlMessage OpenResultMsg(uint32_t relid, uint32_t open_id, uint32_t status) {
  v1::ControlMessage m;
  m.mutable_open_result()->set_child_relid(relid);
  m.mutable_open_result()->set_open_id(open_id);
  m.mutable_open_result()->set_status(status);
  return m;
}

v1::ControlMessage ModifyResponseMsg(uint32_t relid, uint32_t status) {
  v1::ControlMessage m;
  m.mutable_modify_channel_response()->set_child_relid(relid);
  m.mutable_modify_channel_response()->set_status(status);
  return m;
}

v1::ControlMessage UnloadResponseMsg() {
  v1::ControlMessage m;
  m.mutable_unload_response();
  return m;
}

std::vector<uint64_t> Pfns(uint64_t first, size_t pages) {
  std::vector<uint64_t> pfns(pages);
  for (size_t i = 0; i < pages; ++i) pfns[i] = first + i;
  return pfns;
}

OpenParams SmallRings() {
  OpenParams p;
  p.ring_pfns = Pfns(100, 4);
  p.outbound_ring_pages = 2;
  return p;
}

BusHarness::BusHarness(BusConfig config) : bus_(config) {}

std::vector<std::string> BusHarness::Finish() {
  // Every post succeeds unless a test says otherwise: requests that complete when posted do.
  for (size_t i = 0; auto_posted_ && i < last_.size(); ++i) {
    if (const auto* s = std::get_if<SendMessage>(&last_[i]); s != nullptr && s->completes.valid()) {
      bus_.OnPosted(s->completes, &last_);
    }
  }
  if (check_invariants_) {
    absl::Status invariants = bus_.CheckInvariants();
    EXPECT_TRUE(invariants.ok()) << invariants;
  }
  return DescribeActions(last_);
}

std::vector<std::string> BusHarness::Host(const v1::ControlMessage& message) {
  last_.clear();
  bus_.OnHostMessage(message, &last_);
  return Finish();
}

std::vector<std::string> BusHarness::Call(const std::function<RequestId(BusState&, Actions*)>& call,
                                          RequestId* id) {
  last_.clear();
  RequestId r = call(bus_, &last_);
  if (id != nullptr) *id = r;
  return Finish();
}

std::vector<std::string> BusHarness::Do(const std::function<void(BusState&, Actions*)>& input) {
  last_.clear();
  input(bus_, &last_);
  return Finish();
}

RequestId BusHarness::Connected(uint32_t version, uint32_t connection_id) {
  RequestId id;
  Call([](BusState& b, Actions* out) { return b.Connect(kDeadline, out); }, &id);
  while (bus_.phase() == BusPhase::kNegotiating) {
    const auto& sent = std::get<SendMessage>(last_.front()).message;
    const bool accept = sent.initiate_contact().version_requested() == version;
    Host(VersionResponseMsg(accept, connection_id));
    if (!accept && bus_.phase() != BusPhase::kNegotiating) break;
  }
  EXPECT_EQ(bus_.version(), version);
  Host(AllOffersDeliveredMsg());
  EXPECT_TRUE(CompletionOf(id).status.ok());
  return id;
}

OfferId BusHarness::Offered(uint32_t relid, const Guid& type, const Guid& instance,
                            uint32_t sub_channel_index) {
  Host(OfferMsg(relid, type, instance, sub_channel_index));
  for (const Action& a : last_) {
    if (const auto* added = std::get_if<OfferAdded>(&a)) return added->offer.id;
  }
  ADD_FAILURE() << "offer of relid " << relid << " was not accepted";
  return OfferId();
}

uint32_t BusHarness::Opened(OfferId offer) {
  RequestId open;
  Call([&](BusState& b, Actions* out) { return b.Open(offer, SmallRings(), kDeadline, out); },
       &open);
  const uint32_t gpadl = SentGpadl();
  const uint32_t relid = bus_.GetChannel(offer)->offer.relid;
  Host(GpadlCreatedMsg(relid, gpadl));
  Host(OpenResultMsg(relid, SentOpenId()));
  EXPECT_TRUE(CompletionOf(open).status.ok());
  return gpadl;
}

Complete BusHarness::CompletionOf(RequestId id) const {
  for (const Action& a : last_) {
    if (const auto* c = std::get_if<Complete>(&a); c != nullptr && c->request == id) return *c;
  }
  ADD_FAILURE() << "no completion of request " << id;
  return Complete{id, RequestKind::kConnect, OfferId(), absl::UnknownError("missing")};
}

uint32_t BusHarness::SentOpenId() const {
  for (const Action& a : last_) {
    if (const auto* s = std::get_if<SendMessage>(&a); s != nullptr && s->message.has_open_channel())
      return s->message.open_channel().open_id();
  }
  return 0;
}

uint32_t BusHarness::SentGpadl() const {
  uint32_t handle = 0;
  for (const Action& a : last_) {
    if (const auto* s = std::get_if<SendMessage>(&a); s != nullptr && s->message.has_gpadl_create())
      handle = s->message.gpadl_create().gpadl();
  }
  return handle;
}

}  // namespace vbus::testing
