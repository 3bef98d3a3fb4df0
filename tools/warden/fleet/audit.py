"""`warden audit`: the fleet checked for drift from least privilege, each finding with its fix.

It only reads and reports: it must not change the state, the registry or a broker (each
finding says what the user can run to fix it).

`audit(state, days=30)` reads the project state (policy, AWS documents written by `warden policy
render --format aws --out <state>/aws`, PKI, CRL, registry, device folders and twin flashes, the
generated broker config and ACL, and the running broker if there is one) and returns a Report of
Findings. Nothing is changed. Checks, by id (severity):

policy-invalid (critical)         the policy file does not parse
policy-device-scope (critical)    a device rule reaches beyond the thing's own topics (wildcard or
                                  '#' before/without {thing})
policy-broad (high/medium)        a principal rule spans every app or the whole broker
policy-inexact (high)             the AWS rendering cannot give the mosquitto answer on some topic
aws-invalid (high)                a document in <state>/aws cannot be read or evaluated
aws-action-star (critical)        an Allow on iot:* or *
aws-resource-star (high)          an Allow on every resource (`*`, a wildcard in region/account,
                                  or every topic)
aws-connect-unpinned (high)       iot:Connect allowed for a client id not pinned to the identity
aws-drift (medium)                a document differs from the rendering of the current policy
cert-expired (critical)           a certificate in use has expired
cert-expiring (medium)            ... expires within N days
weak-key (high)                   RSA < 2048 bits, an EC curve other than P-256/384/521, another key
                                  type, or a SHA-1/MD5 signature
shared-key (critical)             two certificates share one key pair
shared-cert (critical)            two devices share one certificate
registry-without-cert (high)      an active registry entry without its certificate file
cert-without-registry (medium)    a certificate without a registry entry (devices) or policy
                                  principal (roles)
cert-mismatch (high)              the certificate file is not the registry's, its key does not match,
                                  its CN/OU is not the thing/role, or the fleet CA did not sign it
identity-stale (medium/high)      a twin's flash holds a certificate other than the active one
                                  (high when that one is revoked)
revoked-not-in-crl (critical)     a revoked certificate is missing from the CRL
revoked-in-acl (high)             a revoked device is still named in the broker ACL
crl-invalid (critical)            the CRL is missing or not signed by the fleet CA
crl-expired / crl-expiring        the broker refuses everyone once the CRL's nextUpdate passes
crl-not-loaded (high)             the running broker has not loaded the current CRL
broker-tls (high)                 a listener without TLS 1.2+ pinned
broker-anonymous (critical)       anonymous clients allowed
broker-client-cert (critical/high) client certificates not required, or not checked against the
                                  fleet CA and its CRL
broker-clientid (high)            the certificate is not the username or the username not the client id
broker-listener (critical)        a listener on a non-loopback address
broker-acl-drift (high)           the ACL file is not the rendering of the current policy
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from ..errors import WardenError
from ..policy import aws as awspolicy
from ..policy.model import PolicyError, load_policy
from ..state import State
from . import pki
from .names import parse_principal
from .registry import Registry

SEVERITIES = ("info", "low", "medium", "high", "critical")
STRONG_CURVES = ("secp256r1", "secp384r1", "secp521r1")
MIN_RSA_BITS = 2048
AWS_DIR = "aws"


class AuditError(WardenError):
    pass


def severity_rank(name: str) -> int:
    try:
        return SEVERITIES.index(name)
    except ValueError:
        raise AuditError(f"unknown severity {name!r}", hint="one of " + ", ".join(SEVERITIES)) from None


@dataclass
class Finding:
    check: str
    severity: str
    subject: str
    message: str
    fix: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    findings: list = field(default_factory=list)
    skipped: list = field(default_factory=list)    # (what, why)
    facts: list = field(default_factory=list)      # (what, value): figures worth showing, not findings

    def add(self, check, severity, subject, message, fix):
        self.findings.append(Finding(check, severity, subject, message, fix))

    def at_or_above(self, severity: str) -> list:
        rank = severity_rank(severity)
        return [f for f in self.findings if severity_rank(f.severity) >= rank]

    def exit_code(self, fail_on: str) -> int:
        return 1 if self.at_or_above(fail_on) else 0

    def sorted(self) -> list:
        return sorted(self.findings, key=lambda f: (-severity_rank(f.severity), f.check, f.subject))

    def as_dict(self) -> dict:
        return {"findings": [f.as_dict() for f in self.sorted()],
                "skipped": [{"what": w, "why": y} for w, y in self.skipped],
                "facts": {w: v for w, v in self.facts}}


def _now():
    return _dt.datetime.now(_dt.timezone.utc)


def _attr(name: x509.Name, oid):
    values = name.get_attributes_for_oid(oid)
    return values[0].value if values else None


def public_key_bytes(cert) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def key_weakness(cert) -> str | None:
    """Why the certificate's key or signature is weak, or None."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"RSA-{key.key_size} key (minimum {MIN_RSA_BITS})"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in STRONG_CURVES:
            return f"EC key on curve {key.curve.name}"
    elif isinstance(key, dsa.DSAPublicKey):
        return f"DSA-{key.key_size} key"
    elif not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return f"unsupported key type {type(key).__name__}"
    algo = cert.signature_hash_algorithm
    if isinstance(algo, (hashes.SHA1, hashes.MD5)):
        return f"signed with {algo.name.upper()}"
    return None


