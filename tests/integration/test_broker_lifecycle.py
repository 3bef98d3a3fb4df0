"""Starting, restarting, reloading and failing brokers (real mosquitto)."""
import socket

import pytest

from support.fixtures_broker import Probe, Refused, client_files
from warden.broker.server import Broker, BrokerError
from warden.fleet import pki


def connect(broker, state, identity, client_id=""):
    ca, cert, key = client_files(state, identity)
    probe = Probe(broker.host, broker.port, ca=ca, cert=cert, key=key, client_id=client_id)
    probe.connect()
    return probe


def test_start_stop(pki_state, tmp_path):
    with Broker(pki_state, run_dir=tmp_path) as b:
        assert b.running() and b.pid
        with socket.create_connection((b.host, b.port), timeout=2):
            pass
        assert "mosquitto version" in b.log_path.read_text()
    assert not b.running()
    with pytest.raises(OSError):
        socket.create_connection((b.host, b.port), timeout=2).close()


def test_restart_keeps_the_port(pki_state, tmp_path, provision):
    dev = provision("life-restart")
    b = Broker(pki_state, run_dir=tmp_path).start()
    try:
        port, pid = b.port, b.pid
        p = connect(b, pki_state, dev, dev.thing)
        b.restart()
        assert b.port == port and b.pid != pid
        p.wait_for(lambda: p.disconnects > 0, "disconnect on restart")
        p.close()
        again = connect(b, pki_state, dev, dev.thing)
        assert again.connected
        again.close()
    finally:
        b.stop()


def test_port_in_use_is_a_clear_error(pki_state, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BrokerError) as e:
            Broker(pki_state, port=port, run_dir=tmp_path, startup_timeout=5).start()
    assert "exited" in str(e.value) and str(port) in str(e.value)


def test_missing_pki_is_a_clear_error(tmp_path):
    from warden.state import State

    with pytest.raises(BrokerError) as e:
        Broker(State(tmp_path / "empty"), run_dir=tmp_path / "run").start()
    assert "pki init" in e.value.hint


def test_revocation_takes_effect_on_reload(pki_state, tmp_path, provision):
    """A serial added to the CRL is refused after reload() (SIGHUP re-reads the CRL).

    A client connected before the reload keeps its session: revoking must also disconnect it.
    """
    from cryptography import x509

    dev = provision("life-revoked")
    keep = provision("life-kept")
    serial = x509.load_der_x509_certificate(dev.cert_der).serial_number
    before = pki.revoked_serials(pki_state)
    b = Broker(pki_state, run_dir=tmp_path).start()
    try:
        online = connect(b, pki_state, dev, dev.thing)
        pki.write_crl(pki_state, before + [serial])
        b.reload()   # returns once mosquitto has logged the reload
        with pytest.raises(Refused):
            connect(b, pki_state, dev, dev.thing)
        connect(b, pki_state, keep, keep.thing).close()
        online.publish("dt/warden/life-revoked/telemetry", b"still online")
        assert online.connected and online.disconnects == 0
        online.close()
    finally:
        pki.write_crl(pki_state, before)
        b.stop()
