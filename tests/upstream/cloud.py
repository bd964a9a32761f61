#!/usr/bin/python3
"""tests/upstream/cloud.py: a fake cloud ingest endpoint for tmld's upstream
tests (issue 8). HTTPS on 127.0.0.1 with a test CA made by the openssl CLI.

It accepts POSTs of gzip'd NDJSON batches, counts them by Idempotency-Key,
records their order per stream and every row's (stream, device, seq, id),
and writes a summary to DIR/stats.json after every request (atomically).
Faults on demand: a share of requests failed with 500/503/429/408 (some with
Retry-After), a share of connections closed mid-body (before reading it all)
or after accepting the batch but before answering, a fixed delay before
every answer, batches with rows of one device refused with 400 (poison), a
bearer token check (401), a certificate from another CA (--wrong-cert).

  cloud.py --dir D --gen-certs            make D/ca.pem etc. and exit
  cloud.py --dir D --port P [faults...]   serve until SIGTERM
"""
import argparse
import gzip
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def gen_certs(d):
    if os.path.exists(os.path.join(d, "server.pem")):
        return
    os.makedirs(d, exist_ok=True)
    ext = os.path.join(d, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for ca in ("ca", "other-ca"):
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3",
            "-subj", "/CN=tml test cloud " + ca,
            "-keyout", os.path.join(d, ca + ".key"),
            "-out", os.path.join(d, ca + ".pem"))
    for name, ca in (("server", "ca"), ("wrong", "other-ca")):
        key = os.path.join(d, name + ".key")
        csr = os.path.join(d, name + ".csr")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-subj",
            "/CN=127.0.0.1", "-keyout", key, "-out", csr)
        run("openssl", "x509", "-req", "-in", csr, "-days", "3",
            "-CA", os.path.join(d, ca + ".pem"),
            "-CAkey", os.path.join(d, ca + ".key"), "-CAcreateserial",
            "-extfile", ext, "-out", os.path.join(d, name + ".pem"))


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.rng = random.Random(args.seed)
        self.requests = 0
        self.keys = {}          # key -> {"accepted": n, "requests": n, ...}
        self.order = {}         # stream -> list of first-time accepted keys
        self.last = {}          # stream -> (epoch, last id) of the last one
        self.rows = {}          # (stream, id, epoch) -> key
        self.tele = {}          # device -> {seq: count of distinct keys}
        self.overlap = 0        # a row accepted under two different keys
        self.order_violations = 0
        self.dup_same_key = 0   # batches accepted again under their key
        self.injected = {"fail": 0, "close_mid_body": 0,
                         "close_after_accept": 0, "poison": 0, "auth": 0}
        self.bad = []           # protocol problems seen (strings)
        self.stream_rows = {}
        self.request_times = {}  # key -> list of monotonic times
        self.retry_after = {}    # key -> [(answer time, seconds)]
        self.http2 = 0
        self.events = []         # [device, event, state] in arrival order

    def dump(self):
        per_dev = {}
        for dev, seqs in self.tele.items():
            per_dev[dev] = {"count": sum(seqs.values()),
                            "distinct": len(seqs),
                            "min": min(seqs), "max": max(seqs)}
        # Retry-After: how long after an answer carrying it did the same
        # key come again (the gateway must wait at least that long).
        ra_ok = ra_early = 0
        ra_min_wait = None
        for k, times in self.request_times.items():
            for ans_t, ra in self.retry_after.get(k, []):
                later = [t for t in times if t > ans_t]
                if not later:
                    continue
                wait = later[0] - ans_t
                ra_min_wait = wait if ra_min_wait is None else min(
                    ra_min_wait, wait)
                if wait >= ra * 0.95:
                    ra_ok += 1
                else:
                    ra_early += 1
        out = {
            "requests": self.requests,
            "accepted_batches": sum(1 for k in self.keys.values()
                                    if k["accepted"] > 0),
            "dup_same_key": self.dup_same_key,
            "overlap": self.overlap,
            "order_violations": self.order_violations,
            "rows": self.stream_rows,
            "injected": self.injected,
            "bad": self.bad[:20],
            "n_bad": len(self.bad),
            "tele": per_dev,
            "keys": {k: {"requests": v["requests"],
                         "accepted": v["accepted"],
                         "status": v["status"]}
                     for k, v in list(self.keys.items())[:2000]},
            "events": self.events[:1000],
            "retry_after": {"honoured": ra_ok, "early": ra_early,
                            "min_wait_s": ra_min_wait or 0},
        }
        tmp = os.path.join(self.args.dir, "stats.json.tmp")
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.replace(tmp, os.path.join(self.args.dir, "stats.json"))


