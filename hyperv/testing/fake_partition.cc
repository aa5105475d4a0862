#include "hyperv/testing/fake_partition.h"

#include <atomic>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vbus::hyperv::testing {

std::string FaultKindName(FakeFault::Kind kind) {
  switch (kind) {
    case FakeFault::Kind::kGeneralProtection:
      return "#GP";
    case FakeFault::Kind::kReservedBitsChanged:
      return "reserved bits changed";
    case FakeFault::Kind::kUnbackedPage:
      return "page outside guest memory";
    case FakeFault::Kind::kSpuriousInterrupt:
      return "spurious interrupt";
    case FakeFault::Kind::kHypercallPageDisabled:
      return "hypercall without the hypercall page";
  }
  return "fault";
}

FakePartition::FakePartition(Config config, const FakeGuestMemory* memory)
    : config_(config), memory_(memory), vps_(config.vp_count) {
  const bool pattern = config_.reserved_bit_pattern;
  hypercall_ = pattern ? kPageMsrPattern : 0;
  for (Vp& v : vps_) {
    v.scontrol = pattern ? kScontrolPattern : 0;
    v.simp = pattern ? kPageMsrPattern : 0;
    v.siefp = pattern ? kPageMsrPattern : 0;
    v.sint.fill(kSintResetValue | (pattern ? kSintPattern : 0));
  }
}

void FakePartition::RecordFault(FakeFault::Kind kind, uint32_t vp, std::string what) {
  faults_.push_back(FakeFault{kind, vp, std::move(what)});
}

absl::Status FakePartition::Fault(uint32_t vp, std::string what) {
  absl::Status gp = absl::InvalidArgumentError(absl::StrCat("#GP: ", what));
  RecordFault(FakeFault::Kind::kGeneralProtection, vp, std::move(what));
  return gp;
}

void FakePartition::CheckPreserved(uint32_t vp, uint32_t msr, uint64_t old, uint64_t value,
                                   uint64_t preserve) {
  if (((old ^ value) & preserve) == 0) return;
  RecordFault(FakeFault::Kind::kReservedBitsChanged, vp,
              absl::StrFormat("WRMSR %s = 0x%X changes preserved bits 0x%X (were 0x%X)",
                              MsrName(msr), value, (old ^ value) & preserve, old & preserve));
}

void FakePartition::CheckBacked(uint32_t vp, uint32_t msr, uint64_t value, uint64_t enable) {
  if ((value & enable) == 0) return;
  if (memory_->Translate(value & kMsrPfnMask, protocol::kPageSize) != nullptr) return;
  RecordFault(FakeFault::Kind::kUnbackedPage, vp,
              absl::StrFormat("WRMSR %s = 0x%X: page GPA 0x%X is outside guest memory",
                              MsrName(msr), value, value & kMsrPfnMask));
}

uint8_t* FakePartition::PageOf(uint64_t msr_value) const {
  if ((msr_value & kSynicPageEnable) == 0) return nullptr;
  return memory_->Translate(msr_value & kMsrPfnMask, protocol::kPageSize);
}

absl::StatusOr<uint64_t> FakePartition::ReadMsr(uint32_t vp, uint32_t msr) {
  const Vp& v = vps_[vp];
  switch (msr) {
    case kMsrGuestOsId:
      return guest_os_id_;
    case kMsrHypercall:
      return hypercall_;
    case kMsrVpIndex:
      return uint64_t{vp};
    case kMsrScontrol:
      return v.scontrol;
    case kMsrSversion:
      return kSynicVersion;
    case kMsrSiefp:
      return v.siefp;
    case kMsrSimp:
      return v.simp;
    case kMsrEom:
      return uint64_t{0};
  }
  if (msr >= kMsrSint0 && msr < MsrSint(kSintCount)) return v.sint[msr - kMsrSint0];
  return Fault(vp, absl::StrFormat("RDMSR of unknown MSR 0x%08X", msr));
}

