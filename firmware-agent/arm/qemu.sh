#!/bin/sh
# qemu.sh OUTDIR: builds qemu_test.c with the agent core and proto for a
# Cortex-M4 (arm-none-eabi-gcc -Os -mcpu=cortex-m4 -mthumb, as size.sh) and
# runs it on QEMU's mps2-an386 with semihosting (the agent_qemu_m4 test).
# Exit status is the program's (0 = every check passed); 77 (skipped) when
# arm-none-eabi-gcc or qemu-system-arm is missing.
set -eu
out=${1:?usage: qemu.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cc=${ARM_CC:-arm-none-eabi-gcc}
qemu=${QEMU_ARM:-qemu-system-arm}
for t in "$cc" "$qemu"; do
    if ! command -v "$t" >/dev/null 2>&1; then
        echo "qemu.sh: $t not found; skipped"
        exit 77
    fi
done
mkdir -p "$out"
"$cc" -std=c99 -Os -mcpu=cortex-m4 -mthumb -ffunction-sections \
    -fdata-sections -ffreestanding -Wall -Wextra -Werror -Wshadow \
    -I"$root/proto/include" -I"$root/firmware-agent/include" \
    -I"$root/proto/src" -I"$root/firmware-agent/src" \
    -specs=nano.specs -specs=nosys.specs -nostartfiles -T"$here/qemu.ld" \
    -Wl,--gc-sections "$here/qemu_test.c" "$root"/proto/src/*.c \
    "$root"/firmware-agent/src/*.c -o "$out/qemu_test.elf"
# Bounded: the program ends in well under a second of emulated time.
timeout 60 "$qemu" -machine mps2-an386 -cpu cortex-m4 -nographic \
    -monitor none -serial none -semihosting-config enable=on,target=native \
    -kernel "$out/qemu_test.elf"
