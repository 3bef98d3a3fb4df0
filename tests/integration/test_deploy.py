"""The board path end to end, as far as a machine without a board goes.

- The littlefs image `warden deploy --image` writes at 0x310000 is put into a twin's flash at
  the vfs offset and the twin boots from it: a reading reaches the broker. Same geometry, same
  bytes: the board's filesystem is proven bootable.
- The mpremote path runs against the real MicroPython unix port on a pseudo-terminal
  (tests/support/boardsim.py), whose raw REPL is a board's: files are copied, hashed back, an existing
  identity is kept and a foreign one refused; the twin then boots from what mpremote wrote, and
  `warden logs pull --port auto` finds it (the port list faked: no USB here) and reads its log back
  over mpremote.
- The esptool image path's logic (identity check, logs saved before overwriting, read-back
  compare) runs against a flash file standing in for the chip's flash.
"""
import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from support.boardsim import BoardSim
from support.twinproc import Twin
from warden.board import deploy, flashimage, nvsimage, ports
from warden.cli import main
from warden.fleet import devices
from warden.state import State

# The filesystem is what these tests prove; the 64k device heap budget is tests/integration/test_twin.py's
# (a board has ~110 KB of GC heap).
HEAP = "96k"


@pytest.fixture(scope="module")
def fleet(pki_state):
    return pki_state


def _add(state, thing):
    devices.add_device(state, thing)
    return thing


def _cfg(state, thing, broker, **kw):
    return deploy.board_config(state, thing, wifi_ssid="lab-net", wifi_password="not-logged-pw",
                               broker_host="localhost", broker_port=broker.port, interval_ms=50, **kw)


def _blank_board(path):
    img = flashimage.new_flash({})
    img[flashimage.VFS.offset:flashimage.VFS.offset + flashimage.VFS.size] = b"\xff" * flashimage.VFS.size
    path.write_bytes(img)
    return path


def _readings(probe, thing, n, twin=None):
    out = []
    while len(out) < n:
        try:
            m = probe.expect(f"dt/warden/{thing}/telemetry", timeout=15)
        except TimeoutError as e:
            raise AssertionError(f"{e}; twin output:\n{twin.output if twin else ''}") from None
        out.append(json.loads(m.payload))
    return out


def test_board_image_boots_on_the_twin(fleet, broker, mqtt_client, tmp_path):
    thing = _add(fleet, "board-img")
    image_path, files = deploy.write_image_file(fleet, thing, _cfg(fleet, thing, broker, max_readings=3),
                                                tmp_path / "vfs.bin")
    image = image_path.read_bytes()
    assert len(image) == flashimage.VFS.size == 0xF0000
    assert image_path.stat().st_mode & 0o777 == 0o600
    # the esptool command that would write it
    argv = deploy.write_image_argv("/dev/ttyUSB0", image_path)
    assert argv[-3:] == ["write-flash", "0x310000", str(image_path)]
    # byte for byte into a twin's flash at the vfs offset
    flash = bytearray(flashimage.new_flash({}))
    flash[flashimage.VFS.offset:flashimage.VFS.offset + len(image)] = image
    fp = tmp_path / "flash.bin"
    fp.write_bytes(flash)
    op = mqtt_client("operator")
    op.subscribe(f"dt/warden/{thing}/#")
    t = Twin(fp, HEAP).start()
    try:
        got = _readings(op, thing, 3, t)
        assert t.wait_exit(30) == 0, t.output
    finally:
        t.stop()
    assert [r["seq"] for r in got] == list(range(got[0]["seq"], got[0]["seq"] + 3))
    assert set(got[0]["values"]) == {"chip_temperature"}
    assert "not-logged-pw" not in t.output


@pytest.fixture
def board(tmp_path):
    sims = []

    def make():
        s = BoardSim(_blank_board(tmp_path / f"board{len(sims)}.bin")).start()
        sims.append(s)
        return s

    yield make
    for s in sims:
        s.stop()


