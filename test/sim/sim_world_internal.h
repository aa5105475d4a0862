// The simulated world behind RunSimulation (sim_world.h). Private to test/sim.
//
// Source files:
//   sim_world.cc      setup, the step loop (nested steps too), settling, the scenario's phases,
//                     the trace
//   sim_executor.cc   the production executor's wiring: ChannelLink, its logs, its wake-ups,
//                     its sometimes held-up thread, fault points
//   sim_transport.cc  the two control-message transports, interrupts and polls, and what the
//                     guest's backend reports (posts, the connection, signals)
//   sim_backend.cc    SimBackend: the vbus::Backend the production executor runs on
//   sim_calls.cc      the scenario's calls into the executor: CallDone, tickets that give up,
//                     and the checks on every result
//   sim_guest.cc      the guest application: offers, opens and closes, GPADLs, senders,
//                     receive callbacks (some of which block), polling
//   sim_host.cc       the host runtime: HostEngine actions, ring mapping, HostControl steps
//   sim_checks.cc     the invariants (after every step, at settle points, at the end, on every
//                     free of guest memory)
#ifndef VBUS_TEST_SIM_SIM_WORLD_INTERNAL_H_
#define VBUS_TEST_SIM_SIM_WORLD_INTERNAL_H_

#include <array>
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
#include "core/data/channel_table.h"
#include "core/data/guid.h"
#include "core/runtime/bus_executor.h"
#include "core/runtime/call_ticket.h"
#include "core/runtime/channel.h"
#include "core/runtime/event_dispatch.h"
#include "core/runtime/runtime_internal.h"
#include "core/state/bus_ids.h"
#include "core/state/bus_state.h"
#include "core/state/ignore_reason.h"
#include "hyperv/wire.h"
#include "mock/guest_memory.h"
#include "mock/host/data_plane.h"
#include "mock/host/engine.h"
#include "proto/control.pb.h"
#include "proto/mock_host.pb.h"
#include "test/sim/sim_backend.h"
#include "test/sim/sim_rng.h"
#include "test/sim/sim_scheduler.h"
#include "test/sim/sim_world.h"

namespace vbus::sim {

// Virtual processors the simulated guest takes events on: channels open on a random one and
// move between them (ModifyChannel), each with its own event flags, doorbell and dispatch.
inline constexpr uint32_t kSimVps = 4;

// A deadline no answer can miss: the longest message delay is a few milliseconds.
inline constexpr absl::Duration kGenerousDeadline = absl::Seconds(10);
// Settling may take at most this much virtual time while work is scheduled.
inline constexpr absl::Duration kSettleBudget = absl::Seconds(60);

// How long something takes, per seed.
enum class DelayMode { kZero, kSmall, kWide };

// SimConfig: everything a seed decides up front.
struct SimConfig {
  uint32_t guest_max_version = 0;
  uint32_t host_max_version = 0;
  DelayMode to_host = DelayMode::kSmall;
  DelayMode to_guest = DelayMode::kSmall;
  DelayMode interrupts = DelayMode::kSmall;
  // How long work posted to the executor waits in its queue.
  DelayMode executor_lag = DelayMode::kZero;
  // The executor's thread is sometimes held up for a while (scenario steps): its inputs —
  // host messages, posted calls, timers — wait and then run in order.
  bool stalls = false;
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
  // Chance that the backend fails a post of a GpadlCreate, OpenChannel, ModifyChannel or a
  // driver GPADL's GpadlTeardown with ResourceExhausted (host buffers full): the host never
  // sees it and only the request that sent it fails.
  double post_failures = 0;
  // Unloads between rounds may be forced: channels open and traffic flowing.
  bool forced_unloads = false;
  // Between rounds the guest may suspend and resume instead (hibernation): with channels open
  // and traffic flowing, host steps crossing it, and the host re-offering under new or
  // permuted relids.
  bool suspends = false;
  bool permute_relids = false;
  // Chance that a sub-channel offer is spoiled on its way to the guest (a monitor id past 127):
  // the guest must refuse it and release its relid, and the host must then free it.
  double spoiled_offers = 0;
  // Share of opens in polling mode (no receive callback: the application polls).
  double polling_opens = 0;
  // Share of opens with a small drain budget (1..8 packets per delivery).
  double small_budgets = 0;
  // Chance that a receive callback blocks (runs the world on for a while) and for how long.
  double stuck_chance = 0;
  absl::Duration max_stuck;
  // Share of calls whose caller waits with a ticket and gives up at its deadline plus a grace
  // of up to max_grace (otherwise the caller takes the result whenever it comes).
  double blocking_calls = 0;
  absl::Duration max_grace;
  // Chance that the host reacts to a guest signal at once, inside the signalling call (a host
  // on another CPU): it then writes into rings the guest is in the middle of reading.
  double inline_host = 0;
  // ExecutorOptions::stall_report.
  absl::Duration stall_report;
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
  std::vector<uint8_t> payload;
};

// A packet one of the application's senders has queued.
struct QueuedPacket {
  std::vector<uint8_t> payload;
  bool request = false;  // SendRequest (echo answers with a completion)
  bool gather = false;   // SendGather in two pieces
};

// Session: one open attempt of one channel, from the Open call until both sides let go.
struct Session {
  static constexpr int kSenders = 2;

