"""The fleet view behind `warden device list`: each registered device joined with what the
broker holds about it: its retained status (online, offline or revoked, since when, the
versions it runs) and its retained OTA report (the last update's outcome).

It only reads: it must not publish, and must not change the registry.

The broker is asked in one short session per principal, as the other host tools do: the
operator reads `dt/<app>/+/status` and `dt/<app>/+/telemetry`, the technician `dt/<app>/+/ota`
(the policy lets only technicians read OTA reports). Subscriptions are QoS 0, so the broker
sends every retained message at once (no in-flight limit), and the session ends at a barrier
rather than after a guessed wait: one more subscription, to a topic no device can publish on
(a thing name never holds a dot), whose SUBACK the broker sends after the retained messages of
the subscriptions before it. Telemetry is not retained (a watcher must never take an old
reading for a new one), so a device's last reading is known only if one arrives while the view
listens: `listen` seconds (0: none is waited for).

Without a reachable broker (or without the principals' certificates) the view is the
registry's: `View.source` is "registry" and `View.note` says why.
"""
from __future__ import annotations

import datetime as _dt
import queue
import re
import time
from dataclasses import dataclass, field

from ..errors import WardenError
from ..state import State

BARRIER_THING = ".end"    # a dot is never in a thing name (warden.fleet.names)
OTA_STEPS = ("confirmed", "rolled back", "rejected", "installed")


@dataclass
class View:
    rows: list                          # one dict per device (Row fields, JSON-ready)
    source: str = "registry"            # "broker" when the broker answered
    note: str | None = None             # why the broker's view is missing or partial
    warnings: list = field(default_factory=list)


def factory_version() -> str | None:
    """The app version the build gives a device (firmware/core.py VERSION), or None."""
    from ..board.build import ROOT

    try:
        text = (ROOT / "firmware" / "core.py").read_text()
    except OSError:
        return None
    m = re.search(r'^VERSION = "([^"]+)"', text, re.M)
    return m.group(1) if m else None


def _iso(ts) -> str | None:
    try:
        return _dt.datetime.fromtimestamp(int(ts), _dt.timezone.utc).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _listen(state, principal, kinds, host, port, timeout, listen=0.0, wanted=()):
    """{thing: {kind: (payload dict, retained)}} of the retained messages on dt/<app>/+/<kind>
    (and, for `listen` seconds, live ones: until each thing in `wanted` was heard)."""
    from ..board.watch import Observer

    obs = Observer(state, host, port, principal=principal)
    obs.client.connect_timeout = timeout
    obs.connect(timeout=timeout)
    out = {}
    try:
        acked = set()
        obs.client.on_subscribe = lambda cl, ud, mid, rcs, props=None: acked.add(mid)
        app = state.app
        obs.client.subscribe([(f"dt/{app}/+/{k}", 0) for k in kinds])
        _, barrier = obs.client.subscribe(f"dt/{app}/{BARRIER_THING}/{kinds[0]}", 0)
        deadline = time.monotonic() + timeout
        ended = listen_end = None
        heard = set()
        while True:
            now = time.monotonic()
            if ended is None and barrier in acked:
                ended = now
                listen_end = now + listen
            if ended is not None and (now >= listen_end or set(wanted) <= heard):
                break
            if ended is None and now >= deadline:
                raise WardenError(f"the broker sent no SUBACK within {timeout:g} s",
                                  hint="is it overloaded? `warden device list --offline` shows the registry's view")
            m = obs.next(0.05)
            if m is None or m.thing is None:
                continue
            d = m.json()
            if isinstance(d, dict):
                out.setdefault(m.thing, {})[m.kind] = (d, m.retain)
                if m.kind == "telemetry" and not m.retain:
                    heard.add(m.thing)
        while True:      # what arrived with the barrier
            try:
                m = obs.messages.get_nowait()
            except queue.Empty:
                break
            if hasattr(m, "thing") and m.thing is not None and isinstance(m.json(), dict):
                out.setdefault(m.thing, {})[m.kind] = (m.json(), m.retain)
    finally:
        obs.close()
    return out


def fleet_view(state: State, *, broker: bool = True, timeout: float = 3.0, listen: float = 0.0,
               host=None, port=None, operator="operator.default",
               technician="technician.default", groups=()) -> View:
    """Every registered device (whose tags match every `groups` KEY=VALUE, if any) with its tags
    and live state (from the broker when `broker` and reachable)."""
    from .devices import device_folders
    from .groups import select_devices

    devices = select_devices(state, groups)
    view = View([])
    live, ota = {}, {}
    if broker and devices:
        where = f"{host or state.broker_host}:{port or state.broker_port}"
        online_want = ()
        try:
            live = _listen(state, operator, ("status", "telemetry"), host, port, timeout)
            view.source = "broker"
        except WardenError as e:
            view.note = f"no broker view ({e}); showing what the registry knows"
            if "reach" in str(e):
                view.note = f"no broker reachable at {where}: showing what the registry knows"
        if view.source == "broker" and listen > 0:
            online_want = [t for t, k in live.items() if (k.get("status") or ({},))[0].get("state") == "online"]
            try:
                heard = _listen(state, operator, ("telemetry",), host, port, timeout, listen, online_want)
                for t, k in heard.items():
                    live.setdefault(t, {}).update(k)
            except WardenError:
                pass
        if view.source == "broker":
            try:
                ota = _listen(state, technician, ("ota",), host, port, timeout)
            except WardenError as e:
                view.note = f"no OTA reports ({e})"
    factory = factory_version()
    known = set()
    for d in devices:
        known.add(d.thing)
        row = d.public_dict()
        row["tags"] = d.tags
        seen = live.get(d.thing, {})
        st = seen.get("status", ({}, True))[0]
        state_word = st.get("state") if view.source == "broker" else None
        if d.status == "revoked":
            state_word = "revoked"     # the registry decides: a revoked device cannot connect
        row["connection"] = state_word or ("never seen" if view.source == "broker" else "unknown")
        row["since"] = _iso(st.get("since"))
        row["reason"] = st.get("reason") or (d.revoke_reason if d.status == "revoked" else None)
        if d.status == "revoked":
            row["since"] = row["since"] or d.revoked_at
        # the version that runs: as the device says, else the registry's last confirmed update,
        # else the factory build's
        row["version"] = st.get("version") or d.app_version or factory
        row["firmware_version"] = st.get("firmware") or d.firmware_version
        row["version_from"] = "device" if st.get("version") else ("registry" if d.app_version else "build")
        t = seen.get("telemetry")
        row["last_reading"] = ({"seq": t[0].get("seq"), "time": _iso(t[0].get("ts"))} if t else None)
        o = ota.get(d.thing, {}).get("ota")
        row["last_ota"] = None
        if o and o[0].get("step") in OTA_STEPS:
            p = o[0]
            row["last_ota"] = {"kind": p.get("kind"), "version": p.get("version"), "outcome": p.get("step"),
                               "reason": p.get("reason")}
        row["cert_expires"] = d.not_after
        row["source"] = view.source
        view.rows.append(row)
    if groups:      # a filtered view: a folder is an orphan only if no device at all has it
        from .devices import list_devices

        known = {d.thing for d in list_devices(state)}
    orphans = [t for t in device_folders(state) if t not in known]
    if orphans:
        view.warnings.append(
            f"{len(orphans)} device folder(s) the registry does not list: {', '.join(orphans[:5])}"
            + (" ..." if len(orphans) > 5 else "") + " (restore the registry: `warden device restore`)")
    return view
