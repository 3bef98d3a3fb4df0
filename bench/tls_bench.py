"""Measurement: what each client negotiates with the fleet's broker (version, suite, key exchange).

The device's TLS is MicroPython's `tls` module (Mbed TLS); paho's is CPython's ssl (OpenSSL). Each
client connects, as the device does (a verifying context, a client certificate, an MQTT CONNECT
answered by a CONNACK), through a loopback relay that reads the broker's ServerHello: the protocol
version, the cipher suite and, for TLS 1.2 (ServerKeyExchange) or 1.3 (key_share), the ECDHE group.
The relay sees what was negotiated on the wire, whatever the client can report about itself.

    python -m bench.tls_bench            (MICROPYTHON=... to measure another unix port, e.g. the
                                          32-bit one in ../shared/tools/micropython32)
"""
from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SUITES = {0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384",
          0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305", 0xC023: "ECDHE-ECDSA-AES128-SHA256",
          0xC024: "ECDHE-ECDSA-AES256-SHA384", 0xC009: "ECDHE-ECDSA-AES128-SHA",
          0xC00A: "ECDHE-ECDSA-AES256-SHA", 0x1301: "TLS_AES_128_GCM_SHA256",
          0x1302: "TLS_AES_256_GCM_SHA384", 0x1303: "TLS_CHACHA20_POLY1305_SHA256"}
GROUPS = {23: "secp256r1", 24: "secp384r1", 25: "secp521r1", 29: "x25519", 30: "x448"}
VERSIONS = {0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}

DEVICE = r'''
import sys, socket, time, tls
port, d = int(sys.argv[1]), sys.argv[2]
def rd(n):
    with open(d + "/" + n, "rb") as f:
        return f.read()
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)   # as firmware/start.py and identity.py make it
ctx.verify_mode = tls.CERT_REQUIRED
ctx.load_verify_locations(rd("ca.der"))
ctx.load_cert_chain(rd("cert.der"), rd("key.der"))
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
t0 = time.ticks_ms()
t = ctx.wrap_socket(s, server_hostname="localhost")
t.write(rd("connect.bin"))
ok = t.read(4) == b"\x20\x02\x00\x00"
print(ok, time.ticks_diff(time.ticks_ms(), t0))
t.close()
'''


def mqtt_connect(client_id: bytes) -> bytes:
    body = b"\x00\x04MQTT\x04\x02\x00\x1e" + struct.pack(">H", len(client_id)) + client_id
    return bytes([0x10, len(body)]) + body


def server_hello(data: bytes) -> dict:
    """Version, suite and group from the server's first flight (plaintext handshake records)."""
    out, hs, i = {}, b"", 0
    while i + 5 <= len(data) and data[i] in (21, 22):
        n = struct.unpack(">H", data[i + 3:i + 5])[0]
        if data[i] == 21:
            out["alert"] = data[i + 5:i + 5 + n].hex()
        else:
            hs += data[i + 5:i + 5 + n]
        i += 5 + n
    j = 0
    while j + 4 <= len(hs):
        kind, n = hs[j], int.from_bytes(hs[j + 1:j + 4], "big")
        msg, j = hs[j + 4:j + 4 + n], j + 4 + n
        if kind == 2:                                    # ServerHello
            k = 35 + msg[34]                             # version, random, session id
            out["version"] = VERSIONS.get(struct.unpack(">H", msg[:2])[0])
            suite = struct.unpack(">H", msg[k:k + 2])[0]
            out["suite"] = SUITES.get(suite, hex(suite))
            k += 3                                       # suite, compression
            end = k + 2 + struct.unpack(">H", msg[k:k + 2])[0] if k + 2 <= len(msg) else k
            k += 2
            while k + 4 <= end:
                ext, elen = struct.unpack(">HH", msg[k:k + 4])
                body, k = msg[k + 4:k + 4 + elen], k + 4 + elen
                if ext == 43:                            # supported_versions
                    out["version"] = VERSIONS.get(int.from_bytes(body, "big"))
                elif ext == 51:                          # key_share
                    out["group"] = GROUPS.get(int.from_bytes(body[:2], "big"))
        elif kind == 12 and msg[:1] == b"\x03":          # ServerKeyExchange, named curve
            out["group"] = GROUPS.get(struct.unpack(">H", msg[1:3])[0])
    return out


