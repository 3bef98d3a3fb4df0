"""Remote settings: `warden device config THING get|set KEY VALUE`, the host's side.

A running device may change a few settings at run time (reading interval, QoS, duty cycle,
keepalive, sensors, log quota); a set travels as a signed command that the device checks as it
checks an update (firmware/devconfig.py, which holds the allow-list the device enforces; the
table here mirrors it so a bad value is refused before anything is sent, and
tests/host/test_devconfig.py keeps the two equal). The format, the order of the device's
checks and what takes effect when are in docs/device.md, "Remote settings"; the threat model in
docs/security.md.

The command is signed with the fleet's OTA signing key (warden.ota.keys) and sent as the
technician principal, whom the policy lets publish cmd/<app>/+/config and read dt/<app>/+/config.
Its counter is one above the device's own: a set first asks the device (a get), so no counter
is kept on the host and two hosts cannot make the device go backwards; a replayed or older
command is refused by the device.

This module must not decide what the device accepts: the device refuses by itself what is off
its list, whatever this module checked.
"""
from __future__ import annotations

import json
import struct

from ..broker.channel import CommandChannel
from ..errors import WardenError

MAGIC = b"WCF1"
BODY_MAX = 512
SIG_LEN = 384
COUNTER_MAX = 2 ** 32 - 1

# key -> (lowest, highest, in force): firmware/devconfig.py SETTINGS.
SETTINGS = {
    "interval_ms": (100, 86400000, "now"),
    "qos": (0, 1, "now"),
    "sleep_ms": (0, 86400000, "now"),
    "metrics_s": (0, 86400, "now"),       # 0 (off) or at least 10
    "keepalive": (30, 1200, "boot"),   # AWS IoT accepts 30..1200 s
    "log_quota": (65536, 1048576, "boot"),
    "sensors": (None, None, "boot"),
}
# settings whose 0 means off and whose other values start higher: firmware/devconfig.py _ON_MIN
ON_MIN = {"sleep_ms": 1000, "metrics_s": 10}
SENSOR_KINDS = ("sine", "ramp", "const", "chip_temperature", "adc")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")
# What is provisioned, never sent: named in the refusal, so the user learns where it is changed.
PROVISIONED = {"broker", "broker.host", "broker.port", "broker.hostname", "thing", "app", "wifi", "timeout",
               "watchdog_ms", "selftest_ms"}

APPLIED, REFUSED, FAILED = "applied", "refused", "failed"


class DevConfigError(WardenError):
    pass


class ConfigRefused(DevConfigError):
    """The device answered with a refusal (its reason is the message)."""


def check(settings: dict) -> dict:
    """Refuse (DevConfigError) what the device would refuse: keys off the list, values out of range."""
    if not isinstance(settings, dict) or not settings:
        raise DevConfigError("no setting to send", hint="remote settings: " + ", ".join(SETTINGS))
    for k, v in settings.items():
        r = SETTINGS.get(k)
        if r is None:
            why = ("it is provisioned, not sent: broker, TLS, identity, keys, thing and app never change remotely"
                   if k in PROVISIONED or k.split(".")[0] in PROVISIONED else "no such remote setting")
            raise DevConfigError(f"{k} may not be set remotely: {why}",
                                 hint="remote settings: " + ", ".join(SETTINGS) +
                                      " (others: `warden deploy` or `warden device add`)")
        why = _sensors(v) if k == "sensors" else _integer(k, v, r)
        if why:
            raise DevConfigError(f"{k} must be {why}, got {json.dumps(v)}", hint=_hint(k))
    return settings


def _integer(k, v, r):
    low = ON_MIN.get(k)
    if type(v) is not int or not r[0] <= v <= r[1] or (low and 0 < v < low):
        return f"an integer {r[0]}..{r[1]}" + (f" (0: off, else at least {low})" if low else "")
    return None


def _sensors(v):
    if not isinstance(v, dict) or not 1 <= len(v) <= 8:
        return "an object of 1 to 8 sensors"
    for name, spec in v.items():
        if not 1 <= len(name) <= 15 or not set(name) <= _NAME_CHARS:
            return f"sensor names of 1-15 of a-z 0-9 _ (got {name!r})"
        if not isinstance(spec, dict) or spec.get("kind") not in SENSOR_KINDS:
            return f"sensor {name}: kind one of {', '.join(SENSOR_KINDS)} (i2c is provisioned only)"
        for k, x in spec.items():
            if k != "kind" and (type(x) not in (int, float) or len(k) > 15):
                return f"sensor {name}: {k} must be a number"
    return None


