# The device's identity: its certificate, private key and the fleet CA, in DER.
# A device whose broker is AWS IoT Core trusts Amazon's roots instead: ca.der then holds
# Amazon Root CA 1-4, DER certificates back to back (docs/aws.md), each added to the TLS
# context's trust store; a single certificate (the fleet CA) costs nothing more.
#
# Kept under /identity/, which neither OTA nor a redeploy overwrites. Checked at
# boot before any network traffic: every file present and parseable, the key is
# the certificate's key, the CN is the configured thing name, and the
# certificate is valid now. Each failure raises IdentityError saying what to do.
import der

DIR = "/identity/"
CERT = DIR + "cert.der"
KEY = DIR + "key.der"
CA = DIR + "ca.der"

_CLOCK_SANE = 1704067200  # 2024-01-01: before this the clock was never set
EXPIRY_WARNING_DAYS = 30


class IdentityError(Exception):
    pass


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise IdentityError("identity: %s (%s) is missing: provision the device" % (what, path))


class Identity:
    def __init__(self, cert_der, key_der, ca_der, cert):
        self.cert_der = cert_der
        self.key_der = key_der
        self.ca_der = ca_der
        self.cert = cert
        self.thing = cert.subject_cn

    def days_left(self, now):
        return (self.cert.not_after - now) // 86400

    def load_into(self, ctx):
        """Make `ctx`, a tls.SSLContext(PROTOCOL_TLS_CLIENT), require and check the broker's
        certificate (fleet CA) and present ours. The caller makes the context: it is one ~3 KB
        block, best allocated early. tls rather than ssl: the ssl module is a Python wrapper
        that would stay loaded for the device's life."""
        import tls
        # PROTOCOL_TLS_CLIENT starts as CERT_NONE in MicroPython (docs/design.md, "Measured facts"):
        # without this line any server would be accepted.
        ctx.verify_mode = tls.CERT_REQUIRED
        ca = self.ca_der
        i = 0
        while i < len(ca):   # mbedTLS takes one DER certificate per call and adds it to the chain
            end = der.read_tlv(ca, i)[2]
            ctx.load_verify_locations(ca if end - i == len(ca) else ca[i:end])
            i = end
        ctx.load_cert_chain(self.cert_der, self.key_der)


def load(thing, now):
    """Load and check the identity for `thing` at Unix time `now`."""
    cert_der = _read(CERT, "device certificate")
    key_der = _read(KEY, "device private key")
    ca_der = _read(CA, "fleet CA certificate")
    try:
        cert = der.Certificate(cert_der)
    except ValueError as e:
        raise IdentityError("identity: device certificate is not valid DER X.509 (%s)" % e)
    try:
        i = 0
        while i < len(ca_der):
            end = der.read_tlv(ca_der, i)[2]
            der.Certificate(ca_der if end - i == len(ca_der) else ca_der[i:end])
            i = end
    except ValueError as e:
        raise IdentityError("identity: fleet CA is not valid DER X.509 (%s)" % e)
    try:
        pub = der.private_key_public_part(key_der)
    except ValueError as e:
        raise IdentityError("identity: private key: %s" % e)
    if pub != cert.public_key:
        raise IdentityError("identity: the private key does not belong to the certificate: reprovision the device")
    if cert.subject_cn != thing:
        raise IdentityError("identity: certificate is for %r but the config names %r" % (cert.subject_cn, thing))
    if now < _CLOCK_SANE:
        raise IdentityError("identity: the clock is not set (%d): certificate dates cannot be checked" % now)
    if now < cert.not_before:
        raise IdentityError("identity: certificate is not valid yet (check the clock)")
    if now >= cert.not_after:
        raise IdentityError("identity: certificate expired: issue a new one (warden device rotate)")
    return Identity(cert_der, key_der, ca_der, cert)
