#include "mock/host/data_plane.h"

#include <algorithm>
#include <bitset>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "mock/host/ring_fault.h"

namespace vbus::mock {

// A guest packet kept for a device that could not answer it yet (HostChannel::pending_).
// At namespace scope: clang does not take a nested struct with default member initializers
// as default-constructible before its enclosing class is complete, which std::optional's
// emplace() needs.
struct PendingPacket {
  uint16_t type = 0;
  uint16_t flags = 0;
  uint64_t trans_id = 0;
  std::vector<uint8_t> sub_header;
  std::vector<uint8_t> payload;
};

// One open channel: the two mapped rings, the device, counters. The incoming (guest → host)
// ring and the device are used under read_mu_, the outgoing ring under write_mu_: draining and
// sending never block each other.
class HostChannel final : public ChannelPort {
 public:
  HostChannel(GuestDataPlane* plane, uint32_t relid, std::optional<uint32_t> monitor_id,
              uint32_t target_vp, MappedPages outbound, MappedPages inbound)
      : plane_(plane),
        relid_(relid),
        monitor_id_(monitor_id),
        target_vp_(target_vp),
        outbound_pages_(std::move(outbound)),
        inbound_pages_(std::move(inbound)) {}

  uint32_t relid() const override { return relid_; }
  std::string guest_id() const override { return plane_->guest_id(); }
  absl::Status Send(PacketType type, uint16_t flags, uint64_t trans_id,
                    absl::Span<const uint8_t> payload) override {
    return SendAndReport(type, flags, trans_id, payload).status();
  }
  // Called by the device inside a drain (channels_mu_ shared, read_mu_ held): the hook queues.
  absl::Status RequestSubChannels(uint16_t count) override {
    if (!plane_->hooks_.on_sub_channel_request) {
      return absl::FailedPreconditionError("this host takes no sub-channel requests");
    }
    return plane_->hooks_.on_sub_channel_request(relid_, count);
  }

  // Writes a packet; returns whether the guest was signalled.
  absl::StatusOr<bool> SendAndReport(PacketType type, uint16_t flags, uint64_t trans_id,
                                     absl::Span<const uint8_t> payload) {
    MutexLock lock(&write_mu_);
    if (closing_) {
      return absl::FailedPreconditionError(absl::StrCat("relid ", relid_, " is closing"));
    }
    if (!out_->status().ok()) return out_->status();
    absl::StatusOr<WriteResult> r = out_->Write(type, flags, trans_id, payload);
    if (!r.ok()) {
      if (!out_->status().ok()) Fail(out_->status());
      return r.status();
    }
    if (*r == WriteResult::kFull) {
      wanted_bytes_ = PacketRingBytes(0, payload.size());
      return absl::ResourceExhaustedError(
          absl::StrCat("the inbound ring of relid ", relid_, " is full"));
    }
    // Relaxed: statistics.
    packets_to_guest_.fetch_add(1, std::memory_order_relaxed);
    bytes_to_guest_.fetch_add(payload.size(), std::memory_order_relaxed);
    if (*r == WriteResult::kWrittenSignal) {
      signals_to_guest_.fetch_add(1, std::memory_order_relaxed);
      plane_->SignalGuest(relid_, target_vp());
      return true;
    }
    return false;
  }

  // After a kRetryLater: asks the guest to signal once the packet that did not fit would fit.
  // Returns true if it fits already (retry now), false if armed; an error fails the channel.
  absl::StatusOr<bool> ArmPendingSend() {
    MutexLock lock(&write_mu_);
    absl::StatusOr<bool> ready = out_->ArmPendingSend(std::max<size_t>(wanted_bytes_, 24));
    if (!ready.ok()) {
      Fail(absl::FailedPreconditionError(
          absl::StrCat("relid ", relid_,
                       ": cannot wait for room in the inbound ring: ", ready.status().message())));
      return status();
    }
    return *ready;
  }

  void Fail(const absl::Status& why) {
    {
      MutexLock lock(&status_mu_);
      if (!failed_.ok()) return;  // report the first failure only
      failed_ = why;
    }
    plane_->PublishError(relid_, absl::StrCat("relid ", relid_, " stopped: ", why.message()));
  }
  absl::Status status() const {
    MutexLock lock(&status_mu_);
    return failed_;
  }

  void SetClosing() {
    MutexLock lock(&write_mu_);
    closing_ = true;
  }

