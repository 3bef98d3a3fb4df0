# Boot-only part of the board's hal (firmware/hal/esp32.py loads it for one call and
# drops it again, so its bytecode costs no heap while the device runs): Wi-Fi station
# connect and the NTP clock, each retried with a capped, jittered backoff.
#
# The Wi-Fi password is never logged; the SSID is not a secret.
import os
import time

import machine
from micropython import const

from firmware.hal.esp32 import reset_cause, unix_time, watchdog_feed

_CLOCK_SANE = const(1704067200)  # 2024-01-01: an RTC before this was never set
_WAIT_SLICE_MS = const(500)      # longest sleep between two watchdog feeds


def _wait(ms):
    """Sleep `ms`, feeding the watchdog."""
    end = time.ticks_add(time.ticks_ms(), ms)
    while True:
        watchdog_feed()
        left = time.ticks_diff(end, time.ticks_ms())
        if left <= 0:
            return
        time.sleep_ms(left if left < _WAIT_SLICE_MS else _WAIT_SLICE_MS)


def _delay(n, base, cap):
    """Full-jitter backoff: a random delay in [0, min(cap, base * 2^n)] ms."""
    c = base << (n if n < 16 else 16)
    c = c if c < cap else cap
    return int.from_bytes(os.urandom(2), "big") * c // 0xFFFF


def _reason(e):
    return "%s: %s" % (type(e).__name__, " ".join(str(e).split()))


_WIFI_STATUS = {
    200: "beacon timeout (the access point went away)",
    201: "no access point with that SSID",
    202: "wrong password",
    203: "association failed",
    204: "handshake timeout (often a wrong password)",
    210: "no access point with a compatible security mode",
    211: "no access point within the auth mode threshold",
    212: "no access point within the RSSI threshold",
}


def connect_network(config, log):
    """Join the Wi-Fi network of config["wifi"]; retries until connected."""
    import network
    w = config.get("wifi")
    if not isinstance(w, dict) or not isinstance(w.get("ssid"), str) or not w["ssid"]:
        # Retrying cannot help: say what is wrong once a minute until the board is redeployed.
        while True:
            log.error("wifi", 'config: wifi must be {"ssid": ..., "password": ...}: '
                      "redeploy with `warden deploy THING --wifi-ssid ...`")
            _wait(60000)
    ssid = w["ssid"]
    password = w.get("password") or ""
    timeout = w.get("timeout_ms", 20000)
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected():
        return True
    try:
        network.hostname(config["thing"][:32])
    except Exception:
        pass  # a cosmetic nicety: the DHCP host name
    n = 0
    while True:
        t0 = time.ticks_ms()
        why = "timed out after %d ms" % timeout
        try:
            wlan.connect(ssid, password)
            while not wlan.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < timeout:
                st = wlan.status()
                if st in _WIFI_STATUS:
                    why = _WIFI_STATUS[st]
                    if st == 201 or st == 202:
                        break  # definite: no point waiting out the timeout
                _wait(100)
        except OSError as e:
            why = _reason(e)
        if wlan.isconnected():
            log.info("wifi", "connected to %r in %d ms, address %s" % (
                ssid, time.ticks_diff(time.ticks_ms(), t0), wlan.ifconfig()[0]))
            return True
        try:
            wlan.disconnect()
        except OSError:
            pass
        delay = _delay(n, w.get("backoff_ms", 1000), w.get("backoff_max_ms", 60000))
        n += 1
        log.error("wifi", "connect to %r failed: %s; attempt %d, retry in %d ms" % (ssid, why, n, delay))
        _wait(delay)


def sync_clock(config, log):
    """Set the RTC from NTP (config "ntp_host", default pool.ntp.org); retries until it is set.

    TLS checks certificate dates, so nothing connects before this returns.
    """
    if reset_cause() == machine.DEEPSLEEP_RESET and unix_time() > _CLOCK_SANE:
        return True  # the RTC runs through deep sleep: no NTP round trip on a duty-cycle wake
    import ntptime
    host = config.get("ntp_host") or "pool.ntp.org"
    ntptime.host = host
    ntptime.timeout = 5
    n = 0
    while True:
        try:
            ntptime.settime()
            if unix_time() > _CLOCK_SANE:
                log.info("clock", "set from %s" % host)
                return True
            why = "the server's time is before 2024"
        except Exception as e:
            why = _reason(e)
        delay = _delay(n, config.get("ntp_backoff_ms", 1000), 60000)
        n += 1
        log.error("clock", "NTP via %s failed: %s; TLS needs the time, retry in %d ms" % (host, why, delay))
        _wait(delay)


def vitals():
    """(RSSI of the access point in dBm, the chip's temperature in C) for the metrics report
    (firmware/metrics.py), each None when it cannot be read (off the network, no sensor)."""
    import esp32
    import network
    try:
        rssi = network.WLAN(network.STA_IF).status("rssi")
    except Exception:   # OSError off the network
        rssi = None
    try:
        mcu = getattr(esp32, "mcu_temperature", None)  # S2, S3, C3, C6 (as firmware/hal/esp32.py's sensor)
        temp = mcu() if mcu is not None else (esp32.raw_temperature() - 32) / 1.8
    except Exception:
        temp = None
    return rssi, temp
