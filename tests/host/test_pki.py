"""The fleet PKI: what init_pki writes, and the properties of each certificate."""
import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from warden.fleet import pki
from warden.state import State


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    s = State(tmp_path_factory.mktemp("pki") / "st")
    pki.init_pki(s)
    return s


def load(state, name):
    return x509.load_pem_x509_certificate((state.pki_dir / name).read_bytes())


def cn(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def ou(cert):
    return cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value


def eku(cert):
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_files_and_modes(state):
    names = {p.name for p in state.pki_dir.iterdir()}
    assert names == {"ca.crt.pem", "ca.key.pem", "ca.der", "broker.crt.pem", "broker.key.pem",
                     "operator.crt.pem", "operator.key.pem", "technician.crt.pem",
                     "technician.key.pem", "admin.crt.pem", "admin.key.pem", "crl.pem", "issued.jsonl"}
    for p in state.pki_dir.glob("*.key.pem"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE(state.pki_dir.stat().st_mode) == 0o700
    assert state.policy_path.exists() and state.project_path.exists()


def test_ca(state):
    ca = load(state, "ca.crt.pem")
    assert cn(ca) == "Warden Fleet CA"
    assert ca.issuer == ca.subject
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    life = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=3650) <= life <= dt.timedelta(days=3651)
    assert (state.pki_dir / "ca.der").read_bytes() == pki.cert_der(ca)
    ca.verify_directly_issued_by(ca)


def test_broker_cert(state):
    ca = load(state, "ca.crt.pem")
    cert = load(state, "broker.crt.pem")
    cert.verify_directly_issued_by(ca)
    assert cn(cert) == "localhost"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("role", ["operator", "technician"])
def test_role_certs(state, role):
    ca = load(state, "ca.crt.pem")
    cert = load(state, f"{role}.crt.pem")
    cert.verify_directly_issued_by(ca)
    assert cn(cert) == f"{role}.default" and ou(cert) == role
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    key = serialization.load_pem_private_key((state.pki_dir / f"{role}.key.pem").read_bytes(), None)
    assert key.public_key() == cert.public_key()


def test_empty_crl(state):
    crl = pki.load_crl(state)
    ca = load(state, "ca.crt.pem")
    assert crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())
    assert len(crl) == 0
    assert crl.next_update_utc > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=300)


def test_refuses_to_overwrite_the_ca(state):
    before = (state.pki_dir / "ca.crt.pem").read_bytes()
    with pytest.raises(pki.PkiError) as e:
        pki.init_pki(state)
    assert "already exists" in str(e.value) and "force" in e.value.hint
    assert (state.pki_dir / "ca.crt.pem").read_bytes() == before


def test_force_replaces_the_ca(tmp_path):
    s = State(tmp_path / "st")
    first = pki.init_pki(s).ca_fingerprint
    second = pki.init_pki(s, force=True).ca_fingerprint
    assert first != second
    assert pki.fingerprint((s.pki_dir / "ca.der").read_bytes()) == second


def test_device_cert_and_key(state):
    cert_der, key_der = pki.issue_device_cert(state, "twin-001")
    cert = x509.load_der_x509_certificate(cert_der)
    cert.verify_directly_issued_by(load(state, "ca.crt.pem"))
    assert cn(cert) == "twin-001" and ou(cert) == "device"
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=365) <= life <= dt.timedelta(days=366)
    # SEC1 ("traditional OpenSSL") DER: SEQUENCE { version 1, OCTET STRING key, [0] curve, [1] pubkey }
    assert key_der[0] == 0x30 and key_der[2:5] == b"\x02\x01\x01"
    assert b"\xa1" in key_der      # the [1] public key is embedded (mbedTLS needs it)
    key = serialization.load_der_private_key(key_der, None)
    assert key.curve.name == "secp256r1"
    assert key.public_key() == cert.public_key()
    assert pki.fingerprint(cert_der) == pki.fingerprint(cert) and len(pki.fingerprint(cert_der)) == 64


def test_device_cert_options(state):
    start = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime(2020, 1, 2, tzinfo=dt.timezone.utc)
    cert = x509.load_der_x509_certificate(pki.issue_device_cert(state, "old", not_before=start, not_after=end)[0])
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (start, end)
    key = pki.new_key()
    cert = x509.load_der_x509_certificate(pki.issue_device_cert(state, "same-key", key=key)[0])
    assert cert.public_key() == key.public_key()
    with pytest.raises(ValueError):
        pki.issue_device_cert(state, "bad/name")
    with pytest.raises(pki.PkiError):
        pki.issue_device_cert(state, "x", not_before=end, not_after=start)


def test_foreign_ca_and_rogue_server(state):
    evil = pki.make_ca("Evil CA")
    cert_der, _ = pki.issue_device_cert(None, "twin-001", ca=evil)
    cert = x509.load_der_x509_certificate(cert_der)
    cert.verify_directly_issued_by(evil[0])
    with pytest.raises(Exception):
        cert.verify_directly_issued_by(load(state, "ca.crt.pem"))
    rogue, _ = pki.issue_server_cert(evil, ["localhost", "127.0.0.1"])
    rogue.verify_directly_issued_by(evil[0])
    other, _ = pki.issue_server_cert(pki.load_ca(state), ["broker.example", "::1"])
    san = other.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example"] and cn(other) == "broker.example"


def test_no_ca_is_a_clear_error(tmp_path):
    with pytest.raises(pki.PkiError) as e:
        pki.issue_device_cert(State(tmp_path), "twin-001")
    assert "pki init" in e.value.hint


def test_crl_write_keeps_dates_and_refresh(tmp_path):
    s = State(tmp_path / "st")
    pki.init_pki(s)
    pki.write_crl(s, [5, 7])
    first = {r.serial_number: r.revocation_date_utc for r in pki.load_crl(s)}
    pki.write_crl(s, [7, 9])
    second = {r.serial_number: r.revocation_date_utc for r in pki.load_crl(s)}
    assert set(second) == {7, 9} and second[7] == first[7]
    pki.write_crl(s)                       # None keeps the list
    assert pki.revoked_serials(s) == [7, 9]
    assert pki.refresh_crl(s) is False     # a fresh CRL is left alone
    assert pki.refresh_crl(s, min_days=400) is True
    assert pki.revoked_serials(s) == [7, 9]
