"""Topic isolation on the local broker, proven by a privileged observer (never the device's view).

mosquitto drops a denied publish silently (QoS 1 still gets its PUBACK) and grants a forbidden
subscription while filtering delivery. So each test sends the forbidden message first and an
allowed sentinel after it, from the same client (or causally after it): once the sentinel has
arrived, the forbidden message would have arrived before it had it been delivered.

The observer is the test-only role (fixtures_broker.add_observer: reads dt/# and cmd/#); the
roles under test are the default policy's device, operator and technician (issue 5).
The full matrix (5 devices, every cross pair) is tests/integration/test_policy_matrix.py.
"""
import pytest


@pytest.fixture
def fleet(provision):
    return provision("acl-a"), provision("acl-b")


def topics(probe):
    return [m.topic for m in probe.history]


def test_operator_receives_telemetry_and_status_only(mqtt_client, fleet):
    a, _ = fleet
    op = mqtt_client("operator")
    op.subscribe("dt/#")                                   # granted; delivery is filtered
    dev = mqtt_client(a)
    dev.publish("dt/warden/acl-a/ota", b'{"step":"write"}')   # OTA progress: not the operator's
    dev.publish("dt/warden/acl-a/debug", b"x")
    dev.publish("dt/warden/acl-a/status", b"online")
    dev.publish("dt/warden/acl-a/telemetry", b'{"t": 21.5}')
    assert op.expect("dt/warden/acl-a/telemetry").payload == b'{"t": 21.5}'
    assert topics(op) == ["dt/warden/acl-a/status", "dt/warden/acl-a/telemetry"]


def test_device_cannot_publish_to_another_devices_topic(mqtt_client, fleet):
    a, _ = fleet
    observer = mqtt_client("observer")
    observer.subscribe("dt/#")
    observer.subscribe("cmd/#")
    dev = mqtt_client(a)
    dev.publish("dt/warden/acl-b/telemetry", b"forged")           # PUBACKed, silently dropped
    dev.publish("dt/other-app/acl-a/telemetry", b"other app")     # outside its app
    dev.publish("cmd/warden/acl-b/reboot", b"forged command")     # commands are not for devices
    dev.publish("cmd/warden/acl-a/reboot", b"to itself")          # not even its own
    dev.publish("dt/warden/acl-a/telemetry", b"sentinel")
    observer.expect("dt/warden/acl-a/telemetry")
    assert topics(observer) == ["dt/warden/acl-a/telemetry"]


def test_device_cannot_read_other_devices(mqtt_client, fleet):
    a, b = fleet
    dev_a = mqtt_client(a)
    dev_a.subscribe("dt/#")                     # granted, but delivery is filtered
    dev_a.subscribe("cmd/warden/acl-b/#")
    dev_a.subscribe("cmd/warden/acl-a/#")
    dev_b = mqtt_client(b)
    dev_b.publish("dt/warden/acl-b/telemetry", b"b's data")
    dev_a.publish("dt/warden/acl-a/telemetry", b"a's own data")   # not readable even to itself
    observer = mqtt_client("observer")
    observer.publish("cmd/warden/acl-b/config", b"for b")
    observer.publish("cmd/warden/acl-a/config", b"sentinel for a")
    msg = dev_a.expect("cmd/warden/acl-a/config")
    assert msg.payload == b"sentinel for a"
    assert topics(dev_a) == ["cmd/warden/acl-a/config"]


def test_device_receives_its_commands(mqtt_client, fleet):
    a, _ = fleet
    dev = mqtt_client(a)
    dev.subscribe("cmd/warden/acl-a/#")
    mqtt_client("technician").publish("cmd/warden/acl-a/ota", b"go")
    assert dev.expect("cmd/warden/acl-a/ota").payload == b"go"


def test_technician_sends_ota_only_and_reads_ota_progress_only(mqtt_client, fleet):
    a, _ = fleet
    tech = mqtt_client("technician")
    tech.subscribe("dt/warden/#")
    dev = mqtt_client(a)
    dev.subscribe("cmd/warden/acl-a/#")
    tech.publish("cmd/warden/acl-a/reboot", b"from technician")    # not an OTA command: denied
    tech.publish("cmd/warden/acl-a/ota/x", b"below ota")           # not the OTA topic: denied
    tech.publish("cmd/warden/acl-a/ota", b"update")
    assert dev.expect("cmd/warden/acl-a/ota").payload == b"update"
    assert topics(dev) == ["cmd/warden/acl-a/ota"]
    dev.publish("dt/warden/acl-a/telemetry", b"not for technicians")
    dev.publish("dt/warden/acl-a/ota", b'{"percent": 50}')
    assert tech.expect("dt/warden/acl-a/ota").payload == b'{"percent": 50}'
    assert topics(tech) == ["dt/warden/acl-a/ota"]


def test_operator_cannot_command(mqtt_client, fleet):
    a, _ = fleet
    dev = mqtt_client(a)
    dev.subscribe("cmd/warden/acl-a/#")
    mqtt_client("operator").publish("cmd/warden/acl-a/ota", b"from operator")   # denied
    mqtt_client("technician").publish("cmd/warden/acl-a/ota", b"from technician")
    assert dev.expect("cmd/warden/acl-a/ota").payload == b"from technician"
    assert topics(dev) == ["cmd/warden/acl-a/ota"]


def test_sys_topics_are_not_readable(mqtt_client, fleet):
    a, _ = fleet
    observer = mqtt_client("observer")
    observer.subscribe("$SYS/#")
    observer.subscribe("dt/#")
    # $SYS/broker/... is published every sys_interval (10 s by default) and at subscribe time for
    # retained ones; a device publish gives the sentinel.
    mqtt_client(a).publish("dt/warden/acl-a/telemetry", b"sentinel")
    observer.expect("dt/warden/acl-a/telemetry")
    assert not [t for t in topics(observer) if t.startswith("$SYS")]
