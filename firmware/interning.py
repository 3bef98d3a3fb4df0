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

# What the boot phase and the session load; each module's own imports come with it. The session
# loads firmware.metrics every metrics_s (a report): its names too, or the first report would
# need a new pool in a running session's heap.
_MODULES = ("firmware.start", "firmware.logboot", "logopen", "logread", "firmware.config",
            "firmware.identity", "firmware.ota_state", "firmware.topics", "firmware.device",
            "firmware.outbox", "mqttconn", "mqttsub", "firmware.metrics")


def run():
    import sys
    from firmware import core
    for name in _MODULES:
        had = list(sys.modules)
        __import__(name)
        core.unload([m for m in sys.modules if m not in had])
    core.unload(("firmware.interning",))
