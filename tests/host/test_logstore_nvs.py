"""The log key's home: the twin's esp32.NVS stand-in (twin/nvs.py) over the flash file's nvs partition,
with the real NVS semantics, and the host's encoder of the same format (tools/warden/board/nvsimage.py)."""
import json

import pytest

from support.devrun import MP, ROOT, run_mp
from warden.board import flashimage, nvsimage

NVS = flashimage.part("nvs")


def flash_with(tmp_path, values=None, name="flash.bin"):
    img = flashimage.new_flash({})
    if values is not None:
        img[NVS.offset:NVS.offset + NVS.size] = nvsimage.encode(values, NVS.size)
    p = tmp_path / name
    p.write_bytes(img)
    return p


def nvs_region(path):
    return path.read_bytes()[NVS.offset:NVS.offset + NVS.size]


def on_twin(flash, case):
    """Run one case of tests/support/mp/nvs_cases.py under micropython with the twin's esp32 module
    on WARDEN_FLASH=flash; the JSON it prints."""
    r = run_mp(script=MP / "nvs_cases.py", args=[case], path=[ROOT / "twin"], env={"WARDEN_FLASH": str(flash)})
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_host_image_is_read_by_the_twin(tmp_path):
    key = bytes(range(32))
    flash = flash_with(tmp_path, {"warden": {"log_key": key, "counter": -7}, "other": {"log_key": b"x"}})
    out = on_twin(flash, "host_image")
    assert out == [32, key.hex(), -7, -4364, -4354, -4354, -4361, 1, -4361]


def test_changes_are_lost_without_commit_and_kept_with_it(tmp_path):
    flash = flash_with(tmp_path)      # erased NVS: nothing stored yet
    out = on_twin(flash, "commit")
    assert out == [-4354, 1, -4354, 1, -4354, "OverflowError"]
    assert nvsimage.decode(nvs_region(flash)) == {"warden": {"blob": b"\x01\x02", "boots": 1}}


def test_erase_key_then_commit(tmp_path):
    flash = flash_with(tmp_path, {"warden": {"a": 1, "b": b"2"}})
    out = on_twin(flash, "erase_key")
    assert out == [-4354, -4354]
    assert nvsimage.decode(nvs_region(flash)) == {"warden": {"b": b"2"}}


def test_a_commit_cut_by_power_loss_keeps_the_previous_state(tmp_path):
    flash = flash_with(tmp_path, {"warden": {"n": 1}})
    on_twin(flash, "set_n")
    region = bytearray(nvs_region(flash))
    assert nvsimage.decode(region) == {"warden": {"n": 2}}
    # the power failed during that commit: its slot is half written
    for cut in (0, 16, 40):
        img = bytearray(flash.read_bytes())
        slot = NVS.offset + 4096
        img[slot + cut:slot + 4096] = b"\xff" * (4096 - cut)
        damaged = tmp_path / ("cut%d.bin" % cut)
        damaged.write_bytes(img)
        assert on_twin(damaged, "get_n") == 1
    # and a flipped bit in the newest slot also falls back to the older one
    img = bytearray(flash.read_bytes())
    img[NVS.offset + 4096 + 40] ^= 1
    (tmp_path / "flip.bin").write_bytes(img)
    assert on_twin(tmp_path / "flip.bin", "get_n") == 1


def test_encoder_is_byte_for_byte_the_twins(tmp_path):
    flash = flash_with(tmp_path)
    on_twin(flash, "two_namespaces")
    values = {"warden": {"log_key": bytes(range(32)), "z": 5}, "aaa": {"k": -1}}
    # the twin's second commit went to slot 1 with generation 1
    region = nvs_region(flash)
    assert region[4096:8192] == nvsimage.encode(values, gen=1)[:4096]
    assert nvsimage.decode(region) == values


def test_encoder_refuses_what_nvs_cannot_hold():
    for bad in ({"a" * 16: {"k": 1}}, {"ns": {"k" * 16: 1}}, {"ns": {"k": 2**31}}, {"ns": {"k": "str"}},
                {"ns": {"k": b"x" * 5000}}):
        with pytest.raises(nvsimage.NvsError):
            nvsimage.encode(bad)
    assert nvsimage.decode(b"\xff" * 0x4000) == {}
