# Ctrl-C inside a flash read that littlefs makes (tests/host/test_flashimage.py): on the twin,
# SIGINT raises KeyboardInterrupt at whatever bytecode runs, and while a file is appended that is
# often twin/esp32.py's block device, called from littlefs. Appends a 64-byte header and records
# to /f/seg.bin durably, then (with argument "cut") makes the flash file's next read raise
# KeyboardInterrupt: the read of the segment's tail block that the next append's copy-on-write
# starts with. Then it does what the device does on Ctrl-C: appends one more record durably.
# Prints "INTR" when interrupted, then "STORED" or "REFUSED <errno>" for the last record.
import os
import sys

import esp32

vfs = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0]
os.mount(os.VfsLfs2(vfs), "/f")


class Flaky:
    """The flash file, whose next readinto raises KeyboardInterrupt (once), as SIGINT does."""

    def __init__(self, f):
        self.f = f
        self.armed = False

    def seek(self, pos):
        return self.f.seek(pos)

    def write(self, b):
        return self.f.write(b)

    def readinto(self, buf):
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return self.f.readinto(buf)


esp32._flash = flaky = Flaky(esp32.flash())
f = open("/f/seg.bin", "ab")
f.write(b"HEADER:" + b"h" * 57)
f.flush()
for i in range(3):
    f.write(b"rec%04d:" % i + b"r" * 56)
    f.flush()
os.listdir("/f")  # the read cache now holds the root folder's metadata
flaky.armed = len(sys.argv) > 1 and sys.argv[1] == "cut"
try:
    f.write(b"rec%04d:" % 3 + b"r" * 56)
    f.flush()
except KeyboardInterrupt:
    print("INTR")
try:
    f.write(b"STOPPED:" + b"s" * 56)
    f.flush()
    print("STORED")
except OSError as e:
    print("REFUSED", e.errno)
