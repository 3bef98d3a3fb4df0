# The twin's boot ROM: what the ESP32 port does in C and _boot.py before user code.
#
# Run as `micropython -X heapsize=64k -c 'import rom'` (precompiled) with WARDEN_FLASH naming the
# flash file. Its bootloader (twin/bootloader.py) picks the app slot from the OTA
# data (rolling back an image that never confirmed itself), then it mounts the vfs
# partition (littlefs2) at `/` in place of the host filesystem, so the device sees
# only its own flash, sets sys.path as the board does, then runs /boot.py and
# /main.py from flash. machine.reset() on the twin is sys.exit(RESET_EXIT) (see
# firmware/hal/unix.py); the host runner restarts us.
#
# On a board all of this is C: it must cost the device's heap as little as it can. So
# no functions (this module stays alive while main.py runs), the bootloader's code is
# dropped once it has chosen, and each script is compiled first so its source text
# is not held while it runs.
import gc
import os
import sys

import esp32

# The second-stage bootloader: pick the app slot (OTA data, rollback), then forget its code.
import bootloader

bootloader.boot()
_p = bootloader.vfs()  # the vfs partition's block device
del sys.modules["bootloader"], bootloader
# The partition table code the bootloader loaded (twin/esp32api.py; loaded again when used):
# dropped, and its namespace emptied, because a stale reference to the module may stay on
# this frame's stack, which the GC scans conservatively for the device's whole life.
_m = sys.modules.pop("esp32api", None)
if _m is not None:
    _m.__dict__.clear()
del _m

try:
    _fs = os.VfsLfs2(_p)
except OSError:
    # A blank or corrupt vfs: the board formats it and boots; so do we.
    print("twin: vfs did not mount, formatting it (littlefs2)")
    os.VfsLfs2.mkfs(_p)
    _fs = os.VfsLfs2(_p)
os.umount("/")
os.mount(_fs, "/")
del _p, _fs
os.chdir("/")
sys.path[:] = ["", ".frozen", "/lib"]
for _n in ("boot.py", "main.py"):
    try:
        _f = open(_n)
    except OSError:
        continue
    with _f:
        _c = compile(_f.read(), _n, "exec")
    del _f
    # Collect the compiler's garbage here, where the stack is shallow: the GC scans the C
    # stack conservatively, and a collection forced deep inside a later allocation may not
    # see this garbage as free.
    gc.collect()
    exec(_c, {"__name__": "__main__", "__file__": _n})