  ChannelCounters Counters() const {
    ChannelCounters c;
    c.packets_to_guest = packets_to_guest_.load(std::memory_order_relaxed);
    c.bytes_to_guest = bytes_to_guest_.load(std::memory_order_relaxed);
    c.packets_from_guest = packets_from_guest_.load(std::memory_order_relaxed);
    c.bytes_from_guest = bytes_from_guest_.load(std::memory_order_relaxed);
    c.signals_to_guest = signals_to_guest_.load(std::memory_order_relaxed);
    c.signals_from_guest = signals_from_guest_.load(std::memory_order_relaxed);
    return c;
  }

  // The VP the guest wants this channel's events on. Relaxed: a signal racing a change may use
  // either VP, and the guest scans both (docs/protocol.md §12).
  uint32_t target_vp() const { return target_vp_.load(std::memory_order_relaxed); }

  GuestDataPlane* const plane_;
  const uint32_t relid_;
  const std::optional<uint32_t> monitor_id_;
  std::atomic<uint32_t> target_vp_;
  // A monitored channel's interrupt bit was taken by a scan before its trigger arrived
  // (ProcessEvents only; relaxed: one thread at a time).
  std::atomic<bool> interrupt_bit_seen_{false};
  const MappedPages outbound_pages_;  // guest → host ring
  const MappedPages inbound_pages_;   // host → guest ring
  std::vector<uint8_t> scratch_;      // wrapped packets of the incoming ring

  // Reader side.
  Mutex read_mu_;
  std::optional<IncomingRing> in_ ABSL_GUARDED_BY(read_mu_);
  std::unique_ptr<Device> device_;  // called under read_mu_ (and once at open/close)
  // A packet the device asked to see again (the inbound ring was full).
  std::optional<PendingPacket> pending_ ABSL_GUARDED_BY(read_mu_);
  // A hostile host's pause (RingFault READING_STOP): drains read nothing.
  bool reading_stopped_ ABSL_GUARDED_BY(read_mu_) = false;

