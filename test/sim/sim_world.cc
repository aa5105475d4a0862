// The simulated world: setup, the step loop and settling, the scenario, the two control-message
// transports, interrupts (doorbells) and the trace.
#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/protocol.h"
#include "mock/host/device.h"
#include "test/sim/sim_world_internal.h"

namespace vbus::sim {
namespace {

constexpr uint64_t kMemoryBytes = 4 << 20;  // 1024 pages of "guest memory"
// A deadline no answer can miss: the longest message delay is a few milliseconds.
constexpr absl::Duration kGenerousDeadline = absl::Seconds(10);
// Settling may take at most this much virtual time while work is scheduled...
constexpr absl::Duration kSettleBudget = absl::Seconds(60);
// ...and this long with only polls left (which must then finish the job).
constexpr absl::Duration kIdleBudget = absl::Milliseconds(200);

const char* DelayName(DelayMode m) {
  switch (m) {
    case DelayMode::kZero:
      return "zero";
    case DelayMode::kSmall:
      return "small";
    case DelayMode::kWide:
      return "wide";
  }
  return "?";
}

std::string FaultFlags(const SimFaults& f) {
  std::string flags;
  if (f.drop_relid_released) absl::StrAppend(&flags, " --fault=drop_relid_released");
  if (f.duplicate_open_result) absl::StrAppend(&flags, " --fault=duplicate_open_result");
  if (f.early_relid_reuse) absl::StrAppend(&flags, " --fault=early_relid_reuse");
  if (f.lose_wakeups) absl::StrAppend(&flags, " --fault=lose_wakeups");
  if (f.skip_retire) absl::StrAppend(&flags, " --fault=skip_retire");
  if (f.skip_unmask_recheck) absl::StrAppend(&flags, " --fault=skip_unmask_recheck");
  if (f.blind_async_map) absl::StrAppend(&flags, " --fault=blind_async_map");
  return flags;
}

}  // namespace

void SimStats::Add(const SimStats& o) {
  steps += o.steps;
  virtual_time += o.virtual_time;
  messages_to_host += o.messages_to_host;
  messages_to_guest += o.messages_to_guest;
  packets_sent += o.packets_sent;
  packets_verified += o.packets_verified;
  bytes_verified += o.bytes_verified;
  opens_ok += o.opens_ok;
  open_failures += o.open_failures;
  closes += o.closes;
  rescinds += o.rescinds;
  hot_adds += o.hot_adds;
  gpadls_released += o.gpadls_released;
  deadlines_exceeded += o.deadlines_exceeded;
  interrupts += o.interrupts;
  interrupts_dropped += o.interrupts_dropped;
  polls += o.polls;
  stale_replies_ignored += o.stale_replies_ignored;
  host_refusals += o.host_refusals;
  unloads += o.unloads;
  settles += o.settles;
  relid_reuses += o.relid_reuses;
  guest_ring_full += o.guest_ring_full;
  host_ring_full += o.host_ring_full;
  host_waits_for_room += o.host_waits_for_room;
  unmask_rechecks_found_data += o.unmask_rechecks_found_data;
  link_losses += o.link_losses;
}

std::string ReplayCommand(uint64_t seed) {
  return absl::StrCat("bazel run //test/sim:sim_replay -- --seed=", seed, " --verbose");
}

std::string SimConfig::Describe() const {
  std::string s = absl::StrCat("guest<=", protocol::VersionName(guest_max_version),
                               " host<=", protocol::VersionName(host_max_version),
                               " to_host=", DelayName(to_host), " to_guest=", DelayName(to_guest),
                               " irq=", DelayName(interrupts));
  if (drops) {
    absl::StrAppend(&s, " drops=", static_cast<int>(drop_probability * 100), "%");
  }
  if (polling) {
    absl::StrAppend(&s, " poll(guest=", absl::FormatDuration(guest_poll),
                    ",host=", absl::FormatDuration(host_poll), ")");
  }
  absl::StrAppend(&s, " map=", async_map ? "async" : "sync",
                  " deadlines=", tight_deadlines ? "tight" : "generous");
  if (monitored_offers) absl::StrAppend(&s, " monitored(", monitor_latency_us, "us)");
  if (drain_budget != 0) absl::StrAppend(&s, " drain_budget=", drain_budget);
  if (split_unmask) absl::StrAppend(&s, " split_unmask");
  if (link_loss) absl::StrAppend(&s, " link_loss");
  absl::StrAppend(&s, " remap=", remap_relids ? "yes" : "no", " rounds=", rounds,
                  " ops=", ops_per_round, " gap<=", op_gap_us, "us");
  return s;
}

void SimChannel::OnEvent(uint32_t relid) {
  (void)relid;
  world_->OnChannelEvent(*this);
}

// ---- Construction and the run ------------------------------------------------------------

World::World(const SimOptions& options)
    : options_(options), rng_(options.seed), link_rng_(rng_.Fork()), sched_(absl::UnixEpoch()) {}

World::~World() {
  // The table must be empty when it goes; the channels' memory goes with filed_.
  for (auto& [offer, channel] : channels_) (void)table_.Retire(channel->relid_, absl::Now());
  channels_.clear();
  dispatcher_.reset();
}

void World::ChooseConfig() {
  auto version = [&] {
    return rng_.Chance(0.5) ? protocol::kNewestVersion
                            : protocol::kGuestVersions[rng_.Below(protocol::kGuestVersions.size())];
  };
  auto delay = [&] {
    switch (rng_.Weighted({2, 5, 3})) {
      case 0:
        return DelayMode::kZero;
      case 1:
        return DelayMode::kSmall;
      default:
        return DelayMode::kWide;
    }
  };
  config_.guest_max_version = version();
  config_.host_max_version = version();
  config_.to_host = delay();
  config_.to_guest = delay();
  config_.interrupts = delay();
  config_.drops = rng_.Chance(0.3);
  config_.drop_probability = config_.drops ? static_cast<double>(rng_.Range(5, 50)) / 100 : 0;
  config_.polling = config_.drops;
  config_.guest_poll = absl::Microseconds(rng_.Range(100, 2000));
  config_.host_poll = absl::Microseconds(rng_.Range(100, 2000));
  config_.async_map = rng_.Chance(0.2);
  config_.tight_deadlines = rng_.Chance(0.25);
  config_.monitored_offers = rng_.Chance(0.3);
  config_.monitor_latency_us = static_cast<uint32_t>(rng_.Range(20, 500));
  config_.remap_relids = rng_.Chance(0.5);
  config_.link_loss = rng_.Chance(0.25);
  config_.drain_budget = rng_.Chance(0.3) ? rng_.Range(1, 8) : 0;
  config_.split_unmask = rng_.Chance(0.3);
  config_.rounds = static_cast<int>(rng_.Range(1, 4));
  static constexpr uint32_t kGaps[] = {30, 150, 400};
  config_.op_gap_us = kGaps[rng_.Below(3)];
  config_.ops_per_round = static_cast<int>(rng_.Range(15, 50));
  if (options_.faults.blind_async_map) config_.async_map = true;
  if (options_.faults.skip_unmask_recheck) {
    // Only the re-check can find packets written inside the unmask window; nobody polls.
    config_.split_unmask = true;
    config_.drops = false;
    config_.polling = false;
    config_.monitored_offers = false;
  }
  if (options_.faults.lose_wakeups) {
    // Lose interrupts with nobody polling: a dropped wakeup that matters must stall the run.
    config_.drops = true;
    config_.drop_probability = 0.5;
    config_.polling = false;
    config_.monitored_offers = false;
  }
}

absl::Status World::Setup() {
  absl::StatusOr<std::unique_ptr<mock::GuestMemory>> memory =
      mock::GuestMemory::Create("", kMemoryBytes);
  if (!memory.ok()) return memory.status();
  memory_ = *std::move(memory);
  const mock::MemoryLayout& layout = memory_->layout();
  absl::StatusOr<uint8_t*> base = memory_->Translate(layout.first_data_pfn);
  if (!base.ok()) return base.status();
  pool_.emplace(*base, layout.first_data_pfn, memory_->page_count() - layout.first_data_pfn);
  absl::StatusOr<EventPage> guest_events =
      EventPage::Attach(absl::MakeSpan(memory_->GuestEventPage(), protocol::kPageSize));
  absl::StatusOr<EventPage> host_events =
      EventPage::Attach(absl::MakeSpan(memory_->HostEventPage(), protocol::kPageSize));
  if (!guest_events.ok()) return guest_events.status();
  if (!host_events.ok()) return host_events.status();
  guest_events_.emplace(*guest_events);
  host_events_.emplace(*host_events);
  absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table_.RegisterDispatcher();
  if (!dispatcher.ok()) return dispatcher.status();
  dispatcher_.emplace(*std::move(dispatcher));

  BusConfig bus_config;
  bus_config.max_version = config_.guest_max_version;
  bus_config.monitor_page1 = layout.monitor_page1_pfn * protocol::kPageSize;
  bus_config.monitor_page2 = layout.monitor_page2_pfn * protocol::kPageSize;
  bus_ = std::make_unique<BusState>(bus_config);

  mock::EngineOptions engine_options;
  engine_options.settings.set_max_version(config_.host_max_version);
  engine_options.settings.set_remap_relids_on_resume(config_.remap_relids);
  engine_options.settings.set_monitor_latency_us(config_.monitor_latency_us);
  engine_options.seed = rng_.Next();
  const uint64_t initial = rng_.Range(1, 4);
  for (uint64_t i = 0; i < initial; ++i) engine_options.default_offers.push_back(RandomSpec());
  absl::StatusOr<std::unique_ptr<mock::HostEngine>> engine =
      mock::HostEngine::Create(std::move(engine_options));
  if (!engine.ok()) return engine.status();
  engine_ = *std::move(engine);

  if (absl::Status s = AttachHost(); !s.ok()) return s;

  guest_bell_seen_ = memory_->DoorbellValue(mock::Doorbell::kGuest);
  host_bell_seen_ = memory_->DoorbellValue(mock::Doorbell::kHost);
  to_host_tail_ = to_guest_tail_ = sched_.now();
  if (config_.polling) {
    SchedulePoll(/*guest=*/true);
    SchedulePoll(/*guest=*/false);
  }
  if (config_.monitored_offers) ScheduleHostMonitorScan();
  return absl::OkStatus();
}

absl::Status World::AttachHost() {
  const mock::MemoryLayout& layout = memory_->layout();
  v1::Attach attach;
  attach.set_guest_name("sim-guest");
  attach.set_memory_path(memory_->path());
  attach.set_memory_size_bytes(memory_->size_bytes());
  *attach.mutable_layout() = mock::LayoutToProto(layout);
  absl::StatusOr<std::unique_ptr<mock::GuestMemory>> host_memory =
      mock::GuestMemory::Open(memory_->path(), memory_->size_bytes(), layout);
  if (!host_memory.ok()) return host_memory.status();
  mock::Actions actions;
  absl::StatusOr<std::string> guest_id = engine_->Attach(attach, sched_.now(), &actions);
  if (!guest_id.ok()) return guest_id.status();
  guest_id_ = *guest_id;
  mock::DataPlaneHooks hooks;
  hooks.wants_packets = [] { return true; };
  hooks.on_packet = [this](v1::GuestPacket p) { OnHostPacket(p); };
  hooks.on_event = [this](v1::ProtocolEvent e) { OnDataPlaneEvent(e); };
  hooks.now = [this] { return sched_.now(); };
  absl::StatusOr<std::unique_ptr<mock::GuestDataPlane>> plane = mock::GuestDataPlane::Create(
      guest_id_, *std::move(host_memory), &mock::DeviceRegistry::Default(), std::move(hooks));
  if (!plane.ok()) return plane.status();
  plane_ = *std::move(plane);
  ExecuteHost(std::move(actions));
  // MockHost's doorbell thread for a new session starts with a scan: bits the guest set while
  // no host was listening (after a link loss) would otherwise never be seen again, because
  // the guest rings only on a bit's 0 → 1 transition.
  sched_.After(absl::ZeroDuration(), SimScheduler::kWork, "host doorbell thread starts",
               [this] { HostInterrupt("first scan"); });
  return absl::OkStatus();
}

SimResult World::Run() {
  ChooseConfig();
  Trace(absl::StrCat("seed ", options_.seed, ": ", config_.Describe()));
  if (absl::Status s = Setup(); !s.ok()) {
    Fail(absl::StrCat("setup failed: ", s.ToString()));
  } else {
    Scenario();
  }
  SimResult result;
  result.ok = !failed_;
  result.failure = failure_;
  result.failed_step = failed_step_;
  result.config = config_.Describe();
  result.fault_fired = fault_fired_;
  stats_.virtual_time = sched_.elapsed();
  result.stats = stats_;
  if (failed_) {
    result.report = absl::StrCat(
        "vbus sim: seed ", options_.seed, " FAILED at step ", failed_step_, " (virtual time +",
        absl::FormatDuration(sched_.elapsed()), "): ", failure_, "\n  config: ", config_.Describe(),
        "\n  last ", trace_.size(), " trace lines:\n    ", absl::StrJoin(trace_, "\n    "),
        "\n  replay: ", ReplayCommand(options_.seed), FaultFlags(options_.faults));
    if (!options_.faults.any()) {
      absl::StrAppend(
          &result.report,
          "\n      or: bazel test //test/sim:sim_test --test_env=VBUS_SIM_SEED=", options_.seed);
    }
  }
  return result;
}

SimResult RunSimulation(const SimOptions& options) {
  World world(options);
  return world.Run();
}

// ---- The scenario --------------------------------------------------------------------------

void World::Scenario() {
  if (!Connect()) return;
  for (int round = 0; round < config_.rounds && !failed_; ++round) {
    link_lost_this_round_ = false;
    if (round > 0 && protocol::HasUnload(negotiated_version_) && rng_.Chance(0.7)) {
      if (!UnloadAndReconnect()) return;
    }
    ScheduleChaos(config_.ops_per_round);
    if (!RunUntilSettled(absl::StrCat("round ", round + 1), kSettleBudget)) return;
    CheckSettled();
  }
  if (failed_ || !CloseEverything()) return;
  if (protocol::HasUnload(negotiated_version_) && !Unload("final unload")) return;
  CheckFinal();
}

bool World::Connect() {
  const absl::Time deadline = sched_.now() + kGenerousDeadline;
  const RequestId id = GuestCall(RequestKind::kConnect, OfferId(), deadline,
                                 [&](Actions* out) { return bus_->Connect(deadline, out); });
  if (!RunUntilSettled("connect", kSettleBudget)) return false;
  if (!issued_.at(id).completed) Fail("connect never completed");
  CheckSettled();
  return !failed_;
}

bool World::Unload(absl::string_view phase) {
  // GPADL work still on its way when the Unload goes out, and host steps (rescinds, hot-adds)
  // crossing it in both directions.
  const uint64_t gpadl_ops = rng_.Range(0, 3);
  for (uint64_t i = 0; i < gpadl_ops && !failed_; ++i) {
    if (rng_.Chance(0.5)) {
      OpCreateGpadl();
    } else {
      OpTeardownGpadl();
    }
  }
  const absl::Time deadline = sched_.now() + kGenerousDeadline;
  GuestCall(RequestKind::kUnload, OfferId(), deadline,
            [&](Actions* out) { return bus_->Unload(deadline, out); });
  const int crossing = static_cast<int>(rng_.Range(0, 5));
  if (crossing > 0) ScheduleChaos(crossing);
  in_unload_ = true;
  const bool settled = RunUntilSettled(phase, kSettleBudget);
  in_unload_ = false;
  if (!settled) return false;
  CheckSettled();
  return !failed_;
}

bool World::UnloadAndReconnect() {
  if (!CloseEverything() || !Unload("unload")) return false;
  if (failed_) return false;
  if (bus_->phase() != BusPhase::kDisconnected) {
    Fail(absl::StrCat("after unload the bus is ", BusPhaseName(bus_->phase())));
    return false;
  }
  return Connect();
}

bool World::CloseEverything() {
  for (int pass = 0; pass < 8; ++pass) {
    if (!RunUntilSettled("closing everything", kSettleBudget)) return false;
    bool busy = false;
    for (const auto& [id, offer] : offers_) {
      std::optional<ChannelStatus> st = bus_->GetChannel(id);
      if (!st || st->offer_state != OfferState::kActive) continue;
      if (st->channel_state == ChannelState::kClosed) continue;
      busy = true;
      const OfferId target = id;
      const absl::Time deadline = Deadline();
      GuestCall(RequestKind::kClose, target, deadline,
                [&](Actions* out) { return bus_->Close(target, deadline, out); });
      if (failed_) return false;
    }
    for (const GpadlStatus& g : bus_->Gpadls()) {
      if (g.ring || g.state != GpadlState::kCreated || g.abandoned) continue;
      std::optional<ChannelStatus> st = bus_->GetChannel(g.offer);
      if (!st || st->offer_state != OfferState::kActive) continue;
      busy = true;
      const absl::Time deadline = Deadline();
      GuestCall(RequestKind::kGpadlTeardown, g.offer, deadline, [&](Actions* out) {
        return bus_->TeardownGpadl(g.offer, g.handle, deadline, out);
      });
      if (failed_) return false;
    }
    if (!busy) return true;
  }
  Fail("channels or GPADLs still open after 8 rounds of closing everything");
  return false;
}

void World::ScheduleChaos(int ops) {
  ops_left_ = ops;
  sched_.After(absl::Microseconds(rng_.Range(0, config_.op_gap_us)), SimScheduler::kWork,
               "scenario step", [this] { RunOp(); });
}

void World::RunOp() {
  --ops_left_;
  enum Op {
    kOpen,
    kClose,
    kCreateGpadl,
    kTeardownGpadl,
    kModify,
    kTraffic,
    kHostRaw,
    kRescind,
    kHotAdd,
    kRefuse,
    kLinkLoss,
  };
  const size_t op =
      rng_.Weighted({18, 8, 7, 5, 4, 30, 12, 5, 4, 2, config_.link_loss && !in_unload_ ? 2u : 0u});
  switch (op) {
    case kOpen:
      OpOpen();
      break;
    case kClose:
      OpClose();
      break;
    case kCreateGpadl:
      OpCreateGpadl();
      break;
    case kTeardownGpadl:
      OpTeardownGpadl();
      break;
    case kModify:
      OpModify();
      break;
    case kTraffic:
      OpTraffic();
      break;
    case kHostRaw:
      OpHostRaw();
      break;
    case kRescind:
      OpRescind();
      break;
    case kHotAdd:
      OpHotAdd();
      break;
    case kRefuse:
      OpRefuse();
      break;
    default:
      OpLinkLoss();
      break;
  }
  if (ops_left_ > 0) {
    sched_.After(absl::Microseconds(rng_.Range(0, config_.op_gap_us)), SimScheduler::kWork,
                 "scenario step", [this] { RunOp(); });
  }
}

// ---- Stepping and settling -----------------------------------------------------------------

bool World::RunUntilSettled(absl::string_view phase, absl::Duration budget) {
  const absl::Time limit = sched_.now() + budget;
  std::optional<absl::Time> idle_since;
  while (!failed_) {
    if (!sched_.HasWork()) {
      if (DataQuiescent()) {
        ++stats_.settles;
        Trace(absl::StrCat("settled (", phase, ") at +", Now()));
        return true;
      }
      if (!idle_since) idle_since = sched_.now();
      if (sched_.now() - *idle_since > kIdleBudget) {
        Fail(absl::StrCat("no progress during ", phase, ": only periodic events (polls, ",
                          "scans, host send retries) for ", absl::FormatDuration(kIdleBudget),
                          " and ", Unsettled(),
                          config_.polling ? " although both sides poll" : " — a lost wakeup"));
        return false;
      }
    } else {
      idle_since.reset();
    }
    const std::optional<absl::Time> next = sched_.NextTime();
    if (!next) {
      Fail(absl::StrCat("stalled during ", phase, ": nothing is scheduled (no message, timer or ",
                        "interrupt) but ", Unsettled(), " — a lost wakeup"));
      return false;
    }
    if (*next > limit) {
      Fail(absl::StrCat("no progress during ", phase, " within ", absl::FormatDuration(budget),
                        ": ", Unsettled()));
      return false;
    }
    RunStep();
  }
  return false;
}

void World::RunStep() {
  ++stats_.steps;
  if (stats_.steps > options_.max_steps) {
    Fail(absl::StrCat("more than ", options_.max_steps, " steps"));
    return;
  }
  sched_.RunNext([this](absl::string_view label) {
    Trace(absl::StrCat("#", stats_.steps, " +", Now(), " ", label));
  });
  if (failed_) return;
  CheckDoorbells();
  if (!failed_) CheckStep();
}

bool World::DataQuiescent() const {
  if (bus_->pending_requests() != 0) return false;
  for (const auto& [offer, channel] : channels_) {
    if (!channel->send_queue_.empty()) return false;
  }
  for (const auto& [relid, queue] : host_raw_queue_) {
    if (!queue.empty()) return false;
  }
  for (const auto& [id, s] : sessions_) {
    if (s.both_open() &&
        (!s.echo_expect.empty() || !s.host_expect.empty() || !s.guest_expect.empty())) {
      return false;
    }
  }
  return true;
}

std::string World::Unsettled() const {
  if (bus_->pending_requests() != 0) {
    for (const auto& [id, issued] : issued_) {
      if (!issued.completed) {
        return absl::StrCat("request ", id.value(), " (", RequestKindName(issued.kind),
                            ") has not completed");
      }
    }
    return absl::StrCat(bus_->pending_requests(), " requests pending");
  }
  for (const auto& [offer, channel] : channels_) {
    if (!channel->send_queue_.empty()) {
      return absl::StrCat("relid ", channel->relid_, " has ", channel->send_queue_.size(),
                          " guest packets waiting for ring space");
    }
  }
  for (const auto& [relid, queue] : host_raw_queue_) {
    if (!queue.empty()) {
      return absl::StrCat("relid ", relid, " has ", queue.size(),
                          " host packets waiting for ring space");
    }
  }
  for (const auto& [id, s] : sessions_) {
    if (!s.both_open()) continue;
    if (!s.echo_expect.empty()) {
      return absl::StrCat("relid ", s.relid, " (open on both sides) still owes ",
                          s.echo_expect.size(), " echo replies (first trans_id ",
                          s.echo_expect.front().trans_id, ")");
    }
    if (!s.host_expect.empty()) {
      return absl::StrCat("relid ", s.relid, " (open on both sides): the host has not read ",
                          s.host_expect.size(), " guest packets");
    }
    if (!s.guest_expect.empty()) {
      return absl::StrCat("relid ", s.relid, " (open on both sides): the guest has not read ",
                          s.guest_expect.size(), " host packets");
    }
  }
  return "nothing outstanding";
}

void World::Fail(std::string what) {
  if (failed_) return;
  failed_ = true;
  failed_step_ = stats_.steps;
  Trace(absl::StrCat("!!! ", what));
  failure_ = std::move(what);
}

void World::Trace(std::string line) {
  if (options_.verbose) std::fprintf(stderr, "%s\n", line.c_str());
  trace_.push_back(std::move(line));
  while (trace_.size() > options_.trace_tail) trace_.pop_front();
}

std::string World::Now() const { return absl::FormatDuration(sched_.elapsed()); }

absl::Duration World::Delay(DelayMode mode) {
  switch (mode) {
    case DelayMode::kZero:
      return absl::ZeroDuration();
    case DelayMode::kSmall:
      return absl::Microseconds(link_rng_.Range(0, 50));
    case DelayMode::kWide:
      return link_rng_.Chance(0.7) ? absl::Microseconds(link_rng_.Range(0, 20))
                                   : absl::Microseconds(link_rng_.Range(100, 3000));
  }
  return absl::ZeroDuration();
}

// ---- Control-message transports (in order per direction) -------------------------------------

void World::SendToHost(v1::ControlMessage message) {
  if (options_.faults.drop_relid_released && message.has_relid_released() && !fault_fired_) {
    fault_fired_ = true;
    Trace(absl::StrCat("    fault: the link loses ", DescribeControlMessage(message)));
    return;
  }
  // Order is kept: a message never overtakes the one sent before it.
  const absl::Time at = std::max(sched_.now() + Delay(config_.to_host), to_host_tail_);
  to_host_tail_ = at;
  std::string label = absl::StrCat("deliver to host: ", DescribeControlMessage(message));
  to_host_.push_back(std::move(message));
  sched_.At(at, SimScheduler::kWork, std::move(label), [this, epoch = link_epoch_] {
    if (epoch == link_epoch_) DeliverToHost();  // else the link broke with it in flight
  });
}

void World::DeliverToHost() {
  v1::ControlMessage m = std::move(to_host_.front());
  to_host_.pop_front();
  ++stats_.messages_to_host;
  LedgerRequest(m);
  if (m.has_relid_released()) host_rescinded_.erase(m.relid_released().child_relid());
  if (m.has_unload()) host_rescinded_.clear();  // the host forgets rescinded relids on unload
  const uint32_t relid = mock::RelidOf(m);
  host_input_active_ = true;
  host_input_ = DescribeControlMessage(m);
  host_input_relid_ = relid;
  host_input_fault_ = false;
  host_input_prior_.reset();
  if (relid != 0) {
    absl::StatusOr<mock::HostEngine::ChannelSnapshot> c = engine_->FindChannel(guest_id_, relid);
    if (c.ok()) host_input_prior_ = c->state;
  }
  v1::GuestToHost g;
  *g.mutable_control() = std::move(m);
  mock::Actions actions;
  if (absl::Status s = engine_->HandleGuestMessage(guest_id_, g, sched_.now(), &actions); !s.ok()) {
    Fail(absl::StrCat("host engine rejected a guest message: ", s.ToString()));
  }
  ExecuteHost(std::move(actions));
  host_input_active_ = false;
}

void World::SendToGuest(v1::ControlMessage message) {
  int copies = 1;
  if (options_.faults.duplicate_open_result && message.has_open_result() &&
      message.open_result().status() == 0 && !fault_fired_) {
    fault_fired_ = true;
    copies = 2;
    Trace(absl::StrCat("    fault: the link duplicates ", DescribeControlMessage(message)));
  }
  for (int i = 0; i < copies; ++i) {
    const absl::Time at = std::max(sched_.now() + Delay(config_.to_guest), to_guest_tail_);
    to_guest_tail_ = at;
    std::string label = absl::StrCat("deliver to guest: ", DescribeControlMessage(message));
    to_guest_.push_back(message);
    sched_.At(at, SimScheduler::kWork, std::move(label), [this, epoch = link_epoch_] {
      if (epoch == link_epoch_) DeliverToGuest();
    });
  }
}

void World::DeliverToGuest() {
  v1::ControlMessage m = std::move(to_guest_.front());
  to_guest_.pop_front();
  ++stats_.messages_to_guest;
  if (m.has_offer()) {
    const uint32_t relid = m.offer().child_relid();
    if (std::optional<OfferId> held = bus_->FindOfferByRelid(relid); held.has_value()) {
      std::optional<ChannelStatus> st = bus_->GetChannel(*held);
      Fail(absl::StrCat("the host offered relid ", relid, " while the guest still holds it (offer ",
                        held->value(), ", ", st ? OfferStateName(st->offer_state) : "?", ")"));
      return;
    }
  }
  if (m.has_offer() && released_relids_.erase(m.offer().child_relid()) > 0) {
    ++stats_.relid_reuses;  // a relid the guest released is offered again
  }
  guest_input_is_reply_ = LedgerReply(m);
  if (failed_) return;
  Actions actions;
  bus_->OnHostMessage(m, &actions);
  ExecuteGuest(std::move(actions));
  guest_input_is_reply_ = false;
}

// ---- Interrupts ---------------------------------------------------------------------------

void World::CheckDoorbells() {
  // A doorbell that moved since the last step was rung: that side raised an interrupt.
  const uint32_t guest_bell = memory_->DoorbellValue(mock::Doorbell::kGuest);
  if (guest_bell != guest_bell_seen_) {
    guest_bell_seen_ = guest_bell;
    RaiseInterrupt(/*to_guest=*/true);
  }
  const uint32_t host_bell = memory_->DoorbellValue(mock::Doorbell::kHost);
  if (host_bell != host_bell_seen_) {
    host_bell_seen_ = host_bell;
    RaiseInterrupt(/*to_guest=*/false);
  }
}

void World::RaiseInterrupt(bool to_guest) {
  ++stats_.interrupts;
  const char* side = to_guest ? "guest" : "host";
  if (config_.drops && link_rng_.Chance(config_.drop_probability)) {
    ++stats_.interrupts_dropped;
    if (options_.faults.lose_wakeups) fault_fired_ = true;
    Trace(absl::StrCat("    interrupt to the ", side, " dropped"));
    return;
  }
  bool& pending = to_guest ? guest_irq_pending_ : host_irq_pending_;
  if (pending) return;  // one is on its way; its scan sees every bit set by then
  pending = true;
  sched_.After(Delay(config_.interrupts), SimScheduler::kWork, absl::StrCat(side, " interrupt"),
               [this, to_guest] {
                 if (to_guest) {
                   guest_irq_pending_ = false;
                   GuestInterrupt("interrupt");
                 } else {
                   host_irq_pending_ = false;
                   HostInterrupt("interrupt");
                 }
               });
}

void World::GuestInterrupt(absl::string_view why) {
  const DispatchStats d = dispatcher_->Dispatch(*guest_events_);
  if (d.delivered + d.spurious > 0) {
    Trace(absl::StrCat("    guest ", why, ": ", d.delivered, " channel events, ", d.spurious,
                       " spurious"));
  }
}

void World::HostInterrupt(absl::string_view why) {
  if (plane_ == nullptr) return;  // detached
  const size_t drained = plane_->ProcessEvents();
  if (drained > 0) Trace(absl::StrCat("    host ", why, ": drained ", drained, " channels"));
}

void World::SchedulePoll(bool guest) {
  const absl::Duration period = guest ? config_.guest_poll : config_.host_poll;
  sched_.After(period, SimScheduler::kPeriodic, guest ? "guest poll" : "host poll", [this, guest] {
    ++stats_.polls;
    if (guest) {
      GuestInterrupt("poll");
    } else {
      HostInterrupt("poll");
    }
    SchedulePoll(guest);
  });
}

void World::ScheduleHostMonitorScan() {
  sched_.After(absl::Microseconds(config_.monitor_latency_us), SimScheduler::kPeriodic,
               "host monitor scan", [this] {
                 if (plane_ != nullptr && plane_->HasMonitoredChannels()) {
                   HostInterrupt("monitor scan");
                 }
                 ScheduleHostMonitorScan();
               });
}

}  // namespace vbus::sim
