"""MQTT topic names and filters: validity, matching and containment, and AWS IoT's size limits.

The semantics are MQTT 3.1.1's (section 4.7) as mosquitto implements them; the policy model,
the renderings and their evaluators all use these functions. Pure functions on strings: this
module must not know about policies, roles or brokers.
"""
from __future__ import annotations

MAX_SLASHES = 7          # AWS IoT: at most 7 slashes in a topic or topic filter
MAX_TOPIC_BYTES = 256    # AWS IoT: topic names and filters of at most 256 bytes


def valid_topic(topic) -> bool:
    """An MQTT topic name (what is published): non-empty, no wildcards, no NUL."""
    return isinstance(topic, str) and bool(topic) and not any(c in topic for c in "+#\x00")


def valid_filter(flt) -> bool:
    """An MQTT topic filter: '+' only as a whole level, '#' only as the whole last level."""
    if not isinstance(flt, str) or not flt or "\x00" in flt:
        return False
    levels = flt.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def aws_valid(name: str) -> bool:
    """Within AWS IoT's limits: at most 256 bytes and 7 slashes."""
    return len(name.encode()) <= MAX_TOPIC_BYTES and name.count("/") <= MAX_SLASHES


def topic_matches(flt: str, topic: str) -> bool:
    """Does MQTT filter `flt` match topic name `topic`? (MQTT 3.1.1 section 4.7, as mosquitto does it.)

    '+' matches exactly one level (possibly empty), '#' the rest including the parent level
    ("a/#" matches "a"), and a filter starting with a wildcard never matches a '$' topic.
    """
    if not flt or not topic:
        return False
    if (flt[0] == "$") != (topic[0] == "$"):
        return False
    f, t = flt.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(f) == len(t)


def filter_contains(outer: str, inner: str) -> bool:
    """Is every topic matched by filter `inner` also matched by filter `outer`?"""
    o, i = outer.split("/"), inner.split("/")
    if outer[0] in "+#" and inner.startswith("$"):
        return False   # a leading wildcard never matches '$' topics
    for n, level in enumerate(o):
        if level == "#":
            return True
        if n >= len(i):
            return False
        if i[n] == "#":
            return False
        if level == "+":
            continue
        if i[n] != level:          # includes inner '+' under an outer literal
            return False
    return len(o) == len(i)
