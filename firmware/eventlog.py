# The device log: what happened to the device, one line per event.
#
# Every event goes to the console (the UART on a board, stdout on the twin) as
# `<uptime ms> <LEVEL> <kind>: <message>`. Events are kept short and never
# include secrets (keys, Wi-Fi passwords).
import time

_t0 = time.ticks_ms()


def log(level, kind, msg):
    print("%d %s %s: %s" % (time.ticks_diff(time.ticks_ms(), _t0), level, kind, msg))


def info(kind, msg):
    log("INFO", kind, msg)


def warn(kind, msg):
    log("WARN", kind, msg)


def error(kind, msg):
    log("ERROR", kind, msg)
