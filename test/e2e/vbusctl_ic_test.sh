#!/usr/bin/env bash
# vbusctl's integration-component commands against a mock_host process with the guest agent
# attached: human and --json output, exit codes (3 for a guest's refusal), the agent's exit
# code after an accepted reboot.
#   vbusctl_ic_test.sh <mock_host> <guest_agent> <vbusctl>
set -uo pipefail
host_bin=$1 agent_bin=$2 ctl_bin=$3
# A short directory: unix socket paths are limited to 107 bytes.
work=$(mktemp -d /tmp/vbusctl_ic.XXXXXX)
socket="unix:$work/host.sock"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- mock_host:"; cat "$work/host.log"; echo "--- agent:"; cat "$work/agent.log"; exit 1; }

mkfifo "$work/host_ready" "$work/agent_ready"
"$host_bin" --listen="$socket" --offer=heartbeat,shutdown,timesync,kvp,echo --ready_fd=3 \
  3>"$work/host_ready" 2>"$work/host.log" &
pids+=($!)
read -r -t 30 _ <"$work/host_ready" || fail "mock_host did not get ready"
"$agent_bin" --host="$socket" --name=ctl-guest --ready_fd=3 3>"$work/agent_ready" \
  2>"$work/agent.log" &
agent_pid=$!
pids+=($agent_pid)
read -r -t 30 _ <"$work/agent_ready" || fail "the agent did not get ready"

ctl() { "$ctl_bin" --host="$socket" --guest=ctl-guest "$@"; }
expect() {  # expect <exit code> <output pattern> <command...>
  local want=$1 pattern=$2; shift 2
  out=$(ctl "$@" 2>&1); code=$?
  [ "$code" -eq "$want" ] || fail "vbusctl $* exited $code (want $want): $out"
  echo "$out" | grep -q -E -- "$pattern" || fail "vbusctl $* printed: $out (want /$pattern/)"
}

expect 0 'S_OK' kvp set --key=color --value=blue
expect 0 '^color = blue$' kvp get --key=color
expect 0 '"value":"blue"' --json kvp get --key=color
expect 0 'IntegrationServicesVersion +vbus 1.0' kvp enum --pool=auto
expect 0 'S_OK' kvp delete --key=color
expect 3 'answered E_FAIL' kvp get --key=color
expect 0 'skew 5s; the guest answered S_OK' time --skew=5s
expect 0 '"skew_ms":"5000"' --json time --sample
expect 0 'heartbeat +ready +3.0/3.0' ic
expect 0 '"device":"kvp"' --json ic
expect 0 'heartbeat every 250 ms' ic-config --heartbeat_ms=250
expect 3 'refused: hibernate \(E_FAIL\)' shutdown --hibernate
expect 0 'accepted: reboot \(S_OK\)' shutdown --reboot --message=maintenance
# The agent leaves with the reboot code.
for _ in $(seq 1 300); do  # a poll for its exit, 30 s at most
  kill -0 "$agent_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$agent_pid" 2>/dev/null && fail "the agent still runs after accepting a reboot"
wait "$agent_pid"; code=$?
[ "$code" -eq 64 ] || fail "the agent exited $code after an accepted reboot (want 64)"
expect 1 'NOT_FOUND' kvp get --key=x
echo "vbusctl IC commands: all checks passed"
