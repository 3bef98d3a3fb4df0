"""The local broker authenticates every client by certificate (real mosquitto, paho clients)."""
import datetime as dt

import pytest

from support.fixtures_broker import Refused
from warden.fleet import pki


def test_broker_listens_on_loopback_only(broker):
    text = broker.conf_path.read_text()
    assert f"listener {broker.port} 127.0.0.1" in text
    assert broker.host == "127.0.0.1"


def test_client_without_certificate_is_refused(mqtt_client):
    probe = mqtt_client(None, client_id="nobody", connect=False)
    with pytest.raises(Refused):
        probe.connect()
    assert not probe.connected


def test_operator_and_device_connect(mqtt_client, provision):
    assert mqtt_client("operator").connected
    assert mqtt_client(provision("auth-dev-1")).connected


def test_device_cert_from_another_ca_is_refused(mqtt_client, provision):
    foreign = pki.make_ca("Evil CA")
    dev = provision("auth-foreign", ca=foreign)
    with pytest.raises(Refused):
        mqtt_client(dev)


def test_foreign_cert_with_the_fleet_ca_name_is_refused(mqtt_client, provision):
    # Same subject as the real CA, different key: the name alone must not be trusted.
    foreign = pki.make_ca(pki.CA_CN)
    with pytest.raises(Refused):
        mqtt_client(provision("auth-lookalike", ca=foreign))


def test_expired_device_cert_is_refused(mqtt_client, provision):
    now = dt.datetime.now(dt.timezone.utc)
    dev = provision("auth-expired", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    with pytest.raises(Refused):
        mqtt_client(dev)


def test_not_yet_valid_device_cert_is_refused(mqtt_client, provision):
    now = dt.datetime.now(dt.timezone.utc)
    dev = provision("auth-future", not_before=now + dt.timedelta(days=1), not_after=now + dt.timedelta(days=30))
    with pytest.raises(Refused):
        mqtt_client(dev)


def test_client_id_is_the_certificate_cn(mqtt_client, provision):
    """use_username_as_clientid: a device claiming another's client id does not kick it off."""
    victim = provision("auth-victim")
    thief = provision("auth-thief")
    a = mqtt_client(victim)
    observer = mqtt_client("operator")
    observer.subscribe("dt/#")
    # The thief connects with the victim's client id. Were the id honoured, mosquitto would drop
    # the victim's session while handling this CONNECT, i.e. before it sends the thief's CONNACK.
    b = mqtt_client(thief, client_id="auth-victim")
    assert b.connected
    # So a round trip from the victim after that CONNACK proves it is still connected.
    a.publish("dt/warden/auth-victim/telemetry", b"still here")
    assert a.disconnects == 0 and a.connected
    msg = observer.expect("dt/warden/auth-victim/telemetry")
    assert msg.payload == b"still here"
    # And the thief is still itself: it can publish under its own name only.
    b.publish("dt/warden/auth-thief/telemetry", b"thief")
    assert observer.expect("dt/warden/auth-thief/telemetry").payload == b"thief"


def test_the_same_device_reconnecting_replaces_its_old_session(mqtt_client, provision):
    """The other side of client id = CN: a second connection of the same device takes over."""
    dev = provision("auth-twice")
    first = mqtt_client(dev)
    second = mqtt_client(dev, client_id="whatever")
    assert second.connected
    first.wait_for(lambda: first.disconnects > 0, "takeover disconnect")
    assert first.disconnects == 1
