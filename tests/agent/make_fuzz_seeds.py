#!/usr/bin/python3
"""make_fuzz_seeds.py DIR: writes the seed corpus of agent_fuzz_message
(records [sel][len_hi][len_lo][payload], see fuzz_message.c): an ack, cmds,
foreign topics, an offer, and a whole install in 1024- and 333-byte chunks.
The offer's signature is zero bytes: the fuzz port accepts any."""
import cbor2, hashlib, struct, sys, os
out = sys.argv[1]
def rec(sel, payload): return bytes([sel, len(payload) >> 8, len(payload) & 255]) + payload
def topic_rec(topic, payload):
    t = topic.encode(); return rec(3, bytes([len(t)]) + t + payload)
ack = cbor2.dumps({0: 1, 1: 3, 2: 1})
cmd = cbor2.dumps({0: 1, 1: 1, 2: 9, 3: 10, 6: 4000})
ping = cbor2.dumps({0: 1, 1: 2, 2: 1})
model = bytes((i * 7) & 255 for i in range(3000))
vec = bytes(range(16)); vecs = vec + bytes([0, 0]) + (5000).to_bytes(2, "little")
img = model + vecs
man = {0: 1, 1: "m", 2: 3, 3: "test-hw", 4: len(img), 5: hashlib.sha256(img).digest(),
       6: 1700000000, 7: 0, 8: len(model), 9: 1024, 10: 0, 11: 1, 12: [16], 13: 4,
       14: 1, 15: 16, 16: 100}
payload = cbor2.dumps(man)
prot = cbor2.dumps({1: -7, 4: b"k1"})
cose = cbor2.dumps(cbor2.CBORTag(18, [prot, {}, payload, bytes(64)]))
offer = cbor2.dumps({0: 1, 1: 1, 2: 77, 3: cose})
def chunk(off, data): return cbor2.dumps({0: 1, 1: 2, 2: 77, 4: off, 5: data})
seeds = {
  "ack": rec(0, ack),
  "cmd": rec(2, cmd) + rec(2 + 4 * 60, ping),
  "bad_topic": topic_rec("tml/v1/fz-1/up/tele", ack) + topic_rec("tml/v1/other/down/ack", ack),
  "offer": rec(1, offer),
  "install": rec(1, offer) + b"".join(rec(1 + 4, chunk(o, img[o:o + 1024])) for o in range(0, len(img), 1024)) + rec(4 * 10, b"") * 4,
  "install_odd_chunks": rec(1, offer) + b"".join(rec(1, chunk(o, img[o:o + 333])) for o in range(0, len(img), 333)) + rec(4 * 10, b"") * 4,
}
for k, v in seeds.items():
    open(os.path.join(out, k), "wb").write(v)
