"""Roles as data, rendered to a mosquitto ACL."""
import json

import pytest

from warden.policy.model import PolicyError, default_policy_data, load_policy, parse_policy, save_policy
from warden.policy.mosquitto import render_mosquitto_acl
from warden.state import State


def acl_lines(text):
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def test_default_acl():
    """Issue 5's roles, least privilege: devices their own topics; the operator reads telemetry
    and status; the technician sends OTA commands, remote settings and log requests and reads their answers. Principals are denied
    the topics mosquitto's device patterns would open under their own names."""
    lines = acl_lines(render_mosquitto_acl("warden"))
    assert lines[:2] == ["pattern write dt/warden/%u/#", "pattern read cmd/warden/%u/#"]
    op = lines.index("user operator.default")
    assert lines[op + 1:op + 5] == ["topic deny dt/warden/operator.default/#",
                                    "topic deny cmd/warden/operator.default/#",
                                    "topic read dt/warden/+/telemetry", "topic read dt/warden/+/status"]
    tech = lines.index("user technician.default")
    assert lines[tech + 1:] == ["topic deny dt/warden/technician.default/#",
                                "topic deny cmd/warden/technician.default/#",
                                "topic write cmd/warden/+/ota", "topic read dt/warden/+/ota",
                                "topic write cmd/warden/+/config", "topic read dt/warden/+/config",
                                "topic write cmd/warden/+/logs", "topic read dt/warden/+/logs"]
    assert not [ln for ln in lines if "$SYS" in ln or ln.endswith(" #")]


def test_app_is_substituted_and_validated():
    assert "pattern write dt/farm/%u/#" in render_mosquitto_acl("farm")
    with pytest.raises(ValueError):
        render_mosquitto_acl("evil\nuser operator.default\ntopic readwrite #")


def test_policy_file_created_by_init_and_loaded(tmp_path):
    from warden.fleet import pki

    s = State(tmp_path / "st")
    pki.init_pki(s)
    data = json.loads(s.policy_path.read_text())
    assert set(data["roles"]) == {"device", "operator", "technician"}
    data["roles"]["operator"]["principals"].append("operator.alice")
    save_policy(s, data)
    text = render_mosquitto_acl(s.app, load_policy(s))
    assert "user operator.alice" in text and "user operator.default" in text


def test_missing_policy_file_means_default(tmp_path):
    assert load_policy(State(tmp_path)).principals("operator") == ["operator.default"]


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d["roles"]["operator"]["principals"].append("twin-001"), "<role>.<name>"),
    (lambda d: d["roles"]["technician"]["principals"].append("operator.default"), "two roles"),
    (lambda d: d["roles"]["operator"]["allow"].append({"action": "publish", "topic": "cmd/{thing}/#"}),
     "placeholder"),
    (lambda d: d["roles"]["operator"]["allow"].append({"action": "delete", "topic": "x"}), "action"),
    (lambda d: d["roles"]["operator"]["allow"].append({"action": "subscribe", "topic": "$SYS/#"}), "reserved"),
    (lambda d: d["roles"]["operator"]["allow"].append({"action": "subscribe", "topic": "a/#/b"}), "'#'"),
    (lambda d: d["roles"]["operator"]["allow"].append({"action": "subscribe", "topic": "a b"}), "space"),
    (lambda d: d["roles"]["device"]["allow"].append({"action": "publish", "topic": "dt/%c"}), "%u"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.update(revision=0), "revision"),
    (lambda d: d["roles"]["operator"]["principals"].append("technician.bob"), "named for role"),
    (lambda d: d["roles"]["operator"]["allow"].append({"action": "subscribe", "topic": "dt/*"}), "AWS"),
    (lambda d: d["roles"]["operator"]["allow"].append({"action": "subscribe", "topic": "dt/a?"}), "AWS"),
    (lambda d: d["roles"]["device"]["allow"].append({"action": "publish", "topic": "dt/x{thing}/a"}),
     "whole level"),
    (lambda d: d["roles"]["operator"]["allow"].append({"action": "subscribe", "topic": "a/" * 8 + "b"}),
     "slashes"),
])
def test_bad_policies_are_refused(mutate, fragment):
    data = default_policy_data()
    mutate(data)
    with pytest.raises(PolicyError) as e:
        parse_policy(data)
    assert fragment in str(e.value)


def test_broken_policy_file(tmp_path):
    s = State(tmp_path)
    s.ensure()
    s.policy_path.write_text("{")
    with pytest.raises(PolicyError) as e:
        load_policy(s)
    assert "policy.json" in str(e.value)
