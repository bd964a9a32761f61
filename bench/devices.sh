#!/usr/bin/env bash
# bench/devices.sh: how many simulated devices one tml-devsim process carries.
# For each fleet size (TML_BENCH_DEVICES, default "200 1000 2000") it starts a
# TLS test broker and an acknowledging gateway stand-in (bench/devices), runs
# tml-devsim for TML_BENCH_DEVICE_SECONDS (20) at 2 inferences/s/device with
# 1 s summaries, and reports time to connect everyone, RSS per device, CPU
# per message and messages/s. Ratios compare each size with the smallest one
# of the same run (RSS/device and CPU/message should stay flat as N grows).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TML_BUILD_DIR:-$PWD/build-bench}
devsim=$build/tools/devsim/tml-devsim
acker=$build/bench/devices/devices_acker
sizes=${TML_BENCH_DEVICES:-200 1000 2000}
secs=${TML_BENCH_DEVICE_SECONDS:-20}
for b in "$devsim" "$acker"; do
    [ -x "$b" ] || { echo "bench/devices.sh: $b not built" >&2; exit 1; }
done
work=$(mktemp -d /tmp/tml-bench-devices-XXXXXX)
acker_pid=""
cleanup() {
    [ -n "$acker_pid" ] && kill "$acker_pid" 2>/dev/null || true
    tests/lib/testbroker stop "$work/broker" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
tests/lib/testbroker start "$work/broker" >/dev/null
# shellcheck disable=SC1091
. "$work/broker/env"
"$acker" "$TB_PORT" "$TB_CA" "$TB_TMLD_CERT" "$TB_TMLD_KEY" $((secs * 10 + 600)) \
    >"$work/acker.out" 2>&1 &
acker_pid=$!
sleep 0.5

printf '%8s %10s %9s %12s %10s %11s %10s %8s %8s\n' devices connect_s rss_MB \
    rss/dev_KB cpu_s cpu/msg_us msgs/s acked ratio
base_rss=""
base_cpu=""
last=""
for n in $sizes; do
    json=$work/summary-$n.json
    "$devsim" --port "$TB_PORT" --cafile "$TB_CA" --ca-cert "$TB_CA" \
        --ca-key "$TB_CA_KEY" --state-dir "$work/state" --prefix "b$n-" \
        --devices "$n" --rate 2 --summary-period 1 --duration "$secs" \
        --drain 30 --status 0 --input-bytes 512 --json-summary "$json" \
        2>"$work/devsim-$n.log" || { echo "devsim failed for $n devices" >&2; cat "$work/devsim-$n.log" >&2; exit 1; }
    line=$(/usr/bin/python3 - "$json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t = d["totals"]
n = d["devices"]
pubs = max(t["publishes"], 1)
acked = "yes" if t["tele_acked"] == t["tele_sent"] else "NO"
print(n, "%.2f" % d["all_connected_s"], "%.1f" % (d["max_rss_kb"] / 1024),
      "%.1f" % (d["max_rss_kb"] / n), "%.2f" % d["cpu_s"],
      "%.1f" % (d["cpu_s"] * 1e6 / pubs), "%.0f" % (pubs / d["elapsed_s"]),
      acked)
PY
)
    read -r dn conn rss rssdev cpu cpumsg rate acked <<<"$line"
    [ -z "$base_rss" ] && base_rss=$rssdev && base_cpu=$cpumsg
    ratio=$(/usr/bin/python3 -c "print('%.2f' % ($rssdev / $base_rss))")
    printf '%8s %10s %9s %12s %10s %11s %10s %8s %8s\n' "$dn" "$conn" "$rss" \
        "$rssdev" "$cpu" "$cpumsg" "$rate" "$acked" "$ratio"
    last="n=$dn connect_s=$conn rss_mb=$rss rss_per_device_kb=$rssdev cpu_s=$cpu cpu_per_msg_us=$cpumsg msgs_per_s=$rate all_acked=$acked rss_per_device_ratio=$ratio"
done
echo "(ratio: RSS per device against the smallest size; CPU/message baseline ${base_cpu} us)"
echo "RESULT devices $last"
