# The metrics report (docs/device.md, "The metrics report"): the device's vitals in one compact
# JSON object on dt/<app>/<thing>/metrics, QoS 0, not retained, every metrics_s seconds.
#
# The session loop (firmware/device.py) keeps what only it sees in one short list (Device.vit:
# readings kept, the lowest heap free, when the next report is due, this module's state), the
# MQTT client counts its traffic and its connects (MQTTClient.io, lib/mqttconn.py); everything
# else, every word of the report and the way a connect failure is named, is here, loaded only to
# build and publish one report and unloaded when send() returns (with the hal's boot-time part it
# asks for the reset cause at a boot's first check, and on a board for the RSSI and temperature). Nothing here is resident: every byte in device.py is heap for life.
#
# Boots are counted on flash (STATE): a boot is counted at its first check (the first reading
# after its first connect; a boot that never gets there is not counted), and the count is reset
# once a report with it was handed to the client. A wake from deep sleep is not a boot here: a
# duty-cycled board wakes by design, and "boots" is what a reboot loop shows in. STATE also
# holds the Unix time of the last report, so a duty-cycled board that sleeps between readings
# reports at a wake only if metrics_s has passed since the last report (its RTC keeps the time
# through deep sleep).
# Must not: keep anything loaded, or raise into the loop for anything but a lost session
# (the loop ignores a failed report: the next one holds the totals).
import gc
import json
import time

import mqtt
from micropython import const

from firmware import core, eventlog, hal

STATE = "/state/metrics"   # "<boots since the last report> <Unix time of the last report>"
_EAI_MAX = const(300)      # getaddrinfo's codes are small negatives (-2, -3, -202 ...), mbedTLS's below -4096


def _reason(k):
    """The short reason of a connect failure the client counted under `k`: an OSError's errno (the
    unix port's getaddrinfo puts a string there), else the error's class."""
    if k is MemoryError or k == 12:                 # ENOMEM
        return "memory"
    if type(k) is str:
        return "dns" if "addrinfo" in k else "other"
    if type(k) is int:
        if k == 111:                                # ECONNREFUSED
            return "refused"
        if k in (11, 110, 116):                     # EAGAIN, ETIMEDOUT (lwIP and Linux numbers)
            return "timeout"
        if k == 104 or k == 32 or k < -4096:        # reset or broken pipe in the handshake, mbedTLS
            return "tls"
        return "dns" if -_EAI_MAX < k < 0 else "other"
    if k is mqtt.MQTTConnectError:
        return "refused"
    if k is mqtt.MQTTTimeoutError:
        return "timeout"
    return "tls" if k is ValueError else "other"    # ValueError: mbedTLS's certificate verdict


def _radio():
    """(RSSI in dBm, chip temperature in C) on a board (its hal's boot-time part); the twin has
    no radio and no chip (None)."""
    if hal.PLATFORM != "esp32":
        return None, None
    from firmware.hal import esp32boot
    return esp32boot.vitals()


def _first(dev, m):
    """This boot's first check: the boot is counted on flash (not a wake from deep sleep).
    Returns the report's state for the rest of the boot, [reports so far, Unix time of the boot,
    oldest log segment then, boots since the last report, the reset cause's name], and whether
    a report is due now."""
    hb = hal.boot()                                 # the hal's boot-time part, for the reset cause
    rc = hb.RESET_NAMES.get(hb.reset_cause(), "?")
    try:
        with open(STATE) as f:
            b, last = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        b, last = 0, 0                              # none yet (or unreadable): due now
    if rc != "deep-sleep":
        b += 1
    now = int(hal.unix_time())
    st = eventlog.store()
    s = [0, now - time.ticks_diff(time.ticks_ms(), eventlog._t0) // 1000,
         st._segs[0] if st is not None and st._segs else 0, b, rc]   # _segs: [segno, first seq, ...]
    core.replace(STATE, "%d %d" % (b, last))       # counted, whether a report goes out now or not
    ago = now - last
    if 0 <= ago < m:
        # Not due (a wake soon after the last report): the next check is metrics_s after the
        # last report, in this boot's ticks.
        dev.vit[2] = time.ticks_add(time.ticks_ms(), (m - ago) * 1000)
        return s, False
    return s, True


def report(dev, s, hf):
    """The report (a str) of the device `dev`, with the report's state `s` (see _first)."""
    v = dev.vit
    io = dev.mqtt.io
    cf = {}
    for k, n in io[6].items():
        r = _reason(k)
        cf[r] = cf.get(r, 0) + n
    st = eventlog.store()
    ob = dev.outbox
    rssi, temp = _radio()
    return ('{"v":1,"seq":%d,"up":%d,"rc":"%s","boots":%d,"hf":%d,"hl":%d,"tx":%d,"txb":%d,"rx":%d,"rxb":%d,'
            '"ca":%d,"cf":%s,"sl":%d,"kept":%d,"wait":%d,"drop":%d,"ota":"%s","rssi":%s,"temp":%s}') % (
        s[0] + 1, int(hal.unix_time()) - s[1], s[4], s[3], hf, min(v[1], hf), io[0], io[1], io[2], io[3],
        io[4], json.dumps(cf).replace(" ", ""), max(io[5] - 1, 0), v[0], 1 if ob is not None and ob.waiting else 0,
        (st._segs[0] - s[2]) if st is not None and st._segs else 0,
        "transfer" if dev.ota is not None else ("trial" if dev.selftest is not None else "idle"),
        json.dumps(rssi), json.dumps(None if temp is None else round(temp, 1)))


def send(dev):
    """Publish a report if one is due (the loop calls this at a reading once v[2] passed, with a
    session up), then let this code go. Raises only what publishing raised."""
    v = dev.vit
    m = dev.cfg["metrics_s"]
    v[2] = time.ticks_add(time.ticks_ms(), m * 1000)   # first: a report that fails is tried a period later
    try:
        s = v[3]
        if s is None:
            s, due = _first(dev, m)
            v[3] = s
            if not due:
                return
        gc.collect()
        hf = gc.mem_free()
        msg = report(dev, s, hf)
        dev.client.publish(dev.ota_topic[:-3] + "metrics", msg)
        s[0] += 1
        s[3] = 0
        v[1] = hf
        msg = None
        core.replace(STATE, "0 %d" % int(hal.unix_time()))
    finally:
        core.unload(("firmware.metrics", "firmware.hal.unixboot", "firmware.hal.esp32boot"))
