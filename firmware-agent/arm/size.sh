#!/bin/sh
# size.sh OUTDIR [--check]: Cortex-M4 footprint of libtmlagent + proto.
#
# Builds the agent core and the proto codec with arm-none-eabi-gcc -Os
# -mcpu=cortex-m4 -mthumb -ffunction-sections -fdata-sections, links a
# minimal firmware (main.c: every entry point) and a baseline (baseline.c:
# the same startup code without the agent) with newlib nano and
# --gc-sections, and prints flash (.text+.data) and RAM (.data+.bss) of the
# difference, which includes the statically allocated struct tmla_agent at
# the default config. The stub port (stub_port.c: its functions and the
# port table) is the firmware's, which the budget excludes, so both link
# it and it cancels out; what stays counted besides the agent and proto
# objects is main.c's calls (with the last will a transport sets from
# tmla_topic and tmla_offline_payload) and config (trusted key, ids), and
# every newlib function the agent pulls in (memcpy, memset, memcmp). Last
# line: "RESULT footprint flash=B ram=B ...".
# The issue's budget is flash <= 10 KiB and RAM <= 3 KiB for agent + proto;
# the table says how far off each is. With --check (the agent_size_arm
# test) it exits 1 when RAM is over budget, the whole flash figure grows
# past its regression guard (13,900 B: measured 13,872 B after the third
# round of issue 3's cuts, the codec's; 14,436 B before it, 15,380 B before
# the second and 16,644 B before the first; raise it only with a reason),
# the agent core alone grows past 10 KiB of linked code, or agent/proto
# call anything outside <string.h> (malloc, stdio...), and 77 when the
# cross compiler is missing.
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
agent_guard=10240
flash_guard=13900

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "size.sh: $cc not found; skipped"
    exit 77
fi
mkdir -p "$out"
cflags="-std=c99 -Os -mcpu=cortex-m4 -mthumb -ffunction-sections
        -fdata-sections -ffreestanding -Wall -Wextra -Werror -Wshadow
        -I$root/proto/include -I$root/firmware-agent/include"
objs=""
for src in "$root"/proto/src/*.c "$root"/firmware-agent/src/*.c; do
    o="$out/$(basename "$(dirname "$(dirname "$src")")")_$(basename "$src" .c).o"
    # shellcheck disable=SC2086
    "$cc" $cflags -fstack-usage -I"$(dirname "$src")" -c "$src" -o "$o"
    objs="$objs $o"
done
ldflags="-mcpu=cortex-m4 -mthumb -specs=nano.specs -specs=nosys.specs
         -Wl,--gc-sections"
# shellcheck disable=SC2086
"$cc" $cflags -c "$here/main.c" -o "$out/main.o"
# shellcheck disable=SC2086
"$cc" $cflags -c "$here/baseline.c" -o "$out/baseline.o"
# shellcheck disable=SC2086
"$cc" $cflags -c "$here/stub_port.c" -o "$out/stub_port.o"
# shellcheck disable=SC2086
"$cc" $ldflags -Wl,-Map="$out/fw.map" "$out/main.o" "$out/stub_port.o" \
    $objs -o "$out/fw.elf"
# shellcheck disable=SC2086
"$cc" $ldflags "$out/baseline.o" "$out/stub_port.o" -o "$out/baseline.elf"
# The same firmware with link-time optimisation, for comparison.
# shellcheck disable=SC2086
"$cc" $cflags -flto -I"$root/proto/src" $ldflags "$here/main.c" \
    "$here/stub_port.c" "$root"/proto/src/*.c "$root"/firmware-agent/src/*.c \
    -o "$out/fw_lto.elf"

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
set -- $(read_size "$out/fw_lto.elf")
lto_flash=$(( ($1 + $2) - (bl_t + bl_d) ))
flash=$(( (fw_t + fw_d) - (bl_t + bl_d) ))
ram=$(( (fw_d + fw_b) - (bl_d + bl_b) ))
ctx=$("$nm" -S --size-sort "$out/fw.elf" | awk '$4 == "agent" {print $2}')
[ -n "$ctx" ] && ctx=$((0x$ctx))
[ -n "$ctx" ] || ctx=0
# shellcheck disable=SC2086
objsize=$("$size" -t $objs | awk 'END {print $1 + $2}')

# Linked bytes per input object (after gc) from the map file: an input
# section line is "<section> <addr> <size> <object>" (the name may sit on
# the line before).
per_obj=$(awk '
    /^Linker script and memory map/ { live = 1 }
    !live { next }
    /^ \.(text|rodata|data|bss)/ { sec = $1; if (NF >= 4) { add(sec, $3, $4) } ; next }
    /^ +0x[0-9a-f]+ +0x[0-9a-f]+ / && sec != "" { add(sec, $2, $3) }
    { sec = "" }
    function hex(h,   i, v, c) {
        v = 0; h = tolower(h); sub(/^0x/, "", h)
        for (i = 1; i <= length(h); i++) {
            c = index("0123456789abcdef", substr(h, i, 1)) - 1
            v = v * 16 + c
        }
        return v
    }
    function add(s, size, obj,   n) {
        n = obj; sub(/.*\//, "", n); sub(/\(.*/, "", n)
        if (n !~ /\.o$/) return
        if (s ~ /^\.bss/) ram[n] += hex(size); else fl[n] += hex(size)
        if (s ~ /^\.data/) ram[n] += hex(size)
        sec = ""
    }
    END { for (n in fl) printf "%s %d %d\n", n, fl[n], ram[n] }' "$out/fw.map" 2>/dev/null || true)
