#include "hyperv/synic.h"

#include <atomic>
#include <cstring>
#include <utility>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vbus::hyperv {

namespace {

absl::Status Annotate(const absl::Status& s, uint32_t vp, const std::string& step) {
  return absl::Status(s.code(), absl::StrCat("SynIC on VP ", vp, ", ", step, ": ", s.message()));
}

}  // namespace

SynicOptions SynicOptionsFor(const HyperVInfo& info, uint8_t vector) {
  SynicOptions options;
  options.vector = vector;
  options.auto_eoi = !info.deprecate_auto_eoi();
  return options;
}

absl::StatusOr<std::unique_ptr<Synic>> Synic::Create(HvPlatform& platform, SynicOptions options) {
  if (options.vector < kSintMinVector) {
    return absl::InvalidArgumentError(absl::StrCat("SynIC: vector ", options.vector, " is below ",
                                                   kSintMinVector,
                                                   " (an unmasked SINT would #GP)"));
  }
  if (options.sint >= kSintCount) {
    return absl::InvalidArgumentError(
        absl::StrCat("SynIC: SINT ", options.sint, " does not exist (0..", kSintCount - 1, ")"));
  }
  std::vector<Vp> vps(platform.vp_count());
  for (Vp& vp : vps) {
    absl::StatusOr<Pages> pages = platform.AllocatePages(2);
    if (!pages.ok()) return pages.status();
    vp.pages = *std::move(pages);
  }
  return std::unique_ptr<Synic>(new Synic(platform, options, std::move(vps)));
}

Synic::~Synic() {
  for (size_t vp = 0; vp < vps_.size(); ++vp) {
    ABSL_RAW_CHECK(!vps_[vp].enabled, "Synic destroyed while a VP's SynIC is enabled");
  }
}

uint64_t Synic::message_page_gpa(uint32_t vp) const {
  return vp < vps_.size() ? vps_[vp].pages.pfns()[0] << kMsrPfnShift : 0;
}

uint64_t Synic::event_flags_page_gpa(uint32_t vp) const {
  return vp < vps_.size() ? vps_[vp].pages.pfns()[1] << kMsrPfnShift : 0;
}

absl::Span<uint8_t> Synic::EventFlags(uint32_t vp) {
  if (vp >= vps_.size()) return {};
  return {vps_[vp].pages.page(1) + options_.sint * kEventFlagsBlockBytes, kEventFlagsBlockBytes};
}

HvMessage* Synic::Slot(uint32_t vp) {
  return reinterpret_cast<HvMessage*>(vps_[vp].pages.page(0)) + options_.sint;
}

absl::Status Synic::Modify(uint32_t vp, uint32_t msr, uint64_t keep, uint64_t set) {
  absl::StatusOr<uint64_t> old = platform_.ReadMsr(vp, msr);
  if (!old.ok()) return Annotate(old.status(), vp, absl::StrCat("reading ", MsrName(msr)));
  const uint64_t value = (*old & keep) | set;
  absl::Status s = platform_.WriteMsr(vp, msr, value);
  if (!s.ok()) {
    return Annotate(s, vp, absl::StrFormat("writing %s = 0x%X", MsrName(msr), value));
  }
  return absl::OkStatus();
}

absl::Status Synic::Do(uint32_t vp, Step step, std::function<void()>* handler) {
  const uint32_t sint_msr = MsrSint(options_.sint);
  switch (step) {
    case Step::kHandler: {
      absl::Status s = platform_.RegisterInterrupt(vp, options_.vector, std::move(*handler));
      return s.ok() ? s : Annotate(s, vp, "registering the interrupt handler");
    }
    case Step::kSimp:
      // The PFN bits are replaced; bits 11:1 keep what the hypervisor had there.
      return Modify(vp, kMsrSimp, kSynicPagePreserve, message_page_gpa(vp) | kSynicPageEnable);
    case Step::kSiefp:
      return Modify(vp, kMsrSiefp, kSynicPagePreserve, event_flags_page_gpa(vp) | kSynicPageEnable);
    case Step::kSint:
      // Vector, unmasked, auto-EOI as configured, no polling; proxy and reserved bits as read.
      return Modify(vp, sint_msr, ~(kSintVectorMask | kSintMasked | kSintAutoEoi | kSintPolling),
                    uint64_t{options_.vector} | (options_.auto_eoi ? kSintAutoEoi : 0));
    case Step::kScontrol:
      return Modify(vp, kMsrScontrol, ~uint64_t{0}, kScontrolEnable);
  }
  return absl::InternalError("unknown SynIC step");
}

