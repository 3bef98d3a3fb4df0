"""`warden audit`: a deliberately broken fleet gives exactly the expected findings, each with its
fix; the fleet `make run` makes gives none; the exit code follows --fail-on."""
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from warden.board import flashimage
from warden.broker.server import Broker
from warden.fleet import audit, devices, pki
from warden.fleet.registry import Registry
from warden.policy import aws as awspolicy
from warden.policy import model as pol
from warden.state import State, write_file, write_private

NOW = dt.datetime.now(dt.timezone.utc)


def register(state, thing, cert, key=None, *, files=True):
    """A registry row (and, with files, devices/<thing>/cert.der + key.der) for a certificate."""
    with Registry(state.registry_path) as reg:
        reg.add(thing, pki.fingerprint(cert), cert.serial_number, not_after=cert.not_valid_after_utc)
    if files:
        folder = state.device_dir(thing)
        write_file(folder / "cert.der", pki.cert_der(cert))
        if key is not None:
            write_private(folder / "key.der", pki.key_der_sec1(key) if not isinstance(key, rsa.RSAPrivateKey)
                          else key.private_bytes(pki.serialization.Encoding.DER,
                                                 pki.serialization.PrivateFormat.TraditionalOpenSSL,
                                                 pki.serialization.NoEncryption()))


