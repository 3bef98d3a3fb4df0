"""`warden status`: what is where and what runs, and anything inconsistent, each with its fix.

It reads and looks: it must not start, stop, repair or sign anything (a check that minted a
session certificate or renewed the CRL would change what it reports on). The fix of each
problem is a command or a step for the user.

What it looks at: the state folder and how it was chosen; the fleet CA and the CRL's days left;
the brokers, both those `warden broker run` runs from this state (their run folders' locks, pid
files and listening sockets) and those the registry lists, each reached with a TLS handshake as
operator.default (a handshake closed cleanly, so the broker logs no error); the twins, from
their flash locks (warden.board.twin.TwinLock) and the processes holding their flash files; the
OTA signing key. A problem is anything that makes a command fail or mislead: two brokers for one
state, a stale pid file, a broker the registry lists that is gone, a twin running twice.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import ssl
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import WardenError
from .state import State

PROBE_TIMEOUT_S = 3.0


@dataclass
class Problem:
    what: str
    fix: str


@dataclass
class Report:
    state: dict
    ca: dict | None = None
    crl: dict | None = None
    brokers: list = field(default_factory=list)
    twins: list = field(default_factory=list)
    signing_key: dict | None = None
    problems: list = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def problem(self, what: str, fix: str):
        self.problems.append(Problem(what, fix))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["healthy"] = self.healthy
        return d


def check(state: State) -> Report:
    """Everything `warden status` shows, for `state`."""
    report = Report({"root": str(state.root.absolute()), "origin": state.origin,
                     "how": state.describe_origin(), "exists": state.exists()})
    if not state.root.is_dir():
        report.problem(f"no Warden state at {state.root.absolute()} ({state.describe_origin()})",
                       "run where your fleet lives, or pass --state DIR; a new fleet starts with "
                       "`warden pki init`")
        return report
    _check_pki(state, report)
    _check_brokers(state, report)
    _check_twins(state, report)
    _check_key(state, report)
    return report


# -- the PKI -------------------------------------------------------------------------------------
def _days_left(when) -> float:
    return (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds() / 86400


def _check_pki(state: State, report: Report):
    from .fleet import pki

    cert_path, key_path = state.pki_dir / pki.CA_CERT, state.pki_dir / pki.CA_KEY
    if not cert_path.exists():
        report.problem(f"no fleet CA in {state.pki_dir}", "create the fleet: `warden pki init`")
        return
    try:
        cert = pki.load_cert(cert_path.read_bytes())
    except (OSError, ValueError) as e:
        report.problem(f"the fleet CA {cert_path} cannot be read: {e}", "restore it from your backup")
        return
    days = _days_left(cert.not_valid_after_utc)
    report.ca = {"path": str(cert_path), "fingerprint": pki.fingerprint(cert),
                 "not_after": cert.not_valid_after_utc.isoformat(), "days_left": int(days),
                 "key_present": key_path.exists()}
    if not key_path.exists():
        report.problem(f"the CA key {key_path} is missing: no device can be added or revoked",
                       "restore it from your backup (a new CA would strand every device)")
    if days < 0:
        report.problem("the fleet CA has expired", "make a new fleet (`warden pki init --force`) and "
                       "re-provision every device")
    try:
        crl = pki.load_crl(state)
    except (OSError, ValueError) as e:
        report.problem(f"the CRL {state.pki_dir / pki.CRL} cannot be read: {e}",
                       "`warden broker sync` writes it again")
        return
    nxt = crl.next_update_utc
    left = _days_left(nxt) if nxt is not None else None
    report.crl = {"path": str(state.pki_dir / pki.CRL), "revoked": len(list(crl)),
                  "next_update": nxt.isoformat() if nxt else None,
                  "days_left": int(left) if left is not None else None}
    if left is not None and left < 0:
        report.problem("the CRL has lapsed: every broker refuses every client",
                       "`warden broker sync` re-signs it and sends it to the brokers")
    elif left is not None and left < pki.CRL_RENEW_DAYS:
        report.problem(f"the CRL lapses in {int(left)} days (then brokers refuse every client)",
                       "`warden broker sync` re-signs it (a running `warden broker run` does it too)")


# -- brokers -------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def probe(state: State, host: str, port: int) -> str | None:
    """None if a TLS handshake as operator.default with the broker at host:port succeeds (closed
    with close_notify: the broker logs a clean close), else why not."""
    from .fleet import pki

    cert, key = pki.principal_paths(state, "operator")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(state.pki_dir / pki.CA_CERT))
    ctx.check_hostname = False     # reachability, not the name: `ota push` and the twin check names
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        return f"cannot load operator.default's certificate: {e}"
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.unwrap()
    except ssl.SSLError as e:
        return f"TLS failed: {e.reason or e}"
    except OSError as e:
        return f"not reachable: {e.strerror or e}"
    return None


def _local_folders(state: State, entries) -> list:
    folders = [state.broker_dir]
    for e in entries:
        if e.name.startswith("local:") and Path(e.folder) not in folders:
            folders.append(Path(e.folder))
    return folders


def _check_brokers(state: State, report: Report):
    from .broker.server import LOCK_FILE, Broker, _listening
    from .fleet.registry import Registry

    entries = []
    if state.registry_path.exists():
        try:
            with Registry(state.registry_path) as reg:
                entries = reg.brokers()
        except WardenError as e:   # a damaged registry is a finding, not the doctor's end
            report.problem(f"the registry {state.registry_path} cannot be read: {e}", "restore it from your backup")
    running = []
    for folder in _local_folders(state, entries):
        b = Broker.find_running(state, run_dir=folder)
        lock = _read_json(folder / LOCK_FILE)
        in_use = Broker.folder_in_use(folder)
        pid_file = folder / "mosquitto.pid"
        name = "local" if folder == state.broker_dir else f"local:{folder.resolve()}"
        if b is not None:
            row = {"name": name, "kind": "warden broker run", "host": b.host, "port": b.port,
                   "pid": b.pid, "warden_pid": lock.get("pid") if in_use else None, "folder": str(folder),
                   "running": True, "listening": _listening(b.port)}
            row["reachable_error"] = probe(state, b.host, b.port)
            row["reachable"] = row["reachable_error"] is None
            report.brokers.append(row)
            running.append(row)
            if not row["reachable"]:
                report.problem(f"broker {name} (pid {b.pid}) runs but {row['reachable_error']}",
                               f"see {folder / 'mosquitto.log'}; restart it (Ctrl-C in its terminal, then "
                               "`warden broker run`)")
            continue
        if pid_file.exists():
            report.problem(f"stale pid file {pid_file}: no mosquitto runs from it (killed, or the machine "
                           "restarted)", f"delete it: rm {pid_file}")
        if in_use:
            report.problem(f"`warden broker run` (pid {lock.get('pid', '?')}) holds {folder / LOCK_FILE} but "
                           "its mosquitto is not running", f"stop it: kill {lock.get('pid', 'PID')}")
    for e in entries:
        if e.name.startswith("local"):
            if not any(r["name"] == e.name for r in running):
                report.problem(f"the registry lists broker {e.name} ({e.host}:{e.port}), which is not running",
                               f"`warden broker sync` forgets it (or `warden broker forget {e.name}`)")
            if e.pending:
                report.problem(f"broker {e.name}: a change did not reach it: {e.pending}", "`warden broker sync`")
            continue
        why = probe(state, e.host, e.port)
        report.brokers.append({"name": e.name, "kind": "warden broker config", "host": e.host, "port": e.port,
                               "pid": None, "folder": e.folder, "running": why is None,
                               "reachable": why is None, "reachable_error": why, "pending": e.pending})
        if why is not None:
            report.problem(f"broker {e.name} ({e.host}:{e.port}) is {why}",
                           "start it on its host, or `warden broker forget " + e.name + "` if it is gone")
        elif e.pending:
            report.problem(f"broker {e.name}: a change did not reach it: {e.pending}", "`warden broker sync`")
    if len(running) > 1:
        used = running[0]
        report.problem(
            "%d brokers run for this state (%s): twins and watch use %s:%d" % (
                len(running), ", ".join(f"{r['name']} on {r['host']}:{r['port']}, pid {r['pid']}" for r in running),
                used["host"], used["port"]),
            "stop all but one (Ctrl-C in its terminal, or kill its warden pid)")
    if not running:
        report.brokers.insert(0, {"name": "local", "kind": "warden broker run", "host": state.broker_host,
                                  "port": state.broker_port, "pid": None, "folder": str(state.broker_dir),
                                  "running": False, "reachable": False,
                                  "reachable_error": "not running (`warden broker run` starts it)"})


# -- twins ---------------------------------------------------------------------------------------
def _check_twins(state: State, report: Report):
    from .board import twin as twinlib
    from .fleet.devices import list_devices

    try:
        devices = list_devices(state)
    except WardenError as e:
        report.problem(f"the device registry cannot be read: {e}", "restore it from your backup")
        return
    flashes = {d.thing: twinlib.flash_path(state, d.thing) for d in devices}
    users = twinlib.flash_users([p for p in flashes.values() if p.exists()]) or {}
    for thing, flash in flashes.items():
        if not flash.exists():
            continue
        holder = twinlib.lock_holder(flash)
        pids = users.get(flash, [])
        if holder is None and not pids:
            continue
        row = {"thing": thing, "flash": str(flash), "pid": holder, "micropython_pids": pids}
        report.twins.append(row)
        if len(pids) > 1:
            report.problem(f"twin {thing} runs twice (micropython pids {', '.join(map(str, pids))}): the "
                           "copies knock each other off the broker and lose log records",
                           f"stop all but one: kill {' '.join(map(str, pids[1:]))}")
        elif pids and holder is None:
            report.problem(f"a twin of {thing} runs (pid {pids[0]}) without `warden twin run`'s lock: a "
                           "second `twin run` would not see it", f"stop it (kill {pids[0]}) and start it "
                           f"with `warden twin run {thing}`")


# -- the OTA signing key -------------------------------------------------------------------------
def _check_key(state: State, report: Report):
    from .ota import keys

    if not keys.public_path(state).exists():
        report.signing_key = None
        return
    try:
        info = keys.info(state)
        trusted = sorted(kid.hex() for kid in keys.trusted_keys(state))
    except (WardenError, OSError, ValueError) as e:
        report.problem(f"the OTA signing key cannot be read: {e}", "restore keys/ from your backup")
        return
    present = info.private_path.exists()
    report.signing_key = {"key_id": info.key_id, "private_present": present,
                          "encrypted": keys.is_encrypted(state) if present else None, "trusted": trusted}
    if not present:
        report.problem(f"the signing key {info.private_path} is missing (its public half is here): "
                       "nothing can be signed", "restore it from your backup")
