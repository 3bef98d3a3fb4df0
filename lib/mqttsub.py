# A cold part of lib/mqtt.py: subscribe(), unsubscribe() and resubscribe(),
# loaded for the call and dropped again (see lib/mqttconn.py). Errors are raised
# by their number in lib/mqttmsg.py (same numbers as mqtt.py's constants).
# Nothing here is called directly: use mqtt.MQTTClient.
from micropython import const
import struct
from time import ticks_diff, ticks_ms

from mqtt import _b, _enc_len, _err, _kind

_V_QOS = const(6)
_V_FILTER = const(9)
_E_SUBACK = const(15)
_T_ACK = const(16)


def subscribe(c, topic, qos):
    if qos != 0 and qos != 1:
        raise _err(_V_QOS)
    topic = _b(topic)
    rc = _sub(c, 0x82, topic, bytes((qos,)))
    if rc == 0x80:
        raise _err(_E_SUBACK, topic)
    c._subs[topic] = qos
    return rc


def unsubscribe(c, topic):
    topic = _b(topic)
    _sub(c, 0xA2, topic, b"")
    c._subs.pop(topic, None)


def resubscribe(c):
    for t, q in list(c._subs.items()):
        subscribe(c, t, q)


def _sub(c, op, topic, tail):
    # SUBSCRIBE (tail: the requested qos) or UNSUBSCRIBE one filter, wait for the ack
    tl = len(topic)
    if not 0 < tl <= 65535:
        raise _err(_V_FILTER)
    pid = c._pid()
    hdr = bytearray(9)
    hdr[0] = op
    i = _enc_len(hdr, 1, 4 + tl + len(tail))
    struct.pack_into("!HH", hdr, i, pid, tl)
    c._await = pid
    c._ack = -1
    c._send(bytes(hdr[:i + 4]) + topic + tail)
    t0 = ticks_ms()
    while c._await == pid:
        left = c._tmo - ticks_diff(ticks_ms(), t0)
        if left <= 0:
            raise c._fail(_T_ACK, _kind(op + 0x10), c.timeout)
        c._pkt(left)
    return c._ack
