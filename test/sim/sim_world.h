// Deterministic simulation of a whole channel bus: the guest's BusState plus a small guest
// runtime on one side, the mock host's real HostEngine and GuestDataPlane (echo and raw
// devices over core rings) on the other, wired through a seeded in-memory scheduler with a
// virtual clock. No threads, no real clocks: a seed reproduces a run exactly.
//
// What one seed chooses (see SimConfig, printed by Describe()):
//   - guest and host maximum protocol versions (negotiation must land on the lower);
//   - control-message delays in each direction (order within a direction is kept, as the
//     real transports keep it; the protocol relies on it);
//   - interrupt (doorbell) delays, and whether interrupts may be dropped — then both sides
//     poll their event pages periodically, the way real drivers recover (the mock host's
//     doorbell loop scans on a timer; a guest's event loop would too). Without drops there is
//     no polling at all, so a lost wakeup (a missed signal-suppression case) stalls the run
//     and is reported;
//   - whether the host maps rings synchronously (as MockHost does) or after a delay (the
//     engine's CompleteOpen contract allows it);
//   - generous deadlines (then no call may time out) or tight ones (timeouts are exercised);
//   - the initial offers (echo and raw devices, sub-channels, monitored or not), and a stream
//     of scenario steps at random times: opens, closes, GPADL creates and teardowns, modify,
//     packet bursts both ways, host rescinds, hot-adds, injected host refusals, unload and
//     reconnect (with or without relid remapping).
//
// What is checked after EVERY step (an event), with the failing step's number:
//   - BusState::CheckInvariants();
//   - no channel both open and rescinded (guest table, guest state, host mapping);
//   - every GPADL released exactly once by the guest, never while the host still maps its
//     pages, and its pages freed only then; the host's GPADL table never holds a handle the
//     guest released unless a message that drops it is on its way;
//   - every packet delivered in order with its exact bytes (echo: guest → host → guest;
//     raw: both directions), none duplicated or invented;
//   - relids: the host never re-offers a relid the guest still holds, the guest releases a
//     relid only after retiring its channel, and the host forgets it only when told;
//   - every call completes exactly once, never after its deadline (virtual time), with a
//     status that fits what happened; every host reply answers a request the host received
//     (no duplicates); the host refuses nothing that a correct guest could not have caused,
//     and the guest ignores no host input except stale replies.
// And at every settle point (no work left): guest and host agree on which channels are
// open and on the live GPADLs, every packet sent on an open channel has arrived, every call
// has completed; at the end all memory is back in the page pool.
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
  // The guest runtime does not clear the channel table on RetireChannel.
  bool skip_retire = false;
  // The guest's drain ignores what the re-check after unmasking interrupts finds.
  bool skip_unmask_recheck = false;
  // The host runtime maps rings asynchronously without re-checking that the channel is still
  // opening (the engine's MapRings contract allows it; the memory may be freed by then).
  bool blind_async_map = false;

  bool any() const {
    return drop_relid_released || duplicate_open_result || early_relid_reuse || lose_wakeups ||
           skip_retire || skip_unmask_recheck || blind_async_map;
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
  uint64_t settles = 0;
  uint64_t relid_reuses = 0;                // offers of a relid an earlier offer held
  uint64_t guest_ring_full = 0;             // guest writes that found the ring full
  uint64_t host_ring_full = 0;              // host raw sends that found the ring full
  uint64_t host_waits_for_room = 0;         // guest drains that found pending_send_sz armed
  uint64_t unmask_rechecks_found_data = 0;  // re-checks after unmasking that found packets
  uint64_t link_losses = 0;                 // GuestLink streams broken mid-round

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
