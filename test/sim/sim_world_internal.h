// The simulated world behind RunSimulation (sim_world.h). Private to test/sim.
//
// Source files:
//   sim_world.cc   setup, the step loop, settling, the scenario, transports, interrupts, trace
//   sim_guest.cc   the guest runtime: calls into BusState, its actions, channels and packets
//   sim_host.cc    the host runtime: HostEngine actions, ring mapping, HostControl steps
//   sim_checks.cc  the invariants (after every step, at settle points, at the end)
#ifndef VBUS_TEST_SIM_SIM_WORLD_INTERNAL_H_
#define VBUS_TEST_SIM_SIM_WORLD_INTERNAL_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "backends/page_pool.h"
#include "backends/pages.h"
#include "core/bus_actions.h"
#include "core/bus_ids.h"
#include "core/bus_state.h"
#include "core/channel_table.h"
#include "core/event_page.h"
#include "core/guid.h"
#include "core/ring_buffer.h"
#include "mock/guest_memory.h"
#include "mock/host/data_plane.h"
#include "mock/host/engine.h"
#include "proto/control.pb.h"
#include "proto/mock_host.pb.h"
#include "test/sim/sim_rng.h"
#include "test/sim/sim_scheduler.h"
#include "test/sim/sim_world.h"

namespace vbus::sim {

// How long something takes, per seed.
enum class DelayMode { kZero, kSmall, kWide };

// SimConfig: everything a seed decides up front.
struct SimConfig {
  uint32_t guest_max_version = 0;
  uint32_t host_max_version = 0;
  DelayMode to_host = DelayMode::kSmall;
  DelayMode to_guest = DelayMode::kSmall;
  DelayMode interrupts = DelayMode::kSmall;
  // Interrupts may be dropped (with this probability each); then both sides poll.
  bool drops = false;
  double drop_probability = 0;
  bool polling = false;
  absl::Duration guest_poll;
  absl::Duration host_poll;
  // The host maps rings after a delay instead of at once.
  bool async_map = false;
  // Calls get deadlines short enough to expire; otherwise no call may time out.
  bool tight_deadlines = false;
  // Offers may ask for monitored signalling (the guest sets monitor bits, the host scans them).
  bool monitored_offers = false;
  uint32_t monitor_latency_us = 100;
  bool remap_relids = false;
  // The GuestLink may break mid-round (both sides see it end; the guest re-attaches).
  bool link_loss = false;
  // Packets the guest reads per step before continuing in a later step (0 = all).
  size_t drain_budget = 0;
  // The guest unmasks (and re-checks) in a step of its own after finding its ring empty.
  bool split_unmask = false;
  int rounds = 1;
  int ops_per_round = 30;
  // Scenario steps come at most this many microseconds apart (small: many at once in flight).
  uint32_t op_gap_us = 400;

  std::string Describe() const;
};

enum class DeviceKind { kEcho, kRaw, kOther };

// HostOffer: who the host said a relid is, parsed once from its Offer message.
struct HostOffer {
  Guid type;
  Guid instance;
  uint32_t sub_channel_index = 0;
};

// One packet as it must arrive: payload padded with zeros to 8 bytes (rings carry no unpadded
// length).
struct SimPacket {
  uint64_t trans_id = 0;
  uint16_t type = 0;
  uint16_t flags = 0;
  std::vector<uint8_t> payload;  // as sent (unpadded) in send queues; padded in expectations
};

// Session: one open attempt of one channel, from the Open call until both sides let go.
struct Session {
  uint64_t id = 0;
  OfferId offer;
  uint32_t relid = 0;
  uint32_t ring_gpadl = 0;
  DeviceKind device = DeviceKind::kOther;
  bool guest_open = false;   // the Open completed OK
  bool guest_ended = false;  // retired (or the open failed before publishing)
  bool host_mapped = false;
  bool host_ended = false;
  std::deque<SimPacket> echo_expect;   // guest → echo device → guest
  std::deque<SimPacket> host_expect;   // guest → raw host
  std::deque<SimPacket> guest_expect;  // raw host → guest
  uint64_t next_trans_id = 1;
  uint64_t next_host_trans_id = 1;
  // Largest payload the host may write into the guest's inbound ring.
  size_t max_host_payload = 0;
  // What the host's data plane must count for this channel once everything has arrived.
  uint64_t guest_packets = 0;  // written by the guest
  uint64_t guest_bytes = 0;    // (padded, as the host reads them)
  uint64_t host_packets = 0;   // written by the host (echo replies received, raw sends)
  uint64_t host_bytes = 0;
  // The target VP the host must have (known from 5.3, where ModifyChannel is answered).
  uint32_t target_vp = 0;
  bool target_vp_known = true;

  bool both_open() const { return guest_open && !guest_ended && host_mapped && !host_ended; }
};

class World;

// SimChannel: the guest runtime's channel object, published in the ChannelTable.
class SimChannel final : public EventTarget {
 public:
  SimChannel(World* world, OfferId offer, uint32_t relid, uint64_t session)
      : world_(world), offer_(offer), relid_(relid), session_(session) {}
  void OnEvent(uint32_t relid) override;

