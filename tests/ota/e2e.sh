#!/usr/bin/env bash
# e2e.sh: end-to-end OTA rollouts through a real TLS mosquitto
# (tests/lib/testbroker), a real tmld and tml-devsim devices running the
# real libtmlagent (issue 5 "must show", reduced for the default suite).
#
#   e2e.sh DIR N_DEVICES [basic|faults|threefold|gates|fleet|rollback|late]
#
# basic (default):
# 1. good:  model kws v7 (64 KiB) to group turbines in waves 10,50,100:
#           every wave passes the health gate, every device confirms v7
#           and the image hash on its simulated flash slot matches.
# 2. bad:   kws v8, which tml-devsim runs with a much lower confidence
#           (3x+ low-confidence rate): the health gate fails at the canary
#           wave, the rollout pauses with the reason, the canaries get the
#           rollback offer (v7's image re-signed as v9 by tmlctl) and the
#           devices of later waves are never offered v8.
# 2b. kws v10, which the application rejects in its trial: the canaries
#           revert, the failure threshold pauses the rollout at wave 1.
# 3. S1:    a bundle signed by another key is refused by tmld.
#
# faults: one rollout (gate off, few devices downloading at once so that
#           the faults land mid-transfer) while tml-devsim reboots devices
#           at random, 10 % of the devices are power-cut mid-download
#           (their tml-devsim process SIGKILLed and restarted on the same
#           flash files), tmld is killed with SIGKILL and restarted, and the
#           broker is killed with SIGKILL and restarted on the same port:
#           the rollout completes, every device confirms, and the bytes
#           sent beyond one copy per device are counted (issue 5 faults,
#           R4-style broker restart, S11 resume).
#
# threefold (slow): a model with about 3x the low-confidence rate is
#           stopped by the health gate with the default margins.
#
# gates:    the default-suite version of both issue-5 pauses, each reason
#           read from `tmlctl rollout status`: (a) the ~3x low-confidence
#           kws v8 in waves 50,100 (half the devices are canaries at 100
#           inferences/s, so 15000 per side, enough for a 3x rate from a
#           1 % baseline against the default margins, arrive in ~10 s)
#           paused by the health gate; (b) kws v11
#           failing its self-test on 30 % of devices (devsim
#           selftest_fail_share) paused by the failure threshold at wave 1,
#           later waves never offered it.
#
# fleet (slow, 500 devices): kws v7 (64 KiB) to group turbines in one
#           wave: the rollout completes, every device confirms, and the
#           image hash on every simulated slot matches; prints the wall time.
#
# rollback: v7 then v8 confirmed on every device; `tmlctl rollback --group`
#           without --key is refused with the reason; with --key it
#           re-signs v7's image as v9 and every device confirms v9 with
#           v7's image on its slot (anti-rollback intact: no lower version
#           is ever offered).
#
# Prints "E2E key=value" lines (wall time, bytes per device, waves) and
# exits non-zero on the first failed check. Every process it starts is
# killed by PID on exit.
set -euo pipefail

DIR=$1
N=${2:-20}
MODE=${3:-basic}
S=${TML_SOURCE_DIR:?}
# shellcheck source=tests/lib/fleetrig.sh
. "$S/tests/lib/fleetrig.sh"
fr_init "$DIR" "${TML_BINARY_DIR:?}" "$S"

fail() {
    echo "E2E FAIL: $*" >&2
    echo "---- tmld log (tail) ----" >&2
    tail -n 40 "$DIR/tmld.log" >&2 || true
    echo "---- devsim log (tail) ----" >&2
    tail -n 15 "$DIR/devsim.log" >&2 || true
    exit 1
}

