#!/usr/bin/env bash
# tools/run_mock_host.sh — drives a mock host from outside, as an integration test would:
# builds it, starts it on a private Unix socket, attaches a raw guest that echoes packets
# through shared memory (rings + futex doorbells), shows vbusctl listing the host's guests and
# channels and hot-adding an offer, then stops everything cleanly. Exits non-zero if any step
# fails.
#
#   tools/setup.sh && tools/run_mock_host.sh
#
# BAZEL may name another bazel command line (e.g. with --output_base).
set -euo pipefail
cd "$(dirname "$0")/.."

BAZEL=${BAZEL:-bazel}
$BAZEL build //mock:mock_host //mock:vbusctl //mock:raw_guest
bin=$($BAZEL info bazel-bin 2>/dev/null)

work=$(mktemp -d /tmp/vbus-demo.XXXXXX)
socket="unix:$work/mock_host.sock"
host_pid=""
guest_pid=""
cleanup() {
  if [ -n "$guest_pid" ]; then kill -TERM "$guest_pid" 2>/dev/null || true; fi
  if [ -n "$host_pid" ]; then kill -TERM "$host_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits (up to 30 s) for a line on the FIFO a child writes once it is ready.
await_ready() {
  local fifo=$1 what=$2 line
  if ! read -r -t 30 line <"$fifo"; then
    echo "run_mock_host: $what did not get ready" >&2
    exit 1
  fi
}

vbusctl() {
  echo "\$ vbusctl $*"
  "$bin/mock/vbusctl" --host="$socket" "$@"
  echo
}

mkfifo "$work/host_ready" "$work/guest_ready"
"$bin/mock/mock_host" --listen="$socket" --offer=echo --ready_fd=3 3>"$work/host_ready" &
host_pid=$!
await_ready "$work/host_ready" "mock_host"

"$bin/mock/raw_guest" --host="$socket" --name=demo-guest --packets=1000 --stay \
  --ready_fd=3 3>"$work/guest_ready" &
guest_pid=$!
await_ready "$work/guest_ready" "raw_guest"
echo

vbusctl guests
vbusctl channels
vbusctl offer --guest=demo-guest --kind=sink --subchannels=1
vbusctl channels

kill -TERM "$guest_pid"
wait "$guest_pid"
guest_pid=""
kill -TERM "$host_pid"
wait "$host_pid"
host_pid=""
echo "run_mock_host: done"
