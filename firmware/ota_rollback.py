# A technician's signed rollback: back to the version in the kind's other slot, with no download.
#
# The request (`R` + an update's head: WUP1, lengths, manifest, signature) names, for the other
# slot, the version, size and SHA-256 that the device recorded when it installed that version
# there (firmware/ota_state.py: /state/slot.<slot>.json), with a counter newer than the installed
# one. It is checked as an update's head is (size bound, trusted key, RSA-PSS signature, target,
# kind, counter: firmware/ota_check.py); then the slot must still hold exactly that: its record
# matches the manifest, an app slot's files are there, a firmware partition's bytes hash to it.
# Then the swap an update makes: the device resets into it, runs its self-test, and confirms it
# (persisting the new counter) or rolls back to where it was.
# Loaded by firmware/otalink.py for the request and unloaded with the OTA code.
# Must not: swap to anything the signed manifest does not name, or to a slot without a record.
import json
import os
from binascii import hexlify

from firmware import core, ota
from firmware.ota import OTAError
from firmware.ota_state import PENDING, record, running


def _other(kind, now):
    """The slot the rollback goes to: the other app slot, or the firmware's next OTA partition."""
    if kind == "firmware":
        import esp32
        return esp32.Partition(esp32.Partition.RUNNING).get_next_update().info()[4]
    if now == "a":
        return "b"
    if now == "b":
        return "a"
    return "a" if record("a") else "b"   # from the factory app: the slot an update last left


def _firmware_hash(label, size):
    import esp32
    from hashlib import sha256
    part = esp32.Partition.find(esp32.Partition.TYPE_APP, label=label)[0]
    h = sha256()
    buf = bytearray(4096)
    for off in range(0, size, 4096):
        n = min(4096, size - off)
        part.readblocks(off // 4096, buf)
        h.update(memoryview(buf)[:n])
    return h.digest()


def head(msg):
    """(manifest, signature) of a rollback request; OTAError if it is malformed."""
    import struct
    if len(msg) < 9 or msg[1:5] != b"WUP1":
        raise OTAError("malformed rollback request")
    m, s = struct.unpack_from(">HH", msg, 5)
    if m > 512 or 9 + m + s > len(msg):
        raise OTAError("malformed rollback request (manifest %d, signature %d bytes)" % (m, s))
    mv = memoryview(msg)
    return mv[9:9 + m], mv[9 + m:9 + m + s]


def target(f):
    """(kind, the slot running, the slot to go back to) for manifest fields `f`, if the device
    recorded there the version, size and SHA-256 the manifest names; OTAError otherwise."""
    kind = f[2]
    if kind not in ("app", "firmware"):
        raise OTAError("a rollback is for app or firmware, not %s" % kind)
    now = running(kind)
    slot = _other(kind, now)
    r = record(slot)
    if not r or r.get("kind") != kind:
        raise OTAError("nothing to roll back to: the other %s slot (%s) holds no installed update" % (kind, slot))
    if r["version"] != f[4] or r["size"] != f[6] or r["sha"] != hexlify(f[7]).decode():
        raise OTAError("the other %s slot (%s) holds %s, not the %s this rollback names" % (
            kind, slot, r["version"], f[4]))
    return kind, now, slot


def run(msg, tgt):
    """Check the rollback request `msg` and swap; returns what will run after the reset (as
    Updater.finish does). OTAError(reason) if refused: nothing changed."""
    manifest, sig = head(msg)
    f = ota.check(manifest, sig, tgt)   # as an update's head
    if ota._swapped:
        raise OTAError("an update was just installed: reset to run it first")
    kind, now, slot = target(f)
    if kind == "app":
        try:
            os.stat("/app/%s/firmware" % slot)
        except OSError:
            raise OTAError("nothing to roll back to: app slot %s is empty" % slot)
    elif _firmware_hash(slot, f[6]) != f[7]:
        raise OTAError("nothing valid to roll back to: partition %s no longer holds firmware %s" % (slot, f[4]))
    p = {"kind": kind, "version": f[4], "counter": f[5], "slot": slot, "prev": now}
    core.replace(PENDING, json.dumps(p))
    try:
        if kind == "app":
            from firmware import slots
            slots.activate(slot)
        else:
            import esp32
            esp32.Partition.find(esp32.Partition.TYPE_APP, label=slot)[0].set_boot()
    except Exception as x:
        from firmware.ota_state import rm
        rm(PENDING)
        raise OTAError("rollback failed: %r" % x)
    ota._swapped = True
    return p
