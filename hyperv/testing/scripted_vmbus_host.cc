#include "hyperv/testing/scripted_vmbus_host.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/data/guid_proto.h"
#include "google/protobuf/descriptor.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv::testing {

namespace {

void Complain(absl::string_view what, const absl::Status& status) {
  std::fprintf(stderr, "scripted_vmbus_host: %.*s: %s\n", static_cast<int>(what.size()),
               what.data(), status.ToString().c_str());
}

std::string KindOf(const v1::ControlMessage& message) {
  const google::protobuf::FieldDescriptor* field =
      message.GetDescriptor()->FindFieldByNumber(message.message_case());
  return field == nullptr ? std::string() : field->name();
}

}  // namespace

ScriptedVmbusHost::ScriptedVmbusHost(FakeHypervisor& hv, Options options)
    : hv_(hv), options_(options), guest_vp_(options.message_vp) {
  auto on_post = [this](const PostedMessage& posted) { OnPost(posted); };
  hv_.AddMessageConnection(kVmbusMessageConnectionId, on_post);
  hv_.AddMessageConnection(kVmbusMessageConnectionIdV5, on_post);
  hv_.AddMessageConnection(options_.message_connection_id, on_post);
}

ScriptedVmbusHost::~ScriptedVmbusHost() {
  hv_.RemoveMessageConnection(kVmbusMessageConnectionId);
  hv_.RemoveMessageConnection(kVmbusMessageConnectionIdV5);
  hv_.RemoveMessageConnection(options_.message_connection_id);
  MutexLock lock(&mu_);
  for (const auto& [relid, offer] : offers_) hv_.RemoveEventConnection(offer.connection_id);
}

void ScriptedVmbusHost::AddOffer(const OfferSpec& offer) {
  {
    MutexLock lock(&mu_);
    offers_[offer.relid] = offer;
  }
  const uint32_t relid = offer.relid;
  hv_.AddEventConnection(offer.connection_id, 1,
                         [this, relid](const SignalledEvent&) { OnSignal(relid); });
}

void ScriptedVmbusHost::set_echo(bool echo) {
  MutexLock lock(&mu_);
  echo_ = echo;
}

// ---------------------------------------------------------------------------------------------
// Host → guest
// ---------------------------------------------------------------------------------------------