class Relay:
    """One connection from a loopback port to the broker, keeping the first bytes it sends back."""

    def __init__(self, port):
        self.target = port
        self.down = bytearray()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _pump(self, a, b, keep):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                if keep and len(self.down) < 16384:
                    self.down += d
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self):
        self._srv.settimeout(30)
        try:
            client, _ = self._srv.accept()
        finally:
            self._srv.close()
        upstream = socket.create_connection(("127.0.0.1", self.target))
        up = threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True)
        up.start()
        self._pump(upstream, client, True)
        up.join(5)
        client.close()
        upstream.close()

    def seen(self) -> dict:
        self._t.join(10)
        return server_hello(bytes(self.down))


def _micropython():
    return os.environ.get("MICROPYTHON") or str(Path(sys.executable).parent / "micropython")


def device_row(broker, ident, exe=None):
    exe = exe or _micropython()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name in ("ca.der", "cert.der", "key.der"):
            (d / name).write_bytes(getattr(ident, name.split(".")[0]).read_bytes())
        (d / "connect.bin").write_bytes(mqtt_connect(ident.thing.encode()))
        (d / "dev.py").write_text(DEVICE)
        relay = Relay(broker.port)
        r = subprocess.run([exe, str(d / "dev.py"), str(relay.port), tmp], capture_output=True, text=True,
                           timeout=60)
        seen = relay.seen()
    words = r.stdout.split()
    ok = r.returncode == 0 and words[:1] == ["True"]
    probe = subprocess.run([exe, "-c", "import sys, tls; print(tls.MBEDTLS_VERSION, sys.maxsize > 2**32)"],
                           capture_output=True, text=True, timeout=30).stdout.split()
    bits = "64-bit" if probe[-1:] == ["True"] else "32-bit"
    return {"client": f"device: micropython tls ({' '.join(probe[:-1])}, {bits})", **seen,
            "connack": "accepted" if ok else (r.stderr.strip().splitlines() or ["refused"])[-1],
            "TLS+CONNACK ms": words[1] if ok and len(words) > 1 else None}


def paho_row(broker, ident):
    """paho-mqtt itself, with tls_set() defaults (ssl.SSLContext(PROTOCOL_TLS_CLIENT))."""
    import paho.mqtt.client as paho

    done = threading.Event()
    result = {}

    def on_connect(client, userdata, flags, reason, props):
        result["reason"] = reason
        done.set()

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=ident.thing, protocol=paho.MQTTv311)
    c.tls_set(ca_certs=str(ident.ca_pem), certfile=str(ident.cert_pem), keyfile=str(ident.key_pem))
    c.on_connect = on_connect
    relay = Relay(broker.port)
    t0 = time.perf_counter()
    c.connect("localhost", relay.port, keepalive=30)
    c.loop_start()
    ok = done.wait(10) and not result["reason"].is_failure
    ms = (time.perf_counter() - t0) * 1000
    c.disconnect()
    c.loop_stop()
    return {"client": f"paho: CPython ssl ({ssl.OPENSSL_VERSION.split(' ')[1]})", **relay.seen(),
            "connack": "accepted" if ok else "refused", "TLS+CONNACK ms": f"{ms:.0f}"}


def run(fleet):
    ident = fleet.identity("bench-tls")
    return [device_row(fleet.broker, ident), paho_row(fleet.broker, ident)]


COLS = ["client", "version", "suite", "group", "connack", "TLS+CONNACK ms"]

if __name__ == "__main__":
    from bench.common import fleet, print_table

    with fleet() as f:
        print_table("TLS negotiated with the broker", run(f), COLS,
                    note="read on the wire (ServerHello); the broker allows TLS >= 1.2, AEAD suites only")
