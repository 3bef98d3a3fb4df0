"""Revocation and rotation on the real broker: a revoked device is cut off while connected and
refused at its next handshake (paho and our MicroPython client under micropython), the CLI finds
the running broker, rotation replaces the twin's identity in its flash and revokes the old one."""
import json
import os
import subprocess
import sys

import pytest
from cryptography import x509

from support.devrun import MP, Background
from support.fixtures_broker import Probe, Refused, write_identity
from warden.board import flashimage
from warden.board import twin as twinlib
from warden.broker.server import Broker
from warden.fleet import audit, devices, pki
from warden.fleet.registry import Registry
from warden.state import State

DEADLINE = 15


def register(state, ident):
    cert = x509.load_der_x509_certificate(ident.cert_der)
    with Registry(state.registry_path) as reg:
        reg.add(ident.thing, ident.fingerprint, cert.serial_number, not_after=cert.not_valid_after_utc)
    return cert.serial_number


def outcome(r, broker):
    """The sync outcome for `broker` in a Revocation (it must have been applied)."""
    [o] = [o for o in r.brokers.outcomes if o.name == broker.name]
    assert o.applied, o
    return o


def crl_reasons(state):
    return {serial: reason for serial, (_when, reason) in pki.crl_entries(state).items()}


def test_revoked_paho_device_is_cut_off_and_refused(broker, pki_state, provision, mqtt_client):
    dev, other = provision("rv-paho"), provision("rv-kept")
    serial = register(pki_state, dev)
    register(pki_state, other)
    online = mqtt_client(dev)
    kept = mqtt_client(other)
    r = devices.revoke_device(pki_state, "rv-paho", "key compromised")
    online.wait_for(lambda: online.disconnects > 0, "the revoked session to be closed")
    o = outcome(r, broker)
    assert o.crl_ms <= o.cutoff_ms < 2000 and not r.failed, r
    with pytest.raises(Refused):
        mqtt_client(dev)                                   # refused at the TLS handshake
    kept.publish("dt/warden/rv-kept/telemetry", b"still here")
    assert kept.connected and kept.disconnects == 0       # nobody else is touched
    assert crl_reasons(pki_state)[serial] == "keyCompromise"
    with Registry(pki_state.registry_path) as reg:
        d = reg.get("rv-paho")
    assert (d.status, d.revoke_reason) == ("revoked", "key compromised") and d.revoked_at
    # operators see it: the retained status says revoked
    op = mqtt_client("operator")
    op.subscribe("dt/warden/rv-paho/status")
    m = op.expect("dt/warden/rv-paho/status")
    assert m.retain and json.loads(m.payload) == {"state": "revoked", "reason": "key compromised"}
    # again: idempotent, nothing connected any more
    again = devices.revoke_device(pki_state, "rv-paho", "twice")
    assert outcome(again, broker).applied and again.serials == r.serials
    with Registry(pki_state.registry_path) as reg:
        assert reg.get("rv-paho").revoke_reason == "key compromised"


def test_unknown_device_is_a_clear_error(pki_state, broker):
    with pytest.raises(devices.DeviceError) as e:
        devices.revoke_device(pki_state, "rv-nobody")
    assert "device list" in e.value.hint


# -- our MicroPython client under micropython ----------------------------------------------------
def mp_device(ident, port, host="localhost", path=(), deadline=15):
    """tests/support/mp/mqtt_revoked_device.py under micropython, in the background: a device on
    lib/mqtt.py with `ident`'s files that prints UP, LOST, then RECONNECTED or REFUSED twice."""
    return Background(script=MP / "mqtt_revoked_device.py", path=path, deadline=deadline,
                      args=[ident.thing, host, port, ident.ca, ident.cert, ident.key])


def test_revoked_micropython_device_is_cut_off_and_cannot_reconnect(broker, pki_state, provision, mpy_dir):
    dev = provision("rv-mp")
    register(pki_state, dev)
    out = mp_device(dev, broker.port, path=[mpy_dir], deadline=DEADLINE)
    try:
        out.expect("UP")
        r = devices.revoke_device(pki_state, "rv-mp", "decommissioned")
        assert outcome(r, broker).cutoff_ms is not None
        lost = out.expect("LOST")
        first = out.expect(("REFUSED", "RECONNECTED"))
        second = out.expect(("REFUSED", "RECONNECTED"))
        assert first.startswith("REFUSED") and second.startswith("REFUSED"), out.seen
        assert out.wait() == 0
    finally:
        out.kill()
    assert "LOST" in lost
    assert crl_reasons(pki_state)[int(dev_serial(dev))] == "cessationOfOperation"


def dev_serial(ident):
    return x509.load_der_x509_certificate(ident.cert_der).serial_number


# -- a fleet of its own: the CLI finds the broker by its pid file; rotation ---------------------
@pytest.fixture
def fleet(tmp_path):
    """A state with its broker running from the state's own broker folder (as `warden broker run`)."""
    s = State(tmp_path / ".warden")
    pki.init_pki(s)
    b = Broker(s).start()
    yield s, b
    b.stop()


def identity(state, thing, folder, cert_der=None, key_der=None):
    if cert_der is None:
        cert_der, key_der = pki.issue_device_cert(state, thing)
    return write_identity(folder, thing, cert_der, key_der, (state.pki_dir / pki.CA_CERT).read_bytes())


def connect(b, ident):
    p = Probe(b.host, b.port, ca=ident.ca_pem, cert=ident.cert_pem, key=ident.key_pem, client_id=ident.thing)
    p.connect()
    return p


