// HostEngine: guests, HostControl requests, timers and outputs. The guest's control messages
// are handled in engine_messages.cc.
#include "mock/host/engine.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/data/guid_proto.h"
#include "mock/host/engine_internal.h"

namespace vbus::mock {
namespace {

// Host → guest ControlMessage kinds (the ones a MessageFault may name).
constexpr const char* kHostToGuestTypes[] = {
    "version_response", "offer",          "all_offers_delivered", "rescind_offer",
    "gpadl_created",    "gpadl_torndown", "open_result",          "modify_channel_response",
    "unload_response",
};

bool IsHostToGuestType(absl::string_view name) {
  for (const char* t : kHostToGuestTypes) {
    if (name == t) return true;
  }
  return false;
}

absl::Status ValidateSettings(const v1::HostSettings& s) {
  if (s.has_max_version() && !IsSupportedVersion(s.max_version())) {
    std::vector<std::string> names;
    for (uint32_t v : kSupportedVersions) names.push_back(protocol::VersionName(v));
    return absl::InvalidArgumentError(
        absl::StrFormat("max_version 0x%08x is not a supported version (%s)", s.max_version(),
                        absl::StrJoin(names, ", ")));
  }
  if (s.has_monitor_latency_us() &&
      (s.monitor_latency_us() < 1 || s.monitor_latency_us() > 1000000)) {
    return absl::InvalidArgumentError(
        absl::StrCat("monitor_latency_us ", s.monitor_latency_us(), " is outside 1 .. 1000000"));
  }
  return absl::OkStatus();
}

absl::Status ValidateSpec(const v1::OfferSpec& spec,
                          const absl::btree_map<std::string, Guid>& kinds) {
  if (!kinds.contains(spec.device())) {
    std::vector<std::string> names;
    for (const auto& [name, guid] : kinds) names.push_back(name);
    return absl::InvalidArgumentError(absl::StrCat("unknown device kind \"", spec.device(),
                                                   "\" (known: ", absl::StrJoin(names, ", "), ")"));
  }
  if (spec.has_interface_type()) {
    if (absl::Status s = GuidFromProto(spec.interface_type()).status(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("interface_type: ", s.message()));
    }
  }
  if (spec.has_interface_instance()) {
    if (absl::Status s = GuidFromProto(spec.interface_instance()).status(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("interface_instance: ", s.message()));
    }
  }
  if (spec.user_defined().size() > protocol::kUserDefinedBytes) {
    return absl::InvalidArgumentError(absl::StrCat("user_defined has ", spec.user_defined().size(),
                                                   " bytes; at most ",
                                                   protocol::kUserDefinedBytes));
  }
  if (spec.sub_channel_count() > kMaxSubChannels) {
    return absl::InvalidArgumentError(
        absl::StrCat("sub_channel_count ", spec.sub_channel_count(), " is over ", kMaxSubChannels));
  }
  if (spec.flags() > 0xFFFF) {
    return absl::InvalidArgumentError(
        absl::StrFormat("flags 0x%x do not fit chn_flags (u16)", spec.flags()));
  }
  if (spec.mmio_megabytes() > protocol::kMaxMmioMegabytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("mmio_megabytes ", spec.mmio_megabytes(), " does not fit a u16"));
  }
  if (spec.mmio_megabytes_optional() > protocol::kMaxMmioMegabytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mmio_megabytes_optional ", spec.mmio_megabytes_optional(), " does not fit a u16"));
  }
  if (spec.monitor_allocated_reserved_bits() > protocol::kMaxMonitorAllocatedReservedBits) {
    return absl::InvalidArgumentError(absl::StrCat("monitor_allocated_reserved_bits ",
                                                   spec.monitor_allocated_reserved_bits(),
                                                   " do not fit 7 bits"));
  }
  if (spec.dedicated_interrupt_reserved_bits() > protocol::kMaxDedicatedInterruptReservedBits) {
    return absl::InvalidArgumentError(absl::StrCat("dedicated_interrupt_reserved_bits ",
                                                   spec.dedicated_interrupt_reserved_bits(),
                                                   " do not fit 15 bits"));
  }
  return absl::OkStatus();
}

v1::ChannelState PublicState(HostEngine::ChannelState s) {
  switch (s) {
    case HostEngine::ChannelState::kOffered:
    case HostEngine::ChannelState::kOpening:
      return v1::CHANNEL_STATE_OFFERED;
    case HostEngine::ChannelState::kOpen:
      return v1::CHANNEL_STATE_OPEN;
    case HostEngine::ChannelState::kRescinded:
      return v1::CHANNEL_STATE_RESCINDED;
  }
  return v1::CHANNEL_STATE_UNSPECIFIED;
}

}  // namespace

