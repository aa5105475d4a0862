#!/usr/bin/env bash
# Runs order_labels.py over the source tree this test was built from.
set -euo pipefail
script=$(readlink -f "${TEST_SRCDIR}/${TEST_WORKSPACE}/test/lint/order_labels.py")
root=$(dirname "$(dirname "$(dirname "${script}")")")
exec /usr/bin/python3 "${script}" "${root}"
