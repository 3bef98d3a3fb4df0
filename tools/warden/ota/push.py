"""`warden ota push` / `warden ota status`: the technician's side of an OTA update.

It must not send anything before the local check passed, and a push that fails with
OtaPushError must leave the device as it was.

The update travels over the device's own MQTT session (firmware/otalink.py): the
tool connects as the technician (mutual TLS; the policy lets it publish only
cmd/<app>/+/ota and read dt/<app>/+/ota), sends the update's head; the device
answers `restarting` and reboots into update mode (firmware/otamode.py: nothing
loaded but the session and the OTA code, so an update fits a board's heap), checks
the head and answers `accepted`; then the chunks, then "finish"; the device swaps and
resets, runs its self-test and reports `confirmed` or `rolled back` (retained).

The chunks travel in a window: up to `window` of them are in flight, so a transfer
uses the link's bandwidth rather than waiting a round trip per chunk. The device
takes only the chunk at its next offset and answers every chunk with that offset
(firmware/otalink.py), so it never buffers more than the one it is writing; a chunk
lost or overtaken shows as an answer that does not move, and the tool goes back to
that offset (go-back-N) once three answers in a row show it missing (a chunk merely
overtaken by the next costs one such answer, not a resend of the window); so does a silence of STALL seconds with chunks in flight (the
device keeps one chunk at a time and lets a chunk go that comes while another waits).
The window is bounded by the broker's in-flight limit per
client (mosquitto: 20 QoS 1 messages) and sized for a link with a 100 ms round trip at
a few Mbit/s; `window=1` is the old stop-and-wait.

Before anything is sent the file is checked locally as the device will check it
(signature by a trusted key, target, kind, counter against the registry), so a
refusal is explained without touching the device. Interrupt a push and run it
again: the device resumes from its last durable offset.

A revoked device is refused at once (the registry is read before anything waits on the
network): every broker refuses its certificate, so it could never answer.

Outcomes (and exit codes of the CLI): INSTALLED (0, installed and confirmed),
REJECTED (2, the device refused: its reason), ROLLED_BACK (3, the self-test failed:
its reason), and OtaPushError (1) for everything else (unreachable broker, a silent
device, a timeout), which changes nothing on the device.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path

from ..broker.channel import CommandChannel
from ..errors import WardenError
from . import image, keys

CHUNK = 2048          # payload bytes per chunk: small enough for a fragmented 64 KiB device heap
WINDOW = 16           # chunks in flight: under mosquitto's 20 in-flight QoS 1 messages per client
STALL = 0.5           # seconds without an answer while chunks are in flight: resend from the last offset
REBOOT = 30           # seconds a device may take to restart into update mode and reconnect
DUPS = 3              # answers that do not move the device's offset before going back (as TCP's fast retransmit)
INSTALLED, REJECTED, ROLLED_BACK = "installed", "rejected", "rolled back"
EXIT_CODES = {INSTALLED: 0, REJECTED: 2, ROLLED_BACK: 3}


class OtaPushError(WardenError):
    hint = ("is the broker running (`warden broker run`), and the principal active (`warden principal list`) "
            "with a technician's role?")


@dataclass
class Outcome:
    result: str            # INSTALLED, REJECTED or ROLLED_BACK
    reason: str | None
    version: str
    counter: int
    kind: str
    seconds: float
    bytes_sent: int
    resumed_from: int


class Technician(CommandChannel):
    """Technician principal `principal` (a CN, with a session certificate of its own) on one
    device's OTA topics."""

    error = OtaPushError
    lost_hint = "run the push again to resume"

    def __init__(self, state, thing, host=None, port=None, principal="technician.default"):
        super().__init__(state, thing, "ota", principal=principal, host=host, port=port)

    def expect(self, steps, timeout, what, quiet=False, hint=None):
        """The next reply whose step is in `steps` (retained leftovers of earlier updates skipped);
        quiet: None when none came within `timeout` (else OtaPushError, with `hint` if given)."""
        d = self.answer(steps, timeout)
        if d is None and not quiet:
            raise OtaPushError(f"the device did not answer ({what}) within {timeout:g} s",
                               hint=hint or "is it online? `warden device list` shows it; run the push "
                                            "again to resume")
        return d


