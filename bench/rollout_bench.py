"""Rollouts, measured (issue 16, "Benchmark"; docs/rollout.md).

`run` (section "rollout"), on 20 twins with a fleet of their own (their own CA, broker and
registry: twenty devices would otherwise show in the other sections' fleets):

- throughput: one app update to all twenty, devices updated per minute, from a rollout at
  concurrency 1, 4 and 16 (canary 1, soak 1 s, a rate that does not limit) against twenty
  sequential `warden.ota.push.push` calls, each with its own technician session as `warden ota
  push` makes. Every row is a newly signed version (a fresh counter): the twins run throughout.
- stop: a flooding app (a reading every 20 ms) to a canary of 1 with a 10 s soak; the seconds from
  the canary's `confirmed` event to the rollout's `aborted` event (rollout_events), beside the
  target (soak + one metrics period). The canary is rolled back afterwards (abort --rollback).

The monitor's ingest rate is bench/monitor_bench.py.
"""
from __future__ import annotations

import contextlib
import time

from bench.common import fleet as own_fleet
from tests.support.twinproc import Twin  # the tests' twin runner: restarts the twin on reset
from warden.board import build, twin as twinlib
from warden.fleet import devices
from warden.ota import image, keys, push as otapush
from warden.rollout import runner
from warden.rollout.store import Plan, Store

TWINS = 20
INTERVAL_MS = 500            # the twins' reading interval (as tests/integration/test_rollout.py)
METRICS_S = 10               # their metrics period: the shortest a device takes
SOAK_S = 1.0                 # the throughput rows' soak, the same in every row
STOP_SOAK_S = 10.0           # the misbehaving canary's soak
MAX_MSGS = 300.0             # a healthy twin sends ~130 a minute (readings, metrics, status)
CONCURRENCY = (1, 4, 16)

COLS = ["metric", "devices", "wall s", "devices/min", "vs sequential pushes", "target"]
NOTE = ("20 twins (micropython, a reading every 500 ms) on this machine with their broker; 'sequential "
        "pushes': 20 `ota push` runs one after another, each its own technician session. A rollout's time "
        "runs from `rollout run` to its end and includes the canary's soak (1 s) before the other devices "
        "start; after the canary a device's soak overlaps the next transfers. Stop: the flooding canary's "
        "`confirmed` event to the rollout's `aborted` event; the target is its soak plus one metrics period.")


# ---- the twins and their updates ----

@contextlib.contextmanager
def twin_fleet(n=TWINS):
    """A fleet of its own with `n` twins online and reading: (fleet, {thing: Twin})."""
    with own_fleet() as f:
        state = f.state
        keys.init_keys(state)
        state.broker_port = f.broker.port
        made = {}
        try:
            for i in range(n):
                thing = "rb%02d" % i
                devices.add_device(state, thing)
                path = twinlib.flash_path(state, thing)
                twinlib.update_config(path, broker={"host": "localhost", "port": f.broker.port},
                                      interval_ms=INTERVAL_MS, metrics_s=METRICS_S, selftest_ms=8000)
                made[thing] = Twin(path).start()
            for t in made.values():
                t.wait_for(r"INFO telemetry: first reading", 60)
            yield f, made
        finally:
            for t in made.values():
                t.stop()


class Signer:
    """Signs app updates from one build of the working tree: a good app, or one that floods."""

    def __init__(self, f):
        self.f = f
        self.files = build.build_app()
        self.counter = 10

    def flooding_files(self):
        # The same app, but a reading every 20 ms whatever its settings say: it boots, passes its
        # self-test (a reading is acknowledged) and then floods the broker.
        src = (build.ROOT / "firmware" / "device.py").read_text()
        bad = src.replace('interval = self.cfg["interval_ms"]', "interval = 20")
        if bad == src:
            raise RuntimeError("firmware/device.py has no `interval = self.cfg[\"interval_ms\"]` to change")
        d = self.f.tmp / "flood"
        d.mkdir(exist_ok=True)
        (d / "device.py").write_text(bad)
        build.compile_file(d / "device.py", d / "device.mpy", "firmware/device.py")
        files = dict(self.files)
        files["/firmware/device.mpy"] = (d / "device.mpy").read_bytes()
        return files

    def sign(self, flooding=False):
        """A newly signed version (a fresh counter); its path."""
        self.counter += 1
        version = "3.%d.0" % self.counter
        files = self.flooding_files() if flooding else self.files
        data = image.sign(image.pack_bundle(files), "app", version, self.counter,
                          image.default_target(self.f.state), keys.load_private_key(self.f.state))
        p = self.f.tmp / ("app-%s.wup" % version)
        p.write_bytes(data)
        return p


