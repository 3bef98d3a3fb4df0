"""The device registry: one SQLite file, schema versioned with PRAGMA user_version.

Storage only: it must not issue certificates or decide anything; devices.py, principals.py
and warden.broker decide what it records.

Each device row: thing (unique), certificate fingerprint and serial, status ('active' or
'revoked'), creation time, certificate expiry, role, firmware version, security counter and
the device's log key (a secret: the file is created 0600, its folder is 0700), and, once
revoked, when and why. The `certificates` table (schema 2) keeps every certificate a thing was
ever issued: 'active' (the one in the device row), 'pending' (issued by a rotation, not yet
confirmed on the device) or 'revoked' (listed in the CRL, with time and reason).
Schema 3 adds `principals` (people and scripts: CN `<role>.<name>`, role, status; their
certificates are in `certificates` under the CN) and `brokers` (every broker warden configured,
where it listens, and whether the fleet's revocations and ACL have reached it: `pending` holds
why the last attempt failed, NULL once applied).
Schema 5 adds `tags` (a device's KEY=VALUE labels, one row per key; warden.fleet.groups validates
them and selects devices by them). They stay with a revoked device's row, as its history does.

Every write is one transaction (BEGIN IMMEDIATE), the journal is WAL and a busy timeout is set,
so two `warden` processes can use the registry at once; opening it again is harmless.

Opening checks the file (PRAGMA quick_check: every page read, a few ms for a thousand devices):
a damaged registry is a RegistryError naming the backups to restore it from (warden.fleet.backups
makes them, `warden device restore` puts one back), never a sqlite traceback, and never a guess.
`backup_to` writes a consistent copy with sqlite's online backup API (a plain file copy could
catch a write half done, or miss what is still in the WAL).
"""
from __future__ import annotations

import datetime as _dt
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import WardenError
from ..state import ensure_dir
from .names import validate_thing

SCHEMA_VERSION = 5
STATUSES = ("active", "revoked")
CERT_STATUSES = ("active", "pending", "revoked")

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

_SCHEMA_V2 = """
CREATE TABLE certificates (
    id          INTEGER PRIMARY KEY,
    thing       TEXT NOT NULL,
    serial      TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    not_after   TEXT,
    issued      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'pending', 'revoked')),
    revoked_at  TEXT,
    reason      TEXT
);
CREATE INDEX certificates_thing ON certificates (thing);
INSERT INTO certificates (thing, serial, fingerprint, not_after, issued, status, revoked_at)
    SELECT thing, serial, fingerprint, not_after, created,
           CASE status WHEN 'revoked' THEN 'revoked' ELSE 'active' END,
           CASE status WHEN 'revoked' THEN created END
    FROM devices;
ALTER TABLE devices ADD COLUMN revoked_at TEXT;
ALTER TABLE devices ADD COLUMN revoke_reason TEXT
"""

_SCHEMA_V3 = """
CREATE TABLE principals (
    id          INTEGER PRIMARY KEY,
    cn          TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created     TEXT NOT NULL,
    revoked_at  TEXT,
    reason      TEXT
);
CREATE TABLE brokers (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    host        TEXT NOT NULL,
    port        INTEGER NOT NULL,
    folder      TEXT NOT NULL,
    created     TEXT NOT NULL,
    applied     TEXT,
    pending     TEXT
)
"""

# Schema 4: the security counter and version per kind of update, keys included (the device keeps one per kind;
# `counter`/`version` stay: the last update of either kind). Every image and deploy carries them.
_SCHEMA_V4 = """
ALTER TABLE devices ADD COLUMN app_counter INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN app_version TEXT;
ALTER TABLE devices ADD COLUMN firmware_counter INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN firmware_version TEXT;
ALTER TABLE devices ADD COLUMN keys_counter INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN keys_version TEXT
"""

# Schema 5: device tags (KEY=VALUE), keyed by thing name as `certificates` is.
_SCHEMA_V5 = """
CREATE TABLE tags (
    thing       TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (thing, key)
)
"""

_MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4, 5: _SCHEMA_V5}   # version -> SQL from version-1 to version

_COLUMNS = ("thing", "fingerprint", "serial", "status", "created", "not_after", "role", "version",
            "counter", "log_key", "revoked_at", "revoke_reason", "app_counter", "app_version",
            "firmware_counter", "firmware_version", "keys_counter", "keys_version")
_CERT_COLUMNS = ("thing", "serial", "fingerprint", "not_after", "issued", "status", "revoked_at", "reason")


class RegistryError(WardenError):
    hint = "see `warden device list` and `warden principal list`; the registry is registry.sqlite in the state folder"


