"""lib/mqtt.py against a hostile broker: every malformed or unexpected packet, stall and refusal.

A small CPython fake broker (plain TCP: the protocol layer is under test) plays one scripted
scenario per test; the real MicroPython client (tests/support/mp/mqtt_hostile_client.py) runs in a
`micropython -X heapsize=64k` process and prints its outcome, which the test checks: the exception
class, a message naming the fault, a bounded run time, the socket closed (or kept, where the
protocol allows), never a MemoryError.

Most scenarios differ only in what the broker does, what the client does and what it must raise:
they are the rows of SCENARIOS, run by test_hostile_broker. Those that check more (the packets
the broker received, what the callback got, timings inside the client) are tests of their own.
"""
import json
import socket
import struct
import sys
import threading
import time
from typing import Callable, NamedTuple

import pytest

from support.devrun import MP, run_mp
from support.mqttwire import CONNACK_OK, publish_packet, read_packet, varint

TMO = 0.4  # the client's timeout in these tests, seconds


class FakeBroker:
    """Accepts one connection and runs `script(conn, broker)` on it in a thread.

    With `tls` (a server SSLContext) the connection is TLS. Every packet the script reads
    with `broker.read()` is recorded in `broker.received`."""

    def __init__(self, script, tls=None):
        self.script = script
        self.tls = tls
        self.received = []
        self.error = None
        self.done = threading.Event()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.lsock.settimeout(10)
        self.port = self.lsock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.lsock.accept()
            conn.settimeout(10)
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.conn = conn
            with conn:
                self.script(conn, self)
        except Exception as e:  # reported by the test if it matters
            self.error = e
        finally:
            self.done.set()

    def read(self, conn):
        p = read_packet(conn)
        self.received.append(p)
        return p

    def close(self):
        self.lsock.close()


@pytest.fixture
def fake():
    brokers = []

    def make(script, tls=None):
        b = FakeBroker(script, tls)
        brokers.append(b)
        return b

    yield make
    for b in brokers:
        b.close()


@pytest.fixture(autouse=True)
def _use_mpy(mpy_dir, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "MPY_DIR", mpy_dir)


MPY_DIR = None


def run_client(port, action, *, timeout=TMO, keepalive=0, client=None, limit=8.0, ssl=False, ca=None):
    """Run `action` (statements with the client `c`; tests/support/mp/mqtt_hostile_client.py) in
    MicroPython against 127.0.0.1:port; return (outcome line, seconds, stdout).

    ssl=True: TLS; with `ca` (a DER file) the server must present a certificate for localhost.
    `client`: more keyword arguments of MQTTClient."""
    options = {"timeout": timeout, "keepalive": keepalive, "ssl": ssl, "ca": ca, "client": client or {}}
    t0 = time.monotonic()
    r = run_mp(script=MP / "mqtt_hostile_client.py", args=[port, json.dumps(options)],
               env={"WARDEN_TEST_ACTION": action.strip()}, heap="64k", timeout=limit + 5, path=[MPY_DIR])
    dt = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "MemoryError" not in r.stdout + r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("OUTCOME"))
    assert dt < limit, f"took {dt:.1f} s: {r.stdout}"
    return line, dt, r.stdout


def expect(outcome, cls, text):
    assert outcome.startswith(f"OUTCOME {cls} |"), outcome
    assert text in outcome, outcome


def connack_then(*chunks, close=False, wait_eof=True):
    """A script: read CONNECT, answer CONNACK OK, send the chunks, then wait for the client to go."""
    def script(conn, b):
        assert b.read(conn)[0] == 0x10
        conn.sendall(CONNACK_OK)
        for c in chunks:
            conn.sendall(c)
        if close:
            return
        if wait_eof:
            while b.read(conn) is not None:
                pass
    return script


def suback_script(reply):
    def script(conn, b):
        b.read(conn)
        conn.sendall(CONNACK_OK)
        op, body = b.read(conn)
        assert op == 0x82
        pid = body[:2]
        conn.sendall(reply(pid))
        while b.read(conn) is not None:
            pass
    return script


def answer_connect(reply):
    """A script: read CONNECT, send `reply` (bytes), then read once more (until the client goes)."""
    return lambda conn, b: (b.read(conn), conn.sendall(reply), b.read(conn))


