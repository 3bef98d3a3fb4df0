# The device's topics (DESIGN.md section 6), and the guard that keeps it inside them.
#
#   dt/<app>/<thing>/telemetry   readings
#   dt/<app>/<thing>/status      retained online/offline, also the last will
#   dt/<app>/<thing>/ota         OTA progress and outcome
#   cmd/<app>/<thing>/<command>  commands to the device
#
# The broker enforces this too; checking here first means a bug or a bad command
# is refused with a clear error instead of a publish the broker silently drops.

MAX_TOPIC = 256  # AWS IoT: topic <= 256 bytes and <= 7 slashes
MAX_SLASHES = 7
_FORBIDDEN = "+#/\x00"


class TopicError(ValueError):
    pass


def check_name(what, name):
    if not name or len(name) > 128:
        raise TopicError("%s must be 1..128 characters" % what)
    for ch in name:
        if ch in _FORBIDDEN:
            raise TopicError("%s %r contains %r (wildcards and slashes are not allowed)" % (what, name, ch))
    if name[0] == "$":
        raise TopicError("%s must not start with $" % what)


def check_topic(topic):
    if len(topic) > MAX_TOPIC or topic.count("/") > MAX_SLASHES:
        raise TopicError("topic too long for AWS IoT (<= 256 bytes, <= 7 slashes): %s" % topic)
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise TopicError("wildcards are not allowed in a publish topic: %s" % topic)
    return topic


class Topics:
    def __init__(self, app, thing):
        check_name("app", app)
        check_name("thing name", thing)
        self.app = app
        self.thing = thing
        base = "dt/%s/%s/" % (app, thing)
        self._own = base
        self.telemetry = check_topic(base + "telemetry")
        self.status = check_topic(base + "status")
        self.ota = check_topic(base + "ota")
        self.commands = "cmd/%s/%s/" % (app, thing)
        self.command_filter = self.commands + "#"

    def guard_publish(self, topic):
        """Raise TopicError unless `topic` is one this device may publish."""
        check_topic(topic)
        if not topic.startswith(self._own):
            raise TopicError("refused: %s is outside this device's topics (%s...)" % (topic, self._own))
        return topic

    def command_name(self, topic):
        """The command in cmd/<app>/<thing>/<command>, or None for a topic that is not ours."""
        if not topic.startswith(self.commands):
            return None
        return topic[len(self.commands):]
