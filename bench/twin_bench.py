"""Twin start-up: time from process start to the first acknowledged reading, and the device's heap.

Side by side in one run against the same broker: the whole device twin (ROM, boot
checks, identity, TLS, MQTT, one QoS 1 reading) under `micropython -X heapsize=64k`,
and the same job done by a minimal paho-mqtt script under CPython (process start,
TLS connect with client certificate, one QoS 1 publish acknowledged).
"""
import os
import re
import subprocess
import sys
import time

from warden.board import twin as twinlib

PAHO_SCRIPT = r"""
import ssl, sys, threading
import paho.mqtt.client as mqtt
host, port, thing, ca, cert, key = sys.argv[1:7]
done = threading.Event()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=thing, protocol=mqtt.MQTTv311)
c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
c.on_publish = lambda *a: done.set()
c.connect(host, int(port))
c.loop_start()
c.publish("dt/warden/%s/telemetry" % thing, b'{"seq":1}', qos=1)
done.wait(10)
print("ACKED" if done.is_set() else "TIMEOUT", flush=True)
c.loop_stop()
c.disconnect()
"""


def _twin_once(flash):
    argv, env = twinlib.twin_command(flash)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first, heap = None, None
    for line in p.stdout:
        m = re.search(r"heap in use (\d+) bytes", line)
        if m:
            heap = int(m.group(1))
        if "first reading" in line and "acknowledged" in line:
            first = time.monotonic() - t0
    p.wait(timeout=30)
    if first is None:
        raise RuntimeError("twin never acknowledged a reading")
    return first, heap


def _paho_once(broker, ident):
    """Like the twin, timed from process start to the line saying the publish was acknowledged."""
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", PAHO_SCRIPT, broker.host, str(broker.port), ident.thing,
                          str(ident.ca_pem), str(ident.cert_pem), str(ident.key_pem)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    acked = None
    for line in p.stdout:
        if line.startswith("ACKED"):
            acked = time.monotonic() - t0
    p.wait(timeout=30)
    if acked is None:
        raise RuntimeError("paho run failed")
    return acked


def run(fleet, runs=10):
    twin_id = fleet.identity("bench-twin")
    paho_id = fleet.identity("bench-paho")
    cfg = twinlib.device_config(fleet.state, twin_id.thing, broker={"host": "localhost", "port": fleet.broker.port},
                                max_readings=1, interval_ms=1000)
    # provisioned as `warden device add` does: with a log key, so the encrypted log is open
    flash = twinlib.build_flash(fleet.tmp / "bench-twin.bin",
                                twinlib.identity_files(twin_id.cert_der, twin_id.key_der, twin_id.ca.read_bytes()), cfg,
                                log_key=os.urandom(32))
    twin_runs = [_twin_once(flash) for _ in range(runs)]
    paho_runs = [_paho_once(fleet.broker, paho_id) for _ in range(runs)]
    t_twin = sorted(t for t, _ in twin_runs)[runs // 2] * 1000
    t_paho = sorted(paho_runs)[runs // 2] * 1000
    heap = max(h for _, h in twin_runs)
    return [
        {"metric": "process start -> first acknowledged reading, ms (median of %d)" % runs,
         "warden twin (micropython)": round(t_twin, 1), "paho-mqtt (CPython)": round(t_paho, 1),
         "ratio": round(t_paho / t_twin, 2), "target": "twin <= 100 ms"},
        {"metric": "device GC heap in use after connect, bytes (budget 64 KiB, twin at %s)" % twinlib.DEFAULT_HEAP,
         "warden twin (micropython)": heap, "paho-mqtt (CPython)": None, "ratio": None, "target": "< 65536"},
    ]


COLS = ["metric", "warden twin (micropython)", "paho-mqtt (CPython)", "ratio", "target"]

if __name__ == "__main__":
    from bench.common import fleet, print_table
    with fleet() as f:
        print_table("Twin start-up", run(f), COLS, note="ratio > 1: the twin is faster")