# -- policy -------------------------------------------------------------------------------------
def _check_policy(state: State, report: Report):
    try:
        policy = load_policy(state)
    except PolicyError as e:
        report.add("policy-invalid", "critical", "policy", str(e),
                   f"fix {state.policy_path} (docs/security.md, 'Roles and the policy file', describes the format) or delete it for the default")
        return None
    app = state.app
    for role in policy.roles.values():
        for rule in role.allow:
            levels = rule.topic.split("/")
            subject = f"policy role {role.name}"
            if role.per_thing:
                if "{thing}" not in levels or any(lv in ("+", "#") for lv in levels[:levels.index("{thing}")]):
                    report.add("policy-device-scope", "critical", subject,
                               f"{rule.action} {rule.topic!r} reaches beyond the device's own topics",
                               "scope every device rule to {thing}, e.g. dt/{app}/{thing}/#")
            else:
                if levels[0] in ("#", "+"):
                    report.add("policy-broad", "high", subject,
                               f"{rule.action} {rule.topic!r} covers the whole broker",
                               "name the topic tree and the app: e.g. dt/{app}/+/telemetry")
                elif len(levels) > 1 and levels[1] in ("#", "+"):
                    report.add("policy-broad", "medium", subject,
                               f"{rule.action} {rule.topic!r} covers every app, not just {{app}}",
                               "put {app} in the second level: e.g. dt/{app}/+/status")
    from ..policy import proof as policyproof

    for m in policyproof.prove_policy(policy, app):
        report.add("policy-inexact", "high", f"policy principal {m.principal}",
                   f"the AWS rendering cannot match mosquitto: {m}",
                   "AWS '*' spans levels: avoid a '+' level followed by '#', and rules whose "
                   "one-level Deny cuts into another rule (see docs/security.md, 'Two renderings, one policy, proved equal')")
    return policy


def judge_aws_document(report: Report, subject: str, statements) -> tuple:
    """Report what in one AWS IoT policy document (its statements) grants more than least privilege:
    every IoT action, every resource, a client id not pinned to the identity. (region, account) of
    its ARNs. `warden aws audit` judges the policies attached in AWS with it as well."""
    region = account = None
    for st in statements:
        actions = [str(a) for a in awspolicy._as_list(st.get("Action"))]
        resources = [str(r) for r in awspolicy._as_list(st.get("Resource"))]
        for r in resources:
            m = re.match(r"arn:aws:iot:([^:]*):([^:]*):", r)
            if m and region is None:
                region, account = m.group(1), m.group(2)
        if st["Effect"] != "Allow":
            continue
        sid = st.get("Sid", "?")
        if any(a.lower() in ("*", "iot:*") for a in actions):
            report.add("aws-action-star", "critical", subject,
                       f"statement {sid} allows {', '.join(actions)}: every IoT action",
                       "allow only iot:Connect, iot:Publish, iot:RetainPublish, iot:Subscribe and iot:Receive, each on "
                       "its own resources (warden policy render --format aws)")
        for r in resources:
            m = re.match(r"arn:aws:iot:([^:]*):([^:]*):(.*)$", r)
            if r == "*" or (m and ("*" in m.group(1) or "*" in m.group(2))) or \
                    (m and m.group(3) in ("*", "topic/*", "topicfilter/*", "client/*")):
                report.add("aws-resource-star", "high", subject,
                           f"statement {sid} allows {r!r}: every resource of its kind",
                           "name the region and account and scope topics to the app and the thing")
        if any(awspolicy.glob_match(a, awspolicy.CONNECT, {}, case=False) for a in actions):
            for r in resources:
                tail = r.split(":client/", 1)[1] if ":client/" in r else r
                if tail not in (awspolicy.THING_VAR, awspolicy.CN_VAR):
                    report.add("aws-connect-unpinned", "high", subject,
                               f"statement {sid} allows connecting as {r!r}",
                               "pin the client id: client/${iot:Connection.Thing.ThingName} for things")
    return region, account


