"""The monitor's books, in the registry's SQLite file: each device's data points (bounded), the
rules' running counts, the alerts raised and cleared, the quarantined devices, and how far the
broker's log was read.

Storage only: it must not judge a data point (engine.py) or act (actions.py). Its tables are its
own (`monitor_*`, created if missing), beside the registry's and outside the registry's schema
version, so the registry's migrations and these tables never step on each other.

Retention (rules.json "retention"): a device keeps the data points of the last `days` days and at
most `points_per_device` of them, the oldest going first; both are applied on every insert, so the
table never holds more than that per device. Cleared alerts older than `days` go too; open alerts
and quarantines stay until cleared or lifted.
"""
from __future__ import annotations

import json
import sqlite3
import time

from ..fleet.registry import Registry
from ..state import State

_TABLES = """
CREATE TABLE IF NOT EXISTS monitor_points (
    id      INTEGER PRIMARY KEY,
    thing   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    ts      REAL NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS monitor_points_thing ON monitor_points (thing, id);
CREATE TABLE IF NOT EXISTS monitor_rule_state (
    thing    TEXT NOT NULL,
    rule     TEXT NOT NULL,
    breaches INTEGER NOT NULL DEFAULT 0,
    clears   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (thing, rule)
);
CREATE TABLE IF NOT EXISTS monitor_alerts (
    id       INTEGER PRIMARY KEY,
    thing    TEXT NOT NULL,
    rule     TEXT NOT NULL,
    raised   REAL NOT NULL,
    cleared  REAL,
    value    REAL,
    detail   TEXT NOT NULL,
    data     TEXT NOT NULL,
    actions  TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS monitor_alerts_open ON monitor_alerts (thing, rule, cleared);
CREATE TABLE IF NOT EXISTS monitor_quarantine (
    thing   TEXT PRIMARY KEY,
    since   REAL NOT NULL,
    rule    TEXT,
    reason  TEXT
);
CREATE TABLE IF NOT EXISTS monitor_cursor (
    source  TEXT PRIMARY KEY,
    inode   INTEGER NOT NULL,
    offset  INTEGER NOT NULL
)
"""


