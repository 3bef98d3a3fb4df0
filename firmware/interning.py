# Names first: run by firmware/app.py before the boot phase, in a heap still empty, and unloaded.
#
# Loading a module interns every name in it (and the paths its import looked at) for the
# device's life: unloading it frees the code, never the names. When the interned names fill
# MicroPython's qstr pools, the next one allocates a pool of twice the entries in one piece
# (640 entries: ~4.5 KB on a board, ~7 KB on the 64-bit twin; its MemoryError reads "allocating
# 640 bytes"). Only a heap this empty is sure to have that piece. An app in an update slot (longer
# module paths, more names) once reached it inside a connect, after the TLS handshake, where the
# piece never was: the connect's allocations repeat exactly, so every retry failed the same way
# and the device never came online (docs/heap.md, "Interned names").
#
# So the modules of the boot phase and of the session are loaded here once each, one at a time,
# and dropped again, only for their names: whatever pool they need is made now.

# What the boot phase and the session load (firmware/start.py's _BOOT_ONLY, the resident session,
# what a connect and a metrics report load); a module's top-level imports come with it, the ones a
# function makes (topics -> topiccheck, identity -> der) are named here. The session loads
# firmware.metrics every metrics_s: its names too, or the first report would need a new pool in a
# running session's heap. The hal's boot half is the platform's own (run() names it).
_MODULES = ("firmware.start", "firmware.logboot", "logopen", "logread", "cryptokit", "firmware.config",
            "firmware.identity", "der", "firmware.ota_state", "firmware.topics", "firmware.topiccheck",
            "firmware.device", "firmware.outbox", "mqttconn", "mqttsub", "firmware.metrics")


def run():
    import sys
    from firmware import core
    hal_boot = "firmware.hal.esp32boot" if sys.platform == "esp32" else "firmware.hal.unixboot"
    for name in _MODULES + (hal_boot,):
        had = list(sys.modules)
        __import__(name)
        core.unload([m for m in sys.modules if m not in had])
    # Names a running device makes from data: MicroPython interns every one-character string it
    # makes (iterating a str: topiccheck over the thing name, a parser over a payload). All of the
    # printable ASCII ones now, so that none of them is the name that needs the next pool later.
    for _ in bytes(range(32, 127)).decode():
        pass
    core.unload(("firmware.interning",))
