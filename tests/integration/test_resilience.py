"""A session that survives outages: a blackholed link is noticed within 1.5 keepalive intervals and the
device reconnects when the link returns; a hostile broker never crashes it."""
import json
import os
import re
import threading
import time

import pytest

from support.mqttwire import read_packet
from support.netproxy import Proxy
from support.twinproc import Twin
from warden.board import twin as twinlib

HEAP = twinlib.DEFAULT_HEAP


@pytest.fixture
def twin_via(pki_state, provision, tmp_path):
    made = []

    def make(thing, port, heap="64k", log_key=None, **cfg):
        ident = provision(thing)
        cfg.setdefault("interval_ms", 100)
        cfg.setdefault("backoff_ms", 200)
        cfg.setdefault("backoff_max_ms", 1000)
        config = twinlib.device_config(pki_state, thing, broker={"host": "localhost", "port": port}, **cfg)
        files = twinlib.identity_files(ident.cert_der, ident.key_der, ident.ca.read_bytes())
        t = Twin(twinlib.build_flash(tmp_path / (thing + ".bin"), files, config, log_key=log_key or os.urandom(32)),
                 heap=heap)
        made.append(t)
        return t

    yield make
    for t in made:
        t.stop()


class DurableObserver:
    """The operator with a persistent session (clean_session=False, QoS 1): with a broker that
    keeps sessions across restarts, it misses nothing published while it was reconnecting."""

    def __init__(self, state, port, topic):
        import ssl as _ssl
        import paho.mqtt.client as paho
        self.seqs = []
        self.lock = threading.Lock()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="operator.default", clean_session=False,
                        protocol=paho.MQTTv311)
        pki = state.pki_dir
        c.tls_set(ca_certs=str(pki / "ca.crt.pem"), certfile=str(pki / "operator.crt.pem"),
                  keyfile=str(pki / "operator.key.pem"), tls_version=_ssl.PROTOCOL_TLSv1_2)
        c.reconnect_delay_set(0.05, 0.5)
        c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe(topic, 1)
        c.on_message = self._on_message
        self.client = c
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()

    def _on_message(self, client, userdata, m):
        with self.lock:
            self.seqs.append(json.loads(m.payload)["seq"])

    def count(self):
        with self.lock:
            return len(set(self.seqs))

    def wait_count(self, n, timeout):
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                raise AssertionError("only %d of %d readings arrived" % (self.count(), n))
            time.sleep(0.05)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_broker_restarted_ten_times_loses_no_reading(pki_state, twin_via, tmp_path):
    from warden.broker.server import Broker
    b = Broker(pki_state, run_dir=tmp_path / "broker", persistence_dir=tmp_path / "persist")
    b.start()
    obs = DurableObserver(pki_state, b.port, "dt/warden/twin-rs/telemetry")
    t = None
    try:
        obs.wait_count(0, 1)
        t = twin_via("twin-rs", b.port, interval_ms=10, backoff_ms=100, backoff_max_ms=400, keepalive=10,
                     timeout=2, qos=1, heap=HEAP).start()
        for i in range(10):
            obs.wait_count((i + 1) * 100, timeout=60)
            b.restart()
        obs.wait_count(1100, timeout=60)
        t.stop()
        # everything the device had taken is delivered: let the last drain finish first
        seqs = sorted(set(obs.seqs))
        gaps = [s for s in range(seqs[0], seqs[-1] + 1) if s not in set(seqs)]
        dups = len(obs.seqs) - len(seqs)
        print("readings %d, restarts 10, duplicates %d, gaps %d" % (len(seqs), dups, len(gaps)))
        assert not gaps, "lost readings: %s\n%s" % (gaps[:20], "\n".join(l for l in t.lines if "INFO telemetry" not in l)[-3000:])
        assert len(seqs) >= 1000
        assert t.output.count("INFO mqtt: connected") >= 11, t.output[-3000:]
        assert "backlog delivered" in t.output, "the outbox was never used"
    finally:
        if t:
            t.stop()
        obs.close()
        b.stop()


def test_blackholed_link_is_noticed_within_one_and_a_half_keepalives(broker, twin_via, mqtt_client):
    keepalive = 4
    proxy = Proxy(broker.port)
    try:
        op = mqtt_client("operator")
        op.subscribe("dt/warden/twin-bh/telemetry")
        t = twin_via("twin-bh", proxy.port, keepalive=keepalive, qos=0, interval_ms=200, heap=HEAP).start()
        t.wait_for(r"INFO mqtt: connected", 10)
        op.expect("dt/warden/twin-bh/telemetry", timeout=10)
        t0 = time.monotonic()
        proxy.set_mode("blackhole")
        m = t.wait_for(r"ERROR mqtt: session lost: (.*)", timeout=keepalive * 1.5 + 2)
        noticed = time.monotonic() - t0
        assert noticed <= keepalive * 1.5, noticed
        assert "PINGRESP" in m.group(1) or "PUBACK" in m.group(1) or "Timeout" in m.group(1), m.group(1)
        proxy.cut()
        proxy.set_mode("forward")
        t.wait_for(r"INFO mqtt: connected", 15)
        op.expect("dt/warden/twin-bh/telemetry", timeout=10)
    finally:
        proxy.close()


