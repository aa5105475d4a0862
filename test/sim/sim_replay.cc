// sim_replay: runs simulation seeds outside the test runner — to replay one failing seed with
// a full trace, or to sweep many seeds (the long run that `bazel test` leaves out).
//
//   bazel run //test/sim:sim_replay -- --seed=123 --verbose          # one seed, every step
//   bazel run -c opt //test/sim:sim_replay -- --seed=1 --count=20000 # a sweep
//   bazel run //test/sim:sim_replay -- --seed=5 --fault=skip_unpublish  # a planted bug
//
// Exit status: 0 if every seed passed, 1 otherwise (the first failures' reports are printed).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "test/sim/sim_world.h"

ABSL_FLAG(uint64_t, seed, 1, "first seed to run");
ABSL_FLAG(uint64_t, count, 1, "number of consecutive seeds to run");
ABSL_FLAG(bool, verbose, false, "print every trace line as it happens");
ABSL_FLAG(bool, binary_codec, false,
          "every control message crosses Hyper-V's binary encoding both ways");
ABSL_FLAG(std::string, fault, "",
          "comma-separated planted bugs: drop_relid_released, duplicate_open_result, "
          "early_relid_reuse, lose_wakeups, blind_async_map (host and link side); "
          "skip_unpublish, ignore_in_use, free_held_memory, complete_abandoned, "
          "skip_unmask_recheck (planted in the production executor and channels)");
ABSL_FLAG(int, max_failures, 5, "stop a sweep after this many failing seeds");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Replays or sweeps vbus deterministic-simulation seeds.");
  absl::ParseCommandLine(argc, argv);
  vbus::sim::SimFaults faults;
  for (absl::string_view f : absl::StrSplit(absl::GetFlag(FLAGS_fault), ',', absl::SkipEmpty())) {
    if (f == "drop_relid_released") {
      faults.drop_relid_released = true;
    } else if (f == "duplicate_open_result") {
      faults.duplicate_open_result = true;
    } else if (f == "early_relid_reuse") {
      faults.early_relid_reuse = true;
    } else if (f == "lose_wakeups") {
      faults.lose_wakeups = true;
    } else if (f == "blind_async_map") {
      faults.blind_async_map = true;
    } else if (f == "skip_unpublish") {
      faults.skip_unpublish = true;
    } else if (f == "ignore_in_use") {
      faults.ignore_in_use = true;
    } else if (f == "free_held_memory") {
      faults.free_held_memory = true;
    } else if (f == "complete_abandoned") {
      faults.complete_abandoned = true;
    } else if (f == "skip_unmask_recheck") {
      faults.skip_unmask_recheck = true;
    } else {
      std::fprintf(stderr, "unknown --fault %s\n", std::string(f).c_str());
      return 2;
    }
  }
  const uint64_t first = absl::GetFlag(FLAGS_seed);
  const uint64_t count = absl::GetFlag(FLAGS_count);
  const absl::Time start = absl::Now();
  vbus::sim::SimStats total;
  int failures = 0;
  uint64_t ran = 0;
  for (uint64_t seed = first; seed < first + count; ++seed) {
    vbus::sim::SimOptions options;
    options.seed = seed;
    options.faults = faults;
    options.verbose = absl::GetFlag(FLAGS_verbose);
    options.binary_codec = absl::GetFlag(FLAGS_binary_codec);
    const vbus::sim::SimResult r = vbus::sim::RunSimulation(options);
    total.Add(r.stats);
    ++ran;
    if (!r.ok) {
      std::printf("%s\n\n", r.report.c_str());
      if (++failures >= absl::GetFlag(FLAGS_max_failures)) break;
    } else if (count == 1) {
      std::printf("seed %llu passed: %s\n", static_cast<unsigned long long>(seed),
                  r.config.c_str());
    }
    if (count > 1 && ran % 1000 == 0) {
      std::fprintf(stderr, "%llu seeds, %d failed, %s\n", static_cast<unsigned long long>(ran),
                   failures, absl::FormatDuration(absl::Now() - start).c_str());
    }
  }
  const vbus::sim::SimStats& t = total;
  auto n = [](uint64_t v) { return static_cast<unsigned long long>(v); };
  std::printf(
      "%llu seeds (%llu..%llu), %d failed, %s wall, %s virtual: %llu steps, %llu messages, "
      "%llu packets verified (%llu bytes, %llu completions, %llu polled), %llu opens (%llu "
      "failed), %llu closes, %llu rescinds, %llu hot-adds, %llu GPADLs released, %llu timeouts, "
      "%llu interrupts (%llu dropped), %llu polls, %llu stale replies, %llu host refusals, "
      "%llu unloads (%llu forced), %llu suspends (%llu devices resumed), %llu failed posts, %llu "
      "spoiled offers (%llu relids given "
      "back), %llu settle points, %llu relid reuses, "
      "%llu/%llu full rings (guest/host), "
      "%llu WhenWritable wake-ups, %llu host waits for room, %llu unmask re-checks with data, "
      "%llu inline host reactions, %llu link losses, %llu blocked callbacks (%llu over a "
      "retire), %llu calls given up (%llu undone)\n",
      n(ran), n(first), n(first + ran - 1), failures,
      absl::FormatDuration(absl::Now() - start).c_str(),
      absl::FormatDuration(t.virtual_time).c_str(), n(t.steps),
      n(t.messages_to_host + t.messages_to_guest), n(t.packets_verified), n(t.bytes_verified),
      n(t.completions_verified), n(t.polled_packets), n(t.opens_ok), n(t.open_failures),
      n(t.closes), n(t.rescinds), n(t.hot_adds), n(t.gpadls_released), n(t.deadlines_exceeded),
      n(t.interrupts), n(t.interrupts_dropped), n(t.polls), n(t.stale_replies_ignored),
      n(t.host_refusals), n(t.unloads), n(t.forced_unloads), n(t.suspends), n(t.offers_resumed),
      n(t.post_failures), n(t.offers_spoiled), n(t.refused_offers_released), n(t.settles),
      n(t.relid_reuses), n(t.guest_ring_full), n(t.host_ring_full), n(t.writable_wakeups),
      n(t.host_waits_for_room), n(t.unmask_rechecks_found_data), n(t.inline_host_reactions),
      n(t.link_losses), n(t.stuck_callbacks), n(t.stuck_over_retire), n(t.calls_abandoned),
      n(t.calls_undone));
  return failures == 0 ? 0 : 1;
}
