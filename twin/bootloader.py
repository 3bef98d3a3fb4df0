# The twin's second-stage bootloader, and the OTA data rules it shares with the app.
#
# What ESP-IDF does in C on a board (bootloader_utility.c, bootloader_common.c,
# esp_ota_ops.c, esp_image_format.c), over the twin's flash file, with the board's
# on-flash formats so a flash image moves between twin and board unchanged:
#
# - otadata (0xd000): two 4 KiB sectors, each starting with esp_ota_select_entry_t
#   (u32 ota_seq, 20-byte label, u32 ota_state, u32 crc32 of ota_seq). A copy is
#   valid if its seq is not 0xFFFFFFFF, its CRC matches and its state is neither
#   INVALID nor ABORTED; the valid copy with the highest seq wins and boots slot
#   (seq - 1) % 2. Both copies blank: ota_0. A new selection goes to the *other*
#   sector, so a power cut while writing it leaves the previous one in charge.
# - Rollback (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE, on in MicroPython since 1.21):
#   set_boot() writes the new copy in state NEW; the bootloader turns NEW into
#   PENDING_VERIFY when it boots it; if it finds PENDING_VERIFY at the next boot
#   (the image never confirmed itself) it marks it ABORTED, which makes the
#   previous copy the newest valid one: the old image boots again.
#   mark_app_valid_cancel_rollback() turns the running copy VALID.
# - Images: set_boot() and every boot validate the ESP32 app image (esp_image_verify):
#   magic 0xE9, chip id and revision range, at most 16 segments, each segment
#   length a multiple of 4 and inside the partition, flash-mapped segments aligned
#   to their load address modulo 64 KiB, the XOR checksum byte (seed 0xEF) at the
#   end of the 16-byte-padded image, and the appended SHA-256 when the header's
#   hash_appended byte is set. Load-address checks against the bootloader's own
#   RAM are not modelled: the twin never executes the image.
#
# Loaded on demand by esp32.py and rom.py and dropped after use (no resident heap).
import binascii
import hashlib
import struct
import sys

import esp32

from micropython import const

# Private constants (const names with a leading underscore cost no heap: every name a
# module defines stays interned for the process's life, and this runs at every boot).
_NEW = const(0)
_PENDING_VERIFY = const(1)
_VALID = const(2)
_INVALID = const(3)
_ABORTED = const(4)
STATES = {0: "new", 1: "pending-verify", 2: "valid", 3: "invalid", 4: "aborted", 0xFFFFFFFF: "undefined"}

_BLANK = const(0xFFFFFFFF)
_MAX_SEGMENTS = const(16)
_CHIP_REV = const(301)  # the twin is an ESP32 v3.1 (chip id 0)
_ERR_VALIDATE = const(-5379)  # -ESP_ERR_OTA_VALIDATE_FAILED, as MicroPython raises it
_BRICKED_EXIT = const(76)  # nothing bootable: a board would reset forever


def _crc(seq):
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


def _slots():
    """OTA app slot labels in subtype order (ota_0, ota_1)."""
    return [i[4] for i in sorted(esp32._table(), key=lambda i: i[1]) if i[0] == 0 and 0x10 <= i[1] < 0x20]


def _part(label):
    # The ROM's own view of a partition (the block device): the bootloader needs no more,
    # and loading esp32.Partition's API at every boot would cost the app heap.
    return esp32._Dev(esp32._find(label))


def next_update(part):
    """esp_ota_get_next_update_partition: the OTA slot after `part` (or the first one)."""
    slots = _slots()
    me = part.info()[4]
    return esp32.Partition(slots[(slots.index(me) + 1) % len(slots)] if me in slots else slots[0])


