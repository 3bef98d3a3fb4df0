# Readings: the configured sensors sampled into one JSON document.
#
# The hal supplies one read function per sensor (simulated on the twin, the
# chip's temperature and ADC channels on a board); this module only names,
# rounds and numbers the values. A sensor that fails yields null and the error
# is logged, so one broken sensor never stops the others.
import json

from firmware import eventlog


class Sensors:
    def __init__(self, sources, decimals=2):
        self._sources = sources
        self._decimals = decimals
        self._names = sorted(sources)

    def reading(self, seq, ts):
        """The reading numbered `seq` taken at Unix time `ts`, as JSON bytes."""
        values = {}
        for name in self._names:
            try:
                values[name] = round(self._sources[name](seq), self._decimals)
            except Exception as e:  # a sensor fault must not stop the others
                values[name] = None
                eventlog.warn("sensor", "%s failed: %r" % (name, e))
        return json.dumps({"seq": seq, "ts": ts, "values": values}).encode()
