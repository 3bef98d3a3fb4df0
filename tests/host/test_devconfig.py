"""Remote settings on the host (warden.fleet.devconfig, `warden device config`): the allow-list and
ranges agree with the device's own, bad input is refused before anything is sent (with the
reason and a hint, no traceback), and the signed command has the documented layout."""
import ast
import json
import struct

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from support import otakit as kit
from support.devrun import ROOT
from warden.cli import main
from warden.fleet import devconfig
from warden.ota import keys


def device_constants():
    tree = ast.parse((ROOT / "firmware" / "devconfig.py").read_text())
    out = {}
    for n in tree.body:
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name):
            try:
                out[n.targets[0].id] = ast.literal_eval(n.value)
            except ValueError:
                pass
    return out


def test_the_host_table_is_the_device_allow_list():
    dev = device_constants()
    assert dev["SETTINGS"] == devconfig.SETTINGS
    assert dev["_KINDS"] == devconfig.SENSOR_KINDS
    assert dev["MAGIC"] == devconfig.MAGIC
    for k in ("broker", "thing", "app", "wifi", "timeout"):
        assert k not in dev["SETTINGS"]


@pytest.mark.parametrize("settings,words", [
    ({"broker.host": "evil.example"}, "broker.host may not be set remotely: it is provisioned"),
    ({"broker": {"host": "evil.example"}}, "broker may not be set remotely: it is provisioned"),
    ({"thing": "other"}, "thing may not be set remotely"),
    ({"app": "other"}, "app may not be set remotely"),
    ({"colour": 3}, "colour may not be set remotely: no such remote setting"),
    ({"interval_ms": 5}, "interval_ms must be an integer 100..86400000, got 5"),
    ({"interval_ms": "5000"}, 'got "5000"'),
    ({"qos": 2}, "qos must be an integer 0..1"),
    ({"qos": True}, "qos must be an integer 0..1, got true"),
    ({"keepalive": 1201}, "keepalive must be an integer 30..1200"),
    ({"keepalive": 29}, "keepalive must be an integer 30..1200"),
    ({"sleep_ms": 10}, "0: off, else at least 1000"),
    ({"log_quota": 1024}, "log_quota must be an integer 65536..1048576"),
    ({"sensors": {}}, "an object of 1 to 8 sensors"),
    ({"sensors": {"T!": {"kind": "sine"}}}, "sensor names"),
    ({"sensors": {"t": {"kind": "i2c", "driver": "os"}}}, "i2c is provisioned only"),
    ({"sensors": {"t": {"kind": "sine", "base": "21"}}}, "base must be a number"),
    ({}, "no setting to send"),
])
def test_bad_settings_are_refused_with_the_reason(settings, words):
    with pytest.raises(devconfig.DevConfigError) as e:
        devconfig.check(settings)
    assert words in str(e.value) and e.value.hint


def test_good_settings_pass():
    ok = {"interval_ms": 100, "qos": 0, "sleep_ms": 0, "keepalive": 30, "log_quota": 65536,
          "sensors": {"t": {"kind": "sine", "base": 21, "amplitude": 2.5, "period": 60}}}
    assert devconfig.check(ok) == ok
    devconfig.check({"sleep_ms": 1000})


def test_the_envelope_layout_and_signature():
    key = kit.signing_key()
    cmd = devconfig.envelope("dev-1", 258, {"qos": 0}, key)
    body, sig = cmd[1:-384], cmd[-384:]
    assert cmd[:1] == b"S" and body[:4] == b"WCF1"
    assert body[4:12] == keys.key_id(key.public_key())
    assert struct.unpack(">IB", body[12:17]) == (258, 5) and body[17:22] == b"dev-1"
    assert json.loads(body[22:]) == {"qos": 0}
    key.public_key().verify(sig, body, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                            hashes.SHA256())


def test_an_envelope_too_long_or_with_a_bad_counter_is_refused():
    key = kit.signing_key()
    many = {"sensors": {f"s{i}": {"kind": "sine", "base": 1.5, "amplitude": 2.5, "period": 60} for i in range(8)}}
    with pytest.raises(devconfig.DevConfigError, match="too long"):
        devconfig.envelope("dev-1", 1, many, key)
    for counter in (0, 2 ** 32):
        with pytest.raises(devconfig.DevConfigError, match="counter"):
            devconfig.envelope("dev-1", counter, {"qos": 0}, key)


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.delenv("WARDEN_STATE", raising=False)

    def invoke(*args):
        return CliRunner().invoke(main, ["--state", str(tmp_path / "st"), "device", "config", *args])

    return invoke


@pytest.mark.parametrize("args,words", [
    (("t", "set", "broker.host", "evil.example"), "broker.host may not be set remotely"),
    (("t", "set", "thing", '"other"'), "thing may not be set remotely"),
    (("t", "set", "interval_ms", "5"), "interval_ms must be an integer 100..86400000, got 5"),
    (("t", "set", "interval_ms", "fast"), "'fast' is not a JSON value"),
    (("t", "set", "interval_ms"), "set needs KEY and VALUE"),
    (("t", "get", "interval_ms", "5"), "get takes at most a KEY"),
    (("t", "get", "broker"), "broker may not be set remotely"),
    (("t", "set", "qos", "0"), "no OTA signing key"),     # checked, then signed: no key in this state
])
def test_the_cli_refuses_before_sending(run, args, words):
    r = run(*args)
    assert r.exit_code == 1 and r.output.startswith("error: ") and words in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.splitlines()) == 2   # the error and its hint
