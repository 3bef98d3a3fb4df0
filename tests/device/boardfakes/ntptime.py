# Stand-in for `ntptime` (frozen in the ESP32 port; tests only): settime() raises the
# queued errors first, then succeeds (the unix port's clock is the host's, already right).
host = "pool.ntp.org"
timeout = 1
errors = []
calls = []


def settime():
    calls.append(host)
    if errors:
        raise errors.pop(0)
