# Remote settings: `warden device config` reads and changes what a running device may change
# at run time, over cmd/<app>/<thing>/config; the answer goes to dt/<app>/<thing>/config.
#
#   b"G"                    get: answer the settings stored and which of them wait for a boot
#   b"S" + body + sig       set, signed like an update (docs/device.md, "Remote settings"):
#       body = b"WCF1" | key id (8) | counter (4, big-endian) | len(thing) (1) | thing | settings JSON
#       sig  = RSA-3072-PSS (SHA-256, salt 32) over body by a key in /keys/, as an update's manifest
#
# A set is checked in this order, and the first failure is the answer's reason: framing and size,
# a trusted key, the target (this thing), a counter above the last one applied (/state/config.ctr:
# a replayed or older command is refused), the signature (the costly check, last of the cheap
# ones, so a replay or a command for another device costs no RSA), then every setting against
# the allow-list below, each in its range. Anything not on the list is refused here, on the
# device, whatever the host checked: broker, TLS, identity, keys, thing and app names are
# provisioned, never sent. Nothing is written unless the whole command is accepted; then the
# counter (first: a power cut after it costs the command, never lets it replay) and /config.json,
# each replaced whole by core.replace().
# Loaded by the session loop for one command and unloaded with rsapss when it is answered
# (handle()): the RSA verify is the heap peak, so nothing of this stays resident.
# Must not: write anything before the signature checked out, or accept a key off the list.
import json

from micropython import const

from firmware import core, eventlog

CONFIG = "/config.json"
COUNTER = "/state/config.ctr"
KEYS = "/keys/"
MAGIC = b"WCF1"
_SIG = const(384)
_BODY_MAX = const(512)

# The allow-list: key -> (lowest, highest, in force). "now": at the next reading; "boot": after
# the next boot (a sleeper's next wake). sensors is checked on its own (_sensors).
SETTINGS = {
    "interval_ms": (100, 86400000, "now"),
    "qos": (0, 1, "now"),
    "sleep_ms": (0, 86400000, "now"),     # 0 (stay up) or at least 1000
    "metrics_s": (0, 86400, "now"),       # 0 (no reports) or at least 10 (seconds)
    "keepalive": (30, 1200, "boot"),      # the session's client is made once per boot; AWS IoT: 30..1200
    "log_quota": (65536, 1048576, "boot"),
    "sensors": (None, None, "boot"),      # the hal makes the read functions at boot
}
_ON_MIN = {"sleep_ms": 1000, "metrics_s": 10}   # 0 is off, any other value at least this
_KINDS = ("sine", "ramp", "const", "chip_temperature", "adc")   # i2c names a driver module: provisioned only


class Refused(Exception):
    """A config command refused; args[0] is the reason (what the device answers)."""


def _counter():
    try:
        with open(COUNTER) as f:
            return int(f.read())
    except OSError:
        return 0
    except ValueError:
        raise Refused("counter %s is corrupt: remote settings refused (re-provision)" % COUNTER)


def _key(kid):
    """(modulus, e) of trusted key `kid`: the same /keys/<id>.pk files updates are checked with."""
    name = "".join("%02x" % b for b in kid)
    try:
        with open(KEYS + name + ".pk", "rb") as f:
            d = f.read()
    except OSError:
        raise Refused("unknown signing key " + name)
    if len(d) != 18 + _SIG or d[:4] != b"WPK1" or d[4:12] != kid or d[16:18] != b"\x01\x80":
        raise Refused("trusted key %s%s.pk is corrupt or not RSA-3072" % (KEYS, name))
    return d[18:], int.from_bytes(d[12:16], "big")


def _sensors(v):
    if not isinstance(v, dict) or not 1 <= len(v) <= 8:
        return "an object of 1 to 8 sensors"
    for name, spec in v.items():
        if not 1 <= len(name) <= 15 or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789_" for c in name):
            return "sensor names of 1-15 of a-z 0-9 _ (got %r)" % name
        if not isinstance(spec, dict) or spec.get("kind") not in _KINDS:
            return "sensor %s: kind one of %s (i2c is provisioned only)" % (name, ", ".join(_KINDS))
        for k, x in spec.items():
            if k != "kind" and (type(x) not in (int, float) or len(k) > 15):
                return "sensor %s: %s must be a number" % (name, k)
    return None


