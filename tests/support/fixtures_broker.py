"""pytest plugin: a fleet PKI, a real mosquitto per test module, device identities, MQTT probes.

Registered by tests/conftest.py: `pytest_plugins = ["support.fixtures_broker"]`.

Fixtures:
    pki_state    (session)  a warden State in a temporary folder, with init_pki done
    broker       (module)   a running warden.broker.server.Broker for pki_state on a free loopback port
    provision    (function) provision(thing, **kw) -> Provisioned: a device identity issued by
                            warden.fleet.pki.issue_device_cert (kw: days, not_before, not_after, key, ca)
                            written to a temporary folder as cert.der, key.der, ca.der (+ PEM)
    mqtt_client  (function) mqtt_client(identity, client_id=None, connect=True) -> Probe: a paho
                            client against `broker`; identity is "operator", "technician",
                            "observer" (test-only: reads dt/# and cmd/#, publishes cmd/#), a
                            Provisioned, or None (no client certificate). Closed at teardown.

`Probe` waits on events with bounded timeouts (never sleeps for luck): connect() returns the
CONNACK reason or raises Refused, subscribe() waits for the SUBACK, publish() for the PUBACK,
expect() for a message.
"""
from __future__ import annotations

import queue
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives import serialization

from warden.broker.server import Broker
from warden.fleet import pki
from warden.state import State

TIMEOUT = 5.0


@dataclass
class Provisioned:
    """A device identity on disk: the DER files a device gets, plus PEM copies for paho."""
    thing: str
    dir: Path
    cert: Path          # cert.der
    key: Path           # key.der (SEC1 DER)
    ca: Path            # ca.der (the fleet CA)
    cert_pem: Path
    key_pem: Path
    ca_pem: Path
    cert_der: bytes
    key_der: bytes
    fingerprint: str


OBSERVER_ROLE = {
    "description": "tests only: the privileged observer that proves isolation (reads every device "
                   "topic and command) and drives devices (sends any command)",
    "principals": ["observer.default"],
    "allow": [{"action": "subscribe", "topic": "dt/#"}, {"action": "subscribe", "topic": "cmd/#"},
              {"action": "publish", "topic": "cmd/#"}],
}


def add_observer(state: State):
    """Add the test-only `observer` role (principal observer.default, files pki/observer.*.pem) to
    the state's policy. The default roles stay least-privileged: tests that need to see or send
    everything use mqtt_client("observer")."""
    from warden.policy.model import load_policy_data, save_policy

    data = load_policy_data(state)
    data["roles"]["observer"] = OBSERVER_ROLE
    save_policy(state, data)
    pki.issue_principal(state, "observer")


@pytest.fixture(scope="session")
def pki_state(tmp_path_factory):
    state = State(tmp_path_factory.mktemp("warden-state") / ".warden")
    pki.init_pki(state)
    add_observer(state)
    return state


@pytest.fixture(scope="module")
def broker(pki_state, tmp_path_factory):
    b = Broker(pki_state, run_dir=tmp_path_factory.mktemp("broker"))
    b.start()
    try:
        yield b
    finally:
        b.stop()


def write_identity(folder: Path, thing: str, cert_der: bytes, key_der: bytes, ca_pem: bytes) -> Provisioned:
    folder.mkdir(parents=True, exist_ok=True)
    ca_cert = pki.load_cert(ca_pem)
    key = serialization.load_der_private_key(key_der, password=None)
    files = {
        "cert.der": cert_der,
        "key.der": key_der,
        "ca.der": pki.cert_der(ca_cert),
        "cert.pem": pki.cert_pem(pki.load_cert(cert_der)),
        "key.pem": pki.key_pem(key),
        "ca.pem": ca_pem,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "key.der").chmod(0o600)
    (folder / "key.pem").chmod(0o600)
    return Provisioned(thing, folder, folder / "cert.der", folder / "key.der", folder / "ca.der",
                       folder / "cert.pem", folder / "key.pem", folder / "ca.pem", cert_der, key_der,
                       pki.fingerprint(cert_der))


@pytest.fixture
def provision(pki_state, tmp_path):
    counter = [0]

    def make(thing: str, **kw) -> Provisioned:
        cert_der, key_der = pki.issue_device_cert(pki_state, thing, **kw)
        counter[0] += 1
        ca_pem = (pki_state.pki_dir / pki.CA_CERT).read_bytes()
        return write_identity(tmp_path / f"id{counter[0]}-{thing}", thing, cert_der, key_der, ca_pem)

    return make


class Refused(Exception):
    """The broker refused the connection (TLS failure, closed socket or a CONNACK error)."""