  uint64_t id = 0;
  OfferId offer;
  uint32_t relid = 0;
  uint32_t ring_gpadl = 0;
  DeviceKind device = DeviceKind::kOther;
  std::shared_ptr<Channel> channel;
  bool callback_mode = true;
  size_t poll_batch = SIZE_MAX;  // polling mode: max_packets per Poll
  bool poll_pending = false;
  // The rings (outbound first), once the executor attached them.
  uint8_t* rings = nullptr;
  uint32_t outbound_pages = 0;
  bool started = false;      // the executor ran the Open
  bool guest_open = false;   // the Open completed OK
  bool guest_ended = false;  // retired (or the open failed)
  bool host_mapped = false;
  bool host_ended = false;
  // A Close of the channel returned OK after this open, or its offer was removed: no receive
  // callback of it may run any more.
  bool receive_closed = false;
  std::deque<SimPacket> echo_expect;   // guest → echo device → guest (replies and completions)
  std::deque<SimPacket> host_expect;   // guest → raw host
  std::deque<SimPacket> guest_expect;  // raw host → guest
  std::array<std::deque<QueuedPacket>, kSenders> senders;
  std::array<bool, kSenders> sender_waits{};  // WhenWritable armed
  uint64_t next_host_trans_id = 1;
  size_t max_payload = 0;       // largest payload a sender queues
  size_t max_host_payload = 0;  // largest payload the host writes into the inbound ring
  // What the host's data plane must count for this channel once everything has arrived.
  uint64_t guest_packets = 0;  // written by the guest
  uint64_t guest_bytes = 0;    // (padded, as the host reads them)
  uint64_t host_packets = 0;   // written by the host (echo replies received, raw sends)
  uint64_t host_bytes = 0;
  // The target VP the host must have (known from 5.3, where ModifyChannel is answered).
  uint32_t target_vp = 0;
  bool target_vp_known = true;
  uint64_t last_modify = 0;  // the call that decides target_vp (the last one run)

