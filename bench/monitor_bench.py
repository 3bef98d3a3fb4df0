"""The monitor's ingest rate (issue 16, "Benchmark"; docs/monitor.md): metrics reports a second that
warden.monitor judges and keeps, for 100 things, reports in the device's format (docs/device.md,
"The metrics report"), the default rules:

- its Engine + Store alone (no broker), as live.py uses them, with the fleet's history an hour deep
  (a report every 300 s per device, the device's default, and the reports' times at that pace);
- the same with every report inside the fleet rule's hour (a burst: its percentile covers them all);
- the live Monitor (`warden monitor`'s own loop) at the real broker, fed by 100 device sessions
  (paho, mutual TLS, QoS 0 as the device sends them) publishing a burst: from the first publish to
  the last report judged.
"""
from __future__ import annotations

import json
import ssl
import threading
import time

THINGS = 100
REPORTS = 1000
PERIOD_S = 300               # the device's default metrics period

COLS = ["metric", "reports", "s", "reports/s"]
NOTE = ("100 things, the default rules. 'An hour deep': the store already holds an hour of the fleet's "
        "reports (12 a device) and the new ones come at that pace; 'burst': every report falls inside the "
        "fleet rule's hour. The fleet rule (message-rate-outlier) reads the fleet's reports of the last hour "
        "once per 5 s of data time (engine.Engine.FLEET_REFRESH_S), not on each report.")


def report(i, k):
    """Thing i's k-th metrics report: a healthy twin's."""
    return {"v": 1, "seq": k, "up": 5 + k * PERIOD_S, "rc": "power-on", "boots": 1 if k == 0 else 0,
            "hf": 61000 - (i % 7) * 128, "hl": 52000 - (i % 5) * 64, "tx": k * 610 + 3, "txb": k * 61000 + 300,
            "rx": k * 2 + 1, "rxb": k * 90 + 40, "ca": 1, "cf": {}, "sl": 0, "kept": 0, "wait": 0,
            "drop": 0, "ota": "idle", "rssi": None, "temp": None}


def _thing(i):
    return "bm%03d" % i


def _engine_alone(state, deep):
    from warden.monitor.engine import Engine, derive
    from warden.monitor.rules import load_rules
    from warden.monitor.store import Store

    rules = load_rules(state)
    with Store(state, rules.retention_days, rules.points_per_device) as store:
        engine = Engine(rules, store)
        now = time.time()
        base = now - 3600 if deep else now
        first = 0
        if deep:
            # an hour of history, kept as the engine keeps it (not timed)
            first = 3600 // PERIOD_S
            for k in range(first):
                for i in range(THINGS):
                    store.add_point(_thing(i), "metrics", base + k * PERIOD_S + i,
                                    derive(report(i, k), report(i, k - 1) if k else None))
        t0 = time.perf_counter()
        for n in range(REPORTS):
            i, k = n % THINGS, first + n // THINGS
            engine.metrics(_thing(i), base + k * PERIOD_S + i if deep else time.time(), report(i, k))
        return time.perf_counter() - t0


def _publisher(fleet, thing):
    import paho.mqtt.client as paho

    ident = fleet.identity(thing)
    ctx = ssl.create_default_context(cafile=str(ident.ca_pem))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(ident.cert_pem), str(ident.key_pem))
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=thing, protocol=paho.MQTTv311,
                    reconnect_on_failure=False)
    c.tls_set_context(ctx)
    up = threading.Event()
    c.on_connect = lambda cl, ud, fl, rc, pr=None: up.set()
    c.connect(fleet.broker.host, fleet.broker.port)
    c.loop_start()
    return c, up


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(what)
        time.sleep(0.005)


def _live(fleet):
    """(seconds from the first publish to the last report judged, seconds the publishing took)."""
    from warden.monitor.live import Monitor

    state, b = fleet.state, fleet.broker
    state.broker_port = b.port
    clients = []
    mon = Monitor(state, host=b.host, port=b.port, broker_log=b.log_path)
    t = threading.Thread(target=lambda: _quietly(mon.run, duration=600), daemon=True)
    try:
        for i in range(THINGS):
            clients.append(_publisher(fleet, _thing(i)))
        for c, up in clients:
            if not up.wait(20):
                raise RuntimeError("a publisher did not connect")
        topic = lambda i: "dt/%s/%s/metrics" % (state.app, _thing(i))
        body = lambda i, k: json.dumps(report(i, k), separators=(",", ":"))
        t.start()
        # the monitor is listening once a first report reaches it (QoS 0: sent until one does)
        first = lambda: mon.summary.reports > 0
        deadline = time.monotonic() + 20
        while not first() and time.monotonic() < deadline:
            clients[0][0].publish(topic(0), body(0, 0))
            time.sleep(0.1)
        _wait(first, 1, "the monitor received nothing")
        start = mon.summary.reports
        t0 = time.perf_counter()
        for n in range(REPORTS):
            i, k = n % THINGS, 1 + n // THINGS
            clients[i][0].publish(topic(i), body(i, k))
        published = time.perf_counter() - t0
        _wait(lambda: mon.summary.reports - start >= REPORTS, 300,
              "the monitor judged %d of %d reports" % (mon.summary.reports - start, REPORTS))
        return time.perf_counter() - t0, published
    finally:
        mon.inbox.put(("lost", 0))      # ends its loop as a lost session does; its run closes its store
        if t.is_alive():
            t.join(30)
        for c, _ in clients:
            c.disconnect()
            c.loop_stop()


def _quietly(fn, **kw):
    from warden.monitor.live import MonitorError
    try:
        fn(**kw)
    except MonitorError:
        pass        # the end of the run (see _live)


def run(fleet):
    from warden.fleet import pki
    from warden.state import State

    rows = []
    for deep in (True, False):
        # a state of its own for each: the store starts empty, as the live run's does
        state = State(fleet.tmp / ("monitor-%s" % ("deep" if deep else "burst")) / ".warden")
        pki.init_pki(state)
        s = _engine_alone(state, deep)
        rows.append({"metric": "Engine + Store alone (no broker), %s" % ("an hour deep" if deep else "burst"),
                     "reports": REPORTS, "s": round(s, 2), "reports/s": round(REPORTS / s)})
    took, published = _live(fleet)
    rows.append({"metric": "live Monitor at mosquitto (TLS, 100 device sessions), burst", "reports": REPORTS,
                 "s": round(took, 2), "reports/s": round(REPORTS / took)})
    rows.append({"metric": "  of which the publishing", "reports": REPORTS, "s": round(published, 2),
                 "reports/s": round(REPORTS / published)})
    return rows


if __name__ == "__main__":
    from bench.common import fleet, print_table
    with fleet() as f:
        print_table("Monitor ingest", run(f), COLS, note=NOTE)