def warden(state, *args):
    env = dict(os.environ, WARDEN_STATE=str(state.root))
    exe = os.path.join(os.path.dirname(sys.executable), "warden")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)


def test_cli_revoke_finds_the_running_broker_and_cuts_off(fleet, tmp_path):
    s, b = fleet
    dev = identity(s, "cli-dev", tmp_path / "id")
    register(s, dev)
    p = connect(b, dev)
    try:
        r = warden(s, "device", "revoke", "cli-dev", "--reason", "stolen")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "local (127.0.0.1:" in r.stdout and "sessions closed" in r.stdout, r.stdout
        p.wait_for(lambda: p.disconnects > 0, "cut off")
        with pytest.raises(Refused):
            connect(b, dev)
    finally:
        p.close()
    # the audit checks the running broker loaded the CRL
    assert audit.audit(s).findings == []
    pki.write_crl(s, add=[12345])            # a CRL change the broker has not loaded
    os.utime(s.pki_dir / pki.CRL, (b.log_path.stat().st_mtime + 5,) * 2)
    assert [f.check for f in audit.audit(s).findings] == ["crl-not-loaded"]
    b.reload()
    os.utime(s.pki_dir / pki.CRL, (b.log_path.stat().st_mtime - 5,) * 2)
    assert audit.audit(s).findings == []
    bad = warden(s, "device", "revoke", "no-such-dev")
    assert bad.returncode == 1 and "error: no device 'no-such-dev'" in bad.stderr and "Traceback" not in bad.stderr


def twin_identity(flash):
    ff = flashimage.FlashFile(flash)
    return ff.read("/identity/cert.der"), ff.read("/identity/key.der")


def test_rotate_replaces_the_twin_identity_and_revokes_the_old(fleet, tmp_path):
    s, b = fleet
    old = identity(s, "rot-1", tmp_path / "old")
    old_serial = register(s, old)
    flash = twinlib.flash_path(s, "rot-1")
    flash.parent.mkdir(parents=True, exist_ok=True)
    flash.write_bytes(flashimage.new_flash(twinlib.identity_files(old.cert_der, old.key_der, old.ca.read_bytes())))
    (s.device_dir("rot-1") / "cert.der").write_bytes(old.cert_der)
    stolen = connect(b, old)                 # someone still using the old key
    try:
        r = devices.rotate_device(s, "rot-1")
        stolen.wait_for(lambda: stolen.disconnects > 0, "old session cut off")
    finally:
        stolen.close()
    assert not r.pending and r.delivered.startswith("twin flash") and outcome(r.revocation, b).cutoff_ms
    cert_der, key_der = twin_identity(flash)
    new_cert = x509.load_der_x509_certificate(cert_der)
    assert r.old_serials == [format(old_serial, "x")] and r.new_serial == format(new_cert.serial_number, "x")
    with Registry(s.registry_path) as reg:
        d = reg.get("rot-1")
        history = [(c.serial, c.status, c.reason) for c in reg.certificates("rot-1")]
    assert d.fingerprint == pki.fingerprint(cert_der) and d.status == "active"
    assert history == [(format(old_serial, "x"), "revoked", "superseded by rotation"), (r.new_serial, "active", None)]
    assert (s.device_dir("rot-1") / "cert.der").read_bytes() == cert_der
    assert not (s.device_dir("rot-1") / "pending").exists()
    assert crl_reasons(s)[old_serial] == "superseded"
    with pytest.raises(Refused):
        connect(b, old)
    new = identity(s, "rot-1", tmp_path / "new", cert_der, key_der)
    connect(b, new).close()                  # the device, with what is in its flash, connects
    assert audit.audit(s).findings == []


def test_rotation_waits_for_a_running_twin_and_for_a_board(fleet, tmp_path):
    s, b = fleet
    old = identity(s, "rot-2", tmp_path / "old")
    register(s, old)
    s.device_dir("rot-2").mkdir(parents=True)
    (s.device_dir("rot-2") / "cert.der").write_bytes(old.cert_der)
    flash = twinlib.flash_path(s, "rot-2")
    flash.write_bytes(flashimage.new_flash(twinlib.identity_files(old.cert_der, old.key_der, old.ca.read_bytes())))
    with open(flash, "r+b"):                  # a running twin holds its flash open
        with pytest.raises(devices.DeviceError) as e:
            devices.rotate_device(s, "rot-2")
        assert "stop it first" in e.value.hint
    with Registry(s.registry_path) as reg:
        assert [c.status for c in reg.certificates("rot-2")] == ["active"]   # nothing issued
    # a board (no twin flash): the new identity waits until it is deployed
    flash.unlink()
    r = devices.rotate_device(s, "rot-2")
    assert r.pending and (s.device_dir("rot-2") / "pending" / "cert.der").exists()
    connect(b, old).close()                  # the old certificate still works meanwhile
    assert [f.check for f in audit.audit(s).findings] == []
    done = devices.finish_rotation(s, "rot-2")
    assert done.old_serials and not (s.device_dir("rot-2") / "pending").exists()
    with pytest.raises(Refused):
        connect(b, old)
    with pytest.raises(devices.DeviceError):
        devices.finish_rotation(s, "rot-2")
    devices.revoke_device(s, "rot-2")
    with pytest.raises(devices.DeviceError) as e:
        devices.rotate_device(s, "rot-2")
    assert "revoked" in str(e.value)
