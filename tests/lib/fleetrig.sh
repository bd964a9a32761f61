# tests/lib/fleetrig.sh: the shared start-up of the OTA end-to-end scripts
# (tests/ota/e2e.sh, tests/ota/deploy_https.sh, bench/ota.sh): a TLS
# broker (tests/lib/testbroker), an operator key pair, a tmld with its
# config, tml-devsim devices, and a control-socket helper. Source it, then:
#
#   fr_init DIR BUILD_DIR SOURCE_DIR   paths; sets TMLD TMLCTL DEVSIM PY and
#                                      an EXIT trap that kills every PID in
#                                      FR_PIDS and stops the broker
#   fr_require [BIN...]                exit 77 (skip) unless all are built
#   fr_broker [EXTRA.conf]             start the broker; TB_* from its env
#   fr_keygen NAME...                  DIR/NAME.key, DIR/NAME.pub
#   fr_tmld_conf LEVEL [OTA_LINE...]   DIR/tmld.conf, trusting DIR/fleet.pub
#   fr_start_tmld [ENV=VAL...]         start tmld (TMLD_PID), logs DIR/tmld.log
#   fr_wait_tmld                       until the control socket answers
#   fr_raw CMD [ARGS_JSON]             one control request; prints the result
#   fr_devsim FIRST COUNT GROUP [ARG...]  COUNT devices from FIRST (DS_PID),
#                                      logs DIR/devsim.log
#   fr_wait_online GROUP N TRIES       until N devices of GROUP are online
#
# Every process it starts goes into FR_PIDS, killed by PID (never by name)
# when the script exits, however it exits. Scripts may add their own PIDs.
# Bash only; the scripts run with set -euo pipefail.

fr_init() {
    FR_DIR=$1
    FR_B=$2
    FR_S=$3
    TMLD=$FR_B/daemon/tmld
    TMLCTL=$FR_B/tools/tmlctl/tmlctl
    DEVSIM=$FR_B/tools/devsim/tml-devsim
    PY=/usr/bin/python3
    FR_PIDS=()
    FR_AT_EXIT=""
    mkdir -p "$FR_DIR/state"
    trap fr_cleanup EXIT
}

fr_cleanup() {
    local p
    for p in "${FR_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in "${FR_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    "$FR_S/tests/lib/testbroker" stop "$FR_DIR/broker" >/dev/null 2>&1 || true
    if [ -n "$FR_AT_EXIT" ]; then $FR_AT_EXIT; fi
}

fr_require() {
    local f
    for f in "$TMLD" "$TMLCTL" "$DEVSIM" "$@"; do
        [ -x "$f" ] || { echo "SKIP: $f not built"; exit 77; }
    done
}

fr_broker() {
    # shellcheck disable=SC2086
    "$FR_S/tests/lib/testbroker" start "$FR_DIR/broker" ${1:-} >/dev/null
    # shellcheck disable=SC1091
    . "$FR_DIR/broker/env"
    FR_PIDS+=("$TB_PID")
}

fr_keygen() {
    local k
    for k in "$@"; do
        "$TMLCTL" keygen --out "$FR_DIR/$k" >/dev/null
    done
}

fr_tmld_conf() {
    local level=$1 line
    shift
    {
        cat <<EOF
[mqtt]
host = 127.0.0.1
port = $TB_PORT
cafile = $TB_CA
certfile = $TB_TMLD_CERT
keyfile = $TB_TMLD_KEY
client_id = tmld

[db]
path = $FR_DIR/state/tmld.db

[control]
socket = $FR_DIR/tmld.sock

[log]
level = $level

[ota]
trusted_keys = $FR_DIR/fleet.pub
EOF
        for line in "$@"; do echo "$line"; done
    } >"$FR_DIR/tmld.conf"
}

fr_start_tmld() {
    env "$@" "$TMLD" --config "$FR_DIR/tmld.conf" --foreground \
        >>"$FR_DIR/tmld.log" 2>&1 &
    TMLD_PID=$!
    FR_PIDS+=("$TMLD_PID")
}

fr_raw() {
    local args=${2:-'{}'}
    $PY - "$FR_DIR/tmld.sock" "$1" "$args" <<'PYEOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall((json.dumps({"id": 1, "cmd": sys.argv[2],
                       "args": json.loads(sys.argv[3])}) + "\n").encode())
buf = b""
while not buf.endswith(b"\n"):
    c = s.recv(1 << 20)
    if not c:
        break
    buf += c
r = json.loads(buf)
if not r.get("ok"):
    sys.exit(1)
print(json.dumps(r.get("result", {})))
PYEOF
}

fr_wait_tmld() {
    local i
    for i in $(seq 1 100); do
        [ -S "$FR_DIR/tmld.sock" ] && fr_raw status >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

fr_devsim() {
    local first=$1 count=$2 group=$3
    shift 3
    "$DEVSIM" --port "$TB_PORT" --cafile "$TB_CA" --ca-cert "$TB_CA" \
        --ca-key "$TB_CA_KEY" --state-dir "$FR_DIR/devs" --first "$first" \
        --devices "$count" --groups "$group:$count" \
        --trust-key "$FR_DIR/fleet.pub" --hw devsim "$@" \
        >>"$FR_DIR/devsim.log" 2>&1 &
    DS_PID=$!
    FR_PIDS+=("$DS_PID")
}

fr_wait_online() {
    local group=$1 n=$2 tries=$3 online=0 i
    for i in $(seq 1 "$tries"); do
        online=$(fr_raw devices "{\"group\": \"$group\", \"limit\": $n}" 2>/dev/null |
            $PY -c "import json,sys; print(sum(1 for x in json.load(sys.stdin)['devices'] if x['online']))" \
                2>/dev/null || echo 0)
        [ "$online" = "$n" ] && return 0
        sleep 0.5
    done
    echo "fleetrig: only $online of $n devices of $group online" >&2
    return 1
}
