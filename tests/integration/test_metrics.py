"""The metrics report (firmware/metrics.py) from a real twin through a real mosquitto, and the
monitor's rules on those very reports. One twin with metrics_s 1: the operator, whom the policy
lets read dt/<app>/+/metrics, receives its reports in the format of docs/device.md ("The metrics
report"); the broker stops under it (its connects are refused: counted by reason) and comes back
(a session lost and a second report whose counters are the first one's or more); then the twin
reboots by its watchdog (a boot counted, the reset cause named). The reports, as the broker
delivered them, go through `warden monitor`'s own handling (warden.monitor.live) and raise the
rules that watch vitals: heap below a threshold, a reboot loop from `boots`, connect failures."""
import json

from support.twinproc import Twin
from warden.board import twin as twinlib
from warden.fleet import devices
from warden.monitor import rules as monrules
from warden.monitor.engine import Engine
from warden.monitor.live import Monitor
from warden.monitor.store import Store
from warden.state import State

KEYS = {"v", "seq", "up", "rc", "boots", "hf", "hl", "tx", "txb", "rx", "rxb", "ca", "cf", "sl", "kept",
        "wait", "drop", "ota", "rssi", "temp"}
THING = "metrics-1"
TOPIC = f"dt/warden/{THING}/metrics"


def _next_report(op, t):
    """The next metrics message the operator `op` receives (as the broker delivered it)."""
    try:
        m = op.expect(TOPIC, timeout=15)
    except TimeoutError:
        raise AssertionError("no metrics report within 15 s:\n" + t.output[-3000:]) from None
    assert not m.retain and b" " not in m.payload, m.payload      # not retained; compact
    return m


def test_a_twins_reports_reach_the_operator_and_the_monitors_rules(pki_state, broker, mqtt_client, tmp_path):
    devices.add_device(pki_state, THING)
    path = twinlib.flash_path(pki_state, THING)
    twinlib.update_config(path, broker={"host": "localhost", "port": broker.port}, interval_ms=100, metrics_s=1,
                          backoff_ms=100, backoff_max_ms=200)
    op = mqtt_client("operator")
    assert not op.subscribe(TOPIC, qos=0)[0].is_failure
    got = []
    t = Twin(path, heap=twinlib.DEFAULT_HEAP, restart_on_reset=False)
    try:
        t.start()
        got.append(_next_report(op, t))
        broker.stop()                    # under the running twin: its session is lost,
        t.wait_for(r"ERROR mqtt: connect failed", 15)     # and a reconnect is refused
        broker.proc = None
        broker.start()
        op = mqtt_client("operator")
        assert not op.subscribe(TOPIC, qos=0)[0].is_failure
        got.append(_next_report(op, t))
        t.stop()
        t.start(reset_cause=3)           # the watchdog's reset: a boot counted
        got.append(_next_report(op, t))
    finally:
        t.stop()
    a, b, c = reports = [json.loads(m.payload) for m in got]
    for r in reports:
        assert set(r) == KEYS, sorted(r)
        assert r["v"] == 1 and r["ota"] == "idle" and r["wait"] in (0, 1), r
        assert r["rssi"] is None and r["temp"] is None, r     # the twin has no radio, no chip sensor
        assert 0 < r["hl"] <= r["hf"] and r["ca"] >= 1, r
        assert all(type(r[k]) is int and r[k] >= 0 for k in KEYS - {"rc", "cf", "ota", "rssi", "temp"}), r
    assert (a["seq"], a["boots"], a["rc"], a["sl"], a["cf"]) == (1, 1, "power-on", 0, {}), a
    # the same boot after the outage: one session lost, the refused connects by their reason
    assert b["seq"] > 1 and b["boots"] == 0 and b["sl"] == 1 and b["cf"].get("refused", 0) >= 1, b
    assert b["ca"] == 1 + b["sl"] + sum(b["cf"].values()), b       # each try: made or failed
    for k in ("tx", "txb", "rxb", "up"):      # the first report and readings went out, PUBACKs came
        assert b[k] > a[k], (k, a, b)
    for k in ("rx", "ca", "kept", "drop"):
        assert b[k] >= a[k], (k, a, b)
    # the next boot: counters from zero, the reboot counted on flash, its cause named
    assert (c["seq"], c["boots"], c["rc"], c["sl"], c["cf"]) == (1, 1, "watchdog", 0, {}), c

    # The monitor's handling of exactly these messages (warden.monitor.live: topic, JSON, rules), in
    # a state of its own (the session's is shared): one rule per vital a fleet alarms on.
    mon_state = State(tmp_path / ".warden")
    data = monrules.default_rules_data()
    data["rules"] = [
        {"name": "heap-low", "type": "below", "metric": "hl", "threshold": 1 << 30,    # any heap is "low"
         "datapoints_to_alarm": 2, "datapoints_to_clear": 2},
        {"name": "heap-fine", "type": "below", "metric": "hl", "threshold": 1024},   # never this low
        {"name": "reboot-loop", "type": "sum", "metric": "boots", "window": 3600, "threshold": 1},
        {"name": "connect-failures", "type": "above", "metric": "cf_new", "threshold": 0},
    ]
    monrules.rules_path(mon_state).parent.mkdir(parents=True, exist_ok=True)
    monrules.rules_path(mon_state).write_text(json.dumps(data))
    events = []
    mon = Monitor(mon_state, emit=events.append)
    raised = []
    with Store(mon_state) as store:
        engine = Engine(mon.rules, store)
        for i, m in enumerate(got):
            mon._message(engine, m.topic, m.payload, 1_800_000_000 + i)
            raised.append(sorted(e["rule"] for e in events if e["state"] == "raised"))
    # report 2 raises heap-low (its 2nd breach) and connect-failures (refused connects since report
    # 1); report 3 the reboot loop (boots 1 + 1 in the hour), and no new connect failure; heap-fine never
    assert raised == [[], ["connect-failures", "heap-low"], ["connect-failures", "heap-low", "reboot-loop"]], events
    assert [e["rule"] for e in events if e["state"] == "cleared"] == ["connect-failures"], events


