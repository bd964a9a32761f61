#!/usr/bin/env bash
# bench/fleet.sh (scripts/bench fleet): issue 4's fleet-size figures.
#   1. tmld's peak RSS (VmHWM) with N connected devices (TML_BENCH_FLEET_DEVICES,
#      default 5000), all of them real agents in tml-devsim over mutual TLS.
#   2. Broker restart: mosquitto is killed (-9, no wills), tmld marks every
#      device offline after [ingest] offline_after of silence, the broker is
#      started again on the same port, and we time from that start until
#      tmld has all N devices online again (it needs each device's reconnect
#      hello, and its own reconnect + resubscribe first). The baseline is
#      the raw reconnect time of the same N TLS clients in the same run:
#      from the same start until tml-devsim reports all N MQTT sessions
#      connected (CONNACK received), sampled every 0.1 s.
# Issue 4's targets: RSS <= 64 MiB at 5000 devices, reconnect <= 1.2x raw.
#
#   TML_BENCH_FLEET_DEVICES (5000), TML_BENCH_FLEET_CONNECT_RATE (devsim
#   --connect-rate, 500/s: both sides share it), TML_BENCH_FLEET_SUMMARY
#   (devsim summary period, 10 s), TML_BENCH_FLEET_OFFLINE (tmld
#   offline_after, 25 s), TML_BENCH_FLEET_TMLD_RECONNECT_MAX (tmld [mqtt]
#   reconnect_max, default tmld's own 30 s), TML_BENCH_KEEP=1 keeps the work directory.
# Bounded: every wait has a deadline; a 5000-device run takes ~1.5 min.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TML_BUILD_DIR:-$PWD/build-bench}
n=${TML_BENCH_FLEET_DEVICES:-5000}
crate=${TML_BENCH_FLEET_CONNECT_RATE:-500}
summary=${TML_BENCH_FLEET_SUMMARY:-10}
offline=${TML_BENCH_FLEET_OFFLINE:-25}
tmld=$build/daemon/tmld
devsim=$build/tools/devsim/tml-devsim
py=/usr/bin/python3
for b in "$tmld" "$devsim"; do
    [ -x "$b" ] || { echo "bench/fleet.sh: $b not built" >&2; exit 1; }
done

# Descriptors: tml-devsim needs 3 per device (it raises its own soft limit
# to the hard one), mosquitto 1 per client and inherits ours.
hard=$(ulimit -Hn)
ulimit -n "$hard"
need=$((3 * n + 100))
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
    echo "bench/fleet.sh: fd hard limit $hard < $need needed for $n devices" >&2
    exit 1
fi

