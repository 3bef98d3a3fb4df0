"""Device provisioning, revocation and certificate rotation.

It must not talk to brokers itself: revocations reach them through warden.broker.control.sync.

`add_device` is all-or-nothing: the registry insert is the commit point that makes a thing
name ours (it is unique, so of two concurrent adds of one name only one wins, before it writes
any file), and if anything after it fails the row and the device folder are removed again.
It never writes over a device's files: a folder that already holds some (a device whose
registry entry is gone) is refused, and `replace=True` first moves them into
`devices/<thing>/archive/<UTC time>/`, after a backup of the registry.

The registry is opened through `open_registry`, which refuses a registry that lists no device
while device folders or the CA's issuance log say there are some: a registry emptied or replaced
by mistake is reported, not taken for an empty fleet (whose `device add` would then re-issue
every name). Revocations and rotations back the registry up first (warden.fleet.backups).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from ..board import flashimage
from ..errors import WardenError
from ..state import State, write_file, write_private
from . import pki
from .names import validate_thing
from .registry import Device, Registry, RegistryError

CERT_FILE = "cert.der"
KEY_FILE = "key.der"


class DeviceError(WardenError):
    pass


ARCHIVE_DIR = "archive"


def device_folders(state: State) -> list:
    """Thing names with a device folder holding an identity (cert.der), sorted."""
    root = state.devices_dir
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / CERT_FILE).exists())


def _issued(state: State) -> tuple:
    """(device CNs, how many principal certificates) in the CA's issuance log."""
    try:
        log = pki.issued_log(state)
    except pki.PkiError:
        return set(), 0    # an unreadable log is the audit's finding; the folders still count
    return ({e.get("cn") for e in log if e.get("kind") == "device"},
            sum(1 for e in log if e.get("kind") == "principal"))


def check_not_emptied(state: State, reg: Registry | None) -> None:
    """RegistryError if the registry (None: there is no file) lists no device while device folders
    exist, or lists neither device nor principal while the CA's log says it issued them: it was
    emptied, deleted or replaced. (A first `device add` that failed leaves a certificate in the
    log but the principals of `pki init` in the registry: not a lost registry.)"""
    if reg is not None and reg.count():
        return
    folders = device_folders(state)
    issued, principal_certs = _issued(state)
    if reg is not None and reg.principals():
        issued = set()
    elif not principal_certs:
        issued = set()     # a log from before principals: only the folders tell
    if not folders and not issued:
        return
    names = sorted(set(folders) | issued)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    what = "lists no device" if reg is not None else "is missing"
    raise RegistryError(
        f"the registry {state.registry_path} {what}, but {len(folders)} device folder(s) and "
        f"{len(issued)} device certificate(s) the CA issued say the fleet has devices ({shown}): "
        "it was emptied or replaced; nothing was changed",
        hint="restore it with `warden device restore` (the newest backup; `--list` shows them all)")


def open_registry(state: State, *, create: bool = True) -> Registry | None:
    """The registry, refused when it was emptied (check_not_emptied). create=False: None when
    there is no registry file (and no sign of a fleet)."""
    if not state.registry_path.exists():
        check_not_emptied(state, None)
        if not create:
            return None
    reg = Registry(state.registry_path)
    try:
        check_not_emptied(state, reg)
    except BaseException:
        reg.close()
        raise
    return reg


_registry = open_registry


def _archive(folder: Path) -> Path:
    """Move everything in a device folder (but earlier archives) into archive/<UTC time>/."""
    import datetime as _dt

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = folder / ARCHIVE_DIR / stamp
    dest.mkdir(parents=True, mode=0o700)
    for entry in folder.iterdir():
        if entry.name != ARCHIVE_DIR:
            os.replace(entry, dest / entry.name)
    return dest


def _live_files(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name != ARCHIVE_DIR) if folder.is_dir() else []


