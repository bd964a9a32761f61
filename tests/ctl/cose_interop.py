#!/usr/bin/python3
"""Independent COSE_Sign1 / bundle implementation for interop tests.

Uses only Debian's python3-cryptography and python3-cbor2; the Sig_structure
(RFC 9052 section 4.4) is built by hand, not by a COSE library.

  cose_interop.py verify BUNDLE PUB.pem         exit 0 valid, 1 rejected
  cose_interop.py verify-many DIR PUB.pem       prints "NAME 0|1" per file
  cose_interop.py resign BUNDLE OUT PUB_OUT     re-encodes the manifest
        (version + 1), signs it with a fresh Python-made P-256 key, writes a
        new bundle OUT and the key's public PEM PUB_OUT
  cose_interop.py sign-manifest BUNDLE OUT PUB_OUT   the same, writing only
        the bare COSE_Sign1 (what an OTA offer carries)
"""
import hashlib
import os
import sys

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature, encode_dss_signature)

ALG_ES256 = -7


def raw_point(pub):
    return pub.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def key_id(pub):
    return hashlib.sha256(raw_point(pub)).digest()[:8]


def sig_structure(protected, payload):
    # ["Signature1", body_protected, external_aad, payload]
    return cbor2.dumps(["Signature1", protected, b"", payload])


def parse_cose(data):
    obj = cbor2.loads(data)
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != 18:
            raise ValueError("wrong tag")
        obj = obj.value
    if not isinstance(obj, list) or len(obj) != 4:
        raise ValueError("not a COSE_Sign1 array")
    protected, unprotected, payload, sig = obj
    if not all(isinstance(x, bytes) for x in (protected, payload, sig)):
        raise ValueError("types")
    if not isinstance(unprotected, dict) or len(sig) != 64:
        raise ValueError("types")
    hdr = cbor2.loads(protected)
    if not isinstance(hdr, dict) or hdr.get(1) != ALG_ES256:
        raise ValueError("alg")
    return protected, hdr.get(4), payload, sig


def verify_cose(data, pub):
    protected, kid, payload, sig = parse_cose(data)
    if kid != key_id(pub):
        raise ValueError("kid")
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    pub.verify(encode_dss_signature(r, s), sig_structure(protected, payload),
               ec.ECDSA(hashes.SHA256()))
    return payload


def parse_bundle(data):
    b = cbor2.loads(data)
    if not isinstance(b, dict) or b.get(0) != 1:
        raise ValueError("not a format-1 bundle")
    if any(isinstance(k, int) and k < 0 for k in b):
        raise ValueError("unknown critical field")
    if not isinstance(b.get(1), bytes) or not isinstance(b.get(2), bytes):
        raise ValueError("missing cose/image")
    return b


def verify_bundle(data, pub):
    b = parse_bundle(data)
    payload = verify_cose(b[1], pub)
    m = cbor2.loads(payload)
    if not isinstance(m, dict):
        raise ValueError("manifest is not a map")
    image = b[2]
    # Manifest keys (proto/src/messages.c): 4 size, 5 sha256, 13 n_labels.
    if m[4] != len(image) or m[5] != hashlib.sha256(image).digest():
        raise ValueError("image size/hash")
    if 3 in b and len(b[3]) != m[13]:
        raise ValueError("labels")
    return m


def load_pub(path):
    with open(path, "rb") as f:
        return serialization.load_pem_public_key(f.read())


def check(path, pub):
    try:
        with open(path, "rb") as f:
            verify_bundle(f.read(), pub)
        return True
    except InvalidSignature:
        return False
    except Exception:  # malformed input of any kind is a rejection
        return False


def sign_cose(key, payload):
    protected = cbor2.dumps({1: ALG_ES256, 4: key_id(key.public_key())})
    der = key.sign(sig_structure(protected, payload),
                   ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))


def resign(src, out, pub_out, bare):
    with open(src, "rb") as f:
        b = parse_bundle(f.read())
    _, _, payload, _ = parse_cose(b[1])
    m = cbor2.loads(payload)
    m[2] = m[2] + 1  # version: prove we re-encoded, not copied, the map
    key = ec.generate_private_key(ec.SECP256R1())
    cose = sign_cose(key, cbor2.dumps(m))
    if bare:
        data = cose
    else:
        nb = {0: 1, 1: cose, 2: b[2]}
        if 3 in b:
            nb[3] = b[3]
        data = cbor2.dumps(nb)
    with open(out, "wb") as f:
        f.write(data)
    with open(pub_out, "wb") as f:
        f.write(key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo))


def main(argv):
    if len(argv) == 4 and argv[1] == "verify":
        return 0 if check(argv[2], load_pub(argv[3])) else 1
    if len(argv) == 4 and argv[1] == "verify-many":
        pub = load_pub(argv[3])
        for name in sorted(os.listdir(argv[2])):
            ok = check(os.path.join(argv[2], name), pub)
            print(name, 1 if ok else 0)
        return 0
    if len(argv) == 5 and argv[1] in ("resign", "sign-manifest"):
        resign(argv[2], argv[3], argv[4], argv[1] == "sign-manifest")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
