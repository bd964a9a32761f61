#!/usr/bin/env bash
# bench/ingest.sh (scripts/bench ingest): tmld's committed-and-acked ingest
# rate against the raw broker throughput measured in the same run, both over
# mutual TLS at QoS 1 with 64-byte tele records and the same publishers; bytes
# written to disk per record (/proc/PID/io write_bytes of tmld, which covers
# the WAL, its checkpoints and the logs), tmld's peak RSS, and the cost of
# synchronous=FULL against NORMAL.
#   TMLD_BENCH_DEVICES (default 50), TMLD_BENCH_RECORDS per device (1000)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${TML_BUILD_DIR:-$PWD/build-bench}
BIN=$B/bench/ingest/tmld_bench_ingest
TMLD=$B/daemon/tmld
DEVICES=${TMLD_BENCH_DEVICES:-50}
RECORDS=${TMLD_BENCH_RECORDS:-1000}
TOTAL=$((DEVICES * RECORDS))
[ -x "$BIN" ] && [ -x "$TMLD" ] || { echo "bench/ingest: build $B first" >&2; exit 1; }

work=$(mktemp -d /tmp/tmld-bench.XXXXXX)
tmld_pid=""
cleanup() {
    [ -n "$tmld_pid" ] && kill -9 "$tmld_pid" 2>/dev/null || true
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

ctl() { # ctl JSON -> response line
    /usr/bin/python3 - "$work/tmld.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
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

run_tmld() { # run_tmld full|normal -> "rate bytes_per_record rss_kib commit_p"
    local sync=$1 db=$work/$1/tmld.db
    mkdir -p "$work/$1"
    cat >"$work/tmld-$1.conf" <<CONF
[mqtt]
host = 127.0.0.1
port = $TB_PORT
cafile = $TB_CA
certfile = $TB_TMLD_CERT
keyfile = $TB_TMLD_KEY
[db]
path = $db
synchronous = $sync
[control]
socket = $work/tmld.sock
[log]
level = warning
CONF
    "$TMLD" --config "$work/tmld-$1.conf" 2>"$work/tmld-$1.log" &
    tmld_pid=$!
    for _ in $(seq 1 200); do
        ctl '{"cmd":"status"}' 2>/dev/null | grep -q '"connected":true' && break
        sleep 0.05
    done
    local io0 io1 out rss
    io0=$(awk '/^write_bytes/ {print $2}' "/proc/$tmld_pid/io")
    out=$("$BIN" tmld "$TB_PORT" "$PKI" "$DEVICES" "$RECORDS")
    io1=$(awk '/^write_bytes/ {print $2}' "/proc/$tmld_pid/io")
    rss=$(awk '/^VmHWM/ {print $2}' "/proc/$tmld_pid/status")
    local status
    status=$(ctl '{"cmd":"status"}')
    kill -TERM "$tmld_pid"
    wait "$tmld_pid" || true
    tmld_pid=""
    local rate stored
    rate=$(sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p' <<<"$out")
    stored=$(sed -n 's/.*"tele":\([0-9]*\).*/\1/p' <<<"$status")
    [ "$stored" = "$TOTAL" ] || { echo "bench/ingest: tmld stored $stored of $TOTAL" >&2; exit 1; }
    echo "$rate $(( (io1 - io0) / TOTAL )) $rss $(stat -c %s "$db")"
}

raw_out=$("$BIN" raw "$TB_PORT" "$PKI" "$DEVICES" "$RECORDS")
raw=$(sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p' <<<"$raw_out")
plen=$(sed -n 's/.*payload_bytes=\([0-9]*\).*/\1/p' <<<"$raw_out")
read -r full_rate full_bpr full_rss full_db < <(run_tmld full)
read -r norm_rate norm_bpr norm_rss norm_db < <(run_tmld normal)

ratio=$(awk -v a="$full_rate" -v b="$raw" 'BEGIN {printf "%.2f", a / b}')
fvn=$(awk -v a="$full_rate" -v b="$norm_rate" 'BEGIN {printf "%.2f", a / b}')
rss_mib=$(awk -v k="$full_rss" 'BEGIN {printf "%.1f", k / 1024}')
printf '\ningest: %d devices x %d records, %d-byte tele payloads, mutual TLS, QoS 1\n' \
    "$DEVICES" "$RECORDS" "$plen"
printf '%-44s %12s %14s %10s\n' "" "records/s" "bytes written" "peak RSS"
printf '%-44s %12s %14s %10s\n' "" "" "per record" "MiB"
printf '%-44s %12d %14s %10s\n' "raw broker (subscriber only counts)" "$raw" "-" "-"
printf '%-44s %12d %14d %10s\n' "tmld, synchronous=FULL (committed + acked)" \
    "$full_rate" "$full_bpr" "$rss_mib"
printf '%-44s %12d %14d %10s\n' "tmld, synchronous=NORMAL" "$norm_rate" \
    "$norm_bpr" "$(awk -v k="$norm_rss" 'BEGIN {printf "%.1f", k / 1024}')"
printf 'ratio tmld(FULL)/raw = %s   FULL/NORMAL = %s   db file after close: %d B (%d B/record)\n' \
    "$ratio" "$fvn" "$full_db" "$((full_db / TOTAL))"
echo "RESULT ingest ratio=$ratio tmld_msgs_per_s=$full_rate broker_msgs_per_s=$raw bytes_per_record=$full_bpr rss_mib=$rss_mib normal_msgs_per_s=$norm_rate normal_bytes_per_record=$norm_bpr full_vs_normal=$fvn devices=$DEVICES records=$TOTAL"
