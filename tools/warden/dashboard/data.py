"""What the dashboard shows, as JSON-ready dicts: the fleet table, one device's page, the rollouts.

Reads only: it must not change the registry, the monitor's books or a rollout's (the monitor and
the rollout runner own those), and it must not render HTML (the page's script does, escaping
every value). Every call opens the stores, reads and closes them, so a page that polls sees what
another process wrote a moment ago, and a dashboard left running holds no lock.

Where each column comes from:
- the devices, their tags, versions and revocations: the registry, through
  warden.fleet.view.fleet_view (registry only: the broker is the monitor's to follow);
- online/offline and since when: the newest "status" data point the monitor kept
  (warden.monitor.store), else what the registry knows;
- vitals: the newest "metrics" point (the report of docs/monitor.md, with the monitor's derived
  rates); readings: "telemetry" points (warden monitor keeps one a device per 10 s);
- open alerts: the monitor's alerts table;
- rollouts: warden.rollout.store's summary() (counts per state and per stage, each device's row
  and reason) and its events.
"""
from __future__ import annotations

import datetime as _dt
import sqlite3
import time

from ..state import State

# The vitals the fleet table shows and a device's page charts, in this order (the metrics
# report's keys, docs/monitor.md; msg_rate and cf_total are the monitor's derived values).
VITALS = ("hf", "hl", "up", "msg_rate", "tx", "rx", "cf_total", "sl", "kept", "wait", "drop", "rssi", "temp")
VITAL_NAMES = {"hf": "heap free", "hl": "heap low", "up": "uptime s", "msg_rate": "msgs/min", "tx": "sent",
               "rx": "received", "cf_total": "connect failures", "sl": "sessions lost", "kept": "kept",
               "wait": "backlog", "drop": "log drops", "rssi": "RSSI dBm", "temp": "temp C"}
CHART_POINTS = 120      # the newest points a device's chart draws
EVENTS = 200            # the newest rollout events a rollout's view lists
STATUS_LOOKBACK = 20    # the newest status points searched for the version a device last said it runs


def _iso(ts) -> str | None:
    if ts is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(float(ts), _dt.timezone.utc).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _stores(state: State):
    """(monitor store, rollout store), or None for each one that cannot be opened: no registry
    yet means nothing to show, and is not created for the page's sake."""
    if not state.registry_path.exists():
        return None, None
    from ..monitor.store import Store as MonitorStore
    from ..rollout.store import Store as RolloutStore

    return MonitorStore(state), RolloutStore(state)


def _close(*stores):
    for s in stores:
        if s is not None:
            s.close()


def _status(mon, thing: str, row: dict) -> dict:
    """online/offline and since when: the monitor's newest status point, else the registry's word."""
    pts = mon.points(thing, "status", limit=STATUS_LOOKBACK) if mon is not None else []
    if row.get("status") == "revoked":
        return {"state": "revoked", "since": row.get("revoked_at"), "reason": row.get("revoke_reason")}
    if not pts:
        return {"state": "unknown", "since": None, "reason": None}
    ts, st = pts[-1]
    # An offline status (the broker's last will) carries no version: the one the device last said it runs
    version = next((p.get("version") for _, p in reversed(pts) if p.get("version")), None)
    return {"state": str(st.get("state") or "unknown"), "since": _iso(st.get("since") or ts),
            "reason": st.get("reason"), "version": version, "seen": _iso(ts)}


def _vitals(mon, thing: str) -> dict | None:
    pts = mon.points(thing, "metrics", limit=1) if mon is not None else []
    if not pts:
        return None
    ts, m = pts[0]
    out = {k: m.get(k) for k in VITALS if k in m}
    out["rc"] = m.get("rc")
    out["ota"] = m.get("ota")
    out["time"] = _iso(ts)
    return out


def _last_reading(mon, thing: str) -> dict | None:
    pts = mon.points(thing, "telemetry", limit=1) if mon is not None else []
    if not pts:
        return None
    ts, t = pts[0]
    return {"seq": t.get("seq"), "time": _iso(t.get("ts") or ts), "values": _numbers(t)}


