"""MQTT 3.1.1 on the wire for the tests' fake brokers: read one packet, encode a remaining length,
build a PUBLISH. Only what a scripted broker needs; the client under test is lib/mqtt.py."""
import struct

CONNACK_OK = b"\x20\x02\x00\x00"


def read_packet(conn):
    """One MQTT packet from the socket as (first byte, body); None at EOF."""
    first = conn.recv(1)
    if not first:
        return None
    n = shift = 0
    while True:
        b = conn.recv(1)[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    body = b""
    while len(body) < n:
        chunk = conn.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return first[0], body


def varint(n):
    """The remaining-length encoding of n (MQTT 3.1.1, 2.2.3)."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic, msg, qos=0, pid=0, flags=0):
    """A PUBLISH of `msg` on `topic` (bytes); `flags` 1 is RETAIN."""
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", pid) if qos else b"") + msg
    return bytes([0x30 | qos << 1 | flags]) + varint(len(body)) + body
