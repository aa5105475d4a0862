#include "test/sim/sim_backend.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"

namespace vbus::sim {

SimBackend::SimBackend(mock::GuestMemory* memory, PagePool* pool, SimBackendPeer* peer)
    : memory_(memory), pool_(pool), peer_(peer) {}

SimBackend::~SimBackend() {
  // Runs still out belong to whoever destroys them later; the pool gets them back here.
  records_.clear();
  held_.clear();
}

absl::Status SimBackend::Start(BackendListener* listener) {
  (void)listener;  // the world feeds the executor's inputs itself
  return absl::OkStatus();
}

ContactInfo SimBackend::contact_info() const { return memory_->GuestContactInfo(); }

absl::Status SimBackend::PostMessage(const v1::ControlMessage& message) {
  return peer_->BackendPost(message);
}

void SimBackend::SetConnection(const NegotiatedConnection& connection) {
  peer_->BackendConnection(connection);
}

absl::Status SimBackend::SignalHost(const ChannelSignal& signal) {
  if (signal.relid == 0 || signal.relid >= kEventFlagCount) {
    return absl::InvalidArgumentError(absl::StrCat("signal for relid ", signal.relid));
  }
  if (!peer_->BackendLinkUp()) return absl::UnavailableError("the link to the host is down");
  // The platform's whole signal: the interrupt bit, then the monitor trigger or the doorbell.
  absl::StatusOr<mock::GuestMemory::Signalled> signalled = memory_->SignalChannel(
      signal.relid,
      signal.monitor_allocated ? std::optional<uint32_t>(signal.monitor_id) : std::nullopt);
  if (!signalled.ok()) return signalled.status();
  peer_->BackendSignal(signal);
  return absl::OkStatus();
}

absl::Span<uint8_t> SimBackend::ReceiveEventFlags(uint32_t vp) {
  return memory_->GuestEventFlags(vp);
}

absl::StatusOr<Pages> SimBackend::AllocatePages(size_t count, PageSharing /*sharing*/) {
  absl::StatusOr<Pages> run = pool_->Allocate(count);
  if (!run.ok()) return run.status();
  uint8_t* const data = run->data();
  SimAllocation record;
  record.data = data;
  record.pfns.assign(run->pfns().begin(), run->pfns().end());
  record.tag = tag_;
  std::vector<uint64_t> pfns = record.pfns;
  records_.emplace(data, std::move(record));
  held_.emplace(data, *std::move(run));
  return Pages(data, std::move(pfns), this);
}

const SimAllocation* SimBackend::Describe(absl::Span<const uint64_t> pfns, uint32_t gpadl) {
  for (auto& [data, record] : records_) {
    if (!std::equal(pfns.begin(), pfns.end(), record.pfns.begin(), record.pfns.end())) continue;
    if (record.gpadl != 0) return nullptr;
    record.gpadl = gpadl;
    by_gpadl_[gpadl] = data;
    return &record;
  }
  return nullptr;
}

const SimAllocation* SimBackend::FindByGpadl(uint32_t gpadl) const {
  auto it = by_gpadl_.find(gpadl);
  if (it == by_gpadl_.end()) return nullptr;
  auto r = records_.find(it->second);
  return r == records_.end() ? nullptr : &r->second;
}

void SimBackend::ReleasePages(uint8_t* data, absl::Span<const uint64_t> pfns) {
  (void)pfns;
  auto r = records_.find(data);
  if (r == records_.end()) return;  // not ours: the pool aborts on a bad release anyway
  if (!quiet_) peer_->BackendFree(r->second);
  if (r->second.gpadl != 0) by_gpadl_.erase(r->second.gpadl);
  records_.erase(r);
  held_.erase(data);  // back to the pool
}

}  // namespace vbus::sim
