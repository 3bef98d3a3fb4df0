# What every phase of the device shares, loaded first and for the device's whole life:
# - code lifetimes: unload(), the one way device code is let go once its phase is over;
# - replace(): the one way a small state file is written (whole or not at all);
# - the app's VERSION, describe() (an error in one log line) and the reconnect backoff.
# One module, not one per job: on the board each loaded module costs heap for life, and so
# does each new name (MicroPython never frees the qstrs that module names intern).
# Must not: import other device modules (everything imports this one).
#
# Code lifetimes. Every loaded module costs heap for as long as anything refers to it: its
# code, its functions and its globals (docs/heap.md). The device keeps loaded only what the
# phase it is in needs (firmware/phases.py declares it; the device tests check it); the rest
# is imported where it is used (a real import, so readers and tools can follow the call) and
# unloaded, by group, by the one module that knows its phase is over:
#     firmware/start.py _BOOT_ONLY   the boot phase, unloaded by firmware/app.py
#     firmware/otacmd.py TRANSFER    an OTA conversation, when it ends or the session is lost
#     firmware/otacmd.py OTA         that and otacmd itself, once no report or verdict is due
#     firmware/outbox.py             logread, once a backlog is delivered
#     firmware/refusal.py            itself, at the reading after the refusals it counted
#     firmware/devconfig.py          itself, config and rsapss, once it answered a config command
#     firmware/logsend.py            itself, once the log request it was loaded for is answered
#     firmware/metrics.py            itself and the hal's boot-time part, once a report is sent
# unload() forgets a module in both places that keep it alive: sys.modules and the
# attribute that binds it on its parent package (`from firmware import x` sets firmware.x;
# a binding left there keeps the module's code for life). It works only for modules imported
# by compiled code, not by main.py's own frame (the GC scans the C stack conservatively), and
# must not be given a module whose objects are still in use: their code stays alive through
# them, and the next import would load a second copy.
import gc
import os
import sys

VERSION = "0.1.0"


def describe(e):
    """A one-line reason for the device log: the error's class and message (mbedTLS
    messages carry newlines; a log record is one line)."""
    return "%s: %s" % (type(e).__name__, " ".join(str(e).split()))


def backoff_delay(n, base_ms, cap_ms):
    """The delay before retry n+1 after n consecutive failures: exponential backoff with full
    jitter, a random time in [0, min(cap, base * 2^n)] ms, so a fleet that lost its broker does
    not reconnect in lockstep."""
    c = base_ms << min(n, 20)
    if c > cap_ms:
        c = cap_ms
    return int.from_bytes(os.urandom(4), "big") % (c + 1)  # the hardware RNG on a board


def replace(path, data):
    """Replace the file `path` with `data` (str or bytes), atomically: written to a temporary
    file, then renamed over it (littlefs renames atomically), so a power cut leaves the old
    content or the new, never a mix. Creates the folder on first use."""
    tmp = path + ".tmp"
    mode = "w" if isinstance(data, str) else "wb"
    try:
        f = open(tmp, mode)
    except OSError:
        os.mkdir(path.rpartition("/")[0])  # first use: the folder does not exist yet
        f = open(tmp, mode)
    with f:
        f.write(data)
    os.rename(tmp, path)


def unload(names):
    """Forget the modules `names` (sys.modules and their parent package's attribute), then
    collect, so the GC can reclaim their code."""
    for name in names:
        sys.modules.pop(name, None)
        pkg, _, leaf = name.rpartition(".")
        p = sys.modules.get(pkg)
        if p is not None:
            try:
                delattr(p, leaf)
            except (AttributeError, KeyError, TypeError):  # KeyError: MicroPython, no such attribute
                pass
    gc.collect()
