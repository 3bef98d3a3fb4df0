"""mosquitto.conf rendering and broker helpers (no broker started here)."""
import socket

import pytest

from warden.broker import server as wb
from warden.broker.server import BrokerError, render_config
from warden.state import State


def directives(text):
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def test_config_is_locked_down(tmp_path):
    s = State(tmp_path / "st")
    lines = directives(render_config(s, 18883, as_root=False))
    for needed in ("allow_anonymous false", "persistence false", "set_tcp_nodelay true",
                   "listener 18883 127.0.0.1", "require_certificate true", "use_identity_as_username true",
                   "use_username_as_clientid true", "tls_version tlsv1.2"):
        assert needed in lines, needed
    assert sum(ln.startswith("listener ") for ln in lines) == 1
    paths = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in lines
             if ln.split(" ")[0] in ("cafile", "certfile", "keyfile", "crlfile", "acl_file")}
    assert paths["cafile"].endswith("pki/ca.crt.pem") and paths["crlfile"].endswith("pki/crl.pem")
    assert paths["keyfile"].endswith("pki/broker.key.pem") and paths["acl_file"].endswith("broker/acl")
    assert f"log_dest file {(s.broker_dir / 'mosquitto.log').resolve()}" in lines
    assert "user root" not in lines


def test_user_root_only_as_root(tmp_path):
    s = State(tmp_path)
    assert "user root" in directives(render_config(s, 1883, as_root=True))
    assert "user root" not in directives(render_config(s, 1883, as_root=False))


def test_loopback_only(tmp_path):
    s = State(tmp_path)
    assert "listener 1 ::1" in render_config(s, 1, host="::1")
    for host in ("0.0.0.0", "192.168.1.2", "example.com", ""):
        with pytest.raises(BrokerError):
            render_config(s, 1883, host=host)
    with pytest.raises(BrokerError):
        render_config(s, 0)


def test_free_port_is_bindable():
    port = wb.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_missing_mosquitto_says_how_to_install(monkeypatch):
    monkeypatch.setattr(wb.shutil, "which", lambda name: None)
    monkeypatch.setattr(wb.os, "access", lambda path, mode: False)
    with pytest.raises(BrokerError) as e:
        wb.find_mosquitto()
    assert "make setup" in e.value.hint and "apt-get install mosquitto" in e.value.hint
