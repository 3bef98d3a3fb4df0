"""The device registry (SQLite)."""
import datetime as dt
import sqlite3
import stat

import pytest

from warden.fleet.registry import SCHEMA_VERSION, Registry, RegistryError


def test_add_get_list(tmp_path):
    with Registry(tmp_path / "r.sqlite") as reg:
        d = reg.add("twin-002", "ab" * 32, 0x1234, not_after=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
        reg.add("twin-001", "cd" * 32, "ff")
        assert d.thing == "twin-002" and d.status == "active" and d.serial == "1234"
        assert d.role == "device" and d.counter == 0 and d.log_key is None and d.version is None
        assert d.not_after == "2030-01-01T00:00:00+00:00" and d.created.endswith("+00:00")
        assert [x.thing for x in reg.list()] == ["twin-001", "twin-002"]
        assert reg.get("nope") is None and "twin-001" in reg
        assert "log_key" not in d.public_dict()


def test_duplicate_is_a_clear_error(tmp_path):
    with Registry(tmp_path / "r.sqlite") as reg:
        reg.add("twin-001", "ab" * 32, 1)
        with pytest.raises(RegistryError) as e:
            reg.add("twin-001", "cd" * 32, 2)
        assert "already registered" in str(e.value) and e.value.hint
        assert reg.get("twin-001").fingerprint == "ab" * 32
        assert len(reg.list()) == 1


def test_status_update_and_remove(tmp_path):
    with Registry(tmp_path / "r.sqlite") as reg:
        reg.add("a", "00", 1)
        reg.add("b", "11", 2)
        assert reg.set_status("a", "revoked").status == "revoked"
        assert [d.thing for d in reg.list("active")] == ["b"]
        with pytest.raises(RegistryError):
            reg.set_status("a", "lost")
        with pytest.raises(RegistryError):
            reg.set_status("zz", "revoked")
        d = reg.update("b", version="1.2.0", counter=3, log_key=b"\x01" * 32)
        assert (d.version, d.counter, d.log_key) == ("1.2.0", 3, b"\x01" * 32)
        with pytest.raises(RegistryError):
            reg.update("b", status="revoked")   # status has its own method
        assert reg.remove("b") and not reg.remove("b")


def test_reopen_is_harmless_and_versioned(tmp_path):
    path = tmp_path / "r.sqlite"
    with Registry(path) as reg:
        reg.add("a", "00", 1)
    with Registry(path) as reg, Registry(path) as other:
        assert reg.schema_version == SCHEMA_VERSION
        assert [d.thing for d in other.list()] == ["a"]
        reg.add("b", "11", 2)
        assert other.get("b") is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    Registry(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(RegistryError) as e:
        Registry(path)
    assert "newer" in str(e.value)


def test_not_a_database(tmp_path):
    path = tmp_path / "r.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryError):
        Registry(path)
