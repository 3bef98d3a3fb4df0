# OTA payload sink for `keys` updates: the set of signing keys the device trusts, replaced as a
# whole by a key set signed with a key it trusts now (`warden keys rotate` / `keys revoke`).
# The set is staged in /state/keys.stage (its length is the durable offset) and, after its
# SHA-256 matched, /keys/ is made exactly the set: new key files written (temporary file and
# rename each), keys not in the set removed. No reset: running code does not change, so
# firmware/ota.py records the counter and the outcome at once.
# Format: b"WKS1", count (1 byte, 1..8), then `count` trusted-key files (WPK1, 402 bytes each).
# Loaded by firmware/ota.py while such an update runs.
import json
import os

from micropython import const

from firmware.core import replace as put
from firmware.ota import OTAError
from firmware.ota_state import INSTALLED, LAST, PENDING, counters, installed, rm

STAGE = "/state/keys.stage"
KEYS = "/keys"
_KEYFILE = const(402)   # WPK1, key id, e, modulus length, RSA-3072 modulus
_MAX = const(8)


class Sink:
    slot = "keys"   # firmware/ota.py: no reset follows; commit(f) gets the manifest's fields

    def __init__(self):
        self.f = None

    def capacity(self):
        return 5 + _MAX * _KEYFILE

    def start(self):
        rm(STAGE)
        self.f = open(STAGE, "wb")
        return 0

    def resume(self, h, size):
        try:
            with open(STAGE, "rb") as f:
                d = f.read()
        except OSError:
            return self.start()
        if len(d) > size:
            return self.start()
        h.update(d)
        self.f = open(STAGE, "ab")
        return len(d)

    def write(self, mv):
        self.f.write(mv)
        self.f.flush()   # small: durable at once

    def close(self):
        if self.f:
            self.f.close()
            self.f = None

    def commit(self, f):
        with open(STAGE, "rb") as sf:
            d = sf.read()
        if d[:4] != b"WKS1" or not 1 <= d[4] <= _MAX or len(d) != 5 + d[4] * _KEYFILE:
            raise OTAError("malformed key set: want WKS1, 1-%d keys of %d bytes" % (_MAX, _KEYFILE))
        want = {}
        for i in range(d[4]):
            k = d[5 + i * _KEYFILE:5 + (i + 1) * _KEYFILE]
            if k[:4] != b"WPK1" or k[16:18] != b"\x01\x80":
                raise OTAError("malformed key set: key %d is not an RSA-3072 trusted-key file" % (i + 1))
            want["%s.pk" % "".join("%02x" % b for b in k[4:12])] = k
        for name, k in want.items():
            put(KEYS + "/" + name, k)
        for name in os.listdir(KEYS):
            if name.endswith(".pk") and name not in want:
                os.remove(KEYS + "/" + name)
        rm(STAGE)
        # in force now: the counter (anti-replay) and the outcome, as a confirmed update's
        d = counters()   # (corrupt: refused before the swap, by ota_check; never read as empty)
        d["keys"] = [f[5], f[4]]
        put(INSTALLED, json.dumps(d))
        put(LAST, json.dumps({"kind": "keys", "version": f[4], "counter": f[5], "outcome": "confirmed",
                              "reason": None}))
        rm(PENDING)
        from firmware import eventlog
        eventlog.info("ota", "trusted keys replaced by set %s (counter %d)" % (f[4], f[5]))


def status():
    """The key set in force: its counter and version, and the ids of the keys trusted."""
    try:
        k = installed("keys")
    except ValueError:
        k = (None, None)   # corrupt: updates are refused, and ota_state.status() says so
    return {"counter": k[0], "version": k[1],
            "trusted": sorted(n[:-3] for n in os.listdir(KEYS) if n.endswith(".pk"))}