def _numbers(d: dict) -> dict:
    """The numeric fields of a reading (its sensor values), bookkeeping keys left out."""
    return {k: v for k, v in d.items() if _num(v) is not None and k not in ("seq", "ts", "v")}


def fleet(state: State, mon=None, ro=None) -> list:
    """One row per registered device: tags, version, online/offline and since when, last reading,
    vitals, open alerts, the rollout holding it."""
    from ..fleet.view import fleet_view

    rows = []
    alerts = {}
    if mon is not None:
        for a in mon.alerts(open_only=True):
            alerts.setdefault(a["thing"], []).append({"rule": a["rule"], "raised": a["raised"], "detail": a["detail"]})
    if not state.registry_path.exists():
        return rows
    for r in fleet_view(state, broker=False).rows:
        thing = r["thing"]
        st = _status(mon, thing, r)
        rows.append({
            "thing": thing, "tags": r.get("tags") or {}, "registry": r.get("status"),
            "connection": st["state"], "since": st["since"], "reason": st.get("reason"),
            "version": st.get("version") or r.get("version"), "last_reading": _last_reading(mon, thing),
            "vitals": _vitals(mon, thing), "alerts": alerts.get(thing, []),
            "rollout": ro.held_by(thing) if ro is not None else None,
        })
    return rows


def rollouts(ro) -> list:
    """Each rollout's summary (warden.rollout.store.Store.summary), oldest first."""
    if ro is None:
        return []
    return [ro.summary(r.name) for r in ro.list()]


def snapshot(state: State) -> dict:
    """Everything the page's main view shows, at once (one poll)."""
    mon, ro = _stores(state)
    try:
        return {"app": state.app, "time": _iso(time.time()), "fleet": fleet(state, mon, ro),
                "rollouts": rollouts(ro)}
    finally:
        _close(mon, ro)


def device(state: State, thing: str) -> dict | None:
    """One device's page: its fleet row, the series of its vitals and readings (oldest first), its
    alerts (open and cleared), its place in each rollout. None if the registry does not know it."""
    mon, ro = _stores(state)
    try:
        row = next((r for r in fleet(state, mon, ro) if r["thing"] == thing), None)
        if row is None:
            return None
        series = {}
        for ts, m in mon.points(thing, "metrics", limit=CHART_POINTS):
            for k in VITALS:
                v = _num(m.get(k))
                if v is not None:
                    series.setdefault(k, []).append([ts, v])
        readings = {}
        for ts, t in mon.points(thing, "telemetry", limit=CHART_POINTS):
            for k, v in _numbers(t).items():
                readings.setdefault(k, []).append([ts, v])
        statuses = [{"time": _iso(ts), "state": s.get("state"), "reason": s.get("reason")}
                    for ts, s in mon.points(thing, "status", limit=20)]
        places = []
        for r in ro.list():
            for m in ro.members(r.name):
                if m.thing == thing:
                    places.append({"rollout": r.name, "rollout_state": r.state, "stage": m.stage,
                                   "state": m.state, "reason": m.reason, "version": r.version})
        return {"device": row, "vitals": [{"key": k, "name": VITAL_NAMES[k], "points": series[k]}
                                          for k in VITALS if k in series],
                "readings": [{"key": k, "name": k, "points": v} for k, v in sorted(readings.items())],
                "statuses": statuses, "alerts": mon.alerts(thing=thing)[-50:], "rollouts": places}
    finally:
        _close(mon, ro)


def rollout(state: State, name: str, since_id: int = 0) -> dict | None:
    """One rollout's summary and its newest events (after `since_id`). None if there is no such rollout."""
    mon, ro = _stores(state)
    try:
        if ro is None or ro.get(name) is None:
            return None
        out = ro.summary(name)
        ev = ro.events(name, since_id, limit=100000)[-EVENTS:]
        out["events"] = [{"id": e["id"], "time": _iso(e["ts"]), "thing": e["thing"], "event": e["event"],
                          "detail": e["detail"]} for e in ev]
        return out
    except sqlite3.OperationalError:
        return None
    finally:
        _close(mon, ro)