def test_a_flooding_twin_raises_message_rate_and_clears_once_it_is_told_to_stop(pki_state, broker, mqtt_client,
                                                                              tmp_path):
    """The default `message-rate` rule (more than 120 messages a minute, 2 reports to alarm, 2 to
    clear) on a real twin that takes a reading every 20 ms: raised from its reports; a signed remote
    setting (`warden device config`) slows it to one every 2 s, and the rule clears on the reports
    that follow."""
    from warden.fleet import devconfig
    from warden.ota import keys

    thing = "metrics-flood"
    if not keys.has_key(pki_state):
        keys.init_keys(pki_state)
    pki_state.broker_port = broker.port
    devices.add_device(pki_state, thing)
    path = twinlib.flash_path(pki_state, thing)
    twinlib.update_config(path, broker={"host": "localhost", "port": broker.port}, interval_ms=20, metrics_s=1)
    topic = f"dt/warden/{thing}/metrics"
    op = mqtt_client("operator")
    assert not op.subscribe(topic, qos=0)[0].is_failure
    mon_state = State(tmp_path / ".warden")
    data = monrules.default_rules_data()
    data["rules"] = [r for r in data["rules"] if r["name"] == "message-rate"]
    monrules.rules_path(mon_state).parent.mkdir(parents=True, exist_ok=True)
    monrules.rules_path(mon_state).write_text(json.dumps(data))
    events = []
    mon = Monitor(mon_state, emit=events.append)
    t = Twin(path, heap=twinlib.DEFAULT_HEAP, restart_on_reset=False).start()
    try:
        with Store(mon_state) as store:
            engine = Engine(mon.rules, store)

            def feed(n):
                for _ in range(n):
                    m = op.expect(topic, timeout=15)
                    mon._message(engine, m.topic, m.payload, json.loads(m.payload)["up"])
            feed(3)
            assert [e["state"] for e in events if e.get("rule") == "message-rate"] == ["raised"], events
            devconfig.set_settings(pki_state, thing, {"interval_ms": 2000}, port=broker.port)
            t.wait_for(r"INFO config: settings changed by command \d+: interval_ms", 15)
            op.expect(topic, timeout=15)      # a report that may straddle the change: not judged
            feed(3)
    finally:
        t.stop()
    assert [e["state"] for e in events if e.get("rule") == "message-rate"] == ["raised", "cleared"], events