def add_device(state: State, thing: str, *, replace: bool = False) -> Device:
    """Provision `thing`: issue its certificate and key, register it, write its files, make its twin.

    Files: `devices/<thing>/cert.der` and `key.der` (0600, SEC1 DER). Then
    `warden.board.twin.provision_twin(state, thing, cert_der, key_der)` builds the device twin.
    Raises InvalidName (a ValueError), RegistryError on a duplicate, PkiError without a CA,
    DeviceError when the device folder already holds files (`replace=True` archives them first:
    `Device.archived` then says where).
    """
    validate_thing(thing)
    with _registry(state) as reg:
        existing = reg.get(thing)
        if existing is not None:
            # Checked before making keys; the unique column still guards a concurrent add.
            raise RegistryError(
                f"device {thing!r} is already registered ({existing.status}, created {existing.created})",
                hint=f"choose another thing name; `warden device list` shows the fleet (a new identity for "
                     f"it: `warden device rotate {thing}`, which keeps its log key and flash)",
            )
        folder = state.device_dir(thing)
        files = _live_files(folder)
        archived = None
        if files and not replace:
            raise DeviceError(
                f"{folder} already holds files of a device {thing!r} ({', '.join(files)}) that the registry "
                "does not list; nothing was changed",
                hint="if the registry lost it, restore the registry (`warden device restore`); to provision "
                     f"the name afresh, `warden device add {thing} --replace` moves those files into "
                     f"{folder / ARCHIVE_DIR}/ first")
        if files:
            from .backups import backup_registry

            backup_registry(state, f"add-replace-{thing}")
            archived = _archive(folder)
        cert_der, key_der = pki.issue_device_cert(state, thing)
        cert = x509.load_der_x509_certificate(cert_der)
        log_key = os.urandom(32)   # the device's log key (docs/log.md, 'The log key'): registry + device NVS
        device = reg.add(thing, pki.fingerprint(cert_der), cert.serial_number,
                         not_after=cert.not_valid_after_utc, log_key=log_key)
        device.archived = archived
        try:
            write_file(folder / CERT_FILE, cert_der)
            write_private(folder / KEY_FILE, key_der)
            from ..board.twin import provision_twin

            provision_twin(state, thing, cert_der, key_der)
        except BaseException:
            reg.remove(thing)
            for name in _live_files(folder):     # what this add wrote; an archive stays
                p = folder / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            raise
    return device


def list_devices(state: State, status: str | None = None) -> list:
    """Registered devices (all, or those with `status`), ordered by thing name."""
    reg = open_registry(state, create=False)
    if reg is None:
        return []
    with reg:
        return reg.list(status)


def get_device(state: State, thing: str) -> Device:
    with _registry(state) as reg:
        device = reg.get(thing)
    if device is None:
        raise DeviceError(f"no device {thing!r} in the registry", hint="see `warden device list`")
    return device


def active_device(state: State, thing: str, doing: str, hint: str | None = None) -> Device:
    """`thing`, if it is active. A revoked device is a DeviceError saying so, for the tools that
    would otherwise wait on it: every broker refuses its certificate, so it can never answer,
    and the device itself cannot tell why (it sees only its handshake fail)."""
    device = get_device(state, thing)
    if device.status == "revoked":
        why = f": {device.revoke_reason}" if device.revoke_reason else ""
        raise DeviceError(
            f"device {thing!r} is revoked (since {device.revoked_at or '?'}{why}): {doing}",
            hint=hint or "every broker refuses a revoked device's certificate; a revoked device stays revoked: "
                         "provision the board under a new name (`warden device add NAME`, then deploy it)")
    return device


# -- revocation and rotation -------------------------------------------------------------------
@dataclass
class Revocation:
    """What `revoke_device` (or a rotation) did: the CRL entries and each broker's outcome."""
    thing: str
    serials: list                       # certificate serials now listed in the CRL for the thing
    reason: str | None
    brokers: object = None              # brokerctl.SyncReport

    @property
    def failed(self) -> list:
        return self.brokers.failed if self.brokers else []

    def summary(self) -> str:
        return "\n".join(self.brokers.lines()) if self.brokers else ""


def _status_payload(state_word, reason):
    body = {"state": state_word}
    if reason:
        body["reason"] = reason
    return json.dumps(body, separators=(",", ":")).encode()


def revoke_device(state: State, thing: str, reason: str | None = None) -> Revocation:
    """Revoke `thing`: registry status 'revoked' (with time and reason), every certificate it holds
    listed in the CRL, and on every broker warden configured (brokerctl.sync): the CRL reloaded
    (its next handshake is refused), the thing banned, its live session closed and its retained
    status set to {"state": "revoked"}. A broker that cannot be reached keeps the revocation
    pending (`Revocation.failed`, `warden audit`). Revoking again re-applies it (idempotent)."""
    from ..broker.control import sync

    from .backups import backup_registry

    validate_thing(thing)
    with _registry(state) as reg:
        if reg.get(thing) is None:
            raise DeviceError(f"no device {thing!r} in the registry", hint="see `warden device list`")
        backup_registry(state, f"revoke-{thing}")
        reg.revoke(thing, reason)
        certs = reg.certificates(thing, "revoked")
    pki.list_in_crl(state, certs, reason)
    result = Revocation(thing, [c.serial for c in certs], reason)
    result.brokers = sync(state, kick=[thing],
                          status=[(f"dt/{state.app}/{thing}/status", _status_payload("revoked", reason))])
    return result