// --- Free functions -------------------------------------------------------------------------

bool IsSupportedVersion(uint32_t version) {
  return std::find(std::begin(kSupportedVersions), std::end(kSupportedVersions), version) !=
         std::end(kSupportedVersions);
}

std::string MessageTypeName(const v1::ControlMessage& message) {
  if (message.message_case() == v1::ControlMessage::MESSAGE_NOT_SET) return "empty";
  return message.GetDescriptor()->FindFieldByNumber(message.message_case())->name();
}

uint32_t RelidOf(const v1::ControlMessage& m) {
  switch (m.message_case()) {
    case v1::ControlMessage::kOffer:
      return m.offer().child_relid();
    case v1::ControlMessage::kRescindOffer:
      return m.rescind_offer().child_relid();
    case v1::ControlMessage::kRelidReleased:
      return m.relid_released().child_relid();
    case v1::ControlMessage::kGpadlCreate:
      return m.gpadl_create().child_relid();
    case v1::ControlMessage::kGpadlCreated:
      return m.gpadl_created().child_relid();
    case v1::ControlMessage::kGpadlTeardown:
      return m.gpadl_teardown().child_relid();
    case v1::ControlMessage::kOpenChannel:
      return m.open_channel().child_relid();
    case v1::ControlMessage::kOpenResult:
      return m.open_result().child_relid();
    case v1::ControlMessage::kCloseChannel:
      return m.close_channel().child_relid();
    case v1::ControlMessage::kModifyChannel:
      return m.modify_channel().child_relid();
    case v1::ControlMessage::kModifyChannelResponse:
      return m.modify_channel_response().child_relid();
    default:
      return 0;
  }
}

// --- Construction and guests ----------------------------------------------------------------

absl::StatusOr<std::unique_ptr<HostEngine>> HostEngine::Create(EngineOptions options) {
  if (absl::Status s = ValidateSettings(options.settings); !s.ok()) return s;
  for (size_t i = 0; i < options.default_offers.size(); ++i) {
    if (absl::Status s = ValidateSpec(options.default_offers[i], options.device_classes); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("default offer ", i, ": ", s.message()));
    }
  }
  return std::unique_ptr<HostEngine>(new HostEngine(std::move(options)));
}

HostEngine::HostEngine(EngineOptions options)
    : options_(std::move(options)), settings_(options_.settings), rng_(options_.seed) {
  if (!settings_.has_max_version()) settings_.set_max_version(kDefaultMaxVersion);
  if (!settings_.has_remap_relids_on_resume()) settings_.set_remap_relids_on_resume(false);
  if (!settings_.has_permute_relids_on_resume()) settings_.set_permute_relids_on_resume(false);
  if (!settings_.has_monitor_latency_us())
    settings_.set_monitor_latency_us(kDefaultMonitorLatencyUs);
}

HostEngine::~HostEngine() = default;

HostEngine::Guest* HostEngine::FindGuest(absl::string_view guest_id) {
  for (auto& [number, g] : guests_) {
    if (g->id == guest_id) return g.get();
  }
  return nullptr;
}

const HostEngine::Guest* HostEngine::FindGuest(absl::string_view guest_id) const {
  return const_cast<HostEngine*>(this)->FindGuest(guest_id);
}

