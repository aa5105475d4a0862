#include "core/runtime/channel_bus_testing.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data/guid_proto.h"

namespace vbus::testing {
namespace {

std::string KindOf(const v1::ControlMessage& m) {
  const google::protobuf::FieldDescriptor* field =
      m.GetReflection()->GetOneofFieldDescriptor(m, m.GetDescriptor()->FindOneofByName("message"));
  return field == nullptr ? "" : field->name();
}

}  // namespace

TestHost::TestHost(size_t data_pages, uint32_t vp_count)
    : fake_(data_pages, ContactInfo{}, vp_count) {
  thread_ = std::thread([this] { HostLoop(); });
}

TestHost::~TestHost() {
  {
    MutexLock lock(&queue_mu_);
    stop_ = true;
    queue_cv_.SignalAll();
  }
  thread_.join();
  MutexLock lock(&mu_);
  open_.clear();
}

void TestHost::Stop() { fake_.Stop(); }

void TestHost::HostLoop() {
  for (;;) {
    std::function<void()> work;
    {
      MutexLock lock(&queue_mu_);
      while (queue_.empty() && !stop_)
        queue_cv_.WaitWithDeadline(&queue_mu_, absl::InfiniteFuture());
      if (queue_.empty()) return;
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    work();
    MutexLock lock(&mu_);
    changed_.SignalAll();
  }
}

void TestHost::Post(std::function<void()> work) {
  MutexLock lock(&queue_mu_);
  queue_.push_back(std::move(work));
  queue_cv_.Signal();
}

void TestHost::Update(const std::function<void(Rules&)>& change) {
  MutexLock lock(&mu_);
  change(rules_);
}

// ---------------------------------------------------------------------------------------------
// Control messages
// ---------------------------------------------------------------------------------------------

v1::ControlMessage TestHost::OfferMessage(uint32_t relid) const {
  const OfferSpec& spec = offers_.at(relid);
  v1::ControlMessage m;
  v1::Offer* o = m.mutable_offer();
  *o->mutable_interface_type() = GuidToProto(spec.type);
  *o->mutable_interface_instance() = GuidToProto(spec.instance);
  o->set_child_relid(relid);
  o->set_sub_channel_index(spec.sub_channel_index);
  o->set_connection_id(0x10000 + relid);
  return m;
}

void TestHost::AddOffer(uint32_t relid, const Guid& type, const Guid& instance,
                        uint16_t sub_channel_index) {
  Post([this, relid, type, instance, sub_channel_index] {
    std::optional<v1::ControlMessage> hot;
    {
      MutexLock lock(&mu_);
      offers_[relid] = OfferSpec{type, instance, sub_channel_index};
      if (offers_sent_) hot = OfferMessage(relid);
    }
    if (hot.has_value()) Deliver(*std::move(hot));
  });
}

void TestHost::ClearOffers() {
  Post([this] {
    MutexLock lock(&mu_);
    offers_.clear();
  });
}

void TestHost::Rescind(uint32_t relid) {
  Post([this, relid] {
    {
      MutexLock lock(&mu_);
      open_.erase(relid);  // the host stops using the rings at once
    }
    v1::ControlMessage m;
    m.mutable_rescind_offer()->set_child_relid(relid);
    Deliver(std::move(m));
  });
}

void TestHost::SendToGuest(v1::ControlMessage message) {
  Post([this, message = std::move(message)]() mutable { Deliver(std::move(message)); });
}

void TestHost::LoseHost(absl::Status status) {
  Post([this, status] { fake_.LoseHost(status); });
}

void TestHost::Deliver(v1::ControlMessage message) {
  fake_.DeliverToGuest(std::move(message)).IgnoreError();  // fails only once stopped
}

absl::Status TestHost::PostMessage(const v1::ControlMessage& message) {
  absl::Status s = fake_.PostMessage(message);
  if (!s.ok()) return s;
  fake_.TakePosted();  // we keep our own record
  {
    MutexLock lock(&mu_);
    posted_.push_back(message);
  }
  Post([this, message] { Handle(message); });
  return absl::OkStatus();
}

void TestHost::Handle(const v1::ControlMessage& m) {
  std::vector<v1::ControlMessage> replies;
  {
    MutexLock lock(&mu_);
    switch (m.message_case()) {
      case v1::ControlMessage::kInitiateContact: {
        if (!rules_.answer_contact) break;
        v1::ControlMessage r;
        const bool ok = m.initiate_contact().version_requested() <= rules_.max_version;
        r.mutable_version_response()->set_version_supported(ok);
        if (ok && m.initiate_contact().version_requested() >= protocol::kVersion5_0) {
          r.mutable_version_response()->set_message_connection_id(rules_.connection_id);
        }
        replies.push_back(r);
        break;
      }
      case v1::ControlMessage::kRequestOffers: {
        offers_sent_ = true;
        for (const auto& [relid, spec] : offers_) replies.push_back(OfferMessage(relid));
        v1::ControlMessage done;
        done.mutable_all_offers_delivered();
        replies.push_back(done);
        break;
      }
      case v1::ControlMessage::kGpadlCreate: {
        const v1::GpadlCreate& g = m.gpadl_create();
        gpadls_[g.gpadl()] = std::vector<uint64_t>(g.pfns().begin(), g.pfns().end());
        if (rules_.answer_gpadl) {
          v1::ControlMessage r;
          r.mutable_gpadl_created()->set_child_relid(g.child_relid());
          r.mutable_gpadl_created()->set_gpadl(g.gpadl());
          r.mutable_gpadl_created()->set_creation_status(rules_.gpadl_status);
          if (rules_.gpadl_status != 0) gpadls_.erase(g.gpadl());
          replies.push_back(r);
        }
        break;
      }
      case v1::ControlMessage::kOpenChannel: {
        const v1::OpenChannel& o = m.open_channel();
        uint32_t status = rules_.open_status;
        auto g = gpadls_.find(o.ring_buffer_gpadl());
        if (status == 0 && g != gpadls_.end() && o.downstream_ring_page_offset() > 0 &&
            o.downstream_ring_page_offset() < g->second.size()) {
          const std::vector<uint64_t>& pfns = g->second;
          uint8_t* base = Translate(pfns.front());
          const size_t out_bytes = size_t{o.downstream_ring_page_offset()} * protocol::kPageSize;
          const size_t all_bytes = pfns.size() * protocol::kPageSize;
          HostChannel& ch = open_[o.child_relid()];
          ch = HostChannel{};
          target_vp_[o.child_relid()] = o.target_vp();
          absl::StatusOr<IncomingRing> from = IncomingRing::Attach({base, out_bytes});
          absl::StatusOr<OutgoingRing> to =
              OutgoingRing::Attach({base + out_bytes, all_bytes - out_bytes});
          if (from.ok() && to.ok()) {
            ch.scratch.resize(from->data_size());
            from->SetScratch(absl::MakeSpan(ch.scratch));
            ch.from_guest = std::move(*from);
            ch.to_guest = std::move(*to);
            ch.outbound_control = reinterpret_cast<RingControlPage*>(base);
            ch.inbound_control = reinterpret_cast<RingControlPage*>(base + out_bytes);
          } else {
            open_.erase(o.child_relid());
            status = protocol::kStatusUnsuccessful;
          }
        } else if (status == 0) {
          status = protocol::kStatusUnsuccessful;
        }
        if (rules_.answer_open && !rules_.silent_open_relids.contains(o.child_relid())) {
          v1::ControlMessage r;
          r.mutable_open_result()->set_child_relid(o.child_relid());
          r.mutable_open_result()->set_open_id(o.open_id());
          r.mutable_open_result()->set_status(status);
          replies.push_back(r);
        }
        break;
      }
      case v1::ControlMessage::kCloseChannel:
        open_.erase(m.close_channel().child_relid());
        break;
      case v1::ControlMessage::kGpadlTeardown:
        if (rules_.answer_teardown) {
          gpadls_.erase(m.gpadl_teardown().gpadl());
          v1::ControlMessage r;
          r.mutable_gpadl_torndown()->set_gpadl(m.gpadl_teardown().gpadl());
          replies.push_back(r);
        }
        break;
      case v1::ControlMessage::kRelidReleased:
        released_.push_back(m.relid_released().child_relid());
        offers_.erase(m.relid_released().child_relid());
        break;
      case v1::ControlMessage::kModifyChannel: {
        target_vp_[m.modify_channel().child_relid()] = m.modify_channel().target_vp();
        v1::ControlMessage r;
        r.mutable_modify_channel_response()->set_child_relid(m.modify_channel().child_relid());
        replies.push_back(r);
        break;
      }
      case v1::ControlMessage::kUnload:
        if (rules_.answer_unload) {
          open_.clear();
          offers_sent_ = false;
          v1::ControlMessage r;
          r.mutable_unload_response();
          replies.push_back(r);
        }
        break;
      default:
        break;
    }
  }
  for (v1::ControlMessage& r : replies) Deliver(std::move(r));
}

// ---------------------------------------------------------------------------------------------
// Rings
// ---------------------------------------------------------------------------------------------

uint8_t* TestHost::Translate(uint64_t pfn) const {
  // FakeBackend's data pages are one contiguous block from kFirstDataPfn; any allocation
  // tells where it starts.
  const auto& [first_pfn, where] = *allocations_.begin();
  uint8_t* base = where.first - (first_pfn - FakeBackend::kFirstDataPfn) * protocol::kPageSize;
  return base + (pfn - FakeBackend::kFirstDataPfn) * protocol::kPageSize;
}

absl::StatusOr<Pages> TestHost::AllocatePages(size_t count, PageSharing sharing) {
  absl::StatusOr<Pages> pages = fake_.AllocatePages(count, sharing);
  if (pages.ok()) {
    MutexLock lock(&mu_);
    allocations_[pages->pfns().front()] = {pages->data(), count};
  }
  return pages;
}

absl::Status TestHost::SignalHost(const ChannelSignal& signal) {
  if (absl::Status s = fake_.SignalHost(signal); !s.ok()) return s;
  fake_.TakeSignals();
  const uint32_t relid = signal.relid;
  {
    MutexLock lock(&mu_);
    ++signals_[relid];
  }
  Post([this, relid] {
    bool raise = false;
    {
      MutexLock lock(&mu_);
      auto it = open_.find(relid);
      if (it != open_.end()) {
        ++it->second.signals;
        if (rules_.echo) {
          Echo(relid);
          raise = true;  // an echo may have been written; a spare event is harmless
        }
      }
    }
    if (raise) RaiseEvent(relid).IgnoreError();
  });
  return absl::OkStatus();
}

uint32_t TestHost::TargetVp(uint32_t relid) const {
  MutexLock lock(&mu_);
  auto it = target_vp_.find(relid);
  return it == target_vp_.end() ? 0 : it->second;
}

void TestHost::Echo(uint32_t relid) {
  HostChannel& ch = open_.at(relid);
  IncomingRing& in = *ch.from_guest;
  OutgoingRing& out = *ch.to_guest;
  auto write = [&](const HostPacket& p) -> bool {
    const bool completion = (p.flags & kCompletionRequested) != 0;
    for (int attempt = 0; attempt < 2; ++attempt) {
      absl::StatusOr<WriteResult> w = out.Write(
          completion ? PacketType::kCompletion : PacketType::kDataInband, 0, p.trans_id, p.payload);
      if (!w.ok()) return true;  // corrupt ring: drop
      if (*w != WriteResult::kFull) {
        ++ch.echoed;
        return true;
      }
      // Back-pressure: wait for the guest to make room (it signals at pending_send_sz).
      absl::StatusOr<bool> room = out.ArmPendingSend(PacketRingBytes(0, p.payload.size()));
      if (!room.ok() || !*room) return false;
    }
    return false;
  };
  if (ch.held.has_value()) {
    if (!write(*ch.held)) return;
    ch.held.reset();
  }
  in.MaskInterrupts();
  for (;;) {
    for (;;) {
      absl::StatusOr<std::optional<PacketView>> next = in.Next();
      if (!next.ok() || !next->has_value()) break;
      const PacketView& v = **next;
      if (v.type() != PacketType::kDataInband) continue;  // completions: consumed
      HostPacket p{v.raw_type(),
                   v.flags(),
                   v.trans_id(),
                   {},
                   std::vector<uint8_t>(v.payload().begin(), v.payload().end())};
      if (!write(p)) {
        ch.held = std::move(p);
        in.CommitRead().IgnoreError();
        in.UnmaskInterrupts().IgnoreError();
        return;
      }
    }
    absl::StatusOr<bool> wake = in.CommitRead();
    if (wake.ok() && *wake) {
      // The guest waits for room in its outbound ring: the caller raises the event.
    }
    absl::StatusOr<bool> more = in.UnmaskInterrupts();
    if (!more.ok() || !*more) return;
    in.MaskInterrupts();
  }
}

absl::StatusOr<bool> TestHost::WriteToGuest(uint32_t relid, PacketType type, uint16_t flags,
                                            uint64_t trans_id, absl::Span<const uint8_t> payload) {
  bool signal;
  {
    MutexLock lock(&mu_);
    auto it = open_.find(relid);
    if (it == open_.end()) return absl::NotFoundError(absl::StrCat("relid ", relid, " not open"));
    absl::StatusOr<WriteResult> w = it->second.to_guest->Write(type, flags, trans_id, payload);
    if (!w.ok()) return w.status();
    if (*w == WriteResult::kFull) return absl::ResourceExhaustedError("guest inbound ring full");
    signal = *w == WriteResult::kWrittenSignal;
  }
  if (signal) {
    if (absl::Status s = RaiseEvent(relid); !s.ok()) return s;
  }
  return signal;
}

absl::StatusOr<std::vector<HostPacket>> TestHost::ReadFromGuest(uint32_t relid) {
  std::vector<HostPacket> packets;
  bool wake = false;
  {
    MutexLock lock(&mu_);
    auto it = open_.find(relid);
    if (it == open_.end()) return absl::NotFoundError(absl::StrCat("relid ", relid, " not open"));
    IncomingRing& in = *it->second.from_guest;
    for (;;) {
      absl::StatusOr<std::optional<PacketView>> next = in.Next();
      if (!next.ok()) return next.status();
      if (!next->has_value()) break;
      const PacketView& v = **next;
      packets.push_back(
          HostPacket{v.raw_type(), v.flags(), v.trans_id(),
                     std::vector<uint8_t>(v.sub_header().begin(), v.sub_header().end()),
                     std::vector<uint8_t>(v.payload().begin(), v.payload().end())});
    }
    absl::StatusOr<bool> committed = in.CommitRead();
    if (!committed.ok()) return committed.status();
    wake = *committed;
  }
  if (wake) RaiseEvent(relid).IgnoreError();
  return packets;
}

RingControlPage* TestHost::GuestOutboundControl(uint32_t relid) {
  MutexLock lock(&mu_);
  auto it = open_.find(relid);
  return it == open_.end() ? nullptr : it->second.outbound_control;
}

RingControlPage* TestHost::GuestInboundControl(uint32_t relid) {
  MutexLock lock(&mu_);
  auto it = open_.find(relid);
  return it == open_.end() ? nullptr : it->second.inbound_control;
}

// ---------------------------------------------------------------------------------------------
// Observation
// ---------------------------------------------------------------------------------------------

bool TestHost::WaitFor(const std::function<bool()>& condition, absl::Time deadline) {
  // The condition usually calls back into this object (taking mu_): evaluate it unlocked and
  // sleep on changed_ in short slices, re-checking; every host step signals changed_.
  for (;;) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return condition();
    MutexLock lock(&mu_);
    changed_.WaitWithDeadline(&mu_, std::min(deadline, absl::Now() + absl::Milliseconds(5)));
  }
}

std::vector<v1::ControlMessage> TestHost::Posted() const {
  MutexLock lock(&mu_);
  return posted_;
}

size_t TestHost::CountPosted(absl::string_view kind) const {
  MutexLock lock(&mu_);
  size_t n = 0;
  for (const v1::ControlMessage& m : posted_) n += KindOf(m) == kind ? 1 : 0;
  return n;
}

std::vector<uint32_t> TestHost::Released() const {
  MutexLock lock(&mu_);
  return released_;
}

size_t TestHost::LiveGpadls() const {
  MutexLock lock(&mu_);
  return gpadls_.size();
}

bool TestHost::IsOpen(uint32_t relid) const {
  MutexLock lock(&mu_);
  return open_.contains(relid);
}

uint64_t TestHost::SignalsFrom(uint32_t relid) const {
  MutexLock lock(&mu_);
  auto it = signals_.find(relid);
  return it == signals_.end() ? 0 : it->second;
}

uint64_t TestHost::EchoedPackets(uint32_t relid) const {
  MutexLock lock(&mu_);
  auto it = open_.find(relid);
  return it == open_.end() ? 0 : it->second.echoed;
}

}  // namespace vbus::testing
