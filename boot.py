# Runs first at every boot: pick the app slot (firmware/slots.py: the factory app, an app
# update on trial, or a rollback to the previous app); it sets sys.path for main.py.
# Without an app update (no /app/active) the factory app runs and there is nothing to
# pick. With a confirmed app slot whose code is there (every boot after an update was
# confirmed), there is nothing to decide either: its path is set here. Only an update on
# trial, a rollback or a damaged pointer loads slots.py (the names of every module loaded
# stay in the heap for the device's whole life).
import os
import sys

try:
    with open("/app/active") as f:
        _a = f.read().split()
except OSError:
    _a = None
if _a:
    try:
        if len(_a) != 3 or _a[1] != "valid" or _a[0] not in ("a", "b") or _a[2] not in ("a", "b", "-"):
            raise OSError   # slots.py decides (and repairs)
        _p = "/app/" + _a[0]
        os.stat(_p + "/firmware")
        sys.path[:] = [_p, _p + "/lib", ".frozen", ""]
    except OSError:
        from firmware import slots

        slots.boot()
        # This script's frame can leave a stale reference to slots.py on the stack, which the
        # GC scans conservatively for the device's whole life: empty the module's namespace so
        # the reference cannot keep its code in the heap (a later import loads slots.py afresh).
        slots.__dict__.clear()
        del slots
del _a
