#!/usr/bin/python3
"""tests/ota/bundle_server.py: an HTTPS server on 127.0.0.1 for
`tmlctl deploy https://...` (issue 8), certificates made by the openssl CLI.

  bundle_server.py --dir D --gen-certs          D/ca.pem, D/server.pem,
                                                D/wrong.pem (other CA)
  bundle_server.py --dir D --port-file F [--wrong-cert]
                                                serve until SIGTERM

Paths: /NAME.tmlb serves D/NAME.tmlb; /big answers with a Content-Length of
64 MiB and streams it; /stream streams 64 MiB with no Content-Length (the
end is the connection close); anything else is 404. After each streamed
answer D/sent-NAME holds the bytes actually written before the client went
away, so a test can show the download was cut short.
"""
import argparse
import os
import ssl
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIG = 64 * 1024 * 1024
PIECE = 65536


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def gen_certs(d):
    os.makedirs(d, exist_ok=True)
    ext = os.path.join(d, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for ca in ("ca", "other-ca"):
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3",
            "-subj", "/CN=tml test bundles " + ca,
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def stream(self, name, length):
        sent = 0
        piece = b"\xa5" * PIECE
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if length:
            self.send_header("Content-Length", str(BIG))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            while sent < BIG:  # bounded: 1024 pieces
                self.wfile.write(piece)
                sent += PIECE
            self.wfile.flush()
        except OSError:
            pass
        with open(os.path.join(self.server.dir, "sent-" + name), "w") as f:
            f.write("%d\n" % sent)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/big":
            return self.stream("big", True)
        if path == "/stream":
            return self.stream("stream", False)
        name = path.lstrip("/")
        f = os.path.join(self.server.dir, name)
        if (name.endswith(".tmlb") and "/" not in name and
                os.path.isfile(f)):
            with open(f, "rb") as fh:
                body = fh.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        body = b"not found\n"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--gen-certs", action="store_true")
    ap.add_argument("--port-file")
    ap.add_argument("--wrong-cert", action="store_true")
    a = ap.parse_args()
    if a.gen_certs:
        gen_certs(a.dir)
        return
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.dir = a.dir
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    name = "wrong" if a.wrong_cert else "server"
    ctx.load_cert_chain(os.path.join(a.dir, name + ".pem"),
                        os.path.join(a.dir, name + ".key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
