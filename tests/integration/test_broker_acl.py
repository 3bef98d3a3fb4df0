"""Topic isolation on the local broker, proven by a privileged observer (never the device's view).

mosquitto drops a denied publish silently (QoS 1 still gets its PUBACK) and grants a forbidden
subscription while filtering delivery. So each test sends the forbidden message first and an
allowed sentinel after it, from the same client (or causally after it): once the sentinel has
arrived, the forbidden message would have arrived before it had it been delivered.
"""
import pytest


@pytest.fixture
def fleet(provision):
    return provision("acl-a"), provision("acl-b")


def topics(probe):
    return [m.topic for m in probe.history]


def test_operator_receives_device_telemetry(mqtt_client, fleet):
    a, _ = fleet
    observer = mqtt_client("operator")
    observer.subscribe("dt/#")
    dev = mqtt_client(a)
    dev.publish("dt/warden/acl-a/telemetry", b'{"t": 21.5}')
    msg = observer.expect("dt/warden/acl-a/telemetry")
    assert msg.payload == b'{"t": 21.5}'


def test_device_cannot_publish_to_another_devices_topic(mqtt_client, fleet):
    a, _ = fleet
    observer = mqtt_client("operator")
    observer.subscribe("dt/#")
    observer.subscribe("cmd/#")   # operator has no read on cmd: granted but nothing delivered
    dev = mqtt_client(a)
    dev.publish("dt/warden/acl-b/telemetry", b"forged")           # PUBACKed, silently dropped
    dev.publish("dt/other-app/acl-a/telemetry", b"other app")     # outside its app
    dev.publish("cmd/warden/acl-b/reboot", b"forged command")     # commands are not for devices
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
    operator = mqtt_client("operator")
    operator.publish("cmd/warden/acl-b/config", b"for b")
    operator.publish("cmd/warden/acl-a/config", b"sentinel for a")
    msg = dev_a.expect("cmd/warden/acl-a/config")
    assert msg.payload == b"sentinel for a"
    assert topics(dev_a) == ["cmd/warden/acl-a/config"]


def test_device_receives_its_commands(mqtt_client, fleet):
    a, _ = fleet
    dev = mqtt_client(a)
    dev.subscribe("cmd/warden/acl-a/#")
    mqtt_client("operator").publish("cmd/warden/acl-a/ota", b"go")
    assert dev.expect("cmd/warden/acl-a/ota").payload == b"go"


def test_technician_reads_but_cannot_command(mqtt_client, fleet):
    a, _ = fleet
    tech = mqtt_client("technician")
    tech.subscribe("dt/warden/#")
    dev = mqtt_client(a)
    dev.subscribe("cmd/warden/acl-a/#")
    tech.publish("cmd/warden/acl-a/reboot", b"from technician")    # denied
    mqtt_client("operator").publish("cmd/warden/acl-a/reboot", b"from operator")
    assert dev.expect("cmd/warden/acl-a/reboot").payload == b"from operator"
    assert topics(dev) == ["cmd/warden/acl-a/reboot"]
    dev.publish("dt/warden/acl-a/status", b"online")
    assert tech.expect("dt/warden/acl-a/status").payload == b"online"


def test_sys_topics_are_not_readable(mqtt_client, fleet):
    a, _ = fleet
    observer = mqtt_client("operator")
    observer.subscribe("$SYS/#")
    observer.subscribe("dt/#")
    # $SYS/broker/... is published every sys_interval (10 s by default) and at subscribe time for
    # retained ones; a device publish gives the sentinel.
    mqtt_client(a).publish("dt/warden/acl-a/telemetry", b"sentinel")
    observer.expect("dt/warden/acl-a/telemetry")
    assert not [t for t in topics(observer) if t.startswith("$SYS")]
