# Freezing manifest: the Warden app compiled into a custom MicroPython firmware image.
#
#   cd micropython/ports/esp32
#   make BOARD=ESP32_GENERIC BOARD_VARIANT=OTA FROZEN_MANIFEST=/abs/path/to/warden/manifest.py
#
# The port's own frozen modules come first (include), then firmware/ (a package, so every
# module under it, hal included), each device library of lib/ and boot.py / main.py (a frozen
# boot.py / main.py runs in place of the filesystem's). Frozen bytecode lives in flash, not in the
# GC heap. Frozen modules come before /lib on sys.path: a frozen build is updated with a
# `firmware` OTA (the whole image), an `app` OTA would be shadowed. See the README, 'A real ESP32'.
# tests/host/test_board.py checks that every device file is named here.
include("$(PORT_DIR)/boards/manifest.py")

package("firmware")
module("boot.py")
module("main.py")
module("cryptokit.py", base_path="lib")
module("der.py", base_path="lib")
module("logopen.py", base_path="lib")
module("logread.py", base_path="lib")
module("logstore.py", base_path="lib")
module("mqtt.py", base_path="lib")
module("mqttconn.py", base_path="lib")
module("mqttsub.py", base_path="lib")
module("mqttmsg.py", base_path="lib")
module("rsapss.py", base_path="lib")