def silent(conn, b):
    """Read CONNECT and never answer."""
    b.read(conn)
    b.read(conn)


def never_speaks_tls(conn, b):
    """Accept TCP and never speak TLS: read the ClientHello (and whatever follows), answer nothing."""
    conn.recv(4096) and conn.recv(4096)


def truncated_connack_then_eof(conn, b):
    b.read(conn)
    conn.sendall(b"\x20\x02\x00")
    conn.shutdown(socket.SHUT_WR)
    b.read(conn)


def dripped_publish(conn, b):
    """Each byte well within the timeout, the packet as a whole not: 30 bytes at 0.1 s, 3 s in all,
    each gap 1/4 of the client's timeout."""
    b.read(conn)
    conn.sendall(CONNACK_OK)
    for byte in publish_packet(b"drip/topic", b"x" * 16):
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            return
        time.sleep(0.1)


def never_ending_length(conn, b):
    """A remaining length streamed forever: continuation bytes only."""
    b.read(conn)
    conn.sendall(CONNACK_OK + b"\x30")
    try:
        for _ in range(100000):
            conn.sendall(b"\xff" * 64)
    except OSError:
        pass


def puback_for_another_id(conn, b):
    b.read(conn)
    conn.sendall(CONNACK_OK)
    op, body = b.read(conn)
    assert op == 0x32
    conn.sendall(b"\x40\x02\x00\x63")  # 99, not the id just sent
    b.read(conn)


class Scenario(NamedTuple):
    id: str
    broker: Callable             # the fake broker's script: script(conn, broker)
    action: str                  # the client's statements (`c` is the client)
    cls: str                     # the exception class the client must raise...
    text: str                    # ...and what its message must say
    connected: bool | None = None   # afterwards still connected (True) or closed (False); None: not checked
    within: float | None = None     # seconds the run may take at most (run_client allows 8)
    tls: str | None = None          # "hello-only": TLS to a server that never speaks it; "verified":
                                    # TLS, the server's certificate checked against the test CA


CONNECT = "c.connect()"
WAIT = "c.connect()\nc.wait_msg(2)"
SUBSCRIBE = "c.connect()\nc.subscribe('cmd/#', 1)"

