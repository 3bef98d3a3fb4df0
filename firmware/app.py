# The Warden application: boot, then the device's session loop for the rest of its life.
#
# Three modules, loaded one after the other so that the heap only ever holds what
# the current phase needs (docs/design.md, "The heap budget", gives the device code 64 KiB for its
# whole life; docs/heap.md, "The budget"):
# - firmware/start.py, the boot phase: log store, config, network, clock, identity,
#   the TLS context and the state of an OTA update; retried until it passes;
# - firmware/device.py, the session loop: readings, MQTT, outbox, commands;
# - firmware/otacmd.py, loaded by the loop only while an OTA command or a self-test
#   needs it.
# This module itself stays small: it is the one that holds the others' lifetimes.
import gc
import sys

VERSION = "0.1.0"

# Loaded by the boot phase and not needed after it.
_BOOT_ONLY = ("firmware.start", "firmware.logboot", "firmware.config", "firmware.identity", "der", "firmware.ota_state",
              "firmware.hal.unixboot", "firmware.topics")


def unload(names):
    """Forget modules so the GC can reclaim their bytecode (sys.modules and the parent package).

    Names stay: qstrs are never freed. Unloading works only for modules imported from
    compiled code, never from main.py's own frame (the GC scans the C stack conservatively)."""
    for name in names:
        sys.modules.pop(name, None)
        pkg, _, leaf = name.rpartition(".")
        if pkg in sys.modules:
            try:
                delattr(sys.modules[pkg], leaf)
            except (AttributeError, KeyError, TypeError):  # KeyError: MicroPython, no such attribute
                pass
    gc.collect()


def main():
    from firmware import start
    boot = start.boot(VERSION)
    del start  # a local reference would keep the module (and its code) alive
    unload(_BOOT_ONLY)
    from firmware import device
    device.run(*boot)
