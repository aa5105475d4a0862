#!/usr/bin/env bash
# Runs the data-plane and bus benchmarks in interleaved rounds and prints every ratio of
# docs/performance.md per round, with its median and range.
#
#   tools/bench.sh [rounds] [output directory]     (defaults: 5 rounds, a fresh temporary dir)
#
# Each round runs //test/bench:ring_bench and //test/bench:bus_bench once (three repetitions of
# every benchmark in random order, --config=opt); a ratio compares two benchmarks of the same
# round only. The JSON of every round stays in the output directory; tools/bench_ratios.py
# prints the table again from it. Numbers mean something only on a quiet machine: the load
# average at each round's start is printed with the ratios.
# Set BAZEL (e.g. BAZEL="bazel --output_base=/tmp/bench") to use another Bazel server.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
out=${2:-$(mktemp -d -t vbus-bench.XXXXXX)}
mkdir -p "$out"
BAZEL=${BAZEL:-bazel}
$BAZEL build --config=opt //test/bench:ring_bench //test/bench:bus_bench
bin=$($BAZEL info --config=opt bazel-bin)/test/bench
flags=(--benchmark_repetitions=3 --benchmark_enable_random_interleaving=true
       --benchmark_min_time=0.3 --benchmark_format=console)
for ((round = 1; round <= rounds; round++)); do
  echo "bench: round $round of $rounds (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$bin/ring_bench" "${flags[@]}" --benchmark_out="$out/ring_bench.$round.json" \
      --benchmark_out_format=json >/dev/null
  # The bus benchmarks' ratios need each baseline before its contender: registration order,
  # not interleaved. 2047-channel rounds are left out (they take most of the time).
  "$bin/bus_bench" --benchmark_repetitions=3 --benchmark_filter='-/2047' \
      --benchmark_out="$out/bus_bench.$round.json" --benchmark_out_format=json >/dev/null
done
echo "bench: results in $out"
python3 tools/bench_ratios.py "$out"