SCENARIOS = [
    # ---- CONNACK ----
    Scenario("wrong_packet_type_instead_of_connack", answer_connect(b"\x90\x03\x00\x01\x00"), CONNECT,
             "MQTTProtocolError", "expected CONNACK, got SUBACK (0x90)", connected=False),
    Scenario("bad_connack_length", answer_connect(b"\x20\x03\x00\x00\x00"), CONNECT,
             "MQTTProtocolError", "bad CONNACK remaining length 3"),
    Scenario("connack_reserved_flags", answer_connect(b"\x20\x02\x02\x00"), CONNECT,
             "MQTTProtocolError", "reserved CONNACK flags 0x02"),
    Scenario("connack_invalid_return_code", answer_connect(b"\x20\x02\x00\x06"), CONNECT,
             "MQTTProtocolError", "invalid return code 6"),
    Scenario("truncated_connack_then_eof", truncated_connack_then_eof, CONNECT,
             "MQTTProtocolError", "connection closed mid-packet: truncated CONNACK"),
    Scenario("silent_broker_connack_timeout", silent, CONNECT,
             "MQTTTimeoutError", "no CONNACK within 0.4 s", within=3),
    # the TLS handshake is bounded by `timeout` too
    Scenario("tls_handshake_stall_times_out", never_speaks_tls, CONNECT,
             "MQTTTimeoutError", "TLS handshake timed out after 0.4 s", within=3, tls="hello-only"),
    Scenario("eof_between_packets_is_a_network_error", connack_then(close=True), WAIT,
             "OSError", "connection closed by broker", connected=False),
    # ---- malformed packets after connecting ----
    Scenario("five_byte_remaining_length", connack_then(b"\x30\xff\xff\xff\xff\x01"), WAIT,
             "MQTTProtocolError", "malformed remaining length in PUBLISH (0x30): more than 4 bytes",
             connected=False),
    # 200 MB announced, a 64 KB heap: it is read in pieces (never allocated) until its deadline
    Scenario("oversized_publish_announced_but_never_sent_times_out_without_allocating",
             connack_then(b"\x30" + varint(200_000_000) + b"\x00\x01t"), WAIT,
             "MQTTTimeoutError", "timed out after 0.4 s in the middle of a PUBLISH", connected=False, within=3),
    # one timeout after the packet's first byte, not one per byte: all of it would take 3 s
    Scenario("slowly_dripped_packet_meets_one_whole_packet_deadline", dripped_publish, "c.connect()\nc.wait_msg(5)",
             "MQTTTimeoutError", "timed out after 0.4 s in the middle of a PUBLISH", within=2.5),
    # rejected after the fourth continuation byte
    Scenario("never_ending_length_stream", never_ending_length, WAIT, "MQTTProtocolError", "more than 4 bytes"),
    Scenario("stall_mid_packet_times_out", connack_then(b"\x30\x10\x00\x05top"), WAIT,
             "MQTTTimeoutError", "timed out after 0.4 s", connected=False, within=3),
    Scenario("truncated_publish_then_eof", connack_then(b"\x30\x10\x00\x05top", close=True), WAIT,
             "MQTTProtocolError", "connection closed mid-packet: truncated PUBLISH"),
    Scenario("publish_topic_longer_than_packet", connack_then(b"\x30\x04\xff\xffab"), WAIT,
             "MQTTProtocolError", "PUBLISH topic length 65535 exceeds the packet"),
    Scenario("publish_too_short_for_its_header", connack_then(b"\x32\x03\x00\x01t"), WAIT,
             "MQTTProtocolError", "PUBLISH remaining length too short"),
    Scenario("publish_with_qos3", connack_then(b"\x36\x05\x00\x01t\x00\x01"), WAIT,
             "MQTTProtocolError", "PUBLISH with QoS 3"),
    Scenario("puback_for_unknown_id", puback_for_another_id, "c.connect()\nc.publish('t/1', 'm', qos=1)",
             "MQTTProtocolError", "PUBACK for unknown packet id 99", connected=False),
    Scenario("reserved_flags_in_puback", connack_then(b"\x42\x02\x00\x01"), WAIT,
             "MQTTProtocolError", "reserved flags set in PUBACK (0x42)"),
    Scenario("bad_puback_length", connack_then(b"\x40\x03\x00\x01\x00"), WAIT,
             "MQTTProtocolError", "bad PUBACK remaining length 3 (expected 2)"),
    Scenario("unexpected_packet_type", connack_then(b"\x10\x00"), WAIT,
             "MQTTProtocolError", "unexpected CONNECT (0x10) from broker"),
    Scenario("second_connack", connack_then(CONNACK_OK), WAIT,
             "MQTTProtocolError", "unexpected CONNACK (0x20) from broker"),
    # ---- SUBACK ----
    Scenario("suback_failure_raises_and_keeps_the_connection", suback_script(lambda pid: b"\x90\x03" + pid + b"\x80"),
             SUBSCRIBE, "MQTTError", "broker refused the subscription to b'cmd/#' (SUBACK 0x80)", connected=True),
    Scenario("suback_for_another_id", suback_script(lambda pid: b"\x90\x03\x12\x34\x00"), SUBSCRIBE,
             "MQTTProtocolError", "SUBACK for packet id 4660, none awaited"),
    Scenario("suback_invalid_return_code", suback_script(lambda pid: b"\x90\x03" + pid + b"\x02"), SUBSCRIBE,
             "MQTTProtocolError", "SUBACK with invalid return code 0x02"),
    Scenario("missing_suback_times_out", connack_then(), SUBSCRIBE,
             "MQTTTimeoutError", "no SUBACK within 0.4 s", within=3),
    # ---- arguments ----
    Scenario("qos2_publish_is_a_value_error_and_sends_nothing", connack_then(), "c.connect()\nc.publish('t', 'm', qos=2)",
             "ValueError", "QoS 2 is not supported", connected=True),
    Scenario("closed_client_raises_enotconn", connack_then(), "c.connect()\nc.disconnect()\nc.publish('t', 'm')",
             "OSError", "not connected"),
    # ---- over TLS: what mbedTLS buffers, stalls and closes ----
    Scenario("tls_stall_mid_packet_times_out", connack_then(b"\x30\x10\x00\x05top"), WAIT,
             "MQTTTimeoutError", "timed out after 0.4 s", connected=False, within=3, tls="verified"),
    Scenario("tls_close_between_packets_is_a_network_error", connack_then(close=True), WAIT,
             "OSError", "connection closed by broker", connected=False, tls="verified"),
]


