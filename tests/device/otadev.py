# Device-test helpers for the OTA engine (MicroPython): boot a copy of the template twin
# flash as the twin's ROM does (bootloader, littlefs at /), keep the host reachable at
# /host, and read signed update files.
import os
import struct
import sys

import devtest

C = devtest.ctx()["ota_vectors"]
TARGET = "esp32/warden"


def boot_flash():
    """Copy the template flash, boot it (bootloader picks the slot), mount its vfs at /."""
    path = devtest.tmp + "/flash.bin"
    buf = bytearray(4096)
    with open(C["flash"], "rb") as src, open(path, "wb") as dst:
        while src.readinto(buf):
            dst.write(buf)
    os.putenv("WARDEN_FLASH", path)
    sys.path.append(C["twin"])
    import esp32
    esp32.Partition(esp32.Partition.RUNNING)  # the bootloader runs now, as at reset
    fs = os.VfsLfs2(esp32.Partition("vfs"))
    host = os.VfsPosix("/")
    os.umount("/")
    os.mount(fs, "/")
    os.mount(host, "/host")
    sys.path[:] = [".frozen"] + ["/host" + p for p in sys.path if p.startswith("/")]
    os.chdir("/")
    return path


def update(name):
    """(manifest, signature, payload file offset, payload length) of a vector."""
    path = "/host" + C[name]
    with open(path, "rb") as f:
        head = f.read(8)
        assert head[:4] == b"WUP1"
        m_len, s_len = struct.unpack(">HH", head[4:])
        m = f.read(m_len)
        s = f.read(s_len)
        size = os.stat(path)[6] - 8 - m_len - s_len
    return m, s, 8 + m_len + s_len, size


def stream(u, name, chunk=1024, start=0, stop=None, skip=0):
    """Send the payload of `name` from `start` (to `stop`) through u.write; returns the last offset."""
    m, s, off, size = update(name)
    stop = size if stop is None else stop
    buf = bytearray(chunk)
    pos = start
    with open("/host" + C[name], "rb") as f:
        f.seek(off + pos)
        while pos < stop:
            n = f.readinto(memoryview(buf)[:min(chunk, stop - pos)])
            pos = u.write(pos, memoryview(buf)[:n])
    return pos


def install(u, name, kind=None):
    m, s, off, size = update(name)
    assert u.begin(m, s, kind) == 0
    assert stream(u, name) == size
    return u.finish()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False
