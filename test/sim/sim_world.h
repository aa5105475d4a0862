// Deterministic simulation of a whole channel bus: the guest's PRODUCTION runtime — BusExecutor
// (with its BusState), Channels, EventDispatch and ChannelTable, on a SimBackend — against the
// mock host's real HostEngine and GuestDataPlane (echo and raw devices over core rings), wired
// through a seeded in-memory scheduler with a virtual clock. No threads, no real clocks: a seed
// reproduces a run exactly. The simulation's own guest code is only the application: the
// scenario's calls, drivers that release removed offers, senders and receivers.
//
// What one seed chooses (see SimConfig, printed by Describe()):
//   - guest and host maximum protocol versions (negotiation must land on the lower);
//   - control-message delays in each direction (order within a direction is kept, as the
//     real transports keep it; the protocol relies on it), how long work posted to the
//     executor waits, and whether the executor's thread is sometimes held up (its inputs —
//     host messages, calls, timers — wait, then run in order);
//   - interrupt (doorbell) delays, and whether interrupts may be dropped — then both sides
//     poll their event pages periodically, the way real drivers recover. Without drops there
//     is no polling at all, so a lost wakeup (a missed signal-suppression case) stalls the
//     run and is reported;
//   - whether the host maps rings synchronously (as MockHost does) or after a delay, and
//     whether it sometimes reacts to a guest signal at once, inside the signalling call (so it
//     writes into a ring the guest is in the middle of draining);
//   - generous deadlines (then no call may time out) or tight ones (timeouts are exercised),
//     and which callers wait on a CallTicket and give up at their deadline plus a grace —
//     sometimes before the executor has answered (the executor must then undo the call);
//   - per open: ring sizes, target VP, user data, drain budget, and callback or polling mode
//     (polling channels are polled with Channel::Poll after interrupts, in seeded batches);
//   - receive callbacks that block: a seeded share of deliveries runs the world on (nested
//     steps) for a while from inside the callback, so closes, rescinds, reopen attempts, link
//     losses and unloads land while the channel's drain is in progress;
//   - the initial offers (echo and raw devices, sub-channels, monitored or not), and a stream
//     of scenario steps at random times: opens, closes, GPADL creates and teardowns, modify,
//     packets both ways (two senders per channel, mixed sizes, requests whose echo comes back
//     as a completion, WhenWritable when the ring is full), host rescinds, hot-adds, injected
//     host refusals, link losses, unload and reconnect (with or without relid remapping).
//
// What is checked after EVERY step (an event, nested ones included), with its number:
//   - BusState::CheckInvariants();
//   - the channel table holds exactly the channels BusState has published; no channel both
//     open and rescinded (guest state, table, host mapping);
//   - guest memory: every run the executor holds is described by a GPADL BusState has live
//     (and the executor files it) or held by a retiring channel; every free happens only once
//     the host no longer maps its pages and BusState released its GPADL; the host's GPADL
//     table never holds a handle the guest released unless a message that drops it is on its
//     way;
//   - every packet delivered in order with its exact bytes (echo: guest → host → guest,
//     replies and completions in one order; raw: both directions), none duplicated or
//     invented;
//   - relids: the host never re-offers a relid the guest still holds, the guest releases a
//     relid only after its table slot is clear, and the host forgets it only when told;
//   - receive quiescence: while a receive callback blocks, its channel keeps its receive side
//     (a retired one is listed by RetiringOffers), its memory stays allocated, no Close of it
//     returns OK and its OfferRemoved is not passed on; no callback runs after its Close
//     returned OK or its offer was removed;
//   - every call is claimed and completed exactly once, never after its deadline unless the
//     executor got to it late, with a status that fits what happened; a call whose caller gave
//     up is never completed; every host reply answers a request the host received (no
//     duplicates); the host refuses nothing that a correct guest could not have caused, and the
//     guest ignores no host input except stale replies.
// And at every settle point (no work left): guest and host agree on which channels are
// open and on the live GPADLs, every packet sent on an open channel has arrived, every call
// has completed or was given up, no channel is retiring, a channel whose last open was given
// up is closed on both sides and a GPADL whose creation was given up is live on neither; at
// the end all memory is back in the page pool.
//
// Planted bugs (SimFaults) prove the checks work: host- and link-side ones planted by the
// simulation, guest-side ones planted in the production code through its fault points
// (ExecutorOptions::fault, core/runtime/runtime_internal.h).
//
// Replaying a seed:
//   bazel run //test/sim:sim_replay -- --seed=123 --verbose
//   bazel test //test/sim:sim_test --test_env=VBUS_SIM_SEED=123
#ifndef VBUS_TEST_SIM_SIM_WORLD_H_
#define VBUS_TEST_SIM_SIM_WORLD_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace vbus::sim {