def arm():
    """WARDEN_CUT="N[:K]": count flash operations (erases, writes) in esp32.ops and cut the
    power (SIGKILL) during the N-th, after K of its bytes (default half) reached the flash."""
    import os
    n, _, k = os.getenv("WARDEN_CUT").partition(":")
    cut = int(n)
    P = esp32._Dev  # every esp32.Partition and the vfs write through it
    esp32.ops = 0

    def op(f, data, reps):
        esp32.ops += 1
        if esp32.ops == cut:
            size = len(data) * reps
            left = min(int(k), size) if k else size // 2
            while left > 0:
                f.write(data[:left])
                left -= len(data)
            print("twin: power cut during flash operation %d" % cut)
            os.system("kill -9 $PPID")  # the parent of this shell is us
        for _ in range(reps):
            f.write(data)

    def erase(self, blk):
        op(self._seek(blk, 0, 4096), esp32._ERASED, 16)

    def writeblocks(self, blk, buf, offset=None):
        if offset is None:
            for b in range(blk, blk + (len(buf) + 4095) // 4096):
                self._erase(b)
            offset = 0
        op(self._seek(blk, offset, len(buf)), buf, 1)

    P._erase = erase
    P.writeblocks = writeblocks


def read():
    """The two otadata copies as [seq, label, state, crc] lists."""
    part = _part("otadata")
    out = []
    buf = bytearray(32)
    for i in (0, 1):
        part.readblocks(i, buf)
        out.append(list(struct.unpack("<I20sII", buf)))
    return out


def _valid(e):
    return e[0] != _BLANK and e[3] == _crc(e[0]) and e[2] != _INVALID and e[2] != _ABORTED


def _invalid(e):
    return e[0] == _BLANK or e[3] != _crc(e[0])


def active(entries):
    """Index of the copy in charge (highest seq among valid ones), or -1."""
    ok0, ok1 = _valid(entries[0]), _valid(entries[1])
    if ok0 and ok1:
        return 0 if entries[0][0] >= entries[1][0] else 1
    return 0 if ok0 else (1 if ok1 else -1)


def _write(i, e):
    """Erase sector i and write copy e (as write_otadata / rewrite_ota_seq do)."""
    _part("otadata").writeblocks(i, struct.pack("<I20sII", e[0], e[1], e[2], e[3]))


def boot_label():
    """esp_ota_get_boot_partition: the slot that boots at the next reset."""
    slots = _slots()
    e = read()
    if (_invalid(e[0]) and _invalid(e[1])) or not slots:
        return slots[0] if slots else None
    a = active(e)
    if a < 0:
        return slots[0]
    return slots[(e[a][0] - 1) % len(slots)]


# -- image validation -----------------------------------------------------------------
def verify(part):
    """None if `part` holds a valid ESP32 app image, else the reason (esp_image_verify)."""
    size = part.ioctl(4, 0) * 4096
    hdr = bytearray(24)
    part.readblocks(0, hdr)
    if hdr[0] != 0xE9:
        return "invalid magic byte 0x%02x (nothing flashed here?)" % hdr[0]
    chip = hdr[12] | hdr[13] << 8
    if chip != 0:
        return "mismatch chip ID, expected 0, found %d" % chip
    rmin = hdr[15] | hdr[16] << 8
    rmax = hdr[17] | hdr[18] << 8
    if rmin > _CHIP_REV:
        return "image requires chip rev >= v%d.%d, but chip is v3.1" % (rmin // 100, rmin % 100)
    if rmax not in (0, 0xFFFF) and _CHIP_REV > rmax:
        return "image requires chip rev <= v%d.%d, but chip is v3.1" % (rmax // 100, rmax % 100)
    nseg = hdr[1]
    if nseg > _MAX_SEGMENTS:
        return "segment count %d exceeds max %d" % (nseg, _MAX_SEGMENTS)
    sha = hashlib.sha256(hdr) if hdr[23] else None
    # 256-byte steps: the XOR and its big-int temporaries stay small (on a board this is
    # C and costs the app no heap; here it runs in the app's heap, during an update).
    buf = bytearray(256)
    sh = bytearray(8)
    acc = 0xEF
    pos = 24
    for i in range(nseg):
        if pos + 8 > size:
            return "segment %d header at 0x%x is beyond the partition" % (i, pos)
        part.readblocks(0, sh, pos)
        if sha:
            sha.update(sh)
        load, n = struct.unpack("<II", sh)
        if n & 3 or n >= 0x1000000:
            return "invalid segment length 0x%x (segment %d)" % (n, i)
        pos += 8
        mapped = 0x400D0000 <= load < 0x40400000 or 0x3F400000 <= load < 0x3F800000
        if mapped and pos % 0x10000 != load % 0x10000:
            return "segment %d load address 0x%08x doesn't match data 0x%08x" % (i, load, pos)
        if pos + n > size:
            return "segment %d (0x%x bytes at 0x%x) runs past the partition" % (i, n, pos)
        while n:
            k = min(n, 256)
            mv = memoryview(buf)[:k]
            part.readblocks(0, mv, pos)
            acc ^= int.from_bytes(mv, "little")
            if sha:
                sha.update(mv)
            pos += k
            n -= k
    pad = ((pos + 16) & ~15) - pos  # padding, then the checksum in the block's last byte
    if pos + pad > size:
        return "image length doesn't fit in the partition"
    tail = bytearray(pad)
    part.readblocks(0, tail, pos)
    calc = 0
    for b in acc.to_bytes(256, "little"):
        calc ^= b
    if calc != tail[pad - 1]:
        return "checksum failed: calculated 0x%02x, read 0x%02x" % (calc, tail[pad - 1])
    pos += pad
    if sha:
        sha.update(tail)
        if pos + 32 > size:
            return "image length %d doesn't fit in partition length %d" % (pos + 32, size)
        digest = bytearray(32)
        part.readblocks(0, digest, pos)
        if sha.digest() != digest:
            return "image hash failed: the appended SHA-256 does not match"
    return None


def app_version(part):
    """The version string of esp_app_desc_t in the image's first segment, or None."""
    buf = bytearray(48)
    part.readblocks(0, buf, 32)
    if buf[:4] != b"\x32\x54\xcd\xab":
        return None
    return bytes(buf[16:48]).split(b"\x00")[0].decode()


# -- the app side (esp_ota_ops) -------------------------------------------------------
def set_boot(part):
    """esp_ota_set_boot_partition: validate, then point the other otadata copy at `part`."""
    why = verify(part)
    if why:
        print("E (twin) esp_image: %s" % why)
        raise OSError(_ERR_VALIDATE, "ESP_ERR_OTA_VALIDATE_FAILED")
    slots = _slots()
    label = part.info()[4]
    if label not in slots:
        raise OSError(-258, "ESP_ERR_INVALID_ARG")
    idx = slots.index(label)
    n = len(slots)
    e = read()
    a = active(e)
    if a >= 0:
        seq = e[a][0]
        i = 0
        while seq > (idx + 1) % n + i * n:
            i += 1
        nxt = 1 - a
        e[nxt][0] = (idx + 1) % n + i * n
        e[nxt][2] = _NEW
        e[nxt][3] = _crc(e[nxt][0])
        _write(nxt, e[nxt])
    else:
        _write(0, [idx + 1, b"\xff" * 20, _NEW, _crc(idx + 1)])


def mark_valid():
    """esp_ota_mark_app_valid_cancel_rollback: the running copy becomes VALID (in place)."""
    e = read()
    a = active(e)
    if a < 0 or not _slots():
        print("E (twin) esp_ota_ops: Running firmware is factory")
        raise OSError(1, "ESP_FAIL")
    if e[a][2] != _VALID:
        e[a][2] = _VALID
        e[a][3] = _crc(e[a][0])
        _write(a, e[a])


# -- the bootloader -------------------------------------------------------------------
def vfs():
    """The block device of the vfs partition, for rom.py to mount (made here, in a frame that
    ends, rather than in rom.py, whose frame stays on the stack for the device's whole life)."""
    try:
        return _part("vfs")
    except ValueError:
        raise OSError("twin: no vfs partition in the flash's partition table")


def boot():
    """Choose and check the slot to run, as the bootloader does at reset; record it in esp32."""
    slots = _slots()
    n = len(slots)
    e = read()
    for i in (0, 1):
        if e[i][2] == _PENDING_VERIFY:
            print("twin: bootloader: %s was not confirmed before this reset: aborted (rollback)"
                  % slots[(e[i][0] - 1) % n])
            e[i][2] = _ABORTED
            _write(i, e[i])
    initial = False
    if (_invalid(e[0]) and _invalid(e[1])) or not n:
        index = 0
        initial = True
    else:
        a = active(e)
        if a >= 0:
            index = (e[a][0] - 1) % n
            if e[a][2] == _NEW:
                print("twin: bootloader: first boot of %s (pending verify)" % slots[index])
                e[a][2] = _PENDING_VERIFY
                _write(a, e[a])
        else:
            print("twin: bootloader: no valid otadata, trying every slot")
            index = -1
    order = list(range(index, -1, -1)) + list(range(index + 1, n))
    for idx in order:
        part = _part(slots[idx])
        why = verify(part)
        if why is None:
            if initial:
                _write(0, [idx + 1, b"\xff" * 20, _VALID, _crc(idx + 1)])
            if idx != index:
                print("twin: bootloader: fell back to %s" % slots[idx])
            esp32._running = slots[idx]
            return slots[idx]
        if not why.startswith("invalid magic byte 0xff"):
            print("E (twin) esp_image: %s: %s" % (slots[idx], why))
    # No image anywhere. A flash file made before the twin had firmware images has
    # blank app slots: run it as ota_0, as the twin always did.
    blank = bytearray(1)
    for s in slots:
        _part(s).readblocks(0, blank)
        if blank[0] != 0xFF:
            print("twin: bootloader: no bootable app partition (a board resets here, forever)")
            sys.exit(_BRICKED_EXIT)
    esp32._running = slots[0] if slots else None
    return esp32._running
