#!/bin/sh
# Runs the Python HostControl test with Debian's interpreter, which has python3-grpcio (the
# python3 first on PATH may be another interpreter without it).
set -eu
exec /usr/bin/python3 test/mock/host_control_test.py "$@"
