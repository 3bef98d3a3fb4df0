"""Issue 15: the ./warden launcher and make's set-up messages, one process per twin (its flash
lock, through `warden twin run`), and what an interrupted `ota push` says."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from warden.board import build, twin as twinlib
from warden.cli import main

ROOT = build.ROOT


# -- set-up ------------------------------------------------------------------------------------------
def test_launcher_runs_the_venvs_warden_from_anywhere(tmp_path):
    r = subprocess.run([str(ROOT / "warden"), "--version"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "warden, version" in r.stdout, r.stderr
    link = tmp_path / "bin" / "warden"
    link.parent.mkdir()
    link.symlink_to(ROOT / "warden")           # symlinked into a folder on the PATH
    r = subprocess.run([str(link), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "warden, version" in r.stdout, r.stderr


def test_launcher_without_a_venv_says_make_setup(tmp_path):
    shutil.copy(ROOT / "warden", tmp_path / "warden")
    r = subprocess.run([str(tmp_path / "warden"), "status"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "make setup" in r.stderr and str(tmp_path) in r.stderr and "Traceback" not in r.stderr


def test_make_says_what_it_installs_only_when_it_does_work():
    # -n: what make would run; -W: as if requirements.txt had just changed
    busy = subprocess.run(["make", "-n", "-W", "requirements.txt", "venv"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30).stdout
    assert "echo \"setting up .venv" in busy and "about a minute" in busy
    idle = subprocess.run(["make", "-n", "venv"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    if (ROOT / ".venv" / ".installed").stat().st_mtime >= (ROOT / "requirements.txt").stat().st_mtime:
        assert "setting up" not in idle


def test_readme_says_how_to_get_warden_on_the_path():
    text = (ROOT / "README.md").read_text()
    assert "./warden" in text and "source .venv/bin/activate" in text and "PATH" in text


# -- one process per twin ----------------------------------------------------------------------------
HOLD = """
import sys, time
from warden.board.twin import TwinLock
lock = TwinLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def twin_state(tmp_path, monkeypatch):
    """A state with device lamp-1 registered and a (placeholder) flash file: the lock is taken
    before the flash is read."""
    monkeypatch.delenv("WARDEN_STATE", raising=False)
    monkeypatch.setattr(twinlib, "provision_twin", lambda state, thing, *a, **k: None)
    st = tmp_path / "st"
    for args in (["pki", "init"], ["device", "add", "lamp-1"]):
        r = CliRunner().invoke(main, ["--state", str(st), *args])
        assert r.exit_code == 0, r.output
    flash = st / "devices" / "lamp-1" / "flash.bin"
    flash.write_bytes(b"\xff" * 64)
    return st, flash


def _holder(flash):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(flash)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_twin_run_is_refused_with_the_running_ones_pid(twin_state):
    st, flash = twin_state
    before = flash.read_bytes()
    p = _holder(flash)
    try:
        assert twinlib.lock_holder(flash) == p.pid
        r = CliRunner().invoke(main, ["--state", str(st), "twin", "run", "lamp-1"])
        assert r.exit_code == 1
        assert f"already runs (pid {p.pid})" in r.output and "Traceback" not in r.output
        assert flash.read_bytes() == before          # the refused copy touched nothing
    finally:
        p.stdin.close()
        p.wait(timeout=10)


def test_a_stale_lock_blocks_nothing(twin_state):
    st, flash = twin_state
    p = _holder(flash)
    p.kill()                                    # died without letting go: the file stays
    p.wait(timeout=10)
    assert twinlib.lock_path(flash).exists()
    assert twinlib.lock_holder(flash) is None
    with twinlib.TwinLock(flash) as lock:
        assert twinlib.lock_holder(flash) == os.getpid() and lock.fd is not None
    assert twinlib.lock_holder(flash) is None


def test_status_lists_a_twin_from_its_lock(twin_state):
    st, flash = twin_state
    p = _holder(flash)
    try:
        r = CliRunner().invoke(main, ["--state", str(st), "status", "--json"])
        data = json.loads(r.output)
        assert [t["thing"] for t in data["twins"]] == ["lamp-1"] and data["twins"][0]["pid"] == p.pid
    finally:
        p.stdin.close()
        p.wait(timeout=10)


# -- an interrupted push -----------------------------------------------------------------------------
@pytest.mark.parametrize("reached, expect", [
    (None, "nothing was sent"),
    ((3 * 2048, 10 * 2048 + 5), "chunk 4 of 11"),
    ((10 * 2048 + 5, 10 * 2048 + 5), "installs and runs its self-test"),
])
def test_ctrl_c_during_a_push_says_where_it_stopped(twin_state, monkeypatch, tmp_path, reached, expect):
    from warden.ota import push as otapush

    st, _ = twin_state

    def interrupted(state, thing, path, *, progress=None, **kw):
        if reached:
            progress(*reached)
        raise KeyboardInterrupt

    monkeypatch.setattr(otapush, "push", interrupted)
    upd = tmp_path / "u.wup"
    upd.write_bytes(b"x")
    r = CliRunner().invoke(main, ["--state", str(st), "ota", "push", "lamp-1", str(upd)])
    assert r.exit_code == 130, r.output
    assert expect in r.output and "Aborted" not in r.output
    if reached and reached[0] < reached[1]:
        assert f"{reached[0]:,} of {reached[1]:,} bytes" in r.output
        assert f"warden ota push lamp-1 {upd}" in r.output and "resume" in r.output
