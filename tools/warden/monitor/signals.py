"""The broker's own signals, read from mosquitto's log file: who connected and disconnected, whose
certificate the TLS handshake refused, which client id was taken over or refused, and which
publish the ACL denied.

It only reads a log: it must not judge (engine.py) nor touch the broker. The lines it knows are
the ones mosquitto 2.0 writes with the log types warden's config sets (warden.broker.server,
`log_timestamp_format %Y-%m-%dT%H:%M:%S`), and the guard plugin's denial line: mosquitto logs a
denied publish only at debug level, together with every message, so the guard logs it itself
(warden.broker.guard). `$SYS` has none of this per client, which is why the log is read and not
`$SYS`. Every other line is skipped.

The reader keeps how far it read (the file's inode and offset, in the monitor's store), so
successive `warden monitor --once` runs see each line once; a log replaced or truncated is read
again from its start. A log never read before is read from its start, but its lines older than
FIRST_LOOKBACK seconds are skipped: the first run does not raise alerts about last month.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

FIRST_LOOKBACK = 600
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d): (.*)$")
_RULES = (
    ("connect", re.compile(r"^New client connected from (?P<addr>\S+) as (?P<name>\S+) \(")),
    ("disconnect", re.compile(r"^Client (?P<name>\S+) (?:disconnected|closed its connection|has exceeded timeout)(?P<why>.*)$")),
    ("refused_id", re.compile(r"^Client (?P<name>\S+) already connected, closing old connection")),
    ("auth_fail", re.compile(r"^warden_guard: denied publish from (?P<name>\S+) to '(?P<topic>.*)'(?: \((?P<why>[^)]*)\))?$")),
    ("cert_fail", re.compile(r"^OpenSSL Error\[\d+\]: (?P<why>.*)$")),
)


@dataclass
class Signal:
    ts: float
    signal: str            # auth_fail, cert_fail, refused_id, connect, disconnect
    name: str | None       # the client's name (the certificate CN), None when TLS failed first
    detail: dict

    def as_dict(self) -> dict:
        return {"event": "signal", "signal": self.signal, "name": self.name, "time": self.ts, **self.detail}


def parse_line(line: str) -> Signal | None:
    """One line of mosquitto's log as a Signal, or None for a line that is not one."""
    m = _STAMP.match(line.rstrip("\n"))
    if not m:
        return None
    try:
        ts = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    text = m.group(2)
    for kind, rx in _RULES:
        hit = rx.match(text)
        if not hit:
            continue
        g = hit.groupdict()
        name = g.get("name")
        if kind == "disconnect" and name == "<unknown>":
            return None      # the end of a refused handshake: the OpenSSL line said why
        if kind == "disconnect" and g.get("why", "").startswith(", not authorised"):
            kind = "refused_id"
        detail = {}
        if g.get("topic") is not None:
            detail["topic"] = g["topic"]
        why = (g.get("why") or "").strip(" :.,")
        if why:
            detail["reason"] = why
        if kind == "cert_fail":
            # "error:0A000086:SSL routines::certificate verify failed" -> "certificate verify failed"
            detail["reason"] = why.rsplit(":", 1)[-1].strip() or why
        if kind == "connect":
            detail["address"] = g["addr"]
        return Signal(ts, kind, name, detail)
    return None


class LogReader:
    """New lines of the broker log at `path`, as Signals, from where `store` says the last read ended."""

    def __init__(self, path, store):
        self.path = Path(path)
        self.store = store
        self.source = f"log:{self.path.resolve()}"      # each log file keeps its own place

    def read(self, now: float | None = None) -> list:
        try:
            f = open(self.path, "rb")
        except OSError:
            return []       # no broker has logged here yet
        with f:
            st = os.fstat(f.fileno())
            cursor = self.store.cursor(self.source)
            first = cursor is None
            offset = 0
            if cursor and cursor[0] == st.st_ino and cursor[1] <= st.st_size:
                offset = cursor[1]
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1          # a line still being written waits for the next read
        signals = []
        cutoff = (now or time.time()) - FIRST_LOOKBACK
        for raw in data[:end].decode(errors="replace").splitlines():
            sig = parse_line(raw)
            if sig is not None and not (first and sig.ts < cutoff):
                signals.append(sig)
        self.store.set_cursor(self.source, st.st_ino, offset + end)
        return signals