# ---- the rows ----

def _sequential(f, things, signer):
    upd = signer.sign()
    t0 = time.monotonic()
    for thing in things:
        o = otapush.push(f.state, thing, upd, timeout=60.0, confirm_timeout=120.0)
        if o.result != otapush.INSTALLED:
            raise RuntimeError("%s: %s %s" % (thing, o.result, o.reason))
    return time.monotonic() - t0


def _rollout(f, things, signer, name, concurrency):
    upd = signer.sign()
    plan = Plan(canary=1, concurrency=concurrency, rate=10000.0, max_rate=10000.0, soak_s=SOAK_S,
                max_msgs_per_min=MAX_MSGS, min_readings=1, timeout_s=120.0)
    runner.create(f.state, name, upd, things, plan)
    lines = []
    t0 = time.monotonic()
    s = runner.Run(f.state, name, out=lines.append).run()
    wall = time.monotonic() - t0
    if s["state"] != "done" or s["counts"] != {"succeeded": len(things)}:
        raise RuntimeError("rollout %s: %s %s %s" % (name, s["state"], s["counts"], lines[-5:]))
    return wall


def _stop(f, things, signer):
    """Seconds from the flooding canary's confirmation to the rollout's abort (from its events)."""
    upd = signer.sign(flooding=True)
    plan = Plan(canary=1, concurrency=4, rate=10000.0, max_rate=10000.0, soak_s=STOP_SOAK_S,
                max_msgs_per_min=MAX_MSGS, min_readings=1, timeout_s=120.0)
    runner.create(f.state, "flood", upd, things, plan)
    lines = []
    s = runner.Run(f.state, "flood", out=lines.append).run()
    canary = things[0]
    try:
        if s["state"] != "aborted" or not (s["reason"] or "").startswith("canary %s failed" % canary):
            raise RuntimeError("the flooding canary did not stop the rollout: %s %s" % (s["reason"], lines[-5:]))
        with Store(f.state) as st:
            ev = st.events("flood")
        confirmed = next(e["ts"] for e in ev if e["thing"] == canary and e["event"] == "confirmed")
        aborted = next(e["ts"] for e in ev if e["thing"] is None and e["event"] == "aborted")
        touched = {m["thing"] for m in s["members"] if m["state"] != "waiting"}
        if touched != {canary}:
            raise RuntimeError("devices outside the canary were touched: %s" % sorted(touched))
    finally:
        # the canary back to the version before (its other slot), so the fleet is as it was
        back = runner.abort(f.state, "flood", rollback=True, out=lines.append)
    restored = {m["thing"]: m["state"] for m in back["members"]}[canary]
    if restored != "restored":
        raise RuntimeError("the canary was not rolled back: %s %s" % (restored, lines[-3:]))
    return aborted - confirmed


def run(fleet):
    """The rollout section's rows (`fleet`, the shared one, is not used: the twins have their own)."""
    rows = []
    with twin_fleet() as (f, twins):
        things = list(twins)
        signer = Signer(f)
        seq = _sequential(f, things, signer)
        per_min = lambda s: round(len(things) * 60.0 / s, 1)
        rows.append({"metric": "app update to all: 20 sequential `ota push` runs", "devices": len(things),
                     "wall s": round(seq, 1), "devices/min": per_min(seq), "vs sequential pushes": 1.0})
        for c in CONCURRENCY:
            wall = _rollout(f, things, signer, "c%d" % c, c)
            rows.append({"metric": "app update to all: rollout, concurrency %d, canary 1" % c,
                         "devices": len(things), "wall s": round(wall, 1), "devices/min": per_min(wall),
                         "vs sequential pushes": round(seq / wall, 2)})
        stop = _stop(f, things, signer)
        rows.append({"metric": "flooding canary (soak %g s): confirmed -> rollout aborted, s" % STOP_SOAK_S,
                     "devices": 1, "wall s": round(stop, 2),
                     "target": "<= %g (soak + metrics %d s)" % (STOP_SOAK_S + METRICS_S, METRICS_S)})
    return rows


if __name__ == "__main__":
    from bench.common import fleet, print_table
    with fleet() as f:
        print_table("rollout", run(f), COLS, note=NOTE)
