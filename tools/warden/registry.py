"""The device registry: one SQLite file, schema versioned with PRAGMA user_version.

Each device row: thing (unique), certificate fingerprint and serial, status ('active' or
'revoked'), creation time, certificate expiry, role, firmware version, security counter and
the device's log key (a secret: the file is created 0600, its folder is 0700).

Every write is one transaction (BEGIN IMMEDIATE), the journal is WAL and a busy timeout is set,
so two `warden` processes can use the registry at once; opening it again is harmless.
"""
from __future__ import annotations

import datetime as _dt
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .names import validate_thing
from .state import WardenError, ensure_dir

SCHEMA_VERSION = 1
STATUSES = ("active", "revoked")

_SCHEMA_V1 = """
CREATE TABLE devices (
    id          INTEGER PRIMARY KEY,
    thing       TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    serial      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created     TEXT NOT NULL,
    not_after   TEXT,
    role        TEXT NOT NULL DEFAULT 'device',
    version     TEXT,
    counter     INTEGER NOT NULL DEFAULT 0,
    log_key     BLOB
);
"""

_MIGRATIONS = {1: _SCHEMA_V1}   # version -> SQL that takes the schema from version-1 to version

_COLUMNS = ("thing", "fingerprint", "serial", "status", "created", "not_after", "role", "version",
            "counter", "log_key")


class RegistryError(WardenError):
    pass


@dataclass
class Device:
    thing: str
    fingerprint: str
    serial: str           # certificate serial, hex (x509 serials do not fit SQLite integers)
    status: str
    created: str          # ISO 8601 UTC
    not_after: str | None
    role: str = "device"
    version: str | None = None
    counter: int = 0
    log_key: bytes | None = None

    def public_dict(self) -> dict:
        """Everything but secrets (the log key), for display and JSON output."""
        d = asdict(self)
        d.pop("log_key")
        return d


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")
    return str(value)


def _serial(value) -> str:
    return format(value, "x") if isinstance(value, int) else str(value)


class Registry:
    """The device registry at `path` (created, 0600, on first use)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        ensure_dir(self.path.parent)
        if not self.path.exists():
            # Create it 0600 ourselves: sqlite would use 0644 (and so would its -wal/-shm files).
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._db = sqlite3.connect(str(self.path), timeout=10, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise RegistryError(f"cannot open the registry {self.path}: {e}",
                                hint="is it a warden registry? restore it from a backup") from e

    # -- lifecycle -------------------------------------------------------------------------
    def close(self):
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def _tx(self):
        """One write transaction: BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlock)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self):
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RegistryError(
                    f"the registry {self.path} has schema version {version}, newer than this warden's "
                    f"{SCHEMA_VERSION}", hint="upgrade warden")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in filter(str.strip, _MIGRATIONS[v].split(";")):
                    db.execute(stmt)
                db.execute(f"PRAGMA user_version = {int(v)}")

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    # -- queries ---------------------------------------------------------------------------
    @staticmethod
    def _row(row) -> Device | None:
        if row is None:
            return None
        d = {k: row[k] for k in _COLUMNS}
        if d["log_key"] is not None:
            d["log_key"] = bytes(d["log_key"])
        return Device(**d)

    def add(self, thing: str, fingerprint: str, serial, *, not_after=None, role: str = "device",
            created=None, version: str | None = None, log_key: bytes | None = None) -> Device:
        """Register a new device (status 'active'). RegistryError if the thing is already there."""
        validate_thing(thing)
        created = _iso(created or _dt.datetime.now(_dt.timezone.utc))
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO devices (thing, fingerprint, serial, status, created, not_after, role,"
                    " version, log_key) VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?)",
                    (thing, fingerprint, _serial(serial), created, _iso(not_after), role, version, log_key),
                )
        except sqlite3.IntegrityError as e:
            existing = self.get(thing)
            if existing is not None:
                raise RegistryError(
                    f"device {thing!r} is already registered ({existing.status}, "
                    f"fingerprint {existing.fingerprint[:16]}..., created {existing.created})",
                    hint="choose another thing name, or revoke the existing device first",
                ) from e
            raise RegistryError(f"cannot register {thing!r}: {e}") from e
        return self.get(thing)

    def get(self, thing: str) -> Device | None:
        return self._row(self._db.execute("SELECT * FROM devices WHERE thing = ?", (thing,)).fetchone())

    def __contains__(self, thing) -> bool:
        return self.get(thing) is not None

    def list(self, status: str | None = None) -> list:
        if status is None:
            rows = self._db.execute("SELECT * FROM devices ORDER BY thing")
        else:
            rows = self._db.execute("SELECT * FROM devices WHERE status = ? ORDER BY thing", (status,))
        return [self._row(r) for r in rows.fetchall()]

    def set_status(self, thing: str, status: str) -> Device:
        if status not in STATUSES:
            raise RegistryError(f"status {status!r} is not one of {STATUSES}")
        with self._tx() as db:
            cur = db.execute("UPDATE devices SET status = ? WHERE thing = ?", (status, thing))
        if cur.rowcount == 0:
            raise RegistryError(f"no device {thing!r} in the registry", hint="see `warden device list`")
        return self.get(thing)

    _UPDATABLE = ("fingerprint", "serial", "not_after", "role", "version", "counter", "log_key")

    def update(self, thing: str, **fields) -> Device:
        """Change columns of one device (fingerprint, serial, not_after, role, version, counter, log_key)."""
        unknown = set(fields) - set(self._UPDATABLE)
        if unknown:
            raise RegistryError(f"cannot update {sorted(unknown)}; updatable: {self._UPDATABLE}")
        if not fields:
            return self.get(thing)
        if "serial" in fields:
            fields["serial"] = _serial(fields["serial"])
        if "not_after" in fields:
            fields["not_after"] = _iso(fields["not_after"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            cur = db.execute(f"UPDATE devices SET {sets} WHERE thing = ?", (*fields.values(), thing))
        if cur.rowcount == 0:
            raise RegistryError(f"no device {thing!r} in the registry", hint="see `warden device list`")
        return self.get(thing)

    def remove(self, thing: str) -> bool:
        """Delete a row. Only for undoing a half-finished `add_device`; revoke devices instead."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM devices WHERE thing = ?", (thing,))
        return cur.rowcount > 0
