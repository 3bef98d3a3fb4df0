# MQTT 3.1.1 client for MicroPython with a umqtt.simple-compatible surface.
#
# Same calls as micropython-lib's umqtt.simple (MQTTClient, connect, publish,
# subscribe, set_callback, check_msg, wait_msg, ping, disconnect,
# set_last_will), plus: timeouts on connect, TLS handshake and every read;
# QoS 1 retransmission with DUP; automatic keepalive with dead-link detection;
# resubscribe() after a reconnect; bounded packet sizes; and a named
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
# - CONNACK refusals raise MQTTConnectError (.code 1..5).
# - A SUBACK failure (0x80) raises MQTTError; the connection stays open.
# - Wrong arguments raise ValueError before anything is sent.
# After an OSError, MQTTTimeoutError or MQTTProtocolError the socket is closed
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

from micropython import const
import errno
import select
import socket
import struct
from time import ticks_diff, ticks_ms

_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBACK = const(0x90)
_UNSUBACK = const(0xB0)
_PINGRESP = const(0xD0)
_MAX_LEN = const(268435455)  # largest remaining length MQTT can encode
_TXBUF = const(256)  # PUBLISH packets up to this size are sent with one write

# packet type names by type number, split only to word an error
_NAMES = ("reserved(0) CONNECT CONNACK PUBLISH PUBACK PUBREC PUBREL PUBCOMP SUBSCRIBE SUBACK"
          " UNSUBSCRIBE UNSUBACK PINGREQ PINGRESP DISCONNECT reserved(15)")
_REFUSED = (
    None,
    "unacceptable protocol version",
    "identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
)


class MQTTError(Exception):
    """Base class of every error this module raises itself (not OSError)."""


class MQTTProtocolError(MQTTError):
    """The broker sent something MQTT 3.1.1 does not allow here.

    The message names the fault. The client has closed the socket."""


class MQTTTimeoutError(MQTTError):
    """A connect, handshake, read or awaited response exceeded its time bound.

    The client has closed the socket."""


class MQTTConnectError(MQTTError):
    """The broker refused the connection in its CONNACK.

    .code is the return code (1..5), .reason its name; the socket is closed."""

    def __init__(self, code):
        self.code = code
        self.reason = _REFUSED[code]
        super().__init__(
            "connection refused by broker: %s (CONNACK return code %d)" % (self.reason, code)
        )


def _kind(op):
    return _NAMES.split()[op >> 4]


def _name(op):
    return "%s (0x%02x)" % (_kind(op), op)


def _b(s):
    return s.encode() if type(s) is str else s


