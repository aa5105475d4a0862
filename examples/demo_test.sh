#!/usr/bin/env bash
# Runs the demo (piped: no colour) and checks that it exits 0 and that its trace shows every
# step of the story, in order.
set -uo pipefail
demo=$1
out=${TEST_TMPDIR:-/tmp}/demo_trace.txt
"$demo" --echo_packets=20000 --heartbeat_ms=200 >"$out" 2>&1
code=$?
if [ "$code" -ne 0 ]; then
  echo "demo exited with $code; its output:"; cat "$out"; exit 1
fi
if grep -q $'\033\\[' "$out"; then
  echo "the demo wrote colour codes into a pipe"; cat "$out"; exit 1
fi
# Each pattern must match a line after the line the previous one matched.
patterns=(
  'guest → host .*InitiateContact'
  'host  → guest .*VersionResponse'
  'guest → host .*RequestOffers'
  'host  → guest .*Offer.* heartbeat'
  'guest → host .*GpadlCreate'
  'guest → host .*OpenChannel'
  'host  → guest .*OpenResult'
  'host  → guest .*relid [0-9]+ [a-z]+ +negotiate: versions'
  'guest → host .*negotiated framework'
  '== 2\. heartbeats'
  'host  → guest .*heartbeat +beat [0-9]+'
  'guest → host .*heartbeat +beat [0-9]+'
  '== 3\. KVP'
  'host  → guest .*kvp +set external demo/greeting'
  'guest → host .*kvp +S_OK'
  'guest → host .*kvp +agent/role = web-frontend'
  'guest → host .*kvp +IntegrationServicesVersion = vbus'
  'demo/greeting = "hello from the host"'
  '== 4\. time sync'
  'host  → guest .*timesync +sync: host clock .*skew 5s'
  'behind the host'
  '== 5\. echo'
  'echo +20000 packets of 64 bytes .*packets/s'
  '== 6\. the host rescinds'
  'host  → guest .*RescindOffer'
  'guest → host .*RelidReleased'
  'host  → guest .*Offer.* echo'
  'hot-added echo bound on relid'
  'echo +1000 packets'
  '== 7\. the host asks the guest to power off'
  'host  → guest .*shutdown +power off: "demo finished"'
  'guest → host .*shutdown +accepted'
  'guest → host .*Unload'
  'agent accepted power off: exit code 0'
  'demo complete in'
)
line=0
for p in "${patterns[@]}"; do
  found=$(tail -n "+$((line + 1))" "$out" | grep -n -E -m1 -- "$p" | cut -d: -f1)
  if [ -z "$found" ]; then
    echo "missing after line $line: $p"; echo "--- trace:"; cat -n "$out"; exit 1
  fi
  line=$((line + found))
done
echo "demo trace: ${#patterns[@]} steps in order, exit 0"
