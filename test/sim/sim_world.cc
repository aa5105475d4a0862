// The simulated world: setup, the step loop (nested steps of a blocked callback included) and
// settling, the scenario's phases, and the trace.
#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/data/protocol.h"
#include "mock/host/device.h"
#include "test/sim/sim_world_internal.h"

namespace vbus::sim {
namespace {

constexpr uint64_t kMemoryBytes = 4 << 20;  // 1024 pages of "guest memory"
// Settling may take this long with only polls left (which must then finish the job).
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
  if (f.blind_async_map) absl::StrAppend(&flags, " --fault=blind_async_map");
  if (f.skip_unpublish) absl::StrAppend(&flags, " --fault=skip_unpublish");
  if (f.ignore_in_use) absl::StrAppend(&flags, " --fault=ignore_in_use");
  if (f.free_held_memory) absl::StrAppend(&flags, " --fault=free_held_memory");
  if (f.complete_abandoned) absl::StrAppend(&flags, " --fault=complete_abandoned");
  if (f.skip_unmask_recheck) absl::StrAppend(&flags, " --fault=skip_unmask_recheck");
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
  forced_unloads += o.forced_unloads;
  suspends += o.suspends;
  wire_messages += o.wire_messages;
  wire_parts += o.wire_parts;
  offers_resumed += o.offers_resumed;
  post_failures += o.post_failures;
  offers_spoiled += o.offers_spoiled;
  refused_offers_released += o.refused_offers_released;
  settles += o.settles;
  relid_reuses += o.relid_reuses;
  guest_ring_full += o.guest_ring_full;
  host_ring_full += o.host_ring_full;
  host_waits_for_room += o.host_waits_for_room;
  unmask_rechecks_found_data += o.unmask_rechecks_found_data;
  link_losses += o.link_losses;
  completions_verified += o.completions_verified;
  polled_packets += o.polled_packets;
  writable_wakeups += o.writable_wakeups;
  stuck_callbacks += o.stuck_callbacks;
  stuck_over_retire += o.stuck_over_retire;
  calls_abandoned += o.calls_abandoned;
  calls_undone += o.calls_undone;
  inline_host_reactions += o.inline_host_reactions;
  executor_stalls += o.executor_stalls;
}

std::string ReplayCommand(uint64_t seed) {
  return absl::StrCat("bazel run //test/sim:sim_replay -- --seed=", seed, " --verbose");
}

std::string SimConfig::Describe() const {
  std::string s =
      absl::StrCat("guest<=", protocol::VersionName(guest_max_version),
                   " host<=", protocol::VersionName(host_max_version),
                   " to_host=", DelayName(to_host), " to_guest=", DelayName(to_guest),
                   " irq=", DelayName(interrupts), " executor_lag=", DelayName(executor_lag));
  if (drops) {
    absl::StrAppend(&s, " drops=", static_cast<int>(drop_probability * 100), "%");
  }
  if (polling) {
    absl::StrAppend(&s, " poll(guest=", absl::FormatDuration(guest_poll),
                    ",host=", absl::FormatDuration(host_poll), ")");
  }
  if (stalls) absl::StrAppend(&s, " executor_stalls");
  absl::StrAppend(&s, " map=", async_map ? "async" : "sync",
                  " deadlines=", tight_deadlines ? "tight" : "generous");
  if (monitored_offers) absl::StrAppend(&s, " monitored(", monitor_latency_us, "us)");
  if (link_loss) absl::StrAppend(&s, " link_loss");
  absl::StrAppend(&s, " polling_opens=", static_cast<int>(polling_opens * 100),
                  "% small_budgets=", static_cast<int>(small_budgets * 100), "%");
  if (stuck_chance > 0) {
    absl::StrAppend(&s, " stuck=", static_cast<int>(stuck_chance * 100),
                    "%(<=", absl::FormatDuration(max_stuck), ")");
  }
  if (blocking_calls > 0) {
    absl::StrAppend(&s, " blocking_calls=", static_cast<int>(blocking_calls * 100),
                    "%(grace<=", absl::FormatDuration(max_grace), ")");
  }
  if (inline_host > 0)
    absl::StrAppend(&s, " inline_host=", static_cast<int>(inline_host * 100), "%");
  absl::StrAppend(&s, " stall_report=", absl::FormatDuration(stall_report), " remap=",
                  permute_relids ? "permute"
                  : remap_relids ? "yes"
                                 : "no",
                  suspends ? " suspends" : "", " rounds=", rounds, " ops=", ops_per_round,
                  " gap<=", op_gap_us, "us");
  return s;
}

// ---- Construction and the run ------------------------------------------------------------

World::World(const SimOptions& options)
    : options_(options), rng_(options.seed), link_rng_(rng_.Fork()), sched_(absl::UnixEpoch()) {}

World::~World() {
  // The executor stops first (every waiting call fails, channels forget the bus, its memory
  // goes back); nothing is checked any more.
  tearing_down_ = true;
  if (backend_ != nullptr) backend_->set_quiet(true);
  if (executor_ != nullptr) executor_->Stop();
  executor_.reset();
  offers_.clear();
  sessions_.clear();
  calls_.clear();
  dispatch_.clear();
  backend_.reset();
}

void World::ChooseConfig() {
  auto version = [&] {
    return rng_.Chance(0.5) ? protocol::kNewestVersion
                            : protocol::kGuestVersions[rng_.Below(protocol::kGuestVersions.size())];
  };
  auto delay = [&](uint32_t zero, uint32_t small, uint32_t wide) {
    switch (rng_.Weighted({zero, small, wide})) {
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
  config_.to_host = delay(2, 5, 3);
  config_.to_guest = delay(2, 5, 3);
  config_.interrupts = delay(2, 5, 3);
  config_.executor_lag = delay(5, 3, 2);
  config_.stalls = rng_.Chance(0.5);
  config_.drops = rng_.Chance(0.3);
  config_.drop_probability = config_.drops ? static_cast<double>(rng_.Range(5, 50)) / 100 : 0;
  config_.polling = config_.drops;
  config_.guest_poll = absl::Microseconds(rng_.Range(100, 2000));
  config_.host_poll = absl::Microseconds(rng_.Range(100, 2000));
  config_.async_map = rng_.Chance(0.2);
  config_.tight_deadlines = rng_.Chance(0.35);
  config_.monitored_offers = rng_.Chance(0.3);
  config_.monitor_latency_us = static_cast<uint32_t>(rng_.Range(20, 500));
  config_.remap_relids = rng_.Chance(0.5);
  config_.link_loss = rng_.Chance(0.25);
  static constexpr double kShares[] = {0, 0.3, 0.7, 1};
  config_.polling_opens = kShares[rng_.Weighted({4, 3, 2, 1})];
  config_.small_budgets = kShares[rng_.Below(3)];
  config_.stuck_chance = rng_.Chance(0.5) ? static_cast<double>(rng_.Range(1, 10)) / 100 : 0;
  config_.max_stuck = absl::Microseconds(rng_.Range(50, 3000));
  config_.blocking_calls = kShares[rng_.Weighted({3, 3, 3, 1})];
  config_.max_grace = absl::Microseconds(rng_.Range(0, 1000));
  config_.inline_host = rng_.Chance(0.3) ? static_cast<double>(rng_.Range(10, 60)) / 100 : 0;
  config_.stall_report =
      rng_.Chance(0.5) ? absl::Microseconds(rng_.Range(100, 2000)) : absl::Seconds(5);
  config_.rounds = static_cast<int>(rng_.Range(1, 4));
  static constexpr uint32_t kGaps[] = {30, 150, 400};
  config_.op_gap_us = kGaps[rng_.Below(3)];
  config_.ops_per_round = static_cast<int>(rng_.Range(15, 50));
  config_.post_failures = rng_.Chance(0.3) ? static_cast<double>(rng_.Range(2, 20)) / 100 : 0;
  config_.forced_unloads = rng_.Chance(0.4);
  config_.spoiled_offers = rng_.Chance(0.2) ? static_cast<double>(rng_.Range(5, 30)) / 100 : 0;
  config_.suspends = rng_.Chance(0.4);
  config_.permute_relids = rng_.Chance(0.5);
  // A mapping still outstanding for a relid that is rescinded and offered again is taken for
  // the new channel's by the host when the guest refuses that one: not spoiled together.
  if (config_.async_map) config_.spoiled_offers = 0;
  if (options_.binary_codec) config_.spoiled_offers = 0;
  const SimFaults& f = options_.faults;
  if (f.blind_async_map) config_.async_map = true;
  if (f.skip_unmask_recheck) {
    // Only the re-check can find packets the host wrote while the drain was about to unmask
    // (the host reacts inside the guest's signal); nobody polls, so a skipped one stalls.
    config_.inline_host = 0.6;
    config_.drops = false;
    config_.polling = false;
    config_.monitored_offers = false;
    config_.polling_opens = 0;
  }
  if (f.lose_wakeups) {
    // Lose interrupts with nobody polling: a dropped wakeup that matters must stall the run.
    config_.drops = true;
    config_.drop_probability = 0.5;
    config_.polling = false;
    config_.monitored_offers = false;
  }
  if (f.ignore_in_use || f.free_held_memory) {
    // Retires while a receive callback blocks.
    config_.stuck_chance = 0.3;
    config_.polling_opens = 0;
  }
  if (f.complete_abandoned) {
    // Callers that give up before a held-up executor answers.
    config_.tight_deadlines = true;
    config_.blocking_calls = 1;
    config_.executor_lag = DelayMode::kWide;
    config_.stalls = true;
  }
}

absl::Status World::Setup() {
  mock::MemoryLayout guest_layout;
  guest_layout.vp_count = kSimVps;
  absl::StatusOr<std::unique_ptr<mock::GuestMemory>> memory =
      mock::GuestMemory::Create("", kMemoryBytes, guest_layout);
  if (!memory.ok()) return memory.status();
  memory_ = *std::move(memory);
  const mock::MemoryLayout& layout = memory_->layout();
  absl::StatusOr<uint8_t*> base = memory_->Translate(layout.first_data_pfn);
  if (!base.ok()) return base.status();
  pool_.emplace(*base, layout.first_data_pfn, memory_->page_count() - layout.first_data_pfn);

  // The guest: the production executor on the simulated backend.
  SimBackendPeer* peer = this;
  backend_ = std::make_unique<SimBackend>(memory_.get(), &*pool_, peer);
  if (absl::Status s = backend_->Start(nullptr); !s.ok()) return s;
  for (uint32_t vp = 0; vp < backend_->vp_count(); ++vp) {
    absl::StatusOr<std::unique_ptr<EventDispatch>> dispatch = EventDispatch::Create(&table_);
    if (!dispatch.ok()) return dispatch.status();
    if (absl::Status s = (*dispatch)->Attach(backend_->ReceiveEventFlags(vp)); !s.ok()) return s;
    dispatch_.push_back(*std::move(dispatch));
  }
  const BusConfig bus_config = BusConfigFor(backend_->contact_info(), config_.guest_max_version);
  ExecutorOptions executor_options;
  executor_options.stall_report = config_.stall_report;
  executor_options.fault = [this](PlantedFault f) { return OnFaultPoint(f); };
  ChannelLink* link = this;
  ExecutorListener* listener = this;
  executor_ = std::make_unique<BusExecutor>(backend_.get(), &table_, link, listener, bus_config,
                                            std::move(executor_options));
  post_tail_ = sched_.now();

  mock::EngineOptions engine_options;
  engine_options.settings.set_max_version(config_.host_max_version);
  engine_options.settings.set_remap_relids_on_resume(config_.remap_relids);
  engine_options.settings.set_permute_relids_on_resume(config_.permute_relids);
  engine_options.settings.set_monitor_latency_us(config_.monitor_latency_us);
  engine_options.seed = rng_.Next();
  const uint64_t initial = rng_.Range(1, 4);
  for (uint64_t i = 0; i < initial; ++i) engine_options.default_offers.push_back(RandomSpec());
  absl::StatusOr<std::unique_ptr<mock::HostEngine>> engine =
      mock::HostEngine::Create(std::move(engine_options));
  if (!engine.ok()) return engine.status();
  engine_ = *std::move(engine);

  if (absl::Status s = AttachHost(); !s.ok()) return s;

  for (uint32_t vp = 0; vp < kSimVps; ++vp) {
    guest_bell_seen_[vp] = memory_->DoorbellValue(mock::Doorbell::kGuest, vp);
  }
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
  if (executor_ != nullptr) stats_.calls_undone = executor_->counters().calls_undone;
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
      if (config_.suspends && rng_.Chance(0.6)) {
        if (!SuspendAndResume()) return;
      } else {
        const bool forced = config_.forced_unloads && rng_.Chance(0.5);
        if (!UnloadAndReconnect(forced)) return;
      }
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
  const uint64_t id = IssueCall(RequestKind::kConnect, OfferId(), deadline, 0,
                                [deadline](BusExecutor& executor, CallDone done) {
                                  executor.Connect(deadline, std::move(done));
                                });
  if (!RunUntilSettled("connect", kSettleBudget)) return false;
  if (!calls_.at(id).completed) Fail("connect never completed");
  CheckSettled();
  return !failed_;
}

bool World::Unload(absl::string_view phase, UnloadMode mode) {
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
  IssueCall(RequestKind::kUnload, OfferId(), deadline, 0,
            [deadline, mode](BusExecutor& executor, CallDone done) {
              executor.Unload(deadline, std::move(done), mode);
            });
  if (mode == UnloadMode::kForced) ++stats_.forced_unloads;
  const int crossing = static_cast<int>(rng_.Range(0, 5));
  if (crossing > 0) ScheduleChaos(crossing);
  in_unload_ = true;
  const bool settled = RunUntilSettled(phase, kSettleBudget);
  in_unload_ = false;
  if (!settled) return false;
  CheckSettled();
  return !failed_;
}

bool World::UnloadAndReconnect(bool forced) {
  if (forced) {
    // A crash-style unload: whatever is open stays open, traffic included (docs/protocol.md §9).
    OpTraffic();
    if (!Unload("forced unload", UnloadMode::kForced)) return false;
  } else if (!CloseEverything() || !Unload("unload")) {
    return false;
  }
  if (failed_) return false;
  if (executor_->phase() != BusPhase::kDisconnected) {
    Fail(absl::StrCat("after unload the bus is ", BusPhaseName(executor_->phase())));
    return false;
  }
  return Connect();
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
    kStall,
  };
  const size_t op =
      rng_.Weighted({18, 8, 7, 5, 4, 30, 12, 5, 4, 2, config_.link_loss && !in_unload_ ? 2u : 0u,
                     config_.stalls ? 8u : 0u});
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
    case kLinkLoss:
      OpLinkLoss();
      break;
    default:
      OpStall();
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
        Trace(absl::StrCat("settled (", phase, ") at +", Elapsed()));
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
  try {
    sched_.RunNext([this](absl::string_view label) {
      Trace(absl::StrCat("#", stats_.steps, nest_depth_ > 0 ? " (nested) +" : " +", Elapsed(), " ",
                         label));
    });
  } catch (const SimAbort&) {
    // A check failed inside a blocked receive callback, which unwound the production drain
    // around it: the run is over (see OnCallbackPacket).
    return;
  }
  if (!late_failure_.empty()) Fail(late_failure_);
  if (failed_) return;
  CheckDoorbells();
  SyncWakeup();
  ObserveSessions();
  if (!failed_) CheckStep();
}

void World::RunNested(absl::Duration duration) {
  const absl::Time until = sched_.now() + duration;
  ++nest_depth_;
  while (!failed_) {
    const std::optional<absl::Time> next = sched_.NextTime();
    if (!next || *next > until) break;
    RunStep();
  }
  if (!failed_) sched_.AdvanceTo(until);
  --nest_depth_;
}

bool World::DataQuiescent() const {
  if (bus().pending_requests() != 0) return false;
  if (!executor_->RetiringOffers().empty()) return false;
  for (const auto& [id, call] : calls_) {
    if (!call.completed && !call.abandoned) return false;
  }
  for (uint64_t sid : live_sessions_) {
    for (const auto& queue : sessions_.at(sid).senders) {
      if (!queue.empty()) return false;
    }
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
  for (const auto& [id, call] : calls_) {
    if (!call.completed && !call.abandoned) {
      return absl::StrCat("call ", id, " (", RequestKindName(call.kind), " of offer ",
                          call.offer.value(), ") has not completed",
                          call.started ? "" : " (the executor has not run it)");
    }
  }
  if (bus().pending_requests() != 0) {
    return absl::StrCat(bus().pending_requests(), " BusState requests pending");
  }
  if (std::vector<OfferId> retiring = executor_->RetiringOffers(); !retiring.empty()) {
    return absl::StrCat("the receive side of offer ", retiring.front().value(),
                        " is still retiring");
  }
  for (uint64_t sid : live_sessions_) {
    const Session& s = sessions_.at(sid);
    for (int k = 0; k < Session::kSenders; ++k) {
      if (!s.senders[k].empty()) {
        return absl::StrCat("sender ", k, " of relid ", s.relid, " has ", s.senders[k].size(),
                            " packets waiting for ring space");
      }
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
    const char* mode = s.callback_mode ? "callback mode" : "polling mode";
    if (!s.echo_expect.empty()) {
      return absl::StrCat("relid ", s.relid, " (open on both sides, ", mode, ") still owes ",
                          s.echo_expect.size(), " echo replies (first trans_id ",
                          s.echo_expect.front().trans_id, ")");
    }
    if (!s.host_expect.empty()) {
      return absl::StrCat("relid ", s.relid, " (open on both sides): the host has not read ",
                          s.host_expect.size(), " guest packets");
    }
    if (!s.guest_expect.empty()) {
      return absl::StrCat("relid ", s.relid, " (open on both sides, ", mode,
                          "): the guest has not read ", s.guest_expect.size(), " host packets");
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

void World::Trace(std::string line) const {
  if (options_.verbose) std::fprintf(stderr, "%s\n", line.c_str());
  trace_.push_back(std::move(line));
  while (trace_.size() > options_.trace_tail) trace_.pop_front();
}

std::string World::Elapsed() const { return absl::FormatDuration(sched_.elapsed()); }

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

}  // namespace vbus::sim