ctl() { "$TMLCTL" --socket "$DIR/tmld.sock" "$@"; }
jq_py() { $PY -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# raw CMD [ARGS_JSON]: one control request (docs/ctl-protocol.md), prints
# the result object.
raw() { fr_raw "$@"; }

fr_require
fr_broker
fr_keygen fleet rogue

KEEP="finished_keep = 1h"
[ "$MODE" = late ] && KEEP="finished_keep = 1s"
fr_tmld_conf info "soak = 2s" "gate_retry = 1s" "gate_max_wait = 60s" \
    "device_timeout = 10s" "$KEEP"

# The bad model: confidence far lower, so the low-confidence rate (under
# the agent's 5000 bp threshold) jumps from about 1 % to well over 3x.
BAD_CONF=5200
BAD_SPREAD=2500
if [ "$MODE" = threefold ] || [ "$MODE" = gates ]; then
    # About 3x the baseline's low-confidence rate: devsim draws confidence
    # from a triangle of half-width `spread`, so ((5000 - (6200 - 1600)) /
    # 1600)^2 / 2 = 3 % of the correct predictions fall under 5000 bp, on
    # top of the misclassified ones (the baseline's ~1.2 %).
    BAD_CONF=6200
    BAD_SPREAD=1600
fi
cat >"$DIR/behaviour.ini" <<EOF
[default]
confidence = 8500
spread = 1500
misclass = 2%
[kws@8]
confidence = $BAD_CONF
spread = $BAD_SPREAD
misclass = 2%
[kws@10]
confirm = reject
[kws@11]
selftest_fail_share = 30%
EOF

start_tmld() { fr_start_tmld; }
DEVSIM_EXTRA=""
RATE=25
[ "$MODE" = threefold ] && RATE=50
[ "$MODE" = gates ] && RATE=100
# faults: the agent's defaults (one 4 KiB chunk per request, so at most one
# chunk is in flight when a link dies: issue 5, < 2 chunks re-sent per
# interruption). E2E_OTA_CHUNK / E2E_OTA_WINDOW override them to compare
# (a window of 4 loses up to 4 chunks).
OTA_FLAGS=""
OTA_PYFLAGS=""
if [ -n "${E2E_OTA_CHUNK:-}" ]; then
    OTA_FLAGS="--ota-chunk $E2E_OTA_CHUNK"
    OTA_PYFLAGS="\"--ota-chunk\", \"$E2E_OTA_CHUNK\","
fi
if [ -n "${E2E_OTA_WINDOW:-}" ]; then
    OTA_FLAGS="$OTA_FLAGS --ota-window $E2E_OTA_WINDOW"
    OTA_PYFLAGS="$OTA_PYFLAGS \"--ota-window\", \"$E2E_OTA_WINDOW\","
fi
[ "$MODE" = faults ] && DEVSIM_EXTRA="--reboot-mean 40 $OTA_FLAGS"
start_tmld
fr_wait_tmld || fail "tmld did not start"

# devsim FIRST COUNT EXTRA...: COUNT devices from index FIRST; sets DS_PID.
devsim() {
    local first=$1 count=$2
    shift 2
    fr_devsim "$first" "$count" turbines --behaviour "$DIR/behaviour.ini" \
        --rate "$RATE" --summary-period 1 --duration 170 --drain 1 \
        --status 0 "$@"
}
# faults: every device runs in its own tml-devsim process, and the first
# 10 % of the devices seen mid-download are power-cut (SIGKILL: RAM lost,
# flash files kept) and restarted.
N_CUT=0
N_SOLO=0
[ "$MODE" = faults ] && N_CUT=$(((N + 9) / 10)) && N_SOLO=$N
# late: the last device in its own process, offline when deploy is issued.
[ "$MODE" = late ] && N_SOLO=1
# shellcheck disable=SC2086
[ "$N_SOLO" -lt "$N" ] && devsim 1 $((N - N_SOLO)) $DEVSIM_EXTRA
CUT_PIDS=()
for i in $(seq 1 "$N_SOLO"); do
    # faults: the first device is stuck in a loop, publishing every chunk
    # request 100 more times (never power-cut: the cutter skips it).
    flood=""
    [ "$i" = 1 ] && [ "$MODE" = faults ] && flood="--ota-flood 100"
    # shellcheck disable=SC2086
    devsim $((N - N_SOLO + i)) 1 $DEVSIM_EXTRA --seed "$i" $flood
    CUT_PIDS+=("$DS_PID")
done

for _ in $(seq 1 $((100 + N))); do
    n=$(raw devices '{"group": "turbines"}' 2>/dev/null |
        jq_py "sum(1 for x in d['devices'] if x['online'])" 2>/dev/null || echo 0)
    [ "$n" = "$N" ] && break
    sleep 0.2
done
[ "$n" = "$N" ] || fail "only $n of $N devices online"

head -c 65536 /dev/urandom >"$DIR/kws7.bin"
head -c 65536 /dev/urandom >"$DIR/kws8.bin"
ctl sign "$DIR/kws7.bin" --key "$DIR/fleet.key" --name kws --version 7 \
    --hw devsim --input-shape 16 --classes 4 -o "$DIR/kws-7.tmlb" >/dev/null

stop_tmld() {
    kill -TERM "$TMLD_PID"
    rc=0
    for _ in $(seq 1 150); do
        kill -0 "$TMLD_PID" 2>/dev/null || break
        sleep 0.1
    done
    wait "$TMLD_PID" || rc=$?
    # A sanitizer report whose stack runs through the OTA module fails
    # this test; one entirely inside the core is the core's (its own tests
    # catch it) and is only shown here.
    if grep -q -E "Sanitizer|runtime error" "$DIR/tmld.log"; then
        if grep -q -E "daemon/(ota|rollout|health)" "$DIR/tmld.log"; then
            fail "sanitizer report involving the OTA module"
        fi
        echo "E2E WARN tmld core sanitizer report at shutdown (not OTA):" \
            "$(grep -m1 -E 'ERROR: |runtime error' "$DIR/tmld.log")"
    elif [ $rc -ne 0 ]; then
        fail "tmld exit status $rc after SIGTERM"
    fi
    echo "E2E tmld_exit=$rc"
}

rollout_field() { # ID PYEXPR
    raw rollout.show "{\"id\": $1, \"devices\": true}" | jq_py "$2"
}

# wait_field ID PYEXPR WANT: until PYEXPR of rollout ID prints WANT (30 s
# at most); the last value in $got.
wait_field() {
    local _
    got=none
    for _ in $(seq 1 300); do
        got=$(rollout_field "$1" "$2" 2>/dev/null || echo none)
        [ "$got" = "$3" ] && return 0
        sleep 0.1
    done
    return 1
}
# wait_online N: until N devices of turbines are online (10 s at most); the
# last count in $got.
wait_online() {
    local _
    got=none
    for _ in $(seq 1 100); do
        got=$(raw devices '{"group": "turbines"}' 2>/dev/null |
            jq_py "sum(1 for x in d['devices'] if x['online'])" 2>/dev/null || echo none)
        [ "$got" = "$1" ] && return 0
        sleep 0.1
    done
    return 1
}
CONFIRMED="d['rollout']['counts'].get('confirmed', 0)"
STATE="d['rollout']['state']"

if [ "$MODE" = late ]; then
    # Issue 5 (the ota_e2e_faults flake: a device rebooting at deploy time
    # was left out, the rollout "done" with 19 of 20): a member of the
    # group that is offline when deploy is issued is still a target. The
    # last device is power-cut (SIGKILL: the broker publishes its will at
    # once) before the deploy; the others confirm, the rollout keeps
    # running and names the device it waits for; back, it gets the model
    # and only then is the rollout done.
    away=$(printf 'sim-%04d' "$N")
    kill -9 "${CUT_PIDS[0]}"
    wait_online $((N - 1)) || fail "$away still online after its power cut"
    ctl -q --json deploy "$DIR/kws-7.tmlb" --group turbines --waves 100 \
        --no-gate >"$DIR/deploy.json" || fail "deploy failed"
    wait_field 1 "$CONFIRMED" $((N - 1)) ||
        fail "$got of $((N - 1)) online devices confirmed"
    sleep 0.5 # a few ticks: the rollout must not finish without $away
    raw rollout.show '{"id": 1, "devices": true}' >"$DIR/away.json"
    st=$(jq_py "d['rollout']['state']" <"$DIR/away.json")
    why=$(jq_py "d['rollout']['reason']" <"$DIR/away.json")
    dst=$(jq_py "[x['state'] for x in d['rollout']['device_states'] if x['id'] == '$away'][0]" <"$DIR/away.json")
    [ "$st" = running ] && [ "$dst" = pending ] ||
        fail "rollout $st without $away ($dst): $(cat "$DIR/away.json")"
    [ "$why" = "last wave: waiting for 1 offline device (offered the model when back)" ] ||
        fail "reason while waiting: $why"
    devsim "$N" 1
    away_pid=$DS_PID
    wait_field 1 "$STATE" done || fail "after $away came back: $got"
    c=$(rollout_field 1 "$CONFIRMED")
    [ "$c" = "$N" ] || fail "after $away came back: $c of $N confirmed"
    echo "E2E offline_at_deploy=$away state_while_away=$st reason=\"$why\" confirmed_after_return=$c"

    # Issue 5: a device that joins the group after the rollout finished and
    # left tmld's memory ([ota] finished_keep = 1s here, 1 h by default)
    # still gets the group's model: tmld loads the finished rollout back
    # from its tables and the artifact from the store on disk.
    for _ in $(seq 1 100); do
        grep -q "rollout=1 finished: out of memory" "$DIR/tmld.log" && break
        sleep 0.1
    done
    grep -q "rollout=1 finished: out of memory" "$DIR/tmld.log" ||
        fail "the finished rollout stayed in memory"
    t0=$(date +%s.%N)
    devsim $((N + 1)) 1
    late=$(printf 'sim-%04d' $((N + 1)))
    wait_field 1 "[x['state'] for x in d['rollout']['device_states'] if x['id'] == '$late'][0]" confirmed ||
        fail "late device $late: $got"
    t1=$(date +%s.%N)
    grep -q "rollout=1 (finished) loaded again from the store" "$DIR/tmld.log" ||
        fail "no reload from the store logged"
    want=$(sha256sum "$DIR/kws7.bin" | cut -d' ' -f1)
    got=none
    for s in "$DIR/devs/$late/slot0.bin" "$DIR/devs/$late/slot1.bin"; do
        [ -f "$s" ] && [ "$(head -c 65536 "$s" | sha256sum | cut -d' ' -f1)" = "$want" ] && got=ok
    done
    [ "$got" = ok ] || fail "late device slot does not hold kws v7"
    echo "E2E late_device=$late confirmed_s=$($PY -c "print(f'{$t1-$t0:.1f}')") hash_ok=1"

    # A rollout that only waits for an offline device does not block the
    # group: v8 waits for $away (power-cut again), a deploy of v9 to the
    # group supersedes it (not a conflict), and $away, back, gets v9.
    kill -9 "$away_pid"
    wait_online "$N" || fail "$away still online after its second power cut"
    ctl -q --json deploy "$DIR/kws8.bin" --key "$DIR/fleet.key" --name kws \
        --version 8 --hw devsim --input-shape 16 --classes 4 \
        --group turbines --waves 100 --no-gate >/dev/null || fail "v8 deploy failed"
    wait_field 2 "$CONFIRMED" "$N" || fail "v8: $got of $N confirmed"
    sleep 0.3
    st=$(rollout_field 2 "$STATE")
    [ "$st" = running ] || fail "v8 without $away: $st"
    head -c 65536 /dev/urandom >"$DIR/kws9.bin"
    ctl -q --json deploy "$DIR/kws9.bin" --key "$DIR/fleet.key" --name kws \
        --version 9 --hw devsim --input-shape 16 --classes 4 \
        --group turbines --waves 100 --no-gate >/dev/null ||
        fail "v9 deploy refused while rollout 2 only waited for $away"
    raw rollout.show '{"id": 2}' >"$DIR/super.json"
    st=$(jq_py "d['rollout']['state']" <"$DIR/super.json")
    why=$(jq_py "d['rollout']['reason']" <"$DIR/super.json")
    [ "$st" = aborted ] &&
        [ "$why" = "superseded by rollout 3 (1 offline device now its target)" ] ||
        fail "rollout 2 after v9: $st: $why"
    devsim "$N" 1
    wait_field 3 "$STATE" done || fail "v9: $got"
    c=$(rollout_field 3 "$CONFIRMED")
    [ "$c" = $((N + 1)) ] || fail "v9: $c of $((N + 1)) confirmed"
    echo "E2E superseded=2 reason=\"$why\" v9_confirmed=$c"
    stop_tmld
    echo "E2E OK"
    exit 0
fi

if [ "$MODE" = threefold ]; then
    # Issue 5: a model that raises the low-confidence rate by about 3x is
    # paused by the health gate (default margins) at the canary wave.
    set +e
    ctl deploy "$DIR/kws8.bin" --key "$DIR/fleet.key" --name kws --version 8 \
        --hw devsim --input-shape 16 --classes 4 --group turbines \
        --waves 10,100 --min-devices 2 --min-inferences 3000 \
        --gate-max-wait 150 --watch >"$DIR/three.out" 2>&1
    rc=$?
    set -e
    ctl rollout status 1 >"$DIR/three.txt"
    [ $rc -eq 4 ] || fail "3x rollout: watch exit $rc: $(cat "$DIR/three.txt")"
    grep -q "failed its health gate: low-confidence" "$DIR/three.txt" ||
        fail "3x rollout not stopped by the low-confidence check: $(cat "$DIR/three.txt")"
    echo "E2E threefold_reason=\"$(grep -o 'low-confidence rate [^;]*' "$DIR/three.txt" | head -1)\""
    stop_tmld
    echo "E2E OK"
    exit 0
fi

if [ "$MODE" = gates ]; then
    # (a) ~3x low-confidence: the health gate pauses wave 1.
    t0=$(date +%s.%N)
    set +e
    ctl deploy "$DIR/kws8.bin" --key "$DIR/fleet.key" --name kws --version 8 \
        --hw devsim --input-shape 16 --classes 4 --group turbines \
        --waves 50,100 --min-devices 3 --min-inferences 15000 \
        --gate-max-wait 60 --watch >"$DIR/three.out" 2>&1
    rc=$?
    set -e
    t1=$(date +%s.%N)
    ctl rollout status 1 >"$DIR/three.txt"
    [ $rc -eq 4 ] || fail "3x rollout: watch exit $rc: $(cat "$DIR/three.txt")"
    grep -q "wave 1 failed its health gate: low-confidence rate" "$DIR/three.txt" ||
        fail "3x rollout not stopped by the low-confidence check: $(cat "$DIR/three.txt")"
    later=$(raw rollout.show '{"id": 1, "devices": true}' |
        jq_py "sum(1 for x in d['rollout']['device_states'] if x['wave']>1 and x['state']!='pending')")
    [ "$later" = 0 ] || fail "3x: $later devices of wave 2 were touched"
    echo "E2E threefold_wall_s=$($PY -c "print(f'{$t1-$t0:.1f}')") later_waves_touched=$later"
    echo "E2E threefold_reason=\"$(grep -o 'low-confidence rate [^;]*' "$DIR/three.txt" | head -1)\""
    ctl rollout abort 1 >/dev/null
    # (b) self-test fails on 30 % of devices: the failure threshold (10 %)
    # pauses wave 1.
    head -c 65536 /dev/urandom >"$DIR/kws11.bin"
    t0=$(date +%s.%N)
    set +e
    ctl deploy "$DIR/kws11.bin" --key "$DIR/fleet.key" --name kws --version 11 \
        --hw devsim --input-shape 16 --classes 4 --group turbines \
        --waves 50,100 --no-gate --watch >"$DIR/st.out" 2>&1
    rc=$?
    set -e
    t1=$(date +%s.%N)
    ctl rollout status 2 >"$DIR/st.txt"
    [ $rc -eq 4 ] || fail "30% self-test: watch exit $rc: $(cat "$DIR/st.txt")"
    grep -q -E "wave 1: [0-9]+ of [0-9]+ devices failed \([0-9]+% > 10% threshold\), mostly: self-test failed" "$DIR/st.txt" ||
        fail "no threshold reason: $(cat "$DIR/st.txt")"
    raw rollout.show '{"id": 2, "devices": true}' >"$DIR/st.json"
    later=$(jq_py "sum(1 for x in d['rollout']['device_states'] if x['wave']>1 and x['state']!='pending')" <"$DIR/st.json")
    bad=$(jq_py "sum(1 for x in d['rollout']['device_states'] if x['state'] in ('reverted','failed'))" <"$DIR/st.json")
    [ "$later" = 0 ] && [ "$bad" -ge 2 ] || fail "30%: failed $bad, later waves touched $later"
    echo "E2E selftest30_wall_s=$($PY -c "print(f'{$t1-$t0:.1f}')") paused_at_wave=1 failed=$bad later_waves_touched=$later reason=\"$(grep -o -E 'wave 1: [^,]*, mostly: [a-z -]*' "$DIR/st.txt" | head -1)\""
    ctl rollout abort 2 >/dev/null
    stop_tmld
    echo "E2E OK"
    exit 0
fi

if [ "$MODE" = fleet ]; then
    t0=$(date +%s.%N)
    ctl deploy "$DIR/kws-7.tmlb" --group turbines --waves 100 --no-gate \
        --max-concurrent 100 --watch >"$DIR/fleet.out" 2>&1 ||
        fail "fleet rollout: $(tail -5 "$DIR/fleet.out")"
    t1=$(date +%s.%N)
    ctl --json rollout status 1 >"$DIR/fleet.json"
    state=$(jq_py "d['rollout']['state']" <"$DIR/fleet.json")
    confirmed=$(jq_py "d['rollout']['counts'].get('confirmed', 0)" <"$DIR/fleet.json")
    bytes=$(jq_py "int(d['rollout']['bytes_sent'])" <"$DIR/fleet.json")
    [ "$state" = done ] && [ "$confirmed" = "$N" ] ||
        fail "fleet rollout: state $state, $confirmed of $N confirmed"
    want=$(sha256sum "$DIR/kws7.bin" | cut -d' ' -f1)
    match=0
    for d in "$DIR"/devs/*/; do
        for s in "$d"slot0.bin "$d"slot1.bin; do
            [ -f "$s" ] || continue
            if [ "$(head -c 65536 "$s" | sha256sum | cut -d' ' -f1)" = "$want" ]; then
                match=$((match + 1))
                break
            fi
        done
    done
    [ "$match" = "$N" ] || fail "image hash matches on $match of $N devices"
    echo "E2E fleet_wall_s=$($PY -c "print(f'{$t1-$t0:.1f}')") devices=$N confirmed=$confirmed hash_ok=$match bytes_per_device=$((bytes / N))"
    stop_tmld
    echo "E2E OK"
    exit 0
fi

if [ "$MODE" = rollback ]; then
    set +e
    ctl rollback --group turbines --key "$DIR/fleet.key" >"$DIR/rb0.out" 2>&1
    rc=$?
    set -e
    [ $rc -eq 3 ] && grep -q "nothing to roll group turbines back to" "$DIR/rb0.out" ||
        fail "rollback without history: exit $rc: $(cat "$DIR/rb0.out")"
    ctl deploy "$DIR/kws-7.tmlb" --group turbines --waves 100 --no-gate \
        --watch >"$DIR/rb1.out" 2>&1 || fail "v7: $(tail -5 "$DIR/rb1.out")"
    ctl deploy "$DIR/kws8.bin" --key "$DIR/fleet.key" --name kws --version 8 \
        --hw devsim --input-shape 16 --classes 4 --group turbines \
        --waves 100 --no-gate --watch >"$DIR/rb2.out" 2>&1 ||
        fail "v8: $(tail -5 "$DIR/rb2.out")"
    set +e
    ctl rollback --group turbines >"$DIR/rb3.out" 2>&1
    rc=$?
    set -e
    [ $rc -eq 2 ] && grep -q -- "needs the operator's private key: give --key" "$DIR/rb3.out" ||
        fail "rollback without --key: exit $rc: $(cat "$DIR/rb3.out")"
    echo "E2E rollback_without_key_exit=$rc"
    t0=$(date +%s.%N)
    ctl rollback --group turbines --key "$DIR/fleet.key" --waves 50,100 \
        --no-gate --watch >"$DIR/rb4.out" 2>&1 ||
        fail "rollback: $(tail -5 "$DIR/rb4.out")"
    t1=$(date +%s.%N)
    grep -q "Rolling turbines back to kws v7 (rollout 1) as v9" "$DIR/rb4.out" ||
        fail "rollback target: $(cat "$DIR/rb4.out")"
    ctl --json rollout status 3 >"$DIR/rb.json"
    state=$(jq_py "d['rollout']['state']" <"$DIR/rb.json")
    version=$(jq_py "d['rollout']['version']" <"$DIR/rb.json")
    confirmed=$(jq_py "d['rollout']['counts'].get('confirmed', 0)" <"$DIR/rb.json")
    [ "$state" = done ] && [ "$version" = 9 ] && [ "$confirmed" = "$N" ] ||
        fail "rollback rollout: state $state v$version confirmed $confirmed"
    # Every device confirmed v9, and its slot holds v7's image.
    want=$(sha256sum "$DIR/kws7.bin" | cut -d' ' -f1)
    match=0
    for d in "$DIR"/devs/*/; do
        for s in "$d"slot0.bin "$d"slot1.bin; do
            [ -f "$s" ] || continue
            if [ "$(head -c 65536 "$s" | sha256sum | cut -d' ' -f1)" = "$want" ]; then
                match=$((match + 1))
                break
            fi
        done
    done
    [ "$match" = "$N" ] || fail "v7 image on $match of $N devices after rollback"
    # A second rollback goes back to v8's image (the model before v9).
    ctl rollback --group turbines --key "$DIR/fleet.key" --dry-run >"$DIR/rb5.out" 2>&1 ||
        fail "second rollback dry run: $(cat "$DIR/rb5.out")"
    grep -q "back to kws v8 (rollout 2) as v10" "$DIR/rb5.out" ||
        fail "second rollback target: $(cat "$DIR/rb5.out")"
    wall=$($PY -c "print(f'{$t1-$t0:.1f}')")
    echo "E2E rollback_wall_s=$wall version=$version confirmed=$confirmed image_v7_ok=$match"
    stop_tmld
    echo "E2E OK"
    exit 0
fi

if [ "$MODE" = faults ]; then
    t0=$(date +%s.%N)
    ctl -q --json deploy "$DIR/kws-7.tmlb" --group turbines --waves 100 \
        --no-gate --max-concurrent 3 --device-timeout 5 --retries 5 \
        >"$DIR/deploy.json" || fail "deploy failed"
    # Power-cut each of the last N_CUT devices once while it downloads
    # (offset past the first chunk, before the end), then restart it: one
    # control connection polled every 5 ms sends the SIGKILL itself so the
    # cut lands mid-download, and starts the device again 0.3 s later (in
    # this process group, so the test's cleanup reaches it).
    cutmap=""
    for i in $(seq 2 "$N_SOLO"); do
        cutmap="$cutmap $(printf 'sim-%04d' $((N - N_SOLO + i))):${CUT_PIDS[$((i - 1))]}:$((N - N_SOLO + i))"
    done
    $PY - "$DIR/tmld.sock" "$DIR/cut.out" "$N_CUT" $cutmap <<PYEOF &
import json, os, signal, socket, subprocess, sys, time
todo = {a.split(':')[0]: a.split(':')[1:] for a in sys.argv[4:]}
left = int(sys.argv[3])
out = open(sys.argv[2], 'w')
end = time.time() + 60
n = 0
f = None
while left > 0 and time.time() < end:
    n += 1
    try:  # tmld is killed and restarted meanwhile: reconnect
        if f is None:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(sys.argv[1])
            f = s.makefile('rwb')
        f.write((json.dumps({"id": n, "cmd": "rollout.show",
                             "args": {"id": 1, "devices": True}}) + "\\n").encode())
        f.flush()
        r = json.loads(f.readline())
    except (OSError, ValueError):
        f = None
        time.sleep(0.05)
        continue
    for x in r.get("result", {}).get("rollout", {}).get("device_states", []):
        if left > 0 and x["id"] in todo and x["state"] == "downloading" \\
                and 1024 < x["offset"] < 60000:
            pid, first = todo.pop(x["id"])
            left -= 1
            os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.3)
            p = subprocess.Popen(["$DEVSIM", "--port", "$TB_PORT",
                "--cafile", "$TB_CA", "--ca-cert", "$TB_CA",
                "--ca-key", "$TB_CA_KEY", "--state-dir", "$DIR/devs",
                "--first", first, "--devices", "1", "--groups", "turbines:1",
                "--trust-key", "$DIR/fleet.pub", "--hw", "devsim",
                "--behaviour", "$DIR/behaviour.ini", "--rate", "$RATE",
                "--summary-period", "1", "--duration", "170", "--drain", "1",
                "--status", "0", "--reboot-mean", "40", "--seed", "99",
                $OTA_PYFLAGS],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            out.write(f"{x['id']} {x['offset']} {p.pid}\\n")
            out.flush()
    time.sleep(0.005)
PYEOF
    CUTTER=$!
    FR_PIDS+=("$CUTTER")
    # tmld kill -9 once a few devices confirmed and the power cuts are
    # done (the cutter cannot see a download while tmld is down).
    for _ in $(seq 1 400); do
        c=$(rollout_field 1 "d['rollout']['counts'].get('confirmed', 0)" 2>/dev/null || echo 0)
        ncut=$(wc -l <"$DIR/cut.out" 2>/dev/null || echo 0)
        { [ "$ncut" -ge "$N_CUT" ] || ! kill -0 "$CUTTER" 2>/dev/null; } &&
            [ "$c" -ge 3 ] && break
        sleep 0.05
    done
    c_tmld=$c
    kill -9 "$TMLD_PID"
    wait "$TMLD_PID" 2>/dev/null || true
    echo "E2E tmld_killed_at_confirmed=$c"
    start_tmld
    for _ in $(seq 1 100); do
        raw status >/dev/null 2>&1 && break
        sleep 0.1
    done
    grep -q "rollout=1 .*restored" "$DIR/tmld.log" || fail "rollout not restored after kill -9"
    # Broker kill -9 and restart on the same port, mid-rollout.
    for _ in $(seq 1 200); do
        c=$(rollout_field 1 "d['rollout']['counts'].get('confirmed', 0)" 2>/dev/null || echo 0)
        [ "$c" -ge $((N / 2)) ] || [ "$c" -ge $((c_tmld + 3)) ] && break
        sleep 0.05
    done
    kill -9 "$TB_PID"
    sleep 1
    mosquitto -c "$DIR/broker/mosquitto.conf" >>"$DIR/broker/mosquitto.out" 2>&1 &
    TB_PID=$!
    FR_PIDS+=("$TB_PID")
    echo "E2E broker_killed_at_confirmed=$c"
    state=running
    for _ in $(seq 1 1200); do
        state=$(rollout_field 1 "d['rollout']['state']" 2>/dev/null || echo running)
        [ "$state" = running ] || break
        sleep 0.1
    done
    t1=$(date +%s.%N)
    wait "$CUTTER" || true
    cut=0
    while read -r id off pid; do
        FR_PIDS+=("$pid")
        cut=$((cut + 1))
        echo "E2E power_cut dev=$id at_offset=$off"
    done <"$DIR/cut.out"
    [ "$cut" = "$N_CUT" ] || fail "only $cut of $N_CUT devices were cut mid-download"
    raw rollout.show '{"id": 1}' >"$DIR/faults.json"
    confirmed=$(jq_py "d['rollout']['counts'].get('confirmed', 0)" <"$DIR/faults.json")
    bytes=$(jq_py "int(d['rollout']['bytes_sent'])" <"$DIR/faults.json")
    [ "$state" = done ] || fail "rollout state $state after the faults: $(cat "$DIR/faults.json")"
    [ "$confirmed" = "$N" ] || fail "$confirmed of $N confirmed after the faults"
    reboots=$(grep -c -i "reboot" "$DIR/devsim.log" || true)
    # bytes_sent survives the kill -9 only up to the last flush: it is a
    # lower bound of what was sent.
    extra=$((bytes - N * 65536))
    wall=$($PY -c "print(f'{$t1-$t0:.1f}')")
    echo "E2E faults_wall_s=$wall devices=$N confirmed=$confirmed bytes_sent=$bytes extra_bytes=$extra extra_chunks_1k=$((extra / 1024)) devsim_reboot_lines=$reboots"
    # Re-sent accounting (persisted, so it spans the tmld kill -9): image
    # bytes tmld published again (lost in flight or already stored), per
    # interruption tmld saw (a device's reconnect or reboot mid-transfer, a
    # tmld restart with the device mid-transfer).
    raw rollout.show '{"id": 1, "devices": true}' >"$DIR/faults.json"
    # The chunk the devices asked for (hello chunk_max = their ota_chunk).
    OTA_CHUNK=$(raw device.show '{"id": "sim-0002"}' |
        jq_py "d['device']['chunk_max']") || fail "no chunk_max for sim-0002"
    $PY - "$DIR/faults.json" "$OTA_CHUNK" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))['rollout']