// SimFaults
// Test-only switches that deliberately break one behaviour, to prove the checks catch it.
// All off in normal runs.
struct SimFaults {
  // The link loses the first RelidReleased the guest sends (the host never frees the relid).
  bool drop_relid_released = false;
  // The link delivers the first successful OpenResult twice.
  bool duplicate_open_result = false;
  // When the host rescinds a channel, the simulation makes the engine forget the relid at
  // once (a forged RelidReleased) and then hot-adds a device: the host reuses the relid early.
  bool early_relid_reuse = false;
  // Interrupts are dropped although nobody polls (a lost wakeup the protocol cannot survive).
  bool lose_wakeups = false;
  // The host runtime maps rings asynchronously without re-checking that the channel is still
  // opening (the engine's MapRings contract allows it; the memory may be freed by then).
  bool blind_async_map = false;
  // Planted in the production executor and channels (PlantedFault,
  // core/runtime/runtime_internal.h):
  bool skip_unpublish = false;       // a retired channel stays in the channel table
  bool ignore_in_use = false;        // a receive side goes while a callback still runs
  bool free_held_memory = false;     // a retiring channel's memory is freed at ReleaseGpadl
  bool complete_abandoned = false;   // a call whose caller gave up is completed, not undone
  bool skip_unmask_recheck = false;  // a drain ignores what its re-check after unmasking finds

  bool any() const {
    return drop_relid_released || duplicate_open_result || early_relid_reuse || lose_wakeups ||
           blind_async_map || skip_unpublish || ignore_in_use || free_held_memory ||
           complete_abandoned || skip_unmask_recheck;
  }
};

struct SimOptions {
  uint64_t seed = 0;
  SimFaults faults;
  // Print every trace line to stderr as it happens (otherwise only the tail on failure).
  bool verbose = false;
  // Trace lines kept for a failure report.
  size_t trace_tail = 40;
  // A run that needs more steps than this fails ("no end in sight").
  uint64_t max_steps = 400000;
  // Every control message crosses Hyper-V's binary encoding (hyperv/wire.h) both ways: the
  // sender's side encodes it (a GpadlCreate into its GPADL_HEADER and GPADL_BODY parts), the
  // receiver's decodes and reassembles it, and the run fails unless what arrives is what was
  // sent. Offers are not spoiled on the way (a monitor id the wire cannot carry).
  bool binary_codec = false;
};

// SimStats: what one run did.
struct SimStats {
  uint64_t steps = 0;
  absl::Duration virtual_time;
  uint64_t messages_to_host = 0;
  uint64_t messages_to_guest = 0;
  uint64_t packets_sent = 0;      // guest → host and host → guest, written to a ring
  uint64_t packets_verified = 0;  // arrived with the right bytes, in order
  uint64_t bytes_verified = 0;
  uint64_t opens_ok = 0;
  uint64_t open_failures = 0;
  uint64_t closes = 0;
  uint64_t rescinds = 0;
  uint64_t hot_adds = 0;
  uint64_t gpadls_released = 0;
  uint64_t deadlines_exceeded = 0;
  uint64_t interrupts = 0;
  uint64_t interrupts_dropped = 0;
  uint64_t polls = 0;
  uint64_t stale_replies_ignored = 0;
  uint64_t host_refusals = 0;
  uint64_t unloads = 0;
  uint64_t forced_unloads = 0;           // unloads with channels open
  uint64_t wire_messages = 0;            // control messages that crossed the binary codec
  uint64_t wire_parts = 0;               // ... as this many wire messages
  uint64_t suspends = 0;                 // suspends that parked the devices
  uint64_t offers_resumed = 0;           // devices offered again after a resume
  uint64_t post_failures = 0;            // posts the backend failed (ResourceExhausted)
  uint64_t offers_spoiled = 0;           // offers the link made invalid
  uint64_t refused_offers_released = 0;  // ... whose relids the guest gave back
  uint64_t settles = 0;
  uint64_t relid_reuses = 0;                // offers of a relid an earlier offer held
  uint64_t guest_ring_full = 0;             // guest writes that found the ring full
  uint64_t host_ring_full = 0;              // host raw sends that found the ring full
  uint64_t host_waits_for_room = 0;         // guest signals to a host waiting for room
  uint64_t unmask_rechecks_found_data = 0;  // re-checks after unmasking that found packets
  uint64_t link_losses = 0;                 // GuestLink streams broken mid-round
  uint64_t completions_verified = 0;        // echo completions matched to their requests
  uint64_t polled_packets = 0;              // packets received by Channel::Poll
  uint64_t writable_wakeups = 0;            // WhenWritable callbacks after the ring drained
  uint64_t stuck_callbacks = 0;             // receive callbacks that blocked
  uint64_t stuck_over_retire = 0;           // ... while their channel was retired
  uint64_t calls_abandoned = 0;             // callers that gave up before the result
  uint64_t calls_undone = 0;                // results the executor undid for them
  uint64_t inline_host_reactions = 0;       // host reactions inside a guest signal
  uint64_t executor_stalls = 0;             // times the executor's thread was held up

  void Add(const SimStats& o);
};

struct SimResult {
  bool ok = true;
  // One line naming the broken invariant (empty when ok).
  std::string failure;
  // Step (1-based) at which it broke.
  uint64_t failed_step = 0;
  // The full report: seed, step, virtual time, the failure, the trace tail and the one-line
  // replay command.
  std::string report;
  // The seed's configuration in one line (versions, delay modes, drops, deadlines).
  std::string config;
  // Whether the requested SimFaults actually fired in this run.
  bool fault_fired = false;
  SimStats stats;
};

// RunSimulation: runs one seed to the end (or the first broken invariant).
SimResult RunSimulation(const SimOptions& options);

// ReplayCommand: the one-line command that replays `seed` with a full trace.
std::string ReplayCommand(uint64_t seed);

}  // namespace vbus::sim

#endif  // VBUS_TEST_SIM_SIM_WORLD_H_