def device_cert(ca, thing, **kw):
    return pki.issue_client_cert(ca, thing, "device", **kw)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A fleet with each finding of the issue at least once (and nothing else wrong)."""
    s = State(tmp_path_factory.mktemp("broken") / ".warden")
    pki.init_pki(s)
    ca = pki.load_ca(s)
    # policy: a device rule beyond its own topics; an operator rule over every app; a technician
    # rule over the whole broker (which AWS also cannot express like mosquitto)
    data = pol.default_policy_data()
    data["roles"]["device"]["allow"].append({"action": "publish", "topic": "dt/{app}/#"})
    data["roles"]["operator"]["allow"].append({"action": "subscribe", "topic": "dt/#"})
    data["roles"]["technician"]["allow"].append({"action": "subscribe", "topic": "#"})
    policy = pol.save_policy(s, data)
    # AWS documents: the rendering, and a device document with a debugging iot:* on *
    docs = awspolicy.render_aws(policy, s.app, "eu-west-1", "210987654321")
    write_file(s.root / "aws" / "operator.json", json.dumps(docs["operator"]))
    docs["device"]["Statement"].append({"Sid": "Debug", "Effect": "Allow", "Action": "iot:*", "Resource": "*"})
    write_file(s.root / "aws" / "device.json", json.dumps(docs["device"]))
    # certificates
    register(s, "good-1", *device_cert(ca, "good-1"))
    register(s, "old-1", *device_cert(ca, "old-1", not_before=NOW - dt.timedelta(days=400),
                                      not_after=NOW - dt.timedelta(days=2)))
    register(s, "soon-1", *device_cert(ca, "soon-1", not_after=NOW + dt.timedelta(days=10)))
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    register(s, "weak-1", *device_cert(ca, "weak-1", key=weak))
    shared = pki.new_key()
    register(s, "twin-a", *device_cert(ca, "twin-a", key=shared))
    register(s, "twin-b", *device_cert(ca, "twin-b", key=shared))
    copy_cert, copy_key = device_cert(ca, "copy-1")
    register(s, "copy-1", copy_cert, copy_key)
    db = sqlite3.connect(s.registry_path)      # a second row for the same certificate, as drift
    db.execute("INSERT INTO devices (thing, fingerprint, serial, status, created, not_after) "
               "VALUES ('copy-2', ?, ?, 'active', '2026-01-01T00:00:00+00:00', NULL)",
               (pki.fingerprint(copy_cert), format(copy_cert.serial_number, "x")))
    db.commit()
    db.close()
    write_file(s.device_dir("copy-2") / "cert.der", pki.cert_der(copy_cert))
    register(s, "ghost-1", *device_cert(ca, "ghost-1"), files=False)
    write_file(s.device_dir("stray-1") / "cert.der", pki.cert_der(device_cert(ca, "stray-1")[0]))
    pki.issue_principal(s, "operator", "alice")                       # not in the policy
    register(s, "swap-1", *device_cert(ca, "swap-1"))
    other, other_key = device_cert(ca, "swap-1")
    write_file(s.device_dir("swap-1") / "cert.der", pki.cert_der(other))
    write_private(s.device_dir("swap-1") / "key.der", pki.key_der_sec1(other_key))
    stale_cert, stale_key = device_cert(ca, "stale-1")
    register(s, "stale-1", stale_cert, stale_key)
    old_cert = device_cert(ca, "stale-1")[0]
    flash = s.device_dir("stale-1") / "flash.bin"
    flash.write_bytes(flashimage.new_flash({"/identity/cert.der": pki.cert_der(old_cert)}))
    # revocations: rev-1 in the registry only; rev-2 properly, but still named in the ACL
    register(s, "rev-1", *device_cert(ca, "rev-1"))
    register(s, "rev-2", *device_cert(ca, "rev-2"))
    with Registry(s.registry_path) as reg:
        reg.revoke("rev-1", "lost")
        reg.revoke("rev-2", "compromised")
        rev2 = reg.certificates("rev-2")[0].serial_int
    # broker config from warden, then drift: anonymous, TLS 1.1, no client certificates, no
    # client-id pinning, and the ACL hand-edited for rev-2
    Broker(s).write_config()
    conf = s.broker_dir / "mosquitto.conf"
    text = conf.read_text()
    for old, new in (("allow_anonymous false", "allow_anonymous true"), ("tls_version tlsv1.2", "tls_version tlsv1.1"),
                     ("require_certificate true", "require_certificate false"),
                     ("use_username_as_clientid true", "use_username_as_clientid false")):
        assert old in text
        text = text.replace(old, new)
    conf.write_text(text)
    acl = s.broker_dir / "acl"
    acl.write_text(acl.read_text() + "\nuser rev-2\ntopic readwrite dt/warden/rev-2/#\n")
    # the CRL: lists rev-2 but expires in 10 days
    (s.pki_dir / pki.CRL).write_bytes(pki.make_crl(ca, [(rev2, NOW)], days=10))
    return s


EXPECTED = {
    ("policy-device-scope", "critical", "policy role device"),
    ("policy-broad", "medium", "policy role operator"),
    ("policy-broad", "high", "policy role technician"),
    ("policy-inexact", "high", "policy principal technician.default"),
    ("aws-action-star", "critical", "aws document device.json"),
    ("aws-resource-star", "high", "aws document device.json"),
    ("aws-connect-unpinned", "high", "aws document device.json"),
    ("aws-drift", "medium", "aws document device.json"),
    ("cert-expired", "critical", "device old-1"),
    ("cert-expiring", "medium", "device soon-1"),
    ("weak-key", "high", "device weak-1"),
    ("shared-key", "critical", "device twin-a, device twin-b"),
    ("shared-cert", "critical", "devices copy-1, copy-2"),
    ("cert-mismatch", "high", "device copy-2"),
    ("registry-without-cert", "high", "device ghost-1"),
    ("cert-without-registry", "medium", "device folder stray-1"),
    ("cert-without-registry", "medium", "principal operator.alice"),
    ("unaccounted-cert", "high", "certificate for 'operator.alice'"),   # issued, never registered
    ("cert-mismatch", "high", "device swap-1"),
    ("identity-stale", "medium", "device stale-1"),
    ("revoked-not-in-crl", "critical", "device rev-1"),
    ("revoked-in-acl", "high", "device rev-2"),
    ("broker-acl-drift", "high", "broker config"),
    ("crl-expiring", "medium", "CRL"),
    ("broker-anonymous", "critical", "broker config"),
    ("broker-tls", "high", "broker config"),
    ("broker-client-cert", "critical", "broker config"),
    ("broker-clientid", "high", "broker config"),
}


def test_broken_fleet_gives_exactly_the_expected_findings(broken):
    report = audit.audit(broken, days=30)
    got = [(f.check, f.severity, f.subject) for f in report.findings]
    assert sorted(got) == sorted(EXPECTED), "\n".join(map(str, sorted(set(got) ^ EXPECTED)))
    for f in report.findings:
        assert f.fix and f.message, f
    covered = {c for c, _, _ in EXPECTED}
    # every check the issue names is exercised here
    for check in ("policy-device-scope", "policy-broad", "aws-action-star", "cert-expired", "cert-expiring",
                  "weak-key", "shared-key", "shared-cert", "registry-without-cert", "cert-without-registry",
                  "revoked-in-acl", "broker-tls", "broker-anonymous", "broker-client-cert", "broker-clientid"):
        assert check in covered


def test_findings_say_what_to_do(broken):
    by = {(f.check, f.subject): f for f in audit.audit(broken).findings}
    assert "warden device rotate old-1" in by[("cert-expired", "device old-1")].fix
    assert "warden device revoke rev-1" in by[("revoked-not-in-crl", "device rev-1")].fix
    assert "RSA-1024" in by[("weak-key", "device weak-1")].message
    assert "use_username_as_clientid" in by[("broker-clientid", "broker config")].message
    assert "$" in by[("policy-inexact", "policy principal technician.default")].message


def test_days_window(broken):
    near = {f.subject for f in audit.audit(broken, days=5).findings if f.check == "cert-expiring"}
    far = {f.subject for f in audit.audit(broken, days=400).findings if f.check == "cert-expiring"}
    assert near == set() and {"device soon-1", "device good-1", "fleet CA"} - far == {"fleet CA"}
    assert "device good-1" in far


def test_make_run_fleet_has_no_findings(tmp_path):
    """What `make run` makes: pki init, device add twin-001 (with its twin), the broker config."""
    s = State(tmp_path / ".warden")
    pki.init_pki(s)
    devices.add_device(s, "twin-001")
    Broker(s, port=s.broker_port).write_config()
    report = audit.audit(s)
    assert report.findings == [], [f.as_dict() for f in report.findings]
    assert report.exit_code("info") == 0


def test_broken_policy_and_aws_files_are_findings_not_crashes(tmp_path):
    s = State(tmp_path / ".warden")
    pki.init_pki(s)
    s.policy_path.write_text('{"roles": {"device": {"principal": "thing", "allow": [{"action": "x"}]}}}')
    write_file(s.root / "aws" / "device.json", "{not json")
    write_file(s.root / "aws" / "op.json", json.dumps({"Statement": [{"Effect": "Allow", "NotAction": "x"}]}))
    got = {(f.check, f.subject) for f in audit.audit(s).findings}
    assert got == {("policy-invalid", "policy"), ("aws-invalid", "aws document device.json"),
                   ("aws-invalid", "aws document op.json")}


def test_audit_without_a_fleet_is_a_clear_error(tmp_path):
    with pytest.raises(audit.AuditError):
        audit.audit(State(tmp_path / "none"))
    s = State(tmp_path / "empty")
    s.ensure()
    with pytest.raises(pki.PkiError) as e:
        audit.audit(s)
    assert "pki init" in e.value.hint


def run_cli(state, *args):
    env = dict(os.environ, WARDEN_STATE=str(state.root))
    warden = os.path.join(os.path.dirname(sys.executable), "warden")   # the installed entry point
    return subprocess.run([warden, "audit", *args], capture_output=True, text=True, env=env, timeout=60)


def test_cli_exit_code_follows_fail_on(broken):
    r = run_cli(broken, "--json")
    assert r.returncode == 1, r.stderr
    body = json.loads(r.stdout)
    assert {(f["check"], f["severity"], f["subject"]) for f in body["findings"]} == EXPECTED
    assert body["findings"][0]["severity"] == "critical"     # most severe first
    assert run_cli(broken, "--fail-on", "critical").returncode == 1
    table = run_cli(broken, "--fail-on", "critical", "--days", "0")
    assert "warden device rotate" in table.stdout and "Traceback" not in table.stderr


def test_cli_passes_below_the_threshold(tmp_path):
    s = State(tmp_path / ".warden")
    pki.init_pki(s)
    ca = pki.load_ca(s)
    register(s, "soon-2", *device_cert(ca, "soon-2", not_after=NOW + dt.timedelta(days=3)))
    assert run_cli(s, "--fail-on", "high").returncode == 0       # only a medium finding
    r = run_cli(s)                                                 # default: low and above
    assert r.returncode == 1 and "soon-2" in r.stdout
    assert run_cli(s, "--fail-on", "high", "--days", "1").returncode == 0
    assert run_cli(s, "--days", "1").returncode == 0