absl::Status ScriptedVmbusHost::Queue(uint32_t vp, const std::vector<WireMessage>& parts) {
  for (const WireMessage& part : parts) {
    absl::Status s = hv_.QueueMessage(vp, kVmbusMessageSint, kVmbusMessageType, part);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ScriptedVmbusHost::Send(const v1::ControlMessage& message) {
  absl::StatusOr<std::vector<WireMessage>> parts = EncodeMessage(message);
  if (!parts.ok()) return parts.status();
  uint32_t vp;
  {
    MutexLock lock(&mu_);
    vp = guest_vp_;
  }
  return Queue(vp, *parts);
}

absl::Status ScriptedVmbusHost::SendRaw(uint32_t message_type, absl::Span<const uint8_t> payload) {
  uint32_t vp;
  {
    MutexLock lock(&mu_);
    vp = guest_vp_;
  }
  return hv_.QueueMessage(vp, kVmbusMessageSint, message_type, payload);
}

// ---------------------------------------------------------------------------------------------
// Guest → host
// ---------------------------------------------------------------------------------------------

void ScriptedVmbusHost::OnPost(const PostedMessage& posted) {
  std::vector<WireMessage> replies;
  uint32_t vp;
  {
    MutexLock lock(&mu_);
    changed_.SignalAll();
    if (posted.message_type != kVmbusMessageType) {
      ++decode_errors_;
      return;
    }
    absl::StatusOr<std::optional<v1::ControlMessage>> message = decoder_.Decode(posted.payload);
    if (!message.ok()) {
      ++decode_errors_;
      Complain("a guest message does not decode", message.status());
      return;
    }
    if (!message->has_value()) return;  // a GPADL part: more to come
    received_.push_back(**message);
    received_on_.push_back(posted.connection_id);
    if (!options_.answer) return;
    for (const v1::ControlMessage& answer : Answer(**message)) {
      absl::StatusOr<std::vector<WireMessage>> parts = EncodeMessage(answer);
      if (!parts.ok()) {
        Complain("an answer does not encode", parts.status());
        continue;
      }
      replies.insert(replies.end(), parts->begin(), parts->end());
    }
    vp = guest_vp_;
  }
  // Outside the lock: the fake may run the guest's interrupt handler meanwhile. Posts are
  // serialised by the guest, so replies still reach it in order.
  if (absl::Status s = Queue(vp, replies); !s.ok()) Complain("queueing a reply", s);
}

std::vector<v1::ControlMessage> ScriptedVmbusHost::Answer(const v1::ControlMessage& message) {
  std::vector<v1::ControlMessage> out;
  v1::ControlMessage r;
  switch (message.message_case()) {
    case v1::ControlMessage::kInitiateContact: {
      const v1::InitiateContact& c = message.initiate_contact();
      if (c.target_vcpu() < hv_.vp_count()) guest_vp_ = c.target_vcpu();
      const uint32_t v = c.version_requested();
      const bool supported = v <= options_.max_version && v >= protocol::kOldestVersion;
      r.mutable_version_response()->set_version_supported(supported);
      if (supported) {
        version_ = v;
        if (protocol::UsesReturnedConnectionId(v)) {
          r.mutable_version_response()->set_message_connection_id(options_.message_connection_id);
        }
      }
      out.push_back(r);
      break;
    }
    case v1::ControlMessage::kRequestOffers:
      for (const auto& [relid, offer] : offers_) out.push_back(OfferMessage(offer));
      r.mutable_all_offers_delivered();
      out.push_back(r);
      break;
    case v1::ControlMessage::kGpadlCreate: {
      const v1::GpadlCreate& g = message.gpadl_create();
      gpadls_[g.gpadl()] = std::vector<uint64_t>(g.pfns().begin(), g.pfns().end());
      r.mutable_gpadl_created()->set_child_relid(g.child_relid());
      r.mutable_gpadl_created()->set_gpadl(g.gpadl());
      out.push_back(r);
      break;
    }
    case v1::ControlMessage::kGpadlTeardown:
      gpadls_.erase(message.gpadl_teardown().gpadl());
      r.mutable_gpadl_torndown()->set_gpadl(message.gpadl_teardown().gpadl());
      out.push_back(r);
      break;
    case v1::ControlMessage::kOpenChannel: {
      const v1::OpenChannel& o = message.open_channel();
      r.mutable_open_result()->set_child_relid(o.child_relid());
      r.mutable_open_result()->set_open_id(o.open_id());
      r.mutable_open_result()->set_status(OpenRings(o));
      out.push_back(r);
      break;
    }
    case v1::ControlMessage::kCloseChannel:
      open_.erase(message.close_channel().child_relid());
      break;
    case v1::ControlMessage::kModifyChannel: {
      const v1::ModifyChannel& m = message.modify_channel();
      if (auto it = open_.find(m.child_relid()); it != open_.end()) {
        it->second.target_vp = m.target_vp();
      }
      if (protocol::HasModifyChannelResponse(version_)) {
        r.mutable_modify_channel_response()->set_child_relid(m.child_relid());
        out.push_back(r);
      }
      break;
    }
    case v1::ControlMessage::kUnload:
      open_.clear();
      gpadls_.clear();
      r.mutable_unload_response();
      out.push_back(r);
      break;
    default:
      break;  // RelidReleased and the rest need no answer
  }
  return out;
}

uint32_t ScriptedVmbusHost::OpenRings(const v1::OpenChannel& open) {
  auto g = gpadls_.find(open.ring_buffer_gpadl());
  if (g == gpadls_.end()) return protocol::kStatusUnsuccessful;
  const std::vector<uint64_t>& pfns = g->second;
  const size_t out_pages = open.downstream_ring_page_offset();
  if (out_pages == 0 || out_pages >= pfns.size()) return protocol::kStatusUnsuccessful;
  for (size_t i = 1; i < pfns.size(); ++i) {
    if (pfns[i] != pfns[0] + i) return protocol::kStatusUnsuccessful;  // see the header
  }
  absl::StatusOr<absl::Span<uint8_t>> view =
      hv_.HostView(pfns[0] * protocol::kPageSize, pfns.size() * protocol::kPageSize);
  if (!view.ok()) return protocol::kStatusUnsuccessful;
  const size_t out_bytes = out_pages * protocol::kPageSize;
  absl::StatusOr<IncomingRing> from = IncomingRing::Attach(view->subspan(0, out_bytes));
  absl::StatusOr<OutgoingRing> to = OutgoingRing::Attach(view->subspan(out_bytes));
  if (!from.ok() || !to.ok()) return protocol::kStatusUnsuccessful;
  Channel& ch = open_[open.child_relid()];
  ch = Channel{};
  ch.scratch.resize(from->data_size());
  from->SetScratch(absl::MakeSpan(ch.scratch));
  ch.from_guest = *std::move(from);
  ch.to_guest = *std::move(to);
  ch.target_vp = open.target_vp();
  return 0;
}

v1::ControlMessage ScriptedVmbusHost::OfferMessage(const OfferSpec& offer) const {
  v1::ControlMessage m;
  v1::Offer* o = m.mutable_offer();
  *o->mutable_interface_type() = GuidToProto(offer.interface_type);
  *o->mutable_interface_instance() = GuidToProto(offer.interface_instance);
  o->set_child_relid(offer.relid);
  o->set_connection_id(offer.connection_id);
  o->set_monitor_allocated(offer.monitor_allocated);
  o->set_monitor_id(offer.monitor_id);
  return m;
}

void ScriptedVmbusHost::OnSignal(uint32_t relid) {
  bool raise = false;
  uint32_t vp = 0;
  {
    MutexLock lock(&mu_);
    changed_.SignalAll();
    auto it = open_.find(relid);
    if (it == open_.end()) return;
    vp = it->second.target_vp;
    raise = Drain(relid);
  }
  // The host's signal: the flag on the channel's target VP, which raises SINT2 on 0 → 1.
  if (raise) {
    absl::StatusOr<bool> set = hv_.SetEventFlag(vp, kVmbusMessageSint, relid);
    if (!set.ok()) Complain("signalling the guest", set.status());
  }
}

bool ScriptedVmbusHost::Drain(uint32_t relid) {
  Channel& ch = open_.at(relid);
  IncomingRing& in = *ch.from_guest;
  OutgoingRing& out = *ch.to_guest;
  bool raise = false;
  // The reader's loop of core/data/ring_buffer.h: the guest's writer relies on it.
  in.MaskInterrupts();
  for (;;) {
    for (;;) {
      absl::StatusOr<std::optional<PacketView>> next = in.Next();
      if (!next.ok() || !next->has_value()) break;
      const PacketView& p = **next;
      ++packets_[relid];
      if (!echo_ || p.type() != PacketType::kDataInband) continue;
      absl::StatusOr<WriteResult> w =
          out.Write(p.completion_requested() ? PacketType::kCompletion : PacketType::kDataInband, 0,
                    p.trans_id(), p.payload());
      if (!w.ok() || *w == WriteResult::kFull) continue;  // small tests never fill the ring
      ++echoed_[relid];
      raise = raise || *w == WriteResult::kWrittenSignal;
    }
    absl::StatusOr<bool> wake_writer = in.CommitRead();
    raise = raise || (wake_writer.ok() && *wake_writer);
    absl::StatusOr<bool> more = in.UnmaskInterrupts();
    if (!more.ok() || !*more) return raise;
    in.MaskInterrupts();
  }
}

// ---------------------------------------------------------------------------------------------
// Observation
// ---------------------------------------------------------------------------------------------

std::vector<v1::ControlMessage> ScriptedVmbusHost::Received() const {
  MutexLock lock(&mu_);
  return received_;
}

std::vector<uint32_t> ScriptedVmbusHost::ReceivedOn() const {
  MutexLock lock(&mu_);
  return received_on_;
}

size_t ScriptedVmbusHost::Count(absl::string_view kind) const {
  MutexLock lock(&mu_);
  return std::count_if(received_.begin(), received_.end(),
                       [&](const v1::ControlMessage& m) { return KindOf(m) == kind; });
}

size_t ScriptedVmbusHost::decode_errors() const {
  MutexLock lock(&mu_);
  return decode_errors_;
}

uint64_t ScriptedVmbusHost::echoed(uint32_t relid) const {
  MutexLock lock(&mu_);
  auto it = echoed_.find(relid);
  return it == echoed_.end() ? 0 : it->second;
}

uint64_t ScriptedVmbusHost::packets_from_guest(uint32_t relid) const {
  MutexLock lock(&mu_);
  auto it = packets_.find(relid);
  return it == packets_.end() ? 0 : it->second;
}

bool ScriptedVmbusHost::is_open(uint32_t relid) const {
  MutexLock lock(&mu_);
  return open_.contains(relid);
}

bool ScriptedVmbusHost::WaitFor(const std::function<bool()>& condition, absl::Time deadline) {
  // The condition takes mu_ itself: evaluate it unlocked, and sleep on changed_ in short
  // slices (a change between the check and the wait is caught by the next slice).
  for (;;) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return condition();
    MutexLock lock(&mu_);
    changed_.WaitWithDeadline(&mu_, std::min(deadline, absl::Now() + absl::Milliseconds(5)));
  }
}

}  // namespace vbus::hyperv::testing