absl::StatusOr<std::string> HostEngine::Attach(const v1::Attach& attach, absl::Time now,
                                               Actions* out) {
  if (attach.guest_name().empty()) return absl::InvalidArgumentError("attach: guest_name is empty");
  for (const auto& [number, g] : guests_) {
    if (g->name == attach.guest_name()) {
      return absl::AlreadyExistsError(absl::StrCat("attach: a guest named \"", attach.guest_name(),
                                                   "\" is attached (", g->id, ")"));
    }
  }
  const uint64_t size = attach.memory_size_bytes();
  if (size == 0 || size % protocol::kPageSize != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attach: memory_size_bytes ", size,
                                                   " is not a positive multiple of ",
                                                   protocol::kPageSize));
  }
  const MemoryLayout layout = LayoutFromProto(attach.layout());
  if (absl::Status s = ValidateLayout(layout, size / protocol::kPageSize); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("attach: ", s.message()));
  }

  auto guest = std::make_unique<Guest>();
  guest->number = next_guest_number_++;
  guest->id = absl::StrCat("guest-", guest->number);
  guest->name = attach.guest_name();
  guest->attach = attach;
  guest->layout = layout;
  guest->page_count = size / protocol::kPageSize;
  guest->attached_at = now;
  Guest& g = *guest;
  guests_.emplace(g.number, std::move(guest));

  v1::HostToGuest attached;
  attached.mutable_attached()->set_guest_id(g.id);
  attached.mutable_attached()->set_host_max_version(settings_.max_version());
  // Batches are checked by CheckBatch and fed through HandleGuestControl by the runtime.
  attached.mutable_attached()->set_accepts_batches(true);
  out->push_back(SendToGuest{g.id, std::move(attached)});
  Event(
      g.id, v1::EVENT_KIND_GUEST_ATTACHED, 0, now, out,
      absl::StrCat("name \"", g.name, "\", memory ", attach.memory_path(), " (", size, " bytes)"));
  for (const v1::OfferSpec& spec : options_.default_offers) {
    absl::StatusOr<std::vector<uint32_t>> relids = CreateOffer(g, spec, now, out, nullptr);
    if (!relids.ok()) {
      Event(g.id, v1::EVENT_KIND_ERROR, 0, now, out,
            absl::StrCat("default offer \"", spec.device(),
                         "\" not made: ", relids.status().message()));
    }
  }
  return g.id;
}

absl::Status HostEngine::Detach(absl::string_view guest_id, absl::string_view reason,
                                absl::Time now, Actions* out) {
  Guest* g = FindGuest(guest_id);
  if (g == nullptr) return absl::NotFoundError(absl::StrCat("no guest ", guest_id));
  for (auto& [relid, c] : g->channels) {
    if (c.state == ChannelState::kOpen || c.state == ChannelState::kOpening) {
      StopChannel(*g, c, "guest detached", now, out);
    }
  }
  for (auto it = delayed_.begin(); it != delayed_.end();) {
    it = it->second->guest_id == g->id ? delayed_.erase(it) : std::next(it);
  }
  const std::string id = g->id;
  Event(id, v1::EVENT_KIND_GUEST_DETACHED, 0, now, out, std::string(reason));
  guests_.erase(g->number);
  return absl::OkStatus();
}

absl::StatusOr<std::string> HostEngine::ResolveGuest(absl::string_view selector) const {
  if (selector.empty()) {
    if (guests_.size() == 1) return guests_.begin()->second->id;
    return absl::FailedPreconditionError(absl::StrCat("no guest named and ", guests_.size(),
                                                      " guests are attached (name one of them)"));
  }
  for (const auto& [number, g] : guests_) {
    if (g->id == selector) return g->id;
  }
  for (const auto& [number, g] : guests_) {
    if (g->name == selector) return g->id;
  }
  return absl::NotFoundError(absl::StrCat("no guest with id or name \"", selector, "\""));
}

std::vector<std::string> HostEngine::GuestIds() const {
  std::vector<std::string> ids;
  for (const auto& [number, g] : guests_) ids.push_back(g->id);
  return ids;
}

const GpadlTable* HostEngine::Gpadls(absl::string_view guest_id) const {
  const Guest* g = FindGuest(guest_id);
  return g == nullptr ? nullptr : &g->gpadls;
}

absl::StatusOr<HostEngine::ChannelSnapshot> HostEngine::FindChannel(absl::string_view guest_id,
                                                                    uint32_t relid) const {
  const Guest* g = FindGuest(guest_id);
  if (g == nullptr) return absl::NotFoundError(absl::StrCat("no guest ", guest_id));
  auto it = g->channels.find(relid);
  if (it == g->channels.end()) {
    return absl::NotFoundError(absl::StrCat("guest ", guest_id, " has no relid ", relid));
  }
  const Channel& c = it->second;
  return ChannelSnapshot{c.relid,      c.state,      c.offer_sent, c.primary_relid,
                         c.ring_gpadl, c.monitor_id, c.device};
}

// --- HostControl ----------------------------------------------------------------------------

