#!/usr/bin/python3
"""Independent cross-check of proto/ with Python's cbor2 (Debian
python3-cbor2). Run by the proto_interop_python test:

    interop.py DIR

DIR holds <name>.cbor files written by the C samples (tests/proto/samples.c)
and sig_structure.bin, the C Sig_structure of cose-sign1.cbor. This script
  1. decodes every file with cbor2 and compares it with the values below,
     written by hand from PROTOCOL.md (key numbers, types, units);
  2. checks that cbor2's canonical encoding of those values is byte-identical
     (shortest-form integers, ascending keys);
  3. rebuilds the COSE Sig_structure (RFC 9052 4.4) with cbor2 and compares;
  4. validates every message against the CDDL of proto/PROTOCOL.md (parsed
     by cddl_check.py), and checks that the CDDL rejects broken variants;
  5. writes py-<name>.cbor: the same values, keys in reverse order, for the
     C side to decode;
  6. writes py-v1-<name>.cbor (canonical, as version 1 agents sent it) and
     py-v1r-<name>.cbor (keys reversed) for the tele samples: the same
     numbers in tele's version 1 map form, checked against the CDDL, for
     the C side to decode and re-encode as version 2.
Exit status 0 on success; prints every mismatch.
"""
import os
import sys

import cbor2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cddl_check  # noqa: E402

PROTOCOL_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "..", "..", "proto", "PROTOCOL.md")
RULE = {"hello": "hello", "state": "state", "tele": "tele",
        "sample": "sample", "ota_up": "ota-up", "ack": "ack",
        "ota_down": "ota-down", "cmd": "cmd", "manifest": "manifest",
        "cose": "COSE_Sign1"}

# Variants the CDDL must reject (so the check is not vacuous).
BROKEN = [
    ("hello", lambda m: m.pop(2)),                      # hw missing
    ("hello", lambda m: m.__setitem__(5, 2)),           # slot 2
    ("hello", lambda m: m.__setitem__(2, "x" * 33)),    # hw too long
    ("tele", lambda m: m.pop(1)),                       # summary missing
    ("tele", lambda m: m.__setitem__(1, 7)),            # summary not bstr
    ("tele", lambda m: m.__setitem__(-1, 0)),           # negative key
    ("hello", lambda m: m.__setitem__(16, 0)),          # tele_next 0
    ("hello", lambda m: m.__setitem__(18, 0)),          # boot_id 0
    ("hello", lambda m: m.__setitem__(19, 0)),          # epoch 0
    ("tele", lambda m: m.__setitem__(2, 0)),            # epoch 0
    ("sample", lambda m: m.__setitem__(16, 0)),         # epoch 0
    ("sample", lambda m: m.__setitem__(6, 10001)),      # confidence
    ("sample", lambda m: m.__setitem__(14, b"")),       # empty chunk
    ("ota_up", lambda m: m.__setitem__(1, 3)),          # kind 3
    ("ota_down", lambda m: m.pop(3)),                   # offer w/o manifest
    ("cmd", lambda m: m.__setitem__(7, 1000001)),       # audit ppm
    ("manifest", lambda m: m.__setitem__(5, b"x" * 31)),  # sha256 size
    ("state", lambda m: m.__setitem__(0, 2)),           # version 2
    ("tele", lambda m: m.__setitem__(0, 1)),            # packed as v1
    ("tele", lambda m: m.__setitem__(0, 3)),            # version 3
]

# Broken version 1 tele maps (from tele-v1-max): rule tele must refuse them.
BROKEN_V1 = [
    lambda m: m.pop(13),                                # lat_max missing
    lambda m: m.__setitem__(1, 0),                      # seq 0
    lambda m: m.__setitem__(18, 0),                     # lw 0
    lambda m: m.__setitem__(2, 2**32),                  # u32 overflow
    lambda m: m.__setitem__(14, [1] * 33),              # 33 classes
    lambda m: m.__setitem__(15, [1] * 17),              # 17 bins
    lambda m: m.__setitem__(17, {1: 1, 2: 2, 4: 4}),    # temp missing
    lambda m: m.__setitem__(17, {1: 1, 2: 2, 3: 2**31, 4: 4}),  # temp i32
    lambda m: m.__setitem__(-1, 0),                     # negative key
    lambda m: m.__setitem__(0, 3),                      # version 3
]