  bool both_open() const { return guest_open && !guest_ended && host_mapped && !host_ended; }
};

// SimCall: a call the scenario made into the executor, until its caller has its result.
struct SimCall {
  uint64_t id = 0;
  RequestKind kind = RequestKind::kConnect;
  OfferId offer;
  uint64_t session = 0;  // kOpen; kModifyChannel: the open it retargets
  absl::Time deadline;
  // The deadline was short enough to expire (only then may the call time out).
  bool tight = false;
  // The caller waits on a ticket and gives up at its deadline plus a grace.
  bool blocking = false;
  std::shared_ptr<CallTicket> ticket;
  SimScheduler::EventId give_up = 0;
  bool started = false;  // the executor ran the call
  absl::Time started_at;
  bool retiring_at_start = false;  // the offer's last receive side was still retiring
  int claims = 0;
  bool claim_refused = false;
  bool completed = false;
  bool abandoned = false;  // the caller gave up first (told DeadlineExceeded)
  uint32_t gpadl = 0;      // kGpadlCreate: the handle its GpadlCreate named
  uint32_t target_vp = 0;  // kModifyChannel
  // kClose without an offer (CloseAll): the channels it closes (open or opening when it ran).
  std::vector<OfferId> closing;
  // kUnload that is a suspend (it may fail: a close it makes can), kConnect that is a resume.
  bool suspend = false;
  bool resume = false;
};

// A receive callback (or a poller's callback) that is blocked right now, running the world on.
struct StuckCallback {
  uint64_t session = 0;
  OfferId offer;
  uint32_t relid = 0;
  bool overlapped_retire = false;
};

// Thrown from a blocked receive callback after a check failed inside it: unwinds the
// production drain so that nothing runs on after the failure (the run is over).
struct SimAbort {};

class World final : private ChannelLink, private ExecutorListener, private SimBackendPeer {
 public:
  explicit World(const SimOptions& options);
  ~World() override;
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  SimResult Run();

 private:
  // A guest offer the application knows (OfferAdded until ReleaseOffer).
  struct GuestOffer {
    OfferInfo info;
    DeviceKind device = DeviceKind::kOther;
    std::shared_ptr<Channel> channel;
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

  // ---- sim_world.cc: loop, scenario phases, executor wiring, trace ----
  void ChooseConfig();
  absl::Status Setup();
  // Attaches the guest to the host engine (again after a link loss): a new host mapping of
  // the guest memory, a new guest id and data plane.
  absl::Status AttachHost();
  void Scenario();
  bool RunUntilSettled(absl::string_view phase, absl::Duration budget);
  void RunStep();
  // Runs the world on for `duration` from inside a step (a blocked callback).
  void RunNested(absl::Duration duration);
  // Keeps exactly one scheduled event at the executor's next wake-up.
  void SyncWakeup();
  bool DataQuiescent() const;
  std::string Unsettled() const;
  void Fail(std::string what);
  void Trace(std::string line) const;
  std::string Elapsed() const;
  absl::Duration Delay(DelayMode mode);
  void ScheduleChaos(int ops);
  void RunOp();
  bool Connect();
  bool Unload(absl::string_view phase, UnloadMode mode = UnloadMode::kOrderly);
  // Forced: with channels open and traffic flowing; otherwise everything is closed first.
  bool UnloadAndReconnect(bool forced);
  // ChannelBus::Suspend's executor part at a random point, then Resume; checks that every
  // device the host offers again keeps its offer id and channel object (sim_suspend.cc).
  bool SuspendAndResume();
  void CheckSuspended();
  bool OnFaultPoint(PlantedFault fault);
  // Runs an input of the executor now, or in order after the stall in progress.
  void ExecutorInput(std::function<void()> input);
  void OpStall();
  const BusState& bus() const { return executor_->state(); }
  // ChannelLink.
  bool Post(std::function<void(BusExecutor&)> work) override;
  absl::Status CheckBlockingAllowed(absl::string_view what) const override;
  absl::Duration call_grace() const override { return absl::Milliseconds(1); }
  void Log(absl::string_view line) const override;
  // ExecutorListener.
  absl::Time Now() override { return sched_.now(); }
  void OfferAdded(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) override;
  void OfferRemoved(const OfferInfo& offer, const std::shared_ptr<Channel>& channel,
                    const absl::Status& reason) override;
  void OfferResumed(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) override;
  void Log(absl::string_view line) override;

