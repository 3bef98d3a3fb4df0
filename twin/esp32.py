# The twin's stand-in for MicroPython's `esp32` module, over one flash file.
#
# The ESP32 port implements `esp32.Partition` in C over the SPI flash; here the
# flash is a 4 MiB file (WARDEN_FLASH) laid out by the partition table at 0x8000,
# exactly as on a board. Only what the unix port lacks is faked, with the real
# API and failure semantics (DESIGN.md section 4): 3-argument writeblocks erases
# the blocks first, the 4-argument form does not; ioctl 4/5/6 = count, size, erase.
import os
import struct

from micropython import const

_TABLE = const(0x8000)
_TABLE_MAX = const(0xC00)
_ERASED = b"\xff" * 256  # erase writes this 16 times: a 4 KiB constant would cost 4 KiB of heap

_flash = None


def flash():
    """The open flash file (one per process, like the one SPI flash chip)."""
    global _flash
    if _flash is None:
        path = os.getenv("WARDEN_FLASH")
        if not path:
            raise OSError("twin: WARDEN_FLASH is not set: no flash file to boot from")
        _flash = open(path, "r+b")
    return _flash


def _table():
    f = flash()
    f.seek(_TABLE)
    raw = f.read(_TABLE_MAX)
    parts = []
    for i in range(0, _TABLE_MAX, 32):
        magic, ptype, sub, off, size, label, flags = struct.unpack("<HBBII16sI", raw[i:i + 32])
        if magic != 0x50AA:
            break
        parts.append((ptype, sub, off, size, label.rstrip(b"\x00").decode(), flags & 1 == 1))
    if not parts:
        raise OSError("twin: no partition table at 0x8000")
    return parts


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096):
        if block_size != 4096:
            raise ValueError("block_size must be 4096 on this flash")
        if id in (Partition.BOOT, Partition.RUNNING):
            id = "ota_0"  # OTA slot selection arrives with the OTA work; the factory image runs ota_0
        for info in _table():
            if info[4] == id:
                self._info = info
                self._off = info[2]
                self._blocks = info[3] // 4096
                return
        raise ValueError("partition not found")  # the message the C port uses

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        out = []
        for info in _table():
            if info[0] == type and (subtype == 0xFF or info[1] == subtype) and (label is None or info[4] == label):
                out.append(cls(info[4], block_size))
        return out

    def info(self):
        return self._info

    def _seek(self, block_num, offset, length):
        if block_num < 0 or offset < 0 or (block_num * 4096 + offset + length) > self._blocks * 4096:
            raise OSError(22)  # EINVAL, as esp_partition_read/write refuse out-of-range access
        f = flash()
        f.seek(self._off + block_num * 4096 + offset)
        return f

    def _erase(self, block_num):
        f = self._seek(block_num, 0, 4096)
        for _ in range(16):
            f.write(_ERASED)

    def readblocks(self, block_num, buf, offset=0):
        self._seek(block_num, offset, len(buf)).readinto(buf)

    def writeblocks(self, block_num, buf, offset=None):
        if offset is None:
            # 3-argument form: erase every block the write covers, then write.
            n = (len(buf) + 4095) // 4096
            for b in range(block_num, block_num + n):
                self._erase(b)
            offset = 0
        self._seek(block_num, offset, len(buf)).write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self._blocks
        if op == 5:  # block size
            return 4096
        if op == 6:  # erase one block
            self._erase(arg)
            return 0
        return None  # init/deinit/sync need nothing: file writes reach the OS at once
