# The twin's stand-in for MicroPython's `esp32` module, over one flash file.
#
# The ESP32 port implements `esp32.Partition` in C over the SPI flash; here the
# flash is a 4 MiB file (WARDEN_FLASH) laid out by the partition table at 0x8000,
# exactly as on a board. Only what the unix port lacks is faked, with the real
# API and failure semantics (docs/design.md, "The ESP32 platform"): 3-argument writeblocks erases
# the blocks first, the 4-argument form does not; ioctl 4/5/6 = count, size, erase.
#
# On a board this is C and costs the app no heap; here it runs in the device's heap,
# so only what the mounted vfs needs stays loaded: _Dev, the block device of one
# partition (the bootloader also reads and writes otadata and the app slots through
# them), and the flash file. The API the firmware uses (esp32.Partition, a _Dev with
# the board's methods, and esp32.NVS) and the partition table helpers are
# twin/esp32api.py, loaded when one of those names is first looked up (module
# __getattr__). It stays loaded (one copy, however many lookups) until its user drops
# it from sys.modules, as the twin's hal does after reading the log key at boot; an
# OTA update loads it again for its own run.
# The OTA rules of the board (ESP-IDF's bootloader and esp_ota_ops) are in
# twin/bootloader.py and the NVS in twin/nvs.py, loaded for the call that needs them
# and dropped again. RUNNING is the slot the bootloader started (rom.py runs it first).
#
# Ctrl-C: the unix port raises KeyboardInterrupt at the next bytecode it runs, which may be in
# _Dev, called by littlefs in the middle of one of its operations. littlefs (C) is then left
# mid-operation (a read cache that claims bytes its read never brought, a commit half made), and
# the device goes on to write with that state (it logs "app: stopped"): a log segment's next
# copy-on-write took 128 stale cache bytes, littlefs metadata, in place of its header (data
# lost on the next boot; docs/log.md, "Durability, power cuts, recovery"). On a board Partition
# is C: Ctrl-C waits until littlefs returns. So every operation on a partition counts itself in
# its `_busy` before anything in it can be interrupted and uncounts itself last; a write or erase
# that finds the count already up knows an earlier operation was cut short, and does nothing:
# from then on no write reaches the partition, as after a power cut at that instant. What
# littlefs committed stays; nothing from its broken state lands. Dropped, not refused: a refusal
# is an exception, and the write may come from a file's finaliser, which MicroPython runs with
# the heap locked: making the OSError there raised "MemoryError: heap is locked" out of the GC and
# ended the app. (This code is resident in the device's heap, so it is kept to a few counter updates.)
#
# Power cuts: WARDEN_CUT="N" (or "N:K") counts flash operations (erases and writes) in
# `esp32.ops` and kills the process with SIGKILL during the N-th, after K bytes of it
# (default: half) reached the flash; "0" only counts (twin/bootloader.py's arm()).
import os
import sys

_ERASED = b"\xff" * 256  # erase writes this 16 times: a 4 KiB constant would cost 4 KiB of heap

_ROM = __file__.rpartition("/")[0]  # the host folder of the twin's ROM modules
_flash = None
_running = None  # label of the app slot the bootloader started (twin/bootloader.py sets it)


def flash():
    """The open flash file (one per process, like the one SPI flash chip)."""
    global _flash
    if _flash is None:
        path = os.getenv("WARDEN_FLASH")
        if not path:
            raise OSError("twin: WARDEN_FLASH is not set: no flash file to boot from")
        _flash = open(path, "r+b")
        if os.getenv("WARDEN_CUT"):
            _rom("esp32api")._ota("arm")
    return _flash


def _rom(name):
    """Twin module `name` (esp32api, bootloader, nvs) from the ROM's host folder: importable directly
    until rom.py mounts the device's vfs at /, from there on mounted at /.rom for the import.
    It is C on a board, so whoever loads it for a call drops it again (sys.modules)."""
    m = sys.modules.get(name)
    if m is None:
        try:
            m = __import__(name)
        except ImportError:
            os.mount(os.VfsPosix(_ROM), "/.rom")
            sys.path.append("/.rom")
            try:
                m = __import__(name)
            finally:
                sys.path.pop()
                os.umount("/.rom")
    return m


def __getattr__(name):
    """Partition, NVS (and the partition table helpers _table, _find, _ota): from
    twin/esp32api.py, loaded at the first lookup (see above)."""
    return getattr(_rom("esp32api"), name)


class _Dev:
    """The erase blocks of one partition (`info`: its partition table entry)."""

    _busy = 0  # operations begun and not finished (see Ctrl-C above)

    def __init__(self, info):
        self._info = info
        self._off = info[2]
        self._blocks = info[3] // 4096

    def info(self):
        return self._info

    def _seek(self, block_num, offset, length):
        if block_num < 0 or offset < 0 or (block_num * 4096 + offset + length) > self._blocks * 4096:
            self._busy -= 1  # a refused access ends its operation whole: it was not cut short
            raise OSError(22)  # EINVAL, as esp_partition_read/write refuse out-of-range access
        f = flash()
        f.seek(self._off + block_num * 4096 + offset)
        return f

    def _erase(self, block_num):
        f = self._seek(block_num, 0, 4096)
        for _ in range(16):
            f.write(_ERASED)

    # readblocks, writeblocks and ioctl count themselves in _busy on their first line (nothing
    # before it can be interrupted) and uncount themselves on their last (see Ctrl-C above).
    def readblocks(self, block_num, buf, offset=0):
        self._busy += 1
        self._seek(block_num, offset, len(buf)).readinto(buf)
        self._busy -= 1

    def writeblocks(self, block_num, buf, offset=None):
        self._busy += 1
        if self._busy > 1:
            return  # an earlier operation was cut short: nothing reaches the flash any more
        if offset is None:
            # 3-argument form: erase every block the write covers, then write.
            n = (len(buf) + 4095) // 4096
            for b in range(block_num, block_num + n):
                self._erase(b)
            offset = 0
        self._seek(block_num, offset, len(buf)).write(buf)
        self._busy -= 1

    def ioctl(self, op, arg):
        self._busy += 1
        if op == 6:  # erase one block
            if self._busy > 1:
                return 0  # an earlier operation was cut short: nothing reaches the flash any more
            self._erase(arg)
            op = 0
        elif op == 4:  # block count
            op = self._blocks
        elif op == 5:  # block size
            op = 4096
        else:
            op = None  # init/deinit/sync need nothing: file writes reach the OS at once
        self._busy -= 1
        return op