U32 = 0xFFFFFFFF
NAME32 = "abcdefghijklmnopqrstuvwxyz012345"
CHUNK = bytes((i * 7 + 3) & 0xFF for i in range(4096))

MANIFEST_MIN = {0: 1, 1: "kws", 2: 1, 3: "nrf52840", 4: 1, 5: b"\xab" * 32,
                6: 0, 7: 0, 8: 1, 9: 0, 10: 0, 11: 2, 12: [1], 13: 1,
                14: 0, 15: 0, 16: 0}
SIG = bytes(range(1, 65))
KID = b"opkey-01"


def leb(v):
    """Unsigned LEB128, shortest form."""
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def hist(bins):
    """PROTOCOL.md up/tele: header n | lo << 5 | k << 10, then bins lo..lo+k-1
    (the window from the first to the last non-zero bin)."""
    nz = [i for i, c in enumerate(bins) if c]
    lo, k = (nz[0], nz[-1] - nz[0] + 1) if nz else (0, 0)
    return leb(len(bins) | lo << 5 | k << 10) + b"".join(
        leb(c) for c in bins[lo:lo + k])


def tele_summary(seq, model_version=0, period_s=0, age_s=0, n_inferences=0,
                 n_low_conf=0, n_flagged=0, n_errors=0, n_folded=0,
                 n_dropped=0, lat=(0, 0, 0), classes=(), conf=(), lat_hist=(),
                 health=None, lw=0):
    """The packed summary of up/tele, written from PROTOCOL.md."""
    flags = ((1 if health else 0) | (2 if lw else 0) | (4 if age_s else 0)
             | (8 if n_flagged else 0) | (16 if n_errors else 0)
             | (32 if n_folded else 0) | (64 if n_dropped else 0))
    out = leb(flags) + leb(seq) + leb(model_version) + leb(period_s)
    out += leb(age_s) if age_s else b""
    out += leb(n_inferences) + leb(n_low_conf)
    for v in (n_flagged, n_errors, n_folded, n_dropped):
        out += leb(v) if v else b""
    out += b"".join(leb(v) for v in lat)
    out += leb(seq - lw) if lw else b""
    out += leb(len(classes)) + b"".join(leb(c) for c in classes)
    out += hist(list(conf)) + hist(list(lat_hist))
    if health:
        free_ram, supply_mv, temp_dc, uptime_s = health
        zigzag = -2 * temp_dc - 1 if temp_dc < 0 else 2 * temp_dc
        out += leb(free_ram) + leb(supply_mv) + leb(zigzag) + leb(uptime_s)
    return out


def tele_v1(seq, model_version=0, period_s=0, age_s=0, n_inferences=0,
            n_low_conf=0, n_flagged=0, n_errors=0, n_folded=0, n_dropped=0,
            lat=(0, 0, 0), classes=(), conf=(), lat_hist=(), health=None,
            lw=0):
    """The same summary in tele's version 1 map form, written from
    PROTOCOL.md "up/tele, version 1" (what agents before the packed form
    send)."""
    m = {0: 1, 1: seq, 2: model_version, 3: period_s, 4: age_s,
         5: n_inferences, 6: n_low_conf, 7: n_flagged, 8: n_errors,
         9: n_folded, 10: n_dropped, 11: lat[0], 12: lat[1], 13: lat[2]}
    for key, v in ((14, classes), (15, conf), (16, lat_hist)):
        if v:
            m[key] = list(v)
    if health:
        m[17] = dict(zip((1, 2, 3, 4), health))
    if lw:
        m[18] = lw
    return m


