"""The monitor's judgement: each new data point of a device is kept (store.py) and run through every
rule that applies to it; a rule breached on `datapoints_to_alarm` consecutive data points raises
an alert, and `datapoints_to_clear` consecutive points within it clear the alert (AWS IoT Device
Defender's meaning of both).

It must not talk to a broker or act on an alert: it returns events, and the caller (live.py)
prints, publishes and runs the rule's actions (actions.py).

A data point is one of: a metrics report (`dt/<app>/<thing>/metrics`, the device's vitals), a
status message, or a broker signal (`signal`: auth_fail, cert_fail, refused_id, connect,
disconnect) read from the broker's log (signals.py). A `tick` is a data point with no new data:
it lets a count rule clear once its window has passed without a signal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .rules import Rule, Rules
from .store import Store

BROKER = "(broker)"    # who a signal with no device name belongs to (a TLS failure); never a thing name


@dataclass
class Event:
    """An alert raised or cleared."""
    state: str            # "raised" | "cleared"
    thing: str
    rule: str
    ts: float
    value: float | None
    detail: str
    data: dict = field(default_factory=dict)
    actions: list = field(default_factory=list)
    alert_id: int | None = None

    def as_dict(self) -> dict:
        return {"event": "alert", "state": self.state, "thing": self.thing, "rule": self.rule, "time": self.ts,
                "value": self.value, "detail": self.detail, "data": self.data, "actions": self.actions}


def percentile(values, p: float) -> float:
    """The p-th percentile of `values` (linear between the closest ranks, as numpy's default)."""
    s = sorted(values)
    if not s:
        raise ValueError("no values")
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _num(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def derive(report: dict, previous: dict | None) -> dict:
    """The report with the values worked out from it and the device's previous report: msg_rate and
    byte_rate (sent a minute, from tx/txb; only within one boot: uptime went up), cf_total (connect
    failures since boot) and cf_new (since the previous report: the device's counters are since
    boot, so a threshold on cf_total would hold until the next reboot)."""
    out = dict(report)
    cf = report.get("cf")
    out["cf_total"] = sum(v for v in cf.values() if _num(v) is not None) if isinstance(cf, dict) else None
    out["cf_new"] = out["cf_total"]      # the first report of a boot: every failure is new
    out["msg_rate"] = out["byte_rate"] = None
    if previous:
        up, pup = _num(report.get("up")), _num(previous.get("up"))
        if up is not None and pup is not None and up > pup:
            before = _num(previous.get("cf_total"))
            if out["cf_total"] is not None and before is not None and out["cf_total"] >= before:
                out["cf_new"] = out["cf_total"] - before
            for key, name in (("tx", "msg_rate"), ("txb", "byte_rate")):
                now, before = _num(report.get(key)), _num(previous.get(key))
                if now is not None and before is not None and now >= before:
                    out[name] = round((now - before) * 60 / (up - pup), 3)
    return out


class Engine:
    """Runs `rules` over data points kept in `store`."""

    # A fleet rule compares a device with every other device's points of its window: read from the
    # store and decoded once per FLEET_REFRESH_S of data time and kept, not once per report (which
    # made ingest quadratic in the fleet: ~75% of the time with a hundred devices; `make bench`,
    # monitor-ingest). A percentile of the fleet over an hour moves little in a few seconds.
    FLEET_REFRESH_S = 5.0

    def __init__(self, rules: Rules, store: Store):
        self.rules = rules
        self.store = store
        self._fleet: dict = {}      # (metric, window) -> (data time read at, [(thing, value), ...])

    # -- data points in ----------------------------------------------------------------------------
    def metrics(self, thing: str, ts: float, report: dict) -> list:
        """A metrics report. Returns the events it caused ([] for a repeat of the last report)."""
        last = self.store.points(thing, "metrics", limit=1)
        previous = last[0][1] if last else None
        if previous and all(previous.get(k) == v for k, v in report.items()):
            return []      # the same report again (a duplicate delivery)
        data = derive(report, previous)
        self.store.add_point(thing, "metrics", ts, data)
        return self._evaluate(thing, ts, "metrics", data)

    # Readings are kept for the dashboard's charts and last reading, not judged: one a device per
    # READING_EVERY_S of data time at most, so a device that reads every 100 ms costs the store what
    # one that reads every 10 s does (the points' retention applies to them as to the rest).
    READING_EVERY_S = 10.0

    def reading(self, thing: str, ts: float, reading: dict) -> list:
        """A reading (dt/<app>/<thing>/telemetry): kept when the last kept one is old enough; no rule
        looks at readings, so it raises nothing."""
        last = self.store.points(thing, "telemetry", limit=1)
        if last and 0 <= ts - last[0][0] < self.READING_EVERY_S:
            return []
        self.store.add_point(thing, "telemetry", ts, reading)
        return []

    def status(self, thing: str, ts: float, status: dict) -> list:
        last = self.store.points(thing, "status", limit=1)
        if last and last[0][1] == status:
            return []      # a retained status seen before
        self.store.add_point(thing, "status", ts, status)
        return self._evaluate(thing, ts, "status", status)

    def signal(self, thing: str | None, ts: float, signal: str, detail: dict | None = None) -> list:
        data = {"signal": signal, **(detail or {})}
        thing = thing or BROKER
        self.store.add_point(thing, "signal", ts, data)
        return self._evaluate(thing, ts, "signal", data)

    def tick(self, ts: float) -> list:
        """Re-judge every open alert of a count rule at time `ts` (its window moves on)."""
        events = []
        for alert in self.store.alerts(open_only=True):
            rule = self.rules.get(alert["rule"])
            if rule is not None and rule.type == "count":
                events += self._judge(alert["thing"], ts, rule, {"tick": True})
        return events

    # -- rules -------------------------------------------------------------------------------------
    def _evaluate(self, thing, ts, kind, data) -> list:
        events = []
        for rule in self.rules.rules:
            if rule.type == "count":
                if kind == "signal" and data.get("signal") != rule.signal:
                    continue      # another signal says nothing about this one
                if kind == "status":
                    continue
            elif kind != "metrics":
                continue
            events += self._judge(thing, ts, rule, data)
        return events

    def value(self, thing: str, ts: float, rule: Rule, data: dict):
        """(breached, value) of `rule` at this data point, or None if the point says nothing about it."""
        if rule.type == "count":
            since = ts - rule.window
            n = sum(1 for _, d in self.store.points(thing, "signal", since=since) if d.get("signal") == rule.signal)
            return n > rule.threshold, n
        if rule.type in ("above", "below"):
            v = _num(data.get(rule.metric))
            if v is None:
                return None
            return (v > rule.threshold if rule.type == "above" else v < rule.threshold), v
        if rule.type == "sum":
            if _num(data.get(rule.metric)) is None:
                return None
            total = sum(_num(d.get(rule.metric)) or 0 for _, d in self.store.points(thing, "metrics", since=ts - rule.window))
            return total > rule.threshold, total
        if rule.type == "rising":
            recent = [d for _, d in self.store.points(thing, "metrics", limit=rule.reports + 1)]
            streak = 0
            for older, newer in zip(reversed(recent[:-1]), reversed(recent[1:])):
                a, b = _num(older.get(rule.metric)), _num(newer.get(rule.metric))
                same_boot = (_num(newer.get("up")) or 0) > (_num(older.get("up")) or 0)
                if a is None or b is None or b <= a or not same_boot or newer.get("wait", 1) == 0:
                    break
                streak += 1
            return streak >= rule.reports, streak
        if rule.type == "fleet":
            v = _num(data.get(rule.metric))
            if v is None:
                return None
            pairs = self._fleet_values(rule, ts)
            values = [x for t, x in pairs if t != thing]
            devices = {t for t, _ in pairs if t != thing}
            if len(devices) < rule.min_devices:
                return None
            limit = percentile(values, rule.percentile)
            return v > limit, v
        return None

    def _fleet_values(self, rule: Rule, ts: float) -> list:
        """(thing, value) of every device's `rule.metric` in the rule's window (cached: see FLEET_REFRESH_S)."""
        key = (rule.metric, rule.window)
        got = self._fleet.get(key)
        if got is None or not 0 <= ts - got[0] < self.FLEET_REFRESH_S:
            pairs = []
            for t, d in self.store.fleet_points("metrics", ts - rule.window, ""):
                v = _num(d.get(rule.metric))
                if v is not None:
                    pairs.append((t, v))
            got = self._fleet[key] = (ts, pairs)
        return got[1]

    def _judge(self, thing, ts, rule: Rule, data) -> list:
        got = self.value(thing, ts, rule, data)
        if got is None:
            return []
        breached, value = got
        breaches, clears = self.store.rule_state(thing, rule.name)
        breaches, clears = (breaches + 1, 0) if breached else (0, clears + 1)
        self.store.set_rule_state(thing, rule.name, breaches, clears)
        open_alert = self.store.open_alert(thing, rule.name)
        detail = f"{rule.describe()}: {value:g}" if isinstance(value, (int, float)) else rule.describe()
        if open_alert is None and breaches >= rule.datapoints_to_alarm:
            ev = Event("raised", thing, rule.name, ts, value, detail, data, list(rule.actions))
            ev.alert_id = self.store.raise_alert(thing, rule.name, ts, value, detail, data, [])
            return [ev]
        if open_alert is not None and clears >= rule.datapoints_to_clear:
            self.store.clear_alert(thing, rule.name, ts)
            return [Event("cleared", thing, rule.name, ts, value, detail, data)]
        return []
