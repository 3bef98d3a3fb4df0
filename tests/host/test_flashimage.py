"""The twin's flash file: the 4 MiB OTA layout, read back by the twin's esp32.Partition under micropython."""
import hashlib
import struct

import pytest

from support.devrun import MP, ROOT, run_mp
from warden.board import flashimage as fi


def test_layout_is_the_esp32_4mib_ota_table():
    assert [(p.label, hex(p.offset), hex(p.size)) for p in fi.LAYOUT] == [
        ("nvs", "0x9000", "0x4000"), ("otadata", "0xd000", "0x2000"), ("phy_init", "0xf000", "0x1000"),
        ("ota_0", "0x10000", "0x180000"), ("ota_1", "0x190000", "0x180000"), ("vfs", "0x310000", "0xf0000")]
    assert fi.VFS.offset + fi.VFS.size == fi.FLASH_SIZE == 4 * 1024 * 1024
    ends = [p.offset + p.size for p in fi.LAYOUT]
    assert all(e <= nxt.offset for e, nxt in zip(ends, fi.LAYOUT[1:])), "partitions overlap"


def test_partition_table_binary_format():
    t = fi.partition_table()
    assert len(t) == fi.TABLE_MAX
    n = len(fi.LAYOUT)
    magic, ptype, sub, off, size, label, flags = struct.unpack("<HBBII16sI", t[:32])
    assert (magic, ptype, off, label.rstrip(b"\0")) == (0x50AA, fi.TYPE_DATA, 0x9000, b"nvs")
    md5_entry = t[32 * n:32 * n + 32]
    assert md5_entry[:2] == b"\xeb\xeb" and md5_entry[16:] == hashlib.md5(t[:32 * n]).digest()


@pytest.fixture
def flash(tmp_path):
    p = tmp_path / "flash.bin"
    p.write_bytes(fi.new_flash({"/hello.txt": b"hello twin", "/a/b/c.bin": bytes(range(256)) * 40}))
    return p


def test_twin_partition_reads_the_table_and_mounts_the_vfs(flash):
    r = run_mp(script=MP / "flash_partition_mount.py", path=[ROOT / "twin"], env={"WARDEN_FLASH": str(flash)})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "%d 240 4096" % 0x310000
    assert lines[1] == "['ota_0', 'ota_1']"
    assert lines[2] == "hello twin 10240"
    # and the host reads what the twin wrote
    assert fi.FlashFile(flash).read("/new.txt") == b"from the twin"


def test_partition_refuses_out_of_range_access_and_bad_labels(flash):
    r = run_mp(script=MP / "flash_partition_errors.py", path=[ROOT / "twin"], env={"WARDEN_FLASH": str(flash)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split("\n")[:4] == ["label partition not found", "range 22", "b'abc\\xff'", "b'aZc\\xff'"]


def test_flashfile_edits_preserve_other_files(flash):
    ff = fi.FlashFile(flash)
    ff.write({"/x/y.txt": b"1"})
    ff.remove_tree("/a")
    ff.save()
    ff2 = fi.FlashFile(flash)
    assert ff2.read("/hello.txt") == b"hello twin" and ff2.read("/x/y.txt") == b"1"
    assert not ff2.exists("/a")


def test_flashfile_refuses_a_file_of_the_wrong_size(tmp_path):
    p = tmp_path / "short.bin"
    p.write_bytes(b"\xff" * 1000)
    with pytest.raises(ValueError, match="not a 4 MiB twin flash"):
        fi.FlashFile(p)


def _ctrlc_run(flash, *args):
    r = run_mp(script=MP / "flash_ctrlc.py", args=args, path=[ROOT / "twin"], env={"WARDEN_FLASH": str(flash)})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.split(), fi.FlashFile(flash).read("/seg.bin")


HEADER = b"HEADER:" + b"h" * 57
RECS = [b"rec%04d:" % i + b"r" * 56 for i in range(4)]
STOPPED = b"STOPPED:" + b"s" * 56


def test_twin_flash_without_ctrlc_stores_every_append(flash):
    out, seg = _ctrlc_run(flash)
    assert out == ["STORED"] and seg == HEADER + b"".join(RECS) + STOPPED


def test_ctrlc_inside_a_flash_read_loses_nothing_committed(flash):
    """Ctrl-C landing in the twin's block device while littlefs reads (the copy-on-write of a
    file's tail) left littlefs's read cache claiming bytes it never read; the device's next append
    ("app: stopped") then copied them, littlefs metadata, over the file's start: a log segment lost
    its header and its records. Now no write reaches the flash after such a cut, as after a power
    cut there (littlefs, reading back what it meant to write, gives up on the append: ENOSPC):
    every append made durable before it is intact, byte for byte."""
    out, seg = _ctrlc_run(flash, "cut")
    assert out[0] == "INTR" and out[1:] in (["STORED"], ["REFUSED", "28"]), out
    assert seg == HEADER + b"".join(RECS[:3])
    # the flash is whole: the next boot (another process) mounts it and appends as usual
    r = run_mp("import os, esp32\nv = esp32.Partition.find(esp32.Partition.TYPE_DATA, label='vfs')[0]\n"
               "os.mount(os.VfsLfs2(v), '/f')\nf = open('/f/seg.bin', 'ab')\nf.write(b'next')\nf.close()",
               path=[ROOT / "twin"], env={"WARDEN_FLASH": str(flash)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert fi.FlashFile(flash).read("/seg.bin") == HEADER + b"".join(RECS[:3]) + b"next"