TELE_MIN = {"seq": 1}
TELE_MAX = {"seq": U32, "model_version": U32, "period_s": U32,
            "age_s": U32, "n_inferences": U32, "n_low_conf": U32 - 1,
            "n_flagged": 0x10000, "n_errors": 0xFFFF, "n_folded": 0x100,
            "n_dropped": 24, "lat": (23, U32, U32),
            "classes": [U32 - i for i in range(32)],
            "conf": [1 << (2 * i) for i in range(16)],
            "lat_hist": [U32] * 16, "health": (U32, 3300, -2**31, U32),
            "lw": U32}
TELE_V1 = {"tele-min": tele_v1(**TELE_MIN), "tele-max": tele_v1(**TELE_MAX)}


def cose(payload):
    prot = cbor2.dumps({1: -7, 4: KID})
    return [prot, {}, payload, SIG]


EXPECTED = {
    "hello-min": {0: 1, 1: 0, 2: "nrf52840", 3: "", 4: 0, 5: 0, 6: 0, 7: 0,
                  8: 1, 9: 0, 10: 0, 11: 0, 12: 0, 13: 0},
    "hello-max": {0: 1, 1: U32, 2: NAME32, 3: NAME32, 4: U32, 5: 1, 6: U32,
                  7: U32, 8: 4096, 9: U32, 10: 9, 11: 21, 12: U32, 13: U32,
                  14: [NAME32[i:] for i in range(8)], 15: U32, 16: U32,
                  17: U32, 18: U32, 19: U32},
    "state-online": {0: 1, 1: True},
    "tele-min": {0: 2, 1: tele_summary(**TELE_MIN)},
    "tele-max": {0: 2, 1: tele_summary(**TELE_MAX), 2: U32},
    "sample-min": {0: 1, 1: 1, 2: 0, 3: 0, 4: 1, 5: 0, 6: 0, 8: 1, 9: [1],
                   10: 0, 11: 0, 12: 1, 13: 0, 14: CHUNK[:1]},
    "sample-max": {0: 1, 1: U32, 2: U32, 3: U32, 4: 3, 5: U32, 6: 10000,
                   7: 0, 8: 5, 9: [U32] * 4, 10: 16000, 11: U32, 12: U32,
                   13: U32 - 4096, 14: CHUNK, 15: U32, 16: U32},
    "ota_up-request": {0: 1, 1: 1, 2: U32, 3: U32, 4: U32, 5: U32},
    "ota_up-status": {0: 1, 1: 2, 2: U32, 3: U32, 4: U32, 6: 9, 7: 21,
                      8: U32},
    "ack-both": {0: 1, 1: U32, 2: U32, 3: U32},
    "ota_down-offer": {0: 1, 1: 1, 2: U32,
                       3: cbor2.dumps(cose(cbor2.dumps(MANIFEST_MIN)))},
    "ota_down-chunk": {0: 1, 1: 2, 2: U32, 4: U32, 5: CHUNK},
    "cmd-set": {0: 1, 1: 1, 2: U32, 3: U32, 4: 0, 5: 1, 6: 10000,
                7: 1000000},
    "manifest-max": {0: 1, 1: NAME32, 2: U32, 3: NAME32, 4: U32,
                     5: b"\xab" * 32, 6: 1700000000, 7: U32,
                     8: U32 - 2 * 1004, 9: U32, 10: U32, 11: 5,
                     12: [U32] * 4, 13: U32, 14: 2, 15: 1000, 16: 10000,
                     17: True, 18: [bytes([ord("a") + i]) * 16
                                    for i in range(4)]},
    "cose-sign1": cose(cbor2.dumps(MANIFEST_MIN)),
}


