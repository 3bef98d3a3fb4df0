"""Issue 4: reconnect after a broker restart, outbox drain after a 10,000-reading outage, and
QoS 1 throughput with retransmission enabled: the twin under micropython against paho-mqtt under
CPython, side by side against the same broker in one run.

The outage is made by writing 10,000 readings into the twin's encrypted outbox with the host's
writer (warden.logs.format.SegmentWriter: the device's format byte for byte), exactly what
the device itself keeps while its broker is unreachable; the twin then boots, connects and
drains them. The heap of these twins is HEAP: see the note in the closing figures.
"""
import os
import re
import statistics
import struct
import threading
import time

from warden.board import flashimage, twin as twinlib
from warden.broker.server import Broker
from warden.logs.format import READING, SegmentWriter

READINGS = 10_000
HEAP = "192k"
QUOTA = 800 * 1024


def _twin(fleet, thing, port, log_key, **cfg):
    ident = fleet.identity(thing)
    config = twinlib.device_config(fleet.state, thing, broker={"host": "localhost", "port": port}, **cfg)
    files = twinlib.identity_files(ident.cert_der, ident.key_der, ident.ca.read_bytes())
    return twinlib.build_flash(fleet.tmp / (thing + ".bin"), files, config, log_key=log_key)


def _prefill(flash, log_key, n, names=2):
    """n compact readings (firmware/sensors.py) in the twin's /log, as an outage leaves them."""
    files, seq, segno = {}, 1, 1
    sid = os.urandom(8)
    w = SegmentWriter(log_key, segno, seq, 1, sid)
    now = int(time.time())
    for i in range(n):
        if len(w.data) > 16384 - 16384 // 512 - 16 - 72:
            files["/log/%08x.seg" % segno] = bytes(w.data)
            segno += 1
            w = SegmentWriter(log_key, segno, w.next_seq, 1, sid)
        w.record(READING, struct.pack("<II%df" % names, 1 + i, now - n + i, 21.5, 45.0), now)
    files["/log/%08x.seg" % segno] = bytes(w.data)
    # What the outbox writes when it keeps the first reading of an outage (firmware/outbox.py):
    # readings wait after cursor 0 (a fresh flash says "0 e", nothing waiting).
    files["/state/outbox"] = b"0"
    ff = flashimage.FlashFile(flash)
    ff.write(files)
    ff.save()


class _Lines:
    def __init__(self, proc):
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc):
        for line in proc.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line))
                self.cond.notify_all()

    def wait(self, pattern, timeout, after=0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, line in self.lines:
                    if t >= after and rx.search(line):
                        return t, line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("twin never printed /%s/:\n%s" % (pattern, "".join(l for _, l in self.lines[-30:])))
                self.cond.wait(left)


def _start(flash):
    import subprocess
    argv, env = twinlib.twin_command(flash, HEAP)
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p, _Lines(p)


def drain_twin(fleet):
    key = os.urandom(32)
    flash = _twin(fleet, "bench-drain", fleet.broker.port, key, interval_ms=60000, log_quota=QUOTA)
    _prefill(flash, key, READINGS)
    p, lines = _start(flash)
    try:
        t_conn, _ = lines.wait(r"INFO mqtt: connected", 30)
        t_done, line = lines.wait(r"backlog delivered \((\d+) readings", 300)
        n = int(re.search(r"\((\d+) readings", line).group(1))
    finally:
        p.terminate()
        p.wait()
    return n / (t_done - t_conn), n


def drain_paho(fleet):
    """paho-mqtt publishing the same 10,000 readings with QoS 1, each acknowledged before the next."""
    import json
    import paho.mqtt.client as paho
    ident = fleet.identity("bench-drain-paho")
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=ident.thing, protocol=paho.MQTTv311)
    c.tls_set(ca_certs=str(ident.ca_pem), certfile=str(ident.cert_pem), keyfile=str(ident.key_pem))
    c.connect(fleet.broker.host, fleet.broker.port)
    c.loop_start()
    topic = "dt/warden/%s/telemetry" % ident.thing
    now = int(time.time())
    t0 = time.monotonic()
    for i in range(READINGS):
        body = json.dumps({"seq": i + 1, "ts": now, "values": {"humidity": 45.0, "temperature": 21.5}})
        c.publish(topic, body, qos=1).wait_for_publish(10)
    rate = READINGS / (time.monotonic() - t0)
    c.disconnect()
    c.loop_stop()
    return rate


