# HMAC-SHA-256 (RFC 2104), HKDF-SHA-256 (RFC 5869) and a constant-time compare,
# from hashlib.sha256 alone (the only hash an ESP32 MicroPython build has besides
# SHA-1 and MD5; its hash objects have no copy(), so every MAC hashes the padded
# key again).
from hashlib import sha256


def pads(key):
    """(inner, outer) padded keys for HMAC-SHA-256 with `key` (any length)."""
    if len(key) > 64:
        key = sha256(key).digest()
    ipad = bytearray(64)
    opad = bytearray(64)
    for i in range(len(key)):
        ipad[i] = key[i]
        opad[i] = key[i]
    for i in range(64):
        ipad[i] ^= 0x36
        opad[i] ^= 0x5C
    return bytes(ipad), bytes(opad)


def hmac(key_pads, *parts):
    """HMAC-SHA-256 of the concatenation of `parts` under pads(key)."""
    h = sha256(key_pads[0])
    for p in parts:
        h.update(p)
    o = sha256(key_pads[1])
    o.update(h.digest())
    return o.digest()


def hmac_sha256(key, msg):
    return hmac(pads(key), msg)


def hkdf(ikm, salt, info, length=32):
    """HKDF-SHA-256: extract with `salt` (b"" means 32 zero bytes), expand with `info`."""
    if length > 255 * 32:
        raise ValueError("hkdf: length too large")
    prk = hmac_sha256(salt or bytes(32), ikm)
    p = pads(prk)
    out = b""
    t = b""
    i = 1
    while len(out) < length:
        t = hmac(p, t, info, bytes((i,)))
        out += t
        i += 1
    return out[:length]


def equal(a, b):
    """True if a == b, in time that depends only on the lengths (no early exit on a mismatch)."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0
