"""A loopback TCP proxy for tests that can cut, refuse or blackhole the link between a device and the broker.

Modes:
  forward    bytes flow both ways (the normal link)
  blackhole  connections stay open but nothing is forwarded either way (a dead route:
             no RST, no FIN; only keepalive can notice)
  refuse     new connections are closed at once (the broker's port is unreachable)
`cut()` closes every open connection (a broker restart as the device sees it).
Only ever binds and connects to 127.0.0.1.
"""
import select
import socket
import threading


class Proxy:
    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
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
            self.accepted += 1
            with self._lock:
                self._pairs.append((c, u))
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, a, b):
        peers = {a: b, b: a}
        try:
            while not self._stop:
                r, _, _ = select.select([a, b], [], [], 0.2)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    if self.mode == "forward":
                        peers[s].sendall(data)
                    # blackhole: read and drop, never answer, never close
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                if (a, b) in self._pairs:
                    self._pairs.remove((a, b))
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass
