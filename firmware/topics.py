# The device's topics (docs/design.md, "Topics"), and the guard that keeps it inside them.
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
# The checks themselves (firmware/topiccheck.py) run when the topics are built, at
# boot, and for a topic other than the three built ones: they are loaded for that
# and dropped again, so they cost no heap while the device runs.
from firmware import core


class TopicError(ValueError):
    pass


def _checks():
    from firmware import topiccheck
    return topiccheck


def _drop():
    core.unload(("firmware.topiccheck",))


class Topics:
    def __init__(self, app, thing):
        self.app = app
        self.thing = thing
        self._own = base = "dt/%s/%s/" % (app, thing)
        self.telemetry = base + "telemetry"
        self.status = base + "status"
        self.ota = base + "ota"
        self.commands = "cmd/%s/%s/" % (app, thing)
        self.command_filter = self.commands + "#"
        try:
            _checks().names(app, thing, (self.telemetry, self.status, self.ota))
        finally:
            _drop()

    def guard_publish(self, topic):
        """Raise TopicError (and log it) unless `topic` is one this device may publish."""
        if topic is self.telemetry or topic is self.status or topic is self.ota:
            return topic  # checked when built: no work per reading
        try:
            return _checks().own(topic, self._own)
        finally:
            _drop()
