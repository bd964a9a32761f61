#!/bin/sh
# size.sh OUTDIR [--check]: Cortex-M4 footprint of libtmlagent + proto.
#
# Builds the agent core and the proto codec with arm-none-eabi-gcc -Os
# -mcpu=cortex-m4 -mthumb -ffunction-sections -fdata-sections, links a
# minimal firmware (main.c: every entry point, stub port) and a baseline
# (baseline.c: the same startup code without the agent) with newlib nano and
# --gc-sections, and prints flash (.text+.data) and RAM (.data+.bss) of the
# difference, which includes the statically allocated struct tmla_agent at
# the default config. Last line: "RESULT footprint flash=B ram=B ...".
# With --check, exits 1 when over budget (flash 10 KiB, RAM 3 KiB) and 77
# when the cross compiler is missing.
set -eu
out=${1:?usage: size.sh OUTDIR [--check]}
check=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cc=${ARM_CC:-arm-none-eabi-gcc}
size=${ARM_SIZE:-arm-none-eabi-size}
nm=${ARM_NM:-arm-none-eabi-nm}
budget_flash=10240
budget_ram=3072

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "size.sh: $cc not found; skipped"
    exit 77
fi
mkdir -p "$out"
cflags="-std=c99 -Os -mcpu=cortex-m4 -mthumb -ffunction-sections
        -fdata-sections -ffreestanding -Wall -Wextra -Werror
        -I$root/proto/include -I$root/firmware-agent/include"
objs=""
for src in "$root"/proto/src/*.c "$root"/firmware-agent/src/*.c; do
    o="$out/$(basename "$(dirname "$(dirname "$src")")")_$(basename "$src" .c).o"
    # shellcheck disable=SC2086
    "$cc" $cflags -I"$(dirname "$src")" -c "$src" -o "$o"
    objs="$objs $o"
done
ldflags="-mcpu=cortex-m4 -mthumb -specs=nano.specs -specs=nosys.specs
         -Wl,--gc-sections"
# shellcheck disable=SC2086
"$cc" $cflags -c "$here/main.c" -o "$out/main.o"
# shellcheck disable=SC2086
"$cc" $cflags -c "$here/baseline.c" -o "$out/baseline.o"
# shellcheck disable=SC2086
"$cc" $ldflags -Wl,-Map="$out/fw.map" "$out/main.o" $objs -o "$out/fw.elf"
# shellcheck disable=SC2086
"$cc" $ldflags "$out/baseline.o" -o "$out/baseline.elf"

read_size() { # prints "text data bss"
    "$size" -A "$1" | awk '
        $1 ~ /^\.text|^\.rodata|^\.ARM|^\.init|^\.fini|^\.init_array|^\.fini_array|^\.preinit_array/ {t += $2}
        $1 == ".data" {d += $2}
        $1 == ".bss" || $1 == ".heap" {b += $2}
        END {printf "%d %d %d\n", t, d, b}'
}
set -- $(read_size "$out/fw.elf")
fw_t=$1 fw_d=$2 fw_b=$3
set -- $(read_size "$out/baseline.elf")
bl_t=$1 bl_d=$2 bl_b=$3
flash=$(( (fw_t + fw_d) - (bl_t + bl_d) ))
ram=$(( (fw_d + fw_b) - (bl_d + bl_b) ))
ctx=$("$nm" -S --size-sort "$out/fw.elf" | awk '$4 == "agent" {print $2}')
[ -n "$ctx" ] && ctx=$((0x$ctx))
[ -n "$ctx" ] || ctx=0
# shellcheck disable=SC2086
objsize=$("$size" -t $objs | awk 'END {print $1 + $2}')

printf '%-40s %8s %8s\n' "Cortex-M4 -Os, newlib nano, gc-sections" "bytes" "budget"
printf '%-40s %8d %8d\n' "flash (.text+.data) agent+proto" "$flash" "$budget_flash"
printf '%-40s %8d %8d\n' "RAM (.data+.bss incl. context)" "$ram" "$budget_ram"
printf '%-40s %8d %8s\n' "  of which struct tmla_agent" "$ctx" "-"
printf '%-40s %8d %8s\n' "objects before gc (.text+.data)" "$objsize" "-"
printf '%-40s %8d %8s\n' "whole minimal firmware flash" "$((fw_t + fw_d))" "-"
printf '%-40s %8d %8s\n' "baseline firmware flash (no agent)" "$((bl_t + bl_d))" "-"
echo "RESULT footprint flash=$flash ram=$ram ctx=$ctx budget_flash=$budget_flash budget_ram=$budget_ram"
if [ "$check" = "--check" ]; then
    [ "$flash" -le "$budget_flash" ] && [ "$ram" -le "$budget_ram" ] || exit 1
fi
