# OTA commands and the self-test of an update, for the session loop (firmware/device.py).
#
# Loaded only while needed: for an OTA conversation (from its first request on;
# firmware/otalink.py does the talking), for the self-test verdict of an update on
# trial, and to publish the last OTA outcome once connected. When none of that is
# pending it unloads itself (every loaded module costs the device heap for as long
# as it stays).
#
# What happens on each failure:
# - the outcome report cannot be published: the session is dropped (device.lost) and
#   the report is published after the reconnect;
# - the self-test fails (no reading acknowledged in time): the update is rolled back
#   (firmware/ota_state.py) and the device resets into the previous image;
# - an OTA request is refused: firmware/otalink.py answers `rejected` with the reason, and
#   the OTA code is unloaded again;
# - the session is lost during a transfer (device.lost calls drop()): the transfer stops with
#   its files kept, the OTA code is unloaded so the reconnect finds the heap, and the next
#   push resumes from the last durable offset.
import json
import time

from firmware import core, eventlog, hal
from firmware.core import describe

# The OTA conversation's modules (firmware/core.py, "Code lifetimes"), and with this one,
# all of the OTA code.
TRANSFER = ("firmware.otalink", "firmware.otamode", "firmware.ota", "firmware.ota_check", "firmware.ota_fw",
            "firmware.ota_app", "firmware.ota_keys", "firmware.ota_rollback", "firmware.ota_state", "firmware.slots",
            "rsapss")
OTA = TRANSFER + ("firmware.otacmd",)


def _done(dev):
    # Nothing more for this module to do: let the OTA code go (this module with it).
    if dev.ota is None and dev.report is None and dev.selftest is None:
        core.unload(OTA)


def say(dev, d, retain=False):
    """Publish `d` on the device's ota topic (retained: an outcome; not: a live answer)."""
    dev.client.publish(dev.ota_topic, json.dumps(d), retain=retain, qos=1 if retain else 0)


def handle(dev, msg):
    """Handle an OTA request (firmware/device.py took it off dev.pending). An update's or a
    rollback's head sends the device to update mode (firmware/otamode.py): stored, answered
    `restarting`, reset."""
    if msg[0] in b"BR" and dev.ota is None:
        for m in dev.pending:
            if m[0] == b"ota" and m[1][0] == 0x41:   # A: the technician gave up on it already (queued while it slept)
                dev.pending.remove(m)
                eventlog.info("ota", "an update's head and its abort: nothing to do")
                say(dev, {"step": "aborted"})
                _done(dev)
                return
        if dev.selftest is not None:
            # a reset now would roll back the update on trial: its verdict comes first
            say(dev, {"step": "rejected", "reason": "an update is on trial: wait for its self-test verdict"})
            _done(dev)
            return
        try:
            from firmware import otamode
            otamode.precheck(msg, "esp32/" + dev.cfg["app"])
        except MemoryError:
            pass    # update mode checks it all
        except Exception as e:   # OTAError: refused here, no restart
            core.unload(TRANSFER)
            why = e.args[0] if e.args else repr(e)
            say(dev, {"step": "rejected", "reason": why})
            from firmware import refusal
            refusal.note("ota", "update refused: %s" % why, "ERROR")
            _done(dev)
            return
        # From here on it always ends in a reset: into update mode, or, if even storing the head
        # failed for lack of heap, a plain one (a fresh heap; the technician's push times out and
        # is run again). A session never goes on with the heap the OTA code left.
        try:
            core.replace("/state/ota.mode", bytes(msg))   # firmware/otamode.py MODE
            eventlog.info("ota", "an update's head: restarting into update mode")
            say(dev, {"step": "restarting"})
        except Exception:
            pass
        try:
            dev.close("ota-update-mode")
        finally:
            hal.reset()
    if dev.ota is None:
        from firmware.otalink import OtaLink
        dev.ota = OtaLink("esp32/" + dev.cfg["app"], lambda d: say(dev, d))
    dev.ota.handle(msg)
    if dev.ota.installed:
        dev.close("ota-reset")
        hal.reset()
    if dev.ota.updater is None:
        drop(dev)  # no transfer under way (refused, aborted, a status answered): let its code go


def idle(dev):
    """Drop the OTA conversation if no request came for ota_idle_ms: its technician is gone.
    The transfer's files stay, so a later push resumes it."""
    ms = dev.cfg["ota_idle_ms"]
    if time.ticks_diff(time.ticks_ms(), dev.ota.at) > ms:
        drop(dev, "no OTA request for %d s" % (ms // 1000))


def drop(dev, why=None):
    """Let the OTA conversation go, and its code with it: after a refusal, or when the session
    is lost (the heap a transfer held is then what a reconnect needs). A transfer under way
    stops with its files kept: the next push resumes it from its last durable offset."""
    link = dev.ota
    dev.ota = None
    if link is not None:
        link.stop(why)
    core.unload(TRANSFER)
    _done(dev)


def report(dev):
    """Publish the last OTA outcome (retained) if the session is up; dropped once sent."""
    if dev.report is not None and dev.client is not None:
        try:
            say(dev, dev.report, retain=True)
            dev.report = None
        except Exception as e:
            dev.lost(describe(e))
    _done(dev)


def passed(dev):
    """The update on trial delivered a reading: confirm it and report `confirmed`."""
    from firmware import ota_state
    p = ota_state.confirm()
    dev.selftest = None
    if p:
        eventlog.info("ota", "self-test passed: %s %s confirmed" % (p["kind"], p["version"]))
        dev.report = {"step": "confirmed", "kind": p["kind"], "version": p["version"], "counter": p["counter"]}
    report(dev)


def failed(dev, reason):
    """The update on trial failed its self-test: roll it back and reset into the previous image."""
    from firmware import ota_state
    p = ota_state.rollback(reason)
    if p:
        eventlog.error("ota", "%s %s rolled back: %s" % (p["kind"], p["version"], reason))
    dev.close("ota-rollback")
    hal.reset()