class MQTTClient:
    """An MQTT 3.1.1 client; QoS 0 and 1.

    client_id, user, password, topics and messages may be str or bytes.
    port 0 means 8883 with ssl, 1883 without. ssl is an SSLContext (its
    wrap_socket gets server_hostname, default server) or True for the legacy
    ssl.wrap_socket(sock, **ssl_params). An SSLContext made with
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

    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None, ssl_params={}, *, server_hostname=None, timeout=10, retries=2,
                 max_packet=16384):
        if not 0 <= keepalive <= 65535:
            raise ValueError("keepalive must be 0..65535 s")
        if password is not None and user is None:
            raise ValueError("a password needs a user name")
        if port == 0:
            port = 8883 if ssl else 1883
        self.client_id = _b(client_id)
        self.server = server
        self.port = port
        self.user = None if user is None else _b(user)
        self.pswd = None if password is None else _b(password)
        self.keepalive = keepalive
        self.ssl = ssl
        self.ssl_params = ssl_params
        self.server_hostname = server_hostname
        self.timeout = timeout
        self.retries = retries
        self.max_packet = max_packet
        self.sock = None
        self.cb = None
        self.lw_topic = None
        self.lw_msg = None
        self.lw_qos = 0
        self.lw_retain = False
        self.pid = 0
        self._raw = None
        self._poll = None  # polls the plain socket (see _start)
        self._tmo = 86400000 if timeout is None else int(timeout * 1000)  # None: one day
        self._subs = {}  # topic filter (bytes) -> qos, for resubscribe()
        self._inflight = []  # packet ids of QoS 1 PUBLISHes awaiting PUBACK
        self._dup_pid = -1  # last id acked after a retransmission: its echo PUBACK is ignored
        self._await = -1  # packet id of the SUBSCRIBE/UNSUBSCRIBE awaiting its ack
        self._ack = -1  # SUBACK return code once it arrived
        self._ping_t = -1  # ticks_ms of the outstanding PINGREQ, or -1
        self._tx_t = 0
        self._rx_t = 0
        self._rb = bytearray(4)
        mv = memoryview(self._rb)
        self._rb1 = mv[:1]
        self._rb2 = mv[:2]
        self._tx = bytearray(_TXBUF)  # small packets are assembled here and sent in one write
        self._txm = memoryview(self._tx)

    # ---- configuration (umqtt.simple surface) ----

    def set_callback(self, f):
        """f(topic, msg) is called with bytes for every PUBLISH received."""
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        """Register the will sent with the next connect(); ValueError on bad qos/topic."""
        if not 0 <= qos <= 2:
            raise ValueError("will qos must be 0, 1 or 2")
        if not topic:
            raise ValueError("will topic must not be empty")
        self.lw_topic = _b(topic)
        self.lw_msg = _b(msg)
        self.lw_qos = qos
        self.lw_retain = retain

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
        self._drop()
        tmo = self.timeout if timeout is None else timeout
        pkt = self._connect_packet(clean_session)
        self._inflight = []
        self._dup_pid = self._await = self._ping_t = -1
        ai = socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM)[0]
        raw = socket.socket(ai[0], socket.SOCK_STREAM)
        self._raw = self.sock = raw
        try:
            raw.settimeout(tmo)
            raw.connect(ai[-1])
        except OSError as e:
            raise self._ioerr(e, "TCP connect to %s:%d" % (self.server, self.port), tmo)
        try:
            raw.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: the constants are not exported
        except OSError:
            pass
        if self.ssl:
            try:
                if self.ssl is True:  # legacy: ssl.wrap_socket(sock, **ssl_params)
                    import ssl

                    kw = dict(self.ssl_params)
                    if "server_hostname" not in kw:
                        kw["server_hostname"] = self.server_hostname or self.server
                    self.sock = ssl.wrap_socket(raw, **kw)
                else:
                    self.sock = self.ssl.wrap_socket(
                        raw, server_hostname=self.server_hostname or self.server
                    )
            except OSError as e:
                raise self._ioerr(e, "TLS handshake", tmo)
            except Exception as e:  # certificate verification: ValueError on some ports
                raise self._fail(e)
        if tmo != self.timeout:
            raw.settimeout(self.timeout)
        self._poll = select.poll()
        self._poll.register(raw, select.POLLIN)
        self._send(pkt)
        op = self._start(int(tmo * 1000) if tmo is not None else self._tmo)
        if op < 0:
            raise self._fail(MQTTTimeoutError("no CONNACK within %s s" % tmo))
        if op != _CONNACK:
            raise self._proto("expected CONNACK, got " + _name(op))
        n = self._read_len(op)
        if n != 2:
            raise self._proto("bad CONNACK remaining length %d (expected 2)" % n)
        rb = self._read_into(self._rb2, op)
        flags = rb[0]
        rc = rb[1]
        if flags & 0xFE:
            raise self._proto("reserved CONNACK flags 0x%02x set" % flags)
        if rc:
            if rc < len(_REFUSED):
                raise self._fail(MQTTConnectError(rc))
            raise self._proto("CONNACK with invalid return code %d" % rc)
        if clean_session and flags:
            raise self._proto("CONNACK claims a session present for a clean session")
        self._rx_t = ticks_ms()
        return flags & 1

    def _connect_packet(self, clean_session):
        fields = [self.client_id]
        flags = 0x02 if clean_session else 0
        if self.lw_topic:
            fields.append(self.lw_topic)
            fields.append(self.lw_msg)
            flags |= 0x04 | self.lw_qos << 3 | (0x20 if self.lw_retain else 0)
        if self.user is not None:
            fields.append(self.user)
            flags |= 0x80
            if self.pswd is not None:
                fields.append(self.pswd)
                flags |= 0x40
        n = 10
        for f in fields:
            if len(f) > 65535:
                raise ValueError("CONNECT field longer than 65535 bytes")
            n += 2 + len(f)
        pkt = bytearray(n + 5)
        pkt[0] = 0x10
        i = _enc_len(pkt, 1, n)
        struct.pack_into("!H4sBBH", pkt, i, 4, b"MQTT", 4, flags, self.keepalive)
        i += 10
        for f in fields:
            struct.pack_into("!H", pkt, i, len(f))
            pkt[i + 2 : i + 2 + len(f)] = f
            i += 2 + len(f)
        return memoryview(pkt)[:i]

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
        if type(topic) is str:
            topic = topic.encode()
        if type(msg) is str:
            msg = msg.encode()
        op = 0x31 if retain else 0x30
        if not qos:
            self._pub(topic, msg, op, 0)
            return
        if qos != 1:
            raise ValueError("qos must be 0 or 1 (QoS 2 is not supported)")
        pid = self._new_pid()
        op |= 0x02
        self._pub(topic, msg, op, pid)
        inflight = self._inflight
        inflight.append(pid)
        n = 0
        while True:
            t0 = ticks_ms()
            while pid in inflight:
                left = self._tmo - ticks_diff(ticks_ms(), t0)
                if left <= 0:
                    break
                self._wait_packet(left)
            else:
                if n:
                    self._dup_pid = pid
                return
            if n >= self.retries:
                raise self._fail(MQTTTimeoutError(
                    "no PUBACK for packet id %d after %d transmissions, %s s apart"
                    % (pid, n + 1, self.timeout)))
            n += 1
            self._pub(topic, msg, op | 0x08, pid)  # DUP

    def _pub(self, topic, msg, op, pid):
        # build and send one PUBLISH; small ones go out in a single write
        tl = len(topic)
        ml = len(msg)
        if not 0 < tl <= 65535:
            raise ValueError("topic must be 1..65535 bytes")
        sz = 2 + tl + ml
        if pid:
            sz += 2
        if sz > _MAX_LEN:
            raise ValueError("PUBLISH too large for MQTT")
        tx = self._tx
        txm = self._txm
        tx[0] = op
        i = _enc_len(tx, 1, sz)
        tx[i] = tl >> 8
        tx[i + 1] = tl & 0xFF
        i += 2
        if i + tl + 2 > _TXBUF:  # long topic: four writes
            self._send(tx, i)
            self._send(topic)
            if pid:
                self._send(struct.pack("!H", pid))
            self._send(msg)
            return
        txm[i : i + tl] = topic
        i += tl
        if pid:
            tx[i] = pid >> 8
            tx[i + 1] = pid & 0xFF
            i += 2
        if i + ml <= _TXBUF:  # the whole packet: one write, one TLS record
            txm[i : i + ml] = msg
            self._send(tx, i + ml)
        else:
            self._send(tx, i)
            self._send(msg)

    def subscribe(self, topic, qos=0):
        """Subscribe to one filter and wait for the SUBACK; return the granted qos.

        Incoming PUBLISHes are delivered meanwhile. The filter is remembered
        for resubscribe(). A SUBACK failure (0x80) raises MQTTError and the
        connection stays open; no SUBACK within timeout raises MQTTTimeoutError.
        """
        if qos != 0 and qos != 1:
            raise ValueError("qos must be 0 or 1 (QoS 2 is not supported)")
        topic = _b(topic)
        tl = len(topic)
        if not tl or tl > 65535:
            raise ValueError("topic filter must be 1..65535 bytes")
        pid = self._new_pid()
        hdr = bytearray(9)
        hdr[0] = 0x82
        i = _enc_len(hdr, 1, 5 + tl)
        struct.pack_into("!HH", hdr, i, pid, tl)
        pkt = bytes(hdr[: i + 4]) + topic + bytes((qos,))
        self._await = pid
        self._ack = -1
        self._send(pkt)
        self._await_ack(pid, "SUBACK")
        rc = self._ack
        if rc == 0x80:
            raise MQTTError("broker refused the subscription to %r (SUBACK 0x80)" % topic)
        self._subs[topic] = qos
        return rc

    def unsubscribe(self, topic):
        """Unsubscribe from one filter, wait for UNSUBACK, forget the filter.

        Incoming PUBLISHes are delivered meanwhile; no UNSUBACK within timeout
        raises MQTTTimeoutError (connection closed)."""
        topic = _b(topic)
        tl = len(topic)
        if not tl or tl > 65535:
            raise ValueError("topic filter must be 1..65535 bytes")
        pid = self._new_pid()
        hdr = bytearray(9)
        hdr[0] = 0xA2
        i = _enc_len(hdr, 1, 4 + tl)
        struct.pack_into("!HH", hdr, i, pid, tl)
        self._await = pid
        self._send(bytes(hdr[: i + 4]) + topic)
        self._await_ack(pid, "UNSUBACK")
        self._subs.pop(topic, None)

    def resubscribe(self):
        """Subscribe again to every remembered filter (call after a reconnect).

        Stops at the first failure and raises it, as subscribe() does."""
        for t, q in list(self._subs.items()):
            self.subscribe(t, q)

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
        self._keepalive()
        return self._wait_packet(0)

    def wait_msg(self, timeout=None):
        """Wait up to timeout seconds (default: the client timeout) for one
        incoming packet and process it; return its first byte, or None if none
        came. Keepalive pings are sent while waiting."""
        ms = self._tmo if timeout is None else int(timeout * 1000)
        t0 = ticks_ms()
        while True:
            self._keepalive()
            left = ms - ticks_diff(ticks_ms(), t0)
            if left < 0:
                left = 0
            step = self._ka_due()
            if step > left:
                step = left
            op = self._wait_packet(step)
            if op is not None or step >= left:
                return op

    # ---- internals ----

    def _new_pid(self):
        pid = self.pid
        while True:
            pid = pid + 1 if pid < 65535 else 1
            if pid not in self._inflight:
                self.pid = pid
                return pid

    def _await_ack(self, pid, what):
        t0 = ticks_ms()
        while self._await == pid:
            left = self._tmo - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                raise self._fail(MQTTTimeoutError("no %s within %s s" % (what, self.timeout)))
            self._wait_packet(left)

    def _ka_due(self):
        # ms until the keepalive needs attention
        if not self.keepalive:
            return 0x3FFFFFFF
        now = ticks_ms()
        if self._ping_t >= 0:
            return max(0, self._tmo - ticks_diff(now, self._ping_t))
        half = self.keepalive * 500
        return max(0, half - max(ticks_diff(now, self._tx_t), ticks_diff(now, self._rx_t)))

    def _keepalive(self):
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        if not self.keepalive:
            return
        now = ticks_ms()
        if self._ping_t >= 0:
            if ticks_diff(now, self._ping_t) >= self._tmo:
                raise self._fail(MQTTTimeoutError(
                    "link dead: no PINGRESP within %s s (keepalive %d s)" % (self.timeout, self.keepalive)
                ))
        elif (ticks_diff(now, self._tx_t) >= self.keepalive * 500
              or ticks_diff(now, self._rx_t) >= self.keepalive * 500):
            self.ping()

    def _start(self, ms):
        # Wait up to ms for a packet to start; return its first byte, or -1.
        s = self.sock
        if s is None:
            raise OSError(errno.ENOTCONN, "not connected")
        if s is self._raw:  # plain TCP: poll() sees every byte
            for _ in self._poll.ipoll(ms):
                return self._read_into(self._rb1, 0, True)[0]
            return -1
        # TLS: mbedTLS may hold decrypted bytes the plain socket no longer shows, and
        # polling the SSLSocket itself costs a 1 ms sleep per call on the unix port.
        # So: try a non-blocking read (it serves buffered bytes first), and between
        # tries wait on the plain socket, where anything new must arrive.
        t0 = ticks_ms()
        rb = self._rb1
        s.setblocking(False)
        try:
            while True:
                try:
                    r = s.readinto(rb)
                except OSError as e:
                    if e.args[0] != errno.EAGAIN:
                        raise self._ioerr(e, "reading a packet")
                    r = None
                if r is not None:
                    break
                left = ms - ticks_diff(ticks_ms(), t0)
                if left <= 0:
                    return -1
                for _ in self._poll.ipoll(left):
                    break
        finally:
            if self.sock is not None:
                self._raw.settimeout(self.timeout)  # blocking again, with the timeout
        if not r:
            raise self._fail(OSError(errno.ECONNRESET, "connection closed by broker"))
        return self._rb[0]

    def _wait_packet(self, ms):
        # wait up to ms for a packet to start; read and process it; return its first byte
        op = self._start(ms)
        if op < 0:
            return None
        self._rx_t = ticks_ms()
        t = op & 0xF0
        if t == _PUBLISH:
            self._recv_publish(op)
            return op
        if op & 0x0F:
            raise self._proto("reserved flags set in " + _name(op))
        if t == _PUBACK or t == _UNSUBACK:
            want = 2
        elif t == _SUBACK:
            want = 3
        elif t == _PINGRESP:
            want = 0
        else:
            raise self._proto("unexpected %s from broker" % _name(op))
        n = self._read_len(op)
        if n != want:
            raise self._proto("bad %s remaining length %d (expected %d)" % (_kind(op), n, want))
        if not n:
            self._ping_t = -1  # PINGRESP
            return op
        rb = self._read_into(self._rb2, op)
        pid = rb[0] << 8 | rb[1]
        if t == _PUBACK:
            if pid in self._inflight:
                self._inflight.remove(pid)
            elif pid != self._dup_pid:
                raise self._proto("PUBACK for unknown packet id %d" % pid)
            return op
        if pid != self._await:
            raise self._proto("%s for packet id %d, none awaited" % (_kind(op), pid))
        if n == 3:
            rc = self._read_into(self._rb1, op)[0]
            if rc != 0 and rc != 1 and rc != 0x80:
                raise self._proto("SUBACK with invalid return code 0x%02x" % rc)
            self._ack = rc
        self._await = -1
        return op

    def _recv_publish(self, op):
        qos = op >> 1 & 3
        if qos > 1:
            raise self._proto("PUBLISH with QoS %d (only 0 and 1 are subscribed)" % qos)
        n = self._read_len(op) - (4 if qos else 2)
        if n < 0:
            raise self._proto("PUBLISH remaining length too short for its header")
        rb = self._read_into(self._rb2, op)
        tl = rb[0] << 8 | rb[1]
        n -= tl
        if n < 0:
            raise self._proto("PUBLISH topic length %d exceeds the packet" % tl)
        if not tl:
            raise self._proto("PUBLISH with an empty topic name")
        topic = self._read(tl, op)
        if qos:
            rb = self._read_into(self._rb2, op)
            pid = rb[0] << 8 | rb[1]
        msg = self._read(n, op)
        cb = self.cb
        if cb is not None:
            cb(topic, msg)
        if qos:
            tx = self._rb
            tx[0] = 0x40
            tx[1] = 2
            tx[2] = pid >> 8
            tx[3] = pid & 0xFF
            self._send(tx)

    def _read_len(self, op):
        # the variable-length remaining length: at most 4 bytes, at most max_packet
        n = 0
        sh = 0
        while True:
            b = self._read_into(self._rb1, op)[0]
            n |= (b & 0x7F) << sh
            if not b & 0x80:
                break
            if sh == 21:
                raise self._proto("malformed remaining length in %s: more than 4 bytes" % _name(op))
            sh += 7
        if n > self.max_packet:
            raise self._proto("%s of %d bytes exceeds max_packet %d" % (_name(op), n, self.max_packet))
        return n

    def _read_into(self, mv, op, first=False):
        # fill mv exactly; return the underlying buffer
        try:
            r = self.sock.readinto(mv)
        except OSError as e:
            raise self._ioerr(e, "reading " + _kind(op) if not first else "reading a packet")
        if r != len(mv):
            if r == 0 and first:
                raise self._fail(OSError(errno.ECONNRESET, "connection closed by broker"))
            self._read_rest(mv, r, op)
        return self._rb

    def _read(self, n, op):
        try:
            d = self.sock.read(n) if n else b""
        except OSError as e:
            raise self._ioerr(e, "reading " + _kind(op))
        if d is None or len(d) != n:
            buf = bytearray(n)
            k = len(d) if d else 0
            buf[:k] = d or b""
            self._read_rest(memoryview(buf), k, op)
            d = bytes(buf)
        return d

    def _read_rest(self, mv, got, op):
        # slow path: a read came back short (EOF, or a port that returns partial data)
        got = got or 0
        while got < len(mv):
            try:
                r = self.sock.readinto(mv[got:])
            except OSError as e:
                raise self._ioerr(e, "reading " + _kind(op))
            if r is None:
                raise self._fail(MQTTTimeoutError(
                    "timed out after %s s in the middle of a %s" % (self.timeout, _kind(op))))
            if not r:
                raise self._proto("connection closed mid-packet: truncated %s" % _kind(op))
            got += r

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
            raise self._ioerr(e, "sending")
        self._tx_t = ticks_ms()

    def _ioerr(self, e, what, tmo=None):
        # close, and turn a socket timeout into MQTTTimeoutError
        if e.args and (e.args[0] == errno.ETIMEDOUT or e.args[0] == errno.EAGAIN):
            return self._fail(MQTTTimeoutError(
                "%s timed out after %s s" % (what, self.timeout if tmo is None else tmo)))
        return self._fail(e)

    def _proto(self, text):
        return self._fail(MQTTProtocolError(text))

    def _fail(self, exc):
        self._drop()
        return exc

    def _drop(self):
        s = self.sock
        self.sock = None
        self._poll = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
        if self._raw is not None and self._raw is not s:
            try:
                self._raw.close()
            except OSError:
                pass
        self._raw = None


def _enc_len(buf, i, n):
    # write n as an MQTT variable-length integer at buf[i]; return the next index
    while n > 0x7F:
        buf[i] = (n & 0x7F) | 0x80
        n >>= 7
        i += 1
    buf[i] = n
    return i + 1