# -- a hostile broker ----------------------------------------------------------------------------
import socket  # noqa: E402
import ssl  # noqa: E402
import struct  # noqa: E402


def _read_packet(s):
    """One MQTT packet from socket `s`: (first byte, body); EOFError at the end."""
    p = read_packet(s)
    if p is None:
        raise EOFError
    return p


def _serve_well(s, until=None):
    """Behave like a broker: CONNACK, SUBACK, PUBACK, PINGRESP, until the peer goes away."""
    while True:
        op, body = _read_packet(s)
        kind = op >> 4
        if kind == 1:
            s.sendall(b"\x20\x02\x00\x00")
        elif kind == 8:
            s.sendall(b"\x90\x03" + body[:2] + b"\x01")
        elif kind == 3 and op & 0x06:
            tl = struct.unpack("!H", body[:2])[0]
            s.sendall(b"\x40\x02" + body[2 + tl:4 + tl])
        elif kind == 12:
            s.sendall(b"\xd0\x00")
        elif kind == 14:
            return
        if until and until(op):
            return


def _after_connack(s):
    _read_packet(s)
    s.sendall(b"\x20\x02\x00\x00")


def _after_suback(s):
    _after_connack(s)
    op, body = _read_packet(s)
    s.sendall(b"\x90\x03" + body[:2] + b"\x01")


def _after_online(s):
    """CONNACK, SUBACK and the PUBACK of the `online` status: the session is up."""
    _after_suback(s)
    op, body = _read_packet(s)
    tl = struct.unpack("!H", body[:2])[0]
    s.sendall(b"\x40\x02" + body[2 + tl:4 + tl])


def _never_ending(s):
    _after_connack(s)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s.sendall(b"\x00" * 4096)


def _flood_then_close(s):
    _after_online(s)
    s.sendall((b"\x30\x0a\x00\x03cmd" + b"12345") * 2000)
    s.close()


# (name, behaviour after the TLS handshake, regex the device's log line must match)
HOSTILE = [
    ("eof-before-connack", lambda s: _read_packet(s), r"connect failed: OSError"),
    ("connack-refused-1", lambda s: (_read_packet(s), s.sendall(b"\x20\x02\x00\x01")), r"MQTTConnectError.*protocol version"),
    ("connack-refused-2", lambda s: (_read_packet(s), s.sendall(b"\x20\x02\x00\x02")), r"MQTTConnectError.*identifier rejected"),
    ("connack-refused-3", lambda s: (_read_packet(s), s.sendall(b"\x20\x02\x00\x03")), r"MQTTConnectError.*server unavailable"),
    ("connack-refused-4", lambda s: (_read_packet(s), s.sendall(b"\x20\x02\x00\x04")), r"MQTTConnectError.*user name or password"),
    ("connack-refused-5", lambda s: (_read_packet(s), s.sendall(b"\x20\x02\x00\x05")), r"MQTTConnectError.*not authorized"),
    ("wrong-type-for-connack", lambda s: (_read_packet(s), s.sendall(b"\x40\x02\x00\x01")), r"MQTTProtocolError"),
    ("connack-bad-length", lambda s: (_read_packet(s), s.sendall(b"\x20\x03\x00\x00\x00")), r"MQTTProtocolError"),
    ("connack-reserved-flags", lambda s: (_read_packet(s), s.sendall(b"\x21\x02\x00\x00")), r"MQTTProtocolError"),
    ("five-byte-length", lambda s: (_after_connack(s), s.sendall(b"\x30\xff\xff\xff\xff\x01")), r"MQTTProtocolError"),
    # a PUBLISH of ~200 MB announced: read and dropped until the broker closes or the deadline
    ("oversized-length", lambda s: (_after_connack(s), s.sendall(b"\x30\x80\x80\x80\x60")),
     r"(connect failed|session lost): (OSError|MQTTProtocolError|MQTTTimeoutError)"),
    ("suback-failure", lambda s: (_after_connack(s), _read_packet(s), s.sendall(b"\x90\x03\x00\x01\x80")), r"connect failed: MQTTError"),
    ("suback-wrong-id", lambda s: (_after_connack(s), _read_packet(s), s.sendall(b"\x90\x03\x7f\x7f\x01")), r"MQTTProtocolError"),
    ("puback-unknown-id", lambda s: (_after_suback(s), _read_packet(s), s.sendall(b"\x40\x02\x7f\x7f")), r"MQTTProtocolError"),
    ("truncated-then-eof", lambda s: (_after_online(s), s.sendall(b"\x30\x64\x00\x03cmd"), s.close()), r"session lost: (OSError|MQTTProtocolError|MQTTTimeoutError)"),
    ("stall-mid-packet", lambda s: (_after_connack(s), _read_packet(s), s.sendall(b"\x90\x03\x00"), time.sleep(6)), r"MQTTTimeoutError"),
    ("never-ending-stream", _never_ending, r"MQTTProtocolError"),
    ("flood-then-close", _flood_then_close, r"session lost"),
]


