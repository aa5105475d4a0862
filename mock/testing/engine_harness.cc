#include "mock/testing/engine_harness.h"

#include <variant>

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "mock/guest_memory.h"

namespace vbus::mock::testing {

EngineHarness::EngineHarness(EngineOptions options) {
  absl::StatusOr<std::unique_ptr<HostEngine>> engine = HostEngine::Create(std::move(options));
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (engine.ok()) {
    engine_ = std::move(*engine);
  } else {
    engine_ = std::move(*HostEngine::Create({}));
  }
}

void EngineHarness::Advance(absl::Duration d) {
  now_ += d;
  Actions out;
  engine_->AdvanceTime(now_, &out);
  Run(std::move(out));
}

void EngineHarness::Run(Actions actions) {
  for (size_t i = 0; i < actions.size(); ++i) {
    Action& a = actions[i];
    if (auto* send = std::get_if<SendToGuest>(&a)) {
      inbox_[send->guest_id].push_back(std::move(send->message));
    } else if (auto* event = std::get_if<PublishEvent>(&a)) {
      events_.push_back(std::move(event->event));
    } else if (auto* map = std::get_if<MapRings>(&a)) {
      map_requests_.push_back(*map);
      const auto key = std::make_pair(map->guest_id, map->relid);
      absl::Status result = std::move(next_map_result_);
      next_map_result_ = absl::OkStatus();
      if (result.ok() && !mapped_.insert(key).second) ++action_violations_;
      Actions more;
      absl::Status s = engine_->CompleteOpen(map->guest_id, map->relid, result, now_, &more);
      EXPECT_TRUE(s.ok()) << s;
      // Run the completion's actions right after this MapRings, before later actions.
      actions.insert(actions.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                     std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
    } else if (auto* unmap = std::get_if<UnmapRings>(&a)) {
      if (mapped_.erase({unmap->guest_id, unmap->relid}) == 0) ++action_violations_;
    } else if (auto* signal = std::get_if<SignalChannel>(&a)) {
      signals_.push_back(*signal);
    } else if (auto* retarget = std::get_if<RetargetChannel>(&a)) {
      // Only a mapped channel has a target VP to change.
      if (!mapped_.contains({retarget->guest_id, retarget->relid})) ++action_violations_;
    } else if (auto* disconnect = std::get_if<DisconnectGuest>(&a)) {
      disconnects_.push_back(*disconnect);
    }
  }
}

absl::StatusOr<v1::OfferResponse> EngineHarness::Offer(const std::string& guest,
                                                       const std::string& text_spec) {
  v1::OfferRequest request;
  request.set_guest(guest);
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text_spec, request.mutable_spec()))
      << text_spec;
  Actions out;
  absl::StatusOr<v1::OfferResponse> r = engine_->Offer(request, now_, &out);
  Run(std::move(out));
  return r;
}

absl::StatusOr<v1::RescindResponse> EngineHarness::Rescind(const std::string& guest,
                                                           uint32_t relid) {
  v1::RescindRequest request;
  request.set_guest(guest);
  request.set_child_relid(relid);
  Actions out;
  absl::StatusOr<v1::RescindResponse> r = engine_->Rescind(request, now_, &out);
  Run(std::move(out));
  return r;
}

absl::Status EngineHarness::InjectFault(const std::string& text_request) {
  v1::InjectFaultRequest request;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text_request, &request))
      << text_request;
  Actions out;
  absl::Status s = engine_->InjectFault(request, now_, &out);
  Run(std::move(out));
  return s;
}

std::vector<v1::HostToGuest> EngineHarness::TakeInbox(const std::string& guest_id) {
  std::vector<v1::HostToGuest> messages = std::move(inbox_[guest_id]);
  inbox_[guest_id].clear();
  return messages;
}

std::vector<v1::ProtocolEvent> EngineHarness::TakeEvents() {
  std::vector<v1::ProtocolEvent> events = std::move(events_);
  events_.clear();
  return events;
}

// --- ScriptedGuest --------------------------------------------------------------------------

ScriptedGuest::ScriptedGuest(EngineHarness& harness, const std::string& name, uint64_t pages)
    : harness_(harness) {
  v1::Attach attach;
  attach.set_guest_name(name);
  attach.set_memory_path("/dev/shm/scripted-" + name);
  attach.set_memory_size_bytes(pages * protocol::kPageSize);
  MemoryLayout layout;
  layout.vp_count = kHarnessVps;
  *attach.mutable_layout() = LayoutToProto(layout);
  Actions out;
  absl::StatusOr<std::string> id = harness_.engine().Attach(attach, harness_.now(), &out);
  EXPECT_TRUE(id.ok()) << id.status();
  if (id.ok()) id_ = *id;
  harness_.Run(std::move(out));
  std::vector<v1::HostToGuest> inbox = harness_.TakeInbox(id_);
  EXPECT_EQ(inbox.size(), 1u);
  if (!inbox.empty()) {
    EXPECT_EQ(inbox[0].attached().guest_id(), id_);
  }
}

std::vector<v1::HostToGuest> ScriptedGuest::Send(const v1::ControlMessage& message) {
  v1::GuestToHost m;
  *m.mutable_control() = message;
  return SendRaw(m);
}