def test_mpremote_deploy_verifies_keeps_identity_and_the_twin_boots_it(fleet, broker, mqtt_client, board, tmp_path,
                                                                       monkeypatch):
    thing = _add(fleet, "board-mp")
    sim = board()
    cfg = _cfg(fleet, thing, broker, max_readings=2)
    said = []
    r = deploy.deploy_mpremote(fleet, thing, "PORT", cfg, runner=sim.runner, say=said.append)
    assert r.identity_written and sim.resets == 2   # into maintenance mode and out of it
    assert all(r.verified[p] == deploy.sha256_hex(d) for p, d in r.files.items())
    cmds = [" ".join(c) for c in sim.commands]
    assert all(re.search(r"-m mpremote connect PORT resume ", c) for c in cmds), cmds
    sim.stop()
    ff = flashimage.FlashFile(sim.flash)
    for p, d in r.files.items():
        assert ff.read(p) == d, p
    assert not ff.exists(deploy.MAINTENANCE_FILE)
    assert json.loads(ff.read("/config.json"))["wifi"] == {"ssid": "lab-net", "password": "not-logged-pw"}

    # again: the same identity is kept, not rewritten
    sim.start()
    r2 = deploy.deploy_mpremote(fleet, thing, "PORT", cfg, runner=sim.runner)
    assert not r2.identity_written
    # another device's files on this board: refused, nothing changed
    other = _add(fleet, "board-mp-other")
    with pytest.raises(deploy.DeployError, match="already holds another identity"):
        deploy.deploy_mpremote(fleet, other, "PORT", _cfg(fleet, other, broker), runner=sim.runner)
    sim.stop()
    ff = flashimage.FlashFile(sim.flash)
    assert ff.read("/identity/cert.der") == r.files["/identity/cert.der"]
    assert json.loads(ff.read("/config.json"))["thing"] == thing

    # the board's first boot moves /identity/log_key into NVS (firmware/hal/esp32.py); the twin's
    # hal reads NVS only, so put it there as that boot would
    img = bytearray(sim.flash.read_bytes())
    nvs = flashimage.part("nvs")
    img[nvs.offset:nvs.offset + nvs.size] = nvsimage.encode({"warden": {"log_key": r.files[deploy.LOG_KEY_FILE]}},
                                                            nvs.size)
    sim.flash.write_bytes(img)
    op = mqtt_client("operator")
    op.subscribe(f"dt/warden/{thing}/telemetry")
    t = Twin(sim.flash, HEAP).start()
    try:
        assert len(_readings(op, thing, 2, t)) == 2
        assert t.wait_exit(30) == 0, t.output
    finally:
        t.stop()

    # warden logs pull THING --port auto: the one board attached (the simulated board's serial
    # line, listed as a USB port), its log of that run over mpremote, verified
    sim.start()
    monkeypatch.setattr(ports, "comports", lambda: [ports.Port(sim.port, "CP2102 USB to UART", 0x10C4, 0xEA60)])
    r = CliRunner().invoke(main, ["--state", str(fleet.root), "logs", "pull", thing, "--port", "auto",
                                  "--out", str(tmp_path / "pulled")])
    assert r.exit_code == 0 and "verified:" in r.output, r.output
    pulled = deploy.pull_logs(fleet, thing, "PORT", tmp_path / "pulled2", runner=sim.runner)
    assert pulled.files and pulled.error is None, pulled.error
    assert pulled.report.ok, pulled.report.problems
    assert any("first reading" in r.fields()["message"] for r in pulled.report.records)