def reverse_keys(v):
    if isinstance(v, dict):
        return {k: reverse_keys(v[k]) for k in sorted(v, reverse=True)}
    if isinstance(v, list):
        return [reverse_keys(x) for x in v]
    return v


def main():
    d = sys.argv[1]
    bad = 0
    with open(PROTOCOL_MD, encoding="utf-8") as f:
        rules = cddl_check.from_markdown(f.read())
    for name, want in EXPECTED.items():
        path = os.path.join(d, name + ".cbor")
        with open(path, "rb") as f:
            raw = f.read()
        got = cbor2.loads(raw)
        if isinstance(got, cbor2.CBORTag):
            got = got.value
        if got != want:
            print(f"{name}: decoded values differ:\n  got  {got}\n  want {want}")
            bad += 1
        if cbor2.dumps(want, canonical=True) != raw:
            print(f"{name}: bytes are not cbor2's canonical encoding")
            bad += 1
        rule = RULE[name.split("-")[0]]
        try:
            cddl_check.check(rules, ("ref", rule), cbor2.loads(raw))
        except cddl_check.Invalid as e:
            print(f"{name}: does not match CDDL rule {rule}: {e}")
            bad += 1
        with open(os.path.join(d, "py-" + name + ".cbor"), "wb") as f:
            f.write(cbor2.dumps(reverse_keys(want)))
    # Sig_structure (RFC 9052 4.4) of the C-encoded COSE_Sign1.
    with open(os.path.join(d, "cose-sign1.cbor"), "rb") as f:
        msg = cbor2.loads(f.read())
    if isinstance(msg, cbor2.CBORTag):
        msg = msg.value
    prot, _unprot, payload, _sig = msg
    sig_structure = cbor2.dumps(["Signature1", prot, b"", payload])
    with open(os.path.join(d, "sig_structure.bin"), "rb") as f:
        c_bytes = f.read()
    if sig_structure != c_bytes:
        print(f"Sig_structure differs:\n  py {sig_structure.hex()}\n"
              f"  c  {c_bytes.hex()}")
        bad += 1
    if cbor2.loads(prot) != {1: -7, 4: KID}:
        print("protected header differs")
        bad += 1
    for kind, edit in BROKEN:
        base = next(n for n in EXPECTED if n.startswith(kind + "-"))
        m = dict(EXPECTED[base])
        edit(m)
        if cddl_check.matches(rules, ("ref", RULE[kind]), m):
            print(f"CDDL accepts a broken {kind}: {m}")
            bad += 1
    # tele's version 1 map form: valid under rule tele (and only under its
    # tele-v1 branch), broken variants refused; files for the C side.
    for name, v1 in TELE_V1.items():
        for rule, want in (("tele", True), ("tele-v1", True),
                           ("tele-v2", False)):
            if cddl_check.matches(rules, ("ref", rule), v1) != want:
                print(f"v1 {name}: CDDL rule {rule} gives {not want}")
                bad += 1
        if cddl_check.matches(rules, ("ref", "tele-v1"), EXPECTED[name]):
            print(f"{name}: version 2 matches CDDL rule tele-v1")
            bad += 1
        with open(os.path.join(d, "py-v1-" + name + ".cbor"), "wb") as f:
            f.write(cbor2.dumps(v1, canonical=True))
        with open(os.path.join(d, "py-v1r-" + name + ".cbor"), "wb") as f:
            f.write(cbor2.dumps(reverse_keys(v1)))
    for edit in BROKEN_V1:
        m = dict(TELE_V1["tele-max"])
        edit(m)
        if cddl_check.matches(rules, ("ref", "tele"), m):
            print(f"CDDL accepts a broken version 1 tele: {m}")
            bad += 1
    print(f"interop.py: {len(EXPECTED)} messages and {len(TELE_V1)} version 1 "
          f"teles checked against cbor2 and {len(rules)} CDDL rules, "
          f"{len(BROKEN) + len(BROKEN_V1)} broken variants, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
