"""Benchmark: lib/mqtt.py under micropython vs paho-mqtt under CPython, same TLS broker, same run.

Measured for each client, one after the other with the same device identity (mutual TLS):
  - TLS connect time: TCP + TLS handshake + CONNECT until the CONNACK (median of `connects`)
  - QoS 0 throughput: `messages` PUBLISHes of `payload` bytes, completion observed by the
    PUBACK of one final QoS 1 PUBLISH (the broker handles one connection's packets in order)
  - QoS 1 round trip: publish() until its PUBACK (median of `samples`)
  - for micropython, the GC heap in use after connect (gc.collect(); gc.mem_alloc()) in a
    `-X heapsize=64k` process running the client compiled with mpy-cross

paho is measured both with its network thread (loop_start, the usual way) and driven from
the calling thread (loop()); the comparison uses whichever paho mode was better.
A ratio >= 1.0 means our client is at least as good as paho on that line.

    run(broker, device) -> rows        (broker: .host/.port; device: .thing and DER
                                        .cert/.key/.ca plus PEM .cert_pem/.key_pem/.ca_pem)
    python -m bench.mqtt_bench         starts its own PKI and broker (warden.broker.server)
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MP_SCRIPT = r"""
import gc, json, ssl, sys, time
with open(sys.argv[1]) as f:  # a file: this unix port dies on a command-line argument of 256+ bytes
    A = json.load(f)
gc.collect()
base = gc.mem_alloc()
from mqtt import MQTTClient

def context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=A["ca"])
    ctx.load_cert_chain(A["cert"], A["key"])
    return ctx

ctx = context()
c = MQTTClient(A["thing"], A["host"], A["port"], ssl=ctx, keepalive=60, timeout=10)
connect = []
for i in range(A["connects"]):
    t0 = time.ticks_us()
    c.connect()
    connect.append(time.ticks_diff(time.ticks_us(), t0))
    if i < A["connects"] - 1:
        c.disconnect()
gc.collect()
heap = gc.mem_alloc()
topic = A["topic"]
payload = b"x" * A["payload"]
publish = c.publish
t0 = time.ticks_us()
for i in range(A["messages"]):
    publish(topic, payload)
publish(topic, b"end", False, 1)
qos0 = time.ticks_diff(time.ticks_us(), t0)
rtt = []
for i in range(A["samples"]):
    t0 = time.ticks_us()
    publish(topic, payload, False, 1)
    rtt.append(time.ticks_diff(time.ticks_us(), t0))
c.disconnect()
print("RESULT " + json.dumps({"connect_us": connect, "qos0_us": qos0, "rtt_us": rtt,
                              "heap": heap, "heap_before_import": base}))
