"""The OTA engine end to end on a twin flash, one micropython process per boot: install, reset,
self-test, confirm or roll back; resume after a reboot; replay and downgrade after a confirmed
update; and power cuts (SIGKILL) at many points of download, write, swap and the time before
confirmation: the device always boots a valid image and ends on the old version or, once the
update is resumed, on the new one."""
import json
from pathlib import Path

import pytest

from support import otakit as kit
from support.devrun import run_mp
from support.otavectors import INSTALLED
from warden.board import build
from warden.ota import image

HERE = Path(__file__).resolve().parent
FW_SIZE = 160 * 1024


class Boot:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr
        self.lines = proc.stdout.splitlines()

    def get(self, tag):
        return [ln[len(tag) + 1:] for ln in self.lines if ln.startswith(tag + " ")]

    @property
    def boot(self):
        return dict(kv.split("=", 1) for kv in self.get("BOOT")[0].split())

    def results(self):
        return [json.loads(x) for x in self.get("RESULT")]

    def status(self):
        return json.loads(self.get("STATUS")[-1])

    @property
    def ops(self):
        return int(self.get("OPS")[0])


class Twin:
    """A twin flash with the factory app, firmware 1.0.0 in ota_0, the fleet key and counters."""

    def __init__(self, path, files):
        self.path = path
        all_files = dict(files)
        all_files["/state/ota.json"] = json.dumps(INSTALLED).encode()
        kit.make_flash(path, all_files, factory_size=FW_SIZE)

    def run(self, *cmds, cut=None, expect_ok=True):
        env = {"WARDEN_FLASH": str(self.path), "MICROPYPATH": ".frozen:" + str(build.build_twin_rom()),
               "WARDEN_CUT": str(cut or 0)}  # 0: count flash operations (esp32.ops), never cut
        p = run_mp(script=HERE / "ota_driver.py", args=cmds, heap="128k", env=env, timeout=60)
        b = Boot(p)
        if expect_ok:
            assert b.rc == 0 and b.get("BOOT"), b.out
        return b

    def copy(self, dst):
        dst.write_bytes(self.path.read_bytes())
        t = object.__new__(Twin)
        t.path = dst
        return t


@pytest.fixture(scope="module")
def updates(tmp_path_factory):
    d = tmp_path_factory.mktemp("upd")
    files = build.build_app(d / "app")
    fw2 = kit.firmware("2.0.0", FW_SIZE)
    out = {
        "fw2": kit.signed(fw2, "firmware", "2.0.0", counter=4),
        "fw3": kit.signed(kit.firmware("3.0.0", FW_SIZE), "firmware", "3.0.0", counter=5),
        "app2": kit.signed(image.pack_bundle(files), "app", "2.0.0", counter=4),
        "app3": kit.signed(image.pack_bundle(files), "app", "3.0.0", counter=5),
    }
    paths = {"files": files}
    for name, data in out.items():
        p = d / (name + ".wup")
        p.write_bytes(data)
        paths[name] = str(p)
    return paths


@pytest.fixture(scope="module")
def base(tmp_path_factory, updates):
    return Twin(tmp_path_factory.mktemp("base") / "flash.bin", updates["files"])


@pytest.fixture
def twin(base, tmp_path):
    return base.copy(tmp_path / "flash.bin")


def test_firmware_update_installs_runs_on_trial_and_is_confirmed(twin, updates):
    b = twin.run("install", updates["fw2"], "status")
    assert b.results()[0]["slot"] == "ota_1"
    st = b.status()
    assert st["firmware"]["counter"] == 3 and st["firmware"]["slot"] == "ota_0"  # nothing counted yet
    b = twin.run("status", "confirm", "status")  # the reset: the new image runs on trial, passes
    assert b.boot["firmware"] == "ota_1" and "first boot of ota_1 (pending verify)" in b.out
    assert json.loads(b.get("STATUS")[0])["pending"]["version"] == "2.0.0"
    assert b.results() == [{"kind": "firmware", "version": "2.0.0", "counter": 4, "slot": "ota_1", "prev": "ota_0"}]
    st = b.status()
    assert st["firmware"] == {"counter": 4, "version": "2.0.0", "slot": "ota_1"}
    assert st["pending"] is None and st["last"]["outcome"] == "confirmed"
    b = twin.run("status")  # stays
    assert b.boot["firmware"] == "ota_1" and "rollback" not in b.out
    # replay of the same release and of an older genuine one are both refused now
    assert twin.run("install", updates["fw2"]).get("REFUSED") == [
        "counter 4 is not newer than the installed 4 (replay)"]
    b = twin.run("install", updates["fw3"], "status")
    assert b.results()[0]["slot"] == "ota_0"  # the slot after the running one


def test_reset_before_confirmation_rolls_back_and_the_update_can_be_retried(twin, updates):
    twin.run("install", updates["fw2"])
    assert twin.run("status").boot["firmware"] == "ota_1"  # on trial, not confirmed
    b = twin.run("install", updates["fw2"], 4096)  # another reset; an update is sent at once
    assert b.get("BEGIN") == ["0"]  # the rolled-back one does not block it
    b = twin.run("status")
    assert b.boot["firmware"] == "ota_0"
    st = b.status()
    assert st["last"] == {"kind": "firmware", "version": "2.0.0", "counter": 4, "outcome": "rolled back",
                          "reason": "the new firmware was not confirmed before a reset"}
    assert st["firmware"]["counter"] == 3  # not consumed: the same update may be tried again
    b = twin.run("install", updates["fw2"])
    assert b.get("BEGIN") == ["0"] and b.results()[0]["slot"] == "ota_1"