absl::Status Synic::Undo(uint32_t vp, Step step) {
  switch (step) {
    case Step::kHandler:
      platform_.UnregisterInterrupt(vp, options_.vector);
      return absl::OkStatus();
    case Step::kSimp:
      return Modify(vp, kMsrSimp, kSynicPagePreserve, 0);
    case Step::kSiefp:
      return Modify(vp, kMsrSiefp, kSynicPagePreserve, 0);
    case Step::kSint:
      return Modify(vp, MsrSint(options_.sint), ~uint64_t{0}, kSintMasked);
    case Step::kScontrol:
      return Modify(vp, kMsrScontrol, ~kScontrolEnable, 0);
  }
  return absl::InternalError("unknown SynIC step");
}

absl::Status Synic::Enable(uint32_t vp, std::function<void()> on_interrupt) {
  if (vp >= vps_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SynIC: VP ", vp, " out of range (", vps_.size(), " VPs)"));
  }
  if (vps_[vp].enabled) {
    return absl::FailedPreconditionError(absl::StrCat("SynIC on VP ", vp, " is already enabled"));
  }
  // The hypervisor writes nothing to the pages while SIMP and SIEFP are disabled, so clearing
  // them here races with nobody.
  std::memset(vps_[vp].pages.data(), 0, vps_[vp].pages.size_bytes());
  for (size_t done = 0; done < kEnableOrder.size(); ++done) {
    absl::Status s = Do(vp, kEnableOrder[done], &on_interrupt);
    if (s.ok()) continue;
    for (size_t i = done; i > 0; --i) Undo(vp, kEnableOrder[i - 1]).IgnoreError();
    return s;
  }
  vps_[vp].enabled = true;
  return absl::OkStatus();
}

absl::Status Synic::Disable(uint32_t vp) {
  if (vp >= vps_.size() || !vps_[vp].enabled) return absl::OkStatus();
  absl::Status first;
  for (size_t i = kEnableOrder.size(); i > 0; --i) {
    absl::Status s = Undo(vp, kEnableOrder[i - 1]);
    if (first.ok()) first = s;
  }
  vps_[vp].enabled = false;
  return first;
}

absl::StatusOr<std::optional<SynicMessage>> Synic::TakeMessage(uint32_t vp) {
  if (vp >= vps_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("SynIC: VP ", vp, " out of range"));
  }
  HvMessage* slot = Slot(vp);
  std::atomic_ref<uint32_t> type(slot->header.message_type);
  // [HV-G1] acquire: pairs with the hypervisor's release store of message_type when it fills
  // the slot ([HV-H1] in the fake), so the payload it wrote before is visible to the copy.
  const uint32_t message_type = type.load(std::memory_order_acquire);
  if (message_type == kMessageTypeNone) return std::nullopt;

  // 1. The private copy. The hypervisor does not touch these fields while the slot is busy;
  //    message_flags it may change (MessagePending), so it is read atomically in step 3 only.
  SynicMessage message;
  message.message_type = message_type;
  message.sender = slot->header.sender;
  const uint8_t payload_size = slot->header.payload_size;
  std::memcpy(message.payload.data(), slot->payload, kMessagePayloadBytes);

  // 2. Release the slot with an atomic exchange (a full barrier), then 3. read
  //    MessagePending. The hypervisor does the mirror image: it sets MessagePending, then
  //    looks at message_type again. All four are seq_cst, so in their single order either
  //    the load of step 3 comes after the hypervisor set MessagePending (the guest writes
  //    EOM) or the hypervisor's second look comes after the exchange (it sees the empty slot
  //    and fills it): a queued message is never stranded (docs/hyperv.md §5).
  // [HV-G2] seq_cst exchange: the guest's half of that pair with [HV-H3]/[HV-H4]; its release
  // half also pairs with the hypervisor's acquire look at the slot [HV-H2], so the copy above
  // happens before the next message overwrites the slot.
  type.exchange(kMessageTypeNone, std::memory_order_seq_cst);
  // [HV-G3] seq_cst load of MessagePending: after [HV-G2] in the single order (see above).
  const uint8_t flags =
      std::atomic_ref<uint8_t>(slot->header.message_flags).load(std::memory_order_seq_cst);
  if ((flags & kMessageFlagPending) != 0) {
    absl::Status eom = platform_.WriteMsr(vp, kMsrEom, 0);
    if (!eom.ok()) return Annotate(eom, vp, "writing EOM");
  }
  if (payload_size > kMessagePayloadBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("SynIC on VP ", vp, ": message type ", message_type, " with payload_size ",
                     payload_size, " (at most ", kMessagePayloadBytes, "); dropped"));
  }
  message.payload_size = payload_size;
  return message;
}

}  // namespace vbus::hyperv
