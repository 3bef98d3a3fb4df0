# Refusals of what a remote party sent (a command, an update), counted rather than each
# logged: the first of each message since the last flush() is logged; the rest are only
# counted, and flush() (the session loop calls it at the next reading) logs one line per
# message with its count, then unloads this module. What a remote party can make the device
# write is so bounded by time (at most _MAX messages per reading interval), never by how much
# it sends. The counts live here: the module is loaded from the first refusal to the flush.
# Must not: act on what it refuses, or raise anything but MemoryError (it runs inside the
# MQTT client's receive path, and firmware/device.py catches that one).
# topic and msg are None for a PUBLISH larger than the client's max_packet (lib/mqtt.py).
from micropython import const

from firmware import eventlog

_MAX = const(8)  # distinct messages counted between flushes; more share "other reasons"
_counts = {}     # message -> [level, kind, times since logged]


def note(kind, msg, level="WARN"):
    """Log `msg` the first time since the last flush(); after that only count it."""
    counts = _counts
    c = counts.get(msg)
    if c is None and len(counts) >= _MAX:
        msg = "refused for other reasons"
        c = counts.get(msg)
    if c is not None:
        c[2] += 1
        return
    counts[msg] = [level, kind, 0]
    eventlog.log(level, kind, msg)


def command(dev, topic, msg, known):
    """Say why firmware/device.py did not queue a command (known: its topic names a command)."""
    if msg is None:
        why = "larger than max_packet (read and dropped)"
    elif dev.mqtt.retained:
        why = "retained (it would replay at every connect)"
    elif not known:
        why = "no handler for its topic"
    elif len(dev.pending) < 3:
        why = "not %s request" % ("an OTA" if topic.endswith(b"/ota") else "a")  # refused before its code loads
    else:
        why = "busy, %d waiting" % len(dev.pending)
    note("cmd", "command refused: " + why)


def flush():
    """Log the counts of the refusals not logged since the last flush; unload this module."""
    try:
        for msg, c in _counts.items():
            if c[2]:
                eventlog.log(c[0], c[1], "%s (%d more times)" % (msg, c[2]))
    except MemoryError:
        return  # counted on; logged at a later reading
    from firmware import core
    core.unload(("firmware.refusal",))  # loaded again by the next refusal
