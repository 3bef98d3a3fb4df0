"""Certificates for tests, made at test time with `cryptography` (no key is ever committed)."""
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

NOW = dt.datetime.now(dt.timezone.utc)


def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key(bits=2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_cert(cn, key, issuer_key=None, issuer_cn=None, *, ca=False, not_before=None, not_after=None):
    issuer_key = issuer_key or key
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn or cn)]))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before or NOW - dt.timedelta(days=1))
         .not_valid_after(not_after or NOW + dt.timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return b.sign(issuer_key, hashes.SHA256())


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def key_der(key, fmt="traditional"):
    f = serialization.PrivateFormat.TraditionalOpenSSL if fmt == "traditional" else serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.DER, f, serialization.NoEncryption())
