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


@pytest.fixture
def fleet(st, run, twin_calls):
    """A CA and two devices, one of them revoked (which made a backup of the registry)."""
    assert run("pki", "init").exit_code == 0
    for thing in ("dev-a", "dev-b"):
        r = run("device", "add", thing)
        assert r.exit_code == 0, r.output
    r = run("device", "revoke", "dev-b", "--reason", "lost")
    assert r.exit_code == 0, r.output
    return st


def listed(run):
    r = run("device", "list", "--json")
    assert r.exit_code == 0, r.output
    return {d["thing"]: d for d in json.loads(r.stdout)}


def files_of(st, thing):
    folder = st.device_dir(thing)
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_registry_is_an_error_that_says_how_to_restore_it(fleet, run, damage):
    reg = fleet.registry_path
    data = reg.read_bytes()
    before = listed(run)
    if damage == "garbage":
        reg.write_bytes(b"this is not a database" * 200)
    else:
        reg.write_bytes(data[:len(data) // 2] + bytes(4096))
    for args in (("device", "list"), ("device", "add", "dev-c"), ("device", "revoke", "dev-a"), ("audit",)):
        r = run(*args)
        assert r.exit_code == 1 and no_traceback(r), (args, r.output)
        assert "is damaged or not a warden registry" in r.stderr and "warden device restore" in r.stderr, r.stderr
    assert not (fleet.devices_dir / "dev-c").exists()     # nothing was made
    shown = run("device", "restore", "--list")
    assert shown.exit_code == 0 and "registry-" in shown.stdout and "revoke-dev-b" in shown.stdout
    r = run("device", "restore")
    assert r.exit_code == 0 and "registry restored" in r.stdout and "2 device(s)" in r.stdout, r.output
    after = listed(run)
    # the backup was made before the revocation: the devices are back, dev-b as it was then
    assert sorted(after) == ["dev-a", "dev-b"] and after["dev-a"]["fingerprint"] == before["dev-a"]["fingerprint"]
    assert after["dev-b"]["status"] == "active"
    kept = [p.name for p in (fleet.root / "backups").iterdir() if p.name.startswith("replaced-")]
    assert kept, "the damaged registry is kept aside, not deleted"


def test_a_bad_backup_is_refused_and_the_registry_left_alone(fleet, run, tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"nope" * 1000)
    r = run("device", "restore", str(bad))
    assert r.exit_code == 1 and no_traceback(r) and "cannot be used" in r.stderr
    assert sorted(listed(run)) == ["dev-a", "dev-b"]


@pytest.mark.parametrize("how", ["emptied", "deleted"])
def test_an_emptied_registry_is_reported_and_device_add_overwrites_nothing(fleet, run, how):
    before = files_of(fleet, "dev-a")
    reg = fleet.registry_path
    for p in (reg, reg.with_name(reg.name + "-wal"), reg.with_name(reg.name + "-shm")):
        p.unlink(missing_ok=True)
    if how == "emptied":
        reg.write_bytes(b"")           # sqlite takes an empty file for an empty database
    r = run("device", "list")
    assert r.exit_code == 1 and no_traceback(r), r.output
    assert "2 device folder(s)" in r.stderr and "dev-a" in r.stderr and "warden device restore" in r.stderr
    r = run("device", "add", "dev-a")
    assert r.exit_code == 1 and "warden device restore" in r.stderr
    assert files_of(fleet, "dev-a") == before              # key, certificate and flash untouched
    # the audit's advice for the orphaned folders does not lead to an overwrite either
    audit = run("audit", "--json")
    fixes = [f["fix"] for f in json.loads(audit.stdout)["findings"] if f["subject"].startswith("device folder")]
    assert len(fixes) == 2
    assert fixes and all("warden device restore" in f and "--replace" in f for f in fixes), fixes
    assert run("device", "restore").exit_code == 0
    assert sorted(listed(run)) == ["dev-a", "dev-b"]


def test_device_add_refuses_a_folder_with_files_and_replace_archives_them(fleet, run):
    # dev-a's files, but a registry that does not list it (restored from before it was added)
    from warden.fleet.registry import Registry
    with Registry(fleet.registry_path) as reg:
        reg.remove("dev-a")
    before = files_of(fleet, "dev-a")
    r = run("device", "add", "dev-a")
    assert r.exit_code == 1 and no_traceback(r)
    assert "already holds files" in r.stderr and "--replace" in r.stderr and "warden device restore" in r.stderr
    assert files_of(fleet, "dev-a") == before
    backups_before = len(list((fleet.root / "backups").iterdir()))
    r = run("device", "add", "dev-a", "--replace")
    assert r.exit_code == 0, r.output
    archives = list((fleet.device_dir("dev-a") / "archive").iterdir())
    assert len(archives) == 1 and str(archives[0]) in r.stdout.replace("\n", "")
    assert {p.name: p.read_bytes() for p in archives[0].iterdir()} == before   # all of it, unchanged
    now = files_of(fleet, "dev-a")
    assert now["cert.der"] != before["cert.der"] and now["key.der"] != before["key.der"]
    assert len(list((fleet.root / "backups").iterdir())) == backups_before + 1
    # a registered device is never replaced: it gets a new identity by rotation instead
    r = run("device", "add", "dev-a", "--replace")
    assert r.exit_code == 1 and "already registered" in r.stderr and "warden device rotate dev-a" in r.stderr


def test_backups_are_made_before_secrets_change_and_stay_bounded(fleet, run):
    from warden.fleet import backups
    names = [p.name for p in backups.list_backups(fleet)]
    assert any("revoke-dev-b" in n for n in names)
    (fleet.device_dir("dev-a") / "flash.bin").unlink()     # a board's: the new identity waits for a deploy
    assert run("device", "rotate", "dev-a").exit_code == 0
    assert any("rotate-dev-a" in p.name for p in backups.list_backups(fleet))
    assert run("principal", "rotate", "operator.default").exit_code == 0
    assert any("principal-rotate-operator-default" in p.name for p in backups.list_backups(fleet))
    for _ in range(backups.KEEP + 5):
        backups.backup_registry(fleet, "test")
    kept = backups.list_backups(fleet)
    assert len(kept) == backups.KEEP
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in kept)   # they hold the log keys


def test_device_list_without_a_broker_says_so_and_shows_the_build_version(fleet, run):
    r = run("device", "list", "--json")
    assert r.exit_code == 0 and "no broker reachable" in r.stderr
    rows = {d["thing"]: d for d in json.loads(r.stdout)}
    from warden.fleet.view import factory_version
    assert factory_version() and rows["dev-a"]["version"] == factory_version()      # never updated: the build's
    assert rows["dev-a"]["version_from"] == "build" and rows["dev-a"]["source"] == "registry"
    assert rows["dev-a"]["connection"] == "unknown" and rows["dev-b"]["connection"] == "revoked"
    assert rows["dev-b"]["reason"] == "lost" and rows["dev-a"]["cert_expires"]
    assert "log_key" not in rows["dev-a"]
    off = run("device", "list", "--offline", "--json")
    assert off.exit_code == 0 and "note:" not in off.stderr


def test_tables_are_whole_when_piped(fleet, run):
    rows = listed(run)
    for args, values in ((("device", "list"), [d["fingerprint"] for d in rows.values()]),
                         (("principal", "list"), None)):
        r = run(*args)
        assert r.exit_code == 0, r.output
        assert "…" not in r.stdout
        lines = r.stdout.splitlines()
        assert max(len(line) for line in lines) > 80      # not wrapped at 80 columns
        for v in values or []:
            assert v in r.stdout                            # every hash whole
    principals = json.loads(run("principal", "list", "--json").stdout)
    r = run("principal", "list")
    assert all(p["fingerprint"] in r.stdout for p in principals if p.get("fingerprint"))


def test_revoked_devices_are_said_at_once(fleet, run, tmp_path):
    upd = tmp_path / "u.wup"
    upd.write_bytes(b"not even an update")
    for args in (("ota", "push", "dev-b", str(upd)), ("ota", "push", "dev-b", str(upd), "--json"),
                 ("ota", "status", "dev-b"), ("ota", "rollback", "dev-b"), ("twin", "run", "dev-b")):
        r = run(*args)
        assert r.exit_code == 1 and no_traceback(r), (args, r.output)
        assert r.stderr.startswith("error: device 'dev-b' is revoked (since "), (args, r.stderr)
        assert ": lost)" in r.stderr and "new name" in r.stderr
        assert "cannot reach" not in r.stderr and "resume" not in r.stderr
    # an active device gets as far as the network (here: no broker), with the status hint
    r = run("ota", "status", "dev-a")
    assert r.exit_code == 1 and "cannot reach the broker" in r.stderr
