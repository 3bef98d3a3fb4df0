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
# Small on purpose: it is loaded at every boot that has something to confirm.
import json
import os
import sys

INSTALLED = "/state/ota.json"
PENDING = "/state/ota.pending"
LAST = "/state/ota.last"


def _get(path):
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def _put(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(obj))
    os.rename(tmp, path)


def _rm(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _swapped():
    """An update was installed in this boot (it has not run yet)."""
    m = sys.modules.get("firmware.ota")
    return bool(m and m._swapped)


def running(kind):
    """The slot `kind` runs from: an OTA partition label, or an app slot ("-": the factory app)."""
    if kind == "firmware":
        import esp32
        return esp32.Partition(esp32.Partition.RUNNING).info()[4]
    from firmware import slots
    return slots.active()


def installed(kind):
    """(counter, version) installed for `kind`; (0, None) before the first update."""
    c = (_get(INSTALLED) or {}).get(kind) or (0, None)
    return c[0], c[1]


def last():
    """The last outcome: {kind, version, counter, outcome, reason} or None."""
    return _get(LAST)


def _outcome(p, outcome, reason=None):
    _put(LAST, {"kind": p["kind"], "version": p["version"], "counter": p["counter"],
                "outcome": outcome, "reason": reason})


def pending():
    """The installed update awaiting its self-test if it is the one running, else None."""
    p = _get(PENDING)
    if not p or _swapped():
        return None
    if running(p["kind"]) == p["slot"]:
        return p
    _outcome(p, "rolled back", "the new %s was not confirmed before a reset" % p["kind"])
    _rm(PENDING)
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
    d = _get(INSTALLED) or {}
    d[p["kind"]] = [p["counter"], p["version"]]
    _put(INSTALLED, d)  # the anti-replay state first, then the report
    _outcome(p, "confirmed")
    _rm(PENDING)
    return p


def rollback(reason):
    """The self-test failed: the previous image runs after the next reset; returns the update
    rolled back, or None if none awaited its self-test."""
    p = pending()
    if not p:
        return None
    _outcome(p, "rolled back", reason)
    _rm(PENDING)
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
    out = {"pending": pending(), "last": last()}
    for k in ("app", "firmware"):
        c, v = installed(k)
        out[k] = {"counter": c, "version": v, "slot": running(k)}
    return out