  // ---- sim_transport.cc: transports, interrupts, the backend's reports ----
  // With SimOptions::binary_codec: `m` encoded to wire messages and decoded back by
  // `decoder`; fails the run unless it comes back unchanged. True if it did.
  bool ThroughTheWire(v1::ControlMessage& m, hyperv::WireDecoder& decoder,
                      absl::string_view direction);
  absl::Status SendToHost(v1::ControlMessage message);
  void DeliverToHost();
  void SendToGuest(v1::ControlMessage message);
  void DeliverToGuest();
  void CheckDoorbells();
  // `vp`: the guest VP whose doorbell rang (host interrupts have none).
  void RaiseInterrupt(bool to_guest, uint32_t vp = 0);
  void GuestInterrupt(absl::string_view why, uint32_t vp);
  void HostInterrupt(absl::string_view why);
  void SchedulePoll(bool guest);
  void ScheduleHostMonitorScan();
  // SimBackendPeer.
  absl::Status BackendPost(const v1::ControlMessage& message) override;
  void BackendConnection(const NegotiatedConnection& connection) override;
  bool BackendLinkUp() const override { return !guest_id_.empty(); }
  void BackendSignal(const ChannelSignal& signal) override;
  void BackendFree(const SimAllocation& allocation) override;

  // ---- sim_calls.cc: calls into the executor ----
  absl::Time Deadline();
  // Posts `start` to the executor with a CallDone for a new call; a blocking caller gives up
  // at its deadline plus a grace. Returns the call's id.
  uint64_t IssueCall(RequestKind kind, OfferId offer, absl::Time deadline, uint64_t session,
                     std::function<void(BusExecutor&, CallDone)> start);
  bool OnClaim(uint64_t id);
  void OnCallComplete(uint64_t id, const CallResult& result);
  void CheckResult(SimCall& call, const CallResult& result);
  void GiveUp(uint64_t id);
  bool CloseEverything();

  // ---- sim_guest.cc: the guest application ----
  DeviceKind DeviceOf(const Guid& type) const;
  std::vector<OfferId> ActiveOffers() const;
  std::shared_ptr<Channel> ChannelOf(OfferId offer) const;
  void ReleaseLater(OfferId offer);
  // Whether BusState still has `s`'s open in progress or open.
  bool GuestLive(const Session& s) const;
  // Ends sessions whose channel BusState retired (senders drop what is queued).
  void ObserveSessions();
  void EndSession(Session& s);
  // The session whose rings the offer's channel has attached now (0: none known).
  uint64_t AttachedSession(OfferId offer) const;
  // The executor ran `session`'s Open: note whether it attached the rings.
  void OpenStarted(uint64_t session);
  void OpOpen();
  void OpClose();
  void OpCreateGpadl();
  void OpTeardownGpadl();
  void OpModify();
  void OpTraffic();
  std::vector<uint8_t> RandomPayload(size_t max);
  void TrySend(uint64_t session, int sender);
  void OnCompletion(uint64_t session, const Completion& completion);
  // A data packet the channel delivered (callback or poll).
  void OnGuestPacket(uint64_t session, const PacketView& packet, bool polled);
  void OnCallbackPacket(uint64_t session, const PacketView& packet);
  void OnPolledPacket(uint64_t session, const PacketView& packet);
  // Sometimes blocks the callback running now: runs the world on in nested steps for a while,
  // and unwinds (SimAbort) if a check failed meanwhile.
  void MaybeBlock(uint64_t session);
  void SchedulePolls();
  void PollSession(uint64_t session);

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
  void CheckTable();
  void CheckMemory();
  void CheckStuck();
  void CheckSettled();
  void CheckAgreement();
  void CheckFinal();
  // `spoiled`: the message was an offer the link spoiled (its refusal is expected).
  void CheckIgnored(bool host_reply, bool spoiled = false);
  void LedgerRequest(const v1::ControlMessage& message);
  bool LedgerReply(const v1::ControlMessage& message);
  bool ExpectPacket(std::deque<SimPacket>& expect, const SimPacket& got, absl::string_view what);
  bool InFlightToHost(const std::function<bool(const v1::ControlMessage&)>& match) const;
  // GPADL handles BusState has live now.
  std::set<uint32_t> LiveGpadls() const;
  bool Retiring(OfferId offer) const;

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
  mutable std::deque<std::string> trace_;
  // A failure reported through a const path (a channel's log line), taken up after the step.
  mutable std::string late_failure_;
  bool fault_fired_ = false;
  bool tearing_down_ = false;

