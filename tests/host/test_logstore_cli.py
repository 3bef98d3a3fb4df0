"""`warden logs pull` / `warden logs show` through click's CliRunner, on twin flashes holding logs written
by the host writer (same bytes as the device's), and provisioning that gives every device a log key."""
import json
import os

import pytest
from click.testing import CliRunner

from warden.board import flashimage, nvsimage, twin as twinlib
from warden.cli import main
from warden.fleet.registry import Registry
from warden.state import State

from test_logstore import KEY, OTHER, build_log


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.delenv("WARDEN_STATE", raising=False)
    return State(tmp_path / "st")


def register(state, thing, log_key=KEY, files=None):
    with Registry(state.registry_path) as reg:
        reg.add(thing, "ab" * 32, int.from_bytes(os.urandom(8), "big"), log_key=log_key)
    if files is not None:
        path = twinlib.flash_path(state, thing)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(flashimage.new_flash({"/log/" + n: d for n, d in files.items()}))
    return files


def run(state, *args):
    return CliRunner().invoke(main, ["--state", str(state.root), *args])


def test_pull_then_show_table_and_json(state, tmp_path):
    files, where = build_log()
    register(state, "dev-1", files=files)
    out = tmp_path / "pulled"
    r = run(state, "logs", "pull", "dev-1", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "pulled 3 segments" in r.output and "verified: 24 records" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["00000001.seg", "00000002.seg", "00000003.seg", "pull.json"]
    assert json.loads((out / "pull.json").read_text())["thing"] == "dev-1"
    r = run(state, "logs", "show", str(out))
    assert r.exit_code == 0, r.output
    assert "log of dev-1" in r.output and "verified: 24 records, seq 1..24, no integrity problems" in r.output
    r = run(state, "logs", "show", "dev-1", "--json", "--from", "17")
    assert r.exit_code == 0, r.output
    lines = [json.loads(l) for l in r.output.splitlines()]
    assert [l["seq"] for l in lines] == list(range(17, 25)) and all(l["type"] == "record" for l in lines)
    ev = [l for l in lines if l["kind"] == "event"][0]
    assert ev["level"] == "INFO" and ev["source"] == "test" and ev["message"].startswith("record")
    rd = [l for l in lines if l["kind"] == "reading"][0]
    assert rd["reading"]["seq"] == rd["seq"]


def test_show_lists_every_problem_and_exits_3(state, tmp_path):
    files, where = build_log()
    register(state, "dev-2", files=files)
    out = tmp_path / "p"
    assert run(state, "logs", "pull", "dev-2", "--out", str(out)).exit_code == 0
    raw = bytearray((out / "00000002.seg").read_bytes())
    raw[200] ^= 0x10
    (out / "00000002.seg").write_bytes(bytes(raw))
    (out / "00000003.seg").write_bytes((out / "00000003.seg").read_bytes()[:-7])
    r = run(state, "logs", "show", str(out), "--json")
    assert r.exit_code == 3, r.output
    problems = [json.loads(l) for l in r.output.splitlines() if json.loads(l)["type"] == "problem"]
    # record 24 is cut short, and the pull before saw it: both a truncation and a rollback
    assert {p["problem"] for p in problems} == {"tampered", "missing", "truncated", "rollback"}
    t = [p for p in problems if p["problem"] == "tampered"][0]
    assert t["segment"] == 2 and t["offset"] <= 200
    r = run(state, "logs", "show", str(out))
    assert r.exit_code == 3 and "tampered" in r.output and "truncated" in r.output and "integrity problem" in r.output


def test_rollback_is_caught_against_the_last_pull(state, tmp_path):
    files, where = build_log()
    register(state, "dev-3", files=files)
    assert run(state, "logs", "pull", "dev-3").exit_code == 0          # default folder, mark 24
    assert (state.device_dir("dev-3") / "logs" / "pull.json").exists()
    older, _ = build_log(segments=2)
    path = twinlib.flash_path(state, "dev-3")
    path.write_bytes(flashimage.new_flash({"/log/" + n: d for n, d in older.items()}))
    r = run(state, "logs", "show", "dev-3")
    assert r.exit_code == 3 and "rollback" in r.output
    r = run(state, "logs", "pull", "dev-3")
    assert r.exit_code == 0 and "1 integrity problem" in r.output


def test_wrong_or_missing_key_is_a_clear_error(state, tmp_path):
    files, _ = build_log()
    register(state, "dev-4", log_key=OTHER, files=files)
    r = run(state, "logs", "show", "dev-4")
    assert r.exit_code == 1 and r.stderr.startswith("error: wrong key") and "record" not in r.stdout
    register(state, "dev-5", log_key=None, files=files)
    r = run(state, "logs", "show", "dev-5")
    assert r.exit_code == 1 and "dev-5 has no log key" in r.stderr
    r = run(state, "logs", "pull", "dev-5")     # the copy is made; it cannot be verified
    assert r.exit_code == 0 and "not verified" in r.output
    folder = tmp_path / "loose"
    folder.mkdir()
    (folder / "00000001.seg").write_bytes(files["00000001.seg"])
    r = run(state, "logs", "show", str(folder))
    assert r.exit_code == 1 and "--thing" in r.stderr
    r = run(state, "logs", "show", str(folder), "--thing", "dev-4")
    assert r.exit_code == 1 and "wrong key" in r.stderr
    register(state, "dev-6")
    r = run(state, "logs", "show", str(folder), "--thing", "dev-6")
    assert r.exit_code == 0, r.output
    for args, msg in ((("logs", "show", "nobody"), "no device 'nobody'"),
                      (("logs", "pull", "dev-6"), "no twin flash"),
                      (("logs", "show", str(tmp_path), "--thing", "dev-6"), "no log segments")):
        r = run(state, *args)
        assert r.exit_code == 1 and msg in r.stderr and "Traceback" not in r.output, (args, r.output)


def test_empty_log_folder_on_the_twin(state):
    register(state, "dev-7", files={})
    r = run(state, "logs", "pull", "dev-7")
    assert r.exit_code == 1 and "no log segments" in r.stderr


def test_provisioning_gives_each_device_its_own_log_key_in_registry_and_nvs(state):
    from warden.fleet import devices, pki
    pki.init_pki(state)
    a = devices.add_device(state, "key-a")
    b = devices.add_device(state, "key-b")
    assert len(a.log_key) == 32 and len(b.log_key) == 32 and a.log_key != b.log_key
    assert "log_key" not in a.public_dict()
    for dev in (a, b):
        img = twinlib.flash_path(state, dev.thing).read_bytes()
        nvs = flashimage.part("nvs")
        assert nvsimage.decode(img[nvs.offset:nvs.offset + nvs.size]) == {"warden": {"log_key": dev.log_key}}
        ff = flashimage.FlashFile(twinlib.flash_path(state, dev.thing))
        assert not ff.exists("/log")     # never in the filesystem
        assert dev.log_key not in img[flashimage.VFS.offset:]


def test_pull_says_which_way_it_took_and_refuses_ways_that_cannot_be(state, tmp_path):
    # auto: the twin's flash when no twin runs on it (its lock is free), and the output says so;
    # a way that contradicts the options is a clear error before anything is read.
    from warden.logs import remote
    files, _ = build_log()
    register(state, "dev-8", files=files)
    r = run(state, "logs", "pull", "dev-8", "--out", str(tmp_path / "a"))
    assert r.exit_code == 0 and "from its twin flash (its twin is not running" in r.output, r.output
    assert remote.choose(state, "dev-8", "auto", "/dev/ttyUSB0")[0] == "serial"
    assert remote.choose(state, "nobody-here", "auto")[0] == "mqtt"       # no twin flash: a board
    for args, msg in ((("--via", "mqtt", "--port", "/dev/ttyUSB0"), "--port is a serial port"),
                      (("--via", "serial"), "--via serial needs the board's port")):
        r = run(state, "logs", "pull", "dev-8", *args)
        assert r.exit_code == 1 and msg in r.stderr and "Traceback" not in r.output, r.output