  // Writer side.
  Mutex write_mu_;
  std::optional<OutgoingRing> out_ ABSL_GUARDED_BY(write_mu_);
  size_t wanted_bytes_ ABSL_GUARDED_BY(write_mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(write_mu_) = false;

  mutable Mutex status_mu_;
  absl::Status failed_ ABSL_GUARDED_BY(status_mu_);

  // Counters. Relaxed: statistics only, nothing is published through them.
  std::atomic<uint64_t> packets_to_guest_{0};
  std::atomic<uint64_t> bytes_to_guest_{0};
  std::atomic<uint64_t> packets_from_guest_{0};
  std::atomic<uint64_t> bytes_from_guest_{0};
  std::atomic<uint64_t> signals_to_guest_{0};
  std::atomic<uint64_t> signals_from_guest_{0};
  // Values at the last FlushSignalEvents (only the flushing thread touches them).
  uint64_t flushed_to_guest_ = 0;
  uint64_t flushed_from_guest_ = 0;
};

// --- GuestDataPlane -------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<GuestDataPlane>> GuestDataPlane::Create(
    std::string guest_id, std::unique_ptr<GuestMemory> memory, const DeviceRegistry* devices,
    DataPlaneHooks hooks) {
  std::vector<EventPage> guest_events;
  for (uint32_t vp = 0; vp < memory->layout().vp_count; ++vp) {
    absl::StatusOr<EventPage> page = EventPage::Attach(memory->GuestEventFlags(vp));
    if (!page.ok()) return page.status();
    guest_events.push_back(*page);
  }
  absl::StatusOr<EventPage> host_events =
      EventPage::Attach(absl::MakeSpan(memory->HostEventPage(), protocol::kPageSize));
  if (!host_events.ok()) return host_events.status();
  return std::unique_ptr<GuestDataPlane>(new GuestDataPlane(std::move(guest_id), std::move(memory),
                                                            devices, std::move(hooks),
                                                            std::move(guest_events), *host_events));
}

GuestDataPlane::GuestDataPlane(std::string guest_id, std::unique_ptr<GuestMemory> memory,
                               const DeviceRegistry* devices, DataPlaneHooks hooks,
                               std::vector<EventPage> guest_events, EventPage host_events)
    : guest_id_(std::move(guest_id)),
      memory_(std::move(memory)),
      devices_(devices != nullptr ? devices : &DeviceRegistry::Default()),
      hooks_(std::move(hooks)),
      guest_events_(std::move(guest_events)),
      host_events_(host_events) {}

GuestDataPlane::~GuestDataPlane() {
  std::vector<uint32_t> relids;
  {
    ReaderMutexLock lock(&channels_mu_);
    for (const auto& [relid, c] : channels_) relids.push_back(relid);
  }
  for (uint32_t relid : relids) (void)UnmapChannel(relid);
}

absl::Status GuestDataPlane::MapChannel(uint32_t relid, absl::string_view device,
                                        absl::Span<const uint64_t> outbound_pfns,
                                        absl::Span<const uint64_t> inbound_pfns,
                                        std::optional<uint32_t> monitor_id, uint32_t target_vp) {
  if (absl::Status s = ValidateRelid(relid); !s.ok()) return s;
  if (target_vp >= guest_events_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("target VP ", target_vp, " of ", guest_events_.size()));
  }
  if (monitor_id && *monitor_id >= protocol::kMonitorIdCount) {
    return absl::InvalidArgumentError(absl::StrCat("monitor id ", *monitor_id, " out of range"));
  }
  const DeviceKind* kind = devices_->Find(device);
  if (kind == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown device kind \"", device, "\""));
  }
  absl::StatusOr<MappedPages> outbound = memory_->MapPfns(outbound_pfns);
  if (!outbound.ok()) {
    return absl::Status(outbound.status().code(),
                        absl::StrCat("map the outbound ring: ", outbound.status().message()));
  }
  absl::StatusOr<MappedPages> inbound = memory_->MapPfns(inbound_pfns);
  if (!inbound.ok()) {
    return absl::Status(inbound.status().code(),
                        absl::StrCat("map the inbound ring: ", inbound.status().message()));
  }
  auto c = std::make_unique<HostChannel>(this, relid, monitor_id, target_vp, std::move(*outbound),
                                         std::move(*inbound));
  c->scratch_.resize(std::min(c->outbound_pages_.size() - protocol::kPageSize, kMaxPacketLength));
  {
    absl::StatusOr<IncomingRing> in =
        IncomingRing::Attach(c->outbound_pages_.span(), absl::MakeSpan(c->scratch_));
    if (!in.ok()) {
      return absl::Status(in.status().code(),
                          absl::StrCat("the outbound ring: ", in.status().message()));
    }
    absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(c->inbound_pages_.span());
    if (!out.ok()) {
      return absl::Status(out.status().code(),
                          absl::StrCat("the inbound ring: ", out.status().message()));
    }
    MutexLock read_lock(&c->read_mu_);
    MutexLock write_lock(&c->write_mu_);
    c->in_.emplace(std::move(*in));
    c->out_.emplace(std::move(*out));
  }
  if (kind->factory) {
    c->device_ = kind->factory();
    if (absl::Status s = c->device_->OnOpen(*c); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("device \"", device, "\": ", s.message()));
    }
  }
  WriterMutexLock lock(&channels_mu_);
  if (channels_.contains(relid)) {
    if (c->device_) c->device_->OnClose();
    return absl::AlreadyExistsError(absl::StrCat("relid ", relid, " is already mapped"));
  }
  // A bit still set for this relid was left by an earlier channel that held it (a monitored
  // signal the host never scanned for, because no monitored channel stayed open): the guest
  // signals a channel only after its OpenResult, which follows this map. Left set, it would
  // swallow this channel's first signal, which rings only on a 0 → 1 transition.
  if (absl::StatusOr<bool> stale = host_events_.Clear(relid); stale.ok() && *stale) {
    stale_bits_cleared_.fetch_add(1, std::memory_order_relaxed);
  }
  if (monitor_id) {
    // A trigger still pending for this monitor id was left by an earlier channel (the mock
    // scans triggers only while monitored channels are open): it is not this channel's signal.
    memory_->ClearMonitorTrigger(*monitor_id);
    monitor_relid_[*monitor_id] = relid;
    ++monitored_open_;
  }
  channels_.emplace(relid, std::move(c));
  if (monitor_id && monitored_open_ == 1) {
    // The doorbell thread may be in an idle wait that does not scan triggers: a monitored
    // signal rings nothing, so wake it to start scanning at the monitor latency.
    memory_->Ring(Doorbell::kHost);
  }
  return absl::OkStatus();
}

