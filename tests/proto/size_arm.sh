#!/bin/sh
# size_arm.sh SRC_DIR [TEXT_BUDGET]: proto_size_arm. Compiles proto/ for a
# Cortex-M4 with arm-none-eabi-gcc -Os -ffreestanding (every warning an
# error), prints .text/.data/.bss, and fails if .text exceeds the budget or
# the codec has any .data/.bss (it must keep no state) or needs a libc symbol
# outside <string.h>. Exits 77 (ctest: skipped) without the compiler.
set -eu
src=$1
budget=${2:-12288}
cc=arm-none-eabi-gcc
command -v "$cc" >/dev/null 2>&1 || { echo "no $cc: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
for f in "$src"/proto/src/*.c; do
    "$cc" -std=c99 -Os -mcpu=cortex-m4 -mthumb -ffreestanding \
        -ffunction-sections -fdata-sections \
        -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
        -Wmissing-prototypes -Wcast-qual -pedantic \
        -I"$src/proto/include" -c "$f" -o "$tmp/$(basename "$f" .c).o"
done
arm-none-eabi-ar rcs "$tmp/libtmlproto.a" "$tmp"/*.o
arm-none-eabi-size -t "$tmp/libtmlproto.a"
set -- $(arm-none-eabi-size -t "$tmp/libtmlproto.a" | tail -1)
text=$1 data=$2 bss=$3
echo "proto cortex-m4 -Os: text=$text data=$data bss=$bss (budget text<=$budget)"
extern=$(arm-none-eabi-nm -u "$tmp"/*.o | awk 'NF == 2 { print $2 }' |
    grep -v '^tml_' | grep -v '^tml__' | sort -u | tr '\n' ' ')
echo "libc symbols used: $extern"
for s in $extern; do
    case $s in
    memcpy | memset | memcmp | memchr | strlen) ;;
    *) echo "FAIL: $s is outside <string.h>"; exit 1 ;;
    esac
done
[ "$data" -eq 0 ] && [ "$bss" -eq 0 ] || { echo "FAIL: mutable state"; exit 1; }
[ "$text" -le "$budget" ] || { echo "FAIL: text over budget"; exit 1; }
echo "ok"
