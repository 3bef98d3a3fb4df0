# A cold part of lib/mqtt.py: setting a client up (MQTTClient(), set_last_will(), connect()).
# Subscribing is lib/mqttsub.py. Errors are raised by their number in
# lib/mqttmsg.py (same numbers as mqtt.py's constants).
#
# mqtt.py loads this module for each of those calls and drops it again, so the
# client that stays loaded for a device's whole life holds only the session's hot
# paths (publish, receiving, keepalive). A device connects once per session, and
# the smaller each cold part, the less heap a connect needs on top of the session.
# Nothing here is called directly: use mqtt.MQTTClient.
from micropython import const
import select
import socket
import struct

from mqtt import _b, _cold, _enc_len, _err

_V_KA = const(0)
_V_PSWD = const(1)
_V_SSL = const(2)
_V_WILL_QOS = const(3)
_V_WILL_TOPIC = const(4)
_V_FIELD = const(5)
_T_CONNACK = const(10)
_P_CONNACK_FLAGS = const(11)
_P_CONNACK_RC = const(12)
_P_CONNACK_SP = const(13)
_C_REFUSED = const(34)
_REFUSED = const(34)  # + return code 1..5


def init(c, client_id, server, port=0, user=None, password=None, keepalive=0,
         ssl=None, *, server_hostname=None, timeout=10, retries=2, max_packet=16384):
    if not 0 <= keepalive <= 65535:
        raise _err(_V_KA)
    if password is not None and user is None:
        raise _err(_V_PSWD)
    if ssl is True:
        raise _err(_V_SSL)
    c.client_id = _b(client_id)
    c.server = server
    c.port = port or (8883 if ssl else 1883)
    c.user = None if user is None else _b(user)
    c.pswd = None if password is None else _b(password)
    c.keepalive = keepalive
    c.ssl = ssl
    c._sni = server_hostname or server
    c.timeout = timeout
    c._tmo = 86400000 if timeout is None else int(timeout * 1000)  # None: one day
    c.retries = retries
    c.max_packet = max_packet
    c.sock = None
    c._raw = None  # the plain socket under sock (the same object without TLS)
    c._poll = None  # polls _raw (see MQTTClient._pkt)
    c.cb = None
    c._lw = None  # (topic, msg, CONNECT flags) of the last will
    c.pid = 0
    c._subs = {}  # topic filter (bytes) -> qos, for resubscribe()
    c._inflight = []  # packet ids of QoS 1 PUBLISHes awaiting PUBACK
    c._dup = -1  # last id acked after a retransmission: its echo PUBACK is ignored
    c._await = -1  # packet id of the SUBSCRIBE/UNSUBSCRIBE awaiting its ack
    c._ack = -1  # SUBACK return code once it arrived
    c._ping_t = -1  # ticks_ms of the outstanding PINGREQ, or -1
    c._tx_t = c._rx_t = 0  # _rx_t: when the last packet started (its deadline counts from it)
    c.retained = 0  # the retain flag of the PUBLISH being delivered to the callback
    # Counted since the client was made (cheap: a few integers): PUBLISHes sent, bytes sent,
    # PUBLISHes received, bytes received (whole MQTT packets), connects tried, connects made, and
    # failed connects by error (an OSError's errno, else the error's class).
    c.io = [0, 0, 0, 0, 0, 0, {}]
    c._rb = bytearray(4)  # small reads (lengths, ids) and the PUBACK we send
    c._tx = bytearray(256)  # small packets are assembled here and sent in one write


def will(c, topic, msg, retain, qos):
    if not 0 <= qos <= 2:
        raise _err(_V_WILL_QOS)
    if not topic:
        raise _err(_V_WILL_TOPIC)
    c._lw = (_b(topic), _b(msg), 4 | qos << 3 | (0x20 if retain else 0))


def connect(c, clean_session, timeout):
    io = c.io
    io[4] += 1
    try:
        r = _connect(c, clean_session, timeout)
    except Exception as e:
        f = io[6]
        k = e.errno if isinstance(e, OSError) else type(e)
        try:
            f[k] = f.get(k, 0) + 1
        except MemoryError:
            pass    # the count is lost, not the error
        raise
    io[5] += 1
    return r


def _connect(c, clean_session, timeout):
    c._drop()
    tmo = c.timeout if timeout is None else timeout
    # the CONNECT packet
    fields = [c.client_id]
    flags = 2 if clean_session else 0
    if c._lw:
        fields += c._lw[:2]
        flags |= c._lw[2]
    if c.user is not None:
        fields.append(c.user)
        flags |= 0x80
        if c.pswd is not None:
            fields.append(c.pswd)
            flags |= 0x40
    n = 10
    for f in fields:
        if len(f) > 65535:
            raise _err(_V_FIELD)
        n += 2 + len(f)
    pkt = bytearray(n + 5)
    pkt[0] = 0x10
    i = _enc_len(pkt, 1, n)
    struct.pack_into("!H4sBBH", pkt, i, 4, b"MQTT", 4, flags, c.keepalive)
    i += 10
    for f in fields:
        struct.pack_into("!H", pkt, i, len(f))
        pkt[i + 2:i + 2 + len(f)] = f
        i += 2 + len(f)
    # a new connection starts its packet ids afresh, as a new client would
    c._inflight = []
    c.pid = 0
    c._dup = c._await = c._ping_t = -1
    ai = socket.getaddrinfo(c.server, c.port, 0, socket.SOCK_STREAM)[0]
    c._raw = c.sock = raw = socket.socket(ai[0], socket.SOCK_STREAM)
    try:
        raw.settimeout(tmo)
        raw.connect(ai[-1])
    except OSError as e:
        raise c._fail(e, "TCP connect to %s:%d" % (c.server, c.port), tmo)
    try:
        raw.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: the constants are not exported
    except OSError:
        pass
    if c.ssl:
        try:
            c.sock = c.ssl.wrap_socket(raw, server_hostname=c._sni)
        except OSError as e:
            raise c._fail(e, "TLS handshake", tmo)
        except Exception as e:  # certificate verification: ValueError on some ports
            raise c._fail(e)
    if tmo != c.timeout:
        raw.settimeout(c.timeout)
    c._poll = select.poll()
    c._poll.register(raw, select.POLLIN)
    c._send(pkt, i)
    if c._pkt(c._tmo if tmo is None else int(tmo * 1000), True) is None:
        raise c._fail(_T_CONNACK, tmo)
    flags = c._rb[0]
    rc = c._rb[1]
    if flags & 0xFE:
        raise c._fail(_P_CONNACK_FLAGS, flags)
    if rc > 5:
        raise c._fail(_P_CONNACK_RC, rc)
    if rc:
        import mqttmsg
        why = _cold(mqttmsg).name(_REFUSED + rc)
        raise c._fail(_err(_C_REFUSED, why, rc))  # (mqttmsg sets .code and .reason)
    if clean_session and flags:
        raise c._fail(_P_CONNACK_SP)
    return flags
