"""Pulling a device's log over its own MQTT session: `warden logs pull THING --via mqtt`.

The host connects as a technician (mutual TLS; the policy lets that role publish
cmd/<app>/+/logs and read dt/<app>/+/logs), asks the device for its index (the segments and
their sizes), then for each segment a window of chunks at a time from the offset it has; the
device (firmware/logsend.py) sends the segment files as they are on flash, ciphertext only.
The protocol is in docs/log.md ("Remote pulls").

Chunks land in a partial folder (devices/THING/logs.partial/), appended in order, so a pull
that stops anywhere (the session lost, the host killed) resumes from the bytes already there.
Once every segment is complete as of its last chunk, the files go through warden.logs.pull's
save_pull: the same pull folder, manifest, mark and checks as a pull from a twin's flash.
This module moves bytes only: it must not decode or verify segments (warden.logs.format does).
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from ..broker.channel import CommandChannel
from ..state import ensure_dir
from .format import LogError

WINDOW = 16        # chunks asked for per request: the device's limit (firmware/logsend.py _WINDOW)
ANSWER = 2.0       # seconds a request may go unanswered before it is asked again
RETRIES = 5        # requests in a row unanswered before the pull stops (it resumes when run again)
ASK_EVERY = 2.0    # while --wait runs: the index is asked again this often (a device's session is
                   # clean: a request sent while it was offline is not kept for it)
PARTIAL = "logs.partial"
_HEAD = 17         # b"D" + id + segno + offset + size


class RemoteLogError(LogError):
    pass


@dataclass
class RemoteStats:
    host: str
    port: int
    seconds: float
    received: int       # bytes of segment data received in this run
    resumed: int        # bytes already in the partial folder when it started
    requests: int


class _Link(CommandChannel):
    """A paho client acting as `principal` on one device's log topics."""

    error = RemoteLogError
    qos = 0     # a lost chunk is asked for again (by offset), so the answers need no acknowledgement
    reach_hint = "is it running? (warden broker run); a twin's flash is read with --via twin"
    lost_hint = "run the pull again: it resumes"

    def __init__(self, state, thing, principal, host, port):
        super().__init__(state, thing, "logs", principal=principal, host=host, port=port)

    def next(self, timeout):
        """The next message on the log topic, or None after `timeout` seconds."""
        got = self.receive(timeout)
        return None if got is None or got[1] else got[0]


def _answer(payload, rid):
    """A JSON answer to request `rid`, or None (a chunk, or an answer to someone else)."""
    if not payload or payload[:1] != b"{":
        return None
    try:
        d = json.loads(payload)
    except ValueError:
        return None
    return d if isinstance(d, dict) and d.get("id") == rid else None


def _refused(d, thing):
    reason = d.get("reason", "?")
    hint = "wait for the update to end, then pull again" if "OTA" in reason else None
    return RemoteLogError(f"{thing} refused the log request: {reason}", hint=hint)


def partial_dir(state, thing) -> Path:
    return Path(state.device_dir(thing)) / PARTIAL


def pull_remote(state, thing, out=None, *, wait=5.0, principal="technician.default", host=None, port=None,
                window=WINDOW, progress=None, answer=ANSWER, stop_after=None):
    """Pull THING's log over MQTT into `out` (as warden.logs.pull.pull does from a twin); returns
    (PullResult, RemoteStats). `wait`: seconds to keep asking a device that does not answer (it
    may be offline, or connecting). progress(done, total) follows the transfer. stop_after: stop
    (RemoteLogError) once that many bytes arrived in this run, as an interruption would (tests)."""
    from ..fleet.devices import get_device
    from .pull import save_pull
    get_device(state, thing)
    if not 1 <= window <= WINDOW:
        raise RemoteLogError(f"window {window} out of range", hint=f"1-{WINDOW} chunks")
    rid = struct.unpack(">I", os.urandom(4))[0]
    part = partial_dir(state, thing)
    ensure_dir(part)
    t0 = time.monotonic()
    link = _Link(state, thing, principal, host, port).connect()
    host, port = link.host, link.port     # the broker it reached, for the pull's record
    try:
        index = _index(link, rid, thing, wait)
        have = {}
        for p in part.glob("*.seg"):
            segno = _segno(p.name)
            if segno is None or segno not in index or p.stat().st_size > index[segno]:
                p.unlink()   # dropped on the device since, or cut there (a torn tail): not a prefix
            else:
                have[segno] = p.stat().st_size
        resumed = sum(have.values())
        total = sum(index.values())
        got, requests = 0, 1   # (the index was one)
        for segno in sorted(index):
            # At least one request per segment, also for one the partial folder holds whole: the
            # newest grows while the device logs, and its answer says the segment's size now.
            off, path = have.get(segno, 0), part / f"{segno:08x}.seg"
            with open(path, "ab") as f:
                while True:
                    link.send(b"R" + struct.pack(">IIIB", rid, segno, off, window))
                    requests += 1
                    n, off, size, gone = _window(link, rid, thing, segno, off, window, f, answer)
                    got += n
                    if progress:
                        progress(resumed + got, max(total, resumed + got))
                    if stop_after is not None and got >= stop_after:
                        raise RemoteLogError(f"stopped after {got} bytes (as asked)")
                    if gone or off >= size:
                        break
            if gone:
                path.unlink()
                index.pop(segno)
        files = {f"{s:08x}.seg": (part / f"{s:08x}.seg").read_bytes() for s in sorted(index)}
    finally:
        link.close()
    result = save_pull(state, thing, files, f"mqtt {host}:{port}", out)
    shutil.rmtree(part, ignore_errors=True)
    return result, RemoteStats(host, port, time.monotonic() - t0, got, resumed, requests)


