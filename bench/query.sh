#!/usr/bin/env bash
# bench/query.sh (scripts/bench query): query speed of the operator's two
# everyday reads over a large fleet history (issue 6): tmld_query_gen writes
# TML_BENCH_QUERY_ROWS tele rows (default 10 million) over 1000 devices in 10
# groups into a tmld database, tmld opens it (behind a real TLS mosquitto),
# and each of `tmlctl telemetry --group g1 --since 24h` and `tmlctl devices`
# runs TML_BENCH_QUERY_RUNS times (default 9); the median wall time of the
# whole tmlctl process (connect, query, table on stdout) is reported.
#   TML_BENCH_QUERY_DB=PATH reuses (or keeps) a generated database.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${TML_BUILD_DIR:-$PWD/build-bench}
GEN=$B/bench/query/tmld_query_gen
TMLD=$B/daemon/tmld
CTL=$B/tools/tmlctl/tmlctl
ROWS=${TML_BENCH_QUERY_ROWS:-10000000}
RUNS=${TML_BENCH_QUERY_RUNS:-9}
for x in "$GEN" "$TMLD" "$CTL"; do
    [ -x "$x" ] || { echo "bench/query: build $B first ($x)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/tmld-bench-query.XXXXXX)
tmld_pid=""
cleanup() {
    [ -n "$tmld_pid" ] && kill -9 "$tmld_pid" 2>/dev/null || true
    tests/lib/testbroker stop "$work/broker" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

db=${TML_BENCH_QUERY_DB:-$work/tmld.db}
if [ ! -s "$db" ]; then
    echo "bench/query: generating $ROWS tele rows into $db" >&2
    gen_out=$("$GEN" "$db" "$ROWS" 1000 10 60)
    echo "$gen_out" >&2
fi
rows=$(sqlite3 "$db" "SELECT count(*) FROM tele")

tests/lib/testbroker start "$work/broker" >/dev/null
. "$work/broker/env"
cat >"$work/tmld.conf" <<CONF
[mqtt]
host = 127.0.0.1
port = $TB_PORT
cafile = $TB_CA
certfile = $TB_TMLD_CERT
keyfile = $TB_TMLD_KEY
[db]
path = $db
[control]
socket = $work/tmld.sock
[log]
level = warning
CONF
"$TMLD" --config "$work/tmld.conf" 2>"$work/tmld.log" &
tmld_pid=$!
for _ in $(seq 1 600); do
    "$CTL" --socket "$work/tmld.sock" status >/dev/null 2>&1 && break
    kill -0 "$tmld_pid" 2>/dev/null || { cat "$work/tmld.log" >&2; exit 1; }
    sleep 0.1
done

# median_ms CMD...: runs CMD $RUNS times (after one warm-up) and prints the
# median wall time in ms.
median_ms() {
    "$@" >/dev/null
    local i t0 t1 ts=()
    for i in $(seq 1 "$RUNS"); do
        t0=$(date +%s%N)
        "$@" >/dev/null
        t1=$(date +%s%N)
        ts+=($(( (t1 - t0) / 1000 )))
    done
    printf '%s\n' "${ts[@]}" | sort -n |
        awk '{a[NR] = $1} END {printf "%.1f", a[int((NR + 1) / 2)] / 1000}'
}

tele_ms=$(median_ms "$CTL" --socket "$work/tmld.sock" telemetry --group g1 --since 24h)
dev_ms=$(median_ms "$CTL" --socket "$work/tmld.sock" devices)
by_ms=$(median_ms "$CTL" --socket "$work/tmld.sock" telemetry --since 24h --by hour)
ping_ms=$(median_ms "$CTL" --socket "$work/tmld.sock" status)
"$CTL" --socket "$work/tmld.sock" telemetry --group g1 --since 24h >&2
n_dev=$("$CTL" --socket "$work/tmld.sock" --json devices |
    /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)["devices"]))')
kill -TERM "$tmld_pid"
wait "$tmld_pid" || true
tmld_pid=""

printf '\nquery: %d tele rows, 1000 devices in 10 groups, median of %d runs (whole tmlctl process)\n' \
    "$rows" "$RUNS"
printf '%-52s %10s\n' "command" "ms"
printf '%-52s %10s\n' "tmlctl telemetry --group g1 --since 24h" "$tele_ms"
printf '%-52s %10s\n' "tmlctl devices ($n_dev listed)" "$dev_ms"
printf '%-52s %10s\n' "tmlctl telemetry --since 24h --by hour (all devices)" "$by_ms"
printf '%-52s %10s\n' "tmlctl status (baseline: process + socket)" "$ping_ms"
echo "RESULT query rows=$rows telemetry_ms=$tele_ms devices_ms=$dev_ms by_hour_ms=$by_ms status_ms=$ping_ms"