def _hint(k):
    if k == "sensors":
        return 'e.g. \'{"temperature": {"kind": "sine", "base": 21, "amplitude": 2, "period": 60}}\''
    return "see docs/device.md, \"Remote settings\""


def parse_value(key: str, text: str):
    """A value from the command line: JSON (numbers, objects), so 5000 is an integer. A key that
    is not a remote setting is refused first (its value does not matter)."""
    if key not in SETTINGS:
        check({key: None})
    try:
        return json.loads(text)
    except ValueError:
        raise DevConfigError(f"{key}: {text!r} is not a JSON value",
                             hint=_hint(key) if key == "sensors" else "numbers are written plainly: 5000")


def envelope(thing: str, counter: int, settings: dict, key) -> bytes:
    """The set command: b"S" + body + RSA-3072-PSS signature over body (docs/device.md)."""
    from ..ota import image, keys

    if not 0 < counter <= COUNTER_MAX:
        raise DevConfigError(f"counter {counter} is out of range (1..{COUNTER_MAX})")
    t = thing.encode()
    body = MAGIC + keys.key_id(key.public_key()) + struct.pack(">IB", counter, len(t)) + t + \
        json.dumps(settings, separators=(",", ":")).encode()
    if len(body) > BODY_MAX:
        raise DevConfigError(f"the settings are too long: the signed body is {len(body)} bytes > {BODY_MAX}",
                             hint="send fewer sensors, or fewer settings at a time")
    return b"S" + body + image.sign_raw(body, key)


class Link(CommandChannel):
    """The technician's MQTT session to one device's config topics (mutual TLS, session certificate)."""

    error = DevConfigError

    def __init__(self, state, thing, host=None, port=None, principal="technician.default"):
        super().__init__(state, thing, "config", principal=principal, host=host, port=port)

    def ask(self, payload: bytes, steps, timeout: float) -> dict:
        """Publish `payload` and return the device's next answer whose step is in `steps`."""
        self.send(payload)
        d = self.answer(steps, timeout)
        if d is None:
            raise DevConfigError(f"the device did not answer within {timeout:g} s",
                                 hint="is it online? `warden watch --status` shows it (a sleeping device "
                                      "answers at its next wake: raise --timeout). A policy file from before "
                                      "remote settings lacks the technician's config topics: see docs/security.md")
        return d


def _session(state, thing, host, port, principal):
    from .devices import get_device

    get_device(state, thing)   # a name the fleet does not know is refused before any connection
    return Link(state, thing, host, port, principal).connect()


def get(state, thing, *, timeout=30.0, host=None, port=None, principal="technician.default") -> dict:
    """The device's answer to a get: {counter, settings (stored), at_boot (stored, not yet in force)}."""
    link = _session(state, thing, host, port, principal)
    try:
        return link.ask(b"G", {"settings"}, timeout)
    finally:
        link.close()


def set_settings(state, thing, settings: dict, *, timeout=30.0, host=None, port=None,
                 principal="technician.default", local_check=True, counter=None, key=None) -> dict:
    """Sign and send `settings`; the device's answer {step: applied, counter, settings, at_boot}.
    ConfigRefused with the device's reason if it refused. local_check=False and `counter` are for
    tests that must reach the device's own checks."""
    from ..ota import keys

    if local_check:
        check(settings)
    key = key or keys.load_private_key(state)
    link = _session(state, thing, host, port, principal)
    try:
        if counter is None:
            counter = link.ask(b"G", {"settings"}, timeout)["counter"] + 1
        d = link.ask(envelope(thing, counter, settings, key), {APPLIED, REFUSED, FAILED}, timeout)
    finally:
        link.close()
    if d["step"] != APPLIED:
        raise ConfigRefused(f"{thing} {d['step']} the settings: {d.get('reason')}",
                            hint="nothing was changed on the device" if d["step"] == REFUSED else
                            "the device could not store them: `warden logs` shows why; run it again")
    return d
