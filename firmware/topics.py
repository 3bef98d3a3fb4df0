# The device's topics (DESIGN.md section 6), and the guard that keeps it inside them.
#
#   dt/<app>/<thing>/telemetry   readings
#   dt/<app>/<thing>/status      retained online/offline, also the last will
#   dt/<app>/<thing>/ota         OTA progress and outcome
#   cmd/<app>/<thing>/<command>  commands to the device
#
# The broker enforces this too; checking here first means a bug or a bad command
# is refused with a clear error instead of a publish the broker silently drops.
# Every refusal is written to the device log (`ERROR topics: refused ...`) before
# TopicError is raised, so it is visible even when the caller swallows the error.
# AWS IoT limits: topic <= 256 bytes and <= 7 slashes; names <= 128 characters.
from firmware import eventlog


class TopicError(ValueError):
    pass


def _refuse(msg):
    msg = "refused " + msg
    eventlog.error("topics", msg)
    return TopicError(msg)


def check_name(what, name):
    if not name or len(name) > 128:
        raise _refuse("%s %r: must be 1..128 characters" % (what, name))
    for ch in name:
        if ch in "+#/\x00":
            raise _refuse("%s %r: contains %r (wildcards and slashes are not allowed)" % (what, name, ch))
    if name[0] == "$":
        raise _refuse("%s %r: must not start with $" % (what, name))


def check_topic(topic):
    if len(topic.encode()) > 256 or topic.count("/") > 7:
        raise _refuse("topic too long for AWS IoT (<= 256 bytes, <= 7 slashes): %s" % topic)
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise _refuse("wildcards are not allowed in a publish topic: %s" % topic)
    return topic


class Topics:
    def __init__(self, app, thing):
        check_name("app", app)
        check_name("thing name", thing)
        self.app = app
        self.thing = thing
        self._own = base = "dt/%s/%s/" % (app, thing)
        self.telemetry = check_topic(base + "telemetry")
        self.status = check_topic(base + "status")
        self.ota = check_topic(base + "ota")
        self.commands = "cmd/%s/%s/" % (app, thing)
        self.command_filter = self.commands + "#"

    def guard_publish(self, topic):
        """Raise TopicError (and log it) unless `topic` is one this device may publish."""
        if topic is self.telemetry or topic is self.status or topic is self.ota:
            return topic  # checked when built: no work per reading
        check_topic(topic)
        if not topic.startswith(self._own):
            raise _refuse("%s is outside this device's topics (%s...)" % (topic, self._own))
        return topic

    def command_name(self, topic):
        """The command in cmd/<app>/<thing>/<command>, or None for a topic that is not ours."""
        if topic.startswith(self.commands):
            return topic[len(self.commands):]
        return None
