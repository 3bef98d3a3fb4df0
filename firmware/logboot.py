# Opening the device log at boot (firmware/start.py): boot-only code, unloaded with the boot
# phase, so the log that stays loaded for the device's life (firmware/eventlog.py) holds only
# what appending needs.
from firmware import core, eventlog

LOG_DIR = "/log"
# The log's high-water mark (lib/logstore.py): outside the log folder, so that cutting or losing
# segments cannot take the mark with them; sequence numbers are never used twice.
LOG_HW = "/state/log.hw"

def open_store(key, path=LOG_DIR, hw=LOG_HW, **options):
    """Open the log store with the device's log key (hal.boot().log_key()); returns it or None.
    hw: the store's high-water file."""
    import gc
    from firmware import hal
    # Opening loads code and reads the log: start from a collected heap (a collection
    # forced deep inside those allocations cannot always reclaim what is garbage here).
    gc.collect()
    if key is None:
        eventlog.warn("log", "no log key in NVS: events go to the console only")
        return None
    try:
        from logstore import Store
        eventlog._store = Store(path, key, clock=hal.unix_time, hw=_state_file(hw), **options)
    except Exception as e:
        eventlog._store = None
        eventlog.error("log", "log store unusable, events go to the console only: %r" % e)
    finally:
        # Opening needed these; appending does not (a Reader loads logread again).
        core.unload(("logopen", "logread", "cryptokit"))
    return eventlog._store


def _state_file(path):
    # the high-water file's folder exists before the store writes its first mark
    import os
    try:
        os.mkdir(path.rpartition("/")[0])
    except OSError:
        pass    # there already (or the store's first write says why it cannot be)
    return path