def _check_aws_docs(state: State, report: Report, policy):
    folder = state.root / AWS_DIR
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        report.skipped.append(("AWS policy documents", f"none in {folder}"))
        return
    for path in files:
        subject = f"aws document {path.name}"
        try:
            doc = json.loads(path.read_text())
            statements = list(awspolicy._statements(doc))
        except (OSError, ValueError, awspolicy.AwsPolicyError) as e:
            report.add("aws-invalid", "high", subject, f"cannot read it: {e}",
                       "re-render it: warden policy render --format aws --out " + str(folder))
            continue
        region, account = judge_aws_document(report, subject, statements)
        if policy is not None and region and account:
            try:
                expected = awspolicy.render_aws(policy, state.app, region, account).get(path.stem)
            except WardenError:
                expected = None
            if expected is not None and expected != doc:
                report.add("aws-drift", "medium", subject,
                           "differs from the rendering of the current policy",
                           f"re-render: warden policy render --format aws --region {region} "
                           f"--account {account} --out {folder}")


# -- certificates --------------------------------------------------------------------------------
@dataclass
class _Cert:
    label: str          # "device twin-001", "principal operator.default", ...
    cert: x509.Certificate
    path: Path
    in_use: bool = True


def _load_cert_file(path: Path):
    try:
        return pki.load_cert(path.read_bytes())
    except (OSError, ValueError):
        return None