chunk = int(sys.argv[2])
cut = {l.split()[0] for l in open(sys.argv[1].replace('faults.json', 'cut.out'))}
rs, rw, ru = d['bytes_resent'], d['rewinds'], d['resumes']
crs = sum(x['resent'] for x in d['device_states'] if x['id'] in cut)
cru = sum(x['resumes'] for x in d['device_states'] if x['id'] in cut)
worst = max((x['resent'] / max(x['resumes'], 1), x['id'])
            for x in d['device_states'])
print(f"E2E resent_bytes={rs} interruptions={ru} rewinds={rw} "
      f"per_interruption={rs / max(ru, 1):.0f} "
      f"cut_devices_resent={crs} cut_devices_interruptions={cru} "
      f"worst_device={worst[1]}:{worst[0]:.0f}")
# The looping device (sim-0001: every request 100 more times) was held
# to its request rate and served no more than the image.
fl = [x for x in d['device_states'] if x['id'] == 'sim-0001'][0]
print(f"E2E flood_device requests_limited={d['requests_limited']} "
      f"served_hi={fl['served_hi']} resent={fl['resent']} state={fl['state']}")
if d['requests_limited'] == 0 or fl['served_hi'] > d['size'] or \
        fl['resent'] > 2 * chunk * max(fl['resumes'], 1) or \
        fl['state'] != 'confirmed':
    sys.exit(1)
