"""`warden policy render|check` as a user runs them (the installed entry point)."""
import json
import os
import subprocess
import sys

import pytest

from warden.fleet import pki
from warden.policy import aws as awspolicy
from warden.policy.model import default_policy_data, load_policy, save_policy
from warden.policy.mosquitto import render_mosquitto_acl
from warden.state import State


def warden(state, *args):
    env = dict(os.environ, WARDEN_STATE=str(state.root))
    exe = os.path.join(os.path.dirname(sys.executable), "warden")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    s = State(tmp_path_factory.mktemp("pcli") / ".warden")
    pki.init_pki(s)
    return s


def test_render_both_formats(state, tmp_path):
    r = warden(state, "policy", "render", "--format", "mosquitto")
    assert r.returncode == 0 and r.stdout == render_mosquitto_acl("warden", load_policy(state))
    r = warden(state, "policy", "render", "--format", "aws", "--region", "eu-central-1", "--account", "111122223333")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == awspolicy.render_aws(None, "warden", "eu-central-1", "111122223333")
    r = warden(state, "policy", "render", "--format", "aws", "--out", str(tmp_path / "aws"))
    assert r.returncode == 0 and sorted(p.name for p in (tmp_path / "aws").iterdir()) == \
        ["device.json", "operator.json", "technician.json"]
    assert warden(state, "policy", "render", "--format", "aws", "--account", "*").returncode == 1


def test_check_proves_the_default_and_refuses_what_aws_cannot_express(state, tmp_path):
    r = warden(state, "policy", "check")
    assert r.returncode == 0 and "proved" in r.stdout
    bad = State(tmp_path / ".warden")
    pki.init_pki(bad)
    data = default_policy_data()
    data["roles"]["technician"]["allow"][0]["topic"] = "cmd/{app}/+/ota/#"
    save_policy(bad, data)
    r = warden(bad, "policy", "check")
    assert r.returncode == 1 and "technician.default publish 'cmd/warden//ota/ota'" in r.stdout
    r = warden(bad, "policy", "render", "--format", "aws", "--out", str(tmp_path / "out"))
    assert r.returncode == 1 and "cannot give the same answers" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()                     # nothing written
    assert warden(bad, "policy", "render", "--format", "mosquitto").returncode == 0
    assert json.loads(bad.policy_path.read_text())["revision"] == 2


def test_broken_policy_file_is_a_clear_error(tmp_path):
    s = State(tmp_path / ".warden")
    pki.init_pki(s)
    s.policy_path.write_text("{")
    r = warden(s, "policy", "render", "--format", "mosquitto")
    assert r.returncode == 1 and "policy.json" in r.stderr and "Traceback" not in r.stderr
