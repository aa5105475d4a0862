#include "mock/testing/guest_rings.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace vbus::mock::testing {

absl::StatusOr<std::vector<uint64_t>> GuestPages::Allocate(uint32_t count) {
  if (end_ - next_ < count) {
    return absl::ResourceExhaustedError(
        absl::StrCat("guest memory has ", end_ - next_, " free pages, ", count, " wanted"));
  }
  std::vector<uint64_t> pfns;
  for (uint32_t i = 0; i < count; ++i) pfns.push_back(next_++);
  return pfns;
}

absl::StatusOr<std::unique_ptr<GuestRings>> GuestRings::Create(const GuestMemory& memory,
                                                               uint32_t relid,
                                                               std::vector<uint64_t> pfns,
                                                               uint32_t outbound_pages) {
  if (outbound_pages < 2 || pfns.size() < outbound_pages + 2) {
    return absl::InvalidArgumentError("each ring needs at least two pages");
  }
  absl::StatusOr<MappedPages> view = memory.MapPfns(pfns);
  if (!view.ok()) return view.status();
  absl::StatusOr<EventPage> guest_events =
      EventPage::Attach(absl::MakeSpan(memory.GuestEventPage(), protocol::kPageSize));
  if (!guest_events.ok()) return guest_events.status();
  absl::StatusOr<EventPage> host_events =
      EventPage::Attach(absl::MakeSpan(memory.HostEventPage(), protocol::kPageSize));
  if (!host_events.ok()) return host_events.status();
  auto rings =
      std::unique_ptr<GuestRings>(new GuestRings(memory, relid, std::move(pfns), outbound_pages,
                                                 std::move(*view), *guest_events, *host_events));
  absl::Span<uint8_t> all = rings->view_.span();
  absl::Span<uint8_t> outbound = all.subspan(0, size_t{outbound_pages} * protocol::kPageSize);
  absl::Span<uint8_t> inbound = all.subspan(size_t{outbound_pages} * protocol::kPageSize);
  if (absl::Status s = InitializeRing(outbound); !s.ok()) return s;
  if (absl::Status s = InitializeRing(inbound); !s.ok()) return s;
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(outbound);
  if (!out.ok()) return out.status();
  rings->scratch_.resize(std::min(inbound.size() - protocol::kPageSize, kMaxPacketLength));
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(inbound, absl::MakeSpan(rings->scratch_));
  if (!in.ok()) return in.status();
  {
    MutexLock lock(&rings->send_mu_);
    rings->out_.emplace(std::move(*out));
  }
  {
    MutexLock lock(&rings->receive_mu_);
    rings->in_.emplace(std::move(*in));
  }
  return rings;
}

GuestRings::GuestRings(const GuestMemory& memory, uint32_t relid, std::vector<uint64_t> pfns,
                       uint32_t outbound_pages, MappedPages view, EventPage guest_events,
                       EventPage host_events)
    : memory_(memory),
      relid_(relid),
      pfns_(std::move(pfns)),
      outbound_pages_(outbound_pages),
      view_(std::move(view)),
      guest_events_(guest_events),
      host_events_(host_events) {}

void GuestRings::SignalHost() {
  absl::StatusOr<bool> was_clear = host_events_.Set(relid_);
  if (was_clear.ok() && *was_clear) memory_.Ring(Doorbell::kHost);
}

absl::StatusOr<bool> GuestRings::Send(PacketType type, uint16_t flags, uint64_t trans_id,
                                      absl::Span<const uint8_t> payload) {
  MutexLock lock(&send_mu_);
  absl::StatusOr<WriteResult> r = out_->Write(type, flags, trans_id, payload);
  if (!r.ok()) return r.status();
  if (*r == WriteResult::kFull) return absl::ResourceExhaustedError("outbound ring full");
  if (*r == WriteResult::kWrittenSignal) {
    SignalHost();
    return true;
  }
  return false;
}

absl::StatusOr<bool> GuestRings::SendWaiting(PacketType type, uint16_t flags, uint64_t trans_id,
                                             absl::Span<const uint8_t> payload,
                                             absl::Time deadline) {
  while (true) {
    absl::StatusOr<bool> sent = Send(type, flags, trans_id, payload);
    if (sent.status().code() != absl::StatusCode::kResourceExhausted) return sent;
    // Full: ask the host to signal once there is room, then wait for the guest doorbell.
    const uint32_t seen = memory_.DoorbellValue(Doorbell::kGuest);
    absl::StatusOr<bool> ready;
    {
      MutexLock lock(&send_mu_);
      ready = out_->ArmPendingSend(PacketRingBytes(0, payload.size()));
    }
    if (!ready.ok()) return ready.status();
    if (*ready) continue;
    if (absl::Status s = memory_.Wait(Doorbell::kGuest, seen, deadline); !s.ok()) {
      return absl::DeadlineExceededError(
          absl::StrCat("relid ", relid_, ": the outbound ring stayed full"));
    }
  }
}

absl::StatusOr<std::optional<ReceivedPacket>> GuestRings::TryReceive() {
  MutexLock lock(&receive_mu_);
  absl::StatusOr<std::optional<PacketView>> next = in_->Next();
  if (!next.ok()) return next.status();
  if (!next->has_value()) return std::optional<ReceivedPacket>();
  ReceivedPacket p;
  p.type = (*next)->raw_type();
  p.flags = (*next)->flags();
  p.trans_id = (*next)->trans_id();
  p.payload.assign((*next)->payload().begin(), (*next)->payload().end());
  absl::StatusOr<bool> wake = in_->CommitRead();
  if (!wake.ok()) return wake.status();
  if (*wake) SignalHost();  // the host waits for room in this ring
  return std::optional<ReceivedPacket>(std::move(p));
}

absl::StatusOr<ReceivedPacket> GuestRings::WaitForPacket(absl::Time deadline) {
  while (true) {
    const uint32_t seen = memory_.DoorbellValue(Doorbell::kGuest);
    // Clear the guest event page: the host rings only on a 0 → 1 transition of a bit.
    guest_events_.Scan([](uint32_t) {});
    absl::StatusOr<std::optional<ReceivedPacket>> p = TryReceive();
    if (!p.ok()) return p.status();
    if (p->has_value()) return std::move(**p);
    if (absl::Status s = memory_.Wait(Doorbell::kGuest, seen, deadline); !s.ok()) {
      return absl::DeadlineExceededError(
          absl::StrCat("relid ", relid_, ": no packet from the host before the deadline"));
    }
  }
}

RingControlPage* GuestRings::outbound_control() const {
  return reinterpret_cast<RingControlPage*>(view_.data());
}

RingControlPage* GuestRings::inbound_control() const {
  return reinterpret_cast<RingControlPage*>(view_.data() +
                                            size_t{outbound_pages_} * protocol::kPageSize);
}

}  // namespace vbus::mock::testing