def _check_certs(state: State, report: Report, policy, days: int, now):
    ca_cert, _ca_key = pki.load_ca(state)     # no CA: nothing to audit (PkiError says what to do)
    certs = [_Cert("fleet CA", ca_cert, state.pki_dir / pki.CA_CERT)]
    broker_cert = _load_cert_file(state.pki_dir / pki.BROKER_CERT)
    if broker_cert is not None:
        certs.append(_Cert("broker certificate", broker_cert, state.pki_dir / pki.BROKER_CERT))
    # role principals: every <x>.crt.pem with a dotted CN
    principals_known = {cn for r in (policy.roles.values() if policy else []) for cn in r.principals}
    principal_rows = {}
    if state.registry_path.exists():
        with Registry(state.registry_path) as reg:
            principal_rows = {p.cn: p for p in reg.principals()}
    principals_known |= {cn for cn, p in principal_rows.items() if p.role == "admin" and p.status == "active"}
    for path in sorted(state.pki_dir.glob("*.crt.pem")):
        if path.name in (pki.CA_CERT, pki.BROKER_CERT):
            continue
        cert = _load_cert_file(path)
        if cert is None:
            continue
        cn = _attr(cert.subject, NameOID.COMMON_NAME)
        ou = _attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
        label = f"principal {cn}"
        if cn in principal_rows and principal_rows[cn].status == "revoked":
            continue     # its certificates are in the CRL (checked there)
        certs.append(_Cert(label, cert, path))
        if policy is not None and cn not in principals_known:
            report.add("cert-without-registry", "medium", label,
                       f"{path.name} is a certificate for {cn!r}, which no role of the policy lists",
                       f"add {cn} to its role's principals, or delete {path} and its key")
        role = parse_principal(cn or "")
        if role is None or role[0] != ou:
            report.add("cert-mismatch", "high", label,
                       f"{path.name}: CN {cn!r} and OU {ou!r} do not name one role",
                       "issue role certificates with warden (CN <role>.<name>, OU <role>)")
        _check_signed(report, label, cert, ca_cert)

    registry_rows = []
    revoked_serials = set()
    history = []
    if state.registry_path.exists():
        with Registry(state.registry_path) as reg:
            registry_rows = reg.list()
            history = reg.certificates()
        revoked_serials = {c.serial_int for c in history if c.status == "revoked"}
    known = {d.thing for d in registry_rows}
    fingerprints = {}
    for d in registry_rows:
        label = f"device {d.thing}"
        path = state.devices_dir / d.thing / "cert.der"
        if d.status != "active":
            continue
        cert = _load_cert_file(path)
        if cert is None:
            report.add("registry-without-cert", "high", label,
                       f"the registry lists it as active but {path} is missing or unreadable",
                       f"revoke it (warden device revoke {d.thing}) or restore the file")
            continue
        certs.append(_Cert(label, cert, path))
        fp = pki.fingerprint(cert)
        fingerprints.setdefault(fp, []).append(d.thing)
        problems = []
        if fp != d.fingerprint:
            problems.append("the file is not the certificate the registry has for it")
        if _attr(cert.subject, NameOID.COMMON_NAME) != d.thing:
            problems.append(f"CN is {_attr(cert.subject, NameOID.COMMON_NAME)!r}")
        if _attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME) != d.role:
            problems.append(f"OU is {_attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)!r}, not {d.role!r}")
        key_path = path.with_name("key.der")
        if key_path.exists():
            try:
                key = serialization.load_der_private_key(key_path.read_bytes(), None)
                if public_key_bytes(cert) != key.public_key().public_bytes(
                        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
                    problems.append("key.der is not the certificate's key")
            except (ValueError, TypeError):
                problems.append("key.der cannot be read")
        if problems:
            report.add("cert-mismatch", "high", label, "; ".join(problems),
                       f"rotate it: warden device rotate {d.thing}")
        _check_signed(report, label, cert, ca_cert)
        if cert.serial_number in revoked_serials:
            report.add("cert-mismatch", "high", label, "its certificate file is a revoked certificate",
                       f"rotate it: warden device rotate {d.thing}")
        _check_flash(state, report, d, revoked_serials)
    for fp, things in fingerprints.items():
        if len(things) > 1:
            report.add("shared-cert", "critical", "devices " + ", ".join(sorted(things)),
                       f"{len(things)} devices use one certificate ({fp[:16]}...)",
                       "give each its own: warden device rotate THING for all but one")
    # files without a registry entry
    if state.devices_dir.is_dir():
        for folder in sorted(p for p in state.devices_dir.iterdir() if p.is_dir()):
            if folder.name not in known and (folder / "cert.der").exists():
                # Never `device add` alone: that would re-issue the name over the device's files
                # (and its log). A registry that lost the device is restored; a name started
                # afresh keeps the old files in the folder's archive/.
                report.add("cert-without-registry", "medium", f"device folder {folder.name}",
                           f"{folder / 'cert.der'} has no registry entry",
                           "if the registry lost it, restore the registry: warden device restore (--list shows "
                           f"the backups); to provision the name afresh: warden device add {folder.name} --replace "
                           "(the old files move to its archive/)")
    # expiry and key strength
    for c in certs:
        _check_validity(report, c, days, now)
        why = key_weakness(c.cert)
        if why:
            report.add("weak-key", "high", c.label, why,
                       "re-issue it with an EC P-256 key (what warden issues): warden device rotate THING")
    by_key = {}
    for c in certs:
        by_key.setdefault(public_key_bytes(c.cert), []).append(c)
    for group in by_key.values():
        names = sorted({c.label for c in group})
        if len({pki.fingerprint(c.cert) for c in group}) == 1:
            continue   # one certificate used twice: shared-cert says it
        if len(names) > 1:
            report.add("shared-key", "critical", ", ".join(names),
                       f"{len(names)} certificates share one key pair",
                       "each identity needs its own key: rotate all but one (warden device rotate THING)")
    return ca_cert, history


def _check_signed(report, label, cert, ca_cert):
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:
        report.add("cert-mismatch", "high", label, "not signed by the fleet CA",
                   "re-issue it from this fleet's CA")


def _check_validity(report, c: _Cert, days, now):
    end = c.cert.not_valid_after_utc
    if end <= now:
        report.add("cert-expired", "critical", c.label, f"expired on {end:%Y-%m-%d}",
                   _renew_hint(c.label))
    elif end - now <= _dt.timedelta(days=days):
        left = (end - now).days
        report.add("cert-expiring", "medium", c.label, f"expires on {end:%Y-%m-%d} ({left} days left)",
                   _renew_hint(c.label))


def _renew_hint(label):
    if label.startswith("device "):
        return f"rotate it: warden device rotate {label.split(' ', 1)[1]}"
    if label == "fleet CA":
        return "plan a CA rollover: new CA, then re-provision every device"
    return "re-issue it (warden pki init --force re-creates the PKI; devices must then be re-provisioned)"


def _check_flash(state, report, device, revoked_serials):
    from ..board import flashimage, twin as twinlib

    flash = twinlib.flash_path(state, device.thing)
    if not flash.exists():
        return
    try:
        data = flashimage.FlashFile(flash).read("/identity/cert.der")
        cert = pki.load_cert(data)
    except Exception:   # a damaged flash is reported, never a crash
        report.add("identity-stale", "medium", f"device {device.thing}",
                   f"its twin flash {flash} has no readable /identity/cert.der",
                   f"rebuild the twin: warden device rotate {device.thing}")
        return
    if pki.fingerprint(cert) == device.fingerprint:
        return
    if cert.serial_number in revoked_serials:
        report.add("identity-stale", "high", f"device {device.thing}",
                   "its twin flash holds a revoked certificate: it cannot connect",
                   f"finish the rotation: warden device rotate {device.thing}")
    else:
        report.add("identity-stale", "medium", f"device {device.thing}",
                   "its twin flash holds a certificate that is not the registry's active one",
                   f"finish the rotation: warden device rotate {device.thing} --finish")


# -- revocation ----------------------------------------------------------------------------------
def _check_crl(state: State, report: Report, ca_cert, history, days, now, acl_text):
    path = state.pki_dir / pki.CRL
    try:
        crl = pki.load_crl(state)
    except (OSError, ValueError) as e:
        report.add("crl-invalid", "critical", "CRL", f"cannot read {path}: {e}",
                   "re-sign it: warden device revoke re-writes it, or start the broker (warden broker run)")
        return
    if ca_cert is not None and not crl.is_signature_valid(ca_cert.public_key()):
        report.add("crl-invalid", "critical", "CRL", "not signed by the fleet CA: the broker would reject it",
                   "re-sign it from the fleet CA (warden broker run refreshes it)")
    nxt = crl.next_update_utc
    if nxt is not None:
        report.facts.append(("CRL days left", max(0, (nxt - now).days)))
    if nxt is not None and nxt <= now:
        report.add("crl-expired", "critical", "CRL", f"nextUpdate {nxt:%Y-%m-%d} has passed: "
                   "mosquitto refuses every client", "re-sign and send it: warden broker sync")
    elif nxt is not None and nxt - now <= _dt.timedelta(days=days):
        report.add("crl-expiring", "medium", "CRL", f"nextUpdate is {nxt:%Y-%m-%d}",
                   "warden broker sync re-signs it and sends it to every broker (`warden broker run` "
                   "does it by itself)")
    listed = {r.serial_number for r in crl}
    for c in history:
        if c.status == "revoked" and c.serial_int not in listed:
            kind = "principal" if parse_principal(c.thing) else "device"
            report.add("revoked-not-in-crl", "critical", f"{kind} {c.thing}",
                       f"certificate {c.serial} is revoked in the registry but not in the CRL: "
                       "the broker still accepts it", f"re-apply it: warden {kind} revoke {c.thing}")
    revoked_things = {c.thing for c in history if c.status == "revoked"} - \
        {c.thing for c in history if c.status == "active"}
    if acl_text:
        for thing in sorted(revoked_things):
            if re.search(r"(^|[\s/])" + re.escape(thing) + r"($|[\s/])", acl_text, re.M):
                report.add("revoked-in-acl", "high", f"device {thing}",
                           "revoked, but the broker ACL still names it",
                           "re-generate the ACL from the policy: warden broker run (or restart it)")


def _broker_loaded_at(log_path: Path):
    """Unix time of the last start or reload the broker logged, or None."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    last = None
    for line in text.splitlines():
        if "Reloading config" in line or line.rstrip().endswith(" running"):
            stamp = line.split(": ", 1)[0]
            try:
                last = time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
            except ValueError:
                continue
    return last


# -- broker config --------------------------------------------------------------------------------
def _parse_conf(text: str):
    """(global directives, [listener directives]) as {name: [values]}."""
    glob, listeners, cur = {}, [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        value = value.strip()
        if name == "listener":
            cur = {"listener": [value]}
            listeners.append(cur)
            continue
        target = cur if cur is not None and name not in ("allow_anonymous", "acl_file", "per_listener_settings",
                                                         "persistence", "log_dest", "pid_file") else glob
        target.setdefault(name, []).append(value)
    return glob, listeners


def _check_broker(state: State, report: Report, policy, ca_cert):
    from ..broker.server import CONF_FILE, Broker

    conf_path = state.broker_dir / CONF_FILE
    if not conf_path.exists():
        report.skipped.append(("broker config", f"no {conf_path} (warden broker run writes it)"))
        return None
    glob, listeners = _parse_conf(conf_path.read_text())
    subject = "broker config"
    fix_run = "let warden write it: warden broker run (it re-generates mosquitto.conf)"
    if glob.get("allow_anonymous", ["false"])[-1] != "false":
        report.add("broker-anonymous", "critical", subject, "allow_anonymous is not false", fix_run)
    if glob.get("per_listener_settings", ["false"])[-1] == "true":
        report.add("broker-clientid", "high", subject, "per_listener_settings true: the fleet ACL may not apply",
                   fix_run)
    if not listeners:
        report.add("broker-client-cert", "critical", subject, "no listener with TLS client certificates", fix_run)
    ca_pem = (state.pki_dir / pki.CA_CERT)
    for lst in listeners:
        where = f"listener {lst['listener'][0]}"
        parts = lst["listener"][0].split()
        host = parts[1] if len(parts) > 1 else ""
        from ..broker.server import _is_loopback

        if not host or not _is_loopback(host):
            report.add("broker-listener", "critical", subject,
                       f"{where} listens on {host or 'every interface'}, not loopback",
                       "the local broker is for loopback only; deploy a real broker for a network")
        version = lst.get("tls_version", [None])[-1]
        if "certfile" not in lst or "keyfile" not in lst:
            report.add("broker-tls", "high", subject, f"{where} has no TLS (certfile/keyfile)", fix_run)
        elif version not in ("tlsv1.2", "tlsv1.3"):
            report.add("broker-tls", "high", subject,
                       f"{where}: tls_version is {version or 'not set'}, not tlsv1.2 or tlsv1.3", fix_run)
        if lst.get("require_certificate", ["false"])[-1] != "true":
            report.add("broker-client-cert", "critical", subject,
                       f"{where}: require_certificate is not true (clients without a certificate)", fix_run)
        cafile = lst.get("cafile", [None])[-1]
        if cafile is None or not Path(cafile).exists() or \
                Path(cafile).read_bytes() != ca_pem.read_bytes():
            report.add("broker-client-cert", "high", subject,
                       f"{where}: cafile is not the fleet CA ({cafile})", fix_run)
        crlfile = lst.get("crlfile", [None])[-1]
        if crlfile is None or Path(crlfile).resolve() != (state.pki_dir / pki.CRL).resolve():
            report.add("broker-client-cert", "high", subject,
                       f"{where}: crlfile is not the fleet CRL ({crlfile}): revocation has no effect", fix_run)
        if lst.get("use_identity_as_username", ["false"])[-1] != "true":
            report.add("broker-clientid", "high", subject,
                       f"{where}: use_identity_as_username is not true: the ACL does not see the certificate",
                       fix_run)
        if lst.get("use_username_as_clientid", ["false"])[-1] != "true":
            report.add("broker-clientid", "high", subject,
                       f"{where}: use_username_as_clientid is not true: a device can take another's client id",
                       fix_run)
    acl_text = None
    acl_file = glob.get("acl_file", [None])[-1]
    if acl_file is None or not Path(acl_file).exists():
        report.add("broker-acl-drift", "high", subject, f"no ACL file ({acl_file}): every topic is open",
                   fix_run)
    else:
        acl_text = Path(acl_file).read_text()
        if policy is not None:
            from ..broker.server import fleet_acl

            want = [ln for ln in fleet_acl(state).splitlines() if ln.strip() and not ln.startswith("#")]
            have = [ln.strip() for ln in acl_text.splitlines() if ln.strip() and not ln.startswith("#")]
            if want != have:
                extra = [ln for ln in have if ln not in want][:3]
                missing = [ln for ln in want if ln not in have][:3]
                report.add("broker-acl-drift", "high", subject,
                           f"{acl_file} is not the rendering of the policy (extra {extra}, missing {missing})",
                           "re-generate it: restart the broker (warden broker run writes the ACL)")
    running = Broker.find_running(state)
    if running is not None:
        loaded = _broker_loaded_at(running.log_path)
        crl = state.pki_dir / pki.CRL
        if loaded is not None and crl.exists() and crl.stat().st_mtime > loaded + 1:
            report.add("crl-not-loaded", "high", f"broker pid {running.pid}",
                       "the CRL changed after the broker last loaded it: revocations are not in force",
                       "reload it: warden device revoke THING (re-applies), or restart the broker")
    else:
        report.skipped.append(("running broker", "none found: loaded CRL not checked"))
    return acl_text


# -- brokers anywhere, and what the CA issued ---------------------------------------------------------
def _check_brokers(state: State, report: Report):
    """Every broker warden configured: a revocation or ACL change that has not reached it is high."""
    if not state.registry_path.exists():
        return
    with Registry(state.registry_path) as reg:
        entries = reg.brokers()
    for b in entries:
        if b.pending:
            report.add("revocation-not-applied", "high", f"broker {b.name} ({b.host}:{b.port})",
                       f"the fleet's latest revocations or ACL did not reach it: {b.pending}",
                       "when it is reachable: warden broker sync (or `warden broker forget "
                       f"{b.name}` if it is gone for good)")


def _check_issued(state: State, report: Report):
    """Every certificate the CA issued (pki/issued.jsonl) is accounted for by the registry."""
    try:
        issued = pki.issued_log(state)
    except pki.PkiError as e:
        report.add("issued-log", "high", "CA issuance log", str(e), e.hint or "")
        return
    if not issued:
        report.skipped.append(("certificates the CA issued", "no issuance log (a state made before it)"))
        return
    serials, principals_, broker_serials = set(), set(), set()
    if state.registry_path.exists():
        with Registry(state.registry_path) as reg:
            serials = {c.serial for c in reg.certificates()}
            principals_ = {p.cn for p in reg.principals()}
            folders = [Path(b.folder) for b in reg.brokers()]
    else:
        folders = []
    for path in [state.pki_dir / pki.BROKER_CERT] + [f / "server.crt.pem" for f in folders]:
        cert = _load_cert_file(path)
        if cert is not None:
            broker_serials.add(format(cert.serial_number, "x"))
    for e in issued:
        serial, cn, kind = e.get("serial"), e.get("cn") or "", e.get("kind")
        if kind == "session" and cn.split("@", 1)[0] in principals_:
            continue
        if kind == "verification":
            continue     # a proof of the CA's key for AWS IoT: its key was never kept (pki.issue_verification_cert)
        if kind == "broker" and serial in broker_serials:
            continue
        if kind in ("device", "principal") and serial in serials:
            continue
        if kind == "broker":
            report.skipped.append((f"broker certificate {serial}", "its config folder is not registered"))
            continue
        report.add("unaccounted-cert", "high", f"certificate for {cn!r}",
                   f"the fleet CA issued it ({kind}, serial {serial}, {e.get('issued')}) but the registry has "
                   "no record of it: "
                   "whoever holds it can complete a TLS handshake with every broker",
                   "if nobody should hold it, add its serial to the CRL and sync: "
                   f"python -c \"from warden import state; from warden.fleet import pki; "
                   f"pki.write_crl(state.State('{state.root}'), add=[0x{serial}])\" && warden broker sync")


def audit(state: State, days: int = 30, now: _dt.datetime | None = None) -> Report:
    """Check the fleet in `state`; certificates expiring within `days` are reported."""
    if not state.root.exists():
        raise AuditError(f"no project state at {state.root}", hint="run `warden pki init` first")
    now = now or _now()
    report = Report()
    policy = _check_policy(state, report)
    _check_aws_docs(state, report, policy)
    ca = _check_certs(state, report, policy, days, now)
    ca_cert, history = ca if ca else (None, [])
    acl_text = _check_broker(state, report, policy, ca_cert)
    _check_crl(state, report, ca_cert, history, days, now, acl_text)
    _check_brokers(state, report)
    _check_issued(state, report)
    return report