class HostileBroker:
    """A TLS server with the fleet's broker certificate that plays one hostile scenario per connection,
    then behaves well so the device can prove it recovered."""

    def __init__(self, state):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(state.pki_dir / "broker.crt.pem"), str(state.pki_dir / "broker.key.pem"))
        self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.played = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        i = 0
        while True:
            try:
                raw, _ = self.srv.accept()
            except OSError:
                return
            # one thread per connection, so a stalling scenario never delays the next accept
            threading.Thread(target=self._play, args=(raw, i), daemon=True).start()
            i += 1

    def _play(self, raw, i):
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        try:
            if i < len(HOSTILE):
                self.played.append(HOSTILE[i][0])
                HOSTILE[i][1](s)
            else:
                _serve_well(s)
        except (OSError, EOFError, ssl.SSLError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        self.srv.close()


def test_hostile_broker_never_crashes_the_device(pki_state, twin_via):
    hb = HostileBroker(pki_state)
    try:
        t = twin_via("twin-hostile", hb.port, timeout=2, keepalive=30, backoff_ms=20, backoff_max_ms=50,
                     heap=HEAP).start()
        m = t.wait_for(r"INFO mqtt: connected .* heap in use (\d+) bytes", timeout=90)
        heap = int(m.group(1))
        t.wait_for(r"INFO telemetry: first reading", timeout=10)
        assert t.proc.poll() is None, "the device stopped"
    finally:
        hb.close()
    assert hb.played == [h[0] for h in HOSTILE], hb.played
    failures = [ln for ln in t.lines if "ERROR mqtt:" in ln]
    assert len(failures) >= len(HOSTILE), "\n".join(failures)
    for (name, _, pattern), line in zip(HOSTILE, failures):
        assert re.search(pattern, line), "%s: %s" % (name, line)
        assert "Traceback" not in line
    assert "MemoryError" not in t.output
    # bounded: the steady state (~62 KB on the 64-bit twin, with the qstr pool interned at boot:
    # docs/heap.md, "Interned names") plus a little, never growing
    assert heap < 68 * 1024, heap


def test_power_cut_while_offline_loses_no_kept_reading(pki_state, broker, twin_via, mqtt_client, tmp_path):
    """Readings taken while the broker is unreachable are kept durably in the encrypted outbox; a kill -9
    (power cut) then a restart with the broker back delivers every one of them."""
    import struct as _struct
    from warden.broker.server import free_port
    from warden.logs.format import READING, read_log
    from warden.logs.pull import read_flash
    dead = free_port()  # nothing listens here: the broker is unreachable
    key = os.urandom(32)
    t = twin_via("twin-pc", dead, interval_ms=20, backoff_ms=300, backoff_max_ms=300, heap=HEAP, log_key=key)
    t.start()
    t.wait_for(r"connect failed", 10)
    deadline = time.monotonic() + 20
    kept = []
    while len(kept) < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            report = read_log(read_flash(t.flash), key)
        except Exception:
            continue  # the twin may be mid-write: read again
        kept = [r for r in report.records if r.kind == READING]
    t.kill()  # power cut
    report = read_log(read_flash(t.flash), key)
    seqs = [_struct.unpack_from("<I", r.payload)[0] for r in report.records if r.kind == READING]
    assert len(seqs) >= 40, "the outbox kept %d readings" % len(seqs)
    op = mqtt_client("operator")
    op.subscribe("dt/warden/twin-pc/telemetry")
    twinlib.update_config(t.flash, broker={"host": "localhost", "port": broker.port})
    t.start()
    got = set()
    deadline = time.monotonic() + 30
    while not set(seqs) <= got and time.monotonic() < deadline:
        got.add(json.loads(op.expect("dt/warden/twin-pc/telemetry", timeout=10).payload)["seq"])
    assert set(seqs) <= got, "not delivered after the power cut: %s" % sorted(set(seqs) - got)[:20]
