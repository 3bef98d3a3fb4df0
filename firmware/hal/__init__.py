# The hardware abstraction layer: the only place that knows which platform runs.
# Firmware modules import `firmware.hal` and use the same names on the board
# (firmware/hal/esp32.py) and on the twin (firmware/hal/unix.py).
import sys

if sys.platform == "esp32":
    from firmware.hal.esp32 import *  # noqa: F401,F403
else:
    from firmware.hal.unix import *  # noqa: F401,F403
