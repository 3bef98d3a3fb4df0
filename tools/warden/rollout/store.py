"""A rollout's books, in the registry's SQLite file: the rollout (its image, its plan, where it
stands), each device's place in it, and what happened when (the events the dashboard and
`warden rollout status` show).

Storage only: it must not decide what to send or when (runner.py). Its tables are its own
(`rollout_*`, created if missing), beside the registry's and outside the registry's schema version,
as the monitor's are. Every change is one transaction, so a rollout process killed at any moment
leaves a state the next `warden rollout run` resumes from: a device is marked `sending` before its
update is sent and `succeeded`/`failed` only once its outcome is known; one found `sending` or
`soaking` after a restart is asked again (an update the device already installed is answered from
its own state: the push resumes or finds it confirmed).

Rollout states: `created` (not run yet), `running`, `paused` (by an operator, or by the monitor's
`pause` action), `aborted` (by an operator, or by its abort rule: `reason` says which), `done`.
Device states: `waiting`, `sending` (the update is on its way or being confirmed), `soaking`
(confirmed; its health gate is running), `succeeded`, `failed` (refused, rolled back by its
self-test, timed out, or failed its health gate: `reason`), `skipped` (revoked or removed since the
rollout was made), `restored` (sent back to its old version by `abort --rollback`).
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import WardenError
from ..fleet.registry import Registry
from ..state import State

ACTIVE = ("created", "running", "paused")              # a rollout that still holds its devices
OPEN = ("waiting", "sending", "soaking")               # a device the rollout has not finished with
FINISHED = ("succeeded", "failed", "skipped", "restored")

_TABLES = """
CREATE TABLE IF NOT EXISTS rollouts (
    name     TEXT PRIMARY KEY,
    created  REAL NOT NULL,
    updated  REAL NOT NULL,
    state    TEXT NOT NULL,
    reason   TEXT,
    file     TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    version  TEXT NOT NULL,
    counter  INTEGER NOT NULL,
    plan     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollout_devices (
    rollout     TEXT NOT NULL,
    thing       TEXT NOT NULL,
    position    INTEGER NOT NULL,
    stage       TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    old_version TEXT,
    baseline    TEXT,
    started     REAL,
    finished    REAL,
    PRIMARY KEY (rollout, thing)
);
CREATE INDEX IF NOT EXISTS rollout_devices_thing ON rollout_devices (thing, state);
CREATE TABLE IF NOT EXISTS rollout_events (
    id       INTEGER PRIMARY KEY,
    rollout  TEXT NOT NULL,
    ts       REAL NOT NULL,
    thing    TEXT,
    event    TEXT NOT NULL,
    detail   TEXT
);
CREATE INDEX IF NOT EXISTS rollout_events_rollout ON rollout_events (rollout, id);
"""


class RolloutError(WardenError):
    hint = "`warden rollout status` lists the rollouts and where each stands"


@dataclass
class Plan:
    """How a rollout proceeds (docs/rollout.md, "The plan")."""
    canary: int = 1                 # devices of the first stage; all must pass before any other is touched
    rate: float = 10.0              # devices started per minute after the canary
    ramp_factor: float = 1.0        # the rate is multiplied by this ...
    ramp_every: int = 0             # ... after every this many succeeded devices (0: no ramp)
    max_rate: float = 1000.0        # the ramp's ceiling, devices per minute
    concurrency: int = 4            # devices in flight at once
    abort_percent: float = 20.0     # abort when this share of finished devices failed ...
    abort_min: int = 5              # ... once at least this many finished (a canary failure aborts at once)
    soak_s: float = 60.0            # the health gate's time after a device confirms
    # a device's free heap may drop this much below its pre-update level: the first update out of the
    # factory app costs up to ~10 KB on the 64-bit twin, ~6.6 KB on a board (docs/heap.md, "Interned names")
    heap_margin: int = 12288
    max_msgs_per_min: float = 120.0  # readings and status messages a healthy device sends per minute, at most
    min_readings: int = 1           # readings it must send during the soak
    timeout_s: float = 600.0        # one device's update, from its head to its self-test verdict
    wake_s: float = 0.0             # how long a device that is offline may take to appear (0: until it does)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        known = {k: v for k, v in json.loads(text).items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Rollout:
    name: str
    created: float
    updated: float
    state: str
    reason: str | None
    file: str
    sha256: str
    kind: str
    version: str
    counter: int
    plan: Plan = field(default_factory=Plan)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


@dataclass
class Member:
    rollout: str
    thing: str
    position: int
    stage: str                      # "canary" or "main"
    state: str
    reason: str | None
    old_version: str | None
    baseline: dict | None
    started: float | None
    finished: float | None


class Store:
    """The rollout tables of the registry at `state.registry_path` (the registry's own opening:
    a damaged file is a RegistryError with its hint)."""

    def __init__(self, state: State):
        self.state = state
        self._reg = Registry(state.registry_path)     # checks the file, creates it 0600
        self.db = sqlite3.connect(str(state.registry_path), timeout=10, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        for stmt in filter(str.strip, _TABLES.split(";")):
            self.db.execute(stmt)

    @contextmanager
    def _tx(self):
        # One write transaction (BEGIN IMMEDIATE: the write lock up front, so two rollout
        # processes or a monitor writing at once wait for each other rather than deadlock).
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self):
        self.db.close()
        self._reg.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- rollouts ----

    @staticmethod
    def _rollout(row) -> Rollout | None:
        if row is None:
            return None
        d = dict(row)
        d["plan"] = Plan.from_json(d["plan"])
        return Rollout(**d)

    def create(self, name: str, file: str, sha256: str, kind: str, version: str, counter: int, plan: Plan,
               things: list, old_versions: dict) -> Rollout:
        now = time.time()
        with self._tx():
            try:
                self.db.execute("INSERT INTO rollouts VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                                (name, now, now, "created", None, file, sha256, kind, version, counter,
                                 plan.to_json()))
            except sqlite3.IntegrityError:
                raise RolloutError(f"a rollout named {name} exists already",
                                   hint="choose another name, or `warden rollout status NAME` to see it") from None
            for i, thing in enumerate(things):
                self.db.execute("INSERT INTO rollout_devices (rollout, thing, position, stage, state, old_version) "
                                "VALUES (?,?,?,?,?,?)",
                                (name, thing, i, "canary" if i < plan.canary else "main", "waiting",
                                 old_versions.get(thing)))
            self._event(name, None, "created", f"{len(things)} devices, canary {min(plan.canary, len(things))}")
        return self.get(name)

    def get(self, name: str) -> Rollout | None:
        return self._rollout(self.db.execute("SELECT * FROM rollouts WHERE name=?", (name,)).fetchone())

    def require(self, name: str) -> Rollout:
        r = self.get(name)
        if r is None:
            raise RolloutError(f"no rollout named {name}")
        return r

    def list(self) -> list:
        return [self._rollout(r) for r in self.db.execute("SELECT * FROM rollouts ORDER BY created")]

    def set_state(self, name: str, state: str, reason: str | None = None, event: str | None = None) -> None:
        with self._tx():
            self.db.execute("UPDATE rollouts SET state=?, reason=?, updated=? WHERE name=?",
                            (state, reason, time.time(), name))
            self._event(name, None, event or state, reason)

    # ---- devices ----

    @staticmethod
    def _member(row) -> Member:
        d = dict(row)
        d["baseline"] = json.loads(d["baseline"]) if d["baseline"] else None
        return Member(**d)

    def members(self, name: str, states=None) -> list:
        rows = self.db.execute("SELECT * FROM rollout_devices WHERE rollout=? ORDER BY position", (name,))
        out = [self._member(r) for r in rows]
        return [m for m in out if states is None or m.state in states]

    def set_member(self, name: str, thing: str, state: str, reason: str | None = None, *,
                   baseline: dict | None = None, started: bool = False, finished: bool = False,
                   event: str | None = None) -> None:
        now = time.time()
        with self._tx():
            sets, args = ["state=?", "reason=?"], [state, reason]
            if baseline is not None:
                sets.append("baseline=?")
                args.append(json.dumps(baseline))
            if started:
                sets.append("started=?")
                args.append(now)
            if finished:
                sets.append("finished=?")
                args.append(now)
            self.db.execute(f"UPDATE rollout_devices SET {', '.join(sets)} WHERE rollout=? AND thing=?",
                            (*args, name, thing))
            self.db.execute("UPDATE rollouts SET updated=? WHERE name=?", (now, name))
            self._event(name, thing, event or state, reason)

    def held_by(self, thing: str) -> str | None:
        """The name of the active rollout that has not finished with `thing`, if any."""
        row = self.db.execute(
            "SELECT r.name FROM rollout_devices d JOIN rollouts r ON r.name = d.rollout "
            f"WHERE d.thing=? AND r.state IN ({','.join('?' * len(ACTIVE))}) "
            f"AND d.state IN ({','.join('?' * len(OPEN))})", (thing, *ACTIVE, *OPEN)).fetchone()
        return row[0] if row else None

    def rollouts_of(self, thing: str) -> list:
        """Names of the active rollouts that include `thing` and have not finished with it."""
        rows = self.db.execute(
            "SELECT DISTINCT r.name FROM rollout_devices d JOIN rollouts r ON r.name = d.rollout "
            f"WHERE d.thing=? AND r.state IN ({','.join('?' * len(ACTIVE))})", (thing, *ACTIVE))
        return [r[0] for r in rows]

    # ---- events ----

    def _event(self, name, thing, event, detail):
        self.db.execute("INSERT INTO rollout_events (rollout, ts, thing, event, detail) VALUES (?,?,?,?,?)",
                        (name, time.time(), thing, event, detail))

    def event(self, name: str, thing: str | None, event: str, detail: str | None = None) -> None:
        with self._tx():
            self._event(name, thing, event, detail)

    def confirmed(self, name: str) -> list:
        """The devices that confirmed this rollout's update (whatever their health gate said since)."""
        rows = self.db.execute("SELECT DISTINCT thing FROM rollout_events WHERE rollout=? AND event='confirmed'",
                               (name,))
        return [r[0] for r in rows]

    def events(self, name: str, since_id: int = 0, limit: int = 500) -> list:
        rows = self.db.execute("SELECT * FROM rollout_events WHERE rollout=? AND id>? ORDER BY id LIMIT ?",
                               (name, since_id, limit))
        return [dict(r) for r in rows]

    # ---- a summary (status, the dashboard) ----

    def summary(self, name: str) -> dict:
        """The rollout, its counts by device state and by stage, and each device's row: what
        `warden rollout status --json` prints and the dashboard shows."""
        r = self.require(name)
        ms = self.members(name)
        counts: dict = {}
        stages: dict = {}
        for m in ms:
            counts[m.state] = counts.get(m.state, 0) + 1
            s = stages.setdefault(m.stage, {})
            s[m.state] = s.get(m.state, 0) + 1
        return {
            "name": r.name, "state": r.state, "reason": r.reason, "kind": r.kind, "version": r.version,
            "counter": r.counter, "file": r.file, "sha256": r.sha256, "created": r.created, "updated": r.updated,
            "plan": r.plan.__dict__, "devices": len(ms), "counts": counts, "stages": stages,
            "members": [{"thing": m.thing, "stage": m.stage, "state": m.state, "reason": m.reason,
                         "old_version": m.old_version, "started": m.started, "finished": m.finished}
                        for m in ms],
        }


def held_by(state: State, thing: str) -> str | None:
    """The active rollout holding `thing` (None without a registry or a rollout)."""
    if not state.registry_path.exists():
        return None
    with Store(state) as s:
        return s.held_by(thing)
