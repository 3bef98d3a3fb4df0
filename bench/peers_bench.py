"""Benchmark: lib/mqtt.py against the MicroPython MQTT clients people use, same micropython, same
TLS broker, same device identity, one after the other in one run.

Peers: umqtt.simple 1.8.0 (micropython-lib), run unmodified from `../shared/peers/umqtt/` when that
folder is there (or $WARDEN_PEERS); the project neither imports nor ships it. Each client is compiled
with mpy-cross and run under `-X heapsize=64k`; measured:
  - resident code: GC heap taken by importing the client (gc.collect(); gc.mem_alloc() before/after)
  - heap in use after connect (the client, its socket and TLS session; the same SSLContext for both)
  - QoS 0 publish rate: `messages` PUBLISHes, completion observed by one final QoS 1 PUBLISH
  - QoS 1 round trip: publish(qos=1) until its PUBACK (median of `samples`)
umqtt.simple has no timeouts, QoS 1 retry, keepalive handling, bounded packets or packet deadlines;
ours does all of that in the figures below.

    run(fleet) -> rows        python -m bench.peers_bench
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLS = ["metric", "lib/mqtt", "umqtt.simple", "ratio"]

SCRIPT = r"""
import gc, json, ssl, sys, time
with open(sys.argv[1]) as f:
    A = json.load(f)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cafile=A["ca"])
ctx.load_cert_chain(A["cert"], A["key"])
gc.collect()
base = gc.mem_alloc()
if A["client"] == "ours":
    from mqtt import MQTTClient
else:
    from umqtt.simple import MQTTClient
gc.collect()
code = gc.mem_alloc() - base
c = MQTTClient(A["thing"], A["host"], A["port"], keepalive=60, ssl=ctx)
c.connect()
gc.collect()
heap = gc.mem_alloc() - base
topic, payload = A["topic"], b"x" * A["payload"]
t0 = time.ticks_us()
for i in range(A["messages"]):
    c.publish(topic, payload)
c.publish(topic, b"end", False, 1)
qos0 = time.ticks_diff(time.ticks_us(), t0)
rtt = []
for i in range(A["samples"]):
    t0 = time.ticks_us()
    c.publish(topic, payload, False, 1)
    rtt.append(time.ticks_diff(time.ticks_us(), t0))
c.disconnect()
print("RESULT " + json.dumps({"code": code, "heap": heap, "qos0_us": qos0, "rtt_us": rtt}))
"""


def peers_dir() -> Path | None:
    p = Path(os.environ.get("WARDEN_PEERS") or ROOT.parent / "shared" / "peers")
    return p if (p / "umqtt" / "simple.py").exists() else None


def _tool(name):
    return os.environ.get("MICROPYTHON") if name == "micropython" and os.environ.get("MICROPYTHON") \
        else str(Path(sys.executable).parent / name)


def measure(client, host, port, device, *, topic, messages, payload, samples, heap="64k"):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if client == "ours":
            sources = {f"{m}.mpy": ROOT / "lib" / f"{m}.py" for m in ("mqtt", "mqttconn", "mqttmsg")}
        else:
            (tmp / "umqtt").mkdir()
            sources = {"umqtt/simple.mpy": peers_dir() / "umqtt" / "simple.py"}
        for out, src in sources.items():
            subprocess.run([_tool("mpy-cross"), "-o", str(tmp / out), str(src)], check=True)
        args = {"client": client, "host": host, "port": port, "thing": device.thing, "ca": str(device.ca),
                "cert": str(device.cert), "key": str(device.key), "topic": topic, "messages": messages,
                "payload": payload, "samples": samples}
        (tmp / "args.json").write_text(json.dumps(args))
        (tmp / "run.py").write_text(SCRIPT)
        env = dict(os.environ, MICROPYPATH=".frozen:" + str(tmp))
        r = subprocess.run([_tool("micropython"), "-X", "heapsize=" + heap, str(tmp / "run.py"),
                            str(tmp / "args.json")], capture_output=True, text=True, env=env, timeout=300)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if r.returncode or line is None:
        raise RuntimeError(f"{client}: benchmark failed:\n{r.stdout}\n{r.stderr}")
    d = json.loads(line[7:])
    return {"code": d["code"], "heap": d["heap"], "qos0": messages / (d["qos0_us"] / 1e6),
            "rtt": statistics.median(d["rtt_us"]) / 1000}


def run(fleet, *, messages=2000, payload=64, samples=100):
    if peers_dir() is None:
        return [{"metric": "(skipped: no ../shared/peers/umqtt/simple.py; set $WARDEN_PEERS)",
                 "lib/mqtt": None, "umqtt.simple": None, "ratio": None}]
    device = fleet.identity("bench-peers")
    kw = dict(topic=f"dt/{fleet.state.app}/{device.thing}/bench", messages=messages, payload=payload,
              samples=samples)
    ours = measure("ours", fleet.broker.host, fleet.broker.port, device, **kw)
    theirs = measure("umqtt", fleet.broker.host, fleet.broker.port, device, **kw)
    r = lambda x: round(x, 3)
    return [
        {"metric": f"QoS 0 publish, msg/s ({messages} x {payload} B, TLS)", "lib/mqtt": round(ours["qos0"]),
         "umqtt.simple": round(theirs["qos0"]), "ratio": r(ours["qos0"] / theirs["qos0"])},
        {"metric": f"QoS 1 round trip, ms (median of {samples})", "lib/mqtt": r(ours["rtt"]),
         "umqtt.simple": r(theirs["rtt"]), "ratio": r(theirs["rtt"] / ours["rtt"])},
        {"metric": "heap in use after connect, bytes (client + TLS session, 64k heap)", "lib/mqtt": ours["heap"],
         "umqtt.simple": theirs["heap"], "ratio": r(ours["heap"] / theirs["heap"])},
        {"metric": "resident code, bytes (heap taken by the import, .mpy)", "lib/mqtt": ours["code"],
         "umqtt.simple": theirs["code"], "ratio": r(ours["code"] / theirs["code"])},
    ]


if __name__ == "__main__":
    from bench.common import fleet, print_table

    with fleet() as f:
        print_table("MQTT client vs umqtt.simple (same micropython, same broker)", run(f), COLS,
                    note="ratio: for rates and times > 1 means lib/mqtt is faster; for heap and code it is "
                         "lib/mqtt / umqtt.simple (target <= 1.25 for heap)")