@pytest.mark.parametrize("s", SCENARIOS, ids=lambda s: s.id)
def test_hostile_broker(fake, request, s):
    """The client raises the scenario's error, naming the fault, within its bounds."""
    server_tls, tls = None, {}
    if s.tls == "hello-only":
        tls = {"ssl": True}
    elif s.tls == "verified":
        server_tls, ca = request.getfixturevalue("tls_server")
        tls = {"ssl": True, "ca": ca}
    b = fake(s.broker, server_tls)
    out, dt, stdout = run_client(b.port, s.action, **tls)
    expect(out, s.cls, s.text)
    if s.connected is not None:
        assert f"CONNECTED {s.connected}" in stdout, stdout
    if s.within is not None:
        assert dt < s.within, dt


# ---- what needs more than an error: the refusals' codes, what the broker and the callback saw ----

@pytest.mark.parametrize("code,name", [(1, "unacceptable protocol version"), (2, "identifier rejected"),
                                       (3, "server unavailable"), (4, "bad user name or password"),
                                       (5, "not authorized")])
def test_connack_refusal_codes_raise_connect_error_with_name(fake, code, name):
    b = fake(lambda conn, b: (b.read(conn), conn.sendall(bytes([0x20, 2, 0, code])), b.read(conn)))
    out, _, stdout = run_client(b.port, "c.connect()")
    expect(out, "MQTTConnectError", name)
    assert out.endswith(f"| {code}")
    assert "CONNECTED False" in stdout


def test_oversized_publishes_are_skipped_acknowledged_and_the_session_kept(fake):
    """Over max_packet: read and dropped in pieces, QoS 1 acknowledged (no redelivery), handed to
    the callback as (None, None); the next message arrives and the session stays up (a retained
    20 KB command cannot jam it)."""
    def script(conn, b):
        assert b.read(conn)[0] == 0x10
        conn.sendall(CONNACK_OK)
        conn.sendall(publish_packet(b"cmd/big", b"x" * 20000, qos=1, pid=7, flags=1))
        conn.sendall(publish_packet(b"t" * 600, b"y", qos=0))          # the topic alone is too big
        conn.sendall(publish_packet(b"cmd/small", b"ok", qos=1, pid=8))
        while b.read(conn) is not None:
            pass
    b = fake(script)
    out, _, stdout = run_client(b.port, "c.connect()\nfor _ in range(3): c.wait_msg(2)\n"
                                        "print('RETAINED', c.retained)",
                                client={"max_packet": 512})
    assert "OUTCOME OK" in out and "CONNECTED True" in stdout, stdout
    assert "RETAINED 0" in stdout, stdout
    assert "GOT [(None, None), (None, None), (b'cmd/small', b'ok')]" in stdout, stdout
    b.done.wait(5)
    acks = [p[1] for p in b.received[1:] if p and p[0] == 0x40]
    assert acks == [b"\x00\x07", b"\x00\x08"], b.received


def test_retained_flag_is_visible_to_the_callback(fake):
    b = fake(connack_then(publish_packet(b"cmd/x", b"r", flags=1), publish_packet(b"cmd/x", b"n")))
    out, _, stdout = run_client(b.port, "c.connect()\n"
                                        "c.set_callback(lambda t, m: got.append((m, c.retained)))\n"
                                        "c.wait_msg(2)\nc.wait_msg(2)")
    assert "OUTCOME OK" in out and "GOT [(b'r', 1), (b'n', 0)]" in stdout, stdout


def test_never_ending_publish_flood_does_not_starve_a_qos1_timeout(fake):
    """Valid PUBLISHes forever, never the PUBACK: publish() still gives up within its bound."""
    def script(conn, b):
        b.read(conn)
        conn.sendall(CONNACK_OK)
        conn.settimeout(0.01)
        pkt = publish_packet(b"flood", b"x" * 10)
        # Until the client gives up and closes: a flood that never ends (the client process's
        # own timeout fails the test if it never does).
        while True:
            try:
                conn.sendall(pkt)
            except socket.timeout:
                pass
            except OSError:
                b.gave_up = True
                return
            time.sleep(0.001)
    b = fake(script)
    b.gave_up = False
    out, dt, stdout = run_client(b.port, "c.connect()\nc.publish('t', 'm', qos=1)", client={"retries": 1})
    expect(out, "MQTTTimeoutError", "no PUBACK for packet id 1 after 2 transmissions")
    assert "b'flood'" in stdout  # the flood was processed meanwhile
    assert b.done.wait(10) and b.gave_up   # it gave up and closed while the flood went on


