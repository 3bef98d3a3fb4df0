"""`warden device tag` and `device list --group` through click's CliRunner: tags set, listed and
removed, bad keys and values refused with nothing written, unknown and revoked devices refused,
the group selector with one and two KEY=VALUE, and the JSON of both commands. Devices are
registry rows (no PKI, no broker: `device list --offline`)."""
import json
import sqlite3

import pytest
from click.testing import CliRunner

from warden.cli import main
from warden.fleet import groups
from warden.fleet.registry import SCHEMA_VERSION, Registry
from warden.state import State


@pytest.fixture
def st(tmp_path, monkeypatch):
    monkeypatch.delenv("WARDEN_STATE", raising=False)
    s = State(tmp_path / "st")
    s.ensure()
    with Registry(s.registry_path) as reg:
        for i, thing in enumerate(("dev-a", "dev-b", "dev-c", "dev-gone")):
            reg.add(thing, f"{i:064x}", i + 1)
        reg.revoke("dev-gone", "test")
    return s


@pytest.fixture
def run(st):
    def invoke(*args):
        return CliRunner().invoke(main, ["--state", str(st.root), *args])
    return invoke


def tags_of(st, thing):
    with Registry(st.registry_path) as reg:
        return reg.tags(thing).get(thing, {})


def listed(run, *groups):
    args = ["device", "list", "--offline", "--json"]
    for g in groups:
        args += ["--group", g]
    r = run(*args)
    assert r.exit_code == 0, r.output
    return {row["thing"]: row["tags"] for row in json.loads(r.stdout)}


def test_set_list_remove(run, st):
    r = run("device", "tag", "dev-a", "site=lab", "ring=canary")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["ring=canary", "site=lab"]
    assert tags_of(st, "dev-a") == {"site": "lab", "ring": "canary"}
    # a second set changes one value and keeps the other
    assert run("device", "tag", "dev-a", "site=field-7").exit_code == 0
    r = run("device", "tag", "dev-a", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"ring": "canary", "site": "field-7"}
    r = run("device", "tag", "dev-a", "--remove", "ring")
    assert r.exit_code == 0 and r.stdout.splitlines() == ["site=field-7"]
    assert tags_of(st, "dev-a") == {"site": "field-7"}
    r = run("device", "tag", "dev-b")
    assert r.exit_code == 0 and "dev-b has no tags" in r.stdout
    assert json.loads(run("device", "tag", "dev-b", "--json").stdout) == {}


@pytest.mark.parametrize("arg, what", [
    ("site", "not KEY=VALUE"),
    ("=lab", "bad tag key"),
    ("si te=lab", "bad tag key"),
    ("s:ite=lab", "bad tag key"),
    ("k" * 65 + "=v", "bad tag key"),
    ("site=", "bad value"),
    ("site=a=b", "bad value"),
    ("site=lab\n", "bad value"),
    ("site=" + "v" * 129, "bad value"),
])
def test_bad_tags_refused_nothing_written(run, st, arg, what):
    run("device", "tag", "dev-a", "site=lab")
    r = run("device", "tag", "dev-a", "ring=canary", arg)
    assert r.exit_code == 1 and what in r.output and "KEY=VALUE" in r.output   # the hint
    assert "Traceback" not in r.output
    assert tags_of(st, "dev-a") == {"site": "lab"}


def test_limits_accepted():
    assert groups.parse_tag("k" * 64 + "=" + "v" * 128) == ("k" * 64, "v" * 128)
    assert groups.parse_tag("a.b_c-D9=x y:z/[é]") == ("a.b_c-D9", "x y:z/[é]")


def test_set_and_remove_one_key_refused(run, st):
    r = run("device", "tag", "dev-a", "site=lab", "--remove", "site")
    assert r.exit_code == 1 and "both set and removed" in r.output
    assert tags_of(st, "dev-a") == {}


def test_unknown_and_revoked_devices_refused(run, st):
    for args in (("nope", "site=lab"), ("nope",), ("nope", "--remove", "site")):
        r = run("device", "tag", *args)
        assert r.exit_code == 1 and "no device 'nope'" in r.output and "device list" in r.output
    r = run("device", "tag", "dev-gone", "site=lab")
    assert r.exit_code == 1 and "is revoked" in r.output
    assert tags_of(st, "dev-gone") == {} and tags_of(st, "nope") == {}


def test_group_filter(run, st):
    run("device", "tag", "dev-a", "site=lab", "ring=canary")
    run("device", "tag", "dev-b", "site=lab", "ring=main")
    run("device", "tag", "dev-c", "site=field")
    assert listed(run) == {"dev-a": {"ring": "canary", "site": "lab"}, "dev-b": {"ring": "main", "site": "lab"},
                           "dev-c": {"site": "field"}, "dev-gone": {}}
    assert set(listed(run, "site=lab")) == {"dev-a", "dev-b"}
    assert set(listed(run, "site=lab", "ring=main")) == {"dev-b"}
    assert set(listed(run, "ring=main", "site=field")) == set()
    r = run("device", "list", "--offline", "--group", "site=nowhere")
    assert r.exit_code == 0 and "no device matches --group site=nowhere" in r.stdout
    r = run("device", "list", "--offline", "--group", "site=lab")
    assert r.exit_code == 0 and "dev-a" in r.stdout and "dev-c" not in r.stdout
    assert "ring=canary,site=lab" in r.stdout
    # the library function later commands call, on its own
    assert [d.thing for d in groups.select_devices(st, ["site=lab"], status="active")] == ["dev-a", "dev-b"]
    assert [d.thing for d in groups.select_devices(st, {"site": "field"})] == ["dev-c"]


def test_bad_selectors_refused(run):
    for sel, what in (("site", "not KEY=VALUE"), ("bad key=x", "bad tag key")):
        r = run("device", "list", "--offline", "--group", sel)
        assert r.exit_code == 1 and what in r.output
    r = run("device", "list", "--offline", "--group", "site=a", "--group", "site=b")
    assert r.exit_code == 1 and "no device can match both" in r.output


def test_schema_4_registry_migrates_and_keeps_its_rows(tmp_path):
    path = tmp_path / "registry.sqlite"
    with Registry(path) as reg:
        reg.add("old-dev", "ab" * 32, 7)
    db = sqlite3.connect(path)       # made as a warden of schema 4 left it: no tags table
    db.execute("DROP TABLE tags")
    db.execute("PRAGMA user_version = 4")
    db.commit()
    db.close()
    with Registry(path) as reg:
        assert reg.schema_version == SCHEMA_VERSION == 5
        assert reg.get("old-dev").serial == "7"
        assert reg.set_tags("old-dev", {"site": "lab"}) == {"site": "lab"}
