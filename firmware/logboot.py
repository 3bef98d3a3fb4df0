# Opening the device log at boot (firmware/start.py): boot-only code, unloaded with the boot
# phase, so the log that stays loaded for the device's life (firmware/eventlog.py) holds only
# what appending needs.
import sys

from firmware import eventlog

LOG_DIR = "/log"

def open_store(key, path=LOG_DIR, **options):
    """Open the log store with the device's log key (hal.boot().log_key()); returns it or None."""
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
        eventlog._store = Store(path, key, clock=hal.unix_time, **options)
    except Exception as e:
        eventlog._store = None
        eventlog.error("log", "log store unusable, events go to the console only: %r" % e)
    finally:
        # Opening needed these; appending does not (a Reader loads logread again).
        for m in ("logopen", "logread", "cryptokit"):
            sys.modules.pop(m, None)
    return eventlog._store
