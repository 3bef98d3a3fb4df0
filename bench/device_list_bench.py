"""Benchmark: `warden device list` on a 1,000-device registry (target: under 1 s).

A copy of the bench fleet's state (its CA and principals, so the broker accepts the tool's
session certificates) gets 1,000 registered devices; the broker holds a retained status for
each (published as the admin principal, as a revocation's sync does), so the view has a
thousand retained messages to take in. Timed, median of 3:
  - the command as a user runs it (`warden device list --json`, a new process: Python start-up
    and imports included), with no broker reachable (a closed port: the registry's view and its
    note), with the broker, and with --offline;
  - the library call alone (warden.fleet.view.fleet_view), with the broker;
and how many of the thousand statuses the view saw (all of them, or the barrier is wrong).

    run(fleet) -> rows        python -m bench device-list
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLS = ["metric", "value", "target"]
N = 1000
NOTE = ("the command times include starting Python and importing warden (`warden --help` alone is "
        "shown for scale); 'with broker' takes in one retained status per device")


def _free_closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _fill(state, n):
    import os

    from warden.fleet.registry import Registry

    with Registry(state.registry_path) as reg:
        for i in range(n):
            reg.add(f"bench-list-{i:04d}", os.urandom(32).hex(), 0x100000 + i,
                    not_after="2030-01-01T00:00:00+00:00", log_key=os.urandom(32))


def _publish_statuses(state, host, port, n):
    import paho.mqtt.client as mqtt

    from warden.fleet.principals import session_context

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.tls_set_context(session_context(state, "admin.default"))
    c.connect(host, port)
    c.loop_start()
    try:
        last = None
        for i in range(n):
            body = {"state": "online" if i % 2 else "offline", "version": "0.1.0", "firmware": "1.24.1",
                    "since": int(time.time()) - i}
            last = c.publish(f"dt/{state.app}/bench-list-{i:04d}/status", json.dumps(body), qos=1, retain=True)
        last.wait_for_publish(30)
    finally:
        c.disconnect()
        c.loop_stop()


def _cli(root, *args, runs=3):
    warden = str(Path(sys.executable).with_name("warden"))
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run([warden, "--state", str(root), *args], capture_output=True, text=True, timeout=120)
        times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise RuntimeError(f"warden {' '.join(args)} failed: {p.stderr}")
        out = p
    times.sort()
    return times[len(times) // 2], out


def run(fleet):
    from warden.fleet.view import fleet_view
    from warden.state import State

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "st"
        shutil.copytree(fleet.state.root, root, ignore=shutil.ignore_patterns("devices", "broker*"))
        state = State(root)
        _fill(state, N)
        _publish_statuses(fleet.state, fleet.broker.host, fleet.broker.port, N)
        help_s, _ = _cli(root, "--help")
        rows.append({"metric": "`warden --help` (Python start-up and the CLI's imports)", "value": f"{help_s:.2f} s"})

        state.broker_host, state.broker_port = "127.0.0.1", _free_closed_port()
        t, p = _cli(root, "device", "list", "--json")
        assert len(json.loads(p.stdout)) == N and "no broker reachable" in p.stderr, p.stderr
        rows.append({"metric": f"`device list --json`, {N:,} devices, no broker reachable", "value": f"{t:.2f} s",
                     "target": "< 1 s"})
        t, p = _cli(root, "device", "list", "--offline", "--json")
        rows.append({"metric": f"`device list --offline --json`, {N:,} devices", "value": f"{t:.2f} s",
                     "target": "< 1 s"})
        state.broker_host, state.broker_port = fleet.broker.host, fleet.broker.port
        t, p = _cli(root, "device", "list", "--json")
        seen = sum(1 for d in json.loads(p.stdout) if d["connection"] in ("online", "offline"))
        rows.append({"metric": f"`device list --json`, {N:,} devices, with the broker", "value": f"{t:.2f} s",
                     "target": "< 1 s"})
        t, p = _cli(root, "device", "list")
        rows.append({"metric": f"`device list` (the table), {N:,} devices, with the broker", "value": f"{t:.2f} s",
                     "target": "< 1 s"})
        lib = []
        for _ in range(3):
            t0 = time.perf_counter()
            v = fleet_view(state)
            lib.append(time.perf_counter() - t0)
        lib.sort()
        rows.append({"metric": f"fleet_view() in-process, {N:,} devices, with the broker",
                     "value": f"{lib[1] * 1000:.0f} ms"})
        rows.append({"metric": "retained statuses the view took in (of those published)",
                     "value": f"{seen:,} of {N:,}", "target": f"{N:,}"})
        assert v.source == "broker"
    return rows


if __name__ == "__main__":
    from bench.common import fleet, print_table

    with fleet() as f:
        print_table("`warden device list` on a 1,000-device registry", run(f), COLS, note=NOTE)