class Probe:
    """A paho MQTT 3.1.1 client on a background thread, with bounded waits on its events."""

    def __init__(self, host, port, *, ca, cert=None, key=None, client_id="", timeout=TIMEOUT):
        self.host, self.port, self.timeout = host, port, timeout
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv311, reconnect_on_failure=False)
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None,
                            keyfile=str(key) if key else None)
        self.messages = queue.Queue()
        self.history = []
        self.connack = None
        self.disconnects = 0
        self.disconnect_reason = None
        self._cond = threading.Condition()
        self._subacks = {}
        self._pubacks = set()
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_message = lambda client, userdata, msg: self.messages.put(msg)
        self._started = False

    # callbacks (paho thread)
    def _notify(self, fn):
        with self._cond:
            fn()
            self._cond.notify_all()

    def _on_connect(self, client, userdata, flags, reason, props):
        self._notify(lambda: setattr(self, "connack", reason))

    def _on_disconnect(self, client, userdata, flags, reason, props):
        def f():
            self.disconnects += 1
            self.disconnect_reason = reason
        self._notify(f)

    def _on_subscribe(self, client, userdata, mid, reasons, props):
        self._notify(lambda: self._subacks.__setitem__(mid, reasons))

    def _on_publish(self, client, userdata, mid, reason, props):
        self._notify(lambda: self._pubacks.add(mid))

    def wait_for(self, predicate, what):
        """Wait (bounded by self.timeout) until predicate() is true after some callback; TimeoutError if not."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout=self.timeout):
                raise TimeoutError(f"{what}: nothing within {self.timeout} s")

    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    def connect(self, keepalive=30):
        """Connect; returns the CONNACK reason code. Raises Refused if the broker does not accept."""
        try:
            self.client.connect(self.host, self.port, keepalive=keepalive)
        except (ssl.SSLError, OSError) as e:
            raise Refused(f"connect failed: {e!r}") from e
        self.client.loop_start()
        self._started = True
        self.wait_for(lambda: self.connack is not None or self.disconnects, "CONNACK")
        if self.connack is None:
            raise Refused(f"disconnected before CONNACK: {self.disconnect_reason}")
        if self.connack.is_failure:
            raise Refused(f"CONNACK refused: {self.connack}")
        return self.connack

    def subscribe(self, topic, qos=1):
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == paho.MQTT_ERR_SUCCESS, rc
        self.wait_for(lambda: mid in self._subacks or self.disconnects, f"SUBACK for {topic}")
        if mid not in self._subacks:
            raise Refused(f"disconnected while subscribing to {topic}")
        return self._subacks[mid]

    def publish(self, topic, payload, qos=1, retain=False):
        """Publish; for QoS 1 returns once the PUBACK arrived (raises Refused if disconnected)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise Refused(f"publish to {topic} failed: rc={info.rc}")
        self.wait_for(lambda: info.mid in self._pubacks or self.disconnects, f"PUBACK for {topic}")
        if info.mid not in self._pubacks:
            raise Refused(f"disconnected while publishing to {topic}")
        return info.mid

    def expect(self, topic=None, timeout=None):
        """The next message (the next one on `topic` if given). Every message taken off the queue,
        wanted or not, is appended to `self.history` in arrival order."""
        wait = timeout or self.timeout
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no message on {topic or 'any topic'} within {wait} s "
                                   f"(got {[m.topic for m in self.history]})")
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            self.history.append(msg)
            if topic is None or msg.topic == topic:
                return msg

    def close(self):
        try:
            if self.client.is_connected():
                self.client.disconnect()
        finally:
            if self._started:
                self.client.loop_stop()
                self._started = False


def client_files(state: State, identity):
    """(ca PEM, cert PEM or None, key PEM or None) for a role name, a Provisioned, or None."""
    ca = state.pki_dir / pki.CA_CERT
    if identity is None:
        return ca, None, None
    if isinstance(identity, Provisioned):
        return identity.ca_pem, identity.cert_pem, identity.key_pem
    if isinstance(identity, str):
        cert, key = pki.principal_paths(state, identity)
        return ca, cert, key
    cert, key = identity
    return ca, cert, key


@pytest.fixture
def mqtt_client(broker, pki_state):
    probes = []

    def make(identity, client_id=None, connect=True, timeout=TIMEOUT) -> Probe:
        ca, cert, key = client_files(pki_state, identity)
        if client_id is None:
            client_id = identity.thing if isinstance(identity, Provisioned) else ""
        probe = Probe(broker.host, broker.port, ca=ca, cert=cert, key=key, client_id=client_id,
                      timeout=timeout)
        probes.append(probe)
        if connect:
            probe.connect()
        return probe

    yield make
    for p in probes:
        p.close()
