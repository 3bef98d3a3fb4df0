"""The device twin end to end: real device code under micropython (-X heapsize=64k, .mpy),
a real mosquitto with mutual TLS and ACLs, an operator observing with paho.

Every refusal is shown: the device refuses a rogue or misnamed broker, the broker refuses a
foreign or expired device certificate, another device's topic and a stolen client id."""
import json
import os
import re
import shutil

import pytest

from support.devrun import MP, run_mp
from support.twinproc import Twin
from warden.board import twin as twinlib
from warden.broker.server import Broker
from warden.fleet import pki
from warden.state import State


@pytest.fixture
def make_twin(pki_state, broker, provision, tmp_path):
    twins = []

    def make(thing, ident=None, port=None, heap=twinlib.DEFAULT_HEAP, **cfg):
        ident = ident or provision(thing)
        cfg.setdefault("interval_ms", 20)
        config = twinlib.device_config(pki_state, thing, broker={"host": "localhost", "port": port or broker.port},
                                       **cfg)
        files = twinlib.identity_files(ident.cert_der, ident.key_der, ident.ca.read_bytes())
        flash = twinlib.build_flash(tmp_path / ("%s.bin" % thing), files, config, log_key=os.urandom(32))
        t = Twin(flash, heap)
        twins.append(t)
        return t

    yield make
    for t in twins:
        t.stop()


def readings(probe, thing, n):
    out = []
    while len(out) < n:
        m = probe.expect("dt/warden/%s/telemetry" % thing, timeout=10)
        out.append(json.loads(m.payload))
    return out


def test_readings_arrive_in_order_with_status(make_twin, mqtt_client):
    op = mqtt_client("operator")
    op.subscribe("dt/warden/twin-a/#")
    t = make_twin("twin-a", max_readings=25).start()
    got = readings(op, "twin-a", 25)
    assert t.wait_exit(20) == 0, t.output
    seqs = [r["seq"] for r in got]
    assert seqs == list(range(seqs[0], seqs[0] + 25)), seqs
    assert all(set(r["values"]) == {"temperature", "humidity"} for r in got)
    assert all(abs(r["ts"] - got[0]["ts"]) < 60 for r in got)
    statuses = [json.loads(m.payload)["state"] for m in op.history if m.topic.endswith("/status")]
    assert statuses[0] == "online"
    heap = int(re.search(r"heap in use (\d+) bytes", t.output).group(1))
    assert heap < 64 * 1024  # the steady state; the 64k run itself is test_heap_budget.py
    # after a clean end the retained status says offline
    late = mqtt_client("operator")
    late.subscribe("dt/warden/twin-a/status")
    m = late.expect("dt/warden/twin-a/status")
    assert m.retain and json.loads(m.payload)["state"] == "offline"


def test_sequence_continues_across_a_restart(make_twin, mqtt_client):
    op = mqtt_client("operator")
    op.subscribe("dt/warden/twin-r/telemetry")
    t = make_twin("twin-r", max_readings=3).start()
    first = readings(op, "twin-r", 3)
    assert t.wait_exit(20) == 0
    t.start()
    second = readings(op, "twin-r", 3)
    assert second[0]["seq"] > first[-1]["seq"]


def _state_with_broker_cert(src, dst, ca, hosts):
    """A copy of a project state whose broker presents a certificate for `hosts` signed by `ca`."""
    shutil.copytree(src.root, dst.root)
    cert, key = pki.issue_server_cert(ca, hosts)
    (dst.pki_dir / "broker.crt.pem").write_bytes(pki.cert_pem(cert))
    (dst.pki_dir / "broker.key.pem").write_bytes(pki.key_pem(key))
    return dst


@pytest.mark.parametrize("case", ["rogue-ca", "wrong-host"])
def test_device_refuses_a_broker_it_should_not_trust(case, pki_state, make_twin, tmp_path):
    ca = pki.make_ca("Rogue CA") if case == "rogue-ca" else pki.load_ca(pki_state)
    hosts = ("localhost", "127.0.0.1") if case == "rogue-ca" else ("broker.example.net",)
    rogue_state = _state_with_broker_cert(pki_state, State(tmp_path / "rogue"), ca, hosts)
    with Broker(rogue_state, run_dir=tmp_path / "rogue-run") as rogue:
        t = make_twin("twin-" + case, port=rogue.port).start()
        m = t.wait_for(r"ERROR mqtt: connect failed: (.*); retry", timeout=15)
        assert "connected to" not in t.output
        assert "CERT" in m.group(1).upper() or "VERIF" in m.group(1).upper(), m.group(1)
        log = rogue.log_tail(50)
    # the rogue broker never saw an MQTT CONNECT from the device
    assert "New client connected" not in log, log


