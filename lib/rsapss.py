# RSASSA-PSS signature verification (RFC 8017, sections 8.1.2 and 9.1.2) in pure
# MicroPython: SHA-256, MGF1 with SHA-256, a fixed salt length (32 by default).
#
# Strict: the signature must be exactly as long as the modulus, its integer below
# the modulus, and every byte of the encoded message is checked (0xbc trailer,
# the unused top bits zero, the zero padding, the 0x01 separator, the hash over
# the salt). Every check runs on every call and the first failure, in that fixed
# order, is reported, so a caller (or a test) learns precisely what was wrong.
# One pow() in C does the big-number work; the rest touches about 1 KB.
# Verification handles only public data: variable time is acceptable here.
import hashlib

from micropython import const

_HLEN = const(32)


def _mgf1_xor(db, seed):
    """db ^= MGF1-SHA-256(seed, len(db)), in place."""
    n = len(db)
    ctr = bytearray(4)
    i = 0
    c = 0
    while i < n:
        ctr[3] = c & 0xFF
        ctr[2] = (c >> 8) & 0xFF
        h = hashlib.sha256(seed)
        h.update(ctr)
        block = h.digest()
        j = 0
        while j < _HLEN and i < n:
            db[i] ^= block[j]
            i += 1
            j += 1
        c += 1


def verify(modulus, signature, digest, e=65537, salt_len=32):
    """Check an RSASSA-PSS signature over a SHA-256 `digest` with the public key
    (`modulus` as big-endian bytes, exponent `e`). Returns None if the signature
    is valid; raises ValueError with the reason otherwise."""
    k = len(modulus)
    if k < 128 or modulus[0] == 0:
        raise ValueError("rsapss: modulus must be at least 1024 bits, big-endian without leading zeros")
    if len(digest) != _HLEN:
        raise ValueError("rsapss: digest must be a 32-byte SHA-256 hash")
    if len(signature) != k:
        raise ValueError("rsapss: signature is %d bytes, the modulus %d" % (len(signature), k))
    n = int.from_bytes(modulus, "big")
    s = int.from_bytes(signature, "big")
    if s >= n:
        raise ValueError("rsapss: signature representative out of range (s >= n)")
    em = pow(s, e, n).to_bytes(k, "big")
    s = None
    # emBits = modBits - 1: when the modulus' top byte is 1 the encoded message
    # is one byte shorter than the modulus and the leading byte must be zero.
    top = modulus[0]
    mod_bits_top = 0
    while top:
        mod_bits_top += 1
        top >>= 1
    em_bits_top = mod_bits_top - 1  # bits of EM's first byte that may be set
    lead = 0
    if em_bits_top == 0:
        lead = em[0]
        em = memoryview(em)[1:]
        em_bits_top = 8
    em_len = len(em)
    if em_len < _HLEN + salt_len + 2:
        raise ValueError("rsapss: modulus too short for this salt length")
    db_len = em_len - _HLEN - 1
    h = em[db_len:em_len - 1]
    errors = []
    if em[em_len - 1] != 0xBC:
        errors.append("trailer byte is not 0xbc")
    if lead or em[0] >> em_bits_top:
        errors.append("top bits of the encoded message are not zero")
    db = bytearray(em[:db_len])
    _mgf1_xor(db, h)
    db[0] &= 0xFF >> (8 - em_bits_top)
    ps_len = db_len - salt_len - 1
    for i in range(ps_len):
        if db[i]:
            errors.append("padding byte %d is not zero" % i)
            break
    if db[ps_len] != 0x01:
        errors.append("no 0x01 separator before the salt")
    m = hashlib.sha256(b"\x00\x00\x00\x00\x00\x00\x00\x00")
    m.update(digest)
    m.update(memoryview(db)[db_len - salt_len:])
    if m.digest() != bytes(h):
        errors.append("hash does not match (wrong message, salt or key)")
    if errors:
        raise ValueError("rsapss: " + errors[0])
