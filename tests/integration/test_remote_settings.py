"""`warden device config`: remote settings on one real twin through a real mosquitto. A signed set
is applied, answered and stored, and survives a reset; the device itself refuses a replay and a
setting off its list (the broker's address); the operator, whom the policy gives no right to it,
can neither send a config command nor read the answers (the broker drops both). On the twin at its
default heap, and on the 32-bit port (a board's heap layout) at a board's 64 KiB, where the
command's RSA verify runs on top of the session."""
import json

import pytest
from click.testing import CliRunner

from support.devrun import micropython32
from support.twinproc import Twin
from warden.board import flashimage, twin as twinlib
from warden.cli import main
from warden.fleet import devconfig, devices
from warden.ota import keys

PORT32 = micropython32()
BUILDS = [pytest.param(("64-bit", twinlib.DEFAULT_HEAP), id="64-bit"),
          pytest.param(("32-bit", "64k"), id="32-bit-64k", marks=pytest.mark.skipif(
              PORT32 is None, reason="no 32-bit MicroPython port here ($MICROPYTHON32)"))]


@pytest.fixture
def fleet(pki_state, broker):
    if not keys.has_key(pki_state):
        keys.init_keys(pki_state)
    pki_state.broker_port = broker.port
    return pki_state


def cli(fleet, thing, *args):
    return CliRunner().invoke(main, ["--state", str(fleet.root), "device", "config", thing, *args])


def stored(path):
    return json.loads(flashimage.FlashFile(path).read("/config.json"))


@pytest.mark.parametrize("build", BUILDS)
def test_a_signed_setting_is_applied_answered_and_survives_a_reset(fleet, broker, mqtt_client, build):
    name, heap = build
    thing = f"cfg-{name}"
    devices.add_device(fleet, thing)
    path = twinlib.flash_path(fleet, thing)
    twinlib.update_config(path, broker={"host": "localhost", "port": broker.port}, interval_ms=100)
    t = Twin(path, heap=heap, binary=PORT32 if name == "32-bit" else None).start()
    try:
        t.wait_for(r"INFO telemetry: first reading", 15)
        # the operator may not command: its signed set (counter 1) never reaches the device ...
        op = mqtt_client("operator")
        op.subscribe(f"dt/warden/{thing}/config")
        op.subscribe(f"dt/warden/{thing}/telemetry")
        forged = devconfig.envelope(thing, 1, {"interval_ms": 150}, keys.load_private_key(fleet))
        op.publish(f"cmd/warden/{thing}/config", forged)
        r = cli(fleet, thing, "set", "interval_ms", "200")
        assert r.exit_code == 0, r.output
        assert f"{thing} applied interval_ms (command 1)" in r.output and "interval_ms = 200" in r.output
        t.wait_for(r"INFO config: settings changed by command 1: interval_ms", 5)
        # ... (the technician's set was command 1: the device had applied none) and it reads no answer
        op.expect(f"dt/warden/{thing}/telemetry")
        assert not [m for m in op.history if m.topic.endswith("/config")]

        r = cli(fleet, thing, "set", "keepalive", "30")
        assert r.exit_code == 0 and "keepalive = 30 (stored; in force after the next boot)" in r.output, r.output
        # the device refuses by itself what the tool would not send: a replay, the broker's address
        link = devconfig.Link(fleet, thing).connect()
        try:
            d = link.ask(forged, {"refused"}, 10)
            assert d["reason"] == "older command: counter 1 is lower than the applied 2", d
        finally:
            link.close()
        with pytest.raises(devconfig.ConfigRefused, match="broker may not be set remotely"):
            devconfig.set_settings(fleet, thing, {"broker": {"host": "evil.example", "port": 8883}},
                                   local_check=False)
        assert t.stop() == 0, t.output
        cfg = stored(path)
        assert cfg["interval_ms"] == 200 and cfg["keepalive"] == 30
        assert cfg["broker"] == {"host": "localhost", "port": broker.port}

        t.start()   # a reset: what was stored is what runs
        t.wait_for(r"INFO telemetry: first reading", 15)
        r = cli(fleet, thing, "get", "--json")
        assert r.exit_code == 0, r.output
        d = json.loads(r.output)
        assert d["counter"] == 2 and d["at_boot"] == [], d
        assert d["settings"]["interval_ms"] == 200 and d["settings"]["keepalive"] == 30, d
    finally:
        t.stop()