@dataclass
class Principal:
    """A person or script (the `principals` table); its certificates are in `certificates`."""
    cn: str
    role: str
    status: str
    created: str
    revoked_at: str | None = None
    reason: str | None = None


@dataclass
class BrokerEntry:
    """A broker warden configured (the `brokers` table)."""
    name: str
    host: str
    port: int
    folder: str           # its config folder (on this host, as written)
    created: str
    applied: str | None = None    # when revocations and the ACL last reached it
    pending: str | None = None    # why the last attempt failed; None once applied


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
    revoked_at: str | None = None
    revoke_reason: str | None = None
    app_counter: int = 0
    app_version: str | None = None
    firmware_counter: int = 0
    firmware_version: str | None = None
    keys_counter: int = 0
    keys_version: str | None = None

    def security_state(self) -> dict:
        """The device's anti-downgrade state as its /state/ota.json holds it: {kind: [counter, version]}
        for each kind ever updated (what an image or a deploy carries back onto a re-flashed board)."""
        out = {}
        for kind in ("app", "firmware", "keys"):
            c = getattr(self, kind + "_counter")
            if c:
                out[kind] = [c, getattr(self, kind + "_version")]
        return out

    def public_dict(self) -> dict:
        """Everything but secrets (the log key), for display and JSON output."""
        d = asdict(self)
        d.pop("log_key")
        return d


@dataclass
class Certificate:
    """One certificate a thing was issued (the `certificates` table)."""
    thing: str
    serial: str           # hex
    fingerprint: str
    not_after: str | None
    issued: str
    status: str           # active | pending | revoked
    revoked_at: str | None = None
    reason: str | None = None

    @property
    def serial_int(self) -> int:
        return int(self.serial, 16)


BACKUP_DIR = "backups"   # next to the registry: <state>/backups/


def damaged(path: Path, e) -> RegistryError:
    """The error for a registry sqlite cannot read: what is wrong, and how to get it back."""
    return RegistryError(
        f"the registry {path} is damaged or not a warden registry ({e}); nothing was changed",
        hint=f"restore the newest automatic backup with `warden device restore` (backups are in "
             f"{Path(path).parent / BACKUP_DIR}; `warden device restore --list` shows them)")


