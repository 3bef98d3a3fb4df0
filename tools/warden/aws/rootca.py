"""The Amazon root CAs a device trusts when its broker is AWS IoT Core, from the certifi bundle.

AWS IoT's ATS endpoints (`...-ats.iot.<region>.amazonaws.com`) present certificates that chain to
Amazon Root CA 1 (RSA 2048) or, to a client offering only ECDSA, Amazon Root CA 3 (EC P-256);
Amazon Root CA 2 and 4 are their RSA 4096 and P-384 successors. They are taken from the certifi
package (Mozilla's CA bundle, pinned in requirements.txt, updated with it), picked by subject, and
given to the device as DER (its TLS parses DER only). Nothing is downloaded at run time.
"""
from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ..errors import WardenError

NAMES = ("Amazon Root CA 1", "Amazon Root CA 2", "Amazon Root CA 3", "Amazon Root CA 4")


class RootCaError(WardenError):
    hint = "reinstall the pinned certifi (make venv)"


def _subject(cert, oid):
    values = cert.subject.get_attributes_for_oid(oid)
    return values[0].value if values else None


def amazon_roots() -> dict:
    """{name: DER bytes} of Amazon Root CA 1-4, in that order."""
    try:
        import certifi
    except ImportError:
        raise RootCaError("certifi is not installed") from None
    import warnings

    with open(certifi.where(), "rb") as f:
        data = f.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # other roots of the bundle have odd serials: not ours
        certs = x509.load_pem_x509_certificates(data)
    found = {}
    for cert in certs:
        cn = _subject(cert, NameOID.COMMON_NAME)
        if cn in NAMES and _subject(cert, NameOID.ORGANIZATION_NAME) == "Amazon" and \
                _subject(cert, NameOID.COUNTRY_NAME) == "US" and cert.subject == cert.issuer:
            found[cn] = cert.public_bytes(serialization.Encoding.DER)
    missing = [n for n in NAMES if n not in found]
    if missing:
        raise RootCaError(f"the CA bundle {certifi.where()} lacks {', '.join(missing)}")
    return {n: found[n] for n in NAMES}