def parse_key(key):
    # gateway:stream:epoch:first-last
    parts = key.split(":")
    if len(parts) != 4:
        return None
    gw, stream, epoch, rng = parts
    a, _, b = rng.partition("-")
    try:
        return gw, stream, int(epoch), int(a), int(b)
    except ValueError:
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        if self.server.st.args.verbose:
            sys.stderr.write("cloud: " + (fmt % a) + "\n")

    def answer(self, code, body=b'{"ok":true}', extra=()):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def drop(self):
        # Close without an answer (and without a TLS close_notify).
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self):
        self.answer(200, b'{"cloud":true}')

    def do_POST(self):
        st = self.server.st
        a = st.args
        n = int(self.headers.get("Content-Length", "0"))
        key = self.headers.get("Idempotency-Key", "")
        with st.lock:
            st.requests += 1
            ent = st.keys.setdefault(key, {"accepted": 0, "requests": 0,
                                           "status": 0})
            ent["requests"] += 1
            st.request_times.setdefault(key, []).append(time.monotonic())
            r = st.rng.random()
            r2 = st.rng.random()
            st.dump()
        if a.delay > 0:
            time.sleep(a.delay)
        if r < a.close_rate and r2 < 0.5:
            # Read part of the body, then hang up.
            self.rfile.read(min(n, max(1, n // 2)))
            with st.lock:
                st.injected["close_mid_body"] += 1
                st.dump()
            self.drop()
            return
        body = self.rfile.read(n)
        if a.trickle:
            # A stalled cloud: headers, then one byte every 3 s (nothing is
            # stored). The gateway's low-speed limit must give up on it.
            with st.lock:
                st.injected["trickle"] = st.injected.get("trickle", 0) + 1
                st.dump()
            self.send_response(200)
            self.send_header("Content-Length", "64")
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(3)
            except OSError:
                pass
            self.close_connection = True
            return
        if a.token and self.headers.get("Authorization") != \
                "Bearer " + a.token:
            with st.lock:
                st.injected["auth"] += 1
                ent["status"] = 401
                st.dump()
            self.answer(401, b'{"error":"bad token"}')
            return
        if a.close_rate <= r < a.close_rate + a.fail_rate:
            code = st.rng.choice((500, 503, 503, 429, 408, 502))
            extra = ()
            if code in (503, 429) and st.rng.random() < 0.5:
                extra = (("Retry-After", "1"),)
            with st.lock:
                st.injected["fail"] += 1
                ent["status"] = code
                if extra:
                    st.retry_after.setdefault(key, []).append(
                        (time.monotonic(), int(extra[0][1])))
                st.dump()
            self.answer(code, b'{"error":"injected"}', extra)
            return
        problems = []
        if self.headers.get("Content-Encoding") != "gzip":
            problems.append("no gzip content-encoding")
        if self.headers.get("Content-Type") != "application/x-ndjson":
            problems.append("content-type")
        pk = parse_key(key)
        if pk is None:
            problems.append("bad key " + key)
        try:
            lines = gzip.decompress(body).decode().splitlines()
            rows = [json.loads(x) for x in lines if x]
        except Exception as e:  # noqa: BLE001 - any decode error is a bug
            problems.append("body: %s" % e)
            rows = []
        if problems:
            with st.lock:
                st.bad.extend(problems)
                ent["status"] = 400
                st.dump()
            self.answer(400, json.dumps({"error": problems}).encode())
            return
        gw, stream, epoch, first, last = pk
        ids = [x.get("id") for x in rows]
        if (ids != sorted(ids) or not ids or ids[0] < first or
                ids[-1] > last or any(x.get("stream") != stream
                                      for x in rows)):
            with st.lock:
                st.bad.append("rows do not match key %s: %s" % (key, ids[:5]))
        if a.poison_device and any(x.get("device") == a.poison_device
                                   for x in rows):
            with st.lock:
                st.injected["poison"] += 1
                ent["status"] = 400
                st.dump()
            self.answer(400, b'{"error":"poison device"}')
            return
        with st.lock:
            ent["status"] = 200
            if ent["accepted"] > 0:
                st.dup_same_key += 1
            else:
                prev = st.last.get(stream)
                if prev is not None and prev[0] == epoch and first <= prev[1]:
                    st.order_violations += 1
                st.last[stream] = (epoch, last)
                st.order.setdefault(stream, []).append(key)
                for x in rows:
                    rk = (stream, x["id"], epoch)
                    if rk in st.rows and st.rows[rk] != key:
                        st.overlap += 1
                    st.rows[rk] = key
                    st.stream_rows[stream] = st.stream_rows.get(stream, 0) + 1
                    if stream == "events":
                        st.events.append([x.get("device"), x.get("event"),
                                          x.get("state", "")])
                    if stream == "tele":
                        seqs = st.tele.setdefault(x["device"], {})
                        seqs[x["seq"]] = seqs.get(x["seq"], 0) + 1
            ent["accepted"] += 1
            close_after = (a.close_rate > 0 and r < a.close_rate and
                           r2 >= 0.5)
            if close_after:
                st.injected["close_after_accept"] += 1
            st.dump()
        if close_after:
            # Stored, but the gateway never hears it: it must retry with
            # the same key.
            self.drop()
            return
        self.answer(200)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--gen-certs", action="store_true")
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--close-rate", type=float, default=0.0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--poison-device", default="")
    p.add_argument("--token", default="")
    p.add_argument("--wrong-cert", action="store_true")
    p.add_argument("--trickle", action="store_true")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args()
    gen_certs(a.dir)
    if a.gen_certs:
        return 0
    name = "wrong" if a.wrong_cert else "server"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(a.dir, name + ".pem"),
                        os.path.join(a.dir, name + ".key"))
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.st = State(a)
    with srv.st.lock:
        srv.st.dump()
    with open(os.path.join(a.dir, "ready"), "w") as f:
        f.write("%d\n" % srv.server_address[1])
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
