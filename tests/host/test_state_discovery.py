"""The state folder is found as git finds its repository, and no command makes a second fleet's
secrets by accident (issue 15)."""
import pytest
from click.testing import CliRunner

from warden.cli import main
from warden.state import ORIGIN_DEFAULT, ORIGIN_FOUND, State, StateError


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    """A project folder with a fleet in proj/.warden, and the current directory in a sub-folder."""
    monkeypatch.delenv("WARDEN_STATE", raising=False)
    proj = tmp_path / "proj"
    sub = proj / "src" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.chdir(proj)
    r = CliRunner().invoke(main, ["pki", "init"])
    assert r.exit_code == 0, r.output
    assert (proj / ".warden" / "pki" / "ca.key.pem").exists()
    monkeypatch.chdir(sub)
    return proj


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def test_a_sub_folder_uses_the_projects_state(fleet):
    r = run("device", "add", "kitchen-1")
    assert r.exit_code == 0, r.output
    assert (fleet / ".warden" / "devices" / "kitchen-1").is_dir()
    assert not (fleet / "src" / "deep" / ".warden").exists()
    r = run("device", "list")
    assert "kitchen-1" in r.output and "No devices" not in r.output and "no devices" not in r.output
    s = State.locate()
    assert s.origin == ORIGIN_FOUND and s.root.resolve() == (fleet / ".warden").resolve()


def test_an_empty_dot_warden_is_passed_over(fleet):
    (fleet / "src" / ".warden").mkdir()   # not a state: no project.json, pki or registry
    assert State.locate().root.resolve() == (fleet / ".warden").resolve()


def test_state_option_and_env_win(fleet, tmp_path):
    other = tmp_path / "elsewhere"
    assert State.locate().origin == ORIGIN_FOUND
    assert run("device", "add", "kitchen-1").exit_code == 0
    r = run("--state", str(other), "device", "list")
    assert r.exit_code == 0 and "kitchen-1" not in r.output    # the named folder, not the found one
    r = run("pki", "init", env={"WARDEN_STATE": str(other)})
    assert r.exit_code == 0, r.output          # explicit: a second fleet on purpose
    assert (other / "pki").is_dir()


def test_no_state_anywhere_defaults_to_dot_warden(tmp_path, monkeypatch):
    monkeypatch.delenv("WARDEN_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    s = State.locate()
    assert s.origin == ORIGIN_DEFAULT and s.root.absolute() == tmp_path / ".warden"


def test_keys_init_outside_any_fleet_is_refused_and_makes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("WARDEN_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    r = run("keys", "init")
    assert r.exit_code == 1
    assert "error: no Warden state" in r.output and "--state" in r.output and "Traceback" not in r.output
    assert not (tmp_path / ".warden").exists()


def test_sign_without_a_key_names_the_state_and_does_not_just_say_keys_init(fleet):
    (fleet / "u.bin").write_bytes(b"x")
    r = run("sign", str(fleet / "u.bin"), "--kind", "app", "--version", "1", "--counter", "1")
    assert r.exit_code == 1
    assert str(fleet / ".warden") in r.output and "--state" in r.output


def test_a_second_ca_below_a_fleet_is_refused(fleet):
    nested = fleet / "src" / "deep"
    (nested / ".warden").mkdir()
    (nested / ".warden" / "project.json").write_text("{}")   # a state with no CA, below the fleet
    r = run("pki", "init")
    assert r.exit_code == 1
    assert "parent directory" in r.output and str(fleet / ".warden") in r.output and "--state" in r.output
    assert not (nested / ".warden" / "pki").exists()
    r = run("keys", "init")
    assert r.exit_code == 1 and "parent directory" in r.output
    assert not (nested / ".warden" / "keys").exists()
    # named explicitly: on purpose
    r = run("--state", str(nested / ".warden"), "pki", "init")
    assert r.exit_code == 0, r.output


def test_the_found_fleet_refuses_a_second_ca_of_its_own(fleet):
    r = run("pki", "init")
    assert r.exit_code == 1 and "already exists" in r.output


def test_library_guard(tmp_path):
    s = State(tmp_path / ".warden", origin=ORIGIN_DEFAULT)
    s.refuse_second_fleet("a fleet CA")          # a first fleet: allowed
    with pytest.raises(StateError):
        s.refuse_second_fleet("an OTA signing key")
    State(tmp_path / ".warden").refuse_second_fleet("an OTA signing key")   # explicit
