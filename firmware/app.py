# The Warden application: boot, then the device's session loop for the rest of its life.
#
# Three modules, loaded one after the other so that the heap only ever holds what
# the current phase needs (the device code has 64 KiB for its whole life; docs/heap.md, and
# firmware/core.py, "Code lifetimes"):
# - firmware/start.py, the boot phase: log store, config, network, clock, identity,
#   the TLS context and the state of an OTA update; retried until it passes;
# - firmware/device.py, the session loop: readings, MQTT, outbox, commands;
# - firmware/otacmd.py, loaded by the loop only while an OTA command or a self-test
#   needs it.
# This module stays loaded (main() runs for the device's life), so it holds nothing but
# main(): what the boot phase loaded is named by firmware/start.py itself.
def main():
    import os
    try:
        os.stat("/state/ota.mode")   # firmware/otamode.py: an update's head is waiting
        update = True
    except OSError:
        update = False
    del os
    if not update:
        from firmware import interning  # names first, in an empty heap (docs/heap.md, "Interned names")
        interning.run()
        del interning
    from firmware import start
    boot = start.boot(log=not update)
    phase = start._BOOT_ONLY
    del start  # a local reference would keep the module (and its code) alive
    from firmware import core
    core.unload(phase)
    del phase, core
    if update:
        from firmware import otamode
        otamode.run(*boot)
    else:
        from firmware import device
        device.run(*boot)

