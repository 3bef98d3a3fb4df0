"""The state folder: paths, settings, file modes."""
import json
import stat

import pytest

from warden.state import State, StateError, write_private


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_paths(tmp_path):
    s = State(tmp_path / "st")
    assert s.pki_dir == tmp_path / "st" / "pki"
    assert s.registry_path.parent == s.root and s.policy_path.parent == s.root
    assert s.broker_dir == tmp_path / "st" / "broker"
    assert s.device_dir("twin-001") == s.devices_dir / "twin-001"
    with pytest.raises(ValueError):
        s.device_dir("../../etc")


def test_default_root_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv("WARDEN_STATE", raising=False)
    assert State.default().root.name == ".warden"
    monkeypatch.setenv("WARDEN_STATE", str(tmp_path / "x"))
    assert State.default().root == tmp_path / "x"
    assert State.default(tmp_path / "y").root == tmp_path / "y"


def test_settings_defaults_and_set(tmp_path):
    s = State(tmp_path / "st")
    assert (s.app, s.broker_host, s.broker_port) == ("warden", "localhost", 8883)
    s.broker_port = 18883
    s.app = "farm"
    again = State(tmp_path / "st")
    assert (again.app, again.broker_port, again.broker_host) == ("farm", 18883, "localhost")
    assert json.loads(s.project_path.read_text())["broker"]["port"] == 18883
    with pytest.raises(ValueError):
        s.app = "a/b"
    with pytest.raises(StateError):
        s.set("broker.port", 70000)
    with pytest.raises(StateError):
        s.set("nope", 1)


def test_broken_project_json_is_a_clear_error(tmp_path):
    s = State(tmp_path / "st").ensure()
    s.project_path.write_text("{not json")
    with pytest.raises(StateError) as e:
        State(s.root).app
    assert "project.json" in str(e.value)


def test_modes(tmp_path):
    s = State(tmp_path / "st").ensure()
    assert mode(s.root) == 0o700
    key = write_private(s.root / "sub" / "k.pem", b"secret")
    assert mode(key) == 0o600 and mode(key.parent) == 0o700
    deep = write_private(s.root / "a" / "b" / "k", b"x")
    assert mode(s.root / "a") == 0o700 and mode(deep.parent) == 0o700
    write_private(key, b"again")   # atomic replace keeps the mode
    assert mode(key) == 0o600 and key.read_bytes() == b"again"
    assert [p.name for p in key.parent.iterdir()] == ["k.pem"]   # no temporary left behind