Guid HostEngine::NewGuid() {
  Guid::Bytes bytes;
  for (size_t i = 0; i < bytes.size(); i += 8) {
    const uint64_t r = rng_();
    for (size_t j = 0; j < 8; ++j) bytes[i + j] = static_cast<uint8_t>(r >> (8 * j));
  }
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0F) | 0x40);  // version 4 (random)
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3F) | 0x80);  // RFC 4122 variant
  return Guid(bytes);
}

absl::StatusOr<std::vector<uint32_t>> HostEngine::CreateOffer(Guest& g, const v1::OfferSpec& spec,
                                                              absl::Time now, Actions* out,
                                                              v1::Guid* instance_used) {
  if (absl::Status s = ValidateSpec(spec, options_.device_classes); !s.ok()) return s;
  const Guid type = spec.has_interface_type() ? *GuidFromProto(spec.interface_type())
                                              : options_.device_classes.at(spec.device());
  const Guid instance =
      spec.has_interface_instance() ? *GuidFromProto(spec.interface_instance()) : NewGuid();
  const std::string instance_text = instance.ToString();
  if (auto live = g.live_instances.find(instance_text); live != g.live_instances.end()) {
    return absl::AlreadyExistsError(
        absl::StrCat("instance ", instance_text, " is already offered as relid ", live->second));
  }
  const uint32_t count = 1 + spec.sub_channel_count();
  if (absl::Status s = CheckRoom(g, count, spec.monitored(), "offer"); !s.ok()) return s;

  v1::Offer fields;  // shared by the primary and its sub-channels
  *fields.mutable_interface_type() = GuidToProto(type);
  *fields.mutable_interface_instance() = GuidToProto(instance);
  fields.set_flags(spec.flags());
  fields.set_mmio_megabytes(spec.mmio_megabytes());
  fields.set_user_defined(spec.user_defined());
  fields.set_dedicated_interrupt(spec.dedicated_interrupt());
  fields.set_interrupt_latency(spec.interrupt_latency());
  fields.set_reserved(spec.reserved());
  fields.set_mmio_megabytes_optional(spec.mmio_megabytes_optional());
  fields.set_monitor_allocated_reserved_bits(spec.monitor_allocated_reserved_bits());
  fields.set_dedicated_interrupt_reserved_bits(spec.dedicated_interrupt_reserved_bits());
  std::vector<uint32_t> relids;
  for (uint32_t index = 0; index < count; ++index) {
    const uint32_t primary = index == 0 ? 0 : relids[0];
    relids.push_back(AddChannel(g, fields, spec.device(), primary, index, spec.monitored()).relid);
  }
  g.channels.at(relids[0]).sub_relids.assign(relids.begin() + 1, relids.end());
  g.live_instances.emplace(instance_text, relids[0]);
  if (instance_used != nullptr) *instance_used = GuidToProto(instance);
  if (g.state == v1::GUEST_STATE_OFFERS_DELIVERED) {
    for (uint32_t relid : relids) SendOffer(g, g.channels.at(relid), now, out);
  }
  return relids;
}

absl::Status HostEngine::CheckRoom(const Guest& g, uint32_t count, bool monitored,
                                   absl::string_view what) {
  if (protocol::kMaxRelid - g.relids.taken_count() < count) {
    return absl::ResourceExhaustedError(absl::StrCat(what, " needs ", count, " relids; ",
                                                     protocol::kMaxRelid - g.relids.taken_count(),
                                                     " are free"));
  }
  if (monitored && protocol::kMonitorIdCount - g.monitor_ids.count() < count) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, " needs ", count, " monitor ids; ",
                     protocol::kMonitorIdCount - g.monitor_ids.count(), " are free"));
  }
  return absl::OkStatus();
}

HostEngine::Channel& HostEngine::AddChannel(Guest& g, const v1::Offer& fields,
                                            const std::string& device, uint32_t primary_relid,
                                            uint32_t index, bool monitored) {
  // A relid whose second release may still be on its way (docs/protocol.md §17) is taken
  // only when nothing else is free: that release would read as a refusal of the new offer.
  const absl::flat_hash_set<uint32_t> pending(g.second_release_expected.begin(),
                                              g.second_release_expected.end());
  absl::StatusOr<uint32_t> free_relid = g.relids.Allocate(pending);
  if (!free_relid.ok()) free_relid = g.relids.Allocate();
  const uint32_t relid = *free_relid;      // availability checked by CheckRoom
  g.second_release_expected.erase(relid);  // a new channel: no stale release is due
  Channel c;
  c.relid = relid;
  c.order = g.next_order++;
  c.device = device;
  c.primary_relid = primary_relid;
  c.offer = fields;
  v1::Offer& o = c.offer;
  o.set_child_relid(relid);
  o.set_sub_channel_index(index);
  o.set_connection_id(kChannelConnectionIdBase + relid);
  o.set_monitor_id(0);
  o.set_monitor_allocated(false);
  if (monitored) {
    uint32_t id = 0;
    while (g.monitor_ids.test(id)) ++id;  // a free one exists (checked by CheckRoom)
    g.monitor_ids.set(id);
    c.monitor_id = id;
    o.set_monitor_id(id);
    o.set_monitor_allocated(true);
  }
  return g.channels.emplace(relid, std::move(c)).first->second;
}

