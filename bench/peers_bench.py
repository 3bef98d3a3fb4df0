"""Benchmark: lib/mqtt.py against the MicroPython MQTT clients people use, same micropython, same
TLS broker, same device identity, one after the other in one run.

Peers: umqtt.simple 1.8.0 (micropython-lib) and mqtt_as (peterhinch), run unmodified from
`../shared/peers/umqtt/` and `../shared/peers/mqtt_as/` when that folder is there (or $WARDEN_PEERS);
the project neither imports nor ships them. Each client is compiled with mpy-cross and run under
`-X heapsize=64k`; mqtt_as through asyncio, with stand-ins for the board's `network` (Wi-Fi up) and
`machine.unique_id`, which the unix port lacks. Measured:
  - resident code: GC heap taken by importing the client (gc.collect(); gc.mem_alloc() before/after)
  - heap in use after connect (the client, its socket and TLS session; the same SSLContext for
    ours and umqtt.simple; mqtt_as makes its own at connect, measured apart and taken off)
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
COLS = ["metric", "lib/mqtt", "umqtt.simple", "ratio", "mqtt_as", "ratio (as)"]

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

# mqtt_as is asyncio-based and made for boards: it asks the `network` module for Wi-Fi and
# `machine.unique_id` for a default client id, neither of which the unix port has. Stand-ins
# for those two (Wi-Fi always up) go into sys.modules before it is imported; nothing of mqtt_as
# is changed. Its TLS goes through ssl.wrap_socket(**ssl_params), which makes an SSLContext
# (with the parsed certificates and key) at each connect: that context's heap is measured on
# its own and taken off, so "heap after connect" compares like with like.
SCRIPT_AS = r"""
import gc, json, ssl, sys, time
with open(sys.argv[1]) as f:
    A = json.load(f)

class _Wlan:
    def __init__(self, *a): pass
    def active(self, *a): return True
    def connect(self, *a): pass
    def isconnected(self): return True
    def status(self): return 1010
class _Stub: pass
machine, network = _Stub(), _Stub()
machine.unique_id = lambda: b"bench"
network.WLAN, network.STA_IF, network.STAT_IDLE = _Wlan, 0, 1000
sys.modules["machine"], sys.modules["network"] = machine, network

def der(name):
    with open(A[name], "rb") as f:
        return f.read()
params = {"key": der("key"), "cert": der("cert"), "cadata": der("ca"), "cert_reqs": ssl.CERT_REQUIRED,
          "server_hostname": A["host"]}
gc.collect()
b = gc.mem_alloc()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_cert_chain(params["cert"], params["key"])
ctx.load_verify_locations(cadata=params["cadata"])
gc.collect()
ctx_heap = gc.mem_alloc() - b
del ctx
gc.collect()
base = gc.mem_alloc()
import asyncio
gc.collect()
aio = gc.mem_alloc() - base
from mqtt_as import MQTTClient, config
gc.collect()
code = gc.mem_alloc() - base - aio
config.update(client_id=A["thing"], server=A["host"], port=A["port"], keepalive=60, ssl=True,
              ssl_params=params, user="", password="")

async def main():
    c = MQTTClient(config)
    await c.connect(quick=True)
    gc.collect()
    heap = gc.mem_alloc() - base - ctx_heap
    topic, payload = A["topic"], b"x" * A["payload"]
    t0 = time.ticks_us()
    for i in range(A["messages"]):
        await c.publish(topic, payload)
    await c.publish(topic, b"end", False, 1)
    qos0 = time.ticks_diff(time.ticks_us(), t0)
    rtt = []
    for i in range(A["samples"]):
        t0 = time.ticks_us()
        await c.publish(topic, payload, False, 1)
        rtt.append(time.ticks_diff(time.ticks_us(), t0))
    await c.disconnect()
    print("RESULT " + json.dumps({"code": code, "heap": heap, "qos0_us": qos0, "rtt_us": rtt, "asyncio": aio}))

