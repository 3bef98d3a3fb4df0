# Platform facts shared by both hals, computed once at import.
import time

# Ports differ in their epoch (1970 on unix, 2000 on older ESP32 builds); the
# rest of the firmware works in Unix seconds.
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0

# machine.reset_cause() values (same on every port that has them).
RESET_NAMES = {1: "power-on", 2: "hard", 3: "watchdog", 4: "deep-sleep", 5: "soft"}


def unix_time():
    return time.time() + EPOCH_OFFSET


# The device's 256-bit log key (lib/logstore.py), written at provisioning into NVS,
# outside the log folder and the filesystem.
LOG_KEY_NS = "warden"
LOG_KEY = "log_key"


def log_key():
    """The log key from NVS, or None if there is none (not provisioned with one)."""
    import esp32
    buf = bytearray(32)
    try:
        n = esp32.NVS(LOG_KEY_NS).get_blob(LOG_KEY, buf)
    except OSError:     # -4354 ESP_ERR_NVS_NOT_FOUND, or a blob of the wrong size
        return None
    return bytes(buf) if n == 32 else None