def _not_revoked(state, thing, doing):
    """The registry's record of THING; a DeviceError (no network wait) if it is revoked."""
    from ..fleet.devices import active_device
    return active_device(state, thing, doing, hint=(
        "a revoked device stays revoked: no broker lets it connect, so no update reaches it. Give the board "
        "a new identity under a new name (`warden device add NAME`, then `warden deploy NAME`)"))


def _not_held(state, thing, doing):
    """OtaPushError if an active rollout holds THING: its runner is sending it the rollout's update
    (or will), and a second conversation would be refused by the device or replace the rollout's."""
    from ..rollout.store import held_by
    r = held_by(state, thing)
    if r is not None:
        raise OtaPushError(f"{thing} is held by the rollout {r}: {doing} would cross it",
                           hint=f"wait for it (`warden rollout status {r}`), or `warden rollout pause {r}` / "
                                f"`warden rollout abort {r}` first")


def check_locally(state, thing, data):
    """The checks the device will make, against the registry's record of it; returns the manifest."""
    from ..fleet.devices import get_device
    dev = get_device(state, thing)
    trusted = keys.trusted_keys(state)
    if not trusted:
        raise OtaPushError("no trusted signing key in this project", hint="run `warden keys init`")
    try:
        kind = image.Manifest.decode(image.split(data)[0]).kind
    except image.UpdateError:
        kind = None      # verify() words what is wrong with it
    # the counter of the same kind (the device keeps one per kind); a registry from before
    # schema 4 has only the last update's
    installed = getattr(dev, f"{kind}_counter", 0) if kind in ("app", "firmware") else 0
    return image.verify(data, trusted, target=image.default_target(state),
                        installed_counter=installed or None)


def push(state, thing, path, *, progress=None, timeout=30.0, confirm_timeout=180.0, host=None, port=None,
         local_check=True, principal="technician.default", takeover=False, window=WINDOW, chunk=CHUNK,
         wake_timeout=None, channel=None, _mangle=None):
    """Send the update at `path` to THING and follow it to its outcome; returns an Outcome.

    `local_check=False` skips the host-side checks (tests use it to show the device refuses
    on its own what the tool would have refused). `wake_timeout`: how long to wait for the
    device to take the update's head, for a duty-cycled device that sleeps between readings
    (its session stays at the broker, which delivers the head when it wakes; the device then
    stays awake until the update is installed, refused or abandoned); default `timeout`. `channel`: a
    Technician already connected (a rollout's, shared by many devices: warden.rollout.link), used and
    left open; else one is made for this push. `_mangle(offset)` (tests) may return "drop"
    or "delay" for a chunk about to be sent: it is not sent, or sent after the next one."""
    if not 1 <= window <= 20 or not 256 <= chunk <= 8192:
        raise OtaPushError(f"window {window} or chunk {chunk} out of range",
                           hint="window 1-20 chunks (the broker's in-flight limit), chunk 256-8192 bytes")
    _not_revoked(state, thing, "it cannot take an update")
    if channel is None:
        _not_held(state, thing, "a push")
    data = Path(path).read_bytes()
    if local_check:
        m = check_locally(state, thing, data)
    else:
        m = image.Manifest.decode(image.split(data)[0])
    m_bytes, sig, payload = image.split(data)
    # the head, then who asks (a transfer belongs to whoever began it; takeover replaces another's)
    head = b"B" + data[:8 + len(m_bytes) + len(sig)] + b"\0" + principal.encode() + (b"\0takeover" if takeover else b"")
    t = channel or Technician(state, thing, host, port, principal=principal).connect()
    t0 = time.monotonic()
    sent = 0
    try:
        t.send(head)
        try:
            d = t.expect({"accepted", "rejected", "busy", "restarting"}, wake_timeout or timeout,
                         f"{thing} did not wake" if wake_timeout else "accepted or rejected")
            if d["step"] == "restarting":
                # into update mode (firmware/otamode.py): it checks the head after its reboot
                d = t.expect({"accepted", "rejected", "busy"}, timeout + REBOOT, "accepted or rejected after "
                             "its restart into update mode")
        except OtaPushError:
            # The head stays queued for a device that sleeps: an abort queued after it ends
            # the conversation as soon as the device has read both at its wake.
            t.send(b"A")
            raise
        if d["step"] == "busy":
            raise OtaPushError(f"{thing} is receiving an update from {d.get('holder')}; nothing was changed",
                               hint="wait for it to finish (`warden ota status`), or if that technician is gone, "
                                    "push again with --takeover (their transfer is replaced)")
        if d["step"] == "rejected":
            return Outcome(REJECTED, d.get("reason"), m.version, m.counter, m.kind, time.monotonic() - t0, 0, 0)
        resumed = d["offset"]
        size = d["size"]
        if progress:
            progress(resumed, size)
        d, sent = _send_window(t, payload, resumed, size, window, chunk, timeout, progress, _mangle)
        if d is not None:
            return Outcome(REJECTED, d.get("reason"), m.version, m.counter, m.kind,
                           time.monotonic() - t0, sent, resumed)
        t.send(b"F")
        d = t.expect({"installed", "rejected"}, timeout, "installed")
        if d["step"] == "rejected":
            return Outcome(REJECTED, d.get("reason"), m.version, m.counter, m.kind,
                           time.monotonic() - t0, sent, resumed)
        d = t.expect({"confirmed", "rolled back"}, confirm_timeout, "the self-test after the reset")
        if d["step"] == "confirmed":
            from ..fleet.registry import Registry
            with Registry(state.registry_path) as reg:
                reg.update(thing, version=m.version, counter=m.counter,
                           **{f"{m.kind}_counter": m.counter, f"{m.kind}_version": m.version})
            return Outcome(INSTALLED, None, m.version, m.counter, m.kind, time.monotonic() - t0, sent, resumed)
        return Outcome(ROLLED_BACK, d.get("reason"), m.version, m.counter, m.kind,
                       time.monotonic() - t0, sent, resumed)
    finally:
        if channel is None:
            t.close()


