"""People and scripts as principals: one certificate each, in the registry, revocable.

A principal is CN `<role>.<name>` (OU = role): an operator or technician of the policy, or an
`admin` (controls the brokers: never in the fleet policy, only in the brokers' ACL). Its
long-term certificate and key live in the state's pki folder (`--out DIR` copies them, with the
fleet CA, for other MQTT clients). Each warden command that talks to the broker connects with a
*session* certificate minted for that process (`<cn>@<tag>`, a week at most, never written):
the broker's client id is the CN, so any number of sessions of one principal run side by side,
and the broker guard gives a session its principal's rules.

This module must not talk to brokers itself: `warden.broker.control` carries every change to them.
"""
from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ..errors import WardenError
from ..state import State, ensure_dir, write_file, write_private
from . import pki
from .names import InvalidName, parse_principal, principal_cn
from .registry import Registry, RegistryError

ADMIN = "admin"
PEOPLE_ROLES = ("operator", "technician")
DEFAULT_ROLES = ("operator", "technician", ADMIN)


class PrincipalError(WardenError):
    pass


@dataclass
class PrincipalInfo:
    cn: str
    role: str
    status: str
    created: str
    fingerprint: str | None
    not_after: str | None
    in_policy: bool
    revoked_at: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def resolve(name: str, role: str | None = None) -> str:
    """The CN for `name`: `operator.alice` as given, or `alice` with `role`."""
    if parse_principal(name):
        cn = name
    elif role:
        cn = principal_cn(role, name)
    else:
        raise PrincipalError(f"{name!r} is not a principal CN", hint="write ROLE.NAME, e.g. operator.alice")
    if role and parse_principal(cn)[0] != role:
        raise PrincipalError(f"{cn} is not a {role}", hint=f"this command acts as a {role}")
    return cn


def _registry(state: State) -> Registry:
    return Registry(state.registry_path)


def _cert_paths(state: State, cn: str):
    role, name = parse_principal(cn)
    return pki.principal_paths(state, role, name)


def _register_existing(reg: Registry, cn: str, role: str, cert_path: Path) -> None:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    reg.add_principal(cn, role, pki.fingerprint(cert), cert.serial_number, not_after=cert.not_valid_after_utc)


def ensure_default_principals(state: State) -> dict:
    """operator.default, technician.default and admin.default exist (files and registry rows):
    {role: (cert path, key path)}. States made before principals were registered get them here."""
    out = {}
    with _registry(state) as reg:
        for role in DEFAULT_ROLES:
            cn = principal_cn(role)
            cert_path, key_path = _cert_paths(state, cn)
            row = reg.principal(cn)
            if row is not None and row.status == "revoked":
                out[role] = (cert_path, key_path)
                continue
            if not cert_path.exists() or not key_path.exists():
                pki.issue_principal(state, role)
            if row is None:
                _register_existing(reg, cn, role, cert_path)
            out[role] = (cert_path, key_path)
    return out


def _policy_roles(state: State) -> dict:
    from ..policy.model import load_policy

    return load_policy(state).roles


def _set_in_policy(state: State, cn: str, present: bool) -> bool:
    """Add `cn` to (or take it out of) its role's principals in the policy. True if it changed."""
    from ..policy.model import load_policy_data, save_policy

    role = parse_principal(cn)[0]
    if role == ADMIN:
        return False
    data = load_policy_data(state)
    spec = data["roles"].get(role)
    if spec is None or spec.get("principal") == "thing":
        raise PrincipalError(f"the policy has no role {role!r} for principals",
                             hint=f"roles: {', '.join(r for r, s in data['roles'].items() if 'principals' in s)}")
    names = spec.setdefault("principals", [])
    if present == (cn in names):
        return False
    if present:
        names.append(cn)
    else:
        names.remove(cn)
    save_policy(state, data)
    return True


def add_principal(state: State, name: str, role: str, *, days: int = pki.PRINCIPAL_DAYS, out=None) -> PrincipalInfo:
    """Issue principal `<role>.<name>`, register it and add it to its role in the policy.
    With `out`, write cert.pem, key.pem and ca.pem there for other MQTT clients.
    The caller pushes the new ACL to the brokers (warden.broker.control.sync)."""
    if role != ADMIN:
        roles = _policy_roles(state)
        if role not in roles or roles[role].per_thing:
            raise PrincipalError(f"the policy has no role {role!r} for principals",
                                 hint="roles with principals: " + ", ".join(
                                     r for r, spec in roles.items() if not spec.per_thing) + ", admin")
    try:
        cn = principal_cn(role, name)
    except InvalidName as e:
        raise PrincipalError(str(e), hint=e.hint) from None
    ensure_default_principals(state)
    with _registry(state) as reg:
        if reg.principal(cn) is not None:
            p = reg.principal(cn)
            raise PrincipalError(f"principal {cn} already exists ({p.status}, created {p.created})",
                                 hint="a revoked name stays revoked; choose another name" if p.status == "revoked"
                                 else f"`warden principal rotate {cn}` gives it a new certificate")
        cert_path, key_path = pki.issue_principal(state, role, name, days=days)
        _register_existing(reg, cn, role, cert_path)
    _set_in_policy(state, cn, True)
    if out is not None:
        export(state, cn, out)
    return info(state, cn)


