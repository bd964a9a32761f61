#!/usr/bin/env bash
# bench/upstream.sh (scripts/bench upstream): does forwarding to the cloud
# cost ingest? tmld's committed-and-acked ingest rate (bench/ingest's
# publishers: mutual TLS, QoS 1, 64-byte tele) with [upstream] off, against
#   slow: [upstream] on, the cloud answering every POST after 20 s (issue 8:
#         must stay within 10 % of off), and
#   fast: [upstream] on, a healthy cloud (bodies built and gzip'd while
#         ingesting).
# The upstream runs start from the off run's database, so a backlog exists
# and POSTs are in flight (hanging, for slow) during the whole measurement.
# Runs alternate off/slow/fast ROUNDS times, each on a fresh database, and
# the medians are compared (this machine is shared and noisy).
#   UPSTREAM_BENCH_DEVICES (20), UPSTREAM_BENCH_RECORDS per device (1000),
#   UPSTREAM_BENCH_ROUNDS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${TML_BUILD_DIR:-$PWD/build-bench}
BIN=$B/bench/ingest/tmld_bench_ingest
TMLD=$B/daemon/tmld
DEVICES=${UPSTREAM_BENCH_DEVICES:-20}
RECORDS=${UPSTREAM_BENCH_RECORDS:-1000}
ROUNDS=${UPSTREAM_BENCH_ROUNDS:-3}
TOTAL=$((DEVICES * RECORDS))
[ -x "$BIN" ] && [ -x "$TMLD" ] || { echo "bench/upstream: build $B first" >&2; exit 1; }

work=$(mktemp -d /tmp/tmld-upbench.XXXXXX)
tmld_pid=""
cloud_pids=()
cleanup() {
    [ -n "$tmld_pid" ] && kill -9 "$tmld_pid" 2>/dev/null || true
    for p in "${cloud_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    tests/lib/testbroker stop "$work/broker" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

tests/lib/testbroker start "$work/broker" >/dev/null
. "$work/broker/env"
for i in $(seq 0 $((DEVICES - 1))); do
    tests/lib/testbroker device "$work/broker" "$(printf 'bench-%04d' "$i")"
done
PKI=$work/broker/pki

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
start_cloud() { # start_cloud DIR ARGS...: sets cloud_port (no subshell,
    # so that cloud_pids reaches the cleanup trap)
    local dir=$1
    shift
    cloud_port=$(free_port)
    rm -f "$dir/ready"
    /usr/bin/python3 tests/upstream/cloud.py --dir "$dir" --port "$cloud_port" \
        "$@" >>"$dir/cloud.log" 2>&1 &
    cloud_pids+=($!)
    for _ in $(seq 1 250); do [ -e "$dir/ready" ] && break; sleep 0.02; done
}
mkdir -p "$work/slow" "$work/fast"
/usr/bin/python3 tests/upstream/cloud.py --dir "$work/slow" --gen-certs
/usr/bin/python3 tests/upstream/cloud.py --dir "$work/fast" --gen-certs
start_cloud "$work/slow" --delay 20
slow_port=$cloud_port
start_cloud "$work/fast"
fast_port=$cloud_port

ctl() { # ctl JSON -> response line
    /usr/bin/python3 - "$work/tmld.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
buf = b""
while not buf.endswith(b"\n"):
    c = s.recv(65536)
    if not c:
        break
    buf += c
print(buf.decode().strip())
PY
}

run_tmld() { # run_tmld off|slow|fast N -> "rate backlog"
    local mode=$1 n=$2 dir=$work/run-$1-$2 up=""
    mkdir -p "$dir"
    if [ "$mode" != off ]; then
        # Start from the off run's database (its rows are a backlog for
        # upstream, so POSTs are in flight from the first second) with the
        # devices' high-water marks cleared so that the publishers' records
        # are new again.
        cp "$work/run-off-$n/tmld.db" "$dir/tmld.db"
        /usr/bin/python3 -c 'import sqlite3, sys
c = sqlite3.connect(sys.argv[1]); c.execute("DELETE FROM stream_hw")
c.commit()' "$dir/tmld.db"
    fi
    case $mode in
    slow) up="[upstream]
url = https://127.0.0.1:$slow_port/ingest
ca_file = $work/slow/ca.pem
gateway_id = bench" ;;
    fast) up="[upstream]