absl::Status FakePartition::WriteMsr(uint32_t vp, uint32_t msr, uint64_t value) {
  writes_.push_back(FakeMsrWrite{vp, msr, value, false});
  absl::Status s = absl::OkStatus();
  Vp& v = vps_[vp];
  switch (msr) {
    case kMsrGuestOsId:
      guest_os_id_ = value;
      if (value == 0) hypercall_ &= ~kHypercallMsrEnable;
      break;
    case kMsrHypercall:
      if ((hypercall_ & kHypercallMsrLocked) != 0) break;  // locked: writes are ignored
      CheckPreserved(vp, msr, hypercall_, value, kHypercallMsrPreserve);
      hypercall_ = guest_os_id_ == 0 ? value & ~kHypercallMsrEnable : value;
      CheckBacked(vp, msr, hypercall_, kHypercallMsrEnable);
      break;
    case kMsrVpIndex:
    case kMsrSversion:
      s = Fault(vp, absl::StrFormat("WRMSR %s = 0x%X: read-only", MsrName(msr), value));
      break;
    case kMsrScontrol:
      CheckPreserved(vp, msr, v.scontrol, value, kScontrolPreserve);
      v.scontrol = value;
      break;
    case kMsrSiefp:
      CheckPreserved(vp, msr, v.siefp, value, kSynicPagePreserve);
      CheckBacked(vp, msr, value, kSynicPageEnable);
      v.siefp = value;
      break;
    case kMsrSimp:
      CheckPreserved(vp, msr, v.simp, value, kSynicPagePreserve);
      CheckBacked(vp, msr, value, kSynicPageEnable);
      v.simp = value;
      break;
    case kMsrEom:
      break;  // the retry below is the whole effect
    default:
      if (msr >= kMsrSint0 && msr < MsrSint(kSintCount)) {
        s = WriteSint(vp, msr - kMsrSint0, value);
      } else {
        s = Fault(vp, absl::StrFormat("WRMSR of unknown MSR 0x%08X = 0x%X", msr, value));
      }
  }
  if (!s.ok()) {
    writes_.back().faulted = true;
    return s;
  }
  // Any SynIC change (and EOM) may let a queued message in.
  if (msr != kMsrGuestOsId && msr != kMsrHypercall) TryDeliverAll(vp);
  return absl::OkStatus();
}

absl::Status FakePartition::WriteSint(uint32_t vp, uint32_t n, uint64_t value) {
  const uint32_t msr = MsrSint(n);
  const uint64_t vector = value & kSintVectorMask;
  if ((value & kSintMasked) == 0 && vector < kSintMinVector) {
    return Fault(vp, absl::StrFormat("WRMSR %s = 0x%X: vector %d is below %d and the SINT is "
                                     "unmasked",
                                     MsrName(msr), value, vector, kSintMinVector));
  }
  if ((value & kSintPolling) != 0 && !config_.sint_polling_available) {
    return Fault(vp, absl::StrFormat("WRMSR %s = 0x%X: polling bit set, but CPUID does not "
                                     "offer SINT polling",
                                     MsrName(msr), value));
  }
  CheckPreserved(vp, msr, vps_[vp].sint[n], value, kSintPreserve);
  vps_[vp].sint[n] = value;
  return absl::OkStatus();
}

absl::Status FakePartition::QueueMessage(uint32_t vp, uint32_t sint, uint32_t message_type,
                                         absl::Span<const uint8_t> payload, uint64_t sender) {
  if (vp >= vps_.size() || sint >= kSintCount) {
    return absl::InvalidArgumentError(
        absl::StrCat("QueueMessage: VP ", vp, " SINT ", sint, " out of range"));
  }
  if (payload.size() > kMessagePayloadBytes || message_type == kMessageTypeNone) {
    return absl::InvalidArgumentError(absl::StrCat("QueueMessage: type ", message_type, " with ",
                                                   payload.size(), " payload bytes"));
  }
  vps_[vp].queue[sint].push_back(
      Message{message_type, sender, std::vector<uint8_t>(payload.begin(), payload.end())});
  TryDeliver(vp, sint);
  return absl::OkStatus();
}

void FakePartition::TryDeliverAll(uint32_t vp) {
  for (uint32_t sint = 0; sint < kSintCount; ++sint) TryDeliver(vp, sint);
}

