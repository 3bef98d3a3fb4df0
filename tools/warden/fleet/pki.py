"""The fleet PKI: one CA, a broker server certificate, role principals and device certificates.

It makes keys, certificates and the CRL: it must not decide who gets one (devices.py and
principals.py do) nor talk to brokers (warden.broker.control carries the CRL to them).

EC P-256 and ECDSA-SHA256 everywhere. On the host everything is PEM (in `state.pki_dir`):

    ca.crt.pem ca.key.pem ca.der      fleet CA (the device gets ca.der: its TLS parses DER only)
    broker.crt.pem broker.key.pem     broker server cert, SAN DNS:localhost + IP:127.0.0.1
    operator.crt.pem operator.key.pem         client cert CN=operator.default, OU=operator
    technician.crt.pem technician.key.pem     client cert CN=technician.default, OU=technician
    admin.crt.pem admin.key.pem               client cert CN=admin.default, OU=admin (controls brokers)
    <role>.<name>.crt.pem/.key.pem    further principals (`warden principal add`)
    crl.pem                            CRL signed by the CA (mosquitto's crlfile)
    issued.jsonl                       every certificate the CA issued: serial, CN, kind, expiry

Every certificate issued here for the state's CA goes through `_issue`, which appends it to
issued.jsonl first, so `warden audit` can list any certificate the registry does not account for.

Device identities are DER: the certificate, and the private key in SEC1 ("traditional
OpenSSL") EC form, which embeds the public key and is what MicroPython's mbedTLS parses.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import WardenError
from ..state import State, ensure_dir, write_file, write_private
from .names import principal_cn, validate_thing

CA_CN = "Warden Fleet CA"
ORG = "Warden"
# Lifetimes (docs/security.md, 'Certificate lifetimes'): the CA signs for ten years; the broker's server certificate lives
# 397 days (the public-TLS maximum, renewed with the broker); people's role certificates and
# device certificates one year, so a lost laptop or board stops being trusted on its own within
# a year even if nobody revokes it. Devices warn 30 days before expiry; `warden device rotate`
# renews them, `warden audit --days N` lists what expires soon.
CA_DAYS = 3650
SERVER_DAYS = 397
PRINCIPAL_DAYS = 365
DEVICE_DAYS = 365
CRL_DAYS = 365
CRL_RENEW_DAYS = 30  # re-signed when fewer days than this are left (broker run, broker sync, audit)
# Certificates start a little in the past so a device whose clock is slightly behind accepts them.
BACKDATE = _dt.timedelta(hours=1)

ROLE_PRINCIPALS = ("operator", "technician", "admin")
SESSION_HOURS = 24 * 7   # a session certificate (one CLI process of a principal) lives a week at most
BROKER_HOSTS = ("localhost", "127.0.0.1")

CA_CERT = "ca.crt.pem"
CA_KEY = "ca.key.pem"
CA_DER = "ca.der"
BROKER_CERT = "broker.crt.pem"
BROKER_KEY = "broker.key.pem"
CRL = "crl.pem"
ISSUED_LOG = "issued.jsonl"


class PkiError(WardenError):
    hint = "the fleet PKI is made by `warden pki init` (docs/security.md, 'Certificate lifetimes')"


def _now():
    return _dt.datetime.now(_dt.timezone.utc)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _validity(days, not_before, not_after):
    start = not_before if not_before is not None else _now() - BACKDATE
    end = not_after if not_after is not None else start + BACKDATE + _dt.timedelta(days=days)
    if end <= start:
        raise PkiError(f"certificate would end ({end}) before it starts ({start})")
    return start, end


def make_ca(cn: str = CA_CN, *, days: int = CA_DAYS, key=None):
    """A self-signed CA: (certificate, private key). Used for the fleet CA and, in tests, foreign CAs."""
    key = key or new_key()
    start, end = _validity(days, None, None)
    name = _name(cn)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca, subject, eku, *, days, not_before, not_after, key, san=None):
    ca_cert, ca_key = ca
    key = key or new_key()
    start, end = _validity(days, not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def issue_server_cert(ca, hosts=BROKER_HOSTS, *, cn=None, days=SERVER_DAYS, not_before=None,
                      not_after=None, key=None):
    """A TLS server certificate signed by `ca` ((cert, key)) for `hosts` (DNS names or IPs).

    Returns (certificate, private key). The CN is `cn` or the first host.
    """
    hosts = list(hosts)
    if not hosts:
        raise PkiError("a server certificate needs at least one host name or IP address")
    san = []
    for host in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            san.append(x509.DNSName(host))
    return _leaf(ca, _name(cn or hosts[0]), ExtendedKeyUsageOID.SERVER_AUTH, days=days,
                 not_before=not_before, not_after=not_after, key=key, san=san)


def issue_client_cert(ca, cn, ou, *, days=DEVICE_DAYS, not_before=None, not_after=None, key=None):
    """A TLS client certificate (clientAuth) with subject CN=`cn`, OU=`ou`: (certificate, key)."""
    return _leaf(ca, _name(cn, ou), ExtendedKeyUsageOID.CLIENT_AUTH, days=days,
                 not_before=not_before, not_after=not_after, key=key)


# -- serialisation -------------------------------------------------------------------------------
def cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def key_der_sec1(key) -> bytes:
    """DER, SEC1 ("traditional OpenSSL") EC private key: embeds the public key; mbedTLS parses it."""
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def fingerprint(cert) -> str:
    """SHA-256 of the DER certificate, lower-case hex. Accepts DER bytes or a certificate object."""
    if isinstance(cert, x509.Certificate):
        cert = cert_der(cert)
    return hashlib.sha256(bytes(cert)).hexdigest()


def load_cert(data: bytes):
    """A certificate from PEM or DER bytes."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