def test_broker_refuses_a_device_certificate_from_another_ca(make_twin, provision, mqtt_client):
    op = mqtt_client("operator")
    op.subscribe("dt/warden/twin-foreign/#")
    foreign = provision("twin-foreign", ca=pki.make_ca("Foreign CA"))
    t = make_twin("twin-foreign", ident=foreign).start()
    t.wait_for(r"ERROR mqtt: connect failed", timeout=15)
    assert "connected to" not in t.output
    with pytest.raises(TimeoutError):
        op.expect(timeout=0.5)


def test_expired_certificate_refused_by_device_and_by_broker(make_twin, provision, broker):
    import datetime as dt
    now = dt.datetime.now(dt.timezone.utc)
    expired = provision("twin-old", not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1))
    t = make_twin("twin-old", ident=expired).start()
    t.wait_for(r"ERROR boot: identity: certificate expired", timeout=10)
    # and the broker refuses it too when a device skips its own check
    r = mp_connect(expired, broker.port, "twin-old")
    assert "CONNECT-FAILED" in r.stdout and "CONNECTED" not in r.stdout.replace("CONNECT-FAILED", ""), r.stdout + r.stderr


def mp_connect(ident, port, client_id, action=""):
    """tests/support/mp/mqtt_tls_connect.py under micropython: connect with `ident`'s files (no
    device checks), print CONNECTED or CONNECT-FAILED, then run `action` with the client `c`."""
    return run_mp(script=MP / "mqtt_tls_connect.py", args=[client_id, port, ident.ca, ident.cert, ident.key],
                  env={"WARDEN_TEST_ACTION": action}, heap="256k")


def test_device_cannot_publish_to_another_devices_topic(broker, provision, mqtt_client):
    """Our own client (bypassing the device's topic guard) publishes to twin-victim's topic; the
    broker drops it silently (MQTT 3.1.1), so a privileged operator proves nothing arrived."""
    op = mqtt_client("operator")
    op.subscribe("dt/#")
    evil = provision("twin-evil")
    extra = """
c.publish('dt/warden/twin-victim/telemetry', b'forged', qos=1)
c.publish('cmd/warden/twin-victim/reboot', b'forged', qos=1)
c.publish('dt/warden/twin-evil/telemetry', b'sentinel', qos=1)
print('PUBLISHED')
c.disconnect()
"""
    r = mp_connect(evil, broker.port, "twin-evil", extra)
    assert "PUBLISHED" in r.stdout, r.stdout + r.stderr
    m = op.expect("dt/warden/twin-evil/telemetry")
    assert m.payload == b"sentinel"
    assert not [h for h in op.history if "twin-victim" in h.topic], [h.topic for h in op.history]


def test_device_cannot_take_over_another_devices_client_id(make_twin, provision, broker, mqtt_client):
    op = mqtt_client("operator")
    op.subscribe("dt/warden/twin-owner/telemetry")
    owner = make_twin("twin-owner", interval_ms=50).start()
    first = readings(op, "twin-owner", 2)
    thief = provision("twin-thief")
    extra = """
c.publish('dt/warden/twin-thief/telemetry', b'x', qos=1)
print('THIEF-SESSION-OK')
c.disconnect()
"""
    r = mp_connect(thief, broker.port, "twin-owner", extra)
    assert "THIEF-SESSION-OK" in r.stdout, r.stdout + r.stderr
    # The owner keeps its session: its readings keep coming and it never lost the link.
    later = readings(op, "twin-owner", 5)
    assert later[-1]["seq"] == first[-1]["seq"] + 5
    assert "session lost" not in owner.output and owner.output.count("connected to") == 1, owner.output


def test_duty_cycle_publishes_then_sleeps_and_wakes(make_twin, mqtt_client):
    op = mqtt_client("operator")
    op.subscribe("dt/warden/twin-duty/telemetry")
    t = make_twin("twin-duty", sleep_ms=100).start()
    for _ in range(2):  # it wakes (a soft reset after the deep sleep) and publishes again, twice
        t.wait_for(r"INFO boot: .* reset cause soft", 15)
    got = readings(op, "twin-duty", 3)
    assert [r["seq"] for r in got] == sorted(r["seq"] for r in got)
    assert t.resets >= 2 and t.output.count("INFO app: deep sleep for 100 ms") >= 2, t.output


def test_config_errors_idle_the_device_instead_of_a_reboot_loop(make_twin):
    t = make_twin("twin-badcfg", keepalive=1)  # out of range: the device must say so and wait
    t.start()
    t.wait_for(r"ERROR boot: config: keepalive must be", 10)
    assert t.proc.poll() is None and t.resets == 0
