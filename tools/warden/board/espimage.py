"""ESP32 app images (the format of a MicroPython firmware `.bin`): check one, describe it,
and build stand-in images for the twin and the tests.

Bytes in, bytes out: it must not read files or run esptool (warden.board.flash does).

The layout (ESP-IDF "App Image Format"): a 24-byte header (magic 0xE9, segment count,
flash mode/size, entry point, then the extended header with chip id, chip revision
range and the hash_appended flag), the segments (8-byte header: load address and
length, then the data), zero padding up to a 16-byte boundary whose last byte is the
XOR checksum of all segment data (seed 0xEF), then, when hash_appended is 1, the
SHA-256 of everything before it. The first segment of an app starts with
esp_app_desc_t (magic 0xABCD5432, secure version, version, project name, ...).

`check_image` applies the rules esp_image_verify applies when `esp32.Partition.set_boot`
is called on a board (and twin/bootloader.py applies on the twin), so a broken image
is refused on the host before it is ever signed or sent.
"""
from __future__ import annotations

import hashlib
import struct

from ..errors import WardenError

MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
CHIP_ESP32 = 0
MAX_SEGMENTS = 16
SLOT_SIZE = 0x180000           # ota_0 / ota_1 in the 4 MiB OTA layout
TWIN_CHIP_REV = 301            # the twin is an ESP32 v3.1

DROM = 0x3F400020              # flash-mapped data: data offset 0x20 matches modulo 64 KiB
DRAM = 0x3FFB0000
IRAM = 0x40080000


class EspImageError(WardenError, ValueError):
    pass


def _mapped(addr):
    return 0x400D0000 <= addr < 0x40400000 or 0x3F400000 <= addr < 0x3F800000


def app_desc(version: str, project: str = "micropython", secure_version: int = 0,
             idf_ver: str = "v5.4.1") -> bytes:
    """esp_app_desc_t (256 bytes)."""
    def field(s, n):
        b = s.encode()
        if len(b) >= n:
            raise EspImageError(f"{s!r} does not fit esp_app_desc_t's {n}-byte field",
                                hint=f"give at most {n - 1} bytes")
        return b + bytes(n - len(b))

    out = struct.pack("<III I", APP_DESC_MAGIC, secure_version, 0, 0)
    out += field(version, 32) + field(project, 32) + field("00:00:00", 16) + field("Jan  1 2026", 16)
    out += field(idf_ver, 32) + hashlib.sha256(version.encode() + project.encode()).digest()
    return out + bytes(256 - len(out))


def _filler(n: int, seed: bytes) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def build_image(version: str = "1.0.0", size: int = 64 * 1024, *, project: str = "micropython",
                hash_appended: bool = True, segments=None, chip_id: int = CHIP_ESP32,
                min_rev: int = 0, max_rev: int = 399, entry: int = IRAM + 0x400) -> bytes:
    """A valid ESP32 app image of about `size` bytes (a firmware stand-in: it never runs).

    `segments` ([(load_addr, data), ...]) replaces the default three: DROM with the app
    description, DRAM, IRAM filled with deterministic bytes derived from the version.
    """
    if segments is None:
        body = max(size - 24 - 3 * 8 - 256 - 1024 - 48, 256) & ~3
        seed = version.encode()
        drom = app_desc(version, project) + _filler(body // 2 & ~3, seed + b"d")
        segments = [(DROM, drom), (DRAM, _filler(1024, seed + b"r")), (IRAM, _filler(body - body // 2 & ~3, seed))]
    hdr = struct.pack("<BBBBI", MAGIC, len(segments), 2, 0x20, entry)
    hdr += struct.pack("<BBBBHBHH4sB", 0xEE, 0, 0, 0, chip_id, 0, min_rev, max_rev, bytes(4), 1 if hash_appended else 0)
    out = bytearray(hdr)
    csum = 0xEF
    for load, data in segments:
        out += struct.pack("<II", load, len(data)) + data
        for b in data:
            csum ^= b
    pad = ((len(out) + 16) & ~15) - len(out)
    out += bytes(pad - 1) + bytes([csum])
    if hash_appended:
        out += hashlib.sha256(out).digest()
    return bytes(out)


def check_image(data: bytes, part_size: int = SLOT_SIZE, chip_rev: int = TWIN_CHIP_REV) -> str | None:
    """None if `data` is a valid ESP32 app image for an app slot of `part_size`, else the reason."""
    if len(data) < 24:
        return "image is %d bytes, shorter than the 24-byte header" % len(data)
    if data[0] != MAGIC:
        return "invalid magic byte 0x%02x (expected 0xE9)" % data[0]
    chip_id, = struct.unpack_from("<H", data, 12)
    if chip_id != CHIP_ESP32:
        return "mismatch chip ID, expected 0 (ESP32), found %d" % chip_id
    rmin, rmax = struct.unpack_from("<HH", data, 15)
    if rmin > chip_rev:
        return "image requires chip rev >= v%d.%d" % (rmin // 100, rmin % 100)
    if rmax not in (0, 0xFFFF) and chip_rev > rmax:
        return "image requires chip rev <= v%d.%d" % (rmax // 100, rmax % 100)
    nseg = data[1]
    if nseg > MAX_SEGMENTS:
        return "segment count %d exceeds max %d" % (nseg, MAX_SEGMENTS)
    limit = min(len(data), part_size)
    pos = 24
    csum = 0xEF
    for i in range(nseg):
        if pos + 8 > limit:
            return "segment %d header at 0x%x is beyond the image" % (i, pos)
        load, n = struct.unpack_from("<II", data, pos)
        if n & 3 or n >= 0x1000000:
            return "invalid segment length 0x%x (segment %d)" % (n, i)
        pos += 8
        if _mapped(load) and pos % 0x10000 != load % 0x10000:
            return "segment %d load address 0x%08x doesn't match data 0x%08x" % (i, load, pos)
        if pos + n > limit:
            return "segment %d (0x%x bytes at 0x%x) runs past the image" % (i, n, pos)
        for b in data[pos:pos + n]:
            csum ^= b
        pos += n
    pad = ((pos + 16) & ~15) - pos
    if pos + pad > limit:
        return "image ends before its checksum"
    if data[pos + pad - 1] != csum:
        return "checksum failed: calculated 0x%02x, read 0x%02x" % (csum, data[pos + pad - 1])
    pos += pad
    if data[23]:
        if pos + 32 > limit:
            return "image ends before its appended SHA-256"
        if hashlib.sha256(data[:pos]).digest() != data[pos:pos + 32]:
            return "image hash failed: the appended SHA-256 does not match"
        pos += 32
    if pos > part_size:
        return "image length %d doesn't fit in partition length %d" % (pos, part_size)
    return None


def describe(data: bytes) -> dict:
    """Header facts and the app description of an image (no validation)."""
    out = {"segments": data[1] if len(data) > 1 else 0, "hash_appended": bool(len(data) > 23 and data[23])}
    if len(data) >= 32 + 80:
        magic, secure, = struct.unpack_from("<II", data, 32)
        if magic == APP_DESC_MAGIC:
            out["secure_version"] = secure
            out["version"] = data[48:80].split(b"\0")[0].decode(errors="replace")
            out["project"] = data[80:112].split(b"\0")[0].decode(errors="replace")
    return out