# -- the fleet PKI in a state folder ------------------------------------------------------------
@dataclass
class PkiFiles:
    """What init_pki wrote: the CA fingerprint and the files by name."""
    ca_fingerprint: str
    files: dict = field(default_factory=dict)


def pki_path(state: State, name: str) -> Path:
    return state.pki_dir / name


def principal_paths(state: State, role: str, name: str = "default"):
    """(certificate PEM path, key PEM path) of principal `<role>.<name>` (default: `<role>.*.pem`)."""
    stem = role if name == "default" else f"{role}.{name}"
    return state.pki_dir / f"{stem}.crt.pem", state.pki_dir / f"{stem}.key.pem"


def _log_issued(state: State, cert, kind: str) -> None:
    """Append `cert` to the CA's issuance log (before anyone can use it)."""
    import json

    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    line = json.dumps({"serial": format(cert.serial_number, "x"), "cn": cn[0].value if cn else None,
                       "kind": kind, "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds"),
                       "issued": _now().isoformat(timespec="seconds")}, sort_keys=True)
    ensure_dir(state.pki_dir)
    with open(state.pki_dir / ISSUED_LOG, "a") as f:
        f.write(line + "\n")
        f.flush()


def issued_log(state: State) -> list:
    """Every entry of the issuance log (dicts), oldest first; [] if there is none."""
    import json

    path = state.pki_dir / ISSUED_LOG
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise PkiError(f"{path} line {n} is not JSON", hint="restore the file from a backup") from None
    return out


def issue(state: State, cn: str, ou: str, kind: str, **kw):
    """A client certificate from the state's CA, logged in issued.jsonl: (certificate, key)."""
    pair = issue_client_cert(load_ca(state), cn, ou, **kw)
    _log_issued(state, pair[0], kind)
    return pair


def issue_verification_cert(state: State, cn: str, minutes: int = 60):
    """A certificate that proves to a service that we hold the CA's key (AWS IoT's CA registration
    asks for one with CN = its registration code): logged, never written, its key dropped at once,
    so nobody can ever use it; it expires within the hour."""
    now = _now()
    cert, _key = issue_client_cert(load_ca(state), cn, None, not_before=now - _dt.timedelta(minutes=5),
                                   not_after=now + _dt.timedelta(minutes=minutes))
    _log_issued(state, cert, "verification")
    return cert


def issue_principal(state: State, role: str, name: str = "default", *, days: int = PRINCIPAL_DAYS):
    """Issue and write the client certificate of principal `<role>.<name>` (CN, OU = role).

    Returns (certificate path, key path). The policy decides what the principal may do: add
    its CN to the role's "principals" for it to get anything (warden.fleet.principals does both)."""
    cn = principal_cn(role, name)
    pair = issue(state, cn, role, "principal", days=days)
    cert_path, key_path = principal_paths(state, role, name)
    write_private(key_path, key_pem(pair[1]))
    write_file(cert_path, cert_pem(pair[0]))
    return cert_path, key_path


def issue_session(state: State, cn: str, hours: int = SESSION_HOURS):
    """A short-lived certificate for one session of principal `cn`: CN `<cn>@<tag>`, never written.

    The broker's client id is the certificate CN, so each session has its own and two sessions of
    one principal never close each other; the broker's guard gives `<cn>@<tag>` the rules of `cn`."""
    import secrets

    role = cn.split(".", 1)[0]
    now = _now()
    return issue(state, f"{cn}@{secrets.token_hex(4)}", role, "session",
                 not_before=now - _dt.timedelta(minutes=5), not_after=now + _dt.timedelta(hours=hours))


