#!/bin/sh
echo "vbus: bazel coverage is not available offline (its tools would be downloaded)" >&2
exit 1