def test_failed_self_test_rolls_back_at_once(twin, updates):
    twin.run("install", updates["fw2"])
    b = twin.run("fail", "no reading acknowledged within 60 s", "status")
    assert b.boot["firmware"] == "ota_1"
    assert b.status()["last"]["reason"] == "no reading acknowledged within 60 s"
    b = twin.run("confirm", "status")  # the old image is back and confirms itself
    assert b.boot["firmware"] == "ota_0" and b.results() == [None]
    assert b.status()["firmware"] == {"counter": 3, "version": "1.0.0", "slot": "ota_0"}


def test_app_update_runs_from_its_slot_and_rolls_back_to_the_factory_app(twin, updates):
    b = twin.run("install", updates["app2"])
    assert b.boot["code"] == "firmware/ota.mpy" and b.results()[0]["slot"] == "a"
    b = twin.run("status")  # the reset: boot.py runs slot a on trial
    assert b.boot["app"] == "a" and b.boot["code"] == "/app/a/firmware/ota.mpy"
    assert b.status()["slots"] == ["a", "trying", "-"]
    b = twin.run("status")  # never confirmed: back to the factory app
    assert b.boot["app"] == "-" and b.boot["code"] == "firmware/ota.mpy"
    assert "app a was not confirmed before this reset" in b.out
    assert b.status()["last"]["outcome"] == "rolled back"
    # again, confirmed this time, then a second update goes to slot b
    twin.run("install", updates["app2"])
    b = twin.run("confirm", "status")
    assert b.status()["app"] == {"counter": 4, "version": "2.0.0", "slot": "a"}
    assert b.status()["slots"] == ["a", "valid", "-"]
    assert twin.run("install", updates["app3"]).results()[0]["slot"] == "b"
    b = twin.run("fail", "broker not reached")
    assert b.boot["app"] == "b"
    b = twin.run("status")
    assert b.boot["app"] == "a" and b.status()["app"]["version"] == "2.0.0"


def test_download_resumes_after_a_reboot_from_the_last_durable_offset(twin, updates):
    b = twin.run("install", updates["fw2"], 100000)
    assert b.get("STOPPED") == ["100352"]  # whole 1 KiB chunks
    b = twin.run("install", updates["fw2"])  # the next boot: the technician's tool sends begin again
    assert b.get("BEGIN") == ["65536"]  # saved every 64 KiB: the rest is sent again
    assert b.results()[0]["slot"] == "ota_1"
    assert twin.run("confirm", "status").status()["firmware"]["version"] == "2.0.0"


def test_app_download_resumes_from_its_staged_length(twin, updates):
    assert twin.run("install", updates["app2"], 40000).get("STOPPED") == ["40960"]
    b = twin.run("install", updates["app2"])
    assert b.get("BEGIN") == ["32768"]  # what littlefs made durable (a flush every 16 KiB)
    assert b.results()[0]["slot"] == "a"


# -- power cuts ---------------------------------------------------------------------------------
def _points(total, n):
    """n cut points spread over operations 1..total (all of them if there are fewer)."""
    if total <= n:
        return list(range(1, total + 1))
    return sorted({1 + (i * (total - 1)) // (n - 1) for i in range(n)})


def _finish(t, name, version, counter):
    """After a cut: boot (must be a valid image), resume or redo the update, boot and confirm.
    Returns the status it ends in: the update must be installed and confirmed."""
    for _ in range(4):
        b = t.run("confirm", "status")
        st = b.status()
        if st[_kind(name)]["version"] == version:
            return st
        b = t.run("install", name)
        assert not b.get("REFUSED"), b.out
    raise AssertionError("the update never completed after the cut:\n" + b.out)


def _kind(name):
    return "firmware" if "fw" in Path(name).name else "app"


@pytest.mark.parametrize("kind", ["firmware", "app"])
def test_power_cuts_anywhere_leave_a_bootable_device_that_completes_the_update(twin, updates, tmp_path, kind):
    name = updates["fw2" if kind == "firmware" else "app2"]
    # the flash operations of each phase, counted on a clean run
    probe = twin.copy(tmp_path / "probe.bin")
    boot_ops = probe.run("status").ops
    install_ops = probe.run("install", name).ops
    trial_ops = probe.run("confirm").ops
    assert install_ops > boot_ops and trial_ops > boot_ops
    phases = [("install", ("install", name), _points(install_ops, 30 if kind == "firmware" else 24)),
              ("confirm", ("confirm",), _points(trial_ops, 10))]
    seen = {"old": 0, "new": 0}
    for phase, cmds, points in phases:
        for op in points:
            t = twin.copy(tmp_path / "cut.bin")
            if phase == "confirm":
                t.run("install", name)
            b = t.run(*cmds, cut=op, expect_ok=False)
            if b.rc == 0:
                continue  # the point lay beyond this run's operations
            assert b.rc == -9, b.out  # SIGKILL: the power cut
            after = t.run("status")  # must boot, on a valid image (never exit 76, bricked)
            st = after.status()
            assert st[kind]["counter"] in (3, 4), (phase, op, after.out)
            seen["new" if st[kind]["slot"] not in ("ota_0", "-") else "old"] += 1
            st = _finish(t, name, "2.0.0", 4)
            assert st[kind] == {"counter": 4, "version": "2.0.0", "slot": "ota_1" if kind == "firmware" else "a"}, \
                (phase, op, st)
    print("power cuts (%s): %s" % (kind, seen))
    assert seen["old"] and seen["new"] and sum(seen.values()) >= 30, seen
