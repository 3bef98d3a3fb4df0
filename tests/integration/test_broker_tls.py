"""The broker's TLS listener: TLS 1.2 at least, and only AEAD suites with forward secrecy (ECDHE).

Real mosquitto (the `broker` fixture), CPython ssl clients that present a valid device
certificate, so that a refusal can only come from the protocol version or the cipher suite.

A negative test passes only if the broker refuses a client that is itself willing: each client
configuration is first proven against `permissive_server` (an in-process ssl server with the same
certificate that accepts everything down to TLS 1.0 and any suite), and the broker's refusal must be
a TLS alert it sent, not an error of the client's own making. The positive tests complete an MQTT
CONNECT, so they also fail if the broker refused the session after a TLS 1.3 handshake (where the
client finishes its side before the server has checked the client certificate).

Measured on this listener (restricted as in tools/warden/broker/server.py): the device
(MicroPython's tls, Mbed TLS 3.6.6, TLS 1.2 only, no ChaCha20) gets TLSv1.2
ECDHE-ECDSA-AES128-GCM-SHA256 over secp256r1; CPython/paho (OpenSSL 3.0) gets TLSv1.3
TLS_AES_128_GCM_SHA256 over x25519.
"""
import socket
import ssl
import struct
import threading

import pytest

from warden.fleet import pki

# The TLS 1.0/1.1 clients below are deliberate: they are what the broker must refuse.
pytestmark = pytest.mark.filterwarnings(r"ignore:ssl\.TLSVersion\.TLSv1.* is deprecated:DeprecationWarning")

AEAD_TLS12 = {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
              "ECDHE-ECDSA-CHACHA20-POLY1305"}
AEAD_TLS13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
TIMEOUT = 5.0
ANYTHING = "ALL:@SECLEVEL=0"   # OpenSSL 3 hides TLS < 1.2 and SHA-1 suites above security level 0


def mqtt_connect_packet(client_id: bytes) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, keepalive 30."""
    body = b"\x00\x04MQTT\x04\x02\x00\x1e" + struct.pack(">H", len(client_id)) + client_id
    return bytes([0x10, len(body)]) + body


@pytest.fixture(scope="module")
def identity(pki_state, tmp_path_factory):
    """A device certificate (PEM files) from the fleet CA, and the CA."""
    from cryptography.hazmat.primitives import serialization
    cert_der, key_der = pki.issue_device_cert(pki_state, "tls-probe")
    d = tmp_path_factory.mktemp("tls-probe")
    key = serialization.load_der_private_key(key_der, password=None)
    (d / "cert.pem").write_bytes(pki.cert_pem(pki.load_cert(cert_der)))
    (d / "key.pem").write_bytes(pki.key_pem(key))
    return pki_state.pki_dir / pki.CA_CERT, d / "cert.pem", d / "key.pem"


def client_context(identity, *, min_version=None, max_version=None, ciphers=None):
    ca, cert, key = identity
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    if ciphers:
        ctx.set_ciphers(ciphers)
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def handshake(ctx, port, *, mqtt=True):
    """TLS handshake with 127.0.0.1:`port` (then an MQTT CONNECT if `mqtt`): (version, cipher)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            got = (s.version(), s.cipher()[0])
            if mqtt:
                s.sendall(mqtt_connect_packet(b"tls-probe"))
                connack = s.recv(4)
                assert connack == b"\x20\x02\x00\x00", f"no CONNACK accepted: {connack!r}"
            return got


@pytest.fixture(scope="module")
def permissive_server(pki_state):
    """An ssl server on loopback with the broker's certificate that accepts any version >= TLS 1.0
    and any suite, and asks for (but does not check) a client certificate: the control that
    proves a client configuration really offers what the broker must refuse."""
    _ca, cert, key, _crl = pki.broker_paths(pki_state)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers(ANYTHING)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(TIMEOUT)
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        t.join(2)
        listener.close()


def assert_refused_by_broker(ctx, broker, alert):
    """The handshake fails with the TLS alert `alert` from the broker. A client-side error (no
    protocol or suite available, an untrusted server) or a refused client certificate (another
    alert) would prove nothing about the version or the suite."""
    with pytest.raises(ssl.SSLError) as exc:
        handshake(ctx, broker.port, mqtt=False)
    assert alert in str(exc.value), exc.value


# -- refused -----------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_below_1_2_is_refused(broker, identity, permissive_server, version):
    v = getattr(ssl.TLSVersion, version)
    ctx = client_context(identity, min_version=v, max_version=v, ciphers=ANYTHING)
    # the client really speaks it
    assert handshake(ctx, permissive_server, mqtt=False)[0] == version.replace("_", ".")
    assert_refused_by_broker(ctx, broker, "TLSV1_ALERT_PROTOCOL_VERSION")


@pytest.mark.parametrize("suite", [
    "ECDHE-ECDSA-AES128-SHA",       # CBC, HMAC-SHA1
    "ECDHE-ECDSA-AES256-SHA",       # CBC, HMAC-SHA1
    "ECDHE-ECDSA-AES128-SHA256",    # CBC, HMAC-SHA256: not AEAD either
    "ECDHE-ECDSA-AES256-SHA384",    # CBC, HMAC-SHA384
])
def test_tls12_cbc_suites_are_refused(broker, identity, permissive_server, suite):
    ctx = client_context(identity, max_version=ssl.TLSVersion.TLSv1_2, ciphers=suite + ":@SECLEVEL=0")
    assert handshake(ctx, permissive_server, mqtt=False) == ("TLSv1.2", suite)
    assert_refused_by_broker(ctx, broker, "SSLV3_ALERT_HANDSHAKE_FAILURE")   # no shared suite


# -- accepted ----------------------------------------------------------------------------------
@pytest.mark.parametrize("suite", sorted(AEAD_TLS12))
def test_tls12_aead_suites_are_accepted(broker, identity, suite):
    ctx = client_context(identity, max_version=ssl.TLSVersion.TLSv1_2, ciphers=suite)
    assert handshake(ctx, broker.port) == ("TLSv1.2", suite)


def test_tls12_client_offering_everything_gets_an_aead_suite(broker, identity):
    """A TLS 1.2 client offering every suite (as the device does: it also offers CBC ones)."""
    ctx = client_context(identity, max_version=ssl.TLSVersion.TLSv1_2, ciphers=ANYTHING)
    version, cipher = handshake(ctx, broker.port)
    assert version == "TLSv1.2" and cipher in AEAD_TLS12, cipher


def test_default_client_gets_tls13_aead(broker, identity):
    """What paho (CPython ssl, default settings) negotiates."""
    ctx = client_context(identity)
    version, cipher = handshake(ctx, broker.port)
    assert version == "TLSv1.3" and cipher in AEAD_TLS13, (version, cipher)
