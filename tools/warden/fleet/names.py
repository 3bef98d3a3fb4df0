"""Names that end up in certificates, MQTT client ids, topics and file names.

Pure validation: it must not import anything from warden but errors (warden.state uses it).

Thing names follow the AWS IoT rules for a thing name and an MQTT client id, so a fleet can move
to AWS IoT unchanged: characters from ``[a-zA-Z0-9:_-]``. That excludes a leading
``$`` (reserved by MQTT brokers for system topics), the MQTT topic separator and wildcards
``/ + #`` (a thing name is one topic level: ``dt/<app>/<thing>/...``), spaces, and any
character that could escape a file path or inject a line into a broker ACL. The length is 1 to
64, not AWS IoT's 128: the thing name is the certificate's CN, and X.509 bounds a CN at 64
characters (RFC 5280, ub-common-name), so a longer name could never get a certificate.

The thing name is the device certificate's CN; mosquitto takes it as the MQTT username
(``use_identity_as_username``) and client id (``use_username_as_clientid``), and the ACL's
``%u`` patterns scope each device to its own topics.

Role principals (people and services, not devices) use CNs with a dot: ``<role>.<name>``,
e.g. ``operator.default`` and ``technician.default``. A dot is never allowed in a thing name,
so no device can ever be named (and so authenticate) like a role principal, and a principal's
own per-user topics (``dt/<app>/operator.default/...``) never coincide with a device's.
"""
from __future__ import annotations

import re

from ..errors import WardenError

THING_MAX = 64     # the CN's upper bound (RFC 5280 ub-common-name); AWS IoT would allow 128
_THING_RE = re.compile(r"[a-zA-Z0-9:_-]+")
_BAD_CHAR = re.compile(r"[^a-zA-Z0-9:_-]")
THING_RULE = ("a thing name is 1-64 characters from a-z A-Z 0-9 : _ - (AWS IoT thing name characters; "
              "64 is the certificate CN's limit)")

APP_MAX = 32
_APP_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
APP_RULE = "an app name is 1-32 characters from a-z 0-9 _ - and starts with a letter or digit"

ROLE_RE = re.compile(r"[a-z][a-z0-9_-]*")
PRINCIPAL_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")

_EXPLAIN = {
    "/": "'/' separates MQTT topic levels",
    "+": "'+' is an MQTT wildcard",
    "#": "'#' is an MQTT wildcard",
    ".": "'.' is reserved for role principals such as operator.default",
    " ": "spaces are not allowed",
}


class InvalidName(WardenError, ValueError):
    """A name breaks the naming rules (also a ValueError)."""


def validate_thing(name) -> str:
    """Return `name` if it is a valid thing name, else raise InvalidName (a ValueError)."""
    if not isinstance(name, str):
        raise InvalidName(f"thing name must be a string, not {type(name).__name__}", hint=THING_RULE)
    if not name:
        raise InvalidName("thing name is empty", hint=THING_RULE)
    if len(name) > THING_MAX:
        raise InvalidName(f"thing name is {len(name)} characters long, more than {THING_MAX}", hint=THING_RULE)
    if name.startswith("$"):
        raise InvalidName(
            f"thing name {name!r} starts with '$', which MQTT reserves for broker topics", hint=THING_RULE
        )
    if not _THING_RE.fullmatch(name):
        bad = _BAD_CHAR.search(name).group()
        why = _EXPLAIN.get(bad, "it is not allowed")
        raise InvalidName(f"thing name {name!r} contains {bad!r}: {why}", hint=THING_RULE)
    return name


def is_valid_thing(name) -> bool:
    try:
        validate_thing(name)
    except InvalidName:
        return False
    return True


def validate_app(name) -> str:
    """Return `name` if it is a valid app name (the `<app>` topic level), else raise InvalidName."""
    if not isinstance(name, str) or not name:
        raise InvalidName("app name is empty", hint=APP_RULE)
    if len(name) > APP_MAX or not _APP_RE.fullmatch(name):
        raise InvalidName(f"app name {name!r} is not valid", hint=APP_RULE)
    return name


def principal_cn(role: str, name: str = "default") -> str:
    """The certificate CN of a role principal: `<role>.<name>` (e.g. operator.default)."""
    if not ROLE_RE.fullmatch(role or ""):
        raise InvalidName(f"role {role!r} is not valid", hint="a role is lower case letters, digits, _ and -")
    if not PRINCIPAL_NAME_RE.fullmatch(name or ""):
        raise InvalidName(
            f"principal name {name!r} is not valid", hint="1-64 characters from a-z A-Z 0-9 _ -"
        )
    return f"{role}.{name}"


def parse_principal(cn: str):
    """(role, name) if `cn` is a role principal's CN, else None (e.g. for a thing name)."""
    if not isinstance(cn, str) or cn.count(".") != 1:
        return None
    role, name = cn.split(".")
    if ROLE_RE.fullmatch(role) and PRINCIPAL_NAME_RE.fullmatch(name):
        return role, name
    return None