agent_flash=$(echo "$per_obj" | awk '$1 ~ /^firmware-agent_/ {s += $2} END {print s + 0}')
proto_flash=$(echo "$per_obj" | awk '$1 ~ /^proto_/ {s += $2} END {print s + 0}')

printf '%-40s %8s %8s\n' "Cortex-M4 -Os, newlib nano, gc-sections" "bytes" "budget"
printf '%-40s %8d %8d\n' "flash (.text+.data) agent+proto" "$flash" "$budget_flash"
printf '%-40s %8d %8d\n' "RAM (.data+.bss incl. context)" "$ram" "$budget_ram"
printf '%-40s %8d %8s\n' "  agent core objects (linked)" "$agent_flash" "-"
printf '%-40s %8d %8s\n' "  proto objects (linked)" "$proto_flash" "-"
printf '%-40s %8d %8s\n' "  libc + main.c harness (the rest)" \
    "$((flash - agent_flash - proto_flash))" "-"
printf '%-40s %8d %8s\n' "  of which struct tmla_agent" "$ctx" "-"
printf '%-40s %8d %8d\n' "flash agent+proto with -flto" "$lto_flash" "$budget_flash"
printf '%-40s %8d %8s\n' "objects before gc (.text+.data)" "$objsize" "-"
printf '%-40s %8d %8s\n' "whole minimal firmware flash" "$((fw_t + fw_d))" "-"
printf '%-40s %8d %8s\n' "baseline firmware flash (no agent)" "$((bl_t + bl_d))" "-"
# Freestanding check: the core and the codec may call nothing but
# <string.h> (no malloc, no stdio) and compiler helpers.
# shellcheck disable=SC2086
ext=$("$nm" -u $objs | awk 'NF == 2 {print $2}' | sort -u | tr '\n' ' ')
# shellcheck disable=SC2086
bad=$(for s in $ext; do
    case "$s" in
    tml_* | tmla_* | tml__* | tmla__* | __aeabi_*) ;;
    memcpy | memmove | memset | memcmp | memchr | strlen) ;;
    *) printf '%s ' "$s" ;;
    esac
done)
echo "linked flash per object (after gc):"
echo "$per_obj" | awk '$1 ~ /^(firmware-agent|proto)_/ {print $2, $1}' |
    sort -rn | awk '{sub(/\.o$/, "", $2); printf "  %-38s %8d\n", $2, $1}'
echo "largest stack frames (bytes, -fstack-usage):"
cat "$out"/firmware-agent_*.su "$out"/proto_*.su 2>/dev/null | sort -t "$(printf '\t')" -k2 -n | tail -5 |
    awk -F '\t' '{n = split($1, p, ":"); printf "  %-38s %8d\n", p[n], $2}'
echo "external symbols used: $(echo "$ext" | tr ' ' '\n' | grep -v '^tml' | tr '\n' ' ')"
if [ -n "$bad" ]; then
    echo "size.sh: agent/proto call outside <string.h>: $bad"
fi
if [ "$flash" -gt "$budget_flash" ]; then
    echo "flash: agent+proto over the 10 KiB budget by $((flash - budget_flash)) bytes"
fi
echo "RESULT footprint flash=$flash ram=$ram ctx=$ctx agent_flash=$agent_flash proto_flash=$proto_flash lto_flash=$lto_flash budget_flash=$budget_flash budget_ram=$budget_ram"
if [ "$check" = "--check" ]; then
    if [ "$ram" -gt "$budget_ram" ] || [ "$agent_flash" -gt "$agent_guard" ] ||
       [ "$agent_flash" -eq 0 ] || [ -n "$bad" ]; then
        echo "size.sh: RAM $ram > $budget_ram or agent core $agent_flash > $agent_guard"
        exit 1
    fi
    if [ "$flash" -gt "$flash_guard" ]; then
        echo "size.sh: flash $flash > regression guard $flash_guard"
        exit 1
    fi
fi
