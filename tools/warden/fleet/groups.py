"""Device groups: a device's tags (KEY=VALUE, kept in the registry) and selecting devices by them.

Validation and selection only: the registry stores the tags, the CLI parses and prints. A later
command that acts on a group (`rollout create --group`, `aws sync`'s thing groups) must select
through `select_devices`, so every command means the same thing by a group.
"""
from __future__ import annotations

import re

from ..errors import WardenError
from ..state import State

_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_VALUE = 128


class TagError(WardenError):
    hint = ("a tag is KEY=VALUE: KEY 1-64 of letters, digits, '_', '.', '-'; VALUE 1-128 printable "
            "characters, no '='")


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key or ""):
        raise TagError(f"bad tag key {key!r}")
    return key


def check_value(key: str, value: str) -> str:
    # printable: no control characters (they would corrupt a table or a log line), no '=' (a
    # selector KEY=VALUE must split one way only)
    if not value or len(value) > MAX_VALUE or "=" in value or not value.isprintable():
        raise TagError(f"bad value for tag {key!r}: {value!r}")
    return value


def parse_tag(text: str) -> tuple:
    """'KEY=VALUE' -> (key, value), both checked; TagError otherwise."""
    key, sep, value = text.partition("=")
    if not sep:
        raise TagError(f"{text!r} is not KEY=VALUE")
    return check_key(key), check_value(key, value)


def parse_selectors(groups) -> dict:
    """`--group KEY=VALUE` options -> {key: value}; one key asked two different ways is an error
    (no device could match both)."""
    out = {}
    for g in groups or ():
        k, v = parse_tag(g)
        if k in out and out[k] != v:
            raise TagError(f"--group {k}= given twice ({out[k]!r} and {v!r}): no device can match both",
                           hint="give each key once; every --group must match")
        out[k] = v
    return out


def matches(tags: dict, selectors: dict) -> bool:
    return all(tags.get(k) == v for k, v in selectors.items())


def set_tags(state: State, thing: str, tags=(), remove=()) -> dict:
    """Set `tags` ('KEY=VALUE' strings) and remove `remove` (keys) on `thing`; all checked before
    anything is written, in one transaction. Returns the device's tags."""
    from .devices import open_registry

    new = dict(parse_tag(t) for t in tags)
    gone = [check_key(k) for k in remove]
    both = set(new) & set(gone)
    if both:
        raise TagError(f"tag {sorted(both)[0]!r} both set and removed", hint="give each key once")
    reg = open_registry(state, create=False)
    if reg is None:
        from .registry import RegistryError

        raise RegistryError(f"no device {thing!r}: there is no registry yet", hint="add one with `warden device add`")
    with reg:
        return reg.set_tags(thing, new, gone) if (new or gone) else _existing(reg, thing)


def _existing(reg, thing) -> dict:
    from .registry import RegistryError

    if reg.get(thing) is None:
        raise RegistryError(f"no device {thing!r} in the registry", hint="see `warden device list`")
    return reg.tags(thing).get(thing, {})


def device_tags(state: State) -> dict:
    """{thing: {key: value}} for every tagged device ({} without a registry)."""
    from .devices import open_registry

    reg = open_registry(state, create=False)
    if reg is None:
        return {}
    with reg:
        return reg.tags()


def select_devices(state: State, groups, status: str | None = None) -> list:
    """The registered devices (with `status`, if given) whose tags match every `--group KEY=VALUE`
    in `groups` (strings, or a {key: value} dict); each Device carries `.tags`. No groups: all."""
    from .devices import list_devices

    selectors = groups if isinstance(groups, dict) else parse_selectors(groups)
    tags = device_tags(state)
    out = []
    for d in list_devices(state, status):
        d.tags = tags.get(d.thing, {})
        if matches(d.tags, selectors):
            out.append(d)
    return out