url = https://127.0.0.1:$fast_port/ingest
ca_file = $work/fast/ca.pem
gateway_id = bench-$n" ;;
    esac
    cat >"$dir/tmld.conf" <<CONF
[mqtt]
host = 127.0.0.1
port = $TB_PORT
cafile = $TB_CA
certfile = $TB_TMLD_CERT
keyfile = $TB_TMLD_KEY
[db]
path = $dir/tmld.db
[control]
socket = $work/tmld.sock
[log]
level = warning
$up
CONF
    "$TMLD" --config "$dir/tmld.conf" 2>"$dir/tmld.log" &
    tmld_pid=$!
    for _ in $(seq 1 200); do
        ctl '{"cmd":"status"}' 2>/dev/null | grep -q '"connected":true' && break
        sleep 0.05
    done
    # Let upstream start its first POSTs (slow: they hang from here on).
    sleep 1
    local out st us
    out=$("$BIN" tmld "$TB_PORT" "$PKI" "$DEVICES" "$RECORDS")
    st=$(ctl '{"cmd":"status"}')
    us=$(ctl '{"cmd":"upstream.status"}')
    kill -TERM "$tmld_pid"
    wait "$tmld_pid" || true
    tmld_pid=""
    local rate stored backlog
    rate=$(sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p' <<<"$out")
    stored=$(sed -n 's/.*"tele":\([0-9]*\).*/\1/p' <<<"$st")
    [ "$stored" = "$TOTAL" ] || { echo "bench/upstream: tmld stored $stored of $TOTAL" >&2; exit 1; }
    backlog=$(sed -n 's/.*"backlog_rows":\([0-9]*\),"events".*/\1/p' <<<"$us")
    echo "$rate ${backlog:-0}"
}

declare -a r_off r_slow r_fast
slow_backlog=0
for n in $(seq 1 "$ROUNDS"); do
    read -r a _ < <(run_tmld off "$n")
    read -r b slow_backlog < <(run_tmld slow "$n")
    read -r c _ < <(run_tmld fast "$n")
    r_off+=("$a"); r_slow+=("$b"); r_fast+=("$c")
    echo "round $n: off $a  slow $b  fast $c records/s" >&2
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
off=$(median "${r_off[@]}")
slow=$(median "${r_slow[@]}")
fast=$(median "${r_fast[@]}")
slow_req=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$work/slow/stats.json")
fast_rows=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rows"].get("tele",0))' "$work/fast/stats.json")
ratio_slow=$(awk -v a="$slow" -v b="$off" 'BEGIN {printf "%.2f", a / b}')
ratio_fast=$(awk -v a="$fast" -v b="$off" 'BEGIN {printf "%.2f", a / b}')

printf '\nupstream: %d devices x %d records, mutual TLS, QoS 1; median of %d rounds\n' \
    "$DEVICES" "$RECORDS" "$ROUNDS"
printf '%-52s %12s %8s\n' "" "records/s" "vs off"
printf '%-52s %12d %8s\n' "tmld, [upstream] off (baseline)" "$off" "1.00"
printf '%-52s %12d %8s\n' "tmld, upstream on, cloud answers after 20 s" "$slow" "$ratio_slow"
printf '%-52s %12d %8s\n' "tmld, upstream on, healthy cloud" "$fast" "$ratio_fast"
printf 'rounds: off %s | slow %s | fast %s\n' "${r_off[*]}" "${r_slow[*]}" "${r_fast[*]}"
printf 'slow cloud saw %s POSTs (all hanging); backlog at the end of the last slow run: %s rows; healthy cloud received %s tele rows\n' \
    "$slow_req" "$slow_backlog" "$fast_rows"
[ "$slow_req" -ge "$ROUNDS" ] || echo "bench/upstream: WARNING: fewer hanging POSTs than slow rounds" >&2
echo "RESULT upstream ratio_slow=$ratio_slow ratio_fast=$ratio_fast off_msgs_per_s=$off slow_msgs_per_s=$slow fast_msgs_per_s=$fast slow_posts=$slow_req devices=$DEVICES records=$TOTAL rounds=$ROUNDS"
