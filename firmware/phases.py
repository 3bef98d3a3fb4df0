# What the device keeps loaded in each phase: the declaration the device tests check
# (tests/device/dev_lifetime.py) after boot, a session, a drained backlog and a refused OTA,
# on the twin's hal and on the board's. The device never imports this module: each name in
# a loaded module costs heap (firmware/core.py, "Code lifetimes").
#
# Only the device's own code is declared (firmware.*, and the libraries of lib/); a twin's
# stand-ins for the board's C modules (esp32, rom, ...) are not the device's heap.

# The session loop and what it calls at every reading: loaded for the device's whole life.
# Both hals are named; one of them is loaded.
RESIDENT = ("firmware", "firmware.app", "firmware.core", "firmware.eventlog", "firmware.hal",
            "firmware.hal.unix", "firmware.hal.esp32", "firmware.hal.common", "firmware.device",
            "firmware.seqno", "firmware.sensors", "firmware.outbox", "mqtt", "logstore")

# Loaded only while a phase needs them (each unloaded by the module named in firmware/core.py).
WHILE = {
    "draining": ("logread",),            # the outbox's reader, while a backlog waits
    "refusing": ("firmware.refusal",),   # refusals counted since the last reading
    "configuring": ("firmware.devconfig", "firmware.config", "rsapss"),   # one remote-settings command
    "sending a log": ("firmware.logsend",),   # one remote log request (index or a window of chunks)
    "reporting": ("firmware.metrics", "firmware.hal.unixboot", "firmware.hal.esp32boot"),   # one metrics report
}

# The device's own code, as opposed to the twin's stand-ins for C modules of a board.
LIBRARIES = ("mqtt", "mqttconn", "mqttsub", "mqttmsg", "logstore", "logopen", "logread", "cryptokit",
             "der", "rsapss")


def own(name):
    """Is `name` a module of the device's own code?"""
    return name == "firmware" or name.startswith("firmware.") or name in LIBRARIES