work=$(mktemp -d /tmp/tml-bench-fleet-XXXXXX)
pids=()
broker_pid=""
cleanup() {
    for p in "${pids[@]}" $broker_pid; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${pids[@]}" $broker_pid; do kill -9 "$p" 2>/dev/null || true; done
    [ -n "${TML_BENCH_KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

# mosquitto: no connection cap (the default, stated here on purpose).
echo "max_connections -1" >"$work/broker-extra.conf"
tests/lib/testbroker start "$work/broker" "$work/broker-extra.conf" >/dev/null
# shellcheck disable=SC1091
. "$work/broker/env"
broker_pid=$TB_PID

mkdir -p "$work/state"
cat >"$work/tmld.conf" <<EOF
[mqtt]
host = 127.0.0.1
port = $TB_PORT
cafile = $TB_CA
certfile = $TB_TMLD_CERT
keyfile = $TB_TMLD_KEY
client_id = tmld
$([ -n "${TML_BENCH_FLEET_TMLD_RECONNECT_MAX:-}" ] && echo "reconnect_max = $TML_BENCH_FLEET_TMLD_RECONNECT_MAX")

[db]
path = $work/state/tmld.db

[ingest]
offline_after = ${offline}s

[control]
socket = $work/tmld.sock

[log]
level = warning
EOF
"$tmld" --config "$work/tmld.conf" --foreground >"$work/tmld.log" 2>&1 &
tmld_pid=$!
pids+=("$tmld_pid")

# wait_for WHAT TARGET TIMEOUT: polls every 0.1 s until WHAT reaches TARGET
# (tmld_online: status devices.online == TARGET; tmld_connected: the MQTT link;
# devsim_connected: the newest devsim status line says connected=TARGET/N).
# Prints the epoch time it happened, or "timeout LAST".
wait_for() {
    $py - "$work/tmld.sock" "$work/devsim.log" "$1" "$2" "$3" <<'PY'
import json, socket, sys, time
sock, dlog, what, target, timeout = sys.argv[1:6]
target = int(target)
end = time.time() + float(timeout)
last = None
def status():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(sock)
    s.sendall(b'{"id":1,"cmd":"status"}\n')
    buf = b""
    while not buf.endswith(b"\n"):
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    return json.loads(buf)["result"]
def devsim_connected():
    v = None
    with open(dlog, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        for line in f.read().decode(errors="replace").splitlines():
            i = line.find(" connected=")
            if i >= 0:
                v = int(line[i + 11:].split("/")[0])
    return v
while time.time() < end:
    try:
        if what == "tmld_online":
            last = status()["devices"]["online"]
        elif what == "tmld_connected":
            last = 1 if status()["mqtt"]["connected"] else 0
        else:
            last = devsim_connected()
    except (OSError, ValueError, KeyError):
        pass
    if last == target:
        print("%.3f" % time.time())
        sys.exit(0)
    time.sleep(0.1)
print("timeout", last)
PY
}
rss_kib() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
t=$(wait_for tmld_connected 1 20)
[ "${t%% *}" != timeout ] || { echo "bench/fleet.sh: tmld never connected" >&2; cat "$work/tmld.log" >&2; exit 1; }

# Devices: real agents, an inference every 5 s, a summary every $summary s,
# at most one captured sample per device: this measures connections, not
# ingest (bench/ingest.sh does that).
t_start=$(date +%s.%N)
"$devsim" --port "$TB_PORT" --cafile "$TB_CA" --ca-cert "$TB_CA" \
    --ca-key "$TB_CA_KEY" --state-dir "$work/devs" --devices "$n" \
    --rate 0.2 --summary-period "$summary" --duration 900 --drain 1 \
    --sample-budget 1 --budget-period 3600 --input-bytes 64 \
    --connect-rate "$crate" --status 0.1 --json-summary "$work/devsim.json" \
    >/dev/null 2>"$work/devsim.log" &
devsim_pid=$!
pids+=("$devsim_pid")
# Minting N certificates the first time takes ~1.8 ms each, then connecting
# at the connect rate.
t=$(wait_for tmld_online "$n" $((60 + n / 20)))
if [ "${t%% *}" = timeout ]; then
    echo "bench/fleet.sh: tmld has ${t#timeout } of $n devices online; devsim says:" >&2
    tail -3 "$work/devsim.log" >&2
    tail -5 "$work/tmld.log" >&2
    exit 1
fi
up_s=$($py -c "print(f'{$t - $t_start:.1f}')")
sleep 5
rss_steady=$(rss_kib "$tmld_pid" VmRSS)
devsim_rss=$(rss_kib "$devsim_pid" VmRSS)
broker_rss=$(rss_kib "$broker_pid" VmRSS)
echo "fleet: $n devices online in tmld ${up_s} s after devsim start (incl. certificate minting)"

# Broker restart. kill -9: no wills; the silence timeout takes them offline.
kill -9 "$broker_pid"
wait "$broker_pid" 2>/dev/null || true
broker_pid=""
t=$(wait_for tmld_online 0 $((offline + 15)))
[ "${t%% *}" != timeout ] || { echo "bench/fleet.sh: tmld still has ${t#timeout } online after broker kill" >&2; exit 1; }
t=$(wait_for devsim_connected 0 15)
[ "${t%% *}" != timeout ] || { echo "bench/fleet.sh: devsim still has ${t#timeout } connected" >&2; exit 1; }
t0=$(date +%s.%N)
mosquitto -c "$work/broker/mosquitto.conf" >>"$work/broker/mosquitto.out" 2>&1 &
broker_pid=$!
t_raw=$(wait_for devsim_connected "$n" 180)
t_tmld=$(wait_for tmld_online "$n" 180)
for v in "$t_raw" "$t_tmld"; do
    [ "${v%% *}" != timeout ] || {
        echo "bench/fleet.sh: after the restart: raw $t_raw, tmld $t_tmld" >&2
        tail -3 "$work/devsim.log" >&2; tail -5 "$work/tmld.log" >&2; exit 1; }
done
raw_s=$($py -c "print(f'{$t_raw - $t0:.2f}')")
tmld_s=$($py -c "print(f'{$t_tmld - $t0:.2f}')")
ratio=$($py -c "print(f'{($t_tmld - $t0) / max($t_raw - $t0, 1e-3):.2f}')")
sleep 2
rss_peak=$(rss_kib "$tmld_pid" VmHWM)
rss_after=$(rss_kib "$tmld_pid" VmRSS)
tmld_status=$($py - "$work/tmld.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1])
s.sendall(b'{"id":1,"cmd":"status"}\n'); buf = b""
while not buf.endswith(b"\n"):
    c = s.recv(65536)
    if not c: break
    buf += c
r = json.loads(buf)["result"]
print(r["mqtt"]["connects"], r["ingest"]["tele"], r["ingest"]["malformed"])
PY
)
read -r tmld_connects tmld_tele tmld_bad <<<"$tmld_status"

printf '\nfleet: %d devices (tml-devsim, mutual TLS, 0.2 inferences/s, summary every %s s, connect rate %s/s)\n' \
    "$n" "$summary" "$crate"
printf '%-52s %12s\n' "" "value"
printf '%-52s %12s\n' "tmld RSS, $n devices connected (MiB)" "$(mib "$rss_steady")"
printf '%-52s %12s\n' "tmld peak RSS over the run, VmHWM (MiB)" "$(mib "$rss_peak")"
printf '%-52s %12s\n' "tmld RSS after the reconnect (MiB)" "$(mib "$rss_after")"
printf '%-52s %12s\n' "mosquitto RSS / tml-devsim RSS (MiB)" "$(mib "$broker_rss") / $(mib "$devsim_rss")"
printf '%-52s %12s\n' "raw: $n TLS clients reconnected after restart (s)" "$raw_s"
printf '%-52s %12s\n' "tmld: $n devices online after restart (s)" "$tmld_s"
printf '%-52s %12s\n' "ratio tmld / raw" "$ratio"
echo "tmld: mqtt connects=$tmld_connects tele stored=$tmld_tele malformed=$tmld_bad"
echo "RESULT fleet devices=$n tmld_rss_mib=$(mib "$rss_peak") tmld_rss_steady_mib=$(mib "$rss_steady") online_after_restart_s=$tmld_s raw_reconnect_s=$raw_s ratio=$ratio connect_rate=$crate tmld_reconnect_max=${TML_BENCH_FLEET_TMLD_RECONNECT_MAX:-default} summary_s=$summary"
