# The checks of firmware/topics.py (AWS IoT limits: topic <= 256 bytes and <= 7
# slashes; no wildcards; names <= 64 characters: a thing name is its certificate CN, which
# X.509 bounds at 64), loaded only while they run.
from firmware import eventlog
from firmware.topics import TopicError


def _refuse(msg):
    msg = "refused " + msg
    eventlog.error("topics", msg)
    return TopicError(msg)


def _name(what, name):
    if not name or len(name) > 64:
        raise _refuse("%s %r: must be 1..64 characters" % (what, name))
    for ch in name:
        if ch in "+#/\x00":
            raise _refuse("%s %r: contains %r (wildcards and slashes are not allowed)" % (what, name, ch))
    if name[0] == "$":
        raise _refuse("%s %r: must not start with $" % (what, name))


def _topic(topic):
    if len(topic.encode()) > 256 or topic.count("/") > 7:
        raise _refuse("topic too long for AWS IoT (<= 256 bytes, <= 7 slashes): %s" % topic)
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise _refuse("wildcards are not allowed in a publish topic: %s" % topic)
    return topic


def names(app, thing, topics):
    """The app and thing names, and the device's own topics built from them."""
    _name("app", app)
    _name("thing name", thing)
    for t in topics:
        _topic(t)


def own(topic, prefix):
    """`topic` if this device may publish it (under `prefix`, within AWS's limits)."""
    _topic(topic)
    if not topic.startswith(prefix):
        raise _refuse("%s is outside this device's topics (%s...)" % (topic, prefix))
    return topic
