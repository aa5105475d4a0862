#!/usr/bin/env bash
# Model-checks test/model/dispatch.pml with spin: the correct protocol in each scenario must
# verify with no errors (assertions and invalid end states), and each planted bug must be
# found, so the model is known to be able to fail.
set -euo pipefail

model="$(cd "$(dirname "$0")" && pwd)/dispatch.pml"
if [ -n "${TEST_SRCDIR:-}" ] && [ -f "${TEST_SRCDIR}/vbus/test/model/dispatch.pml" ]; then
  model="${TEST_SRCDIR}/vbus/test/model/dispatch.pml"
fi
work="${TEST_TMPDIR:-$(mktemp -d)}"
cd "$work"
cp "$model" dispatch.pml

CC="${CC:-cc}"
command -v spin >/dev/null || { echo "spin is not installed (tools/setup.sh)"; exit 1; }

# verify NAME EXPECT(pass|fail) [spin -D flags...]
verify() {
  local name="$1" expect="$2"
  shift 2
  rm -f pan pan.* ./*.trail
  spin "$@" -a dispatch.pml >/dev/null
  "$CC" -O2 -DSAFETY -o pan pan.c
  local out errors states
  out="$(./pan -m10000 2>&1 || true)"
  errors="$(printf '%s\n' "$out" | sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' | head -1)"
  states="$(printf '%s\n' "$out" | sed -n 's/^ *\([0-9e+.]*\) states, stored.*/\1/p' | head -1)"
  if [ -z "$errors" ]; then
    echo "FAIL $name: no verdict from pan"
    printf '%s\n' "$out"
    return 1
  fi
  if [ "$expect" = pass ] && [ "$errors" -ne 0 ]; then
    echo "FAIL $name: $errors error(s), expected none"
    printf '%s\n' "$out"
    spin -t -p dispatch.pml 2>/dev/null | tail -40 || true
    return 1
  fi
  if [ "$expect" = fail ] && [ "$errors" -eq 0 ]; then
    echo "FAIL $name: the planted bug was not found"
    printf '%s\n' "$out"
    return 1
  fi
  echo "ok   $name: $errors error(s) as expected, $states states"
}

status=0
verify delivery pass || status=1
verify delivery_3_dispatchers pass -DNDISP=3 -DNSIG=3 || status=1
verify retire pass -DRETIRE || status=1
verify retire_3_dispatchers pass -DRETIRE -DNDISP=3 -DNSIG=2 || status=1
verify retire_3_signals pass -DRETIRE -DNSIG=3 || status=1
verify bug_open_before_publish fail -DBUG_OPEN_FIRST || status=1
verify bug_no_quiescent_wait fail -DRETIRE -DBUG_NO_WAIT || status=1
exit $status