def test_logs_pull_from_a_board_without_a_log_says_so(fleet, board, monkeypatch):
    thing = _add(fleet, "board-nolog")
    sim = board()
    from warden.logs.format import LogError
    with pytest.raises(LogError, match="no log segments"):
        deploy.pull_logs(fleet, thing, "PORT", runner=sim.runner)
    # through the CLI, the board found by --port auto among a PC's own UARTs
    monkeypatch.setattr(ports, "comports", lambda: [ports.Port("/dev/ttyS0", "ttyS0", None, None),
                                                    ports.Port(sim.port, "USB Serial", 0x1A86, 0x7523)])
    r = CliRunner().invoke(main, ["--state", str(fleet.root), "logs", "pull", thing, "--port", "auto"])
    assert r.exit_code == 1 and f"error: the board on {sim.port} has no log segments" in r.output, r.output


class FlashChip:
    """The chip's flash behind esptool's read-flash / write-flash (there is no board here)."""

    def __init__(self, path):
        self.path = Path(path)
        self.calls = []

    def runner(self, argv):
        self.calls.append(argv)
        img = bytearray(self.path.read_bytes())
        i = argv.index("read-flash") if "read-flash" in argv else argv.index("write-flash")
        if argv[i] == "read-flash":
            off, size, out = int(argv[i + 1], 16), int(argv[i + 2], 16), argv[i + 3]
            Path(out).write_bytes(img[off:off + size])
        else:
            off, data = int(argv[i + 1], 16), Path(argv[i + 2]).read_bytes()
            img[off:off + len(data)] = data
            self.path.write_bytes(img)
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_image_deploy_checks_identity_saves_logs_and_reads_back(fleet, broker, tmp_path):
    thing = _add(fleet, "board-es")
    chip = FlashChip(_blank_board(tmp_path / "chip.bin"))
    cfg = _cfg(fleet, thing, broker)
    r = deploy.deploy_image(fleet, thing, "/dev/ttyUSB0", cfg, runner=chip.runner)
    kinds = [next(a for a in c if a in ("read-flash", "write-flash")) for c in chip.calls]
    assert kinds == ["read-flash", "write-flash", "read-flash"]
    assert all(c[c.index(k) + 1] == "0x310000" for c, k in zip(chip.calls, kinds))
    assert r.saved_logs is None
    # a board that holds logs and this identity: the logs are saved before the image replaces them
    ff = flashimage.FlashFile(chip.path)
    ff.write({"/log/00000001.seg": b"segment-bytes"})
    ff.save()
    r = deploy.deploy_image(fleet, thing, "/dev/ttyUSB0", cfg, runner=chip.runner)
    assert (r.saved_logs / "00000001.seg").read_bytes() == b"segment-bytes"
    # another identity: refused before anything is written
    other = _add(fleet, "board-es-other")
    before = chip.path.read_bytes()
    with pytest.raises(deploy.DeployError, match="another identity"):
        deploy.deploy_image(fleet, other, "/dev/ttyUSB0", _cfg(fleet, other, broker), runner=chip.runner)
    assert chip.path.read_bytes() == before
    r = deploy.deploy_image(fleet, other, "/dev/ttyUSB0", _cfg(fleet, other, broker), runner=chip.runner,
                            force_identity=True)
    assert flashimage.FlashFile(chip.path).read("/identity/cert.der") == r.files["/identity/cert.der"]


def test_image_deploy_detects_a_bad_write(fleet, broker, tmp_path):
    thing = _add(fleet, "board-bad")
    chip = FlashChip(_blank_board(tmp_path / "chip.bin"))
    real = chip.runner

    def flaky(argv):
        r = real(argv)
        if "write-flash" in argv:   # one bit lost on the way
            img = bytearray(chip.path.read_bytes())
            img[flashimage.VFS.offset + 100] ^= 1
            chip.path.write_bytes(img)
        return r

    with pytest.raises(deploy.DeployError, match="read back differs"):
        deploy.deploy_image(fleet, thing, "/dev/ttyUSB0", _cfg(fleet, thing, broker), runner=flaky)


def test_state_unused(tmp_path):
    # deploy needs a provisioned device: a clear error otherwise
    with pytest.raises(Exception, match="no device"):
        deploy.identity(State(tmp_path / "s"), "nobody")