# Issue 5: < 2 chunks re-sent per interruption per device.
print(f"E2E resent_chunks_per_interruption={rs / max(ru, 1) / chunk:.2f} "
      f"worst_device_chunks={worst[0] / chunk:.2f} chunk={chunk}")
sys.exit(0 if ru > 0 and rs < 2 * chunk * ru else 1)
PYEOF
    [ $? -eq 0 ] || fail "2 or more chunks re-sent per interruption"
    stop_tmld
    echo "E2E OK"
    exit 0
fi

# ---- S1: a bundle from an untrusted key never gets stored -------------------
ctl sign "$DIR/kws7.bin" --key "$DIR/rogue.key" --name kws --version 70 \
    --hw devsim --input-shape 16 --classes 4 -o "$DIR/rogue.tmlb" >/dev/null
set +e
ctl deploy "$DIR/rogue.tmlb" --group turbines >"$DIR/rogue.out" 2>&1
rc=$?
set -e
[ $rc -ne 0 ] || fail "a bundle signed by an untrusted key was deployed"
grep -q "untrusted key" "$DIR/rogue.out" || fail "no reason for the rogue bundle: $(cat "$DIR/rogue.out")"
echo "E2E s1_untrusted_refused=1 exit=$rc"

# ---- S8 + dry run: a model needing more arena than the devices have --------
ctl sign "$DIR/kws7.bin" --key "$DIR/fleet.key" --name kws --version 6 \
    --hw devsim --input-shape 16 --classes 4 --arena 1048576 \
    -o "$DIR/big.tmlb" >/dev/null