absl::StatusOr<v1::OfferResponse> HostEngine::Offer(const v1::OfferRequest& request, absl::Time now,
                                                    Actions* out) {
  absl::StatusOr<std::string> id = ResolveGuest(request.guest());
  if (!id.ok()) return id.status();
  Guest& g = *FindGuest(*id);
  v1::OfferResponse response;
  absl::StatusOr<std::vector<uint32_t>> relids =
      CreateOffer(g, request.spec(), now, out, response.mutable_interface_instance());
  if (!relids.ok()) return relids.status();
  response.set_child_relid(relids->front());
  for (size_t i = 1; i < relids->size(); ++i) response.add_sub_channel_relids((*relids)[i]);
  return response;
}

absl::StatusOr<std::vector<uint32_t>> HostEngine::OfferSubChannels(absl::string_view guest_id,
                                                                   uint32_t primary_relid,
                                                                   uint32_t count, absl::Time now,
                                                                   Actions* out) {
  Guest* g = FindGuest(guest_id);
  if (g == nullptr) return absl::NotFoundError(absl::StrCat("no guest ", guest_id));
  if (count == 0 || count > kMaxSubChannels) {
    return absl::InvalidArgumentError(
        absl::StrCat("sub-channel count ", count, " is outside 1..", kMaxSubChannels));
  }
  auto it = g->channels.find(primary_relid);
  if (it == g->channels.end()) {
    return absl::NotFoundError(absl::StrCat("guest ", g->id, " has no relid ", primary_relid));
  }
  Channel& primary = it->second;
  if (primary.offer.sub_channel_index() != 0) {
    return absl::FailedPreconditionError(absl::StrCat("relid ", primary_relid, " is sub-channel ",
                                                      primary.offer.sub_channel_index(),
                                                      ", not a primary"));
  }
  if (primary.state == ChannelState::kRescinded) {
    return absl::FailedPreconditionError(absl::StrCat("relid ", primary_relid, " is rescinded"));
  }
  if (primary.state != ChannelState::kOpen) {
    return absl::FailedPreconditionError(absl::StrCat("relid ", primary_relid, " is not open"));
  }
  absl::btree_set<uint32_t> used;  // indexes of live sub-channels
  for (uint32_t sub : primary.sub_relids) {
    auto s = g->channels.find(sub);
    if (s != g->channels.end() && s->second.state != ChannelState::kRescinded) {
      used.insert(s->second.offer.sub_channel_index());
    }
  }
  if (used.size() >= count) return std::vector<uint32_t>();
  const uint32_t missing = count - static_cast<uint32_t>(used.size());
  const bool monitored = primary.monitor_id.has_value();
  const std::string what = absl::StrCat("the sub-channel offer for relid ", primary_relid);
  if (absl::Status s = CheckRoom(*g, missing, monitored, what); !s.ok()) return s;
  const v1::Offer fields = primary.offer;
  const std::string device = primary.device;
  std::vector<uint32_t> relids;
  for (uint32_t index = 1; relids.size() < missing; ++index) {
    if (used.contains(index)) continue;
    relids.push_back(AddChannel(*g, fields, device, primary_relid, index, monitored).relid);
  }
  // `primary` may have moved: AddChannel inserted into the map.
  std::vector<uint32_t>& subs = g->channels.at(primary_relid).sub_relids;
  subs.insert(subs.end(), relids.begin(), relids.end());
  std::stable_sort(subs.begin(), subs.end(), [g](uint32_t a, uint32_t b) {
    return g->channels.at(a).offer.sub_channel_index() <
           g->channels.at(b).offer.sub_channel_index();
  });
  if (g->state == v1::GUEST_STATE_OFFERS_DELIVERED) {
    for (uint32_t relid : relids) SendOffer(*g, g->channels.at(relid), now, out);
  }
  return relids;
}

