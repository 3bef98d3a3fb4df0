"""What an operator can attach to a monitor rule, and lifting it: `quarantine` (the device's rights
narrowed at every broker to publishing its status and metrics, nothing received) and `revoke`
(warden.fleet.devices.revoke_device, unchanged).

It must not judge data points (engine.py). A quarantine is kept in the monitor's store (the device
stays in the registry, active) and carried to every broker by warden.broker.control's sync, which
sends the whole quarantine list to each broker's guard plugin (warden.broker.guard): the broker
then drops the device's other publishes and delivers it nothing, in its live session too.
"""
from __future__ import annotations

from ..errors import WardenError
from ..fleet.names import validate_thing
from ..fleet.registry import Registry
from ..state import State
from .store import Store


class QuarantineError(WardenError):
    hint = "see `warden device list` and `warden monitor alerts`"


def _known(state: State, thing: str):
    validate_thing(thing)
    with Registry(state.registry_path) as reg:
        device = reg.get(thing)
    if device is None:
        raise QuarantineError(f"no device {thing!r} in the registry")
    return device


def quarantine(state: State, thing: str, rule: str | None = None, reason: str | None = None):
    """Quarantine `thing` and carry it to every broker. Returns (newly quarantined, SyncReport)."""
    from ..broker.control import sync

    device = _known(state, thing)
    if device.status == "revoked":
        raise QuarantineError(f"{thing} is revoked: it cannot connect at all", hint="nothing to narrow")
    with Store(state) as store:
        new = store.quarantine(thing, rule, reason)
    return new, sync(state)


def unquarantine(state: State, thing: str):
    """Lift `thing`'s quarantine on every broker. Returns the SyncReport."""
    from ..broker.control import sync

    _known(state, thing)
    with Store(state) as store:
        if not store.unquarantine(thing):
            raise QuarantineError(f"{thing} is not quarantined",
                                  hint="`warden monitor quarantined` lists the quarantined devices")
    return sync(state)


def revoke(state: State, thing: str, reason: str):
    from ..fleet.devices import revoke_device

    return revoke_device(state, thing, reason)


def pause_rollouts(state: State, thing: str, reason: str) -> list:
    """Pause every active rollout that includes `thing` (its run starts no other device and stops once
    its transfers end); the names of those paused."""
    from ..rollout.runner import pause_holding
    return pause_holding(state, thing, reason)