  // Guest side, in destruction order (reverse): the executor before the dispatch, the table,
  // the backend (which gets the executor's pages back), the pool and the memory.
  std::unique_ptr<mock::GuestMemory> memory_;  // the guest's mapping
  std::optional<PagePool> pool_;
  std::unique_ptr<SimBackend> backend_;
  ChannelTable table_;
  std::vector<std::unique_ptr<EventDispatch>> dispatch_;  // one per guest VP
  std::unique_ptr<BusExecutor> executor_;
  SimScheduler::EventId wakeup_event_ = 0;
  absl::Time wakeup_at_ = absl::InfiniteFuture();
  absl::Time post_tail_;  // posted work runs in order
  int nest_depth_ = 0;
  // The executor's thread is held up: its inputs wait here, in order.
  bool stalled_ = false;
  bool catching_up_ = false;  // running what waited
  std::deque<std::function<void()>> held_inputs_;
  std::optional<StuckCallback> stuck_;
  std::map<OfferId, GuestOffer> offers_;
  std::set<uint32_t> relids_seen_;      // every relid an offer ever had (table checks)
  std::set<uint32_t> created_handles_;  // sent in a GpadlCreate
  std::map<uint64_t, SimCall> calls_;
  uint64_t next_call_ = 1;
  // Sessions whose open its caller gave up on.
  std::set<uint64_t> abandoned_opens_;
  std::array<uint64_t, kIgnoreReasonCount> ignored_seen_{};
  uint32_t negotiated_version_ = 0;
  bool in_when_writable_ = false;

  // Sessions (both sides).
  uint64_t next_session_ = 1;
  std::map<uint64_t, Session> sessions_;
  std::set<uint64_t> live_sessions_;      // started and not guest_ended
  std::map<OfferId, uint64_t> attached_;  // the session whose rings each channel attached last
  std::map<uint32_t, uint64_t> session_by_ring_gpadl_;
  std::map<uint32_t, uint64_t> host_session_by_relid_;

  // Transports: control messages in flight, in order, per direction.
  std::deque<v1::ControlMessage> to_host_;
  std::deque<v1::ControlMessage> to_guest_;
  // SimOptions::binary_codec: each receiving side's decoder (GPADL reassembly).
  hyperv::WireDecoder to_host_wire_;
  hyperv::WireDecoder to_guest_wire_;
  absl::Time to_host_tail_;
  absl::Time to_guest_tail_;
  // Interrupts.
  std::array<uint32_t, kSimVps> guest_bell_seen_{};
  uint32_t host_bell_seen_ = 0;
  std::array<bool, kSimVps> guest_irq_pending_{};
  bool host_irq_pending_ = false;

  // Host side.
  std::unique_ptr<mock::HostEngine> engine_;
  std::unique_ptr<mock::GuestDataPlane> plane_;
  std::string guest_id_;
  std::map<uint32_t, std::vector<uint64_t>> host_mapped_pfns_;  // by relid
  std::map<uint32_t, std::deque<SimPacket>> host_raw_queue_;    // by relid
  std::set<uint32_t> host_raw_retry_;
  std::set<uint32_t> spoiled_relids_;    // relids of offers the link spoiled, not yet released
  std::set<uint32_t> spoiled_releases_;  // their relids the guest gave back, not yet freed
  // Relids the guest released on refusing a spoiled offer: a rescind crossing that release is
  // answered with a second one.
  std::set<uint32_t> released_on_refusal_;
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
  bool host_busy_ = false;         // the host is processing (no inline reaction inside it)

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
