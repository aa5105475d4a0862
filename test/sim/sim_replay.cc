// sim_replay: runs simulation seeds outside the test runner — to replay one failing seed with
// a full trace, or to sweep many seeds (the long run that `bazel test` leaves out).
//
//   bazel run //test/sim:sim_replay -- --seed=123 --verbose          # one seed, every step
//   bazel run -c opt //test/sim:sim_replay -- --seed=1 --count=20000 # a sweep
//   bazel run //test/sim:sim_replay -- --seed=5 --fault=skip_retire  # a planted bug
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
ABSL_FLAG(std::string, fault, "",
          "comma-separated planted bugs: drop_relid_released, duplicate_open_result, "
          "early_relid_reuse, lose_wakeups, skip_retire, skip_unmask_recheck, blind_async_map");
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
    } else if (f == "skip_retire") {
      faults.skip_retire = true;
    } else if (f == "skip_unmask_recheck") {
      faults.skip_unmask_recheck = true;
    } else if (f == "blind_async_map") {
      faults.blind_async_map = true;
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
  std::printf(
      "%llu seeds (%llu..%llu), %d failed, %s wall, %s virtual: %llu steps, %llu messages, "
      "%llu packets verified (%llu bytes), %llu opens (%llu failed), %llu closes, %llu rescinds, "
      "%llu hot-adds, %llu GPADLs released, %llu timeouts, %llu interrupts (%llu dropped), "
      "%llu polls, %llu stale replies, %llu host refusals, %llu unloads, %llu settle points, "
      "%llu relid reuses, %llu/%llu full rings (guest/host), %llu host waits for room, "
      "%llu unmask re-checks with data, %llu link losses\n",
      static_cast<unsigned long long>(ran), static_cast<unsigned long long>(first),
      static_cast<unsigned long long>(first + ran - 1), failures,
      absl::FormatDuration(absl::Now() - start).c_str(),
      absl::FormatDuration(total.virtual_time).c_str(),
      static_cast<unsigned long long>(total.steps),
      static_cast<unsigned long long>(total.messages_to_host + total.messages_to_guest),
      static_cast<unsigned long long>(total.packets_verified),
      static_cast<unsigned long long>(total.bytes_verified),
      static_cast<unsigned long long>(total.opens_ok),
      static_cast<unsigned long long>(total.open_failures),
      static_cast<unsigned long long>(total.closes),
      static_cast<unsigned long long>(total.rescinds),
      static_cast<unsigned long long>(total.hot_adds),
      static_cast<unsigned long long>(total.gpadls_released),
      static_cast<unsigned long long>(total.deadlines_exceeded),
      static_cast<unsigned long long>(total.interrupts),
      static_cast<unsigned long long>(total.interrupts_dropped),
      static_cast<unsigned long long>(total.polls),
      static_cast<unsigned long long>(total.stale_replies_ignored),
      static_cast<unsigned long long>(total.host_refusals),
      static_cast<unsigned long long>(total.unloads),
      static_cast<unsigned long long>(total.settles),
      static_cast<unsigned long long>(total.relid_reuses),
      static_cast<unsigned long long>(total.guest_ring_full),
      static_cast<unsigned long long>(total.host_ring_full),
      static_cast<unsigned long long>(total.host_waits_for_room),
      static_cast<unsigned long long>(total.unmask_rechecks_found_data),
      static_cast<unsigned long long>(total.link_losses));
  return failures == 0 ? 0 : 1;
}