asyncio.run(main())
"""


def peers_dir() -> Path | None:
    p = Path(os.environ.get("WARDEN_PEERS") or ROOT.parent / "shared" / "peers")
    return p if (p / "umqtt" / "simple.py").exists() else None


def has_mqtt_as() -> bool:
    p = peers_dir()
    return p is not None and (p / "mqtt_as" / "__init__.py").exists()


def _tool(name):
    return os.environ.get("MICROPYTHON") if name == "micropython" and os.environ.get("MICROPYTHON") \
        else str(Path(sys.executable).parent / name)


def measure(client, host, port, device, *, topic, messages, payload, samples, heap="64k"):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if client == "ours":
            sources = {f"{m}.mpy": ROOT / "lib" / f"{m}.py" for m in ("mqtt", "mqttconn", "mqttmsg")}
        elif client == "mqtt_as":
            (tmp / "mqtt_as").mkdir()
            sources = {"mqtt_as/__init__.mpy": peers_dir() / "mqtt_as" / "__init__.py"}
        else:
            (tmp / "umqtt").mkdir()
            sources = {"umqtt/simple.mpy": peers_dir() / "umqtt" / "simple.py"}
        for out, src in sources.items():
            subprocess.run([_tool("mpy-cross"), "-o", str(tmp / out), str(src)], check=True)
        args = {"client": client, "host": host, "port": port, "thing": device.thing, "ca": str(device.ca),
                "cert": str(device.cert), "key": str(device.key), "topic": topic, "messages": messages,
                "payload": payload, "samples": samples}
        (tmp / "args.json").write_text(json.dumps(args))
        (tmp / "run.py").write_text(SCRIPT_AS if client == "mqtt_as" else SCRIPT)
        env = dict(os.environ, MICROPYPATH=".frozen:" + str(tmp))
        r = subprocess.run([_tool("micropython"), "-X", "heapsize=" + heap, str(tmp / "run.py"),
                            str(tmp / "args.json")], capture_output=True, text=True, env=env, timeout=300)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if r.returncode or line is None:
        raise RuntimeError(f"{client}: benchmark failed:\n{r.stdout}\n{r.stderr}")
    d = json.loads(line[7:])
    return {"code": d["code"], "heap": d["heap"], "qos0": messages / (d["qos0_us"] / 1e6),
            "rtt": statistics.median(d["rtt_us"]) / 1000, "asyncio": d.get("asyncio")}


def run(fleet, *, messages=2000, payload=64, samples=100):
    if peers_dir() is None:
        return [{"metric": "(skipped: no ../shared/peers/umqtt/simple.py; set $WARDEN_PEERS)"}]
    device = fleet.identity("bench-peers")
    kw = dict(topic=f"dt/{fleet.state.app}/{device.thing}/bench", messages=messages, payload=payload,
              samples=samples)
    ours = measure("ours", fleet.broker.host, fleet.broker.port, device, **kw)
    peers = {"umqtt": measure("umqtt", fleet.broker.host, fleet.broker.port, device, **kw)}
    if has_mqtt_as():
        peers["as"] = measure("mqtt_as", fleet.broker.host, fleet.broker.port, device, **kw)
    r = lambda x: round(x, 3)
    # (metric, key, rounding, ratio): > 1 favours lib/mqtt for rates and times, is ours / theirs for sizes
    rows = [(f"QoS 0 publish, msg/s ({messages} x {payload} B, TLS)", "qos0", round, lambda o, t: o / t),
            (f"QoS 1 round trip, ms (median of {samples})", "rtt", r, lambda o, t: t / o),
            ("heap in use after connect, bytes (client + TLS session, 64k heap)", "heap", int, lambda o, t: o / t),
            ("resident code, bytes (heap taken by the import, .mpy)", "code", int, lambda o, t: o / t)]
    out = []
    for metric, key, fmt, ratio in rows:
        row = {"metric": metric, "lib/mqtt": fmt(ours[key])}
        for name, col in (("umqtt", "umqtt.simple"), ("as", "mqtt_as")):
            if name in peers:
                row[col] = fmt(peers[name][key])
                row["ratio" if name == "umqtt" else "ratio (as)"] = r(ratio(ours[key], peers[name][key]))
        out.append(row)
    if "as" in peers:
        out.append({"metric": "  mqtt_as also needs asyncio: heap taken by its import, bytes",
                    "mqtt_as": peers["as"]["asyncio"]})
    return out


NOTE = ("ratio: for rates and times > 1 means lib/mqtt is faster; for heap and code it is lib/mqtt / the "
        "peer (target <= 1.25 x umqtt.simple for heap). mqtt_as's heap after connect includes asyncio and "
        "its tasks, not the SSLContext its connect makes (measured apart and taken off)")


if __name__ == "__main__":
    from bench.common import fleet, print_table

    with fleet() as f:
        print_table("MQTT client vs umqtt.simple and mqtt_as (same micropython, same broker)", run(f), COLS,
                    note=NOTE)