"""


def _micropython():
    return os.environ.get("MICROPYTHON") or str(Path(sys.executable).parent / "micropython")


def _mpy_cross():
    return str(Path(sys.executable).parent / "mpy-cross")


def bench_micropython(host, port, device, *, topic, connects, messages, payload, samples, heap="64k"):
    with tempfile.TemporaryDirectory() as tmp:
        for m in ("mqtt", "mqttconn", "mqttmsg"):  # the client and its cold parts (setup, error texts)
            subprocess.run([_mpy_cross(), "-o", os.path.join(tmp, m + ".mpy"), str(ROOT / "lib" / (m + ".py"))],
                           check=True)
        args = {"host": host, "port": port, "thing": device.thing, "ca": str(device.ca),
                "cert": str(device.cert), "key": str(device.key), "topic": topic,
                "connects": connects, "messages": messages, "payload": payload, "samples": samples}
        env = dict(os.environ, MICROPYPATH=".frozen:" + tmp)
        script = os.path.join(tmp, "bench_mqtt.py")
        Path(script).write_text(MP_SCRIPT)
        Path(tmp, "args.json").write_text(json.dumps(args))
        r = subprocess.run([_micropython(), "-X", "heapsize=" + heap, script, os.path.join(tmp, "args.json")],
                           capture_output=True, text=True, env=env, timeout=300)
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
    if r.returncode or line is None:
        raise RuntimeError(f"micropython benchmark failed:\n{r.stdout}\n{r.stderr}")
    d = json.loads(line[7:])
    return {
        "connect_ms": statistics.median(d["connect_us"]) / 1000,
        "qos0_per_s": messages / (d["qos0_us"] / 1e6),
        "rtt_ms": statistics.median(d["rtt_us"]) / 1000,
        "heap": d["heap"],
        "heap_before_import": d["heap_before_import"],
    }


def bench_paho(host, port, device, *, topic, connects, messages, payload, samples, threaded):
    import paho.mqtt.client as paho

    def client():
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=device.thing, protocol=paho.MQTTv311,
                        reconnect_on_failure=False)
        c.tls_set(ca_certs=str(device.ca_pem), certfile=str(device.cert_pem), keyfile=str(device.key_pem))
        connected = threading.Event()
        c.on_connect = lambda cl, ud, flags, rc, props: connected.set() if not rc.is_failure else None
        return c, connected

    def wait(c, cond, what, timeout=30):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise RuntimeError(f"paho: no {what} within {timeout} s")
            if not threaded:
                c.loop(timeout=0.05)
            else:
                time.sleep(0.0002)

    connect = []
    for i in range(connects):
        c, connected = client()
        t0 = time.perf_counter()
        c.connect(host, port, keepalive=60)
        if threaded:
            c.loop_start()
            if not connected.wait(30):
                raise RuntimeError("paho: no CONNACK")
        else:
            wait(c, connected.is_set, "CONNACK")
        connect.append(time.perf_counter() - t0)
        if i < connects - 1:
            c.disconnect()
            if threaded:
                c.loop_stop()
    body = b"x" * payload
    t0 = time.perf_counter()
    for _ in range(messages):
        c.publish(topic, body)
    info = c.publish(topic, b"end", qos=1)
    if threaded:
        info.wait_for_publish(30)
    else:
        wait(c, info.is_published, "PUBACK")
    qos0 = time.perf_counter() - t0
    rtt = []
    for _ in range(samples):
        t0 = time.perf_counter()
        info = c.publish(topic, body, qos=1)
        if threaded:
            info.wait_for_publish(30)
        else:
            wait(c, info.is_published, "PUBACK")
        rtt.append(time.perf_counter() - t0)
    c.disconnect()
    if threaded:
        c.loop_stop()
    return {
        "connect_ms": statistics.median(connect) * 1000,
        "qos0_per_s": messages / qos0,
        "rtt_ms": statistics.median(rtt) * 1000,
    }


def run(broker, device, *, connects=10, messages=5000, payload=64, samples=200, app="warden"):
    """Measure both clients against `broker` with `device`'s identity; returns rows of dicts."""
    kw = dict(topic=f"dt/{app}/{device.thing}/bench", connects=connects, messages=messages,
              payload=payload, samples=samples)
    ours = bench_micropython(broker.host, broker.port, device, **kw)
    threaded = bench_paho(broker.host, broker.port, device, threaded=True, **kw)
    manual = bench_paho(broker.host, broker.port, device, threaded=False, **kw)

    def best(key, lower_is_better):
        pick = min if lower_is_better else max
        mode = pick(("loop_start", threaded), ("loop()", manual), key=lambda m: m[1][key])
        return mode[1][key], mode[0]

    rows = []
    for key, name, lower in (("connect_ms", f"TLS connect, ms (median of {connects})", True),
                             ("qos0_per_s", f"QoS 0 publish, msg/s ({messages} x {payload} B)", False),
                             ("rtt_ms", f"QoS 1 round trip, ms (median of {samples})", True)):
        theirs, mode = best(key, lower)
        mine = ours[key]
        rows.append({
            "metric": name,
            "lib/mqtt (micropython)": round(mine, 3),
            "paho-mqtt (CPython)": round(theirs, 3),
            "paho mode": mode,
            "ratio": round(theirs / mine if lower else mine / theirs, 2),
        })
    rows.append({
        "metric": "GC heap in use after connect, bytes (-X heapsize=64k, .mpy)",
        "lib/mqtt (micropython)": ours["heap"],
        "paho-mqtt (CPython)": None,
        "paho mode": "",
        "ratio": None,
    })
    return rows


def print_table(rows, out=sys.stdout):
    cols = ["metric", "lib/mqtt (micropython)", "paho-mqtt (CPython)", "paho mode", "ratio"]
    cells = [[("" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    print(line(cols), file=out)
    print(line(["-" * w for w in widths]), file=out)
    for row in cells:
        print(line(row), file=out)
    print("ratio >= 1.0: lib/mqtt at least as good as paho (its better mode) on that line", file=out)


def _standalone():
    """A throwaway PKI, one device identity and a broker of our own (warden.broker.server)."""
    from bench.common import fleet

    with fleet() as f:
        return run(f.broker, f.identity("bench-1"), app=f.state.app)


if __name__ == "__main__":
    rows = _standalone()
    print_table(rows)
