# After an update's reset: is the new image the one running, confirm it (and only then
# persist its security counter) or roll it back; and the OTA facts a status report needs.
#
# The app calls, once per boot after its self-test (broker reached, a reading acknowledged):
#   confirm()          passed: marks the running firmware and app valid (harmless when they
#                      already are), persists the counter and version of an update that
#                      awaited this, then records "confirmed"; returns that update or None
#   rollback(reason)   failed: records "rolled back" and points back at the previous image;
#                      the caller resets (hal.reset())
# pending() names the update awaiting the self-test; an installed update that is no longer
# running (reset before it confirmed itself) is recorded as rolled back there.
#
# Also the one home of the OTA state files that the engine (firmware/ota.py), its checks
# and sinks share with the after-reset code, and of reading them:
#   /state/ota.json     installed [counter, version] per kind: the anti-replay state
#   /state/ota.pending  installed, awaiting its self-test
#   /state/ota.last     the last outcome
#   /state/slot.<slot>.json   what an update installed in that slot (kind, version, counter,
#                       size, sha): what a signed rollback may go back to (firmware/ota_rollback.py)
# each replaced whole by firmware/core.py's replace() (the engine's own files, ota.job and
# ota.pos, are firmware/ota.py's). Must not: read a corrupt ota.json as "nothing installed"
# (that would let every old update in again).
# Small on purpose: it is loaded at every boot, to learn what to confirm (every name it
# holds is interned at boot for the device's life).
import json
import os
import sys

from firmware.core import replace

INSTALLED = "/state/ota.json"
PENDING = "/state/ota.pending"
LAST = "/state/ota.last"
SLOT = "/state/slot.%s.json"


def get(path):
    """The JSON object in `path`; None if there is none or it does not parse."""
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def rm(path):
    try:
        os.remove(path)
    except OSError:
        pass


def counters():
    """{kind: [counter, version]} installed ({} before the first update). ValueError if the file
    is corrupt: the engine then refuses every update until the device is re-provisioned."""
    try:
        with open(INSTALLED) as f:
            return json.loads(f.read())
    except OSError:
        return {}
    except ValueError:
        raise ValueError("security state %s is corrupt: updates refused (re-provision)" % INSTALLED)


def installed(kind):
    """(counter, version) installed for `kind`; (0, None) before its first update."""
    c = counters().get(kind) or (0, None)
    return c[0], c[1]


def record(slot):
    """What an update installed in `slot` ({kind, version, counter, size, sha}), or None."""
    return get(SLOT % slot)


def running(kind):
    """The slot `kind` runs from: an OTA partition label, or an app slot ("-": the factory app)."""
    if kind == "firmware":
        import esp32
        return esp32.Partition(esp32.Partition.RUNNING).info()[4]
    from firmware import slots
    return slots.active()


def _swapped():
    """An update was installed in this boot (it has not run yet)."""
    m = sys.modules.get("firmware.ota")
    return bool(m and m._swapped)


def last():
    """The last outcome: {kind, version, counter, outcome, reason} or None."""
    return get(LAST)


def _outcome(p, outcome, reason=None):
    replace(LAST, json.dumps({"kind": p["kind"], "version": p["version"], "counter": p["counter"],
                              "outcome": outcome, "reason": reason}))


def pending():
    """The installed update awaiting its self-test if it is the one running, else None."""
    p = get(PENDING)
    if not p or _swapped():
        return None
    if running(p["kind"]) == p["slot"]:
        return p
    _outcome(p, "rolled back", "the new %s was not confirmed before a reset" % p["kind"])
    rm(PENDING)
    return None


def confirm():
    """The self-test passed: keep what runs; returns the update this confirmed, or None."""
    if _swapped():
        return None  # the new image has not run yet: confirming now would disable its rollback
    import esp32
    try:
        esp32.Partition.mark_app_valid_cancel_rollback()
    except OSError as e:
        if e.args[0] != 1:  # 1 (ESP_FAIL): blank otadata, a board flashed by esptool
            raise
    from firmware import slots
    slots.confirm()
    p = pending()
    if not p:
        return None
    try:
        d = counters()
        d[p["kind"]] = [p["counter"], p["version"]]
        replace(INSTALLED, json.dumps(d))  # the anti-replay state first, then the report
    except ValueError:
        pass  # corrupt: left as it is (updates stay refused); rewriting it would forget the other kinds
    _outcome(p, "confirmed")
    rm(PENDING)
    return p


def rollback(reason):
    """The self-test failed: the previous image runs after the next reset; returns the update
    rolled back, or None if none awaited its self-test."""
    p = pending()
    if not p:
        return None
    _outcome(p, "rolled back", reason)
    rm(PENDING)
    if p["kind"] == "app":
        from firmware import slots
        slots.rollback()
    else:
        import esp32
        try:
            esp32.Partition(p["prev"]).set_boot()
        except OSError:
            pass  # the bootloader still rolls back an image that never confirmed itself
    return p


def status():
    """Per kind the installed counter, version and running slot; the pending update and the
    last outcome (for `warden ota status`)."""
    out = {"pending": pending(), "last": last(), "slots": {}}
    for n in os.listdir("/state"):
        if n.startswith("slot.") and n.endswith(".json"):
            out["slots"][n[5:-5]] = get("/state/" + n)
    for k in ("app", "firmware"):
        try:
            c, v = installed(k)
        except ValueError as e:
            c, v = None, None
            out["error"] = e.args[0]
        out[k] = {"counter": c, "version": v, "slot": running(k)}
    return out
