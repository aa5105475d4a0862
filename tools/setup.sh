#!/usr/bin/env bash
# tools/setup.sh — installs every Debian package that vbus's build, tests, benchmarks,
# fuzzers and tools need. Idempotent: when everything is present it prints so and exits
# at once. Needs root (or passwordless sudo) only when something is missing.
set -euo pipefail

# One line per package, with the reason it is here. A package missing from this list must
# never surface later as a confusing compiler or linker error.
PACKAGES=(
  bazel-bootstrap        # Bazel 4.2.3 (pulls in a JDK); see third_party/ for the offline shims
  g++                    # the default C++20 toolchain
  libabsl-dev            # Abseil: status, strings, synchronization, time, flags, random
  libprotobuf-dev        # protobuf runtime headers and library
  protobuf-compiler      # protoc
  libgrpc++-dev          # gRPC C++ runtime and grpc++_reflection
  protobuf-compiler-grpc # grpc_cpp_plugin
  libgtest-dev           # GoogleTest
  libgmock-dev           # GoogleMock
  libbenchmark-dev       # Google Benchmark (benchmarks, --config=opt)
  clang                  # --config=fuzz (libFuzzer) and sanitizer builds
  libclang-rt-14-dev     # libFuzzer, ASan, UBSan, TSan runtimes for clang 14
  libboost-dev           # boost::lockfree::spsc_queue, a ring-buffer benchmark peer
  libdpdk-dev            # DPDK rte_ring, a ring-buffer benchmark peer
  spin                   # Promela model checking of event dispatch
  python3                # Debian's /usr/bin/python3 for the cross-language gRPC tests
  python3-grpcio         # Python gRPC client (+ python3-protobuf); stubs come from protoc and
                         # protobuf-compiler-grpc's grpc_python_plugin
  clang-format           # formatting check
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup.sh: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "setup.sh: missing packages (${missing[*]}) and not root; rerun as root" >&2
    exit 1
  fi
fi

echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup.sh: installed ${missing[*]}"
