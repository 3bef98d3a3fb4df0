# The board's hal: MicroPython's ESP32 port (ESP32_GENERIC, OTA variant).
#
# Same names as firmware/hal/unix.py (the twin). Everything called here exists in
# micropython-esp32-stubs 1.29 with these arguments: `make test` type-checks this
# file against them (tests/host/test_stubs.py), our only proof without a board.
#
# - Wi-Fi: station mode, credentials from config["wifi"] = {"ssid", "password"};
#   the password is never logged. Each attempt is bounded (wifi.timeout_ms), a
#   failed one is logged with its reason and retried after a capped, jittered
#   backoff; it never gives up (the device has nothing to do offline at boot).
# - Clock: ntptime.settime() before any TLS (certificate dates need it); a failure
#   is logged and retried the same way. After a deep-sleep wake the RTC kept time.
# - Watchdog: machine.WDT cannot be stopped once started; long waits here feed it.
# - Sensors: the chip's temperature, ADC channels and I2C drivers named in the
#   config (docs/board.md, "9. Sensors"). A sensor that cannot be set up yields a
#   source that raises, so its value is null and the others go on.
# - Log key: in NVS (firmware/hal/common.py). A filesystem image cannot carry NVS,
#   so `warden deploy` may leave the key in /identity/log_key: the first boot moves
#   it into NVS and deletes the file.
import os

import esp32
import machine
from micropython import const

from firmware.hal.common import LOG_KEY, LOG_KEY_NS, RESET_NAMES, unix_time  # noqa: F401
from firmware.hal.common import log_key as _nvs_log_key

PLATFORM = "esp32"
RESET_EXIT = const(75)  # the twin's reset exit code; on a board machine.reset() reboots

LOG_KEY_FILE = "/identity/log_key"
MAINTENANCE_FILE = "/maintenance"

_wdt = None


def boot():
    """The boot-time part of the hal. On the board it is this module (its network and clock
    code, firmware/hal/esp32boot.py, is loaded per call); the twin's is a separate module."""
    import sys
    return sys.modules[__name__]


def reset():
    machine.reset()


def reset_cause():
    """machine.reset_cause(): 1 power-on, 2 hard, 3 watchdog, 4 deep-sleep, 5 soft."""
    return machine.reset_cause()


def unique_id():
    """The chip's MAC address: public, never a secret."""
    return machine.unique_id()


# -- watchdog and sleep --------------------------------------------------------------------
def watchdog_start(ms):
    """Start the hardware watchdog (at least 1 s on the ESP32); True if it runs.

    It cannot be stopped, and at the REPL nobody feeds it: while /maintenance exists
    (`warden deploy` creates it, then removes it when done) it is not started.
    """
    global _wdt
    if _wdt is None:
        try:
            os.stat(MAINTENANCE_FILE)
            return False
        except OSError:
            pass
        _wdt = machine.WDT(timeout=ms if ms > 1000 else 1000)
    return True


def watchdog_feed():
    if _wdt is not None:
        _wdt.feed()


def deep_sleep(ms):
    """Power down for `ms`; the board then boots again with reset cause 4 (deep-sleep)."""
    machine.deepsleep(ms)


# -- network and clock: boot-only code in firmware/hal/esp32boot.py, loaded for the call ---------
def _boot():
    from firmware.hal import esp32boot
    return esp32boot


def _unload():
    # (from the package too: `from firmware.hal import esp32boot` bound it there)
    from firmware import core
    core.unload(("firmware.hal.esp32boot",))


def connect_network(config, log):
    """Join the Wi-Fi network of config["wifi"]; retries (with backoff) until connected."""
    try:
        return _boot().connect_network(config, log)
    finally:
        _unload()


def sync_clock(config, log):
    """Set the RTC from NTP before any TLS; retries (with backoff) until it is set."""
    try:
        return _boot().sync_clock(config, log)
    finally:
        _unload()


# -- NVS: log key --------------------------------------------------------------------------
def log_key():
    """The 32-byte log key from NVS, or None; a key deployed as /identity/log_key is moved
    into NVS first (the file is removed only once NVS holds it: a power cut re-imports)."""
    try:
        with open(LOG_KEY_FILE, "rb") as f:
            key = f.read()
        if len(key) == 32:
            nvs = esp32.NVS(LOG_KEY_NS)
            nvs.set_blob(LOG_KEY, key)
            nvs.commit()
            if _nvs_log_key() == key:
                os.remove(LOG_KEY_FILE)
    except OSError:
        pass  # no key file: the usual case after the first boot
    return _nvs_log_key()


# -- sensors -------------------------------------------------------------------------------
_ATTN = {0: machine.ADC.ATTN_0DB, 2: machine.ADC.ATTN_2_5DB, 6: machine.ADC.ATTN_6DB, 11: machine.ADC.ATTN_11DB}


def _broken(e):
    def read(seq):
        raise e
    return read


def _chip_temperature():
    mcu = getattr(esp32, "mcu_temperature", None)  # S2, S3, C3, C6: degrees Celsius
    if mcu is not None:
        return lambda seq: mcu()
    # The original ESP32 has only raw_temperature(): degrees Fahrenheit, uncalibrated.
    return lambda seq: (esp32.raw_temperature() - 32) / 1.8


def _adc(spec):
    """A voltage (V) from an ADC pin, calibrated by read_uv(), then `scale` and `offset` applied."""
    atten = _ATTN.get(spec.get("atten_db", 11))
    if atten is None:
        raise ValueError("adc atten_db must be 0, 2, 6 or 11")
    adc = machine.ADC(machine.Pin(spec["pin"]), atten=atten)
    scale = spec.get("scale", 1.0)
    offset = spec.get("offset", 0.0)
    return lambda seq: adc.read_uv() * scale / 1000000 + offset


def _i2c(spec, buses):
    """A driver module named by the config reads an I2C sensor: driver.make(i2c, spec) -> f(seq)."""
    key = (spec.get("bus", 0), spec["scl"], spec["sda"], spec.get("freq", 100000))
    bus = buses.get(key)
    if bus is None:
        bus = machine.I2C(key[0], scl=machine.Pin(key[1]), sda=machine.Pin(key[2]), freq=key[3])
        buses[key] = bus
    name = spec["driver"]
    mod = __import__(name)
    for part in name.split(".")[1:]:
        mod = getattr(mod, part)
    return mod.make(bus, spec)


def sensor_sources(config):
    """Reading functions f(seq) -> number for each configured sensor.

    Kinds: chip_temperature; adc {pin, atten_db, scale, offset}; i2c {driver, scl, sda,
    bus, freq, ...}. See docs/board.md, "9. Sensors".
    """
    out = {}
    buses = {}
    for name, spec in config["sensors"].items():
        try:
            kind = spec.get("kind")
            if kind == "chip_temperature":
                out[name] = _chip_temperature()
            elif kind == "adc":
                out[name] = _adc(spec)
            elif kind == "i2c":
                out[name] = _i2c(spec, buses)
            else:
                raise ValueError("unknown sensor kind %r on esp32 (chip_temperature, adc, i2c)" % kind)
        except Exception as e:
            out[name] = _broken(e)
    return out
