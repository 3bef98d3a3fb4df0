"""Revocation and identities outside the demo's shape: a broker started by hand from `warden broker
config` output on another address (127.0.0.2 stands in for another host, reached only over its TLS
listener), principals revoked and rotated, names outside the policy, sessions side by side, a CRL
close to lapsing, a broker that cannot be reached, and a second broker on one state folder."""
import datetime as dt
import subprocess
import sys

import pytest
from cryptography import x509

from support.fixtures_broker import Probe, Refused, write_identity
from test_revocation import mp_device, register
from warden.board.watch import Observer
from warden.broker import control as brokerctl
from warden.broker.server import Broker, BrokerError, find_mosquitto, free_port
from warden.fleet import audit, devices, pki, principals
from warden.fleet.registry import Registry
from warden.state import State

HOST = "127.0.0.2"
DEADLINE = 15


def warden(state, *args):
    return subprocess.run([sys.executable, "-m", "warden.cli", "--state", str(state.root), *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)


@pytest.fixture
def fleet(tmp_path):
    s = State(tmp_path / "fleet" / ".warden")
    pki.init_pki(s)
    return s


@pytest.fixture
def hand_broker(fleet, tmp_path):
    """`warden broker config` output in a folder of its own, started with plain `mosquitto -c`."""
    port = free_port(HOST)
    out = tmp_path / "elsewhere" / "broker"
    r = warden(fleet, "broker", "config", str(out), "--listen", f"{HOST}:{port}", "--name", HOST)
    assert r.returncode == 0, r.stdout + r.stderr
    proc = subprocess.Popen([find_mosquitto(), "-c", str(out / "mosquitto.conf")], cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    probe_ready(fleet, port)
    yield fleet, port, out
    proc.terminate()
    proc.wait(timeout=10)


def probe_ready(state, port):
    """Wait (bounded) until the hand-started broker answers a principal's session."""
    import time
    deadline = time.monotonic() + 10
    while True:
        try:
            Observer(state, HOST, port).connect(timeout=2).close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def identity(state, thing, folder):
    cert_der, key_der = pki.issue_device_cert(state, thing)
    ca_pem = (state.pki_dir / pki.CA_CERT).read_bytes()
    return write_identity(folder, thing, cert_der, key_der, ca_pem)


def probe(ident, port, client_id=None):
    p = Probe(HOST, port, ca=ident.ca_pem, cert=ident.cert_pem, key=ident.key_pem,
              client_id=client_id if client_id is not None else ident.thing)
    p.connect()
    return p


def test_hand_started_broker_obeys_device_revoke(hand_broker, tmp_path, mpy_dir):
    s, port, out = hand_broker
    dev = identity(s, "far-1", tmp_path / "far-1")
    register(s, dev)
    out_mp = None
    try:
        out_mp = mp_device(dev, port, HOST, path=[mpy_dir], deadline=DEADLINE)
        out_mp.expect("UP")
        r = warden(s, "device", "revoke", "far-1", "--reason", "stolen")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{HOST}:{port}" in r.stdout and "sessions closed" in r.stdout, r.stdout
        out_mp.expect("LOST")
        first = out_mp.expect(("REFUSED", "RECONNECTED"))
        assert first.startswith("REFUSED"), out_mp.seen
    finally:
        if out_mp is not None:
            out_mp.kill()
    with pytest.raises(Refused):
        probe(dev, port)                       # paho too: refused at the handshake
    assert [f for f in audit.audit(s).findings if f.check == "revocation-not-applied"] == []
    assert "-----BEGIN X509 CRL-----" in (out / "crl.pem").read_text()


def test_hand_started_broker_obeys_principal_revoke_and_rotate(hand_broker, tmp_path):
    s, port, _out = hand_broker
    r = warden(s, "principal", "add", "alice", "--role", "operator", "--out", str(tmp_path / "alice"))
    assert r.returncode == 0, r.stdout + r.stderr
    alice = Probe(HOST, port, ca=tmp_path / "alice" / "ca.pem", cert=tmp_path / "alice" / "cert.pem",
                  key=tmp_path / "alice" / "key.pem")
    alice.connect()
    alice.subscribe("dt/warden/+/telemetry")
    session = Observer(s, HOST, port, principal="operator.alice").connect()   # a warden session too
    r = warden(s, "principal", "revoke", "operator.alice", "--reason", "laptop stolen")
    assert r.returncode == 0, r.stdout + r.stderr
    alice.wait_for(lambda: alice.disconnects > 0, "alice's session to be closed")
    with pytest.raises(Exception):
        session.next(5)                                    # lost the connection
    again = Probe(HOST, port, ca=tmp_path / "alice" / "ca.pem", cert=tmp_path / "alice" / "cert.pem",
                  key=tmp_path / "alice" / "key.pem")
    with pytest.raises(Refused):
        again.connect()
    with pytest.raises(principals.PrincipalError):
        Observer(s, HOST, port, principal="operator.alice")   # warden refuses to act as a revoked one
    # rotation: the old certificate is refused, the new one accepted
    assert warden(s, "principal", "add", "bob", "--role", "technician", "--out", str(tmp_path / "bob1")).returncode == 0
    r = warden(s, "principal", "rotate", "bob", "--out", str(tmp_path / "bob2"))
    assert r.returncode == 0, r.stdout + r.stderr
    old = Probe(HOST, port, ca=tmp_path / "bob1" / "ca.pem", cert=tmp_path / "bob1" / "cert.pem",
                key=tmp_path / "bob1" / "key.pem")
    with pytest.raises(Refused):
        old.connect()
    new = Probe(HOST, port, ca=tmp_path / "bob2" / "ca.pem", cert=tmp_path / "bob2" / "cert.pem",
                key=tmp_path / "bob2" / "key.pem")
    new.connect()
    new.close()


def test_sessions_side_by_side_and_client_ids_pinned(hand_broker, tmp_path):
    s, port, _out = hand_broker
    dev = identity(s, "pin-1", tmp_path / "pin-1")
    register(s, dev)
    watches = [Observer(s, HOST, port).connect() for _ in range(3)]     # three `warden watch`
    for w in watches:
        w.subscribe("dt/warden/+/telemetry")
    techs = [Observer(s, HOST, port, principal="technician.default").connect() for _ in range(2)]
    d = probe(dev, port)
    d.publish("dt/warden/pin-1/telemetry", b"42")
    for w in watches:
        m = w.next(5)
        assert m is not None and m.payload == b"42"       # every session got it: none was closed
    # another device and a principal both ask for pin-1's client id: the id is their own CN
    thief = identity(s, "pin-2", tmp_path / "pin-2")
    register(s, thief)
    probe(thief, port, client_id="pin-1").close()
    p = Probe(HOST, port, ca=s.pki_dir / "ca.crt.pem", cert=s.pki_dir / "operator.crt.pem",
              key=s.pki_dir / "operator.key.pem", client_id="pin-1")
    p.connect()
    p.close()
    d.publish("dt/warden/pin-1/telemetry", b"43")
    assert d.disconnects == 0 and d.connected
    for w in watches + techs:
        w.close()
    d.close()


def test_names_outside_the_policy_get_nothing(hand_broker, tmp_path):
    s, port, _out = hand_broker
    watcher = Observer(s, HOST, port, principal="operator.default").connect()
    watcher.subscribe("dt/warden/+/telemetry")
    watcher.subscribe("dt/warden/+/status")
    victim = identity(s, "t1", tmp_path / "t1")
    register(s, victim)
    dv = probe(victim, port)
    dv.subscribe("cmd/warden/t1/#")
    attempts = []
    # a CA-signed certificate whose CN breaks the naming rules, a removed principal, an unknown role
    for cn, ou in (("t1/telemetry", "device"), ("operator.gone", "operator"), ("auditor.eve", "auditor")):
        cert, key = pki.issue(s, cn, ou, "test")
        folder = tmp_path / cn.replace("/", "_")
        folder.mkdir()
        (folder / "c.pem").write_bytes(pki.cert_pem(cert))
        (folder / "k.pem").write_bytes(pki.key_pem(key))
        p = Probe(HOST, port, ca=s.pki_dir / "ca.crt.pem", cert=folder / "c.pem", key=folder / "k.pem")
        p.connect()
        p.subscribe("#")
        for topic in ("dt/warden/t1/telemetry", f"dt/warden/{cn}/telemetry", "dt/warden/t1/status",
                      "cmd/warden/t1/ota"):
            try:
                p.publish(topic, b"forged")
            except Refused:
                pass
        attempts.append(p)
    dv.publish("dt/warden/t1/telemetry", b"genuine")      # the marker: everything before it arrived
    got = []
    while True:
        m = watcher.next(5)
        assert m is not None, "the genuine reading never arrived"
        got.append(m.payload)
        if m.payload == b"genuine":
            break
    assert got == [b"genuine"], got                       # nothing forged reached the operator
    with pytest.raises(TimeoutError):
        dv.expect(timeout=0.5)                            # and no command reached the device
    for p in attempts:
        assert p.messages.empty()                         # they received nothing ('#')
        p.close()
    dv.close()
    watcher.close()
    # the audit lists every certificate the CA issued that the registry does not know
    subjects = {f.subject for f in audit.audit(s).findings if f.check == "unaccounted-cert"}
    assert subjects == {"certificate for 't1/telemetry'", "certificate for 'operator.gone'",
                        "certificate for 'auditor.eve'"}


def test_crl_close_to_lapsing_is_renewed_on_the_running_broker(hand_broker, tmp_path):
    s, port, out = hand_broker
    ca = pki.load_ca(s)
    (s.pki_dir / pki.CRL).write_bytes(pki.make_crl(ca, days=2))      # two days left
    assert [f.check for f in audit.audit(s).findings if f.check.startswith("crl")] == ["crl-expiring"]
    r = warden(s, "broker", "sync")
    assert r.returncode == 0, r.stdout + r.stderr
    crl = x509.load_pem_x509_crl((out / "crl.pem").read_bytes())
    assert crl.next_update_utc - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=300)
    Observer(s, HOST, port).connect().close()                           # clients still get in
    facts = dict(audit.audit(s).facts)
    assert facts["CRL days left"] >= 300


def test_unreachable_broker_is_said_and_audited(fleet, tmp_path):
    port = free_port(HOST)
    brokerctl.write_broker_config(fleet, tmp_path / "down", f"{HOST}:{port}", [HOST])   # never started
    dev = identity(fleet, "gone-1", tmp_path / "gone-1")
    register(fleet, dev)
    r = warden(fleet, "device", "revoke", "gone-1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{HOST}:{port}" in r.stdout + r.stderr and "NOT APPLIED" in r.stdout, r.stdout
    assert "no running broker found" not in r.stdout + r.stderr
    found = [f for f in audit.audit(fleet).findings if f.check == "revocation-not-applied"]
    assert len(found) == 1 and found[0].severity == "high" and str(port) in found[0].subject


def test_second_broker_on_one_state_refuses_and_leaves_the_first_alone(fleet):
    first = Broker(fleet).start()
    try:
        pid_file = first.pid_path.read_text()
        conf = first.conf_path.read_text()
        with pytest.raises(BrokerError) as e:
            Broker(fleet, port=free_port()).start()
        assert "already runs" in str(e.value) and str(first.port) in str(e.value)
        assert first.pid_path.read_text() == pid_file and first.conf_path.read_text() == conf
        assert first.running()
        dev = identity(fleet, "still-1", fleet.root.parent / "still-1")
        register(fleet, dev)
        rev = devices.revoke_device(fleet, "still-1")
        assert not rev.failed and [o.name for o in rev.brokers.outcomes] == ["local"]
    finally:
        first.stop()
    with Registry(fleet.registry_path) as reg:
        assert [b.name for b in reg.brokers()] == []     # a stopped warden broker is not tracked


def test_warden_run_broker_renews_a_crl_close_to_lapsing(fleet):
    b = Broker(fleet).start()
    try:
        (fleet.pki_dir / pki.CRL).write_bytes(pki.make_crl(pki.load_ca(fleet), days=2))
        b.reload()                                          # the broker now holds the short CRL
        assert brokerctl.keep_crl_fresh(fleet, b.name)      # what `broker run` does every hour
        assert not brokerctl.keep_crl_fresh(fleet, b.name)  # nothing to do the second time
        crl = pki.load_crl(fleet)
        assert crl.next_update_utc - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=300)
        Observer(fleet, b.host, b.port).connect().close()
    finally:
        b.stop()


def test_two_watch_processes_and_a_device_at_once(fleet, tmp_path):
    """Two `warden watch` processes of one operator, side by side: both get the reading."""
    fleet.broker_port = free_port()
    b = Broker(fleet, port=fleet.broker_port).start()
    try:
        dev = identity(fleet, "side-1", tmp_path / "side-1")
        register(fleet, dev)
        watchers = [subprocess.Popen([sys.executable, "-m", "warden.cli", "--state", str(fleet.root), "watch",
                                      "--thing", "side-1", "--count", "1", "--timeout", "30"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL) for _ in range(2)]
        # both are subscribed once each has made its session (seen in the broker log as two client ids)
        import time
        deadline = time.monotonic() + 20
        while b.log_path.read_text().count("u'operator.default@") < 2:
            assert time.monotonic() < deadline, b.log_tail(40)
            assert all(w.poll() is None for w in watchers), [w.communicate() for w in watchers]
            time.sleep(0.05)
        d = Probe(b.host, b.port, ca=dev.ca_pem, cert=dev.cert_pem, key=dev.key_pem, client_id="side-1")
        d.connect()
        deadline = time.monotonic() + 20
        while any(w.poll() is None for w in watchers):
            d.publish("dt/warden/side-1/telemetry", b'{"seq": 1, "values": {"t": 1}}')
            assert time.monotonic() < deadline, "a watch did not get the reading"
            time.sleep(0.2)
        for w in watchers:
            out, err = w.communicate()
            assert w.returncode == 0, out + err
            assert "as operator.default" in out and "side-1" in out, out
        d.close()
    finally:
        b.stop()