  World* const world_;
  const OfferId offer_;
  const uint32_t relid_;
  const uint64_t session_;
  DeviceKind device_ = DeviceKind::kOther;
  std::optional<uint32_t> monitor_id_;
  std::optional<OutgoingRing> out_;
  std::optional<IncomingRing> in_;
  std::vector<uint8_t> scratch_;
  std::deque<SimPacket> send_queue_;
  size_t max_payload_ = 0;
  // The inbound ring's control page (to see the host's pending_send_sz).
  RingControlPage* inbound_control_ = nullptr;
  // A drain continuation (budget or split unmask) is scheduled; interrupts stay masked.
  bool continuation_pending_ = false;
};

class World {
 public:
  explicit World(const SimOptions& options);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  SimResult Run();

  // From SimChannel::OnEvent (inside a dispatch section).
  void OnChannelEvent(SimChannel& channel);

 private:
  // A call the guest made, until its Complete.
  struct Issued {
    RequestKind kind = RequestKind::kConnect;
    OfferId offer;
    absl::Time deadline;
    bool completed = false;
    // The deadline was short enough to expire (only then may the call time out).
    bool tight = false;
    uint32_t filed_gpadl = 0;  // memory filed for this call's new GPADL
    uint32_t target_vp = 0;    // ModifyChannel
  };
  // Memory the guest runtime handed to a GPADL, until its ReleaseGpadl.
  struct FiledGpadl {
    Pages pages;
    OfferId offer;
    uint32_t relid = 0;
    bool ring = false;
  };
  // An Open in progress: where its rings are, until PublishChannel.
  struct PendingOpen {
    uint8_t* base = nullptr;
    uint32_t outbound_pages = 0;
    uint32_t inbound_pages = 0;
    uint64_t session = 0;
    RequestId request;
  };
  // A guest offer the runtime knows (OfferAdded until ReleaseOffer).
  struct GuestOffer {
    OfferInfo info;
    DeviceKind device = DeviceKind::kOther;
    bool removed = false;
  };
  // Reply ledger keys: (kind, a, b).
  enum LedgerKind {
    kVersion,
    kAllOffers,
    kGpadlCreated,
    kGpadlTorndown,
    kOpenResult,
    kModify,
    kUnload
  };
  using LedgerKey = std::tuple<int, uint32_t, uint32_t>;

  // ---- sim_world.cc: loop, transports, interrupts, scenario, trace ----
  void ChooseConfig();
  absl::Status Setup();
  // Attaches the guest to the host engine (again after a link loss): a new host mapping of
  // the guest memory, a new guest id and data plane.
  absl::Status AttachHost();
  void Scenario();
  bool RunUntilSettled(absl::string_view phase, absl::Duration budget);
  void RunStep();
  bool DataQuiescent() const;
  std::string Unsettled() const;
  void Fail(std::string what);
  void Trace(std::string line);
  std::string Now() const;
  absl::Duration Delay(DelayMode mode);
  void SendToHost(v1::ControlMessage message);
  void DeliverToHost();
  void SendToGuest(v1::ControlMessage message);
  void DeliverToGuest();
  void CheckDoorbells();
  void RaiseInterrupt(bool to_guest);
  void GuestInterrupt(absl::string_view why);
  void HostInterrupt(absl::string_view why);
  void SchedulePoll(bool guest);
  void ScheduleHostMonitorScan();
  void ScheduleChaos(int ops);
  void RunOp();
  bool CloseEverything();
  bool Unload(absl::string_view phase);
  bool UnloadAndReconnect();
  bool Connect();

  // ---- sim_guest.cc: the guest runtime ----
  absl::Time Deadline();
  // Makes a BusState call: records it, files `memory` under the GPADL it creates (if any),
  // then carries out its actions.
  RequestId GuestCall(RequestKind kind, OfferId offer, absl::Time deadline,
                      const std::function<RequestId(Actions*)>& call, Pages memory = Pages(),
                      std::optional<PendingOpen> open = std::nullopt);
  void ExecuteGuest(Actions actions);
  void OnPublish(const PublishChannel& p);
  void OnRetire(const RetireChannel& r);
  void OnReleaseGpadl(const ReleaseGpadl& r);
  void OnComplete(const Complete& c);
  void OnIgnored(const InputIgnored& i);
  void ReleaseLater(OfferId offer);
  void GuestDrain(SimChannel& channel);
  bool GuestCommitRead(SimChannel& channel);
  bool GuestUnmask(SimChannel& channel);
  void ContinueDrainLater(SimChannel& channel, bool unmask);
  void GuestHandlePacket(SimChannel& channel, const PacketView& packet);
  void GuestTrySend(SimChannel& channel);
  void GuestSignal(SimChannel& channel);
  DeviceKind DeviceOf(const Guid& type) const;
  std::vector<OfferId> ActiveOffers() const;
  void OpOpen();
  void OpClose();
  void OpCreateGpadl();
  void OpTeardownGpadl();
  void OpModify();
  void OpTraffic();
  std::vector<uint8_t> RandomPayload(size_t max);

