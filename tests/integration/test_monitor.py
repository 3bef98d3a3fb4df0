"""`warden monitor` against a real mosquitto: a device publishing outside its own topics is seen
as an authorization failure in the broker's own signals (the guard's log line) and raises the
alert; a rule's `quarantine` action narrows the device at the broker, which an observer proves:
its telemetry is dropped, its status and metrics still arrive, it receives nothing; `warden
device unquarantine` gives its rights back."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from cryptography import x509

from warden.cli import main
from warden.fleet.registry import Registry
from warden.monitor import rules as monrules
from warden.monitor.live import Monitor
from warden.monitor.store import Store


@pytest.fixture
def device(pki_state, provision):
    """A provisioned device, registered (a quarantine needs it in the registry)."""
    made = []

    def make(thing):
        p = provision(thing)
        serial = x509.load_der_x509_certificate(p.cert_der).serial_number
        with Registry(pki_state.registry_path) as reg:
            if reg.get(thing) is None:
                reg.add(thing, p.fingerprint, serial)
        made.append(thing)
        return p

    yield make
    with Store(pki_state) as store:        # the state is shared with other modules: leave no quarantine
        for thing in made:
            store.unquarantine(thing)


def run_once(state, broker, publish=False):
    events = []
    Monitor(state, host=broker.host, port=broker.port, broker_log=broker.log_path, emit=events.append,
            publish=publish).run(once=True)
    return events


def test_a_device_publishing_outside_its_topics_is_an_authorization_failure(pki_state, broker, device, mqtt_client):
    monrules.load_rules(pki_state)          # the defaults: any authorization failure raises
    dashboard = mqtt_client("operator")
    dashboard.subscribe("alerts/warden/+/+")
    dev = mqtt_client(device("mon-dev-1"))
    dev.publish("dt/warden/mon-dev-1/telemetry", b"{}")     # its own: not a failure
    dev.publish("dt/warden/mon-other/telemetry", b"{}")     # PUBACKed, dropped, logged by the guard
    events = run_once(pki_state, broker, publish=True)
    fails = [e for e in events if e.get("signal") == "auth_fail"]
    assert [(e["name"], e["topic"]) for e in fails] == [("mon-dev-1", "dt/warden/mon-other/telemetry")]
    raised = [e for e in events if e.get("event") == "alert" and e["state"] == "raised"]
    assert [(e["thing"], e["rule"]) for e in raised] == [("mon-dev-1", "authorization-failure")]
    with Store(pki_state) as store:
        (alert,) = store.alerts(open_only=True, thing="mon-dev-1")
    assert alert["data"]["topic"] == "dt/warden/mon-other/telemetry"
    published = dashboard.expect("alerts/warden/mon-dev-1/authorization-failure")     # an operator reads it
    assert json.loads(published.payload)["state"] == "raised"
    assert run_once(pki_state, broker) == []      # each log line is judged once


def test_quarantine_drops_telemetry_keeps_status_and_is_lifted(pki_state, broker, device, mqtt_client):
    data = monrules.default_rules_data()
    for rule in data["rules"]:
        if rule["name"] == "authorization-failure":
            rule["actions"] = ["quarantine"]
    path = monrules.rules_path(pki_state)
    path.write_text(json.dumps(data))
    try:
        dev = mqtt_client(device("mon-dev-2"))
        dev.subscribe("cmd/warden/mon-dev-2/#")
        obs = mqtt_client("observer")
        obs.subscribe("dt/warden/mon-dev-2/#")
        base = "dt/warden/mon-dev-2/"
        dev.publish(base + "telemetry", b'{"n": 1}')
        assert obs.expect(base + "telemetry").payload == b'{"n": 1}'      # before: it flows

        dev.publish("dt/warden/mon-dev-9/telemetry", b"{}")              # out of scope
        events = run_once(pki_state, broker)
        raised = [e for e in events if e.get("event") == "alert" and e["thing"] == "mon-dev-2"]
        assert raised and raised[0]["actions"] == ["quarantined"]
        r = CliRunner().invoke(main, ["--state", str(pki_state.root), "monitor", "quarantined", "--json"])
        assert [q["thing"] for q in json.loads(r.stdout)] == ["mon-dev-2"]

        # telemetry first, then status and metrics: delivered in order, so once the metrics report
        # is in, a telemetry message let through would already have arrived
        dev.publish(base + "telemetry", b'{"n": 2}')
        dev.publish(base + "status", b'{"state": "online"}')
        dev.publish(base + "metrics", b'{"v": 1, "seq": 1}')
        obs.expect(base + "metrics")
        got = [m.topic for m in obs.history]
        assert got[-2:] == [base + "status", base + "metrics"]
        assert got.count(base + "telemetry") == 1
        obs.publish("cmd/warden/mon-dev-2/ota", b"dropped")              # withheld from the device

        r = CliRunner().invoke(main, ["--state", str(pki_state.root), "device", "unquarantine", "mon-dev-2"])
        assert r.exit_code == 0, r.output
        obs.publish("cmd/warden/mon-dev-2/ota", b"after")
        assert dev.expect().payload == b"after"                          # the first it gets: nothing queued
        dev.publish(base + "telemetry", b'{"n": 3}')
        assert obs.expect(base + "telemetry").payload == b'{"n": 3}'
        r = CliRunner().invoke(main, ["--state", str(pki_state.root), "device", "unquarantine", "mon-dev-2"])
        assert r.exit_code == 1 and "not quarantined" in r.output and "Traceback" not in r.output
    finally:
        path.unlink()


def test_a_twin_with_a_certificate_from_another_ca_is_a_certificate_failure(pki_state, broker, tmp_path):
    """A twin whose certificate no CA of the fleet issued (a cloned board, a forged identity) is
    refused at every handshake; the broker logs each refusal, and the default `certificate-failure`
    rule (more than 3 in 300 s) raises an alert, against the broker: a refused handshake has no
    thing name to blame."""
    from support import certfactory as cf
    from support.twinproc import Twin
    from warden.board import twin as twinlib
    from warden.fleet import pki

    monrules.load_rules(pki_state)
    run_once(pki_state, broker)          # what the log held before: judged, and not this test's
    rogue_key, key = cf.ec_key(), cf.ec_key()
    cert = cf.make_cert("mon-cloned", key, rogue_key, "rogue CA")      # issued by a CA of its own
    ca_der = pki.cert_der(pki.load_cert((pki_state.pki_dir / pki.CA_CERT).read_bytes()))   # it trusts the broker
    config = twinlib.device_config(pki_state, "mon-cloned", broker={"host": "localhost", "port": broker.port},
                                   backoff_ms=50, backoff_max_ms=100)
    flash = twinlib.build_flash(tmp_path / "cloned.bin", twinlib.identity_files(cf.der(cert), cf.key_der(key), ca_der),
                                config, log_key=bytes(32))
    t = Twin(flash).start()
    try:
        for _ in range(5):
            t.wait_for(r"ERROR mqtt: connect failed", 15)
    finally:
        t.stop()
    events = run_once(pki_state, broker)
    fails = [e for e in events if e.get("signal") == "cert_fail"]
    assert len(fails) >= 4, events
    raised = [(e["thing"], e["rule"]) for e in events if e.get("event") == "alert" and e["state"] == "raised"]
    assert ("(broker)", "certificate-failure") in raised, events