# ---- QoS 1 retransmission and keepalive ----

def test_qos1_retransmits_with_dup_and_ignores_the_echo_puback(fake):
    def script(conn, b):
        b.read(conn)
        conn.sendall(CONNACK_OK)
        b.read(conn)                  # the first: ignored, no PUBACK
        second = b.read(conn)         # the retransmission
        pid = second[1][5:7]
        conn.sendall(b"\x40\x02" + pid + b"\x40\x02" + pid)  # acked twice, as for two copies
        while b.read(conn) is not None:
            pass
    b = fake(script)
    out, dt, stdout = run_client(b.port, "c.connect()\nc.publish('t/1', 'hello', qos=1)\n"
                                         "c.wait_msg(0.2)\nc.publish('t/1', 'again')")
    assert out == "OUTCOME OK", stdout
    assert "CONNECTED True" in stdout
    first, second = b.received[1], b.received[2]
    assert first[0] == 0x32 and second[0] == 0x3A  # same packet, DUP set
    assert first[1] == second[1] and second[1].endswith(b"hello")
    assert b.received[3] == (0x30, b"\x00\x03t/1again")


def test_keepalive_sends_pingreq_and_detects_a_dead_link(fake):
    """keepalive=1: PINGREQ after 0.5 s idle; no PINGRESP within timeout -> the link is dead."""
    def script(conn, b):
        b.read(conn)
        conn.sendall(CONNACK_OK)
        while b.read(conn) is not None:
            pass
    b = fake(script)
    out, dt, stdout = run_client(b.port, "c.connect()\nwhile True:\n    c.wait_msg(5)", keepalive=1)
    expect(out, "MQTTTimeoutError", "link dead: no PINGRESP within 0.4 s")
    assert "CONNECTED False" in stdout
    assert dt < 4
    b.done.wait(5)
    assert (0xC0, b"") in b.received


def test_keepalive_answered_keeps_the_link(fake):
    def script(conn, b):
        b.read(conn)
        conn.sendall(CONNACK_OK)
        while True:
            p = b.read(conn)
            if p is None:
                return
            if p[0] == 0xC0:
                conn.sendall(b"\xd0\x00")
    b = fake(script)
    action = ("c.connect()\nimport time\nt0 = time.ticks_ms()\n"
              "while time.ticks_diff(time.ticks_ms(), t0) < 1800:\n    c.wait_msg(0.3)\n"
              "c.disconnect()")
    out, _, stdout = run_client(b.port, action, keepalive=1)
    assert out == "OUTCOME OK", stdout
    b.done.wait(5)
    pings = [p for p in b.received if p and p[0] == 0xC0]
    assert 2 <= len(pings) <= 5, b.received
    assert b.received[-2] == (0xE0, b"")


# ---- over TLS ----

@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """(server SSLContext for CN=localhost, path of the CA in DER) for a fake TLS broker."""
    import ssl

    from support import certfactory as cf
    from cryptography.hazmat.primitives import serialization

    d = tmp_path_factory.mktemp("tls")
    ca_key, key = cf.ec_key(), cf.ec_key()
    ca = cf.make_cert("Test CA", ca_key, ca=True)
    cert = cf.make_cert("localhost", key, ca_key, "Test CA")
    (d / "ca.der").write_bytes(cf.der(ca))
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                      serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # what MicroPython speaks
    ctx.load_cert_chain(d / "server.pem", d / "server.key")
    return ctx, str(d / "ca.der")


