#!/bin/bash
# systemd_real_driver.sh: runs INSIDE a throw-away systemd-nspawn container
# (booted by test_systemd_real.c) as the only job of its boot target, with
# the real systemd as PID 1 of the container. It drives tmld.service the way
# an operator does and writes KEY=VALUE lines to /results/out.txt, the
# journal of tmld to /results/journal.txt, then powers the container off.
#
# Environment (from the unit): TML_BIN (build tree), TML_SRC (source tree),
# both bound read-only outside /tmp (the unit has PrivateTmp=yes).
# Every wait is bounded; nothing here outlives the container.
set -u
out=/results/out.txt
: >"$out"
r() { echo "$1=$2" >>"$out"; }
now_ms() { date +%s%3N; }
show() { systemctl show tmld -p "$1" --value; }
tmlctl=$TML_BIN/tools/tmlctl/tmlctl

# shellcheck disable=SC2317 # called through the EXIT trap
finish() {
    journalctl -u tmld -o short-monotonic --no-pager >/results/journal.txt 2>&1
    journalctl -b -o short-monotonic --no-pager >/results/boot-journal.txt 2>&1
    r finished 1
    systemctl --no-block poweroff
}
trap finish EXIT

# ---- the setup an operator does after installing the package -------------
systemd-sysusers
systemd-tmpfiles --create
r user "$(getent passwd tmld | cut -d: -f1,6,7)"
mkdir -p /etc/tmld/pki /etc/tmld-broker
"$tmlctl" pki init --dir /etc/tmld/pki --host 127.0.0.1 >/dev/null 2>&1
"$tmlctl" broker-config --pki /etc/tmld/pki --out /etc/tmld-broker --port 8883 \
    --address 127.0.0.1 --log-file /var/log/tmld-broker.log --run-as root >/dev/null 2>&1
# tmld reads its client key as user tmld (docs/operations.md).
chown tmld:tmld /etc/tmld/pki/tmld.key
cat >/etc/tmld/tmld.conf <<EOF
[mqtt]
host = 127.0.0.1
port = 8883
[metrics]
textfile = /var/lib/tmld/tmld.prom
interval = 1s
EOF
chown root:tmld /etc/tmld /etc/tmld/tmld.conf
chmod 0750 /etc/tmld
chmod 0640 /etc/tmld/tmld.conf
# The distribution's mosquitto.service has no config in this empty /etc: mask
# it (tmld only Wants= it) and run the fleet broker as its own unit.
systemctl mask --now mosquitto.service >/dev/null 2>&1
# A container with a private network never becomes "online": without this,
# After=network-online.target holds the start for wait-online's 2 minutes.
systemctl mask --now systemd-networkd-wait-online.service >/dev/null 2>&1
systemd-run --unit=tmlbroker --quiet mosquitto -c /etc/tmld-broker/mosquitto.conf
for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/8883) 2>/dev/null && break
    sleep 0.05
done

# ---- start: Type=notify returns once tmld sent READY=1 --------------------
t0=$(now_ms)
timeout 60 systemctl start tmld
r start_rc $?
r start_ms $(($(now_ms) - t0))
r active "$(systemctl is-active tmld)"
pid1=$(show MainPID)
r mainpid_user "$(ps -o user= -p "$pid1" 2>/dev/null | tr -d ' ')"
r status_text "$(show StatusText)"
cp "/proc/$pid1/status" /results/proc-status.txt 2>/dev/null
r sandbox_nnp "$(grep -c '^NoNewPrivs:[[:space:]]*1' "/proc/$pid1/status")"
# (No awk here: the container's /etc, and so /etc/alternatives, is empty.)
r sandbox_seccomp "$(sed -n 's/^Seccomp:[[:space:]]*//p' "/proc/$pid1/status")"
r sandbox_capeff "$(sed -n 's/^CapEff:[[:space:]]*//p' "/proc/$pid1/status")"
r socket_mode "$(stat -c '%a %U %G' /run/tmld/tmld.sock 2>/dev/null)"
r state_dir "$(stat -c '%a %U' /var/lib/tmld 2>/dev/null)"

# ---- devices through the sandboxed daemon (a short Y2) --------------------
if [ -x "$TML_BIN/tools/devsim/tml-devsim" ]; then
    timeout 60 "$TML_BIN/tools/devsim/tml-devsim" --port 8883 \
        --cafile /etc/tmld/pki/ca.crt --ca-cert /etc/tmld/pki/ca.crt \
        --ca-key /etc/tmld/pki/ca.key --state-dir /var/tmp/devsim \
        --groups turbines:10 --rate 10 --summary-period 1 --duration 4 \
        --drain 10 --status 0 --json-summary /var/tmp/devsim.json >/results/devsim.log 2>&1
    r devsim_rc $?
    r devsim_acked "$(/usr/bin/python3 -c '