def twin_running(path) -> bool | None:
    """Is some process holding the twin flash file `path` open (a running twin)? None if this
    system has no /proc to tell (board.twin.flash_users does the looking)."""
    from ..board.twin import flash_users
    users = flash_users([path])
    return None if users is None else bool(users[path])


@dataclass
class Rotation:
    thing: str
    new_serial: str
    old_serials: list = field(default_factory=list)
    delivered: str = ""                  # where the device got it ("twin flash ..." or "")
    pending: bool = False                # waiting for `rotate --finish` after a deployment
    revocation: Revocation | None = None


PENDING_DIR = "pending"


def rotate_device(state: State, thing: str, *, days: int = pki.DEVICE_DAYS) -> Rotation:
    """Issue a new key and certificate for an existing thing; revoke the old one once the device has it.

    With a twin flash (devices/<thing>/flash.bin), the twin must be stopped: its /identity/ files
    are replaced in the flash (FlashFile), which is the device having it, so the new certificate
    becomes active and the old one is revoked at once (CRL, broker reload, any session still
    using it cut off). Without a twin (a real board) the new identity waits in
    devices/<thing>/pending/ for deployment; `finish_rotation` (rotate --finish) then activates it."""
    from ..board import twin as twinlib

    validate_thing(thing)
    device = get_device(state, thing)
    if device.status != "active":
        raise DeviceError(f"device {thing!r} is {device.status}: it cannot get a new certificate",
                          hint="a revoked device stays revoked; provision a new thing instead")
    flash = twinlib.flash_path(state, thing)
    if flash.exists() and twin_running(flash):
        raise DeviceError(f"the twin of {thing!r} is running ({flash} is open)",
                          hint="stop it first: the flash cannot be changed under a running device")
    from .backups import backup_registry

    backup_registry(state, f"rotate-{thing}")
    cert_der, key_der = pki.issue_device_cert(state, thing, days=days)
    cert = x509.load_der_x509_certificate(cert_der)
    with _registry(state) as reg:
        reg.add_pending(thing, pki.fingerprint(cert_der), cert.serial_number, not_after=cert.not_valid_after_utc)
    folder = state.device_dir(thing) / PENDING_DIR
    write_file(folder / CERT_FILE, cert_der)
    write_private(folder / KEY_FILE, key_der)
    result = Rotation(thing, format(cert.serial_number, "x"))
    if not flash.exists():
        result.pending = True
        return result
    ff = flashimage.FlashFile(flash)
    from ..aws.device import trust_store_for

    # a twin whose broker is AWS IoT Core keeps Amazon's roots (docs/aws.md); any other the fleet CA,
    # as does a flash with no /config.json yet (an identity only: its config comes with a deploy)
    config = json.loads(ff.read("/config.json")) if ff.exists("/config.json") else {}
    ca_der = trust_store_for(state, config) or (state.pki_dir / pki.CA_DER).read_bytes()
    ff.write({"/identity/cert.der": cert_der, "/identity/key.der": key_der, "/identity/ca.der": ca_der})
    ff.save()
    result.delivered = f"twin flash {flash}"
    return finish_rotation(state, thing, _result=result)


def finish_rotation(state: State, thing: str, *, _result: Rotation | None = None) -> Rotation:
    """The device has its new identity: make it the active one and revoke the old certificate
    (CRL on every broker; the thing's live session, still on the old certificate, is closed and
    the device reconnects with the new one)."""
    from ..broker.control import sync

    folder = state.device_dir(thing)
    pending = folder / PENDING_DIR
    try:
        cert_der = (pending / CERT_FILE).read_bytes()
        key_der = (pending / KEY_FILE).read_bytes()
    except OSError:
        raise DeviceError(f"{thing!r} has no pending certificate in {pending}",
                          hint=f"run `warden device rotate {thing}` first") from None
    serial = x509.load_der_x509_certificate(cert_der).serial_number
    if _result is None:     # rotate_device backed it up already
        from .backups import backup_registry

        backup_registry(state, f"rotate-finish-{thing}")
    with _registry(state) as reg:
        old = reg.activate(thing, serial)
    write_file(folder / CERT_FILE, cert_der)
    write_private(folder / KEY_FILE, key_der)
    shutil.rmtree(pending, ignore_errors=True)
    result = _result or Rotation(thing, format(serial, "x"))
    result.old_serials = [c.serial for c in old]
    pki.list_in_crl(state, old, "superseded")
    rev = Revocation(thing, result.old_serials, "superseded by rotation")
    rev.brokers = sync(state, kick=[thing])
    result.revocation = rev
    return result
