# Readings: the configured sensors sampled, numbered and encoded.
#
# The hal supplies one read function per sensor (simulated on the twin, the
# chip's temperature and ADC channels on a board); this module only names,
# rounds and numbers the values. A sensor that fails yields null (NaN in the
# compact form) and the error is logged, so one broken sensor never stops the
# others.
#
# Two encodings of the same reading:
#   JSON (what is published): {"seq": N, "ts": T, "values": {"name": v, ...}}
#   compact (what the outbox keeps on flash): <II seq, ts, then one float32 per
#     sensor in name order: 16 bytes for two sensors instead of ~90 of JSON.
import json
import struct

from firmware import eventlog

_NAN = float("nan")


class Sensors:
    def __init__(self, sources, decimals=2):
        self._sources = sources
        self._decimals = decimals
        self.names = sorted(sources)
        self._fmt = "<II%df" % len(self.names)

    def sample(self, seq):
        """One value per sensor, in name order (None for a sensor that failed)."""
        out = []
        for name in self.names:
            try:
                out.append(round(self._sources[name](seq), self._decimals))
            except Exception as e:  # a sensor fault must not stop the others
                out.append(None)
                eventlog.warn("sensor", "%s failed: %r" % (name, e))
        return out

    def to_json(self, seq, ts, values):
        d = {}
        for i, name in enumerate(self.names):
            d[name] = values[i]
        return json.dumps({"seq": seq, "ts": ts, "values": d}).encode()

    def pack(self, seq, ts, values):
        return struct.pack(self._fmt, seq, ts, *[_NAN if v is None else v for v in values])

    def unpack_json(self, b):
        """The JSON of a compact reading (float32 values rounded back to `decimals`)."""
        v = struct.unpack(self._fmt, b)
        vals = [None if x != x else round(x, self._decimals) for x in v[2:]]
        return self.to_json(v[0], v[1], vals)