absl::StatusOr<v1::RescindResponse> HostEngine::Rescind(const v1::RescindRequest& request,
                                                        absl::Time now, Actions* out) {
  absl::StatusOr<std::string> id = ResolveGuest(request.guest());
  if (!id.ok()) return id.status();
  Guest& g = *FindGuest(*id);
  auto it = g.channels.find(request.child_relid());
  if (it == g.channels.end()) {
    return absl::NotFoundError(
        absl::StrCat("guest ", g.id, " has no relid ", request.child_relid()));
  }
  if (it->second.state == ChannelState::kRescinded) {
    return absl::FailedPreconditionError(
        absl::StrCat("relid ", request.child_relid(), " is already rescinded"));
  }
  std::vector<uint32_t> targets;
  for (uint32_t sub : it->second.sub_relids) {
    auto s = g.channels.find(sub);
    if (s != g.channels.end() && s->second.state != ChannelState::kRescinded)
      targets.push_back(sub);
  }
  targets.push_back(request.child_relid());

  v1::RescindResponse response;
  for (uint32_t relid : targets) {
    Channel& c = g.channels.at(relid);
    response.add_rescinded_relids(relid);
    if (c.primary_relid == 0) ForgetInstance(g, c);  // a new offer may use it again
    if (!c.offer_sent) {
      ForgetChannel(g, relid);  // the guest never heard of it
      continue;
    }
    if (c.state == ChannelState::kOpen || c.state == ChannelState::kOpening) {
      StopChannel(g, c, "rescinded", now, out);
    }
    c.rescinded_while_offered = c.state == ChannelState::kOffered;
    c.state = ChannelState::kRescinded;
    v1::ControlMessage m;
    m.mutable_rescind_offer()->set_child_relid(relid);
    SendControl(g, std::move(m), now, out);
  }
  return response;
}

v1::ListGuestsResponse HostEngine::ListGuests() const {
  v1::ListGuestsResponse response;
  for (const auto& [number, g] : guests_) {
    v1::GuestInfo* info = response.add_guests();
    info->set_guest_id(g->id);
    info->set_guest_name(g->name);
    info->set_state(g->state);
    info->set_version(g->version);
    info->set_memory_path(g->attach.memory_path());
    info->set_memory_size_bytes(g->attach.memory_size_bytes());
    info->set_channel_count(static_cast<uint32_t>(g->channels.size()));
    info->set_attached_unix_nanos(absl::ToUnixNanos(g->attached_at));
  }
  return response;
}

absl::StatusOr<v1::ListChannelsResponse> HostEngine::ListChannels(
    absl::string_view selector) const {
  std::vector<const Guest*> guests;
  if (selector.empty()) {
    for (const auto& [number, g] : guests_) guests.push_back(g.get());
  } else {
    absl::StatusOr<std::string> id = ResolveGuest(selector);
    if (!id.ok()) return id.status();
    guests.push_back(FindGuest(*id));
  }
  v1::ListChannelsResponse response;
  for (const Guest* g : guests) {
    for (const auto& [relid, c] : g->channels) {
      v1::ChannelInfo* info = response.add_channels();
      info->set_guest_id(g->id);
      info->set_child_relid(relid);
      info->set_device(c.device);
      *info->mutable_interface_type() = c.offer.interface_type();
      *info->mutable_interface_instance() = c.offer.interface_instance();
      info->set_sub_channel_index(c.offer.sub_channel_index());
      info->set_state(PublicState(c.state));
      info->set_ring_gpadl(c.ring_gpadl);
      info->set_target_vp(c.target_vp);
      info->set_offer_delivered(c.offer_sent);
      if (c.monitor_id) {
        info->set_monitor_allocated(true);
        info->set_monitor_id(*c.monitor_id);
      }
    }
  }
  return response;
}

