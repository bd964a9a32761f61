#!/bin/sh
# features.sh OUTDIR: what each part of the agent costs in Cortex-M4 flash,
# for the 10 KiB budget discussion (firmware-agent/README.md). Runs
# size.sh on copies of firmware-agent/ and proto/ where sample.c, tele.c
# and/or ota.c are replaced by the do-nothing entry points of stubs/
# (capture, telemetry and OTA are not build options; this only measures
# them: what a part takes with it includes the codec tables and
# functions only it uses), and prints flash with and without -flto for
# each variant. Last line: "RESULT footprint_features full=B
# no_capture=B no_tele=B no_ota=B ota_only=B core_only=B".
# With --check (the agent_size_features test) it exits 1 unless every
# variant links and each stub takes bytes off (stubs gone stale with
# sample.c, tele.c or ota.c would show here). Exits 77 when the cross compiler is
# missing.
set -eu
out=${1:?usage: features.sh OUTDIR [--check]}
check=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
command -v "${ARM_CC:-arm-none-eabi-gcc}" >/dev/null 2>&1 || {
    echo "features.sh: cross compiler not found; skipped"
    exit 77
}
mkdir -p "$out"

# variant NAME [sample|tele|ota ...]: prints "NAME flash lto".
variant() {
    name=$1
    shift
    tree="$out/$name/tree"
    rm -rf "$tree"
    mkdir -p "$tree"
    cp -r "$root/firmware-agent" "$root/proto" "$tree/"
    for part in "$@"; do
        case "$part" in
        sample) cp "$here/stubs/no_capture.c" "$tree/firmware-agent/src/sample.c" ;;
        tele) cp "$here/stubs/no_tele.c" "$tree/firmware-agent/src/tele.c" ;;
        ota) cp "$here/stubs/no_ota.c" "$tree/firmware-agent/src/ota.c" ;;
        esac
    done
    sh "$tree/firmware-agent/arm/size.sh" "$out/$name/size" |
        awk -v n="$name" '/^RESULT footprint / {
            for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            print n, v["flash"], v["lto_flash"] }'
}

res=$( {
    variant full
    variant no_capture sample
    variant no_tele tele
    variant no_ota ota
    variant ota_only sample tele
    variant core_only sample tele ota
})
printf '%-34s %8s %8s %8s\n' "Cortex-M4 -Os flash, agent+proto" "bytes" "-flto" "vs full"
echo "$res" | awk '
    NR == 1 { full = $2 }
    {
        if ($1 == "full") label = "everything (default)"
        else if ($1 == "no_capture") label = "without input capture"
        else if ($1 == "no_tele") label = "without inference summaries"
        else if ($1 == "no_ota") label = "without the OTA receiver"
        else if ($1 == "ota_only") label = "OTA + core + codec only"
        else label = "core + codec only"
        printf "%-34s %8d %8d %8s\n", label, $2, $3, NR == 1 ? "-" : $2 - full
    }'
echo "budget: 10240"
echo "$res" | awk '{ v[$1] = $2 } END {
    printf "RESULT footprint_features full=%d no_capture=%d no_tele=%d no_ota=%d ota_only=%d core_only=%d\n",
        v["full"], v["no_capture"], v["no_tele"], v["no_ota"], v["ota_only"],
        v["core_only"] }'
if [ "$check" = "--check" ]; then
    echo "$res" | awk '{ v[$1] = $2 } END {
        ok = v["core_only"] > 0 && v["no_capture"] < v["full"] &&
             v["no_tele"] < v["full"] && v["no_ota"] < v["full"] &&
             v["ota_only"] < v["no_capture"] && v["ota_only"] < v["no_tele"] &&
             v["core_only"] < v["ota_only"] && v["core_only"] < v["no_ota"]
        exit ok ? 0 : 1 }' || {
        echo "features.sh: a variant did not link or a stub took nothing off"
        exit 1
    }
fi
