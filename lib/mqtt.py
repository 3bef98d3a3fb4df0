# MQTT 3.1.1 client for MicroPython with a umqtt.simple-compatible surface.
#
# Same calls as micropython-lib's umqtt.simple (MQTTClient, connect, publish,
# subscribe, set_callback, check_msg, wait_msg, ping, disconnect,
# set_last_will), plus: timeouts on connect, TLS handshake and every read;
# QoS 1 retransmission with DUP; automatic keepalive with dead-link detection;
# resubscribe() after a reconnect; bounded packet sizes (a PUBLISH over
# max_packet is read and dropped in 256-byte pieces, acknowledged if QoS 1, and
# handed to the callback as (None, None): the session stays up); a deadline for each whole packet
# (timeout from its first byte, however slowly the rest drips in); .retained,
# the retain flag of the PUBLISH being delivered to the callback; and a named
# MQTTProtocolError for every malformed or unexpected packet.
#
# Failure model (applies to every method):
# - Network errors are OSError, raised as the socket raised them (ECONNRESET,
#   EHOSTUNREACH, EPIPE, negative mbedTLS codes, ...). The broker closing the
#   connection between packets is OSError(ECONNRESET, "connection closed by
#   broker"). A server certificate that does not verify raises what the ssl
#   module raises (ValueError with mbedTLS's reason on MicroPython 1.2x).
# - Timeouts are MQTTTimeoutError: TCP connect, TLS handshake, a read that
#   stalls mid-packet, a missing CONNACK/SUBACK/UNSUBACK/PUBACK/PINGRESP.
# - A broker that breaks the protocol raises MQTTProtocolError naming the fault.
# - CONNACK refusals raise MQTTConnectError (.code 1..5, .reason).
# - A SUBACK failure (0x80) raises MQTTError; the connection stays open.
# - Wrong arguments raise ValueError before anything is sent.
# After an OSError, MQTTTimeoutError or MQTTProtocolError the socket is closed
# first, before the error is worded: with no heap left to word it, the error is
# an MQTTError carrying its number, never a MemoryError with the socket open
# (isconnected() is False); calling a method that needs the connection then
# raises OSError(ENOTCONN). Reconnect with connect() and, if the session was
# not resumed, resubscribe(). To catch everything: except (OSError, MQTTError).
#
# Timeouts and TLS (measured on the MicroPython 1.29 unix port; the TLS layer is
# extmod/modtls_mbedtls.c, shared with the ESP32 port): an SSLSocket has no
# settimeout(); the timeout of the plain socket it wraps applies to the
# handshake and to every TLS read and write, and expiry raises
# OSError(ETIMEDOUT) (EAGAIN on some ports). An error inside mbedTLS other
# than "would block", a timeout included, is sticky: every later read or write
# on that SSLSocket fails with it, so a TLS connection cannot survive a read
# timeout. setblocking() on an SSLSocket is passed to the plain socket.
# Polling an SSLSocket with select.poll works (it counts bytes mbedTLS has
# buffered) but costs a 1 ms sleep per call on the unix port, even poll(0).
# So this client never uses a read timeout to wait for a packet that may not
# come: it tries a non-blocking read (served from mbedTLS's buffer first) and
# between tries polls the plain socket; the socket timeout only bounds the
# rest of a packet that has started.
#
# Heap: the client stays loaded for the device's whole life, so it is written
# to be small once compiled (a device's whole budget is 64 KB): few methods
# (every function costs its code plus ~150 bytes of objects), few instance
# attributes, buffers preallocated once (no allocation per packet on the hot
# paths: publish, PUBACK, PINGRESP, check_msg on an idle link). umqtt.simple's
# legacy `ssl=True` + `ssl_params` (ssl.wrap_socket) is not supported: it
# cannot verify the server on MicroPython 1.2x; pass an SSLContext.

from micropython import const
import errno
import struct
import sys
from time import ticks_diff, ticks_ms

_MAX_LEN = const(268435455)  # largest remaining length MQTT can encode
_TXBUF = const(256)  # PUBLISH packets up to this size are sent with one write

# Errors are raised by number: the texts (and the classes) are lines of _MSGS in
# lib/mqttmsg.py, loaded only to word an error.
_V_QOS = const(6)
_V_TOPIC = const(7)
_V_BIG = const(8)
_T_PUBACK = const(14)
_T_PING = const(17)
_P_LEN = const(18)
_P_MAX = const(19)
_P_NOT_CONNACK = const(20)
_P_QOS = const(21)
_P_SHORT = const(22)
_P_TOPIC_LEN = const(23)
_P_NO_TOPIC = const(24)
_P_FLAGS = const(25)
_P_UNEXPECTED = const(26)
_P_BAD_LEN = const(27)
_P_PUBACK = const(28)
_P_ACK_ID = const(29)
_P_SUBACK_RC = const(30)
_T_STALL = const(31)
_P_TRUNCATED = const(32)
_T_IO = const(33)
# remaining length of each packet type a broker may send (0xff: never from a broker)
_WANT = b"\xff\xff\x02\xff\x02\xff\xff\xff\xff\x03\xff\x02\xff\x00\xff\xff"


