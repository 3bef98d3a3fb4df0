# The twin hal's boot-time part (firmware/hal/unix.py's boot() returns it; the app
# unloads it once booted): the log key, the reset cause, network and clock (nothing
# to do on the host), and the simulated sensors read from the config.
import os

from firmware.hal.unix import simulated

# machine.reset_cause() values (firmware/hal/common.py has the board's copy: the twin
# does not load that module, each module costs the device heap).
RESET_NAMES = {1: "power-on", 2: "hard", 3: "watchdog", 4: "deep-sleep", 5: "soft"}


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
        from firmware import core
        core.unload(("nvs", "esp32api"))


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
        period = int(spec.get("period", 60)) or 1
        return simulated(kind, float(spec.get("base", 20.0)), float(spec.get("amplitude", 1.0)), period)
    if kind == "ramp":
        return simulated(kind, float(spec.get("start", 0.0)), float(spec.get("step", 1.0)), 1)
    if kind == "const":
        return simulated(kind, float(spec.get("value", 0.0)), 0.0, 1)
    if kind in ("chip_temperature", "adc", "i2c"):
        # A board's sensors (firmware/hal/esp32.py), so a board's config runs here unchanged.
        return simulated("const", float(spec.get("sim_value", 40.0 if kind == "chip_temperature" else 1.0)), 0.0, 1)
    raise ValueError("unknown simulated sensor kind %r (sine, ramp, const)" % kind)


def sensor_sources(config):
    """Reading functions f(seq) -> number for each configured sensor, simulated on the twin."""
    out = {}
    for name, spec in config["sensors"].items():
        out[name] = _simulated(spec)
    return out