  // ---- sim_host.cc: the host runtime ----
  void ExecuteHost(mock::Actions actions);
  void OnEngineEvent(const v1::ProtocolEvent& event);
  void MapRings(const mock::MapRings& map);
  void OnHostPacket(const v1::GuestPacket& packet);
  void OnDataPlaneEvent(const v1::ProtocolEvent& event);
  void HostTrySend(uint32_t relid);
  v1::OfferSpec RandomSpec();
  void OpRescind();
  void OpHotAdd();
  void OpHostRaw();
  void OpRefuse();
  void OpLinkLoss();
  void ForgeEarlyRelease(uint32_t relid);

  // ---- sim_checks.cc: invariants ----
  void CheckStep();
  void CheckSettled();
  void CheckFinal();
  void LedgerRequest(const v1::ControlMessage& message);
  bool LedgerReply(const v1::ControlMessage& message);
  bool ExpectPacket(std::deque<SimPacket>& expect, const SimPacket& got, absl::string_view what);
  bool InFlightToHost(const std::function<bool(const v1::ControlMessage&)>& match) const;

  // ---- State ----
  const SimOptions options_;
  SimRng rng_;       // configuration and scenario choices
  SimRng link_rng_;  // delays and drops (a separate stream)
  SimConfig config_;
  SimScheduler sched_;
  SimStats stats_;
  bool failed_ = false;
  std::string failure_;
  uint64_t failed_step_ = 0;
  std::deque<std::string> trace_;
  bool fault_fired_ = false;

  // Guest side. Member order matters for destruction: pages before the pool before memory.
  std::unique_ptr<mock::GuestMemory> memory_;  // the guest's mapping
  std::optional<PagePool> pool_;
  std::optional<EventPage> guest_events_;  // host → guest bits
  std::optional<EventPage> host_events_;   // guest → host bits
  std::unique_ptr<BusState> bus_;
  ChannelTable table_;
  std::optional<ChannelTable::Dispatcher> dispatcher_;
  std::map<OfferId, GuestOffer> offers_;
  std::map<OfferId, PendingOpen> pending_opens_;
  std::map<OfferId, std::unique_ptr<SimChannel>> channels_;  // published
  std::map<uint32_t, FiledGpadl> filed_;                     // by GPADL handle
  std::set<uint32_t> created_handles_;                       // sent in a GpadlCreate
  std::set<uint32_t> released_handles_;
  std::map<RequestId, Issued> issued_;
  std::map<RequestId, SimScheduler::EventId> timers_;
  uint32_t negotiated_version_ = 0;

  // Sessions (both sides).
  uint64_t next_session_ = 1;
  std::map<uint64_t, Session> sessions_;
  std::map<uint32_t, uint64_t> session_by_ring_gpadl_;
  std::map<uint32_t, uint64_t> host_session_by_relid_;

  // Transports: control messages in flight, in order, per direction.
  std::deque<v1::ControlMessage> to_host_;
  std::deque<v1::ControlMessage> to_guest_;
  absl::Time to_host_tail_;
  absl::Time to_guest_tail_;
  // Interrupts.
  uint32_t guest_bell_seen_ = 0;
  uint32_t host_bell_seen_ = 0;
  bool guest_irq_pending_ = false;
  bool host_irq_pending_ = false;

  // Host side.
  std::unique_ptr<mock::HostEngine> engine_;
  std::unique_ptr<mock::GuestDataPlane> plane_;
  std::string guest_id_;
  std::map<uint32_t, std::vector<uint64_t>> host_mapped_pfns_;  // by relid
  std::map<uint32_t, std::deque<SimPacket>> host_raw_queue_;    // by relid
  std::set<uint32_t> host_raw_retry_;
  std::map<uint32_t, HostOffer> host_offers_;  // the last offer the host sent per relid
  std::set<uint32_t> host_rescinded_;          // rescinded, RelidReleased not yet processed
  std::set<uint32_t> released_relids_;         // sent in a RelidReleased, not offered since
  // The guest message the engine is handling (to judge its refusals), and its relid's state
  // before.
  bool host_input_active_ = false;
  std::string host_input_;
  std::optional<mock::HostEngine::ChannelState> host_input_prior_;
  uint32_t host_input_relid_ = 0;
  bool host_input_fault_ = false;  // an injected refusal fired while handling it
  // The host message the guest is handling: whether it is a reply the ledger accepted.
  bool guest_input_is_reply_ = false;

  // Reply ledger: requests the host received, replies the guest received.
  std::map<LedgerKey, uint64_t> ledger_requests_;
  std::map<LedgerKey, uint64_t> ledger_replies_;

  // Scenario.
  int ops_left_ = 0;
  bool in_unload_ = false;
  bool link_lost_this_round_ = false;
  // Bumped when the link breaks: deliveries and mappings of an older link are void.
  uint64_t link_epoch_ = 0;
};

}  // namespace vbus::sim

#endif  // VBUS_TEST_SIM_SIM_WORLD_INTERNAL_H_