class MQTTError(Exception):
    """Base class of every error this module raises itself (not OSError)."""


class MQTTProtocolError(MQTTError):
    """The broker sent something MQTT 3.1.1 does not allow here (the message names
    the fault). The client has closed the socket."""


class MQTTTimeoutError(MQTTError):
    """A connect, handshake, read or awaited response exceeded its time bound.
    The client has closed the socket."""


class MQTTConnectError(MQTTError):
    """The broker refused the connection in its CONNACK: .code is the return code
    (1..5), .reason its name; the socket is closed."""


def _cold(m):
    # m: a cold part (lib/mqttconn.py: setup; mqttsub.py: subscriptions; mqttmsg.py: error
    # texts), just imported by the caller for one call. Forgotten at once, so its code is
    # reclaimed once that call returns or raises: `_cold(mqttconn).connect(...)`.
    sys.modules.pop(m.__name__, None)
    return m


def _err(i, *a):
    # the exception worded by message i of lib/mqttmsg.py; with no heap left to load the
    # words, an MQTTError carrying the number
    try:
        import mqttmsg
        return _cold(mqttmsg).err(i, *a)
    except MemoryError:
        return MQTTError(i)


def _kind(op):
    # the name of packet type op >> 4 (lib/mqttmsg.py: the names follow the 40 messages); with
    # no heap left to load the words, the type's number (allocates nothing)
    try:
        import mqttmsg
        return _cold(mqttmsg).name(40 + (op >> 4))
    except MemoryError:
        return op >> 4


def _b(s):
    return s.encode() if type(s) is str else s


def _enc_len(buf, i, n):
    # write n as an MQTT variable-length integer at buf[i]; return the next index
    while n > 0x7F:
        buf[i] = (n & 0x7F) | 0x80
        n >>= 7
        i += 1
    buf[i] = n
    return i + 1