def issue_session_server(state: State, cn: str, hosts, hours: int = SESSION_HOURS):
    """A short-lived TLS server certificate for a service one principal runs (the dashboard over
    mutual TLS): CN `<cn>@<tag>`, SAN `hosts`, logged as a session of `cn` (so `warden audit`
    accounts for it), never written. Returns (certificate, key)."""
    import secrets

    now = _now()
    cert, key = issue_server_cert(load_ca(state), hosts, cn=f"{cn}@{secrets.token_hex(4)}",
                                  not_before=now - _dt.timedelta(minutes=5),
                                  not_after=now + _dt.timedelta(hours=hours))
    _log_issued(state, cert, "session")
    return cert, key


def broker_paths(state: State):
    """(CA PEM, broker cert PEM, broker key PEM, CRL PEM) paths."""
    d = state.pki_dir
    return d / CA_CERT, d / BROKER_CERT, d / BROKER_KEY, d / CRL


def has_ca(state: State) -> bool:
    return (state.pki_dir / CA_CERT).exists() or (state.pki_dir / CA_KEY).exists()


def load_ca(state: State):
    """The fleet CA of `state`: (certificate, private key)."""
    cert_path, key_path = state.pki_dir / CA_CERT, state.pki_dir / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        raise PkiError(f"no fleet CA in {state.pki_dir}", hint="run `warden pki init` first")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise PkiError(f"cannot load the fleet CA from {state.pki_dir}: {e}",
                       hint="restore the files or re-create the PKI with `warden pki init --force`") from e
    return cert, key


CRL_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
}


def crl_reason(text: str | None) -> str:
    """The CRL reason code for a free-text revocation reason (a best guess; the text is kept too)."""
    t = (text or "").lower()
    if any(w in t for w in ("compromis", "stolen", "leak", "hack", "breach")):
        return "keyCompromise"
    if any(w in t for w in ("rotat", "supersed", "replac", "renew")):
        return "superseded"
    if any(w in t for w in ("retire", "decommission", "scrap", "end of life", "lost", "broken")):
        return "cessationOfOperation"
    return "unspecified"