import json; d = json.load(open("/var/tmp/devsim.json"))
t = d["totals"]; print("%d/%d" % (t["tele_acked"], t["tele_sent"]))' 2>/dev/null)"
fi
sleep 1.5
cp /var/tmp/devsim.json /results/ 2>/dev/null
ls -la /var/lib/tmld >/results/statedir.txt 2>&1
r metrics_devices "$(sed -n 's/^tmld_devices_total //p' /var/lib/tmld/tmld.prom 2>/dev/null)"
r metrics_tele "$(sed -n 's/^tmld_ingest_tele_records_total //p' /var/lib/tmld/tmld.prom 2>/dev/null)"

# ---- who may use the control socket (group tmld only) ---------------------
useradd -m -G tmld alice 2>/dev/null
useradd -m bob 2>/dev/null
# setpriv, not runuser/su: there is no PAM configuration in this /etc.
setpriv --reuid="$(id -u alice)" --regid="$(id -g alice)" --init-groups -- "$tmlctl" --socket /run/tmld/tmld.sock status >/results/ctl-alice.txt 2>&1
r ctl_alice $?
setpriv --reuid="$(id -u bob)" --regid="$(id -g bob)" --init-groups -- "$tmlctl" --socket /run/tmld/tmld.sock status >/results/ctl-bob.txt 2>&1
r ctl_bob $?

# ---- reload: SIGHUP, same process -----------------------------------------
timeout 20 systemctl reload tmld
r reload_rc $?
r reload_same_pid "$([ "$(show MainPID)" = "$pid1" ] && echo 1 || echo 0)"

# ---- R14: a stalled loop is killed by the watchdog and restarted ----------
mkdir -p /run/systemd/system/tmld.service.d
printf '[Service]\nWatchdogSec=2s\nRestartSec=500ms\n' \
    >/run/systemd/system/tmld.service.d/50-test.conf
systemctl daemon-reload
timeout 60 systemctl restart tmld
pid2=$(show MainPID)
n0=$(show NRestarts)
kill -STOP "$pid2"
t0=$(now_ms)
pid3=$pid2
for _ in $(seq 1 200); do
    pid3=$(show MainPID)
    [ "$(show NRestarts)" != "$n0" ] && [ "$pid3" != "$pid2" ] && [ "$pid3" != 0 ] &&
        [ "$(systemctl is-active tmld)" = active ] && break
    sleep 0.1
done
r watchdog_restart_ms $(($(now_ms) - t0))
r watchdog_new_pid "$([ "$pid3" != "$pid2" ] && [ "$pid3" != 0 ] && echo 1 || echo 0)"
r watchdog_active "$(systemctl is-active tmld)"
r watchdog_logged "$(journalctl -u tmld -o cat --no-pager | grep -c 'Watchdog timeout')"

# ---- clean stop ------------------------------------------------------------
timeout 60 systemctl stop tmld
r stop_result "$(show Result)"
r stop_status "$(show ExecMainStatus)"
r runtime_dir_removed "$([ -e /run/tmld ] && echo 0 || echo 1)"

# ---- syscall filter: nothing refused during the run (Y2, short) -----------
r eperm_lines "$(journalctl -u tmld -o cat --no-pager | grep -ciE 'operation not permitted|EPERM|SIGSYS|bad system call')"

# ---- Y3: a daemon that fails at start stops after StartLimitBurst ---------
printf '[Service]\nRestartSec=100ms\nExecStart=\nExecStart=%s --config /etc/tmld/missing.conf\n' \
    "$TML_BIN/daemon/tmld" >/run/systemd/system/tmld.service.d/60-broken.conf
systemctl daemon-reload
systemctl reset-failed tmld 2>/dev/null
timeout 30 systemctl start tmld >/dev/null 2>&1
for _ in $(seq 1 150); do
    [ "$(show Result)" = start-limit-hit ] && break
    sleep 0.1
done
r storm_result "$(show Result)"
r storm_restarts "$(show NRestarts)"
r storm_state "$(systemctl is-active tmld)"
r storm_gave_up "$(journalctl -u tmld -o cat --no-pager | grep -c 'Start request repeated too quickly')"
exit 0