def check(settings):
    """Refused(reason) unless `settings` is a non-empty object of allowed keys, each in range."""
    if not isinstance(settings, dict) or not settings:
        raise Refused("settings must be a non-empty JSON object")
    for k, v in settings.items():
        r = SETTINGS.get(k)
        if r is None:
            raise Refused("%s may not be set remotely (broker, TLS, identity, keys, thing and app are "
                          "provisioned only)" % k)
        if k == "sensors":
            why = _sensors(v)
        elif type(v) is not int or not r[0] <= v <= r[1] or 0 < v < _ON_MIN.get(k, 0):
            why = "an integer %d..%d%s" % (r[0], r[1], " (0: off, else at least %d)" % _ON_MIN[k] if k in _ON_MIN else "")
        else:
            why = None
        if why:
            raise Refused("%s must be %s, got %s" % (k, why, json.dumps(v)))


def verify(msg, thing):
    """(counter, settings) of set command `msg` (b"S" + body + signature) if it may be applied."""
    n = len(msg) - 1 - _SIG
    if n < 18 or n > _BODY_MAX or msg[1:5] != MAGIC:
        raise Refused("malformed config command (%d bytes): want S, WCF1, a body of at most %d bytes and "
                      "an RSA-3072 signature" % (len(msg), _BODY_MAX))
    body = memoryview(msg)[1:1 + n]
    mod, e = _key(bytes(body[4:12]))
    ctr = int.from_bytes(body[12:16], "big")
    t = body[16]
    if 17 + t > n:
        raise Refused("malformed config command: the thing name runs past the body")
    target = bytes(body[17:17 + t])
    if target != thing.encode():
        raise Refused("wrong target: the command is for %r, this device is %r" % (target.decode(), thing))
    have = _counter()
    if ctr == have:
        raise Refused("counter %d is not newer than the applied %d (replay)" % (ctr, have))
    if ctr < have:
        raise Refused("older command: counter %d is lower than the applied %d" % (ctr, have))
    import gc
    gc.collect()   # the verify is the peak: its code and big numbers need room in one piece
    import hashlib
    import rsapss
    try:
        rsapss.verify(mod, memoryview(msg)[1 + n:], hashlib.sha256(body).digest(), e)
    except ValueError as x:
        raise Refused("bad signature: the command was altered or not signed by that key (%s)" % x.args[0][8:])
    finally:
        mod = None
        core.unload(("rsapss",))
    try:
        settings = json.loads(bytes(body[17 + t:]))
    except ValueError:
        raise Refused("settings are not valid JSON")
    check(settings)
    return ctr, settings


def stored():
    """The allowed settings as /config.json holds them (defaults for those it leaves out)."""
    with open(CONFIG) as f:
        cfg = json.load(f)
    from firmware.config import DEFAULTS
    out = {}
    for k in SETTINGS:
        out[k] = cfg.get(k, DEFAULTS[k])
    return out


def apply(cfg, ctr, settings):
    """Persist `settings` (counter first, then /config.json) and put the "now" ones in force in the
    session's config `cfg`; returns the keys that wait for the next boot."""
    with open(CONFIG) as f:
        full = json.load(f)
    full.update(settings)
    core.replace(COUNTER, str(ctr))
    core.replace(CONFIG, json.dumps(full))
    wait = cfg.get("at_boot") or []
    for k, v in settings.items():
        if SETTINGS[k][2] == "now":
            cfg[k] = v
        elif k not in wait:
            wait.append(k)
    if wait:
        cfg["at_boot"] = wait   # session memory only: after the next boot they are in force
    return wait


def answer(dev, msg):
    """The answer to config command `msg` (a dict); writes only for an accepted set."""
    cfg = dev.cfg
    if msg == b"G":
        return {"step": "settings", "counter": _counter(), "settings": stored(), "at_boot": cfg.get("at_boot", [])}
    if msg[0] != 0x53:   # S
        raise Refused("not a config command: want G (get) or S (set)")
    ctr, settings = verify(msg, dev.thing)
    wait = apply(cfg, ctr, settings)
    if "metrics_s" in settings:
        import time
        dev.vit[2] = time.ticks_ms()   # in force at once: a report at the next reading, then at the new pace
    eventlog.info("config", "settings changed by command %d: %s" % (ctr, ", ".join(sorted(settings))))
    return {"step": "applied", "counter": ctr, "settings": stored(), "at_boot": wait}


def handle(dev, msg):
    """Answer config command `msg` on the device's config topic, then let this code go."""
    import gc
    gc.collect()   # what receiving the command left (a session's heap is fragmented; 64 KiB has little slack)
    try:
        try:
            d = answer(dev, msg)
        except Refused as e:
            d = {"step": "refused", "reason": e.args[0]}
            from firmware import refusal
            refusal.note("config", "config refused: " + e.args[0])
        except Exception as e:   # a file that could not be read or written: nothing was applied
            d = {"step": "failed", "reason": core.describe(e)}
        if dev.client is not None:
            dev.client.publish(dev.ota_topic[:-3] + "config", json.dumps(d), qos=1)
    finally:
        core.unload(("firmware.devconfig", "firmware.config", "rsapss"))
