"""Device provisioning, revocation and certificate rotation.

It must not talk to brokers itself: revocations reach them through warden.broker.control.sync.

`add_device` is all-or-nothing: the registry insert is the commit point that makes a thing
name ours (it is unique, so of two concurrent adds of one name only one wins, before it writes
any file), and if anything after it fails the row and the device folder are removed again.
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


def _registry(state: State) -> Registry:
    return Registry(state.registry_path)


def add_device(state: State, thing: str) -> Device:
    """Provision `thing`: issue its certificate and key, register it, write its files, make its twin.

    Files: `devices/<thing>/cert.der` and `key.der` (0600, SEC1 DER). Then
    `warden.board.twin.provision_twin(state, thing, cert_der, key_der)` builds the device twin.
    Raises InvalidName (a ValueError), RegistryError on a duplicate, PkiError without a CA.
    """
    validate_thing(thing)
    with _registry(state) as reg:
        existing = reg.get(thing)
        if existing is not None:
            # Checked before making keys; the unique column still guards a concurrent add.
            raise RegistryError(
                f"device {thing!r} is already registered ({existing.status}, created {existing.created})",
                hint="choose another thing name; `warden device list` shows the fleet",
            )
        cert_der, key_der = pki.issue_device_cert(state, thing)
        cert = x509.load_der_x509_certificate(cert_der)
        log_key = os.urandom(32)   # the device's log key (docs/log.md, 'The log key'): registry + device NVS
        device = reg.add(thing, pki.fingerprint(cert_der), cert.serial_number,
                         not_after=cert.not_valid_after_utc, log_key=log_key)
        folder = state.device_dir(thing)
        try:
            write_file(folder / CERT_FILE, cert_der)
            write_private(folder / KEY_FILE, key_der)
            from ..board.twin import provision_twin

            provision_twin(state, thing, cert_der, key_der)
        except BaseException:
            reg.remove(thing)
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return device


def list_devices(state: State, status: str | None = None) -> list:
    """Registered devices (all, or those with `status`), ordered by thing name."""
    if not state.registry_path.exists():
        return []
    with _registry(state) as reg:
        return reg.list(status)


def get_device(state: State, thing: str) -> Device:
    with _registry(state) as reg:
        device = reg.get(thing)
    if device is None:
        raise DeviceError(f"no device {thing!r} in the registry", hint="see `warden device list`")
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

    validate_thing(thing)
    with _registry(state) as reg:
        if reg.get(thing) is None:
            raise DeviceError(f"no device {thing!r} in the registry", hint="see `warden device list`")
        reg.revoke(thing, reason)
        certs = reg.certificates(thing, "revoked")
    pki.list_in_crl(state, certs, reason)
    result = Revocation(thing, [c.serial for c in certs], reason)
    result.brokers = sync(state, kick=[thing],
                          status=[(f"dt/{state.app}/{thing}/status", _status_payload("revoked", reason))])
    return result


def twin_running(path) -> bool | None:
    """Is some process holding the twin flash file `path` open (a running twin)? None if this
    system has no /proc to tell."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").exists():
        return None
    target = str(Path(path).resolve())
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                try:
                    if os.readlink(fd) == target:
                        return True
                except OSError:
                    continue
        except OSError:
            continue
    return False


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
    ff.write({"/identity/cert.der": cert_der, "/identity/key.der": key_der,
              "/identity/ca.der": (state.pki_dir / pki.CA_DER).read_bytes()})
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