def _send_window(t, payload, base, size, window, chunk, timeout, progress, mangle):
    """Send payload[base:] in chunks, up to `window` in flight; returns (the device's
    rejection or None, bytes sent). `base` is the device's next offset: all before it is
    written on the device. Every chunk the device gets is answered with its next offset."""
    nxt = base          # the next offset to send
    rewound = -1        # the offset last gone back to (its stale answers are not a new loss)
    dups = 0            # answers in a row that did not move the device's offset
    out = 0             # chunks sent and not answered yet
    held = None         # a chunk mangle() delayed: sent after the next one
    sent = 0
    progressed = time.monotonic()
    while base < size:
        while nxt < size and nxt < base + window * chunk:
            msg = b"C" + struct.pack(">I", nxt) + payload[nxt:nxt + chunk]
            fate = mangle(nxt) if mangle else None
            if fate == "delay" and held is None:
                held = msg
            elif fate != "drop":
                t.send(msg)
                out += 1
                if held is not None:
                    t.send(held)
                    out += 1
                    held = None
            sent += min(chunk, size - nxt)
            nxt += chunk
        if held is not None:
            t.send(held)
            out += 1
            held = None
        d = t.expect({"next", "rejected"}, STALL, "the next chunk request", quiet=True)
        if d is None:
            if time.monotonic() - progressed > timeout:
                raise OtaPushError(f"the device did not take a chunk within {timeout:g} s",
                                   hint="is it online? `warden watch --status` shows it; run the push "
                                        "again to resume")
            nxt, rewound, out = base, base, 0     # silence: resend from where the device is
            continue
        if d["step"] == "rejected":
            return d, sent
        out = max(0, out - 1)
        off = d["offset"]
        if d.get("resend"):
            # the device let chunks go that came while it was busy: they will not be answered
            base = max(base, off)
            nxt, rewound, out, dups = base, base, 0, 0
            progressed = time.monotonic()
            if progress:
                progress(base, size)
            continue
        if off > base:
            base = off
            nxt = max(nxt, base)
            progressed = time.monotonic()
            dups = 0
        elif off == base and nxt > base:
            dups += 1
            if (dups >= DUPS and rewound != base) or out == 0:
                # The device still waits for `base` though later chunks reached it: that one
                # was lost (one overtaken by the next costs a single such answer, not DUPS).
                # Go back to it; the answers to the chunks still in flight say the same and
                # are not another loss, unless all are in and it is still missing.
                nxt = base
                rewound = base
        if progress:
            progress(base, size)
    return None, sent