absl::Status HostEngine::InjectFault(const v1::InjectFaultRequest& request, absl::Time now,
                                     Actions* out) {
  absl::StatusOr<std::string> id = ResolveGuest(request.guest());
  if (!id.ok()) return id.status();
  Guest& g = *FindGuest(*id);
  switch (request.fault_case()) {
    case v1::InjectFaultRequest::kMessage: {
      const v1::MessageFault& f = request.message();
      if (!IsHostToGuestType(f.message_type())) {
        return absl::InvalidArgumentError(
            absl::StrCat("message fault: \"", f.message_type(),
                         "\" is not a host → guest ControlMessage type (one of: ",
                         absl::StrJoin(kHostToGuestTypes, ", "), ")"));
      }
      if (f.action() == v1::MessageFault::ACTION_UNSPECIFIED) {
        return absl::InvalidArgumentError("message fault: action is unset");
      }
      ArmedMessageFault armed;
      armed.action = f.action();
      armed.remaining = f.count() == 0 ? 1 : f.count();
      armed.delay = absl::Milliseconds(f.delay_ms());
      g.message_faults[f.message_type()].push_back(armed);
      return absl::OkStatus();
    }
    case v1::InjectFaultRequest::kRefuse: {
      const v1::RefuseNext& r = request.refuse();
      if (r.request() == v1::RefuseNext::REQUEST_UNSPECIFIED) {
        return absl::InvalidArgumentError("refuse fault: request is unset");
      }
      g.refusals[r.request()] = r.status() == 0 ? protocol::kStatusUnsuccessful : r.status();
      return absl::OkStatus();
    }
    case v1::InjectFaultRequest::kDisconnect:
      if (!request.disconnect()) return absl::InvalidArgumentError("disconnect fault is false");
      Event(g.id, v1::EVENT_KIND_FAULT_FIRED, 0, now, out, "disconnect");
      out->push_back(DisconnectGuest{g.id, "disconnected by an injected fault"});
      return absl::OkStatus();
    case v1::InjectFaultRequest::kSend: {
      const std::string type = MessageTypeName(request.send());
      if (!IsHostToGuestType(type)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "send fault: \"", type, "\" is not a host → guest ControlMessage type (one of: ",
            absl::StrJoin(kHostToGuestTypes, ", "), ")"));
      }
      Event(g.id, v1::EVENT_KIND_FAULT_FIRED, RelidOf(request.send()), now, out,
            absl::StrCat("sent ", type, " as given"));
      EmitControl(g.id, request.send(), now, out);
      return absl::OkStatus();
    }
    case v1::InjectFaultRequest::kRing:
      // Shared memory is the runtime's: MockHost carries ring faults out on the data plane.
      return absl::InvalidArgumentError(
          "ring fault: the engine has no shared memory (the runtime, MockHost, carries ring "
          "faults out)");
    case v1::InjectFaultRequest::FAULT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("inject fault: no fault given");
}

absl::StatusOr<v1::HostSettings> HostEngine::Configure(const v1::ConfigureRequest& request) {
  if (absl::Status s = ValidateSettings(request.settings()); !s.ok()) return s;
  settings_.MergeFrom(request.settings());
  return settings_;
}

// --- Timers ---------------------------------------------------------------------------------

void HostEngine::AdvanceTime(absl::Time now, Actions* out) {
  while (!delayed_.empty() && delayed_.begin()->first.first <= now) {
    std::unique_ptr<DelayedMessage> d = std::move(delayed_.begin()->second);
    delayed_.erase(delayed_.begin());
    if (FindGuest(d->guest_id) != nullptr) EmitControl(d->guest_id, d->message, now, out);
  }
}

std::optional<absl::Time> HostEngine::NextTimer() const {
  if (delayed_.empty()) return std::nullopt;
  return delayed_.begin()->first.first;
}

// --- Channel helpers ------------------------------------------------------------------------

void HostEngine::SendOffer(Guest& g, Channel& c, absl::Time now, Actions* out) {
  c.offer_sent = true;
  v1::ControlMessage m;
  *m.mutable_offer() = c.offer;
  SendControl(g, std::move(m), now, out);
}

void HostEngine::StopChannel(Guest& g, Channel& c, absl::string_view why, absl::Time now,
                             Actions* out) {
  const bool was_open = c.state == ChannelState::kOpen;
  if (c.rings_mapped) {
    out->push_back(UnmapRings{g.id, c.relid});
    c.rings_mapped = false;
  }
  if (Gpadl* gpadl = g.gpadls.Find(c.ring_gpadl); gpadl != nullptr && gpadl->used_by == c.relid) {
    gpadl->used_by = 0;
  }
  c.ring_gpadl = 0;
  // An opening channel's outstanding MapRings is undone by CompleteOpen.
  if (was_open) Event(g.id, v1::EVENT_KIND_CHANNEL_CLOSED, c.relid, now, out, std::string(why));
}