void FakePartition::TryDeliver(uint32_t vp, uint32_t sint) {
  Vp& v = vps_[vp];
  std::deque<Message>& queue = v.queue[sint];
  if (queue.empty() || !SynicOn(v)) return;
  uint8_t* page = PageOf(v.simp);
  if (page == nullptr) return;  // SIMP disabled (or unbacked: a recorded fault)
  auto* slot = reinterpret_cast<HvMessage*>(page) + sint;
  std::atomic_ref<uint32_t> type(slot->header.message_type);
  std::atomic_ref<uint8_t> flags(slot->header.message_flags);
  // [HV-H2] acquire: pairs with the release half of the guest's exchange emptying the slot
  // [HV-G2]: its copy of the old message happens before the overwrite below.
  if (type.load(std::memory_order_acquire) != kMessageTypeNone) {
    // Busy: ask for an EOM, then look again. With the guest's exchange [HV-G2] and its load of
    // MessagePending [HV-G3] (all seq_cst), either the guest sees MessagePending or the second
    // look sees the slot it emptied meanwhile (docs/hyperv.md §5).
    // [HV-H3] seq_cst OR: the hypervisor's store half of that pair.
    flags.fetch_or(kMessageFlagPending, std::memory_order_seq_cst);
    // [HV-H4] seq_cst load: its load half (acquire, as [HV-H2], when it finds the slot empty).
    if (type.load(std::memory_order_seq_cst) != kMessageTypeNone) return;
  }
  Message message = std::move(queue.front());
  queue.pop_front();
  slot->header.payload_size = static_cast<uint8_t>(message.payload.size());
  slot->header.reserved = 0;
  slot->header.sender = message.sender;
  std::memset(slot->payload, 0, kMessagePayloadBytes);
  if (!message.payload.empty()) {
    std::memcpy(slot->payload, message.payload.data(), message.payload.size());
  }
  // More waiting behind this one: the guest must EOM after taking it.
  flags.store(queue.empty() ? 0 : kMessageFlagPending, std::memory_order_relaxed);
  // [HV-H1] release: publishes the fields above to the guest's acquire load [HV-G1].
  type.store(message.type, std::memory_order_release);
  Raise(vp, sint);
}

void FakePartition::Raise(uint32_t vp, uint32_t sint) {
  const uint64_t value = vps_[vp].sint[sint];
  if ((value & kSintMasked) != 0) return;  // lost; the message or flag stays
  interrupts_.push_back(FakeInterrupt{vp, static_cast<uint8_t>(value & kSintVectorMask)});
}

absl::StatusOr<bool> FakePartition::SetEventFlag(uint32_t vp, uint32_t sint, uint32_t flag) {
  if (vp >= vps_.size() || sint >= kSintCount || flag >= kEventFlagsPerSint) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetEventFlag: VP ", vp, " SINT ", sint, " flag ", flag, " out of range"));
  }
  Vp& v = vps_[vp];
  uint8_t* page = PageOf(v.siefp);
  if (!SynicOn(v) || page == nullptr) {
    return HvStatusToStatus(kHvStatusInvalidSynicState,
                            absl::StrCat("SetEventFlag on VP ", vp, " SINT ", sint));
  }
  auto* word = reinterpret_cast<uint64_t*>(page + sint * kEventFlagsBlockBytes) + flag / 64;
  const uint64_t bit = uint64_t{1} << (flag % 64);
  // [HV-H5] acq_rel OR, as a host's signal: release pairs with the guest's test-and-clear
  // [EP-C1], publishing what the host wrote before (ring contents) to the scanner.
  const uint64_t before = std::atomic_ref<uint64_t>(*word).fetch_or(bit, std::memory_order_acq_rel);
  if ((before & bit) != 0) return false;
  Raise(vp, sint);
  return true;
}

void FakePartition::EndOfInterrupt(uint32_t vp, uint8_t vector) {
  const Vp& v = vps_[vp];
  for (uint32_t sint = 0; sint < kSintCount; ++sint) {
    const uint64_t value = v.sint[sint];
    if ((value & kSintVectorMask) == vector && (value & kSintAutoEoi) == 0) TryDeliver(vp, sint);
  }
}

std::vector<FakeInterrupt> FakePartition::TakeInterrupts() {
  return std::exchange(interrupts_, {});
}
std::vector<FakeFault> FakePartition::TakeFaults() { return std::exchange(faults_, {}); }
std::vector<FakeMsrWrite> FakePartition::TakeMsrWrites() { return std::exchange(writes_, {}); }

size_t FakePartition::queued_messages(uint32_t vp, uint32_t sint) const {
  if (vp >= vps_.size() || sint >= kSintCount) return 0;
  return vps_[vp].queue[sint].size();
}

}  // namespace vbus::hyperv::testing
