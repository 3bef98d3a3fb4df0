# Runs first at every boot: pick the app slot (firmware/slots.py: the factory app, an app
# update on trial, or a rollback to the previous app); it sets sys.path for main.py.
# Without an app update (no /app/active) the factory app runs and there is nothing to
# pick: slots.py is not loaded at all (the names of every module loaded stay in the heap
# for the device's whole life).
import os

try:
    os.stat("/app/active")
except OSError:
    pass
else:
    from firmware import slots

    slots.boot()
    # This script's frame can leave a stale reference to slots.py on the stack, which the GC
    # scans conservatively for the device's whole life: empty the module's namespace so the
    # reference cannot keep its code in the heap (a later import loads slots.py afresh).
    slots.__dict__.clear()
    del slots