def test_tls_packets_sharing_one_record_are_all_seen_by_check_msg(fake, tls_server):
    """CONNACK and three PUBLISHes in one TLS record: after connect() the PUBLISHes sit
    decrypted inside mbedTLS, invisible to a poll of the plain socket; the non-blocking
    check_msg() must still find every one."""
    ctx, ca = tls_server
    pubs = b"".join(publish_packet(b"t/%d" % i, b"m%d" % i) for i in range(3))

    def script(conn, b):
        b.read(conn)
        conn.sendall(CONNACK_OK + pubs)  # one write: one record
        while b.read(conn) is not None:
            pass
    b = fake(script, ctx)
    action = "c.connect()\nops = [c.check_msg() for _ in range(4)]\nprint('OPS', ops)\nc.disconnect()"
    out, _, stdout = run_client(b.port, action, ssl=True, ca=ca)
    assert out == "OUTCOME OK", stdout
    assert "OPS [48, 48, 48, None]" in stdout
    assert "GOT [(b't/0', b'm0'), (b't/1', b'm1'), (b't/2', b'm2')]" in stdout


def test_tls_idle_check_msg_is_cheap(fake, tls_server):
    """check_msg() on an idle TLS link must not wait: polling an SSLSocket on the unix port
    sleeps 1 ms per call, which would make 200 calls take over 200 ms."""
    ctx, ca = tls_server
    b = fake(connack_then(), ctx)
    action = ("c.connect()\nimport time\nt0 = time.ticks_us()\nfor _ in range(200):\n    c.check_msg()\n"
              "print('US', time.ticks_diff(time.ticks_us(), t0))\nc.disconnect()")
    out, _, stdout = run_client(b.port, action, ssl=True, ca=ca)
    assert out == "OUTCOME OK", stdout
    assert int(stdout.split("US ")[1].split()[0]) < 100_000, stdout


def test_tls_server_certificate_must_verify(fake, tls_server, tmp_path):
    """CERT_REQUIRED against a server whose certificate another CA signed: refused, socket closed."""
    from support import certfactory as cf
    other = tmp_path / "other-ca.der"
    other.write_bytes(cf.der(cf.make_cert("Other CA", cf.ec_key(), ca=True)))
    ctx, _ = tls_server
    b = fake(lambda conn, b: None, ctx)
    out, _, stdout = run_client(b.port, "c.connect()", ssl=True, ca=str(other))
    expect(out, "ValueError", "not correctly signed by the trusted CA")
    assert "CONNECTED False" in stdout


# ---- encoding: variable lengths, long topics, large messages ----

def test_remaining_length_encoding_boundaries():
    """_enc_len against the spec's table (MQTT 3.1.1, 2.2.3), up to 268,435,455; beyond: ValueError."""
    values = [0, 127, 128, 16383, 16384, 2097151, 2097152, 268435455]
    r = run_mp(script=MP / "mqtt_enc_len.py", args=values, path=[MPY_DIR])
    assert r.returncode == 0, r.stdout + r.stderr
    for n in values:
        assert f"LEN {n} {varint(n).hex()}" in r.stdout
    assert "BIG PUBLISH too large for MQTT" in r.stdout


def test_long_topics_and_large_messages_both_ways(fake):
    """PUBLISHes over the one-write buffer (300 B topic, 20 KB message) go out intact, with
    2- and 3-byte remaining lengths; a 16,000 B message comes in intact."""
    topic = b"t/" + b"x" * 298
    big_in = publish_packet(b"in/big", bytes(range(256)) * 62 + b"end!")

    def script(conn, b):
        b.read(conn)
        conn.sendall(CONNACK_OK)
        b.read(conn)                  # QoS 0, long topic
        op, body = b.read(conn)       # QoS 1, large message
        conn.sendall(b"\x40\x02" + body[7:9] + big_in)  # PUBACK, then a large PUBLISH
        while b.read(conn) is not None:
            pass
    b = fake(script)
    action = (f"c.connect()\nc.publish(b'{topic.decode()}', b'small', qos=0)\n"
              "c.publish('t/big', bytes(20000), qos=1)\nc.wait_msg(2)\n"
              "print('IN', got[0][0], len(got[0][1]), got[0][1][-4:])\nc.disconnect()")
    out, _, stdout = run_client(b.port, action)
    assert out == "OUTCOME OK", stdout
    assert "IN b'in/big' 15876 b'end!'" in stdout
    assert b.received[1] == (0x30, struct.pack("!H", len(topic)) + topic + b"small")
    op, body = b.received[2]
    assert op == 0x32 and body[:7] == b"\x00\x05t/big" and body[9:] == bytes(20000)