def reconnect_twin(fleet, runs=5):
    """Restart a broker under a connected twin; from the broker accepting again to the device's next
    acknowledged reading (seen as its next `connected` line, the status and a reading follow at once)."""
    b = Broker(fleet.state, run_dir=fleet.tmp / "bench-rc-broker")
    b.start()
    flash = _twin(fleet, "bench-rc", b.port, os.urandom(32), interval_ms=50)
    p, lines = _start(flash)
    out = []
    try:
        lines.wait(r"INFO mqtt: connected", 30)
        for _ in range(runs):
            b.stop()
            lines.wait(r"session lost|connect failed", 30, after=time.monotonic() - 5)
            b.start()
            up = time.monotonic()
            t, _ = lines.wait(r"INFO mqtt: connected", 30, after=up)
            out.append(t - up)
    finally:
        p.terminate()
        p.wait()
        b.stop()
    return statistics.median(out)


def reconnect_paho(fleet, runs=5):
    import paho.mqtt.client as paho
    b = Broker(fleet.state, run_dir=fleet.tmp / "bench-rc-broker-paho")
    b.start()
    ident = fleet.identity("bench-rc-paho")
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=ident.thing, protocol=paho.MQTTv311)
    c.tls_set(ca_certs=str(ident.ca_pem), certfile=str(ident.cert_pem), keyfile=str(ident.key_pem))
    c.reconnect_delay_set(1, 60)  # paho's defaults
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(b.host, b.port)
    c.loop_start()
    connected.wait(10)
    out = []
    try:
        for _ in range(runs):
            connected.clear()
            b.stop()
            b.start()
            up = time.monotonic()
            if not connected.wait(30):
                raise RuntimeError("paho did not reconnect")
            out.append(time.monotonic() - up)
    finally:
        c.disconnect()
        c.loop_stop()
        b.stop()
    return statistics.median(out)


def run(fleet):
    from bench import mqtt_bench
    drain, n = drain_twin(fleet)
    paho_drain = drain_paho(fleet)
    rc = reconnect_twin(fleet)
    rc_paho = reconnect_paho(fleet)
    q = mqtt_bench.run(fleet.broker, fleet.identity("bench-q1"), connects=2, messages=100, samples=1000)
    rtt = [r for r in q if r["metric"].startswith("QoS 1 round trip")][0]
    ours_q1 = 1000 / rtt["lib/mqtt (micropython)"]
    paho_q1 = 1000 / rtt["paho-mqtt (CPython)"]
    return [
        {"metric": "outbox drain after a %d-reading outage, readings/s" % n, "warden twin": round(drain),
         "paho-mqtt": round(paho_drain), "ratio": round(drain / paho_drain, 2), "target": ">= 1.0"},
        {"metric": "broker restart -> reconnected, s (median of 5; backoff ceiling 1 s)", "warden twin": round(rc, 3),
         "paho-mqtt": round(rc_paho, 3), "ratio": round(rc_paho / rc, 2), "target": ""},
        {"metric": "QoS 1 publish with retransmission enabled, msg/s (sequential)", "warden twin": round(ours_q1),
         "paho-mqtt": round(paho_q1), "ratio": round(ours_q1 / paho_q1, 2), "target": ""},
    ]


if __name__ == "__main__":
    from bench.common import fleet, print_table
    with fleet() as f:
        rows = run(f)
        print_table("Resilience", rows, list(rows[0].keys()))
