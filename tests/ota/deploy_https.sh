#!/usr/bin/env bash
# deploy_https.sh: `tmlctl deploy https://...` (issue 8, last Build
# bullet) against tests/ota/bundle_server.py on 127.0.0.1, with a real TLS
# broker, tmld and one tml-devsim device so that a fetched bundle goes
# through tmld's signature check and deploy plan (--dry-run).
#
#   deploy_https.sh DIR
#
# (a) a valid signed bundle with --cacert: exit 0, the plan is printed;
#     the same URL without --cacert (system CAs) is refused (6), http://
#     is refused (2).
# (b) oversize: Content-Length of 64 MiB (exit 7, cut by the cap before the
#     body is read) and a 64 MiB body without Content-Length (exit 7, the
#     write callback stops it): the server wrote far less than 64 MiB.
# (c) a server whose certificate comes from another CA: exit 6 (S-class:
#     TLS verification on).
# (d) 404: exit 7, the message names the URL and the status.
# (e) a bundle with one signature bit flipped: exit 6, refused by tmld's
#     signature check (S1-style).
# Prints "HTTPS ok ..." lines; exits non-zero on the first failed check.
# Every process it starts is killed by PID on exit.
set -euo pipefail

DIR=$1
S=${TML_SOURCE_DIR:?}
# shellcheck source=tests/lib/fleetrig.sh
. "$S/tests/lib/fleetrig.sh"
fr_init "$DIR" "${TML_BINARY_DIR:?}" "$S"
SRV=$S/tests/ota/bundle_server.py

fail() {
    echo "HTTPS FAIL: $*" >&2
    echo "---- tmld log (tail) ----" >&2
    tail -n 20 "$DIR/tmld.log" >&2 || true
    exit 1
}

fr_require
ctl() { "$TMLCTL" --socket "$DIR/tmld.sock" "$@"; }

mkdir -p "$DIR/www"
fr_broker
fr_keygen fleet
fr_tmld_conf info
fr_start_tmld
fr_devsim 1 1 turbines --rate 5 --summary-period 1 --duration 100 \
    --drain 1 --status 0

# Certificates, bundles, servers (one with the right CA, one not).
$PY "$SRV" --dir "$DIR/www" --gen-certs
head -c 65536 /dev/urandom >"$DIR/kws7.bin"
ctl sign "$DIR/kws7.bin" --key "$DIR/fleet.key" --name kws --version 7 \
    --hw devsim --input-shape 16 --classes 4 -o "$DIR/www/kws-7.tmlb" \
    >/dev/null
$PY - "$DIR/www/kws-7.tmlb" "$DIR/www" <<'PYEOF'
import sys, cbor2
raw = open(sys.argv[1], "rb").read()
# One bit of the COSE_Sign1 signature flipped: still a well-formed bundle
# (tmlctl passes it on), refused by tmld's signature check.
cose = cbor2.loads(raw)[1]
sig = cbor2.loads(cose)
sig = sig.value[3] if hasattr(sig, "value") else sig[3]
i = raw.find(sig)
assert len(sig) == 64 and i > 0
b = bytearray(raw)
b[i + 10] ^= 0x01
open(sys.argv[2] + "/badsig.tmlb", "wb").write(bytes(b))
# One image byte flipped: the manifest's hash no longer matches.
b = bytearray(raw)
b[len(b) - 1000] ^= 0x01
open(sys.argv[2] + "/tampered.tmlb", "wb").write(bytes(b))
PYEOF
$PY "$SRV" --dir "$DIR/www" --port-file "$DIR/port" &
FR_PIDS+=("$!")
$PY "$SRV" --dir "$DIR/www" --port-file "$DIR/wrong-port" --wrong-cert &
FR_PIDS+=("$!")
for _ in $(seq 1 100); do
    [ -f "$DIR/port" ] && [ -f "$DIR/wrong-port" ] && break
    sleep 0.1
done
[ -f "$DIR/port" ] && [ -f "$DIR/wrong-port" ] || fail "servers did not start"
P=$(cat "$DIR/port")
WP=$(cat "$DIR/wrong-port")
U=https://127.0.0.1:$P
CA=$DIR/www/ca.pem

# Wait for tmld and the device.
for _ in $(seq 1 150); do
    ctl devices --group turbines 2>/dev/null | grep -q . && \
        ctl devices --group turbines --json 2>/dev/null | grep -q '"id"' && break
    sleep 0.2
done

# expect RC NAME PATTERN CMD...: runs CMD, checks its exit code and that
# its stderr+stdout match PATTERN.
expect() {
    local want=$1 name=$2 pat=$3 rc=0
    shift 3
    "$@" >"$DIR/out.$name" 2>&1 || rc=$?
    if [ "$rc" != "$want" ]; then
        cat "$DIR/out.$name" >&2
        fail "$name: exit $rc, want $want"
    fi
    grep -q -E "$pat" "$DIR/out.$name" || {
        cat "$DIR/out.$name" >&2
        fail "$name: output does not match /$pat/"
    }
    echo "HTTPS ok $name exit=$rc"
}

# (a) valid bundle, plan printed by tmld (after its signature check).
expect 0 valid "Dry run: nothing was changed" \
    ctl deploy "$U/kws-7.tmlb" --cacert "$CA" --group turbines --dry-run
grep -q "Model kws v7 for devsim, 65536 bytes" "$DIR/out.valid" ||
    fail "valid: no plan for kws v7 from tmld"
expect 6 no_cacert "TLS certificate not verified" \
    ctl deploy "$U/kws-7.tmlb" --group turbines --dry-run
expect 2 plain_http "non-https" \
    ctl deploy "http://127.0.0.1:$P/kws-7.tmlb" --group turbines --dry-run
# (b) oversize, with and without Content-Length.
expect 7 big "larger than [0-9]+ bytes" \
    ctl deploy "$U/big" --cacert "$CA" --group turbines --dry-run
expect 7 stream "larger than [0-9]+ bytes" \
    ctl deploy "$U/stream" --cacert "$CA" --group turbines --dry-run
for n in big stream; do
    for _ in $(seq 1 50); do [ -f "$DIR/www/sent-$n" ] && break; sleep 0.1; done
    sent=$(cat "$DIR/www/sent-$n" 2>/dev/null || echo missing)
    [ "$sent" != missing ] || fail "$n: server did not record its bytes"
    [ "$sent" -lt $((48 * 1024 * 1024)) ] ||
        fail "$n: server wrote $sent bytes: the client read it all"
    echo "HTTPS ok ${n}_cut sent=$sent of $((64 * 1024 * 1024))"
done
# (c) certificate from another CA.
expect 6 wrong_ca "TLS certificate not verified" \
    ctl deploy "https://127.0.0.1:$WP/kws-7.tmlb" --cacert "$CA" \
    --group turbines --dry-run
# (d) 404.
expect 7 not_found "127\.0\.0\.1:$P/nope\.tmlb: HTTP status 404" \
    ctl deploy "$U/nope.tmlb" --cacert "$CA" --group turbines --dry-run
# (e) tampered: a flipped signature bit is refused by tmld's signature
# check (the upload is not committed); a flipped image byte by the
# manifest hash before anything is sent.
expect 6 bad_signature "signature does not verify" \
    ctl deploy "$U/badsig.tmlb" --cacert "$CA" --group turbines --dry-run
expect 6 tampered "not a valid signed bundle: .*(hash|SHA)" \
    ctl deploy "$U/tampered.tmlb" --cacert "$CA" --group turbines --dry-run
echo "HTTPS all ok"