def _iso(ts):
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Store:
    """The monitor's tables in `state`'s registry file (a context manager)."""

    def __init__(self, state: State, retention_days: float = 7, points_per_device: int = 2000):
        if not state.registry_path.exists():
            Registry(state.registry_path).close()     # created 0600, with the registry's schema
        self.retention_s = retention_days * 86400
        self.points_per_device = points_per_device
        self.db = sqlite3.connect(str(state.registry_path), timeout=10, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        for stmt in filter(str.strip, _TABLES.split(";")):
            self.db.execute(stmt)

    def close(self):
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- data points ---------------------------------------------------------------------------
    def add_point(self, thing: str, kind: str, ts: float, data: dict) -> None:
        """Keep one data point, then apply the retention to `thing`'s points."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT INTO monitor_points (thing, kind, ts, data) VALUES (?, ?, ?, ?)",
                       (thing, kind, ts, json.dumps(data, sort_keys=True)))
            db.execute("DELETE FROM monitor_points WHERE thing = ? AND ts < ?", (thing, ts - self.retention_s))
            db.execute("DELETE FROM monitor_points WHERE thing = ? AND id <= (SELECT id FROM monitor_points "
                       "WHERE thing = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                       (thing, thing, self.points_per_device))
            db.execute("DELETE FROM monitor_alerts WHERE cleared IS NOT NULL AND cleared < ?", (ts - self.retention_s,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def points(self, thing: str, kind: str | None = None, since: float | None = None, limit: int | None = None) -> list:
        """(ts, data) of `thing`'s points, oldest first (the newest `limit` if given)."""
        sql = "SELECT ts, data FROM monitor_points WHERE thing = ?"
        args = [thing]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        sql += " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = self.db.execute(sql, args).fetchall()
        return [(r["ts"], json.loads(r["data"])) for r in reversed(rows)]

    def count_points(self, thing: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM monitor_points WHERE thing = ?", (thing,)).fetchone()[0]

    def fleet_points(self, kind: str, since: float, exclude: str) -> list:
        """(thing, data) of every other device's `kind` points since `since`."""
        rows = self.db.execute("SELECT thing, data FROM monitor_points WHERE kind = ? AND ts >= ? AND thing != ?",
                               (kind, since, exclude)).fetchall()
        return [(r["thing"], json.loads(r["data"])) for r in rows]

    # -- the rules' consecutive counts -----------------------------------------------------------
    def rule_state(self, thing: str, rule: str) -> tuple:
        row = self.db.execute("SELECT breaches, clears FROM monitor_rule_state WHERE thing = ? AND rule = ?",
                              (thing, rule)).fetchone()
        return (row["breaches"], row["clears"]) if row else (0, 0)

    def set_rule_state(self, thing: str, rule: str, breaches: int, clears: int) -> None:
        self.db.execute("INSERT INTO monitor_rule_state (thing, rule, breaches, clears) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (thing, rule) DO UPDATE SET breaches = excluded.breaches, clears = excluded.clears",
                        (thing, rule, breaches, clears))

    # -- alerts ----------------------------------------------------------------------------------
    def open_alert(self, thing: str, rule: str):
        return self.db.execute("SELECT * FROM monitor_alerts WHERE thing = ? AND rule = ? AND cleared IS NULL",
                               (thing, rule)).fetchone()

    def raise_alert(self, thing: str, rule: str, ts: float, value, detail: str, data: dict, actions=()) -> int:
        cur = self.db.execute("INSERT INTO monitor_alerts (thing, rule, raised, value, detail, data, actions) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (thing, rule, ts, value, detail, json.dumps(data, sort_keys=True),
                               json.dumps(list(actions))))
        return cur.lastrowid

    def set_actions(self, alert_id: int, actions) -> None:
        self.db.execute("UPDATE monitor_alerts SET actions = ? WHERE id = ?", (json.dumps(list(actions)), alert_id))

    def clear_alert(self, thing: str, rule: str, ts: float) -> bool:
        cur = self.db.execute("UPDATE monitor_alerts SET cleared = ? WHERE thing = ? AND rule = ? AND cleared IS NULL",
                              (ts, thing, rule))
        return cur.rowcount > 0

    def alerts(self, open_only: bool = False, thing: str | None = None) -> list:
        sql = "SELECT * FROM monitor_alerts"
        where, args = [], []
        if open_only:
            where.append("cleared IS NULL")
        if thing:
            where.append("thing = ?")
            args.append(thing)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.db.execute(sql + " ORDER BY id", args).fetchall()
        return [{"id": r["id"], "thing": r["thing"], "rule": r["rule"], "state": "open" if r["cleared"] is None else "cleared",
                 "raised": _iso(r["raised"]), "cleared": _iso(r["cleared"]), "value": r["value"],
                 "detail": r["detail"], "data": json.loads(r["data"]), "actions": json.loads(r["actions"])}
                for r in rows]

    # -- quarantine ------------------------------------------------------------------------------
    def quarantine(self, thing: str, rule: str | None, reason: str | None, ts: float | None = None) -> bool:
        cur = self.db.execute("INSERT OR IGNORE INTO monitor_quarantine (thing, since, rule, reason) VALUES (?, ?, ?, ?)",
                              (thing, ts or time.time(), rule, reason))
        return cur.rowcount > 0

    def unquarantine(self, thing: str) -> bool:
        return self.db.execute("DELETE FROM monitor_quarantine WHERE thing = ?", (thing,)).rowcount > 0

    def quarantined(self) -> list:
        rows = self.db.execute("SELECT * FROM monitor_quarantine ORDER BY thing").fetchall()
        return [{"thing": r["thing"], "since": _iso(r["since"]), "rule": r["rule"], "reason": r["reason"]} for r in rows]

    # -- how far a log was read ------------------------------------------------------------------
    def cursor(self, source: str):
        row = self.db.execute("SELECT inode, offset FROM monitor_cursor WHERE source = ?", (source,)).fetchone()
        return (row["inode"], row["offset"]) if row else None

    def set_cursor(self, source: str, inode: int, offset: int) -> None:
        self.db.execute("INSERT INTO monitor_cursor (source, inode, offset) VALUES (?, ?, ?) "
                        "ON CONFLICT (source) DO UPDATE SET inode = excluded.inode, offset = excluded.offset",
                        (source, inode, offset))


def quarantined_things(state: State) -> list:
    """The quarantined thing names (what every broker's guard gets)."""
    if not state.registry_path.exists():
        return []
    db = sqlite3.connect(str(state.registry_path), timeout=10)
    try:
        return [r[0] for r in db.execute("SELECT thing FROM monitor_quarantine ORDER BY thing")]
    except sqlite3.OperationalError:
        return []     # no table yet: the monitor never ran
    finally:
        db.close()

