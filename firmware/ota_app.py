# OTA payload sink for `app` updates: the bundle is staged raw in /app/stage (its
# length is the durable offset), and unpacked into the inactive app slot only after
# its SHA-256 matched; the swap is the slot pointer (firmware/slots.py).
# Loaded by firmware/ota.py while such an update runs.
import gc
import os
import struct

from micropython import const

from firmware import slots
from firmware.ota import OTAError
from firmware.ota_state import rm

STAGE = "/app/stage"
APP_MAX = const(262144)  # a bundle larger than this is refused (free space is checked too)
_BLOCK = const(4096)
_FILES_MAX = const(256)


def rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _du(path):
    """Flash `path` occupies, in 4 KiB blocks (one more per file for its metadata)."""
    n = 0
    try:
        for e in os.ilistdir(path):
            n += _du(path + "/" + e[0]) if e[1] == 0x4000 else (e[3] + 2 * _BLOCK - 1) // _BLOCK * _BLOCK
    except OSError:
        pass
    return n


def _path(p):
    """The bundle path rules (as tools/warden/ota/image.py): relative, under firmware/ or lib/."""
    parts = p.split("/")
    if len(parts) < 2 or parts[0] not in ("firmware", "lib"):
        raise OTAError("malformed app bundle: %r is not under firmware/ or lib/" % p)
    for c in parts:
        bad = c in ("", ".", "..")
        for ch in c:   # (a loop, not a generator: this runs where the heap is tightest, the install)
            if not (ch.isalpha() or ch.isdigit() or ch in "_.-"):
                bad = True
        if bad:
            raise OTAError("malformed app bundle: path %r has a bad component %r" % (p, c))


class Sink:
    def __init__(self):
        self.slot = slots.inactive()
        self.f = None
        self.dirty = 0

    def capacity(self):
        st = os.statvfs("/")
        free = st[0] * st[4] + _du(slots.path(self.slot)) + _du(STAGE)
        return min(APP_MAX, (free - 8 * _BLOCK) // 2)  # the staged bundle and its unpacked copy

    def start(self):
        rm(STAGE)
        rmtree(slots.path(self.slot))
        try:
            os.mkdir(slots.APP)
        except OSError:
            pass  # already there
        self.f = open(STAGE, "wb")
        return 0

    def resume(self, h, size):
        try:
            pos = os.stat(STAGE)[6]
        except OSError:
            return self.start()
        if pos > size:
            return self.start()
        buf = bytearray(512)
        with open(STAGE, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(memoryview(buf)[:n])
        self.f = open(STAGE, "ab")
        return pos

    def write(self, mv):
        self.f.write(mv)
        self.dirty += len(mv)
        if self.dirty >= 16384:
            self.f.flush()  # littlefs: durable from here on
            self.dirty = 0

    def close(self):
        if self.f:
            self.f.close()
            self.f = None

    def commit(self, f=None):
        dest = slots.path(self.slot)
        rmtree(dest)
        os.mkdir(dest)
        try:
            _unpack(dest)
        except BaseException:
            rmtree(dest)  # nothing half-unpacked stays behind
            raise
        slots.activate(self.slot)
        rm(STAGE)


def _unpack(dest):
    buf = bytearray(512)
    names = set()
    with open(STAGE, "rb") as f:
        if f.read(4) != b"WAB1":
            raise OTAError("malformed app bundle: no WAB1 header")
        while True:
            n = f.read(1)
            if not n:
                raise OTAError("malformed app bundle: ends without its end byte")
            if n[0] == 0:
                break
            p = f.read(n[0])
            size = f.read(4)
            if len(p) != n[0] or len(size) != 4:
                raise OTAError("malformed app bundle: truncated entry")
            try:
                p = p.decode()
            except UnicodeError:
                raise OTAError("malformed app bundle: a path is not ASCII")
            _path(p)
            if p in names or len(names) >= _FILES_MAX:
                raise OTAError("malformed app bundle: %s appears twice, or too many files" % p)
            names.add(p)
            d = dest
            for c in p.split("/")[:-1]:
                d += "/" + c
                try:
                    os.mkdir(d)
                except OSError:
                    pass
            left = struct.unpack(">I", size)[0]
            gc.collect()   # the last file's 640-byte littlefs object, before the next one
            with open(dest + "/" + p, "wb") as out:
                while left:
                    k = f.readinto(memoryview(buf)[:min(left, 512)])
                    if not k:
                        raise OTAError("malformed app bundle: %s runs past the end" % p)
                    out.write(memoryview(buf)[:k])
                    left -= k
        if f.read(1):
            raise OTAError("malformed app bundle: bytes after the end")
    if not names:
        raise OTAError("malformed app bundle: no files")
