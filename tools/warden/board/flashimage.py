"""The ESP32 4 MiB OTA flash layout, and the twin's flash file built to it.

Layout and bytes only: it must not know about devices, keys or the registry, nor run a
twin (twin.py builds a device's flash with it).

A twin's flash is one file laid out like a real board's flash (docs/design.md, "The twin"):
a partition table at 0x8000 in the ESP-IDF binary format, nvs, otadata, phy, two
1.5 MiB app slots and a littlefs2 `vfs` region. The twin's `esp32.Partition`
stand-in reads the same partition table, so host and twin agree on the layout by
construction, and the vfs image built here is byte-for-byte what a board mounts.
"""
import hashlib
import struct
from dataclasses import dataclass

from littlefs import LittleFS, UserContext

from ..errors import WardenError

FLASH_SIZE = 0x400000
BLOCK = 4096
TABLE_OFFSET = 0x8000
TABLE_MAX = 0xC00

TYPE_APP, TYPE_DATA = 0x00, 0x01
SUB_OTA_0, SUB_OTA_1 = 0x10, 0x11
SUB_OTADATA, SUB_PHY, SUB_NVS, SUB_FAT = 0x00, 0x01, 0x02, 0x81


class FlashImageError(WardenError, ValueError):
    """A file that is not a twin flash of this layout."""

    hint = "give a twin's flash file (<state>/devices/<thing>/flash.bin, made by `warden device add THING`)"


@dataclass(frozen=True)
class Part:
    label: str
    type: int
    subtype: int
    offset: int
    size: int


# MicroPython ESP32_GENERIC, OTA variant (partitions-4MiB-ota.csv), vfs auto-registered since v1.26.
LAYOUT = (
    Part("nvs", TYPE_DATA, SUB_NVS, 0x9000, 0x4000),
    Part("otadata", TYPE_DATA, SUB_OTADATA, 0xD000, 0x2000),
    Part("phy_init", TYPE_DATA, SUB_PHY, 0xF000, 0x1000),
    Part("ota_0", TYPE_APP, SUB_OTA_0, 0x10000, 0x180000),
    Part("ota_1", TYPE_APP, SUB_OTA_1, 0x190000, 0x180000),
    Part("vfs", TYPE_DATA, SUB_FAT, 0x310000, 0xF0000),
)

# littlefs geometry: MicroPython's VfsLfs2 defaults (readsize=32, progsize=32, lookahead=32)
# over 4 KiB erase blocks. The image must be made with the same values to mount on the board.
LFS_READ, LFS_PROG, LFS_LOOKAHEAD = 32, 32, 32


def part(label):
    for p in LAYOUT:
        if p.label == label:
            return p
    raise KeyError("no partition labelled %r in the 4 MiB OTA layout" % label)


VFS = part("vfs")
VFS_BLOCKS = VFS.size // BLOCK


def partition_table(layout=LAYOUT):
    """The ESP-IDF binary partition table: 32-byte entries, then an MD5 entry, 0xFF padded."""
    out = bytearray()
    for p in layout:
        label = p.label.encode()
        if len(label) > 16:
            raise ValueError("partition label too long: %s" % p.label)
        out += struct.pack("<HBBII16sI", 0x50AA, p.type, p.subtype, p.offset, p.size, label, 0)
    out += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(bytes(out)).digest()
    return bytes(out) + b"\xff" * (TABLE_MAX - len(out))


def _lfs(buffer):
    return LittleFS(
        context=UserContext(buffer=buffer),
        block_size=BLOCK,
        block_count=VFS_BLOCKS,
        read_size=LFS_READ,
        prog_size=LFS_PROG,
        lookahead_size=LFS_LOOKAHEAD,
        mount=False,
    )


# What a fresh filesystem says about the device's state: nothing waits in the outbox
# (firmware/outbox.py), so the first boot need not read the (empty) log to find out.
FRESH_STATE = {"/state/outbox": b"0 e"}


def build_vfs(files):
    """A fresh littlefs2 image of the vfs region holding `files` ({'/path': bytes}) and
    FRESH_STATE (unless `files` has those paths)."""
    buf = bytearray(b"\xff" * VFS.size)
    fs = _lfs(buf)
    fs.format()
    fs.mount()
    write_files(fs, {**FRESH_STATE, **files})
    fs.unmount()
    return bytes(buf)


def write_files(fs, files):
    for path, data in sorted(files.items()):
        path = path.lstrip("/")
        parent = path.rpartition("/")[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(data)


def new_flash(files, firmware=None):
    """A whole 4 MiB flash image: erased everywhere, partition table, a factory firmware image in
    ota_0 (as esptool leaves a board: the twin's bootloader needs a valid image to fall back
    to; `firmware=b""` leaves ota_0 erased), and the vfs with `files`."""
    img = bytearray(b"\xff" * FLASH_SIZE)
    img[TABLE_OFFSET:TABLE_OFFSET + TABLE_MAX] = partition_table()
    if firmware is None:
        from .espimage import build_image
        firmware = build_image("factory", 16 * 1024)
    ota0 = part("ota_0")
    img[ota0.offset:ota0.offset + len(firmware)] = firmware
    img[VFS.offset:VFS.offset + VFS.size] = build_vfs(files)
    return img


class FlashFile:
    """Edit the vfs of an existing twin flash file in place (the twin must not be running)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.image = bytearray(f.read())
        if len(self.image) != FLASH_SIZE:
            raise FlashImageError("%s is %d bytes, not a 4 MiB twin flash" % (path, len(self.image)))
        self._vfs = bytearray(self.image[VFS.offset:VFS.offset + VFS.size])
        self.fs = _lfs(self._vfs)
        self.fs.mount()

    def read(self, path):
        with self.fs.open(path.lstrip("/"), "rb") as f:
            return f.read()

    def exists(self, path):
        try:
            self.fs.stat(path.lstrip("/"))
            return True
        except Exception:
            return False

    def listdir(self, path="/"):
        return self.fs.listdir(path.lstrip("/") or "/")

    def write(self, files):
        write_files(self.fs, files)

    def remove_tree(self, path):
        path = path.lstrip("/")
        if not self.exists(path):
            return
        if self.fs.stat(path).type == 2:  # directory
            for name in self.fs.listdir(path):
                self.remove_tree(path + "/" + name)
        self.fs.remove(path)

    def save(self):
        """Write the image back through a temporary file and an atomic rename."""
        import os
        self.fs.unmount()
        self.image[VFS.offset:VFS.offset + VFS.size] = self._vfs
        tmp = str(self.path) + ".tmp"
        with open(tmp, "wb") as f:
            f.write(self.image)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.fs.mount()