std::vector<v1::HostToGuest> ScriptedGuest::Send(const std::string& text_control_message) {
  v1::ControlMessage m;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text_control_message, &m))
      << text_control_message;
  return Send(m);
}

std::vector<v1::HostToGuest> ScriptedGuest::SendRaw(const v1::GuestToHost& message) {
  Actions out;
  absl::Status s = harness_.engine().HandleGuestMessage(id_, message, harness_.now(), &out);
  EXPECT_TRUE(s.ok()) << s;
  harness_.Run(std::move(out));
  return harness_.TakeInbox(id_);
}

std::vector<v1::HostToGuest> ScriptedGuest::Inbox() { return harness_.TakeInbox(id_); }

std::vector<v1::Offer> ScriptedGuest::Connect(uint32_t version) {
  std::vector<v1::HostToGuest> r = Send(InitiateContactMsg(version));
  EXPECT_EQ(r.size(), 1u);
  if (r.size() != 1 || !r[0].control().version_response().version_supported()) {
    ADD_FAILURE() << "version " << protocol::VersionName(version) << " refused";
    return {};
  }
  std::vector<v1::Offer> offers;
  r = Send(RequestOffersMsg());
  EXPECT_FALSE(r.empty());
  for (size_t i = 0; i < r.size(); ++i) {
    if (i + 1 == r.size()) {
      EXPECT_TRUE(r[i].control().has_all_offers_delivered()) << r[i].ShortDebugString();
    } else {
      EXPECT_TRUE(r[i].control().has_offer()) << r[i].ShortDebugString();
      offers.push_back(r[i].control().offer());
    }
  }
  return offers;
}

void ScriptedGuest::CreateGpadl(uint32_t relid, uint32_t handle, uint64_t first_pfn,
                                uint32_t pages) {
  std::vector<uint64_t> pfns;
  for (uint32_t i = 0; i < pages; ++i) pfns.push_back(first_pfn + i);
  std::vector<v1::HostToGuest> r = Send(GpadlCreateMsg(relid, handle, pfns));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].control().gpadl_created().creation_status(), 0u) << r[0].ShortDebugString();
}

void ScriptedGuest::Open(uint32_t relid, uint32_t handle, uint32_t offset) {
  std::vector<v1::HostToGuest> r = Send(OpenChannelMsg(relid, handle, offset));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].control().open_result().status(), 0u) << r[0].ShortDebugString();
}

// --- Builders -------------------------------------------------------------------------------

v1::ControlMessage InitiateContactMsg(uint32_t version) {
  v1::ControlMessage m;
  m.mutable_initiate_contact()->set_version_requested(version);
  if (protocol::UsesReturnedConnectionId(version)) {
    m.mutable_initiate_contact()->set_message_sint(2);
  } else {  // the interrupt page: the default layout's host event page
    m.mutable_initiate_contact()->set_interrupt_page(MemoryLayout{}.host_event_page_pfn *
                                                     protocol::kPageSize);
  }
  return m;
}

v1::ControlMessage RequestOffersMsg() {
  v1::ControlMessage m;
  m.mutable_request_offers();
  return m;
}

v1::ControlMessage GpadlCreateMsg(uint32_t relid, uint32_t handle,
                                  const std::vector<uint64_t>& pfns) {
  v1::ControlMessage m;
  v1::GpadlCreate* g = m.mutable_gpadl_create();
  g->set_child_relid(relid);
  g->set_gpadl(handle);
  g->set_byte_count(static_cast<uint32_t>(pfns.size() * protocol::kPageSize));
  g->set_byte_offset(0);
  for (uint64_t pfn : pfns) g->add_pfns(pfn);
  return m;
}

v1::ControlMessage GpadlTeardownMsg(uint32_t relid, uint32_t handle) {
  v1::ControlMessage m;
  m.mutable_gpadl_teardown()->set_child_relid(relid);
  m.mutable_gpadl_teardown()->set_gpadl(handle);
  return m;
}

v1::ControlMessage OpenChannelMsg(uint32_t relid, uint32_t handle, uint32_t offset) {
  v1::ControlMessage m;
  v1::OpenChannel* o = m.mutable_open_channel();
  o->set_child_relid(relid);
  o->set_open_id(relid);
  o->set_ring_buffer_gpadl(handle);
  o->set_downstream_ring_page_offset(offset);
  return m;
}

v1::ControlMessage CloseChannelMsg(uint32_t relid) {
  v1::ControlMessage m;
  m.mutable_close_channel()->set_child_relid(relid);
  return m;
}

v1::ControlMessage RelidReleasedMsg(uint32_t relid) {
  v1::ControlMessage m;
  m.mutable_relid_released()->set_child_relid(relid);
  return m;
}

v1::ControlMessage ModifyChannelMsg(uint32_t relid, uint32_t target_vp) {
  v1::ControlMessage m;
  m.mutable_modify_channel()->set_child_relid(relid);
  m.mutable_modify_channel()->set_target_vp(target_vp);
  return m;
}

v1::ControlMessage UnloadMsg() {
  v1::ControlMessage m;
  m.mutable_unload();
  return m;
}

}  // namespace vbus::mock::testing
