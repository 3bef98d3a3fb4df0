# The device log: what happened to the device, one line per event.
#
# Every event goes to the console (the UART on a board, stdout on the twin) as
# `<uptime ms> <LEVEL> <kind>: <message>`. Once firmware/logboot.py has opened it (at boot),
# each event is also appended, durably, to the encrypted log store in /log
# (lib/logstore.py) as an EVENT record `<LEVEL> <kind>: <message>`, readable
# with `warden logs show`. Events are kept short and never include secrets
# (keys, Wi-Fi passwords). An event the store cannot take is on the console only;
# a store that failed writing reopens (and recovers) itself at the next event, and
# only a store closed for good is let go. Logging never stops the device.
import time

_t0 = time.ticks_ms()
_store = None


def store():
    """The open log store, or None."""
    return _store


def log(level, kind, msg):
    global _store
    try:
        line = "%s %s: %s" % (level, kind, msg)
        print("%d %s" % (time.ticks_diff(time.ticks_ms(), _t0), line))
    except MemoryError:
        return  # no heap to word it: the event is lost, the device goes on
    s = _store
    if s is not None:
        try:
            b = line.encode()
            s.append(1, b if len(b) <= s.max_payload else b[:s.max_payload], True)  # 1: logstore.EVENT
        except Exception as e:
            if s._f is None and not s.broken:
                _store = None   # closed for good: the console only from here on
            print("%d ERROR log: event not kept in the log store: %r" % (
                time.ticks_diff(time.ticks_ms(), _t0), e))


def info(kind, msg):
    log("INFO", kind, msg)


def warn(kind, msg):
    log("WARN", kind, msg)


def error(kind, msg):
    log("ERROR", kind, msg)
