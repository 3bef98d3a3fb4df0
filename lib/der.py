# A minimal DER reader for X.509 certificates and private keys on MicroPython.
#
# Enough to check a device identity before any TLS: the subject CN, the validity
# dates, and the public key in a certificate, and the public part of a SEC1 EC or
# PKCS#1 RSA private key, so that "key matches certificate" is checked on the
# device itself (mbedTLS here does not check the pair at load time).
# Everything is bounds-checked: malformed input raises ValueError, never IndexError.

_OID_CN = b"\x55\x04\x03"


def read_tlv(buf, pos, end=None):
    """Parse one TLV at `pos`; returns (tag, value_start, value_end). Lengths are bounded by `end`."""
    if end is None:
        end = len(buf)
    if pos + 2 > end:
        raise ValueError("DER: truncated at %d" % pos)
    tag = buf[pos]
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 3 or pos + k > end:
            raise ValueError("DER: bad length at %d" % (pos - 1))
        n = 0
        for i in range(k):
            n = (n << 8) | buf[pos + i]
        pos += k
    if pos + n > end:
        raise ValueError("DER: value overruns its container at %d" % pos)
    return tag, pos, pos + n


def children(buf, start, end):
    """The (tag, start, end) of each TLV inside a constructed value."""
    out = []
    pos = start
    while pos < end:
        t = read_tlv(buf, pos, end)
        out.append(t)
        pos = t[2]
    return out


def _expect(t, tag, what):
    if t[0] != tag:
        raise ValueError("DER: %s: expected tag 0x%02x, found 0x%02x" % (what, tag, t[0]))
    return t


def _time(buf, t):
    # UTCTime YYMMDDHHMMSSZ (years 1950-2049) or GeneralizedTime YYYYMMDDHHMMSSZ.
    s = bytes(buf[t[1]:t[2]])
    if t[0] == 0x17 and len(s) == 13:
        y = int(s[0:2])
        y += 2000 if y < 50 else 1900
        s = s[2:]
    elif t[0] == 0x18 and len(s) == 15:
        y = int(s[0:4])
        s = s[4:]
    else:
        raise ValueError("DER: unsupported time encoding")
    if s[-1:] != b"Z":
        raise ValueError("DER: time is not UTC")
    return (y, int(s[0:2]), int(s[2:4]), int(s[4:6]), int(s[6:8]), int(s[8:10]))


def days_from_civil(y, m, d):
    """Days since 1970-01-01 for a proleptic Gregorian date (no time module needed)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def to_unix(t):
    y, mo, d, h, mi, s = t
    return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s


class Certificate:
    """The fields of an X.509 certificate the device checks. `der` is kept as given."""

    def __init__(self, der):
        self.der = der
        cert = _expect(read_tlv(der, 0), 0x30, "certificate")
        if cert[2] != len(der):
            raise ValueError("DER: trailing bytes after the certificate")
        tbs = _expect(children(der, cert[1], cert[2])[0], 0x30, "tbsCertificate")
        f = children(der, tbs[1], tbs[2])
        i = 1 if f and f[0][0] == 0xA0 else 0  # optional [0] version
        if len(f) < i + 6:
            raise ValueError("DER: tbsCertificate has too few fields")
        serial = _expect(f[i], 0x02, "serial")
        self.serial = bytes(der[serial[1]:serial[2]])
        validity = children(der, *_expect(f[i + 3], 0x30, "validity")[1:])
        if len(validity) != 2:
            raise ValueError("DER: validity must hold two times")
        self.not_before = to_unix(_time(der, validity[0]))
        self.not_after = to_unix(_time(der, validity[1]))
        self.subject_cn = _find_cn(der, _expect(f[i + 4], 0x30, "subject"))
        spki = _expect(f[i + 5], 0x30, "subjectPublicKeyInfo")
        parts = children(der, spki[1], spki[2])
        if len(parts) != 2:
            raise ValueError("DER: bad subjectPublicKeyInfo")
        algo = children(der, parts[0][1], parts[0][2])
        self.key_oid = bytes(der[algo[0][1]:algo[0][2]])
        bits = _expect(parts[1], 0x03, "subjectPublicKey")
        # BIT STRING: first byte counts unused bits (0 for keys)
        self.public_key = bytes(der[bits[1] + 1:bits[2]])


def _find_cn(der, name):
    for rdn in children(der, name[1], name[2]):
        for atv in children(der, rdn[1], rdn[2]):
            oid, val = children(der, atv[1], atv[2])[:2]
            if bytes(der[oid[1]:oid[2]]) == _OID_CN:
                return bytes(der[val[1]:val[2]]).decode()
    return None


def private_key_public_part(der):
    """The public key that a DER private key carries, in the form a certificate stores it.

    SEC1 ECPrivateKey: the [1] publicKey BIT STRING (an uncompressed point).
    PKCS#1 RSAPrivateKey: the RSAPublicKey SEQUENCE { n, e } re-encoded.
    Raises ValueError for other formats (PKCS#8, or SEC1 without its public key).
    """
    seq = _expect(read_tlv(der, 0), 0x30, "private key")
    f = children(der, seq[1], seq[2])
    if len(f) >= 3 and f[1][0] == 0x04:  # SEC1: version, privateKey OCTET STRING, [0] params?, [1] publicKey?
        for t in f[2:]:
            if t[0] == 0xA1:
                bits = _expect(read_tlv(der, t[1], t[2]), 0x03, "EC publicKey")
                return bytes(der[bits[1] + 1:bits[2]])
        raise ValueError("EC private key has no public key: store it in SEC1 form with the public key")
    if len(f) >= 3 and f[1][0] == 0x02 and f[2][0] == 0x02:  # PKCS#1: version, n, e, ...
        return _rsa_public(bytes(der[f[1][1]:f[1][2]]), bytes(der[f[2][1]:f[2][2]]))
    raise ValueError("unsupported private key format: use SEC1 EC or PKCS#1 RSA DER")


def _len(n):
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82, n >> 8, n & 0xFF])


def _rsa_public(n, e):
    body = b"\x02" + _len(len(n)) + n + b"\x02" + _len(len(e)) + e
    return b"\x30" + _len(len(body)) + body