ctl deploy "$DIR/big.tmlb" --group turbines --dry-run >"$DIR/dry.out" 2>&1 ||
    fail "dry run failed: $(cat "$DIR/dry.out")"
excl=$(grep -c "excluded .*arena too small" "$DIR/dry.out" || true)
[ "$excl" = "$N" ] || fail "dry run excluded $excl of $N: $(cat "$DIR/dry.out")"
grep -q "Dry run: nothing was changed" "$DIR/dry.out" || fail "no dry-run notice"
n_roll=$(raw rollout.list | jq_py "len(d['rollouts'])")
[ "$n_roll" = 0 ] || fail "a dry run created a rollout"
echo "E2E s8_dry_run_excluded=$excl rollouts_created=$n_roll"

# ---- 1. good model through all waves ------------------------------------------
t0=$(date +%s.%N)
set +e
ctl deploy "$DIR/kws-7.tmlb" --group turbines --waves 10,50,100 \
    --min-devices 2 --min-inferences 150 --watch >"$DIR/good.out" 2>&1
rc=$?
set -e
t1=$(date +%s.%N)
[ $rc -eq 0 ] || fail "good rollout did not finish: $(tail -5 "$DIR/good.out")"
ctl --json rollout status 1 >"$DIR/good.json"
state=$(jq_py "d['rollout']['state']" <"$DIR/good.json")
confirmed=$(jq_py "d['rollout']['counts'].get('confirmed', 0)" <"$DIR/good.json")
bytes=$(jq_py "int(d['rollout']['bytes_sent'])" <"$DIR/good.json")
waves=$(jq_py "sum(1 for w in d['rollout']['waves'] if w['state']=='passed')" <"$DIR/good.json")
[ "$state" = done ] || fail "good rollout state $state"
[ "$confirmed" = "$N" ] || fail "good rollout: $confirmed of $N confirmed"
[ "$waves" = 3 ] || fail "good rollout: $waves waves passed"
# The image on every simulated flash slot matches the model.
want=$(sha256sum "$DIR/kws7.bin" | cut -d' ' -f1)
match=0
for d in "$DIR"/devs/*/; do
    for s in "$d"slot0.bin "$d"slot1.bin; do
        [ -f "$s" ] || continue
        if [ "$(head -c 65536 "$s" | sha256sum | cut -d' ' -f1)" = "$want" ]; then
            match=$((match + 1))
            break
        fi
    done
done
[ "$match" = "$N" ] || fail "image hash matches on $match of $N devices"
# The registry follows: each device re-sends hello after the confirm, so
# `tmlctl devices --model kws@7` lists every one (polled: the hellos race
# the rollout's last status).
reg=0
for _ in $(seq 1 50); do
    reg=$(ctl --json devices --model kws@7 --limit 1000 | jq_py "len(d['devices'])")
    [ "$reg" = "$N" ] && break
    sleep 0.2
done
[ "$reg" = "$N" ] || fail "registry shows kws@7 on $reg of $N devices"
wall=$($PY -c "print(f'{$t1-$t0:.1f}')")
echo "E2E good_wall_s=$wall devices=$N confirmed=$confirmed waves=$waves bytes_per_device=$((bytes / N)) image=65536 hash_ok=$match"

# ---- 2. bad model stopped by the health gate at the canary wave ------------
t0=$(date +%s.%N)
set +e
ctl deploy "$DIR/kws8.bin" --key "$DIR/fleet.key" --name kws --version 8 \
    --hw devsim --input-shape 16 --classes 4 --rollback-from "$DIR/kws7.bin" \
    --group turbines --waves 10,50,100 --min-devices 2 --min-inferences 150 \
    --watch >"$DIR/bad.out" 2>&1
rc=$?
set -e
t1=$(date +%s.%N)
[ $rc -eq 4 ] || fail "bad rollout: watch exit $rc (want 4 = paused): $(tail -5 "$DIR/bad.out")"
ctl rollout status 2 >"$DIR/bad.txt"
grep -q "failed its health gate" "$DIR/bad.txt" || fail "no gate reason: $(cat "$DIR/bad.txt")"
grep -q "low-confidence" "$DIR/bad.txt" || fail "reason does not name the metric"
# Canaries get the rollback; nobody after the canary wave ever got v8.
for _ in $(seq 1 100); do
    ctl --json rollout status 2 --devices >"$DIR/bad.json"
    rb=$(jq_py "sum(1 for x in d['rollout']['device_states'] if x['state']=='rolled-back')" <"$DIR/bad.json")
    canary=$(jq_py "d['rollout']['waves'][0]['devices']" <"$DIR/bad.json")
    [ "$rb" = "$canary" ] && break
    sleep 0.2
done
[ "$rb" = "$canary" ] || fail "rolled back $rb of $canary canaries"
later=$(jq_py "sum(1 for x in d['rollout']['device_states'] if x['wave']>1 and x['state']!='pending')" <"$DIR/bad.json")
[ "$later" = 0 ] || fail "$later devices of later waves were touched"
wall=$($PY -c "print(f'{$t1-$t0:.1f}')")
ratio=$(grep -o 'low-confidence rate [^;]*' "$DIR/bad.txt" | head -1)
echo "E2E bad_wall_s=$wall stopped_at_wave=1 canaries=$canary rolled_back=$rb later_waves_touched=$later"
echo "E2E bad_reason=\"$ratio\""
ctl rollout abort 2 >/dev/null

# ---- 3. the application rejects the new model on the canaries ---------------
# Every canary reverts (failure threshold 10 %): the rollout pauses at wave 1
# with the reason, nobody else is offered v10, the old model stays active.
head -c 65536 /dev/urandom >"$DIR/kws10.bin"
set +e
ctl deploy "$DIR/kws10.bin" --key "$DIR/fleet.key" --name kws --version 10 \
    --hw devsim --input-shape 16 --classes 4 --group turbines \
    --waves 10,100 --min-devices 2 --min-inferences 150 \
    --watch >"$DIR/reject.out" 2>&1
rc=$?
set -e
ctl rollout status 3 >"$DIR/reject.txt"
[ $rc -eq 4 ] || fail "rejected model: watch exit $rc: $(cat "$DIR/reject.txt")"
# It pauses at the first revert (1 of 2 is past 10 %); the transfer in
# flight still finishes.
grep -q -E "wave 1: [12] of 2 devices failed .*self-test failed" "$DIR/reject.txt" ||
    fail "no threshold reason: $(cat "$DIR/reject.txt")"
ctl --json rollout status 3 --devices >"$DIR/reject.json"
reverted=$(jq_py "sum(1 for x in d['rollout']['device_states'] if x['state']=='reverted')" <"$DIR/reject.json")
later=$(jq_py "sum(1 for x in d['rollout']['device_states'] if x['wave']>1 and x['state']!='pending')" <"$DIR/reject.json")
[ "$reverted" -ge 1 ] && [ "$later" = 0 ] || fail "reverted $reverted, later waves touched $later"
echo "E2E reject_paused_at_wave=1 reverted=$reverted later_waves_touched=$later reason=\"$(grep -o 'wave 1: [^,]*' "$DIR/reject.txt" | head -1)\""
ctl rollout abort 3 >/dev/null

# tmld stops cleanly (under ASan/UBSan: without a report) with rollouts in
# memory and artifacts cached.
stop_tmld
echo "E2E OK"
