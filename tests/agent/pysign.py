#!/usr/bin/python3
"""pysign.py OUTDIR: a model update signed by code independent of ours.

Builds an image (model + 2 golden vectors for the test port's fake model),
its manifest as a CBOR map (proto/include/tml/proto.h, struct tml_manifest
keys), and a COSE_Sign1 (RFC 9052) with ES256 from python3-cryptography,
with the Sig_structure written out by hand. Writes pub.bin (uncompressed
P-256 point), kid.bin, image.bin, manifest.cose and mutants.bin (F4:
mutated manifests with this independent implementation's verdict) into
OUTDIR.
"""
import hashlib
import os
import random
import sys

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature, encode_dss_signature)


def image():
    model = bytes((i * 29 + 5) & 0xFF for i in range(5000))
    vectors = b""
    for v in range(2):
        inp = bytes((v * 11 + j) & 0xFF for j in range(16))
        cls = inp[0] % 4            # the test port's fake model
        score = 5000 + 10 * inp[1]
        vectors += inp + cls.to_bytes(2, "little") + \
            score.to_bytes(2, "little")
    return model, vectors


def main():
    out = sys.argv[1]
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_bytes(
        serialization.Encoding.X962,
        serialization.PublicFormat.UncompressedPoint)
    kid = b"py-key-1"
    model, vectors = image()
    img = model + vectors
    manifest = {
        0: 1,                       # protocol version
        1: "py-model",              # name
        2: 42,                      # version
        3: "test-hw",               # hardware target
        4: len(img),                # size
        5: hashlib.sha256(img).digest(),
        6: 1700000000,              # created
        7: 0,                       # expires: never
        8: len(model),              # model_size
        9: 8192,                    # arena_size
        10: 0,                      # min_agent_version
        11: 2,                      # dtype i8
        12: [49, 10],               # input shape
        13: 4,                      # labels
        14: 2,                      # golden vectors
        15: 16,                     # vector input bytes
        16: 50,                     # score tolerance (bp)
    }
    payload = cbor2.dumps(manifest)
    protected = cbor2.dumps({1: -7, 4: kid})
    # RFC 9052 4.4: Sig_structure = ["Signature1", protected, external_aad,
    # payload], each a definite-length CBOR item.
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
    der = key.sign(sig_structure, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    cose = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))
    for name, data in (("pub.bin", pub), ("kid.bin", kid),
                       ("image.bin", img), ("manifest.cose", cose)):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    # F4: mutants of the manifest with this side's verdict, for the C test
    # to compare with the agent's: every single-byte flip, then random
    # multi-byte mutations. Record: u16 length (big-endian), bytes, verdict.
    rnd = random.Random(20261127)
    with open(os.path.join(out, "mutants.bin"), "wb") as f:
        def emit(m):
            f.write(len(m).to_bytes(2, "big") + m +
                    bytes([1 if verify(m, key.public_key(), kid) else 0]))
        emit(cose)
        for i in range(len(cose)):
            m = bytearray(cose)
            m[i] ^= 1 << rnd.randrange(8)
            emit(bytes(m))
        for _ in range(200):
            m = bytearray(cose)
            for _ in range(rnd.randrange(1, 5)):
                m[rnd.randrange(len(m))] = rnd.randrange(256)
            emit(bytes(m))


def verify(data, pub, kid):
    """Independent COSE_Sign1 check: tag 18 or none, 4-array, protected
    {1: -7, 4: kid}, empty unprotected map, 64-byte r||s over the
    Sig_structure."""
    try:
        item = cbor2.loads(data)
        if isinstance(item, cbor2.CBORTag):
            if item.tag != 18:
                return False
            item = item.value
        if not isinstance(item, list) or len(item) != 4:
            return False
        protected, unprotected, payload, sig = item
        if not (isinstance(protected, bytes) and isinstance(payload, bytes)
                and isinstance(sig, bytes) and unprotected == {}):
            return False
        hdr = cbor2.loads(protected)
        if hdr != {1: -7, 4: kid} or len(sig) != 64:
            return False
        if cbor2.dumps(item) != (data[1:] if data[0] == 0xD2 else data):
            return False  # not the shortest, definite encoding
        tbs = cbor2.dumps(["Signature1", protected, b"", payload])
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
        pub.verify(der, tbs, ec.ECDSA(hashes.SHA256()))
        return True
    except Exception:  # any decode or signature failure is a rejection
        return False


if __name__ == "__main__":
    main()
