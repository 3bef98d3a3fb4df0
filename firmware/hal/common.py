# Platform facts shared by both hals, computed once at import.
import time

# Ports differ in their epoch (1970 on unix, 2000 on older ESP32 builds); the
# rest of the firmware works in Unix seconds.
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0

# machine.reset_cause() values (same on every port that has them).
RESET_NAMES = {1: "power-on", 2: "hard", 3: "watchdog", 4: "deep-sleep", 5: "soft"}


def unix_time():
    return time.time() + EPOCH_OFFSET