def _now_iso() -> str:
    return _iso(_dt.datetime.now(_dt.timezone.utc))


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
        self._db = None
        try:
            self._db = sqlite3.connect(str(self.path), timeout=10, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            problems = [r[0] for r in self._db.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            self._migrate()
        except sqlite3.DatabaseError as e:
            self.close()
            raise damaged(self.path, e) from e

    # -- lifecycle -------------------------------------------------------------------------
    def backup_to(self, dest: Path | str) -> Path:
        """A consistent copy of the registry at `dest` (created 0600: it holds the log keys)."""
        dest = Path(dest)
        ensure_dir(dest.parent)
        os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        out = sqlite3.connect(str(dest))
        try:
            self._db.backup(out)
        finally:
            out.close()
        return dest

    def count(self) -> int:
        """How many devices the registry holds (any status)."""
        return self._db.execute("SELECT COUNT(*) FROM devices").fetchone()[0]

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
                db.execute(
                    "INSERT INTO certificates (thing, serial, fingerprint, not_after, issued, status)"
                    " VALUES (?, ?, ?, ?, ?, 'active')",
                    (thing, _serial(serial), fingerprint, _iso(not_after), created),
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

    _UPDATABLE = ("fingerprint", "serial", "not_after", "role", "version", "counter", "log_key",
                  "app_counter", "app_version", "firmware_counter", "firmware_version",
                  "keys_counter", "keys_version")

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
            db.execute("DELETE FROM certificates WHERE thing = ? AND status != 'revoked'", (thing,))
        return cur.rowcount > 0

    # -- principals ------------------------------------------------------------------------
    def add_principal(self, cn: str, role: str, fingerprint: str, serial, *, not_after=None) -> Principal:
        """Register principal `cn` with its first certificate. RegistryError if the CN is taken."""
        now = _now_iso()
        try:
            with self._tx() as db:
                db.execute("INSERT INTO principals (cn, role, status, created) VALUES (?, ?, 'active', ?)",
                           (cn, role, now))
                db.execute("INSERT INTO certificates (thing, serial, fingerprint, not_after, issued, status)"
                           " VALUES (?, ?, ?, ?, ?, 'active')", (cn, _serial(serial), fingerprint,
                                                                 _iso(not_after), now))
        except sqlite3.IntegrityError as e:
            old = self.principal(cn)
            if old is not None:
                raise RegistryError(f"principal {cn!r} already exists ({old.status}, created {old.created})",
                                    hint="choose another name; `warden principal list` shows them") from e
            raise RegistryError(f"cannot register principal {cn!r}: {e}") from e
        return self.principal(cn)

    def principal(self, cn: str) -> Principal | None:
        row = self._db.execute("SELECT * FROM principals WHERE cn = ?", (cn,)).fetchone()
        return None if row is None else Principal(*(row[k] for k in
                                                    ("cn", "role", "status", "created", "revoked_at", "reason")))

    def principals(self, role: str | None = None) -> list:
        rows = self._db.execute("SELECT cn FROM principals" + (" WHERE role = ?" if role else "")
                                + " ORDER BY role, cn", (role,) if role else ()).fetchall()
        return [self.principal(r["cn"]) for r in rows]

    def replace_certificate(self, cn: str, fingerprint: str, serial, *, not_after=None,
                            reason: str = "superseded by rotation") -> list:
        """A principal's new certificate becomes its active one; the old ones are revoked (returned)."""
        now = _now_iso()
        with self._tx() as db:
            old = [self._cert(r) for r in db.execute(
                "SELECT * FROM certificates WHERE thing = ? AND status = 'active'", (cn,)).fetchall()]
            db.execute("UPDATE certificates SET status = 'revoked', revoked_at = ?, reason = ?"
                       " WHERE thing = ? AND status = 'active'", (now, reason, cn))
            db.execute("INSERT INTO certificates (thing, serial, fingerprint, not_after, issued, status)"
                       " VALUES (?, ?, ?, ?, ?, 'active')", (cn, _serial(serial), fingerprint, _iso(not_after), now))
        return [self.certificate(c.serial) for c in old]

    def revoke_principal(self, cn: str, reason: str | None = None) -> Principal:
        """Mark principal `cn` and all its certificates revoked (idempotent)."""
        p = self.principal(cn)
        if p is None:
            raise RegistryError(f"no principal {cn!r}", hint="see `warden principal list`")
        now = _now_iso()
        with self._tx() as db:
            if p.status != "revoked":
                db.execute("UPDATE principals SET status = 'revoked', revoked_at = ?, reason = ? WHERE cn = ?",
                           (now, reason, cn))
            db.execute("UPDATE certificates SET status = 'revoked', revoked_at = ?, reason = ?"
                       " WHERE thing = ? AND status != 'revoked'", (now, reason, cn))
        return self.principal(cn)

    # -- brokers ---------------------------------------------------------------------------
    _BROKER_COLUMNS = ("name", "host", "port", "folder", "created", "applied", "pending")

    def _broker(self, row) -> BrokerEntry | None:
        return None if row is None else BrokerEntry(*(row[k] for k in self._BROKER_COLUMNS))

    def put_broker(self, name: str, host: str, port: int, folder: str) -> BrokerEntry:
        """Record (or update) the broker `name`: where it listens and where its config is."""
        with self._tx() as db:
            db.execute("INSERT INTO brokers (name, host, port, folder, created) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT(name) DO UPDATE SET host = excluded.host, port = excluded.port,"
                       " folder = excluded.folder", (name, host, int(port), str(folder), _now_iso()))
        return self.broker(name)

    def broker(self, name: str) -> BrokerEntry | None:
        return self._broker(self._db.execute("SELECT * FROM brokers WHERE name = ?", (name,)).fetchone())

    def brokers(self) -> list:
        return [self._broker(r) for r in self._db.execute("SELECT * FROM brokers ORDER BY name").fetchall()]

    def mark_broker(self, name: str, pending: str | None) -> None:
        """The outcome of pushing the fleet's state to `name`: None = applied now, else why not."""
        with self._tx() as db:
            if pending is None:
                db.execute("UPDATE brokers SET applied = ?, pending = NULL WHERE name = ?", (_now_iso(), name))
            else:
                db.execute("UPDATE brokers SET pending = ? WHERE name = ?", (pending, name))

    def forget_broker(self, name: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM brokers WHERE name = ?", (name,)).rowcount > 0

    # -- certificates ----------------------------------------------------------------------
    @staticmethod
    def _cert(row) -> Certificate | None:
        return None if row is None else Certificate(**{k: row[k] for k in _CERT_COLUMNS})

    def certificates(self, thing: str | None = None, status: str | None = None) -> list:
        """Certificates (of `thing`, with `status`), oldest first."""
        sql, args = "SELECT * FROM certificates WHERE 1=1", []
        if thing is not None:
            sql += " AND thing = ?"
            args.append(thing)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        return [self._cert(r) for r in self._db.execute(sql + " ORDER BY id", args).fetchall()]

    def certificate(self, serial) -> Certificate | None:
        return self._cert(self._db.execute("SELECT * FROM certificates WHERE serial = ?",
                                           (_serial(serial),)).fetchone())

    def add_pending(self, thing: str, fingerprint: str, serial, not_after=None) -> Certificate:
        """Record a certificate issued to `thing` by a rotation, not yet in use (status 'pending').
        An older pending certificate of the thing is revoked (it was never confirmed)."""
        device = self.get(thing)
        if device is None:
            raise RegistryError(f"no device {thing!r} in the registry", hint="see `warden device list`")
        if device.status != "active":
            raise RegistryError(f"device {thing!r} is {device.status}", hint="a revoked device stays revoked; "
                                "add it again under a new name")
        now = _now_iso()
        with self._tx() as db:
            db.execute("UPDATE certificates SET status = 'revoked', revoked_at = ?, reason = ?"
                       " WHERE thing = ? AND status = 'pending'", (now, "superseded by a newer rotation", thing))
            db.execute("INSERT INTO certificates (thing, serial, fingerprint, not_after, issued, status)"
                       " VALUES (?, ?, ?, ?, ?, 'pending')",
                       (thing, _serial(serial), fingerprint, _iso(not_after), now))
        return self.certificate(serial)

    def activate(self, thing: str, serial, reason: str = "superseded by rotation") -> list:
        """Make pending certificate `serial` the thing's certificate; the previous one is revoked.
        Returns the certificates this revoked."""
        cert = self.certificate(serial)
        if cert is None or cert.thing != thing or cert.status != "pending":
            raise RegistryError(f"{thing!r} has no pending certificate {_serial(serial)}",
                                hint="run `warden device rotate THING` first")
        now = _now_iso()
        with self._tx() as db:
            old = [self._cert(r) for r in db.execute(
                "SELECT * FROM certificates WHERE thing = ? AND status = 'active'", (thing,)).fetchall()]
            db.execute("UPDATE certificates SET status = 'revoked', revoked_at = ?, reason = ?"
                       " WHERE thing = ? AND status = 'active'", (now, reason, thing))
            db.execute("UPDATE certificates SET status = 'active' WHERE serial = ?", (cert.serial,))
            db.execute("UPDATE devices SET fingerprint = ?, serial = ?, not_after = ? WHERE thing = ?",
                       (cert.fingerprint, cert.serial, cert.not_after, thing))
        return [self.certificate(c.serial) for c in old]

    def revoke(self, thing: str, reason: str | None = None) -> Device:
        """Mark `thing` revoked with all its certificates (active and pending). Idempotent: a
        second revoke keeps the first time and reason."""
        device = self.get(thing)
        if device is None:
            raise RegistryError(f"no device {thing!r} in the registry", hint="see `warden device list`")
        now = _now_iso()
        with self._tx() as db:
            if device.status != "revoked":
                db.execute("UPDATE devices SET status = 'revoked', revoked_at = ?, revoke_reason = ?"
                           " WHERE thing = ?", (now, reason, thing))
            db.execute("UPDATE certificates SET status = 'revoked', revoked_at = ?, reason = ?"
                       " WHERE thing = ? AND status != 'revoked'", (now, reason, thing))
        return self.get(thing)

    # -- tags ------------------------------------------------------------------------------
    def tags(self, thing: str | None = None) -> dict:
        """{thing: {key: value}} for every tagged device (or only `thing`), keys sorted."""
        sql, args = "SELECT thing, key, value FROM tags", ()
        if thing is not None:
            sql, args = sql + " WHERE thing = ?", (thing,)
        out = {}
        for r in self._db.execute(sql + " ORDER BY thing, key", args).fetchall():
            out.setdefault(r["thing"], {})[r["key"]] = r["value"]
        return out

    def set_tags(self, thing: str, set_: dict, remove=()) -> dict:
        """Set the tags in `set_` and remove the keys in `remove` on active device `thing`, in one
        transaction; returns its tags. Validation is the caller's (warden.fleet.groups)."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM devices WHERE thing = ?", (thing,)).fetchone()
            if row is None:
                raise RegistryError(f"no device {thing!r} in the registry", hint="see `warden device list`")
            if row["status"] != "active":
                raise RegistryError(f"device {thing!r} is {row['status']}: its tags are kept as they were",
                                    hint="a revoked device stays revoked; tag the device that replaced it")
            for k, v in set_.items():
                db.execute("INSERT INTO tags (thing, key, value) VALUES (?, ?, ?)"
                           " ON CONFLICT(thing, key) DO UPDATE SET value = excluded.value", (thing, k, v))
            for k in remove:
                db.execute("DELETE FROM tags WHERE thing = ? AND key = ?", (thing, k))
        return self.tags(thing).get(thing, {})

    def revoked_certificates(self) -> list:
        return self.certificates(status="revoked")
