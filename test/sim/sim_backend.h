// SimBackend: the vbus::Backend of the simulated guest. The production BusExecutor and its
// Channels reach the simulated world only through it, exactly as they reach MockBackend or a
// hypervisor in a real guest:
//   - PostMessage hands each control message to the world's guest → host transport;
//   - SetConnection reports the negotiated connection to the world (which checks it);
//   - SignalHost sets the relid's bit in the host event page and rings the host's doorbell on
//     a 0 → 1 transition (or sets the monitor trigger bit of a monitored channel), then tells
//     the world (which may let the host react at once); Unavailable while the link is down;
//   - ReceiveEventFlags(vp) is VP vp's part of the guest event page of the simulated guest
//     memory (the simulated guest takes events on several VPs);
//   - AllocatePages hands out runs of the world's PagePool and keeps a record of each run
//     until the executor destroys its Pages: what it was allocated for (tagged by the world
//     around the executor call that allocates) and which GPADL describes it. The world checks
//     every free (SimBackendPeer::BackendFree) before the pages go back to the pool.
// Start, Stop, PauseDelivery and ResumeDelivery do nothing: the world feeds the executor's
// inputs itself, in scheduled steps.
//
// Single-threaded, like the rest of the simulation.
#ifndef VBUS_TEST_SIM_SIM_BACKEND_H_
#define VBUS_TEST_SIM_SIM_BACKEND_H_

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "backends/backend.h"
#include "backends/page_pool.h"
#include "backends/pages.h"
#include "core/data/event_page.h"
#include "core/state/bus_ids.h"
#include "mock/guest_memory.h"
#include "proto/control.pb.h"

namespace vbus::sim {

// AllocationTag: what the executor call that allocates is doing (set by the world around it).
struct AllocationTag {
  OfferId offer;
  uint64_t session = 0;  // the rings of this open attempt
  uint64_t call = 0;     // the memory of this CreateGpadl call
};

// SimAllocation: one run of pages the executor holds.
struct SimAllocation {
  uint8_t* data = nullptr;
  std::vector<uint64_t> pfns;
  AllocationTag tag;
  // The GPADL whose GpadlCreate described these pages (0 until one did).
  uint32_t gpadl = 0;
};

// SimBackendPeer: the world behind the backend.
class SimBackendPeer {
 public:
  // A control message the guest posts; the transport's answer (OK: accepted).
  virtual absl::Status BackendPost(const v1::ControlMessage& message) = 0;
  virtual void BackendConnection(const NegotiatedConnection& connection) = 0;
  // Whether the link to the host is up (signals fail with Unavailable while it is down).
  virtual bool BackendLinkUp() const = 0;
  // The guest signalled the host (the event bit or monitor bit is set, the doorbell rung).
  virtual void BackendSignal(const ChannelSignal& signal) = 0;
  // The executor lets go of `allocation`; its pages go back to the pool right after.
  virtual void BackendFree(const SimAllocation& allocation) = 0;

 protected:
  ~SimBackendPeer() = default;
};

class SimBackend final : public Backend, private PageReleaser {
 public:
  // `memory`, `pool` and `peer` must outlive the backend.
  SimBackend(mock::GuestMemory* memory, PagePool* pool, SimBackendPeer* peer);
  ~SimBackend() override;
  SimBackend(const SimBackend&) = delete;
  SimBackend& operator=(const SimBackend&) = delete;

  // ---- Backend --------------------------------------------------------------------------
  absl::Status Start(BackendListener* listener) override;
  void Stop() override {}
  ContactInfo contact_info() const override;
  absl::Status PostMessage(const v1::ControlMessage& message) override;
  void SetConnection(const NegotiatedConnection& connection) override;
  void PauseDelivery() override {}
  void ResumeDelivery() override {}
  absl::Status SignalHost(const ChannelSignal& signal) override;
  uint32_t vp_count() const override { return memory_->layout().vp_count; }
  absl::Span<uint8_t> ReceiveEventFlags(uint32_t vp) override;
  absl::StatusOr<Pages> AllocatePages(size_t count, PageSharing sharing) override;

  // ---- For the world ----------------------------------------------------------------------
  // Tags the allocations made until ClearTag.
  void SetTag(AllocationTag tag) { tag_ = tag; }
  void ClearTag() { tag_ = AllocationTag(); }
  // The runs out now, by their first byte.
  const std::map<const uint8_t*, SimAllocation>& allocations() const { return records_; }
  // Files the run whose PFNs are exactly `pfns` under GPADL `gpadl` (a GpadlCreate describes
  // it); nullptr (nothing filed) if no run has those PFNs or one is already described.
  const SimAllocation* Describe(absl::Span<const uint64_t> pfns, uint32_t gpadl);
  // The run GPADL `gpadl` describes, or nullptr.
  const SimAllocation* FindByGpadl(uint32_t gpadl) const;
  // Frees pages without asking the peer (at teardown).
  void set_quiet(bool quiet) { quiet_ = quiet; }

 private:
  // PageReleaser: the executor destroyed a Pages this backend handed out.
  void ReleasePages(uint8_t* data, absl::Span<const uint64_t> pfns) override;

  mock::GuestMemory* const memory_;
  PagePool* const pool_;
  SimBackendPeer* const peer_;
  AllocationTag tag_;
  bool quiet_ = false;
  // The pool's own Pages of each run (freed to the pool when erased) and its record.
  std::map<const uint8_t*, Pages> held_;
  std::map<const uint8_t*, SimAllocation> records_;
  std::map<uint32_t, const uint8_t*> by_gpadl_;
};

}  // namespace vbus::sim

#endif  // VBUS_TEST_SIM_SIM_BACKEND_H_
