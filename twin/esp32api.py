# The twin's esp32.Partition and esp32.NVS, and the partition table and OTA helpers
# (_table, _find, _ota): the API of twin/esp32.py, which loads this module when one of
# these names is first looked up (see there).
import struct
import sys

import esp32
from micropython import const

_TABLE = const(0x8000)
_TABLE_MAX = const(0xC00)


def _ota(name, *args):
    """Run twin/bootloader.py's `name`, loading the module for the call (and dropping it
    after, unless it was loaded already)."""
    loaded = "bootloader" in sys.modules
    try:
        return getattr(esp32._rom("bootloader"), name)(*args)
    finally:
        if not loaded:
            sys.modules.pop("bootloader", None)


def _table():
    f = esp32.flash()
    f.seek(_TABLE)
    parts = []
    raw = bytearray(32)  # entry by entry: the C port reads the table without touching the heap
    for i in range(0, _TABLE_MAX, 32):
        f.readinto(raw)
        magic, ptype, sub, off, size, label, flags = struct.unpack("<HBBII16sI", raw)
        if magic != 0x50AA:
            break
        parts.append((ptype, sub, off, size, label.rstrip(b"\x00").decode(), flags & 1 == 1))
    if not parts:
        raise OSError("twin: no partition table at 0x8000")
    return parts


def _find(label):
    """The partition table entry of `label` (a Partition.info() tuple)."""
    for info in _table():
        if info[4] == label:
            return info
    raise ValueError("partition not found")  # the message the C port uses




class Partition(esp32._Dev):
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096):
        if block_size != 4096:
            raise ValueError("block_size must be 4096 on this flash")
        if id == Partition.RUNNING:
            id = esp32._running or _ota("boot")  # no ROM ran: this process boots now
        elif id == Partition.BOOT:
            id = _ota("boot_label")
        esp32._Dev.__init__(self, _find(id))

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        out = []
        for info in _table():
            if info[0] == type and (subtype == 0xFF or info[1] == subtype) and (label is None or info[4] == label):
                out.append(cls(info[4], block_size))
        return out

    # -- OTA: ESP-IDF's esp_ota_ops rules, in twin/bootloader.py -----------------------
    def get_next_update(self):
        return _ota("next_update", self)

    def set_boot(self):
        _ota("set_boot", self)  # OSError(-5379) if the image does not validate

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        _ota("mark_valid")  # OSError(1) while otadata is blank ("running firmware is factory")


def NVS(namespace):
    """esp32.NVS(namespace): the twin's stand-in, twin/nvs.py (C on a board: whoever uses it
    drops the module again, as hal.log_key() does)."""
    return esp32._rom("nvs").NVS(namespace)
