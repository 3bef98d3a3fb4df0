"""The twin's esp32.Partition OTA rules under micropython: otadata, set_boot's image check,
pending-verify and rollback, and power cuts (SIGKILL) in the middle of every otadata write.

Each micropython run is one boot of the board: the bootloader runs when the process first
asks for the running partition, as it runs before the app on a board.
"""
import struct

import pytest

from support.devrun import run_mp
from warden.board import build, espimage, flashimage as fi

OTA0, OTA1, OTADATA = fi.part("ota_0"), fi.part("ota_1"), fi.part("otadata")

STATE = """
import esp32, bootloader
P = esp32.Partition
def state():
    return '%s %s %s' % (P(P.RUNNING).info()[4], P(P.BOOT).info()[4],
                         ','.join('%d/%s' % (e[0] if e[0] != 0xFFFFFFFF else -1, bootloader.STATES[e[2]])
                                  for e in bootloader.read()))
"""


def make_flash(path, factory=True):
    img = fi.new_flash({"/x": b"1"}, firmware=b"")  # no image anywhere unless `factory`
    if factory:
        f0 = espimage.build_image("1.0.0", 96 * 1024)
        img[OTA0.offset:OTA0.offset + len(f0)] = f0
    path.write_bytes(img)
    return path


def boot(flash, code="", cut=None, check=True):
    """One boot: run `code` after STATE is defined; returns stdout lines."""
    env = {"WARDEN_FLASH": str(flash), "WARDEN_CUT": cut or "0"}  # 0: count operations, no cut
    # the ROM modules precompiled, as the twin loads them (from source they would not fit 64k)
    r = run_mp(STATE + code, path=[build.build_twin_rom()], env=env)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def lines(r):
    return [x for x in r.stdout.splitlines() if not x.startswith(("twin: ", "E (twin)"))]


def write_image(flash, slot, image):
    with open(flash, "r+b") as f:
        f.seek(slot.offset)
        f.write(image)


def otadata(flash):
    raw = flash.read_bytes()[OTADATA.offset:OTADATA.offset + OTADATA.size]
    return [struct.unpack_from("<I20sII", raw, i * 4096) for i in (0, 1)]


@pytest.fixture
def flash(tmp_path):
    return make_flash(tmp_path / "flash.bin")


def test_blank_otadata_boots_ota_0_and_records_it(flash):
    r = boot(flash, "print(state()); print(P(P.RUNNING).get_next_update().info()[4], "
                    "P('ota_1').get_next_update().info()[4], P('vfs').get_next_update().info()[4])")
    assert lines(r) == ["ota_0 ota_0 1/valid,-1/undefined", "ota_1 ota_0 ota_0"]
    # what ESP-IDF's bootloader writes when it first boots from blank otadata (set_actual_ota_seq)
    seq, label, st, crc = otadata(flash)[0]
    import binascii
    assert (seq, st, crc) == (1, 2, binascii.crc32(struct.pack("<I", 1), 0xFFFFFFFF))


def test_update_is_pending_until_confirmed_and_a_reset_before_that_rolls_back(flash):
    write_image(flash, OTA1, espimage.build_image("2.0.0", 128 * 1024))
    r = boot(flash, "print(state()); P(P.RUNNING).get_next_update().set_boot(); print(state())")
    assert lines(r) == ["ota_0 ota_0 1/valid,-1/undefined", "ota_0 ota_1 1/valid,2/new"]
    r = boot(flash, "print(state())")
    assert "twin: bootloader: first boot of ota_1 (pending verify)" in r.stdout
    assert lines(r) == ["ota_1 ota_1 1/valid,2/pending-verify"]
    # reset without mark_app_valid_cancel_rollback: the bootloader goes back to ota_0
    r = boot(flash, "print(state())")
    assert "ota_1 was not confirmed before this reset: aborted (rollback)" in r.stdout
    assert lines(r) == ["ota_0 ota_0 1/valid,2/aborted"]
    assert lines(boot(flash, "print(state())")) == ["ota_0 ota_0 1/valid,2/aborted"]
    # again, and this time the new image confirms itself: it stays
    boot(flash, "state(); P('ota_1').set_boot()")
    r = boot(flash, "state(); P.mark_app_valid_cancel_rollback(); print(state())")
    assert lines(r) == ["ota_1 ota_1 1/valid,2/valid"]
    assert lines(boot(flash, "print(state())")) == ["ota_1 ota_1 1/valid,2/valid"]
    # confirming a valid image again is harmless: no flash write at all
    r = boot(flash, "state(); n = esp32.ops; P.mark_app_valid_cancel_rollback(); print(esp32.ops - n, state())")
    assert lines(r)[-1].startswith("0 ota_1 ota_1")
    # and the next update goes to ota_0, the slot after the running one
    r = boot(flash, "print(P(P.RUNNING).get_next_update().info()[4])")
    assert lines(r) == ["ota_0"]


