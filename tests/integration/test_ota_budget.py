"""Updates within the device's heap budget: ten app updates and ten firmware updates in a row,
each pushed during a session, installed in update mode (firmware/otamode.py), and confirmed by
the self-test of the boot after it, on the 32-bit MicroPython port (a board's heap layout) at the
board's 64 KiB for the device code; the first app update runs from the factory app, the others from an update slot, and
the firmware updates run under an app from an update slot. And
the same, three of each, on the 64-bit twin at 96k, its budget (1.38 times a board's, with a
margin: `make bench`, heap).

The twin's stand-ins for what is C on a board (twin/esp32.py, resident, and twin/esp32api.py,
loaded while the OTA code and the self-test verdict use esp32.Partition) are Python in the
device's heap: ~4.1 KB on the 32-bit port that a board spends nothing on, exactly while an update
is verified and confirmed. So on the 32-bit port the twin gets 64 KiB plus STANDIN_32 for them,
and test_the_stand_ins_cost_no_more_than_their_allowance holds that allowance to what they cost."""
import subprocess

import pytest

from support.devrun import STANDIN_32, micropython32
from support.twinproc import Twin
from warden.board import espimage, twin as twinlib
from warden.fleet import devices
from warden.ota import image, keys, push as otapush

PORT32 = micropython32()
BUILDS = [pytest.param(("32-bit", "%dk" % ((64 * 1024 + STANDIN_32) // 1024), 10), id="32-bit-64k", marks=pytest.mark.skipif(
              PORT32 is None, reason="no 32-bit MicroPython port here ($MICROPYTHON32)")),
          pytest.param(("64-bit", "96k", 3), id="64-bit-96k")]


@pytest.fixture
def fleet(pki_state, broker):
    if not keys.has_key(pki_state):
        keys.init_keys(pki_state)
    pki_state.broker_port = broker.port
    return pki_state


@pytest.mark.parametrize("kind", ["app", "firmware"])
@pytest.mark.parametrize("build", BUILDS)
def test_updates_in_a_row_within_the_budget(fleet, broker, tmp_path, build, kind):
    name, heap, n = build
    thing = f"budget-{kind}-{name}"
    devices.add_device(fleet, thing)
    path = twinlib.flash_path(fleet, thing)
    twinlib.update_config(path, broker={"host": "localhost", "port": broker.port}, interval_ms=200,
                          selftest_ms=20000)
    t = Twin(path, heap=heap, binary=PORT32 if name == "32-bit" else None).start()
    try:
        t.wait_for(r"INFO telemetry: first reading", 15)
        if kind == "firmware":
            # firmware updates for an app running from an update slot: put the app in one first
            p = tmp_path / "app-first.wup"
            p.write_bytes(image.sign(image.build_bundle(), "app", "2.9.0", 199, image.default_target(fleet),
                                     keys.load_private_key(fleet)))
            assert otapush.push(fleet, thing, p, timeout=10, confirm_timeout=40).result == otapush.INSTALLED
            t.wait_for(r"INFO ota: self-test passed: app 2.9.0 confirmed", 20)
        for i in range(n):
            version = f"3.{i}.0"
            payload = image.build_bundle() if kind == "app" else espimage.build_image(version, 128 * 1024)
            p = tmp_path / f"{kind}-{i}.wup"
            p.write_bytes(image.sign(payload, kind, version, 200 + i, image.default_target(fleet),
                                     keys.load_private_key(fleet)))
            out = otapush.push(fleet, thing, p, timeout=10, confirm_timeout=40)
            assert out.result == otapush.INSTALLED, (i, out, t.output[-3000:])
            t.wait_for(rf"INFO ota: self-test passed: {kind} {version} confirmed", 20)
        # no crash and no rollback on the way (a self-test verdict a heap shortage delays is retried
        # at the next reading: the confirmation above is its outcome)
        assert "Traceback" not in t.output and "rolled back" not in t.output, t.output
    finally:
        t.stop()


_MEASURE = """
import gc
gc.collect(); a = gc.mem_alloc()
import esp32
gc.collect(); b = gc.mem_alloc()
import esp32api
gc.collect(); c = gc.mem_alloc()
print(c - a)
"""


@pytest.mark.skipif(PORT32 is None, reason="no 32-bit MicroPython port here ($MICROPYTHON32)")
def test_the_stand_ins_cost_no_more_than_their_allowance(tmp_path):
    """The heap the twin's stand-ins for the board's C code hold (their compiled code and data, as
    the ROM ships them), on the 32-bit port: within STANDIN_32, the allowance the update tests
    above give the twin on top of a board's 64 KiB. A stand-in that grows past it fails here, not
    as a heap shortage that looks like the device's."""
    from warden.board import build
    rom = tmp_path / "rom"
    build.build_twin_rom(rom)
    (rom / "measure.py").write_text(_MEASURE)
    r = subprocess.run([PORT32, "-X", "heapsize=128k", "measure.py"], cwd=rom, capture_output=True, text=True,
                       env={"MICROPYPATH": str(rom)}, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    cost = int(r.stdout.split()[-1])
    assert 1024 < cost <= STANDIN_32, cost   # (a cost near 0 would mean nothing was measured)