def make_crl(ca, revoked=(), *, days=CRL_DAYS) -> bytes:
    """A PEM CRL signed by `ca` listing `revoked`: an iterable of (serial, revocation datetime) or
    (serial, datetime, reason code name from CRL_REASONS)."""
    ca_cert, ca_key = ca
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - BACKDATE)
        .next_update(now + _dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    for entry in revoked:
        serial, when = entry[0], entry[1]
        reason = entry[2] if len(entry) > 2 else None
        rb = x509.RevokedCertificateBuilder().serial_number(int(serial)).revocation_date(when)
        if reason and reason != "unspecified":
            rb = rb.add_extension(x509.CRLReason(CRL_REASONS[reason]), critical=False)
        builder = builder.add_revoked_certificate(rb.build())
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def load_crl(state: State):
    return x509.load_pem_x509_crl((state.pki_dir / CRL).read_bytes())


def revoked_serials(state: State) -> list:
    """Serial numbers listed in the state's CRL."""
    return [r.serial_number for r in load_crl(state)]


def _entry_reason(entry) -> str | None:
    try:
        return _REASON_NAMES.get(entry.extensions.get_extension_for_class(x509.CRLReason).value.reason)
    except x509.ExtensionNotFound:
        return None


_REASON_NAMES = {v: k for k, v in CRL_REASONS.items()}


def crl_entries(state: State) -> dict:
    """{serial: (revocation datetime, reason code name or None)} of the state's CRL ({} if none)."""
    path = state.pki_dir / CRL
    if not path.exists():
        return {}
    return {r.serial_number: (r.revocation_date_utc, _entry_reason(r)) for r in load_crl(state)}


def write_crl(state: State, revoked=None, *, add=()) -> Path:
    """Re-sign the state's CRL. `revoked`: iterable of serials to list; None keeps the current list.
    `add`: more entries, each a serial or (serial, reason code name).

    Serials already listed keep their revocation dates and reasons. mosquitto refuses every
    client once the CRL's nextUpdate has passed, so the broker refreshes it on start (`refresh_crl`).
    """
    ca = load_ca(state)
    existing = crl_entries(state)
    serials = list(existing) if revoked is None else [int(s) for s in revoked]
    reasons = {}
    for item in add:
        serial, reason = (item, None) if isinstance(item, int) else (int(item[0]), item[1])
        serials.append(serial)
        reasons[serial] = reason
    now = _now()
    entries = []
    for s_ in sorted(set(serials)):
        when, reason = existing.get(s_, (now, None))
        entries.append((s_, when, reason or reasons.get(s_)))
    return write_file(state.pki_dir / CRL, make_crl(ca, entries))


def list_in_crl(state: State, certificates, reason: str | None) -> Path:
    """Add registry certificates (anything with `serial_int`) to the CRL; `reason` is free text
    (`crl_reason` picks the code) or a code name such as "superseded"."""
    code = reason if reason in CRL_REASONS else crl_reason(reason)
    return write_crl(state, add=[(c.serial_int, code) for c in certificates])


def refresh_crl(state: State, min_days: int = CRL_RENEW_DAYS) -> bool:
    """Re-sign the CRL (same entries) if it expires within `min_days`. True if it did."""
    path = state.pki_dir / CRL
    if path.exists():
        crl = load_crl(state)
        nxt = crl.next_update_utc
        if nxt is not None and nxt - _now() > _dt.timedelta(days=min_days):
            return False
    write_crl(state)
    return True


def _write_pair(state, stem, cert, key):
    c = write_file(state.pki_dir / f"{stem}.crt.pem", cert_pem(cert))
    k = write_private(state.pki_dir / f"{stem}.key.pem", key_pem(key))
    return c, k


def init_pki(state: State, force: bool = False) -> PkiFiles:
    """Create the fleet PKI in `state` (CA, broker cert, operator and technician certs, empty CRL).

    Refuses (PkiError) if a CA exists, unless `force`: replacing the CA invalidates every
    device certificate it signed. Also creates project.json and the default policy if missing.
    """
    from ..policy.model import ensure_policy

    if has_ca(state) and not force:
        raise PkiError(
            f"a fleet CA already exists in {state.pki_dir}",
            hint="replacing it invalidates every device certificate; use --force (force=True) to do so anyway",
        )
    state.refuse_second_fleet("a fleet CA")
    state.ensure()
    ensure_dir(state.pki_dir)
    files = {}
    ca = make_ca(CA_CN)
    # The key first: a crash between the two leaves no certificate without its key.
    files["ca.key"] = write_private(state.pki_dir / CA_KEY, key_pem(ca[1]))
    files["ca.crt"] = write_file(state.pki_dir / CA_CERT, cert_pem(ca[0]))
    files["ca.der"] = write_file(state.pki_dir / CA_DER, cert_der(ca[0]))
    (state.pki_dir / ISSUED_LOG).unlink(missing_ok=True)   # a new CA starts a new log
    server = issue_server_cert(ca, BROKER_HOSTS, cn="localhost")
    _log_issued(state, server[0], "broker")
    files["broker.crt"], files["broker.key"] = _write_pair(state, "broker", *server)
    files["crl"] = write_file(state.pki_dir / CRL, make_crl(ca))
    files["policy"] = ensure_policy(state)
    from .principals import ensure_default_principals

    for role, (cert_path, key_path) in ensure_default_principals(state).items():
        files[f"{role}.crt"], files[f"{role}.key"] = cert_path, key_path
    return PkiFiles(fingerprint(ca[0]), files)


def issue_broker_cert(state: State, hosts, *, days: int = SERVER_DAYS):
    """A server certificate from the state's CA for a broker reached as `hosts` (logged)."""
    pair = issue_server_cert(load_ca(state), hosts, days=days)
    _log_issued(state, pair[0], "broker")
    return pair


def issue_device_cert(state: State | None, thing: str, *, days: int = DEVICE_DAYS, not_before=None,
                      not_after=None, key=None, ca=None):
    """Issue a device identity: (certificate DER, private key DER in SEC1 form).

    CN = `thing`, OU = device, clientAuth. Signed by the state's fleet CA, or by `ca`
    ((cert, key), e.g. a foreign CA from make_ca in tests; `state` may then be None).
    `key` reuses an existing EC private key; not_before/not_after override the validity.
    """
    validate_thing(thing)
    ca_is_state = ca is None
    if ca is None:
        if state is None:
            raise PkiError("issue_device_cert needs a state or a ca")
        ca = load_ca(state)
    cert, key = issue_client_cert(ca, thing, "device", days=days, not_before=not_before,
                                  not_after=not_after, key=key)
    if state is not None and ca_is_state:
        _log_issued(state, cert, "device")
    return cert_der(cert), key_der_sec1(key)
