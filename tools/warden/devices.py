"""Device provisioning: a thing name becomes a registered identity (cert + key) and a twin.

`add_device` is all-or-nothing: the registry insert is the commit point that makes a thing
name ours (it is unique, so of two concurrent adds of one name only one wins, before it writes
any file), and if anything after it fails the row and the device folder are removed again.
"""
from __future__ import annotations

import shutil

from cryptography import x509

from . import pki
from .names import validate_thing
from .registry import Device, Registry, RegistryError
from .state import State, WardenError, write_file, write_private

CERT_FILE = "cert.der"
KEY_FILE = "key.der"


class DeviceError(WardenError):
    pass


def _registry(state: State) -> Registry:
    return Registry(state.registry_path)


def add_device(state: State, thing: str) -> Device:
    """Provision `thing`: issue its certificate and key, register it, write its files, make its twin.

    Files: `devices/<thing>/cert.der` and `key.der` (0600, SEC1 DER). Then
    `warden.twin.provision_twin(state, thing, cert_der, key_der)` builds the device twin.
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
        device = reg.add(thing, pki.fingerprint(cert_der), cert.serial_number,
                         not_after=cert.not_valid_after_utc)
        folder = state.device_dir(thing)
        try:
            write_file(folder / CERT_FILE, cert_der)
            write_private(folder / KEY_FILE, key_der)
            from .twin import provision_twin

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