def _segno(name):
    if len(name) != 12 or not name.endswith(".seg"):
        return None
    try:
        return int(name[:8], 16)
    except ValueError:
        return None


def _index(link, rid, thing, wait):
    """{segno: size} from the device, asked again every ASK_EVERY s for up to `wait` s."""
    ask = b"I" + struct.pack(">I", rid)
    deadline = time.monotonic() + max(wait, ANSWER)
    while True:
        link.send(ask)
        until = min(deadline, time.monotonic() + ASK_EVERY)
        while True:
            left = until - time.monotonic()
            if left <= 0:
                break
            d = _answer(link.next(left), rid)
            if d is None:
                continue
            if d.get("step") == "refused":
                raise _refused(d, thing)
            if d.get("step") == "index":
                return {int(s): int(n) for s, n in d.get("segments", [])}
        if time.monotonic() >= deadline:
            raise RemoteLogError(
                f"{thing} did not answer over MQTT within {max(wait, ANSWER):g} s: it is offline, or not "
                "running a firmware with remote logs",
                hint="it is asked when it is connected: run the pull then, or wait for it (--wait 300); "
                     "a twin's flash is read with --via twin")


def _window(link, rid, thing, segno, off, window, f, answer):
    """Take one window of chunks of `segno` from `off`, appending them to `f`; returns (bytes
    taken, next offset, the segment's size, gone: the device no longer has it). An unanswered window is
    asked again from where it stopped, RETRIES times in a row at most."""
    taken, silent, n = 0, 0, 0
    while True:
        payload = link.next(answer)
        if payload is None:
            silent += 1
            if silent > RETRIES:
                raise RemoteLogError(f"{thing} stopped answering log requests (segment {segno}, offset {off})",
                                     hint="run the pull again: it resumes from what arrived")
            link.send(b"R" + struct.pack(">IIIB", rid, segno, off, window))
            n = 0
            continue
        if payload[:1] == b"D" and len(payload) >= _HEAD:
            r, s, o, sz = struct.unpack_from(">IIII", payload, 1)
            if r != rid or s != segno:
                continue
            n += 1
            if o == off:
                data = payload[_HEAD:]
                f.write(data)
                f.flush()
                taken += len(data)
                off += len(data)
                silent = 0
            if off >= sz or n >= window:
                return taken, off, sz, False
            continue
        d = _answer(payload, rid)
        if d is None or d.get("step") != "refused":
            continue
        if str(d.get("reason", "")).startswith("no segment"):
            return taken, off, off, True   # dropped by the device's quota since the index
        raise _refused(d, thing)


VIAS = ("auto", "mqtt", "twin", "serial")


def choose(state, thing, via="auto", port=None) -> tuple[str, str]:
    """How `warden logs pull` reaches THING's log: ("mqtt" | "twin" | "serial", why).

    auto: serial with --port; the twin's flash when no twin runs on it (the flash is then the
    whole log, read in an instant); otherwise over MQTT (a running twin, or a board)."""
    from ..board.twin import flash_path, lock_holder
    if via not in VIAS:
        raise RemoteLogError(f"unknown --via {via!r}", hint="one of " + ", ".join(VIAS))
    if port and via not in ("auto", "serial"):
        raise RemoteLogError(f"--port is a serial port: it does not go with --via {via}",
                             hint="drop --port, or use --via serial")
    if via == "serial" and not port:
        raise RemoteLogError("--via serial needs the board's port", hint="--port /dev/ttyUSB0 (or --port auto)")
    if via != "auto":
        return via, "as asked (--via)"
    if port:
        return "serial", "a serial port was given"
    flash = flash_path(state, thing)
    if flash.exists() and lock_holder(flash) is None:
        return "twin", "its twin is not running: its flash holds the whole log"
    if flash.exists():
        return "mqtt", "its twin is running: asked over its MQTT session"
    return "mqtt", "no twin flash: asked over its MQTT session"
