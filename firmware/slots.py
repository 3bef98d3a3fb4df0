# App slots: two copies of the app in the filesystem, so an `app` update never
# overwrites the code that is running.
#
#   /firmware, /lib      the factory app, as provisioning wrote it (never changed by OTA)
#   /app/a, /app/b       slots an update unpacks into (each holds firmware/ and lib/)
#   /app/active          which one runs: "<slot> <state> <previous>", replaced atomically
#                        (temporary file + rename); missing means the factory app
#
# The states follow the board's bootloader: an update is activated as `new`; the
# first boot of it marks it `trying`; if a boot finds `trying`, the new app never
# confirmed itself (self-test) before that reset and the previous app comes back.
# confirm() makes it `valid`. boot.py calls boot() before anything else imports
# the app; it puts the active slot first on sys.path and forgets this module and
# the factory `firmware` package, so `import firmware.app` finds the slot's code.
import os
import sys

APP = "/app"
_PTR = "/app/active"
FACTORY = "-"


def read():
    """(slot, state, previous) of the active app; the factory app if nothing else is active."""
    try:
        with open(_PTR) as f:
            v = f.read().split()
        if len(v) == 3 and v[0] in ("a", "b") and v[1] in ("new", "trying", "valid") and v[2] in ("a", "b", "-"):
            return v[0], v[1], v[2]
    except OSError:
        pass
    return FACTORY, "valid", FACTORY


def _write(slot, state, prev):
    try:
        os.mkdir(APP)
    except OSError:
        pass
    tmp = _PTR + ".tmp"
    with open(tmp, "w") as f:
        f.write("%s %s %s" % (slot, state, prev))
    os.rename(tmp, _PTR)


def active():
    return read()[0]


def path(slot):
    """The folder holding `slot`'s firmware/ and lib/ ("" for the factory app)."""
    return "" if slot == FACTORY else APP + "/" + slot


def inactive():
    """The slot an update goes into: never the active one, nor the one it would roll back to."""
    return "b" if active() == "a" else "a"


def activate(slot):
    """Run `slot` from the next boot on, on trial (an atomic pointer change)."""
    _write(slot, "new", active())


def confirm():
    """The running app passed its self-test: keep it (harmless when already valid)."""
    slot, state, prev = read()
    if slot != FACTORY and state != "valid":
        _write(slot, "valid", prev)


def rollback():
    """Go back to the previous app at the next boot; returns the slot that will run."""
    slot, state, prev = read()
    if slot == FACTORY:
        return FACTORY
    if prev == FACTORY:
        os.remove(_PTR)
    else:
        _write(prev, "valid", FACTORY)
    return prev


def boot():
    """At reset, from boot.py: apply the trial rules, then run the active slot's code."""
    slot, state, prev = read()
    if state == "new":
        _write(slot, "trying", prev)
    elif state == "trying":
        print("slots: app %s was not confirmed before this reset: back to %s" % (slot, prev))
        slot = rollback()
    while slot != FACTORY:
        p = path(slot)
        try:
            os.stat(p + "/firmware")
            sys.path[:] = [p, p + "/lib", ".frozen", ""]
            break
        except OSError:
            print("slots: app %s is missing: back to the previous app" % slot)
            slot = rollback()  # reaches the factory app at the latest on the second try
    # Forget the factory package this module came from: the app imports afresh from sys.path.
    sys.modules.pop("firmware.slots", None)
    sys.modules.pop("firmware", None)
    return slot
