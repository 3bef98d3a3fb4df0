# The wording of every error lib/mqtt.py raises: loaded only to word one (mqtt.py
# drops it again), so the texts cost no heap while nothing goes wrong.
from micropython import const

from mqtt import MQTTConnectError, MQTTError, MQTTProtocolError, MQTTTimeoutError

# Every message the client words, numbered from 0, one per line, the first letter
# naming the class raised (V ValueError, P MQTTProtocolError, T MQTTTimeoutError, E
# MQTTError, C MQTTConnectError). Then the CONNACK refusal names (by return code) and
# the packet type names (by type number), only to word an error. mqtt.py and
# mqttconn.py raise by these numbers (their _V_*, _P_*, _T_* constants, inlined by
# MicroPython, so each module has its own): tests/host/test_mqtt_errors.py keeps them in step.
_MSGS = """Vkeepalive must be 0..65535 s
Va password needs a user name
Vssl must be an SSLContext (ssl=True is not supported)
Vwill qos must be 0, 1 or 2
Vwill topic must not be empty
VCONNECT field longer than 65535 bytes
Vqos must be 0 or 1 (QoS 2 is not supported)
Vtopic must be 1..65535 bytes
VPUBLISH too large for MQTT
Vtopic filter must be 1..65535 bytes
Tno CONNACK within %s s
Preserved CONNACK flags 0x%02x set
PCONNACK with invalid return code %d
PCONNACK claims a session present for a clean session
Tno PUBACK for packet id %d after %d transmissions, %s s apart
Ebroker refused the subscription to %r (SUBACK 0x80)
Tno %s within %s s
Tlink dead: no PINGRESP within %s s (keepalive %d s)
Pmalformed remaining length in %s (0x%02x): more than 4 bytes
P%s (0x%02x) of %d bytes exceeds max_packet %d
Pexpected CONNACK, got %s (0x%02x)
PPUBLISH with QoS %d (only 0 and 1 are subscribed)
PPUBLISH remaining length too short for its header
PPUBLISH topic length %d exceeds the packet
PPUBLISH with an empty topic name
Preserved flags set in %s (0x%02x)
Punexpected %s (0x%02x) from broker
Pbad %s remaining length %d (expected %d)
PPUBACK for unknown packet id %d
P%s for packet id %d, none awaited
PSUBACK with invalid return code 0x%02x
Ttimed out after %s s in the middle of a %s
Pconnection closed mid-packet: truncated %s
T%s timed out after %s s
Cconnection refused by broker: %s (CONNACK return code %d)
-unacceptable protocol version
-identifier rejected
-server unavailable
-bad user name or password
-not authorized
-reserved(0)
-CONNECT
-CONNACK
-PUBLISH
-PUBACK
-PUBREC
-PUBREL
-PUBCOMP
-SUBSCRIBE
-SUBACK
-UNSUBSCRIBE
-UNSUBACK
-PINGREQ
-PINGRESP
-DISCONNECT
-reserved(15)"""
_NAMES = const(40)  # + packet type 0..15 (mqtt._kind counts on it)


def _line(i):
    m = _MSGS
    s = 0
    while i:
        s = m.index("\n", s) + 1
        i -= 1
    e = m.find("\n", s)
    return m[s:e] if e >= 0 else m[s:]


def name(i):
    """The name on line i of _MSGS (a "-" line: a CONNACK refusal or a packet type)."""
    return _line(i)[1:]


def err(i, *a):
    """The exception worded by line i of _MSGS (% a)."""
    m = _line(i)
    c = "VPTEC".index(m[0])
    e = (ValueError, MQTTProtocolError, MQTTTimeoutError, MQTTError, MQTTConnectError)[c](m[1:] % a)
    if c == 4:  # MQTTConnectError: .reason (the return code's name) and .code
        setattr(e, "reason", a[0])
        setattr(e, "code", a[1])
    return e
