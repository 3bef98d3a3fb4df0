"""`warden device ...` through click's CliRunner, on what users hit: a thing name too long for a
certificate, a damaged or emptied registry, a device folder that `device add` would overwrite,
the registry's backups and their restore, tables that are never cut, revoked devices.
The twin build is stubbed (tested with the twin elsewhere); no broker runs, so `device list`
falls back to the registry and says so."""
import json
import sys
import types

import pytest
from click.testing import CliRunner

from warden.cli import main
from warden.state import State


@pytest.fixture
def twin_calls(monkeypatch):
    calls = []
    try:
        import warden.board.twin as twin
    except ImportError:
        twin = types.ModuleType("warden.board.twin")
        monkeypatch.setitem(sys.modules, "warden.board.twin", twin)

    def provision(state, thing, *a, **k):
        # stands in for the twin's flash file, so that a device folder holds one as it would
        (state.device_dir(thing) / "flash.bin").write_bytes(b"flash of " + thing.encode())
        calls.append(thing)

    monkeypatch.setattr(twin, "provision_twin", provision, raising=False)
    return calls


@pytest.fixture
def st(tmp_path, monkeypatch):
    monkeypatch.delenv("WARDEN_STATE", raising=False)
    s = State(tmp_path / "st")
    s.ensure()
    s.broker_port = 1        # nothing listens there: device list falls back to the registry
    return s


@pytest.fixture
def run(st):
    def invoke(*args):
        return CliRunner().invoke(main, ["--state", str(st.root), *args])
    return invoke


def no_traceback(r):
    return "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit))


def test_thing_names_longer_than_a_certificate_cn_are_refused_with_the_rule(run, twin_calls):
    assert run("pki", "init").exit_code == 0
    ok = run("device", "add", "x" * 64)
    assert ok.exit_code == 0, ok.output
    for n in (65, 128):
        r = run("device", "add", "y" * n)
        assert r.exit_code == 1 and no_traceback(r), r.output
        assert f"thing name is {n} characters long, more than 64" in r.stderr and "1-64 characters" in r.stderr
    assert twin_calls == ["x" * 64]
