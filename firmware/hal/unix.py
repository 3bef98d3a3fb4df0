# The twin's hal: the unix port standing in for an ESP32.
#
# There is no Wi-Fi (the host network is always up), the clock is the host's,
# sensors are simulated deterministically from the reading's sequence number,
# and reset is an exit with RESET_EXIT that the host runner (warden twin run)
# answers by starting the twin again, as a board reboots.
import math
import os
import sys

from micropython import const

from time import time as unix_time  # noqa: F401  the unix port's epoch is 1970

# machine.reset_cause() values (firmware/hal/common.py has the board's copy: the twin
# does not load that module, each module costs the device heap).
RESET_NAMES = {1: "power-on", 2: "hard", 3: "watchdog", 4: "deep-sleep", 5: "soft"}

PLATFORM = "unix"
RESET_EXIT = const(75)


def log_key():
    """The log key from the twin's NVS (None without one, or without a twin flash)."""
    try:
        import esp32
        buf = bytearray(32)
        n = esp32.NVS("warden").get_blob("log_key", buf)   # firmware/hal/common.py: LOG_KEY_NS, LOG_KEY
        return bytes(buf) if n == 32 else None
    except OSError:     # -4354 ESP_ERR_NVS_NOT_FOUND, or a blob of the wrong size
        return None
    except (ImportError, ValueError, AttributeError):   # no twin flash or no NVS (device code in tests)
        return None
    finally:
        # The twin's NVS and esp32.Partition code is C on a board: no heap for it.
        sys.modules.pop("nvs", None)
        sys.modules.pop("esp32api", None)


def reset():
    sys.exit(RESET_EXIT)


def reset_cause():
    """The machine.reset_cause() value the runner reports for this start (1 = power-on)."""
    try:
        return int(os.getenv("WARDEN_RESET_CAUSE") or 1)
    except ValueError:
        return 1


def unique_id():
    return b"twin"


def connect_network(config, log):
    """No radio on the twin: the host's network is up."""
    return True


def sync_clock(config, log):
    """The twin's clock is the host's clock, already set."""
    return True


def _simulated(spec):
    kind = spec.get("kind", "sine")
    if kind == "sine":
        base = float(spec.get("base", 20.0))
        amp = float(spec.get("amplitude", 1.0))
        period = int(spec.get("period", 60)) or 1
        return lambda seq: base + amp * math.sin(2 * math.pi * (seq % period) / period)
    if kind == "ramp":
        start = float(spec.get("start", 0.0))
        step = float(spec.get("step", 1.0))
        return lambda seq: start + step * seq
    if kind == "const":
        value = float(spec.get("value", 0.0))
        return lambda seq: value
    if kind in ("chip_temperature", "adc", "i2c"):
        # A board's sensors (firmware/hal/esp32.py), so a board's config runs here unchanged.
        value = float(spec.get("sim_value", 40.0 if kind == "chip_temperature" else 1.0))
        return lambda seq: value
    raise ValueError("unknown simulated sensor kind %r (sine, ramp, const)" % kind)


def sensor_sources(config):
    """Reading functions f(seq) -> number for each configured sensor, simulated on the twin."""
    out = {}
    for name, spec in config["sensors"].items():
        out[name] = _simulated(spec)
    return out


# Board hardware the twin lacks (firmware/hal/esp32.py has the real ones).
def watchdog_start(ms):
    """No hardware watchdog on the twin (the host runner supervises the process)."""
    return False


def watchdog_feed():
    pass


def deep_sleep(ms):
    """Sleep `ms`, then restart as a board does after deep sleep (the runner restarts on RESET_EXIT)."""
    import time
    time.sleep_ms(ms)
    sys.exit(RESET_EXIT)