def rollback(state, thing, kind="app", *, timeout=30.0, confirm_timeout=180.0, host=None, port=None,
             principal="technician.default", local_check=True, counter=None, key_secret=None, channel=None):
    """Roll THING's `kind` back to the version in its other slot, without a download: a signed
    rollback (the other slot's version, size and SHA-256 as the device recorded them, and a
    counter newer than the installed one, signed with the project's signing key), checked by the
    device as an update is; then the reset and the self-test. Returns an Outcome.

    `local_check=False` sends it even when the device's status says there is nothing to go back
    to, and `counter` overrides the new counter (tests: the device refuses on its own)."""
    _not_revoked(state, thing, "it cannot be rolled back")
    if channel is None:
        _not_held(state, thing, "a rollback")
    st = status(state, thing, timeout=timeout, host=host, port=port, principal=principal, channel=channel)
    dev = st["device"]
    now = (dev.get(kind) or {}).get("slot")
    recs = {slot: r for slot, r in (dev.get("slots") or {}).items() if r and r.get("kind") == kind and slot != now}
    if not recs and local_check:
        raise OtaPushError(f"{thing} has no other {kind} to roll back to (its other slot holds no installed update)",
                           hint="`warden ota status THING` shows its slots")
    slot, r = sorted(recs.items())[0] if recs else (None, {"version": "0", "size": 0, "sha": "00" * 32})
    installed = (dev.get(kind) or {}).get("counter") or 0
    from ..fleet.devices import get_device
    known = getattr(get_device(state, thing), f"{kind}_counter", 0) or 0
    new = counter if counter is not None else max(installed, known) + 1
    key = keys.load_private_key(state, key_secret)
    m = image.Manifest(image.ALG, keys.key_id(key.public_key()), kind, image.default_target(state), r["version"],
                       image.check_counter(new), r["size"], bytes.fromhex(r["sha"])).encode()
    sig = image.sign_raw(m, key)
    t = channel or Technician(state, thing, host, port, principal=principal).connect()
    t0 = time.monotonic()
    try:
        t.send(b"R" + image.assemble(m, sig, b""))
        d = t.expect({"installed", "rejected", "busy", "restarting"}, timeout, "installed or rejected")
        if d["step"] == "restarting":    # into update mode first (firmware/otamode.py)
            d = t.expect({"installed", "rejected", "busy"}, timeout + REBOOT, "installed or rejected")
        if d["step"] != "installed":
            return Outcome(REJECTED, d.get("reason") or f"busy: {d.get('holder')}", r["version"], new, kind,
                           time.monotonic() - t0, 0, 0)
        d = t.expect({"confirmed", "rolled back"}, confirm_timeout, "the self-test after the reset")
        if d["step"] == "confirmed":
            from ..fleet.registry import Registry
            with Registry(state.registry_path) as reg:
                reg.update(thing, version=r["version"], counter=new,
                           **{f"{kind}_counter": new, f"{kind}_version": r["version"]})
            return Outcome(INSTALLED, None, r["version"], new, kind, time.monotonic() - t0, 0, 0)
        return Outcome(ROLLED_BACK, d.get("reason"), r["version"], new, kind, time.monotonic() - t0, 0, 0)
    finally:
        if channel is None:
            t.close()


def status(state, thing, *, timeout=10.0, host=None, port=None, principal="technician.default", channel=None):
    """The device's own OTA report (versions, slots, pending update, last outcome) and the registry's."""
    dev = _not_revoked(state, thing, "it cannot connect, so it cannot report its status")
    t = channel or Technician(state, thing, host, port, principal=principal).connect()
    deadline = time.monotonic() + timeout
    try:
        while True:
            # asked again every 2 s: a request sent while the device restarts (into or out of
            # update mode) is lost with the session it was sent to
            t.send(b"S")
            left = deadline - time.monotonic()
            d = t.expect({"status"}, min(2.0, max(left, 0.1)), "status", quiet=left > 2.0,
                         hint="is it online? `warden device list` shows whether it is connected and since when "
                              "(a device that sleeps answers at its wake)")
            if d is not None:
                break
    finally:
        if channel is None:
            t.close()
    d.pop("step", None)
    return {"device": d, "registry": {"version": dev.version, "counter": dev.counter}}
