"""The monitor's rules, store, log reading and CLI on the host: each static rule raises on a stream of
data points and clears, with Device Defender's datapoints to alarm and to clear; the retention
bounds; a bad rules file is an error with a hint; mosquitto's own log lines become signals; the
rules render as a Device Defender security profile."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from warden.cli import main
from warden.monitor import rules as monrules
from warden.monitor.engine import BROKER, Engine, derive, percentile
from warden.monitor.signals import LogReader, parse_line
from warden.monitor.store import Store
from warden.policy.aws import render_defender
from warden.state import State


@pytest.fixture
def state(tmp_path):
    return State(tmp_path / ".warden")


def engine_for(state, *rules, **retention):
    data = {"version": 1, "rules": list(rules)}
    if retention:
        data["retention"] = retention
    parsed = monrules.parse_rules(data)
    store = Store(state, parsed.retention_days, parsed.points_per_device)
    return Engine(parsed, store), store


def report(seq, up, **kw):
    base = {"v": 1, "seq": seq, "up": up, "rc": "power-on", "boots": 0, "hf": 30000, "hl": 20000, "tx": seq * 2,
            "txb": seq * 200, "rx": 0, "rxb": 0, "ca": 1, "cf": {}, "sl": 0, "kept": 0, "wait": 0, "drop": 0,
            "ota": "idle", "rssi": None, "temp": None}
    base.update(kw)
    return base


def states(events):
    return [(e.state, e.rule) for e in events]


def test_heap_low_needs_two_breaches_in_a_row_and_two_good_reports_to_clear(state):
    eng, store = engine_for(state, {"name": "heap-low", "type": "below", "metric": "hl", "threshold": 8192,
                                    "datapoints_to_alarm": 2, "datapoints_to_clear": 2})
    seen = []
    for i, hl in enumerate([20000, 6000, 20000, 6000, 5000, 4000, 20000, 5000, 20000, 20000, 20000], 1):
        seen.append(states(eng.metrics("t1", 1000 + i * 60, report(i, i * 60, hl=hl))))
    # one breach alone raises nothing; two in a row raise once; a single good report clears nothing
    assert seen == [[], [], [], [], [("raised", "heap-low")], [], [], [], [], [("cleared", "heap-low")], []]
    alerts = store.alerts()
    assert len(alerts) == 1 and alerts[0]["state"] == "cleared" and alerts[0]["value"] == 5000
    assert alerts[0]["data"]["hl"] == 5000 and alerts[0]["data"]["seq"] == 5    # the data that raised it


def test_message_rate_comes_from_the_devices_tx_counter_within_one_boot(state):
    eng, store = engine_for(state, {"name": "message-rate", "type": "above", "metric": "msg_rate", "threshold": 120})
    assert eng.metrics("t1", 0, report(1, 60, tx=10)) == []             # no rate from one report
    ev = eng.metrics("t1", 60, report(2, 120, tx=10 + 300))              # 300 messages in 60 s
    assert states(ev) == [("raised", "message-rate")] and ev[0].value == 300
    assert eng.metrics("t1", 60, report(2, 120, tx=10 + 300)) == []      # the same report again: ignored
    ev = eng.metrics("t1", 120, report(3, 180, tx=10 + 300 + 20))
    assert states(ev) == [("cleared", "message-rate")]
    # a reboot (uptime went down) gives no rate, not a negative one
    assert derive(report(1, 5, tx=3), report(9, 500, tx=900))["msg_rate"] is None


def test_connect_failures_since_the_last_report_from_the_devices_totals_since_boot():
    first = derive(report(1, 60, cf={"refused": 2}), None)
    assert (first["cf_total"], first["cf_new"]) == (2, 2)                # a boot's first: all of them
    later = derive(report(2, 120, cf={"refused": 2, "tls": 1}), first)
    assert (later["cf_total"], later["cf_new"]) == (3, 1)
    same = derive(report(3, 180, cf={"refused": 2, "tls": 1}), later)
    assert same["cf_new"] == 0                                           # none since: the alarm clears
    rebooted = derive(report(1, 30, cf={"timeout": 1}), same)            # uptime went down: a new boot
    assert (rebooted["cf_total"], rebooted["cf_new"]) == (1, 1)


def test_any_authorization_failure_raises_and_clears_once_its_window_has_passed(state):
    eng, store = engine_for(state, {"name": "authorization-failure", "type": "count", "signal": "auth_fail",
                                    "window": 300, "threshold": 0})
    ev = eng.signal("t1", 1000, "auth_fail", {"topic": "dt/warden/t2/telemetry"})
    assert states(ev) == [("raised", "authorization-failure")] and ev[0].data["topic"] == "dt/warden/t2/telemetry"
    assert eng.signal("t1", 1010, "connect") == []                       # another signal says nothing
    assert eng.metrics("t1", 1100, report(1, 60)) == []                  # still inside the window
    assert eng.tick(1200) == []
    assert states(eng.tick(1301)) == [("cleared", "authorization-failure")]
    assert store.alerts(open_only=True) == []


def test_certificate_failures_belong_to_the_broker(state):
    eng, store = engine_for(state, {"name": "certificate-failure", "type": "count", "signal": "cert_fail",
                                    "window": 60, "threshold": 1})
    assert eng.signal(None, 10, "cert_fail", {"reason": "certificate revoked"}) == []
    ev = eng.signal(None, 11, "cert_fail", {"reason": "certificate revoked"})
    assert states(ev) == [("raised", "certificate-failure")] and ev[0].thing == BROKER
    assert states(eng.tick(200)) == [("cleared", "certificate-failure")]


def test_a_reboot_loop_is_boots_summed_over_the_window(state):
    eng, _ = engine_for(state, {"name": "reboot-loop", "type": "sum", "metric": "boots", "window": 3600,
                                "threshold": 3, "datapoints_to_clear": 1})
    got = [states(eng.metrics("t1", t, report(1, 5, boots=b))) for t, b in
           [(0, 1), (600, 2), (1200, 1), (4000, 0), (6000, 0)]]
    # 1, 3, 4 (> 3: raised), then 1 in the last hour (cleared), then 0
    assert got == [[], [], [("raised", "reboot-loop")], [("cleared", "reboot-loop")], []]


def test_an_outbox_growing_for_n_reports_with_a_backlog_waiting(state):
    eng, _ = engine_for(state, {"name": "outbox-growing", "type": "rising", "metric": "kept", "reports": 3})
    got = []
    for i, (kept, wait) in enumerate([(0, 0), (2, 1), (4, 1), (6, 1), (6, 0), (7, 1)], 1):
        got.append(states(eng.metrics("t1", i * 60, report(i, i * 60, kept=kept, wait=wait))))
    assert got == [[], [], [], [("raised", "outbox-growing")], [("cleared", "outbox-growing")], []]


def test_a_device_above_the_fleets_p99(state):
    eng, _ = engine_for(state, {"name": "outlier", "type": "fleet", "metric": "hf", "percentile": 99,
                                "window": 3600, "min_devices": 3, "datapoints_to_alarm": 2, "datapoints_to_clear": 1})
    for n, thing in enumerate(("a", "b", "c")):
        for i in range(5):
            eng.metrics(thing, 100 + i, report(i + 1, (i + 1) * 60, hf=30000 + n * 10 + i))
    assert eng.metrics("d", 200, report(1, 60, hf=90000)) == []        # one point: not two in a row
    assert states(eng.metrics("d", 201, report(2, 120, hf=90000))) == [("raised", "outlier")]
    assert states(eng.metrics("d", 202, report(3, 180, hf=30005))) == [("cleared", "outlier")]
    # too few other devices: the rule says nothing
    eng2, _ = engine_for(State(state.root.parent / "other"), {"name": "outlier", "type": "fleet", "metric": "hf",
                                                               "min_devices": 10})
    eng2.metrics("a", 1, report(1, 60))
    assert eng2.metrics("b", 2, report(1, 60, hf=10 ** 6)) == []
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 99) == 5


def test_retention_by_count_and_by_age(state):
    eng, store = engine_for(state, {"name": "heap-low", "type": "below", "metric": "hl", "threshold": 1},
                            days=1, points_per_device=10)
    for i in range(25):
        eng.metrics("t1", 1000 + i, report(i + 1, (i + 1) * 60))
    eng.metrics("t2", 1000, report(1, 60))
    assert store.count_points("t1") == 10 and store.count_points("t2") == 1
    assert [d["seq"] for _, d in store.points("t1")] == list(range(16, 26))      # the newest kept
    eng.metrics("t1", 1000 + 86400 + 30, report(99, 9999))
    assert store.count_points("t1") == 1                                          # a day later: one left


def test_the_rules_file_is_created_with_defaults_and_a_bad_one_is_an_error_with_a_hint(state):
    rules = monrules.load_rules(state)
    path = monrules.rules_path(state)
    assert path.exists() and json.loads(path.read_text())["version"] == 1
    assert {r.name for r in rules.rules} >= {"message-rate", "authorization-failure", "reboot-loop", "heap-low",
                                             "outbox-growing", "message-rate-outlier"}
    runner = CliRunner()
    for text, words in [("{not json", "not valid JSON"),
                        ('{"version": 2, "rules": []}', "version 2"),
                        ('{"version": 1, "rules": [{"name": "x", "type": "above", "metric": "heap"}]}', "metric"),
                        ('{"version": 1, "rules": [{"name": "x", "type": "below", "metric": "hl"}]}', "threshold"),
                        ('{"version": 1, "rules": [{"name": "x", "type": "count", "signal": "auth_fail", '
                         '"threshold": 0, "actions": ["reboot"]}]}', "actions")]:
        path.write_text(text)
        r = runner.invoke(main, ["--state", str(state.root), "monitor", "alerts"], catch_exceptions=False)
        assert r.exit_code == 0      # listing alerts reads no rules
        r = runner.invoke(main, ["--state", str(state.root), "policy", "render", "--format", "aws", "--defender"],
                          catch_exceptions=False)
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert "error:" in r.output and words in r.output and "docs/monitor.md" in r.output, r.output


# Lines as mosquitto 2.0.11 wrote them with warden's config (tests/integration/test_monitor.py reads
# them live): a device's session, a client without a certificate, a revoked one, a second session
# with one identity, and the guard's denial.
REAL_LOG = """\
2026-12-05T13:58:28: mosquitto version 2.0.11 starting
2026-12-05T13:58:28: warden_guard: 3 principals, 0 banned names, 0 quarantined
2026-12-05T13:58:28: New connection from 127.0.0.1:43371 on port 53327.
2026-12-05T13:58:28: New client connected from 127.0.0.1:43371 as t1 (p2, c1, k30, u't1').
2026-12-05T13:58:28: warden_guard: denied publish from t1 to 'dt/warden/t2/telemetry'
2026-12-05T13:58:28: Client t1 disconnected.
2026-12-05T13:58:28: New connection from 127.0.0.1:34217 on port 53327.
2026-12-05T13:58:28: OpenSSL Error[0]: error:0A0000C7:SSL routines::peer did not return a certificate
2026-12-05T13:58:28: Client <unknown> disconnected: Protocol error.
2026-12-05T13:58:29: OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed
2026-12-05T13:58:30: Client t1 already connected, closing old connection.
2026-12-05T13:58:31: Client t1 disconnected: Protocol error.
2026-12-05T13:58:31: warden_guard: denied publish from t3 to 'dt/warden/t3/telemetry' (quarantined)
2026-12-05T13:58:32: New client connected from 127.0.0.1:40000 as operator.default@ab12 (p2, c1, k30, u'operator.default@ab12').
"""


def test_mosquittos_log_lines_become_signals():
    got = [parse_line(line) for line in REAL_LOG.splitlines()]
    sigs = [(s.signal, s.name, s.detail.get("topic") or s.detail.get("reason")) for s in got if s]
    assert sigs == [
        ("connect", "t1", None),
        ("auth_fail", "t1", "dt/warden/t2/telemetry"),
        ("disconnect", "t1", None),
        ("cert_fail", None, "peer did not return a certificate"),
        ("cert_fail", None, "certificate verify failed"),
        ("refused_id", "t1", None),
        ("disconnect", "t1", "Protocol error"),
        ("auth_fail", "t3", "dt/warden/t3/telemetry"),
        ("connect", "operator.default@ab12", None),
    ]
    assert got[12].detail["reason"] == "quarantined"
    assert parse_line("garbage") is None and parse_line("2026-12-05T13:58:28: Config loaded from x.") is None


def test_the_log_is_read_once_line_by_line_across_runs(state, tmp_path):
    import time as _time

    log = tmp_path / "mosquitto.log"
    stamp = _time.strftime("%Y-%m-%dT%H:%M:%S")
    old = "2020-01-01T00:00:00: New client connected from 1.2.3.4:5 as old (p2, c1, k30, u'old').\n"
    log.write_text(old + f"{stamp}: New client connected from 1.2.3.4:5 as t1 (p2, c1, k30, u't1').\n{stamp}: Client t1")
    with Store(state) as store:
        reader = LogReader(log, store)
        assert [s.name for s in reader.read()] == ["t1"]     # the old line skipped on a first read; half a line waits
        assert reader.read() == []
        with open(log, "a") as f:
            f.write(" disconnected.\n")
        assert [(s.signal, s.name) for s in LogReader(log, store).read()] == [("disconnect", "t1")]
        log.write_text(f"{stamp}: Client t9 disconnected.\n")      # replaced (shorter): read from its start
        assert [s.name for s in reader.read()] == ["t9"]


def test_the_rules_render_as_a_device_defender_security_profile(state):
    profile, skipped = render_defender(monrules.load_rules(state), "warden")
    by_name = {b["name"]: b for b in profile["behaviors"]}
    assert profile["securityProfileName"] == "warden-warden"
    assert by_name["authorization-failure"] == {
        "name": "authorization-failure", "metric": "aws:num-authorization-failures",
        "criteria": {"comparisonOperator": "greater-than", "value": {"count": 0}, "durationSeconds": 300,
                     "consecutiveDatapointsToAlarm": 1, "consecutiveDatapointsToClear": 1}}
    assert by_name["message-rate"]["criteria"]["value"] == {"count": 600}           # 120 a minute, 5 minutes
    assert by_name["message-rate-outlier"]["criteria"]["statisticalThreshold"] == {"statistic": "p99"}
    assert by_name["message-rate-outlier"]["criteria"]["consecutiveDatapointsToAlarm"] == 3
    assert {n for n, _ in skipped} == {"heap-low", "reboot-loop", "outbox-growing", "certificate-failure"}
    r = CliRunner().invoke(main, ["--state", str(state.root), "policy", "render", "--format", "aws", "--defender"])
    assert r.exit_code == 0 and json.loads(r.stdout) == profile


def test_alerts_are_listed_with_the_data_that_raised_them(state):
    eng, store = engine_for(state, {"name": "heap-low", "type": "below", "metric": "hl", "threshold": 8192})
    eng.metrics("t1", 1000, report(1, 60, hl=100))
    store.close()
    r = CliRunner().invoke(main, ["--state", str(state.root), "monitor", "alerts", "--json"])
    assert r.exit_code == 0, r.output
    (alert,) = json.loads(r.stdout)
    assert (alert["thing"], alert["rule"], alert["state"], alert["data"]["hl"]) == ("t1", "heap-low", "open", 100)
    r = CliRunner().invoke(main, ["--state", str(state.root), "monitor", "alerts"])
    assert "heap-low" in r.output and "t1" in r.output


def test_readings_are_kept_sampled_for_the_dashboard_and_judged_by_no_rule(state):
    eng, store = engine_for(state, {"name": "heap-low", "type": "below", "metric": "hl", "threshold": 1 << 30})
    for i in range(30):       # a reading every second for 30 s
        assert eng.reading("d1", 1000 + i, {"seq": i, "ts": 1000 + i, "t": 20.5}) == []
    kept = store.points("d1", "telemetry")
    assert [d["seq"] for _, d in kept] == [0, 10, 20]     # one per 10 s of data time
    assert store.alerts() == []