def test_set_boot_on_the_running_slot_keeps_it(flash):
    r = boot(flash, "state(); P(P.RUNNING).set_boot(); print(state())")
    assert lines(r)[-1].startswith("ota_0 ota_0")
    assert lines(boot(flash, "state(); P.mark_app_valid_cancel_rollback(); print(state())"))[-1].startswith("ota_0 ota_0")


def _defects():
    good = espimage.build_image("2.0.0", 64 * 1024)

    def patch(at, value):
        b = bytearray(good)
        b[at:at + len(value)] = value
        return bytes(b)

    seg0_len = struct.unpack_from("<I", good, 28)[0]
    end = len(good) - 32  # before the appended hash
    return {
        "blank slot": b"\xff" * 4096,
        "magic byte": patch(0, b"\xe8"),
        "chip id (ESP32-S3)": patch(12, struct.pack("<H", 9)),
        "needs a newer chip revision": patch(15, struct.pack("<H", 400)),
        "too old for this chip": patch(17, struct.pack("<H", 100)),
        "17 segments": patch(1, b"\x11"),
        "segment length not a multiple of 4": patch(28, struct.pack("<I", seg0_len + 2)),
        "segment runs past the partition": patch(28, struct.pack("<I", 0x200000)),
        "mapped segment misaligned": patch(24, struct.pack("<I", 0x3F400040)),
        "checksum byte": patch(end - 1, bytes([good[end - 1] ^ 1])),
        "segment data altered": patch(1000, bytes([good[1000] ^ 0x10])),
        "appended hash altered": patch(len(good) - 1, bytes([good[-1] ^ 1])),
        "truncated": good[:len(good) // 2] + b"\xff" * 16,
    }


def test_set_boot_refuses_every_broken_image_and_changes_nothing(flash):
    defects = _defects()
    for name, img in defects.items():
        assert espimage.check_image(img) is not None, "host check missed: " + name
    # one process per defect would be slow: write each in turn into ota_1 from micropython
    paths = []
    for i, (name, img) in enumerate(defects.items()):
        p = flash.parent / ("img%d.bin" % i)
        p.write_bytes(img)
        paths.append((name, str(p)))
    code = """
before = state()
nxt = P('ota_1')
for name, path in %r:
    for b in range(24):
        nxt.ioctl(6, b)  # erase what the last image used
    buf = bytearray(4096)
    with open(path, 'rb') as f:
        b = 0
        while True:
            n = f.readinto(buf)
            if not n:
                break
            nxt.writeblocks(b, memoryview(buf)[:n], 0)
            b += 1
    try:
        nxt.set_boot()
        print(name, 'ACCEPTED')
    except OSError as e:
        print(name, '|', e.args[0], e.args[1], '|', state() == before)
""" % paths
    r = boot(flash, code)
    out = {ln.split(" |")[0]: ln for ln in lines(r) if " |" in ln or "ACCEPTED" in ln}
    assert len(out) == len(defects), r.stdout
    for name in defects:
        assert out[name] == "%s | -5379 ESP_ERR_OTA_VALIDATE_FAILED | True" % name, out[name]
    # the board logs why (esp_image): the reasons match the host-side check
    assert "E (twin) esp_image: checksum failed" in r.stdout
    assert "E (twin) esp_image: image hash failed" in r.stdout
    assert "E (twin) esp_image: invalid magic byte 0xe8" in r.stdout
    # the good image is accepted by the same code path
    write_image(flash, OTA1, espimage.build_image("2.0.0", 64 * 1024))
    assert lines(boot(flash, "state(); P('ota_1').set_boot(); print(state())")) == ["ota_0 ota_1 1/valid,2/new"]


def test_corrupt_image_in_the_selected_slot_falls_back_to_a_valid_one(flash):
    write_image(flash, OTA1, espimage.build_image("2.0.0", 64 * 1024))
    boot(flash, "state(); P('ota_1').set_boot()")
    write_image(flash, OTA1, b"\x00" * 64)  # the selected image rots before the reset
    r = boot(flash, "print(state())")
    assert "fell back to ota_0" in r.stdout
    assert lines(r)[-1].startswith("ota_0 ")


def test_nothing_bootable_is_a_bricked_board(flash):
    write_image(flash, OTA0, b"\x00" * 64)
    r = boot(flash, "print(state())", check=False)
    assert r.returncode == 76 and "no bootable app partition" in r.stdout


def test_old_flash_without_images_still_runs_as_ota_0_and_cannot_confirm(tmp_path):
    flash = make_flash(tmp_path / "old.bin", factory=False)
    r = boot(flash, """
print(P(P.RUNNING).info()[4])
try:
    P.mark_app_valid_cancel_rollback()
except OSError as e:
    print(e.args)
""")
    assert lines(r) == ["ota_0", "(1, 'ESP_FAIL')"]
    assert "Running firmware is factory" in r.stdout


# -- power cuts during otadata writes -------------------------------------------------------------
def _count_ops(flash, code):
    r = boot(flash, "import esp32\n" + code + "\nprint('OPS', esp32.ops)")
    return int([x for x in r.stdout.splitlines() if x.startswith("OPS")][0].split()[1])


VALID_END = {"ota_0", "ota_1"}


def _after_cut(flash):
    """Two boots after a power cut: each must boot a valid image; returns the running slots."""
    a = lines(boot(flash, "print(state())"))[-1].split()[0]
    b = lines(boot(flash, "print(state())"))[-1].split()[0]
    return a, b


@pytest.mark.parametrize("tear", ["0", "16", "31", "32"])
def test_power_cut_in_set_boot_leaves_old_or_new_never_nothing(tmp_path, tear):
    base = make_flash(tmp_path / "base.bin")
    write_image(base, OTA1, espimage.build_image("2.0.0", 64 * 1024))
    boot(base, "state()")  # first boot writes otadata[0]
    code = "P('ota_1').set_boot()"
    probe = tmp_path / "probe.bin"
    probe.write_bytes(base.read_bytes())
    before = _count_ops(probe, "P(P.RUNNING)")
    probe.write_bytes(base.read_bytes())
    total = _count_ops(probe, "P(P.RUNNING)\n" + code)
    assert total - before == 2  # erase the other sector, write the entry
    outcomes = set()
    for op in range(before + 1, total + 1):
        f = tmp_path / ("cut%d.bin" % op)
        f.write_bytes(base.read_bytes())
        r = boot(f, "P(P.RUNNING)\n" + code, cut="%d:%s" % (op, tear), check=False)
        assert r.returncode == -9, r.stdout + r.stderr  # SIGKILL: a power cut
        first, second = _after_cut(f)
        assert first in VALID_END and second in VALID_END
        outcomes.add(first)
    if tear == "32":
        assert "ota_1" in outcomes  # the entry fully written before the cut: the new image boots
    else:
        assert outcomes == {"ota_0"}


@pytest.mark.parametrize("phase", ["bootloader-new-to-pending", "mark-valid", "bootloader-abort"])
def test_power_cut_in_the_other_otadata_writes_still_boots_a_valid_image(tmp_path, phase):
    base = make_flash(tmp_path / "base.bin")
    write_image(base, OTA1, espimage.build_image("2.0.0", 64 * 1024))
    boot(base, "state(); P('ota_1').set_boot()")
    if phase == "bootloader-new-to-pending":
        code, ops = "P(P.RUNNING)", 2
    elif phase == "mark-valid":  # the new image's first boot (new -> pending), then it confirms itself
        code, ops = "P(P.RUNNING); P.mark_app_valid_cancel_rollback()", 4
    else:
        boot(base, "P(P.RUNNING)")  # pending verify; the next boot aborts it
        code, ops = "P(P.RUNNING)", 2
    total = _count_ops(_copy(base, tmp_path / "probe.bin"), code)
    assert total == ops  # each otadata write is an erase and a write
    seen = set()
    for op in range(1, total + 1):
        for tear in ("0", "20"):
            f = _copy(base, tmp_path / "cut.bin")
            r = boot(f, code, cut="%d:%s" % (op, tear), check=False)
            assert r.returncode == -9
            first, second = _after_cut(f)
            assert first in VALID_END and second in VALID_END, (op, tear)
            seen.add(first)
    assert seen <= VALID_END and seen


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst
