# The twin's hal: the unix port standing in for an ESP32.
#
# There is no Wi-Fi (the host network is always up), the clock is the host's,
# sensors are simulated deterministically from the reading's sequence number,
# and reset is an exit with RESET_EXIT that the host runner (warden twin run)
# answers by starting the twin again, as a board reboots.
#
# What only the boot phase needs (log key, reset cause, network, clock, sensor
# set-up) is firmware/hal/unixboot.py, returned by boot() and unloaded after boot:
# this module stays loaded for the device's whole life, so it holds only what the
# session loop calls.
import math
import sys

from micropython import const

from time import time as unix_time  # noqa: F401  the unix port's epoch is 1970

PLATFORM = "unix"
RESET_EXIT = const(75)


def boot():
    """The boot-time part of the hal (firmware/hal/unixboot.py; firmware/app.py unloads it)."""
    from firmware.hal import unixboot
    return unixboot


def reset():
    sys.exit(RESET_EXIT)


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


def simulated(kind, a, b, n):
    """f(seq) of a simulated sensor: "sine" a + b*sin(2*pi*(seq % n)/n), "ramp" a + b*seq,
    anything else the constant a. Made here, not in unixboot.py, so that the sensors the
    session reads do not keep the boot-time module loaded."""
    if kind == "sine":
        return lambda seq: a + b * math.sin(2 * math.pi * (seq % n) / n)
    if kind == "ramp":
        return lambda seq: a + b * seq
    return lambda seq: a
