#!/usr/bin/env bash
# bench/footprint.sh: flash and RAM of libtmlagent + proto on a Cortex-M4
# (arm-none-eabi-gcc -Os -mcpu=cortex-m4 -mthumb, newlib nano,
# --gc-sections), against the budget of 10 KiB flash / 3 KiB RAM. Prints
# first what input capture, inference summaries and the OTA receiver cost
# (firmware-agent/arm/features.sh, with its "RESULT footprint_features"
# line), then the table of firmware-agent/arm/size.sh, ending with its
# "RESULT footprint ..." line.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${TML_BUILD_DIR:-$PWD/build-bench}/footprint"
rc=0
sh firmware-agent/arm/features.sh "$out/features" || rc=$?
[ "$rc" -eq 0 ] && { sh firmware-agent/arm/size.sh "$out" || rc=$?; }
if [ "$rc" -eq 77 ]; then
    echo "RESULT footprint skipped=1"
    exit 0
fi
exit "$rc"
