"""A seeded fuzz run of lib/mqtt.py against a hostile broker: 2,000 connections, each answered with
random packets (types, flags, remaining lengths, lengths that lie, oversized PUBLISHes, garbage),
random stalls and random closes. The real client runs in one `micropython -X heapsize=64k` process
and must: raise only its documented errors (OSError or MQTTError), never hang past its deadlines,
and hold no more heap at the end than after the first cases (nothing leaks)."""
import random
import socket
import struct
import threading
import time

from support.devrun import MP, run_mp
from support.mqttwire import varint

CASES = 2000
SEED = 20261205
TMO = 0.1            # the client's timeout (s): connect, CONNACK, each whole packet
STALL = 0.15         # a stall, longer than the timeout, in a few cases


def _packet(rng):
    """One packet a hostile broker might send (valid or not)."""
    kind = rng.random()
    if kind < 0.35:      # a PUBLISH, often plausible, sometimes oversized or lying about its length
        qos = rng.choice((0, 0, 1, 1, 2, 3))
        topic = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 5, 40))))
        body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", rng.randrange(65536)) if qos else b"")
        body += bytes(rng.randrange(256) for _ in range(rng.choice((0, 3, 100, 600))))
        n = len(body) + rng.choice((0, 0, 0, -3, 5, 20000, 300000))
        return bytes([0x30 | qos << 1 | rng.randrange(2)]) + varint(max(n, 0)) + body
    if kind < 0.6:       # an ack-type packet with random flags and length
        t = rng.randrange(16)
        n = rng.choice((0, 2, 3, 4, 200))
        return bytes([t << 4 | rng.choice((0, 0, 2, 15))]) + varint(n) + bytes(rng.randrange(256) for _ in range(n))
    if kind < 0.75:      # a remaining length that never ends, or is five bytes long
        return bytes([rng.randrange(256)]) + b"\xff" * rng.randrange(1, 8)
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))     # garbage


class FuzzBroker:
    def __init__(self, seed):
        self.seed = seed
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.settimeout(5)
        self.port = self.lsock.getsockname()[1]
        self.cases = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            rng = random.Random(self.seed * 100003 + self.cases)
            self.cases += 1
            with conn:
                conn.settimeout(1)
                try:
                    self._play(conn, rng)
                except OSError:
                    pass

    def _play(self, conn, rng):
        conn.recv(4096)                       # the CONNECT
        if rng.random() < 0.8:
            conn.sendall(b"\x20\x02\x00\x00")   # accepted; then the hostile part
        for _ in range(rng.randrange(1, 5)):
            data = _packet(rng)
            if rng.random() < 0.15:           # dripped in two halves
                cut = rng.randrange(len(data) + 1)
                conn.sendall(data[:cut])
                time.sleep(0.01)
                data = data[cut:]
            conn.sendall(data)
            if rng.random() < 0.03:
                time.sleep(STALL)
        if rng.random() < 0.5:
            conn.shutdown(socket.SHUT_WR)     # EOF; otherwise the client gives up by itself
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass

    def close(self):
        self.lsock.close()


def test_two_thousand_hostile_brokers(mpy_dir):
    broker = FuzzBroker(SEED)
    try:
        t0 = time.monotonic()
        r = run_mp(script=MP / "mqtt_fuzz_client.py", args=[CASES, broker.port, TMO], heap="64k", timeout=240,
                   path=[mpy_dir])
        took = time.monotonic() - t0
    finally:
        broker.close()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in r.stdout.splitlines() if " " in ln}
    counts = eval(lines["COUNTS"])            # a dict literal printed by MicroPython
    assert sum(counts.values()) == CASES, counts
    assert not [k for k in counts if k.startswith("UNEXPECTED")], counts
    assert "MemoryError" not in r.stdout + r.stderr
    assert len(counts) >= 3, counts           # the run really met different faults
    # no case waits past its bounds: CONNACK (timeout) + three waits of 50 ms + three packet
    # deadlines (timeout each), with room for the scheduler
    assert int(lines["WORST"]) < 1000 * (4 * TMO + 0.15 + STALL) + 500, lines["WORST"]
    heaps = eval(lines["HEAPS"])
    assert max(heaps[1:]) - heaps[1] < 1024, heaps   # bounded: what one case leaves is collected
    assert broker.cases == CASES
    print(f"{CASES} cases in {took:.1f} s: {counts}, worst case {lines['WORST']} ms, heap {heaps}")
