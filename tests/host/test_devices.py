"""Device provisioning through the library (the twin build is stubbed: tested with the twin)."""
import stat
import sys
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from warden.fleet import devices, pki
from warden.fleet.registry import RegistryError
from warden.state import State


@pytest.fixture
def twin_calls(monkeypatch):
    """Replace warden.board.twin.provision_twin with a recorder (a stub module if twin is missing)."""
    calls = []

    def provision_twin(state, thing, cert_der, key_der, config=None):
        calls.append((state, thing, cert_der, key_der))

    try:
        import warden.board.twin as twin
    except ImportError:
        twin = types.ModuleType("warden.board.twin")
        monkeypatch.setitem(sys.modules, "warden.board.twin", twin)
    monkeypatch.setattr(twin, "provision_twin", provision_twin, raising=False)
    return calls


@pytest.fixture
def state(tmp_path):
    s = State(tmp_path / "st")
    pki.init_pki(s)
    return s


def test_add_device(state, twin_calls):
    dev = devices.add_device(state, "twin-001")
    folder = state.device_dir("twin-001")
    cert_der = (folder / "cert.der").read_bytes()
    key_der = (folder / "key.der").read_bytes()
    assert stat.S_IMODE((folder / "key.der").stat().st_mode) == 0o600
    cert = x509.load_der_x509_certificate(cert_der)
    assert dev.fingerprint == pki.fingerprint(cert_der)
    assert dev.serial == format(cert.serial_number, "x") and dev.status == "active"
    assert serialization.load_der_private_key(key_der, None).public_key() == cert.public_key()
    assert twin_calls == [(state, "twin-001", cert_der, key_der)]
    assert [d.thing for d in devices.list_devices(state)] == ["twin-001"]
    assert devices.get_device(state, "twin-001") == dev


def test_duplicate_is_refused_before_making_keys(state, twin_calls, monkeypatch):
    devices.add_device(state, "twin-001")
    before = (state.device_dir("twin-001") / "cert.der").read_bytes()

    def no_keys(*a, **k):
        raise AssertionError("keys were made for a duplicate")

    monkeypatch.setattr(pki, "issue_device_cert", no_keys)
    with pytest.raises(RegistryError) as e:
        devices.add_device(state, "twin-001")
    assert "already registered" in str(e.value)
    assert (state.device_dir("twin-001") / "cert.der").read_bytes() == before
    assert len(twin_calls) == 1


def test_invalid_name(state, twin_calls):
    with pytest.raises(ValueError):
        devices.add_device(state, "operator.default")
    assert devices.list_devices(state) == [] and twin_calls == []


def test_failure_after_registering_leaves_nothing(state, twin_calls, monkeypatch):
    import warden.board.twin as twin

    def broken(*a, **k):
        raise RuntimeError("twin build failed")

    monkeypatch.setattr(twin, "provision_twin", broken)
    with pytest.raises(RuntimeError):
        devices.add_device(state, "twin-009")
    assert devices.list_devices(state) == []
    assert not state.device_dir("twin-009").exists()
    monkeypatch.setattr(twin, "provision_twin", lambda *a, **k: None)
    assert devices.add_device(state, "twin-009").thing == "twin-009"


def test_without_pki(tmp_path, twin_calls):
    with pytest.raises(pki.PkiError):
        devices.add_device(State(tmp_path / "empty"), "twin-001")
    assert devices.list_devices(State(tmp_path / "empty")) == []


def test_get_unknown_device(state):
    with pytest.raises(devices.DeviceError):
        devices.get_device(state, "nope")
