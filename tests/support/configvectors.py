"""The `config_vectors` fixture for device tests: signed remote-settings commands (good ones and one
per attack) and the trusted-key file a device checks them with, made once per session on the host
with the host's own encoder (warden.fleet.devconfig)."""
import json

import pytest

from warden.fleet import devconfig
from warden.ota import keys

from . import otakit as kit

THING = "cfg-1"


class _Ctx(dict):
    def devtest_ctx(self):
        return dict(self)


def vectors():
    """{name: command bytes}, each as published on cmd/<app>/<thing>/config."""
    key, rogue = kit.signing_key(), kit.signing_key("rogue")

    def signed(counter, settings, thing=THING, k=key):
        return devconfig.envelope(thing, counter, settings, k)

    out = {"get": b"G",
           "first": signed(1, {"interval_ms": 2000, "keepalive": 30, "qos": 0}),
           "second": signed(2, {"sleep_ms": 1000, "log_quota": 131072,
                                "sensors": {"t": {"kind": "ramp", "start": 1, "step": 0.5}}}),
           "third": signed(7, {"interval_ms": 3000})}
    bad = bytearray(signed(5, {"interval_ms": 2500}))
    bad[-100] ^= 1
    out["bad_signature"] = bytes(bad)
    altered = signed(5, {"interval_ms": 2500})
    out["altered"] = altered.replace(b'"interval_ms":2500', b'"interval_ms":2501')
    # another key's signature under the fleet key's id: the signature fails
    other = bytearray(signed(5, {"interval_ms": 2500}, k=rogue))
    other[5:13] = keys.key_id(key.public_key())
    out["other_key"] = bytes(other)
    out["unknown_key"] = signed(5, {"interval_ms": 2500}, k=rogue)
    out["wrong_target"] = signed(5, {"interval_ms": 2500}, thing="cfg-2")
    out["out_of_range"] = signed(5, {"interval_ms": 5})
    out["qos_2"] = signed(5, {"qos": 2})
    out["sleep_short"] = signed(5, {"sleep_ms": 10})
    out["bool_qos"] = signed(5, {"qos": True})
    out["i2c_sensor"] = signed(5, {"sensors": {"t": {"kind": "i2c", "driver": "os"}}})
    out["broker_host"] = signed(5, {"broker": {"host": "evil.example", "port": 8883}})
    out["thing_name"] = signed(5, {"thing": "cfg-2"})
    out["one_bad_of_two"] = signed(5, {"interval_ms": 2500, "app": "other"})
    out["empty"] = signed(5, {})
    out["malformed"] = b"S" + b"WCF1" + b"\0" * 20
    out["not_a_command"] = b"X"
    return out


@pytest.fixture(scope="session")
def config_vectors(tmp_path_factory):
    d = tmp_path_factory.mktemp("config")
    ctx = _Ctx(thing=THING, keys={})
    for name, data in kit.key_files("fleet").items():
        p = d / name.rsplit("/", 1)[1]
        p.write_bytes(data)
        ctx["keys"][name] = str(p)
    (d / "config.json").write_text(json.dumps({"thing": THING, "app": "warden", "broker": {"host": "localhost"},
                                                "interval_ms": 1000, "wifi": {"ssid": "s"}}))
    ctx["config"] = str(d / "config.json")
    for name, data in vectors().items():
        p = d / (name + ".cmd")
        p.write_bytes(data)
        ctx[name] = str(p)
    return ctx