def export(state: State, cn: str, out) -> Path:
    """Write the principal's cert.pem, key.pem (0600) and the fleet CA as ca.pem into `out`."""
    cert_path, key_path = _cert_paths(state, cn)
    out = ensure_dir(Path(out))
    write_file(out / "cert.pem", cert_path.read_bytes())
    write_private(out / "key.pem", key_path.read_bytes())
    write_file(out / "ca.pem", (state.pki_dir / pki.CA_CERT).read_bytes())
    return out


def info(state: State, cn: str) -> PrincipalInfo:
    with _registry(state) as reg:
        p = reg.principal(cn)
        if p is None:
            raise PrincipalError(f"no principal {cn!r}", hint="see `warden principal list`")
        certs = reg.certificates(cn, "active")
    roles = _policy_roles(state)
    in_policy = p.role == ADMIN or (p.role in roles and cn in roles[p.role].principals)
    cert = certs[-1] if certs else None
    return PrincipalInfo(cn, p.role, p.status, p.created, cert.fingerprint if cert else None,
                         cert.not_after if cert else None, in_policy, p.revoked_at, p.reason)


def list_principals(state: State) -> list:
    if not pki.has_ca(state):
        return []
    ensure_default_principals(state)
    with _registry(state) as reg:
        cns = [p.cn for p in reg.principals()]
    return [info(state, cn) for cn in cns]


def revoke_principal(state: State, cn: str, reason: str | None = None) -> list:
    """Revoke principal `cn`: registry, CRL (every certificate it holds), out of the policy.
    Returns the revoked serials. The caller bans it on the brokers (warden.broker.control.sync)."""
    if cn == principal_cn(ADMIN):
        raise PrincipalError("admin.default is how warden reaches the brokers; it cannot be revoked",
                             hint="add another admin first (`warden principal add NAME --role admin`); "
                                  "revoking admin.default is not supported yet")
    with _registry(state) as reg:
        if reg.principal(cn) is None:
            raise PrincipalError(f"no principal {cn!r}", hint="see `warden principal list`")
        reg.revoke_principal(cn, reason)
        certs = reg.certificates(cn, "revoked")
    pki.list_in_crl(state, certs, reason)
    try:
        _set_in_policy(state, cn, False)
    except PrincipalError:
        pass   # its role is gone from the policy already: nothing to take it out of
    return [c.serial for c in certs]


def rotate_principal(state: State, cn: str, *, days: int = pki.PRINCIPAL_DAYS, out=None) -> list:
    """A new certificate and key for `cn` (the files in pki/ are replaced); the old certificate is
    revoked in the CRL. Returns the old serials. The caller closes the old sessions (warden.broker.control)."""
    with _registry(state) as reg:
        p = reg.principal(cn)
        if p is None:
            raise PrincipalError(f"no principal {cn!r}", hint="see `warden principal list`")
        if p.status != "active":
            raise PrincipalError(f"principal {cn} is revoked", hint="a revoked principal stays revoked")
        role, name = parse_principal(cn)
        cert_path, _key = pki.issue_principal(state, role, name, days=days)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        old = reg.replace_certificate(cn, pki.fingerprint(cert), cert.serial_number, not_after=cert.not_valid_after_utc)
    pki.list_in_crl(state, old, "superseded")
    if out is not None:
        export(state, cn, out)
    return [c.serial for c in old]


def check_active(state: State, cn: str) -> None:
    """Raise PrincipalError unless `cn` is an active principal of this state."""
    if cn in {principal_cn(r) for r in DEFAULT_ROLES}:
        ensure_default_principals(state)
    try:
        with _registry(state) as reg:
            p = reg.principal(cn)
    except RegistryError:
        raise
    if p is None:
        raise PrincipalError(f"no principal {cn!r} in this fleet", hint="see `warden principal list`; "
                             "`warden principal add NAME --role ROLE` makes one")
    if p.status != "active":
        raise PrincipalError(f"principal {cn} is revoked ({p.reason or 'no reason given'}, {p.revoked_at})",
                             hint="use another principal with --as")


def session_context(state: State, cn: str) -> ssl.SSLContext:
    """A TLS client context for one session of `cn`: the broker is verified against the fleet CA
    (name checked), and a fresh session certificate is presented."""
    check_active(state, cn)
    cert, key = pki.issue_session(state, cn)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(state.pki_dir / pki.CA_CERT))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # The ssl module loads keys from files only: a private folder, deleted right away.
    ensure_dir(state.pki_dir)
    with tempfile.TemporaryDirectory(dir=state.pki_dir, prefix=".session-") as tmp:
        cert_file, key_file = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        write_file(cert_file, pki.cert_pem(cert), 0o600)
        write_private(key_file, pki.key_pem(key))
        ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx
