# The checks of an update's manifest, in the order of docs/design.md, "Signed updates": size bound, structure,
# algorithm, trusted key (prepare), then, once firmware/ota.py has checked the RSA-PSS
# signature with lib/rsapss.py, target, kind and security counter (policy).
# Loaded by firmware/ota.py for begin() only, and unloaded during the signature check
# (the heap peak of an update).
import struct
from binascii import hexlify

from micropython import const

from firmware.ota import OTAError
from firmware.ota_state import installed

MANIFEST_MAX = const(512)
_SIG = const(384)
ALG = "rsa3072-pss-sha256"
KEYS = "/keys/"


def parse(m):
    """Fields of a manifest (alg, key id, kind, target, version, counter, size, sha256), strictly."""
    if len(m) > MANIFEST_MAX:
        raise OTAError("manifest oversized: %d bytes > %d" % (len(m), MANIFEST_MAX))
    if m[:4] != b"WMF1":
        raise OTAError("manifest malformed: no WMF1 header")
    pos = 4
    v = []
    for tag in range(1, 9):
        if pos + 2 > len(m):
            raise OTAError("manifest malformed: ends before field %d" % tag)
        if m[pos] != tag:
            raise OTAError("manifest malformed: field %d where %d belongs" % (m[pos], tag))
        n = m[pos + 1]
        if pos + 2 + n > len(m):
            raise OTAError("manifest malformed: field %d runs past the end" % tag)
        v.append(bytes(m[pos + 2:pos + 2 + n]))
        pos += 2 + n
    if pos != len(m):
        raise OTAError("manifest malformed: %d bytes after the last field" % (len(m) - pos))
    for i, want in ((1, 8), (5, 4), (6, 4), (7, 32)):
        if len(v[i]) != want:
            raise OTAError("manifest malformed: field %d is %d bytes, not %d" % (i + 1, len(v[i]), want))
    for i in (0, 2, 3, 4):
        if not v[i] or any(c < 0x21 or c > 0x7E for c in v[i]):
            raise OTAError("manifest malformed: field %d is not printable ASCII" % (i + 1))
        v[i] = v[i].decode()
    v[5] = struct.unpack(">I", v[5])[0]
    v[6] = struct.unpack(">I", v[6])[0]
    return v


def _key(kid):
    """(modulus, e) of trusted key `kid` from /keys/<key id>.pk."""
    name = hexlify(kid).decode()
    try:
        with open(KEYS + name + ".pk", "rb") as f:
            d = f.read()
    except OSError:
        raise OTAError("unknown signing key " + name)
    if len(d) != 18 + _SIG or d[:4] != b"WPK1" or d[4:12] != kid or d[16:18] != b"\x01\x80":
        raise OTAError("trusted key %s%s.pk is corrupt or not RSA-3072" % (KEYS, name))
    return d[18:], struct.unpack(">I", d[12:16])[0]


def prepare(m, sig):
    """Before the signature: (fields, modulus, e) of manifest `m`; OTAError at the first failure."""
    f = parse(m)
    if f[0] != ALG:
        raise OTAError("unsupported algorithm %r" % f[0])
    n, e = _key(f[1])
    if len(sig) != _SIG:
        raise OTAError("bad signature: %d bytes, an RSA-3072 signature is %d" % (len(sig), _SIG))
    return f, n, e


def policy(f, target, kind):
    """After the signature: target, kind and security counter of the signed fields `f`."""
    if f[3] != target:
        raise OTAError("wrong target: the update is for %r, this device is %r" % (f[3], target))
    if f[2] not in ("app", "firmware", "keys"):
        raise OTAError("wrong kind: %r is not app, firmware or keys" % f[2])
    if kind is not None and f[2] != kind:
        raise OTAError("wrong kind: the update is %r, expected %r" % (f[2], kind))
    try:
        have = installed(f[2])[0]
    except ValueError as e:   # a corrupt anti-replay state: nothing is installed until re-provisioned
        raise OTAError(e.args[0])
    if f[5] == have:
        raise OTAError("counter %d is not newer than the installed %d (replay)" % (f[5], have))
    if f[5] < have:
        raise OTAError("downgrade: counter %d is lower than the installed %d" % (f[5], have))
