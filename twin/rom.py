# The twin's boot ROM: what the ESP32 port does in C and _boot.py before user code.
#
# Run as `micropython -X heapsize=64k -c 'import rom'` (precompiled) with WARDEN_FLASH naming the
# flash file. Its bootloader (twin/bootloader.py) picks the app slot from the OTA
# data (rolling back an image that never confirmed itself), then it mounts the vfs
# partition (littlefs2) at `/` in place of the host filesystem, so the device sees
# only its own flash, sets sys.path as the board does, then runs /boot.py and
# /main.py from flash. machine.reset() on the twin is sys.exit(RESET_EXIT) (see
# firmware/hal/unix.py); the host runner restarts us.
import gc
import os
import sys

import esp32


def _mount_vfs():
    vfs = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")
    if not vfs:
        raise OSError("twin: no vfs partition in the flash's partition table")
    bdev = vfs[0]
    try:
        fs = os.VfsLfs2(bdev)
    except OSError:
        # A blank or corrupt vfs: the board formats it and boots; so do we.
        print("twin: vfs did not mount, formatting it (littlefs2)")
        os.VfsLfs2.mkfs(bdev)
        fs = os.VfsLfs2(bdev)
    os.umount("/")
    os.mount(fs, "/")


def _run(name):
    try:
        os.stat(name)
    except OSError:
        return
    with open(name) as f:
        src = f.read()
    exec(src, {"__name__": "__main__", "__file__": name})


def _bootloader():
    """The second-stage bootloader: pick the app slot (OTA data, rollback), then forget its code."""
    import bootloader
    bootloader.boot()
    del sys.modules["bootloader"]


_bootloader()
_mount_vfs()
os.chdir("/")
gc.collect()
sys.path[:] = ["", ".frozen", "/lib"]
_run("boot.py")
_run("main.py")