void HostEngine::ForgetChannel(Guest& g, uint32_t relid) {
  auto it = g.channels.find(relid);
  if (it == g.channels.end()) return;
  if (it->second.primary_relid != 0) {
    auto p = g.channels.find(it->second.primary_relid);
    if (p != g.channels.end()) {
      auto& subs = p->second.sub_relids;
      subs.erase(std::remove(subs.begin(), subs.end(), relid), subs.end());
    }
  }
  if (it->second.primary_relid == 0) ForgetInstance(g, it->second);
  if (it->second.monitor_id) g.monitor_ids.reset(*it->second.monitor_id);
  g.gpadls.RemoveForRelid(relid);
  (void)g.relids.Release(relid);
  g.channels.erase(it);
}

void HostEngine::ForgetInstance(Guest& g, const Channel& primary) {
  auto it = g.live_instances.find(primary.offer.interface_instance().value());
  if (it != g.live_instances.end() && it->second == primary.relid) g.live_instances.erase(it);
}

// --- Outputs --------------------------------------------------------------------------------

void HostEngine::SendControl(Guest& g, v1::ControlMessage message, absl::Time now, Actions* out) {
  const std::string type = MessageTypeName(message);
  auto it = g.message_faults.find(type);
  if (it == g.message_faults.end() || it->second.empty()) {
    EmitControl(g.id, message, now, out);
    return;
  }
  ArmedMessageFault& fault = it->second.front();
  const v1::MessageFault::Action action = fault.action;
  const absl::Duration delay = fault.delay;
  if (--fault.remaining == 0) it->second.pop_front();
  const uint32_t relid = RelidOf(message);
  switch (action) {
    case v1::MessageFault::ACTION_DROP:
      Event(g.id, v1::EVENT_KIND_FAULT_FIRED, relid, now, out, absl::StrCat("dropped ", type),
            &message);
      return;
    case v1::MessageFault::ACTION_DUPLICATE:
      Event(g.id, v1::EVENT_KIND_FAULT_FIRED, relid, now, out, absl::StrCat("duplicated ", type),
            &message);
      EmitControl(g.id, message, now, out);
      EmitControl(g.id, message, now, out);
      return;
    case v1::MessageFault::ACTION_DELAY: {
      Event(g.id, v1::EVENT_KIND_FAULT_FIRED, relid, now, out,
            absl::StrCat("delayed ", type, " by ", absl::FormatDuration(delay)), &message);
      auto d = std::make_unique<DelayedMessage>();
      d->guest_id = g.id;
      d->message = std::move(message);
      delayed_.emplace(std::make_pair(now + delay, next_delay_sequence_++), std::move(d));
      return;
    }
    default:
      EmitControl(g.id, message, now, out);
      return;
  }
}

void HostEngine::EmitControl(const std::string& guest_id, const v1::ControlMessage& message,
                             absl::Time now, Actions* out) {
  v1::HostToGuest h;
  *h.mutable_control() = message;
  out->push_back(SendToGuest{guest_id, std::move(h)});
  if (message_events_) {
    Event(guest_id, v1::EVENT_KIND_HOST_MESSAGE, RelidOf(message), now, out, "", &message);
  }
}

void HostEngine::Reject(Guest& g, absl::StatusCode code, uint32_t relid, const std::string& what,
                        absl::Time now, Actions* out) {
  ++counters_.protocol_errors;
  v1::HostToGuest h;
  h.mutable_error()->set_code(static_cast<int32_t>(code));
  h.mutable_error()->set_message(what);
  out->push_back(SendToGuest{g.id, std::move(h)});
  Event(g.id, v1::EVENT_KIND_ERROR, relid, now, out, what);
}

void HostEngine::Event(const std::string& guest_id, v1::EventKind kind, uint32_t relid,
                       absl::Time now, Actions* out, std::string detail,
                       const v1::ControlMessage* message) {
  v1::ProtocolEvent e;
  e.set_unix_nanos(absl::ToUnixNanos(now));
  e.set_guest_id(guest_id);
  e.set_kind(kind);
  e.set_child_relid(relid);
  if (message != nullptr) *e.mutable_message() = *message;
  e.set_detail(std::move(detail));
  out->push_back(PublishEvent{std::move(e)});
}

}  // namespace vbus::mock
