"""A loopback TCP proxy for tests that can cut, refuse or blackhole the link between a device and the broker.

Modes:
  forward    bytes flow both ways (the normal link)
  blackhole  connections stay open but nothing is forwarded either way (a dead route:
             no RST, no FIN; only keepalive can notice)
  refuse     new connections are closed at once (the broker's port is unreachable)
`cut()` closes every open connection (a broker restart as the device sees it).
With `delay` (seconds, each way) and `rate` (bits per second, each way) the forwarded link is
shaped as a slow network is: every byte leaves `delay` after it arrived, and no faster than
`rate` (store and forward in segments of at most 1460 bytes, like TCP's on Ethernet).
Only ever binds and connects to 127.0.0.1.
"""
import collections
import select
import socket
import threading
import time

MSS = 1460


class _Shaper:
    """One direction of a shaped link: bytes handed to put() reach `out` delayed and rate-limited."""

    def __init__(self, out, delay, rate):
        self.out, self.delay, self.rate = out, delay, rate
        self.q = collections.deque()
        self.cv = threading.Condition()
        self.free = 0.0          # when the link has finished sending what is queued
        self.closed = False
        threading.Thread(target=self._run, daemon=True).start()

    def put(self, data):
        now = time.monotonic()
        with self.cv:
            for i in range(0, len(data), MSS):
                seg = data[i:i + MSS]
                start = max(now, self.free)
                self.free = start + (len(seg) * 8 / self.rate if self.rate else 0)
                self.q.append((self.free + self.delay, seg))
            self.cv.notify()

    def close(self):
        with self.cv:
            self.closed = True
            self.cv.notify()

    def _run(self):
        while True:
            with self.cv:
                while not self.q and not self.closed:
                    self.cv.wait()
                if not self.q:
                    return
                due, seg = self.q.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self.out.sendall(seg)
            except OSError:
                return


class Proxy:
    def __init__(self, target_port, target_host="127.0.0.1", delay=0.0, rate=None):
        self.target = (target_host, target_port)
        self.delay, self.rate = delay, rate
        self.mode = "forward"
        self._lock = threading.Lock()
        self._pairs = []
        self.accepted = 0
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(16)
        self.port = self._srv.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def set_mode(self, mode):
        assert mode in ("forward", "blackhole", "refuse")
        self.mode = mode

    def cut(self):
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self._stop = True
        self.cut()
        self._srv.close()

    def _accept_loop(self):
        while not self._stop:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            if self.mode == "refuse":
                c.close()
                continue
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            for s in (c, u):   # forward each segment as it comes: no Nagle delay of our own
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted += 1
            with self._lock:
                self._pairs.append((c, u))
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, a, b):
        peers = {a: b, b: a}
        if self.delay or self.rate:
            shapers = {a: _Shaper(b, self.delay, self.rate), b: _Shaper(a, self.delay, self.rate)}
        else:
            shapers = None
        try:
            while not self._stop:
                r, _, _ = select.select([a, b], [], [], 0.2)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    if self.mode == "forward":
                        if shapers:
                            shapers[s].put(data)
                        else:
                            peers[s].sendall(data)
                    # blackhole: read and drop, never answer, never close
        except (OSError, ValueError):
            pass
        finally:
            for sh in (shapers or {}).values():
                sh.close()
            with self._lock:
                if (a, b) in self._pairs:
                    self._pairs.remove((a, b))
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass
