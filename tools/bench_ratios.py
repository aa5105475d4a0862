#!/usr/bin/env python3
"""Prints the performance ratios of vbus's benchmarks, per round and as median [min, max].

Input: the Google Benchmark JSON files tools/bench.sh writes, one per binary and round
(ring_bench.<round>.json, bus_bench.<round>.json) in one directory. Each ratio is taken
between two benchmarks of the same round (the same process, minutes apart at most), never
across rounds: on a shared VM only same-run numbers compare.

Usage: tools/bench_ratios.py <directory>
"""

import glob
import json
import os
import re
import statistics
import sys

# (label, numerator benchmark, denominator benchmark, counter); the counter is items_per_second
# (packets/s) unless named. Benchmark names are matched without the "/real_time" and
# "/min_time:..." suffixes Google Benchmark adds.
RING_RATIOS = [
    ("ring 64 B per packet: vbus / same-format", "BM_VbusRing/64", "BM_SameFormatRing/64"),
    ("ring 1500 B per packet: vbus / same-format", "BM_VbusRing/1500", "BM_SameFormatRing/1500"),
    ("ring 64 KiB per packet: vbus / same-format", "BM_VbusRing/65536",
     "BM_SameFormatRing/65536"),
    ("ring 64 B batch 16: vbus / same-format", "BM_VbusRingBatch16/64",
     "BM_SameFormatRingBatch16/64"),
    ("ring 1500 B batch 16: vbus / same-format", "BM_VbusRingBatch16/1500",
     "BM_SameFormatRingBatch16/1500"),
    ("ring 64 B per packet: vbus / boost", "BM_VbusRing/64", "BM_BoostSpscQueue<64>/64"),
    ("ring 64 B batch 16: vbus / boost", "BM_VbusRingBatch16/64", "BM_BoostSpscQueue<64>/64"),
    ("ring 1500 B batch 16: vbus / boost", "BM_VbusRingBatch16/1500",
     "BM_BoostSpscQueue<1500>/1500"),
    ("ring 64 KiB per packet: vbus / boost", "BM_VbusRing/65536",
     "BM_BoostSpscQueue<65536>/65536"),
    ("ring 64 KiB batch 16: vbus / boost", "BM_VbusRingBatch16/65536",
     "BM_BoostSpscQueue<65536>/65536"),
    ("ring 64 B publish, decide per 16: vbus / same-format per packet", "BM_VbusRingPublish16/64",
     "BM_SameFormatRing/64"),
    ("ring 1500 B publish, decide per 16: vbus / same-format per packet",
     "BM_VbusRingPublish16/1500", "BM_SameFormatRing/1500"),
    ("ring 64 B publish, decide per 16: vbus / vbus per packet", "BM_VbusRingPublish16/64",
     "BM_VbusRing/64"),
    ("one thread 64 B: vbus / same-format", "BM_VbusRingSameThread/64",
     "BM_SameFormatRingSameThread/64"),
    ("one thread 1500 B: vbus / same-format", "BM_VbusRingSameThread/1500",
     "BM_SameFormatRingSameThread/1500"),
]

MOCK = "<e2e::BackendKind::kMock>"
HYPERV = "<e2e::BackendKind::kHyperV>"
BUS_RATIOS = [
    ("echo 64 B: mock stack / bare ring pair", f"BM_MockEcho{MOCK}/64", "BM_BareRingEcho/64",
     "echo_bytes_per_s"),
    ("echo 1500 B: mock stack / bare ring pair", f"BM_MockEcho{MOCK}/1500",
     "BM_BareRingEcho/1500", "echo_bytes_per_s"),
    ("echo 64 B polled: mock stack / bare ring pair", "BM_MockEchoPolled/64",
     "BM_BareRingEcho/64", "echo_bytes_per_s"),
    ("echo 1500 B polled: mock stack / bare ring pair", "BM_MockEchoPolled/1500",
     "BM_BareRingEcho/1500", "echo_bytes_per_s"),
    ("echo 64 B: adaptive batching / none", "BM_MockEchoBatched/64", f"BM_MockEcho{MOCK}/64",
     "echo_bytes_per_s"),
    ("echo 1500 B: adaptive batching / none", "BM_MockEchoBatched/1500",
     f"BM_MockEcho{MOCK}/1500", "echo_bytes_per_s"),
    ("send only 64 B: adaptive batching / none", "BM_MockSendBatched/64", "BM_MockSend/64"),
    ("send only 1500 B: adaptive batching / none", "BM_MockSendBatched/1500", "BM_MockSend/1500"),
    ("echo 64 B: HyperV / Mock backend", f"BM_MockEcho{HYPERV}/64", f"BM_MockEcho{MOCK}/64",
     "echo_bytes_per_s"),
    ("echo 1500 B: HyperV / Mock backend", f"BM_MockEcho{HYPERV}/1500", f"BM_MockEcho{MOCK}/1500",
     "echo_bytes_per_s"),
    ("lifecycle 1: Mock channels/s / gRPC round trips/s", f"BM_ChannelLifecycle{MOCK}/1",
     "BM_GrpcRoundTrip", ("channels_per_s", "round_trips_per_s")),
    ("lifecycle 256: Mock channels/s / gRPC round trips/s", f"BM_ChannelLifecycle{MOCK}/256",
     "BM_GrpcRoundTrip", ("channels_per_s", "round_trips_per_s")),
    ("lifecycle 1: HyperV / Mock backend", f"BM_ChannelLifecycle{HYPERV}/1",
     f"BM_ChannelLifecycle{MOCK}/1", "channels_per_s"),
    ("lifecycle 256: HyperV / Mock backend", f"BM_ChannelLifecycle{HYPERV}/256",
     f"BM_ChannelLifecycle{MOCK}/256", "channels_per_s"),
]


def base_name(name):
    return re.sub(r"/(real_time|min_time:[0-9.]+)", "", name)


def load(path):
    """{benchmark name: [each repetition's counters]} of one JSON file."""
    with open(path) as f:
        data = json.load(f)
    runs = {}
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" or b.get("error_occurred"):
            continue
        runs.setdefault(base_name(b["name"]), []).append(b)
    return runs, data.get("context", {})


def value(runs, name, counter):
    values = [r[counter] for r in runs.get(name, []) if counter in r]
    return statistics.median(values) if values else None


def ratios_of(files, table):
    """{label: [ratio per round]} for the ratios whose benchmarks ran."""
    result = {}
    for path in files:
        runs, _ = load(path)
        for entry in table:
            label, num, den = entry[:3]
            counter = entry[3] if len(entry) > 3 else "items_per_second"
            num_counter, den_counter = counter if isinstance(counter, tuple) else (counter, counter)
            a, b = value(runs, num, num_counter), value(runs, den, den_counter)
            if a is not None and b:
                result.setdefault(label, []).append(a / b)
    return result


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    for binary, table in (("ring_bench", RING_RATIOS), ("bus_bench", BUS_RATIOS)):
        files = sorted(glob.glob(os.path.join(directory, f"{binary}.*.json")))
        if not files:
            continue
        loads = []
        for path in files:
            _, context = load(path)
            loads.extend(context.get("load_avg", [])[:1])
        print(f"{binary}: {len(files)} rounds; 1-minute load average at each round's start: "
              + ", ".join(f"{x:.2f}" for x in loads))
        for label, values in ratios_of(files, table).items():
            rounds = " ".join(f"{v:.2f}" for v in values)
            print(f"  {label:56s} median {statistics.median(values):.2f} "
                  f"[{min(values):.2f}, {max(values):.2f}]   rounds: {rounds}")


if __name__ == "__main__":
    main()