absl::Status GuestDataPlane::SetTargetVp(uint32_t relid, uint32_t target_vp) {
  if (target_vp >= guest_events_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("target VP ", target_vp, " of ", guest_events_.size()));
  }
  ReaderMutexLock lock(&channels_mu_);
  auto it = channels_.find(relid);
  if (it == channels_.end())
    return absl::NotFoundError(absl::StrCat("relid ", relid, " is not mapped"));
  it->second->target_vp_.store(target_vp, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::StatusOr<ChannelCounters> GuestDataPlane::UnmapChannel(uint32_t relid) {
  std::unique_ptr<HostChannel> c;
  {
    // Exclusive: waits for any drain or send on this guest's channels to finish.
    WriterMutexLock lock(&channels_mu_);
    auto it = channels_.find(relid);
    if (it == channels_.end()) {
      return absl::NotFoundError(absl::StrCat("relid ", relid, " is not mapped"));
    }
    c = std::move(it->second);
    channels_.erase(it);
    if (c->monitor_id_) {
      monitor_relid_[*c->monitor_id_] = 0;
      --monitored_open_;
    }
  }
  c->SetClosing();
  if (c->device_) c->device_->OnClose();
  return c->Counters();  // the pages are unmapped when `c` goes
}

size_t GuestDataPlane::ProcessEvents() {
  ReaderMutexLock lock(&channels_mu_);
  std::vector<uint32_t> relids;
  // Monitor triggers first, then the event bits: a guest sets a monitored channel's interrupt
  // bit before its trigger (docs/protocol.md §12), so once [GM-A3] has taken the trigger the
  // bit is visible to the scan below — set now, or taken by an earlier scan (noted then).
  std::bitset<protocol::kRelidCount> triggered;
  for (uint32_t group = 0; group < protocol::kMonitorIdCount / 32; ++group) {
    uint32_t bits = memory_->TakeMonitorTriggers(group);
    while (bits != 0) {
      const uint32_t bit = static_cast<uint32_t>(__builtin_ctz(bits));
      bits &= bits - 1;
      const uint32_t relid = monitor_relid_[group * 32 + bit];
      if (relid == 0) {
        spurious_events_.fetch_add(1, std::memory_order_relaxed);
      } else {
        triggered.set(relid);
      }
    }
  }
  std::bitset<protocol::kRelidCount> bit_set;
  host_events_.Scan([&](uint32_t relid) { bit_set.set(relid); });
  const std::bitset<protocol::kRelidCount> any = bit_set | triggered;
  for (size_t r = any._Find_first(); r < any.size(); r = any._Find_next(r)) {
    const uint32_t relid = static_cast<uint32_t>(r);
    relids.push_back(relid);
    auto it = channels_.find(relid);
    if (it == channels_.end() || !it->second->monitor_id_.has_value()) continue;
    HostChannel& c = *it->second;
    if (!triggered.test(relid)) {  // its trigger is on the way
      c.interrupt_bit_seen_.store(true, std::memory_order_relaxed);
    } else if (!bit_set.test(relid) &&
               !c.interrupt_bit_seen_.exchange(false, std::memory_order_relaxed)) {
      // Signalled through the monitor page alone: a real host would still find the channel,
      // but a guest that does this is not doing what the protocol says. Counted and reported.
      monitor_signals_without_bit_.fetch_add(1, std::memory_order_relaxed);
      PublishError(relid,
                   "signalled through its monitor trigger without setting its bit in "
                   "the interrupt page's send half (the host event page)");
    } else {
      c.interrupt_bit_seen_.store(false, std::memory_order_relaxed);
    }
  }
  size_t drained = 0;
  for (uint32_t relid : relids) {
    auto it = channels_.find(relid);
    if (it == channels_.end()) {
      spurious_events_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    it->second->signals_from_guest_.fetch_add(1, std::memory_order_relaxed);
    Drain(*it->second);
    ++drained;
  }
  return drained;
}

absl::Status GuestDataPlane::DrainChannel(uint32_t relid) {
  ReaderMutexLock lock(&channels_mu_);
  auto it = channels_.find(relid);
  if (it == channels_.end())
    return absl::NotFoundError(absl::StrCat("relid ", relid, " is not mapped"));
  it->second->signals_from_guest_.fetch_add(1, std::memory_order_relaxed);
  Drain(*it->second);
  return absl::OkStatus();
}

void GuestDataPlane::Drain(HostChannel& c) {
  MutexLock lock(&c.read_mu_);
  while (DrainOnce(c) == DrainResult::kAgain) {
  }
}

GuestDataPlane::DrainResult GuestDataPlane::DrainOnce(HostChannel& c) {
  // Drain, the only caller, holds it (the header cannot name a member of HostChannel, which
  // it only declares).
  c.read_mu_.AssertHeld();
  if (!c.status().ok() || c.reading_stopped_) return DrainResult::kDone;
  IncomingRing& in = *c.in_;

  // First the packet the device could not answer last time (the guest has since signalled
  // that it freed room in the inbound ring, or this is a spurious wakeup: then re-arm).
  while (c.pending_) {
    GuestPacketRef ref{c.pending_->type, c.pending_->flags, c.pending_->trans_id,
                       absl::MakeConstSpan(c.pending_->sub_header),
                       absl::MakeConstSpan(c.pending_->payload)};
    if (c.device_->OnPacket(c, ref) == PacketDisposition::kConsumed) {
      c.pending_.reset();
      break;
    }
    absl::StatusOr<bool> ready = c.ArmPendingSend();
    if (!ready.ok() || !*ready) return DrainResult::kDone;  // failed, or armed: wait for a signal
  }

  // The reader's side of the ring protocol. The guest (writer) signals only when it finds the
  // ring empty with interrupt_mask clear, so: mask while draining, commit, unmask, and check
  // once more for packets that arrived while masked (UnmaskInterrupts does the re-check).
  in.MaskInterrupts();
  while (true) {
    while (true) {
      absl::StatusOr<std::optional<PacketView>> next = in.Next();
      if (!next.ok()) {
        c.Fail(next.status());
        return DrainResult::kDone;
      }
      if (!next->has_value()) break;
      const PacketView& p = **next;
      c.packets_from_guest_.fetch_add(1, std::memory_order_relaxed);
      c.bytes_from_guest_.fetch_add(p.payload().size(), std::memory_order_relaxed);
      if (hooks_.on_packet && (!hooks_.wants_packets || hooks_.wants_packets())) {
        v1::GuestPacket packet;
        packet.set_guest_id(guest_id_);
        packet.set_child_relid(c.relid_);
        packet.set_type(p.raw_type());
        packet.set_flags(p.flags());
        packet.set_transaction_id(p.trans_id());
        packet.set_payload(p.payload().data(), p.payload().size());
        packet.set_unix_nanos(absl::ToUnixNanos(Now()));
        hooks_.on_packet(std::move(packet));
      }
      if (!c.device_) continue;
      GuestPacketRef ref{p.raw_type(), p.flags(), p.trans_id(), p.sub_header(), p.payload()};
      if (c.device_->OnPacket(c, ref) == PacketDisposition::kRetryLater) {
        // Keep a private copy (the ring space is freed below) and pause this channel until
        // the guest makes room. Interrupts stay masked: new guest packets wait in the ring.
        c.pending_.emplace();
        c.pending_->type = ref.type;
        c.pending_->flags = ref.flags;
        c.pending_->trans_id = ref.trans_id;
        c.pending_->sub_header.assign(ref.sub_header.begin(), ref.sub_header.end());
        c.pending_->payload.assign(ref.payload.begin(), ref.payload.end());
        absl::StatusOr<bool> wake = in.CommitRead();
        if (!wake.ok()) {
          c.Fail(wake.status());
          return DrainResult::kDone;
        }
        if (*wake) SignalGuest(c.relid_, c.target_vp());
        absl::StatusOr<bool> ready = c.ArmPendingSend();
        // Room appeared meanwhile: start over (the pending packet goes first).
        return ready.ok() && *ready ? DrainResult::kAgain : DrainResult::kDone;
      }
    }
    absl::StatusOr<bool> wake_writer = in.CommitRead();
    if (!wake_writer.ok()) {
      c.Fail(wake_writer.status());
      return DrainResult::kDone;
    }
    // The guest armed pending_send_sz on its outbound ring and now has room: wake it.
    if (*wake_writer) SignalGuest(c.relid_, c.target_vp());
    absl::StatusOr<bool> more = in.UnmaskInterrupts();
    if (!more.ok()) {
      c.Fail(more.status());
      return DrainResult::kDone;
    }
    if (!*more) return DrainResult::kDone;
    in.MaskInterrupts();
  }
}

absl::Status GuestDataPlane::RaiseEvent(uint32_t relid) {
  absl::StatusOr<bool> was_clear = host_events_.Set(relid);
  if (!was_clear.ok()) return was_clear.status();
  if (*was_clear) memory_->Ring(Doorbell::kHost);
  return absl::OkStatus();
}

absl::StatusOr<bool> GuestDataPlane::SendPacket(uint32_t relid, PacketType type, uint16_t flags,
                                                uint64_t trans_id,
                                                absl::Span<const uint8_t> payload) {
  if (type != PacketType::kDataInband && type != PacketType::kCompletion) {
    return absl::InvalidArgumentError(absl::StrCat("packet type ", static_cast<int>(type),
                                                   " cannot be sent (in-band 6 or completion 11)"));
  }
  ReaderMutexLock lock(&channels_mu_);
  auto it = channels_.find(relid);
  if (it == channels_.end()) {
    return absl::NotFoundError(absl::StrCat("relid ", relid, " has no open channel"));
  }
  if (absl::Status s = it->second->status(); !s.ok()) return s;
  return it->second->SendAndReport(type, flags, trans_id, payload);
}

absl::StatusOr<v1::RingFaultResult> GuestDataPlane::InjectRingFault(const v1::RingFault& fault) {
  if (fault.kind_case() == v1::RingFault::kEventStorm) return RaiseEventStorm(fault.event_storm());
  const uint32_t relid = fault.child_relid();
  ReaderMutexLock lock(&channels_mu_);
  auto it = channels_.find(relid);
  if (it == channels_.end()) {
    return absl::NotFoundError(absl::StrCat("relid ", relid, " is not mapped"));
  }
  HostChannel& c = *it->second;
  if (absl::Status s = c.status(); !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("relid ", relid, " failed on the host's side: ", s.message()));
  }
  v1::RingFaultResult result;
  switch (fault.kind_case()) {
    case v1::RingFault::kFieldWrite: {
      const v1::RingFault::FieldWrite& write = fault.field_write();
      absl::StatusOr<FieldWriteOutcome> done;
      if (write.ring() == v1::RingFault::RING_INBOUND) {
        MutexLock side(&c.write_mu_);
        done = WriteRingField(c.inbound_pages_.span(), write);
      } else if (write.ring() == v1::RingFault::RING_OUTBOUND) {
        MutexLock side(&c.read_mu_);
        done = WriteRingField(c.outbound_pages_.span(), write);
      } else {
        return absl::InvalidArgumentError("ring field write: ring is unset");
      }
      if (!done.ok()) return done.status();
      result.set_data_size(done->data_size);
      result.set_value_before(done->before);
      result.set_value_after(done->after);
      if (write.signal() && SignalGuest(relid, c.target_vp())) result.set_doorbells(1);
      return result;
    }
    case v1::RingFault::kRawPacket: {
      const std::string& bytes = fault.raw_packet();
      MutexLock side(&c.write_mu_);
      if (c.closing_) {
        return absl::FailedPreconditionError(absl::StrCat("relid ", relid, " is closing"));
      }
      absl::StatusOr<uint32_t> at = WriteRawPacket(
          c.inbound_pages_.span(),
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
      if (!at.ok()) return at.status();
      // The host's writer goes on behind the packet: attached again, it reads the new
      // write_index (and the read_index checked above).
      absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(c.inbound_pages_.span());
      if (!out.ok()) {
        c.Fail(out.status());
        return out.status();
      }
      c.out_.emplace(std::move(*out));
      result.set_data_size(static_cast<uint32_t>(c.out_->data_size()));
      result.set_packet_offset(*at);
      if (SignalGuest(relid, c.target_vp())) result.set_doorbells(1);
      return result;
    }
    case v1::RingFault::kReading:
      if (fault.reading() == v1::RingFault::READING_STOP) {
        MutexLock side(&c.read_mu_);
        c.reading_stopped_ = true;
      } else if (fault.reading() == v1::RingFault::READING_RESUME) {
        {
          MutexLock side(&c.read_mu_);
          c.reading_stopped_ = false;
        }
        Drain(c);  // what the guest wrote meanwhile (its signals were taken while stopped)
      } else {
        return absl::InvalidArgumentError("ring fault: reading is unset");
      }
      return result;
    case v1::RingFault::kEventStorm:
    case v1::RingFault::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("ring fault: no kind given");
}

absl::StatusOr<v1::RingFaultResult> GuestDataPlane::RaiseEventStorm(
    const v1::RingFault::EventStorm& storm) {
  if (storm.relids().empty() || static_cast<size_t>(storm.relids_size()) > kMaxStormRelids) {
    return absl::InvalidArgumentError(absl::StrCat("event storm: ", storm.relids_size(),
                                                   " relids (1..", kMaxStormRelids, " allowed)"));
  }
  for (uint32_t relid : storm.relids()) {
    if (absl::Status s = ValidateRelid(relid); !s.ok()) return s;
  }
  if (storm.count() > kMaxRingFaultRepeats) {
    return absl::InvalidArgumentError(
        absl::StrCat("event storm: ", storm.count(), " rounds is above ", kMaxRingFaultRepeats));
  }
  if (storm.target_vp() >= guest_events_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("event storm: target VP ", storm.target_vp(), " of ", guest_events_.size()));
  }
  uint64_t rung = 0;
  const uint32_t rounds = std::max<uint32_t>(storm.count(), 1);
  for (uint32_t round = 0; round < rounds; ++round) {
    for (uint32_t relid : storm.relids()) rung += SignalGuest(relid, storm.target_vp()) ? 1 : 0;
  }
  v1::RingFaultResult result;
  result.set_doorbells(rung);
  return result;
}

absl::StatusOr<ChannelCounters> GuestDataPlane::Counters(uint32_t relid) const {
  ReaderMutexLock lock(&channels_mu_);
  auto it = channels_.find(relid);
  if (it == channels_.end())
    return absl::NotFoundError(absl::StrCat("relid ", relid, " is not mapped"));
  return it->second->Counters();
}

absl::Status GuestDataPlane::ChannelStatus(uint32_t relid) const {
  ReaderMutexLock lock(&channels_mu_);
  auto it = channels_.find(relid);
  if (it == channels_.end())
    return absl::NotFoundError(absl::StrCat("relid ", relid, " is not mapped"));
  return it->second->status();
}

void GuestDataPlane::FlushSignalEvents() {
  if (!hooks_.on_event) return;
  ReaderMutexLock lock(&channels_mu_);
  for (const auto& [relid, c] : channels_) {
    const ChannelCounters now = c->Counters();
    const std::pair<uint64_t, v1::EventKind> deltas[] = {
        {now.signals_from_guest - c->flushed_from_guest_, v1::EVENT_KIND_SIGNALS_FROM_GUEST},
        {now.signals_to_guest - c->flushed_to_guest_, v1::EVENT_KIND_SIGNALS_TO_GUEST},
    };
    c->flushed_from_guest_ = now.signals_from_guest;
    c->flushed_to_guest_ = now.signals_to_guest;
    for (const auto& [count, kind] : deltas) {
      if (count == 0) continue;
      v1::ProtocolEvent e;
      e.set_unix_nanos(absl::ToUnixNanos(Now()));
      e.set_guest_id(guest_id_);
      e.set_kind(kind);
      e.set_child_relid(relid);
      e.set_count(count);
      hooks_.on_event(std::move(e));
    }
  }
}

bool GuestDataPlane::HasMonitoredChannels() const {
  ReaderMutexLock lock(&channels_mu_);
  return monitored_open_ > 0;
}

bool GuestDataPlane::SignalGuest(uint32_t relid, uint32_t vp) {
  if (vp >= guest_events_.size()) vp = 0;  // MapChannel and SetTargetVp checked it
  // [EP-S1] inside Set is a release that pairs with the guest's scan exchange: the ring contents
  // and write_index stored before are visible to the guest once it sees the bit. Ring only on
  // a 0 → 1 transition: a set bit means the guest was rung for it and has not scanned yet.
  absl::StatusOr<bool> was_clear = guest_events_[vp].Set(relid);
  if (!was_clear.ok() || !*was_clear) return false;
  memory_->Ring(Doorbell::kGuest, vp);
  return true;
}

void GuestDataPlane::PublishError(uint32_t relid, const std::string& detail) {
  if (!hooks_.on_event) return;
  v1::ProtocolEvent e;
  e.set_unix_nanos(absl::ToUnixNanos(Now()));
  e.set_guest_id(guest_id_);
  e.set_kind(v1::EVENT_KIND_ERROR);
  e.set_child_relid(relid);
  e.set_detail(detail);
  hooks_.on_event(std::move(e));
}

}  // namespace vbus::mock