class MQTTClient:
    """An MQTT 3.1.1 client; QoS 0 and 1.

    client_id, user, password, topics and messages may be str or bytes.
    port 0 means 8883 with ssl, 1883 without. ssl is an SSLContext; its
    wrap_socket gets server_hostname (default: server). An SSLContext made with
    PROTOCOL_TLS_CLIENT starts with verify_mode CERT_NONE on MicroPython: set
    CERT_REQUIRED and load a CA, or any server is accepted.

    timeout (seconds, default 10) bounds the TCP connect, the TLS handshake,
    every read of a started packet, every write, and each wait for a response
    (CONNACK, SUBACK, UNSUBACK, PUBACK, PINGRESP). retries is how many times an
    unacknowledged QoS 1 PUBLISH is retransmitted (with DUP) before publish()
    gives up. max_packet bounds the remaining length of any incoming packet.
    keepalive (seconds, 0 = off) is sent to the broker; check_msg() and
    wait_msg() send PINGREQ when half of it passed without a packet sent or
    received, and declare the link dead if the PINGRESP does not come within
    timeout. Name resolution (getaddrinfo) cannot be bounded.

    The callback runs inside check_msg(), wait_msg() and the waits of
    publish(qos=1), subscribe() and unsubscribe(). If it raises, the exception
    propagates to that caller and the connection stays open; a QoS 1 message
    whose callback raised is not acknowledged (the broker sends it again after
    a reconnect that resumes the session).
    """

    def __init__(self, *args, **kw):
        # MQTTClient(client_id, server, port=0, user=None, password=None, keepalive=0,
        #            ssl=None, *, server_hostname=None, timeout=10, retries=2, max_packet=16384)
        import mqttconn
        _cold(mqttconn).init(self, *args, **kw)

    # ---- configuration (umqtt.simple surface) ----

    def set_callback(self, f):
        """f(topic, msg) is called with bytes for every PUBLISH received."""
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        """Register the will sent with the next connect(); ValueError on bad qos/topic."""
        import mqttconn
        _cold(mqttconn).will(self, topic, msg, retain, qos)

    def isconnected(self):
        return self.sock is not None

    # ---- connection ----

    def connect(self, clean_session=True, timeout=None):
        """Open TCP (and TLS), send CONNECT, wait for CONNACK; return session-present (0/1).

        timeout overrides the client timeout for this connect only (getaddrinfo
        itself cannot be bounded). Raises MQTTTimeoutError (TCP connect, TLS
        handshake or CONNACK too slow), OSError (name resolution, refused,
        reset; a broker that drops us during or right after the handshake,
        e.g. for a missing client certificate, shows as EPIPE/ECONNRESET),
        whatever the ssl module raises when the server certificate does not
        verify (ValueError with mbedTLS's reason on the unix and ESP32 ports,
        e.g. "The certificate is not correctly signed by the trusted CA"),
        MQTTConnectError (broker refused: .code), MQTTProtocolError (anything
        but a valid CONNACK). On any failure the socket is closed.
        """
        import mqttconn
        return _cold(mqttconn).connect(self, clean_session, timeout)

    def disconnect(self):
        """Send DISCONNECT (best effort: errors ignored) and close the socket.

        The broker discards the last will. Remembered subscriptions are kept
        for resubscribe()."""
        if self.sock is not None:
            try:
                self.sock.write(b"\xe0\x00")
            except OSError:
                pass
        self._drop()

    # ---- sending ----

    def publish(self, topic, msg, retain=False, qos=0):
        """Send a PUBLISH. QoS 0 returns once the bytes are written.

        QoS 1 then waits for the matching PUBACK, delivering incoming
        PUBLISHes to the callback meanwhile; with no PUBACK within timeout it
        retransmits with DUP set, up to `retries` times, then closes the
        connection and raises MQTTTimeoutError. qos 2 (or any other), an empty
        topic and packets over 268,435,455 bytes raise ValueError before
        anything is sent.
        """
        topic = _b(topic)
        msg = _b(msg)
        if qos != 0 and qos != 1:
            raise _err(_V_QOS)
        tl = len(topic)
        ml = len(msg)
        if not 0 < tl <= 65535:
            raise _err(_V_TOPIC)
        sz = 2 + tl + ml + 2 * qos
        if sz > _MAX_LEN:
            raise _err(_V_BIG)
        op = 0x30 | qos << 1 | (1 if retain else 0)
        pid = self._pid() if qos else 0
        tx = self._tx
        n = 0
        while True:
            tx[0] = op
            i = _enc_len(tx, 1, sz)
            tx[i] = tl >> 8
            tx[i + 1] = tl & 0xFF
            i += 2
            if i + tl + 2 > _TXBUF:  # long topic: four writes
                self._send(tx, i)
                self._send(topic)
                if qos:
                    self._send(struct.pack("!H", pid))
                self._send(msg)
            else:
                tx[i:i + tl] = topic
                i += tl
                if qos:
                    tx[i] = pid >> 8
                    tx[i + 1] = pid & 0xFF
                    i += 2
                if i + ml <= _TXBUF:  # the whole packet: one write, one TLS record
                    tx[i:i + ml] = msg
                    self._send(tx, i + ml)
                else:
                    self._send(tx, i)
                    self._send(msg)
            if not n:
                self.io[0] += 1  # (a retransmission is the same message)
            if not qos:
                return
            if not n:
                self._inflight.append(pid)
            t0 = ticks_ms()
            while pid in self._inflight:
                left = self._tmo - ticks_diff(ticks_ms(), t0)
                if left <= 0:
                    break
                self._pkt(left)
            else:
                if n:
                    self._dup = pid
                return
            if n >= self.retries:
                raise self._fail(_T_PUBACK, pid, n + 1, self.timeout)
            n += 1
            op |= 0x08  # DUP

    def subscribe(self, topic, qos=0):
        """Subscribe to one filter and wait for the SUBACK; return the granted qos.

        Incoming PUBLISHes are delivered meanwhile. The filter is remembered
        for resubscribe(). A SUBACK failure (0x80) raises MQTTError and the
        connection stays open; no SUBACK within timeout raises MQTTTimeoutError.
        """
        import mqttsub
        return _cold(mqttsub).subscribe(self, topic, qos)

    def unsubscribe(self, topic):
        """Unsubscribe from one filter, wait for UNSUBACK, forget the filter.

        Incoming PUBLISHes are delivered meanwhile; no UNSUBACK within timeout
        raises MQTTTimeoutError (connection closed)."""
        import mqttsub
        _cold(mqttsub).unsubscribe(self, topic)

    def resubscribe(self):
        """Subscribe again to every remembered filter (call after a reconnect).

        Stops at the first failure and raises it, as subscribe() does."""
        import mqttsub
        _cold(mqttsub).resubscribe(self)

    def ping(self):
        """Send PINGREQ. check_msg()/wait_msg() consume the PINGRESP and raise
        MQTTTimeoutError if it does not come within timeout."""
        self._send(b"\xc0\x00")
        if self._ping_t < 0:
            self._ping_t = ticks_ms()

    # ---- receiving ----

    def check_msg(self):
        """Process one incoming packet if one is waiting; never waits for one.

        Returns the packet's first byte (0x30.. for a PUBLISH) or None.
        Also runs the keepalive (may send PINGREQ; MQTTTimeoutError if a
        PINGRESP is overdue). A packet that has started is read with timeout.
        """
        return self.wait_msg(0)

    def wait_msg(self, timeout=None):
        """Wait up to timeout seconds (default: the client timeout) for one
        incoming packet and process it; return its first byte, or None if none
        came. Keepalive pings are sent while waiting."""
        ms = self._tmo if timeout is None else int(timeout * 1000)
        t0 = ticks_ms()
        while True:
            # the keepalive: PINGREQ when due, a dead link if the PINGRESP is overdue;
            # step: the ms until it needs attention again
            if self.sock is None:
                raise OSError(errno.ENOTCONN, "not connected")
            step = 0x3FFFFFFF
            ka = self.keepalive * 500
            if ka:
                now = ticks_ms()
                if self._ping_t >= 0:
                    step = self._tmo - ticks_diff(now, self._ping_t)
                    if step <= 0:
                        raise self._fail(_T_PING, self.timeout, self.keepalive)
                else:
                    step = ka - max(ticks_diff(now, self._tx_t), ticks_diff(now, self._rx_t))
                    if step <= 0:
                        self.ping()
                        step = self._tmo
            left = max(0, ms - ticks_diff(ticks_ms(), t0))
            if step > left:
                step = left
            op = self._pkt(step)
            if op is not None or step >= left:
                return op

    # ---- internals ----

    def _pid(self):
        pid = self.pid
        while True:
            pid = pid % 65535 + 1
            if pid not in self._inflight:
                self.pid = pid
                return pid

    def _pkt(self, ms, connack=False):
        # Wait up to ms for a packet to start; read and process it; return its first
        # byte, or None if none came. connack: connect() awaits the CONNACK (left in _rb).
        s = self.sock
        if s is None:
            raise OSError(errno.ENOTCONN, "not connected")
        rb = self._rb
        # mbedTLS may hold decrypted bytes the plain socket no longer shows, and polling
        # an SSLSocket costs a 1 ms sleep per call on the unix port. So: try a
        # non-blocking read (it serves buffered bytes first), and between tries wait on
        # the plain socket, where anything new must arrive.
        t0 = ticks_ms()
        s.setblocking(False)  # for the whole packet: every read is bounded by its deadline
        try:
            while True:
                try:
                    r = s.readinto(rb, 1)
                except OSError as e:
                    if e.args[0] != errno.EAGAIN:
                        raise self._fail(e, "reading a packet")
                    r = None
                if r is not None:
                    break
                left = ms - ticks_diff(ticks_ms(), t0)
                if left <= 0:
                    return None
                for _ in self._poll.ipoll(left):
                    break
            if not r:
                raise self._fail(OSError(errno.ECONNRESET, "connection closed by broker"))
            self._rx_t = ticks_ms()  # also the start of the packet's deadline (_rd)
            op = rb[0]
            t = op >> 4
            # the remaining length: at most 4 bytes, at most max_packet
            n = sh = 0
            while True:
                b = self._rd(1, op)[0]
                n |= (b & 0x7F) << sh
                if not b & 0x80:
                    break
                if sh == 21:
                    raise self._fail(_P_LEN, _kind(op), op)
                sh += 7
            self.io[3] += n + 2 + sh // 7  # the whole packet: its type, length and rest
            big = n > self.max_packet
            if big and t != 3:
                raise self._fail(_P_MAX, _kind(op), op, n, self.max_packet)
            if connack and t != 2:
                raise self._fail(_P_NOT_CONNACK, _kind(op), op)
            if t == 3:  # PUBLISH
                self.io[2] += 1
                qos = op >> 1 & 3
                if qos > 1:
                    raise self._fail(_P_QOS, qos)
                n -= 4 if qos else 2
                if n < 0:
                    raise self._fail(_P_SHORT)
                rb = self._rd(2, op)
                tl = rb[0] << 8 | rb[1]
                n -= tl
                if n < 0:
                    raise self._fail(_P_TOPIC_LEN, tl)
                if not tl:
                    raise self._fail(_P_NO_TOPIC)
                # too large to hold (big): read and dropped, never allocated; the callback gets None
                topic = self._rd(tl, op, 2 if big else 1)
                if qos:
                    rb = self._rd(2, op)
                    pid = rb[0] << 8 | rb[1]
                msg = self._rd(n, op, 2 if big else 1)
                self._raw.settimeout(self.timeout)  # the callback and the PUBACK may write
                if self.cb is not None:
                    self.retained = op & 1
                    self.cb(topic, msg)
                if qos:
                    rb[0] = 0x40
                    rb[1] = 2
                    rb[2] = pid >> 8
                    rb[3] = pid & 0xFF
                    self._send(rb)
                return op
            if op & 0x0F:
                raise self._fail(_P_FLAGS, _kind(op), op)
            want = _WANT[t]
            if want == 0xFF or t == 2 and not connack:
                raise self._fail(_P_UNEXPECTED, _kind(op), op)
            if n != want:
                raise self._fail(_P_BAD_LEN, _kind(op), n, want)
            if not n:
                self._ping_t = -1  # PINGRESP
                return op
            rb = self._rd(n, op)
            if connack:
                return op
            pid = rb[0] << 8 | rb[1]
            if t == 4:  # PUBACK
                if pid in self._inflight:
                    self._inflight.remove(pid)
                elif pid != self._dup:
                    raise self._fail(_P_PUBACK, pid)
                return op
            if pid != self._await:
                raise self._fail(_P_ACK_ID, _kind(op), pid)
            if n == 3:
                if rb[2] > 1 and rb[2] != 0x80:
                    raise self._fail(_P_SUBACK_RC, rb[2])
                self._ack = rb[2]
            self._await = -1
            return op
        finally:
            if self.sock is not None:
                self._raw.settimeout(self.timeout)  # blocking again, with the timeout

    def _rd(self, n, op, how=0):
        # read exactly n bytes of packet `op` within its deadline (timeout from its first
        # byte; the socket is non-blocking): how 0: into _rb (returned); 1: as new bytes;
        # 2: dropped in pieces of _tx, which is free while receiving (returns None)
        s = self.sock
        got = 0
        b = self._tx if how == 2 else self._rb
        try:
            if how == 1:
                d = s.read(n) if n else b""
                if d is not None and len(d) == n:
                    return d
                b = bytearray(n)
                if d:
                    got = len(d)
                    b[:got] = d
            while got < n:
                k = n - got
                try:
                    if how == 2:
                        r = s.readinto(b, k if k < _TXBUF else _TXBUF)
                    else:
                        r = s.readinto(memoryview(b)[got:n]) if got else s.readinto(b, n)
                except OSError as e:
                    if e.args[0] != errno.EAGAIN:
                        raise
                    r = None
                if r is None:  # nothing yet: wait on the plain socket, within the deadline
                    left = self._tmo - ticks_diff(ticks_ms(), self._rx_t)
                    if left <= 0:
                        raise self._fail(_T_STALL, self.timeout, _kind(op))
                    for _ in self._poll.ipoll(left):
                        break
                    continue
                if not r:
                    raise self._fail(_P_TRUNCATED, _kind(op))
                got += r
        except OSError as e:
            raise self._fail(e, "reading " + _kind(op))
        if how == 1:
            return bytes(b)
        return None if how == 2 else b

    def _send(self, buf, n=-1):
        s = self.sock
        if s is None:
            raise OSError(errno.ENOTCONN, "not connected")
        try:
            if n < 0:
                s.write(buf)
            else:
                s.write(buf, n)
        except OSError as e:
            raise self._fail(e, "sending")
        self._tx_t = ticks_ms()
        self.io[1] += len(buf) if n < 0 else n

    def _fail(self, e, *a):
        # Close the connection and return the error to raise: e is an exception or the
        # number of a message (a: its % arguments); an OSError that is a socket timeout
        # while doing a[0] (a[1]: the timeout, default the client's) becomes MQTTTimeoutError.
        self._drop()  # first: wording the error needs heap, and the socket must not stay open
        if isinstance(e, int):
            e = _err(e, *a)
        elif a and e.args and (e.args[0] == errno.ETIMEDOUT or e.args[0] == errno.EAGAIN):
            e = _err(_T_IO, a[0], a[1] if len(a) > 1 else self.timeout)
        return e

    def _drop(self):
        # close the sockets (the TLS one and the plain one under it)
        s = self.sock
        raw = self._raw
        for n in ("sock", "_raw", "_poll"):  # (setattr: type checkers take the types from mqttconn)
            setattr(self, n, None)
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
        if raw is not None and raw is not s:
            try:
                raw.close()
            except OSError:
                pass
