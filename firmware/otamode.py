# Update mode: the device receives, checks and installs an update with nothing else loaded.
#
# An update during a session does not fit a board's 64 KiB on top of the session (the readings,
# the outbox, the session loop: docs/heap.md). So a session that gets an update's head (or a
# rollback's) stores it in /state/ota.mode, answers `restarting` and resets; at the next boot
# firmware/app.py finds the file and runs this instead of the session loop: the same boot (config,
# identity, TLS) but for the log store, whose code and buffers are the heap the update needs most
# (events go to the console; the outcome is recorded in ota.last and logged by the app after the
# reset), one MQTT session subscribed to the OTA topic only, and the OTA
# link (firmware/otalink.py) fed the stored head, then every OTA request until the update is
# installed (the device resets into it and the normal app runs its self-test), refused, aborted,
# or silent for ota_idle_ms. No readings are taken meanwhile.
#
# What happens on each failure: the file is removed before anything else, so any failure here
# (a refusal, a lost connection, a MemoryError, a power cut) ends in the normal app at the next
# boot, with the transfer's files kept: a push run again resumes it. Never a boot loop.
# Must not: take readings, or act on anything but OTA requests.
import json
import os
import time

from firmware import eventlog, hal
from firmware.core import describe

MODE = "/state/ota.mode"   # the head that sent the device here (firmware/otacmd.py writes it)


def precheck(msg, target):
    """In the session, before restarting: the checks of an update's (B) or a rollback's (R) head
    that need no heap to speak of (framing, size bound, a trusted key, target, kind, a newer
    counter; a rollback's slot record). Only the RSA signature, the costly one, is left to update
    mode. OTAError(reason) if refused: the device stays in its session."""
    import struct
    from firmware.ota import OTAError
    if msg[0] == 0x52:   # R
        from firmware import ota_rollback
        manifest, sig = ota_rollback.head(msg)
    else:
        if len(msg) < 9 or msg[1:5] != b"WUP1":
            raise OTAError("malformed update head (%d bytes)" % (len(msg) - 1))
        m, s = struct.unpack_from(">HH", msg, 5)
        if m > 512 or 9 + m + s > len(msg):
            raise OTAError("manifest oversized or head malformed (manifest %d, signature %d bytes)" % (m, s))
        manifest, sig = memoryview(msg)[9:9 + m], memoryview(msg)[9 + m:9 + m + s]
    from firmware import ota_check
    f, n, e = ota_check.prepare(manifest, sig)
    del n, e   # the key, for the signature update mode checks
    ota_check.policy(f, target, None)
    if msg[0] == 0x52:
        ota_rollback.target(f)


def run(cfg, ctx, sources, topics, selftest, last):
    """The update mode's whole life (firmware/app.py calls it after boot); ends in a reset."""
    thing, _, status, ota_topic, commands = topics
    try:
        with open(MODE, "rb") as f:
            head = f.read()
        os.remove(MODE)   # first: whatever happens next, the next boot is the normal app's
    except OSError:
        head = None
    eventlog.info("ota", "update mode: %s" % ("receiving" if head else "nothing to receive"))
    try:
        if head:
            _receive(cfg, ctx, thing, status, ota_topic, commands + "ota", head)
    except Exception as e:
        eventlog.error("ota", "update mode ended: %s" % describe(e))
    hal.reset()   # into the update (its self-test is the normal app's), or back to the normal app


def _receive(cfg, ctx, thing, status, ota_topic, cmd, head):
    from mqtt import MQTTClient
    b = cfg["broker"]
    ka = cfg["keepalive"]
    c = MQTTClient(thing, b["host"], b.get("port", 8883), keepalive=ka, ssl=ctx,
                   server_hostname=b.get("hostname", b["host"]), timeout=min(cfg["timeout"], ka / 2), retries=1)
    c.set_last_will(status, '{"state":"offline","reason":"lost"}', retain=True, qos=1)
    waiting = []
    cmd = cmd.encode()
    link = None

    def on_msg(topic, msg):
        # OTA requests only, live, one chunk at a time (as the session loop keeps them)
        if topic == cmd and msg and not c.retained and len(waiting) < 3:
            if msg[0] == 0x43 and waiting and waiting[-1][0] == 0x43:
                if link is not None:
                    link.gap = 1
                return
            waiting.append(msg)
    c.set_callback(on_msg)
    c.connect(clean_session=not cfg["sleep_ms"])   # a sleeper's session, as the session loop keeps it
    c.subscribe(cmd, qos=1)
    c.publish(status, '{"state":"updating"}', retain=True, qos=1)
    from firmware.otalink import OtaLink
    link = OtaLink("esp32/" + cfg["app"], lambda d: c.publish(ota_topic, json.dumps(d), qos=0))
    link.handle(head)
    import gc
    gc.collect()   # what checking the signature left, before the chunks (2 KiB each) come
    idle = cfg["ota_idle_ms"]
    try:
        while link.updater is not None and not link.installed:
            hal.watchdog_feed()
            c.wait_msg(0.05)
            while waiting and not link.installed:
                link.handle(waiting.pop(0))
            if time.ticks_diff(time.ticks_ms(), link.at) > idle:
                link.stop("no OTA request for %d s" % (idle // 1000))
        if link.installed:
            eventlog.info("ota", "update mode: installed %s %s" % (link.installed["kind"], link.installed["version"]))
        c.publish(status, '{"state":"offline","reason":"ota-reset"}', retain=True, qos=1)
        c.disconnect()
    except Exception:
        try:
            c.disconnect()
        except Exception:
            pass
        raise
