"""lib/rsapss.py under the real micropython against signatures made by `cryptography` (OpenSSL).

Valid signatures must pass; every padding and length defect must be refused with the
reason for that defect. Defective signatures are made by encoding EM ourselves and
computing s = EM^d mod n with the private key's numbers, so each defect is exactly one
change to an otherwise valid encoding.
"""
import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from support.devrun import MP, ROOT, run_mp

MSG = b"warden manifest under test"


def _key(bits):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@pytest.fixture(scope="module")
def keys():
    return {"main": _key(3072), "other": _key(3072), "odd": _key(3073), "small": _key(2048)}


def _mgf1(seed, length):
    out = b""
    c = 0
    while len(out) < length:
        out += hashlib.sha256(seed + c.to_bytes(4, "big")).digest()
        c += 1
    return out[:length]


def _encode(mhash, mod_bits, salt=None, *, salt_len=32, trailer=0xBC, set_top=False, pad_byte=None,
            separator=0x01):
    """EMSA-PSS-ENCODE with knobs for one defect at a time."""
    em_bits = mod_bits - 1
    em_len = (em_bits + 7) // 8
    salt = os.urandom(salt_len) if salt is None else salt
    h = hashlib.sha256(b"\0" * 8 + mhash + salt).digest()
    ps = bytearray(em_len - len(salt) - 32 - 2)
    if pad_byte is not None:
        ps[pad_byte] = 0x01
    db = bytes(ps) + bytes([separator]) + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1(h, len(db))))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    if set_top:
        masked[0] |= 0x80 >> (8 * em_len - em_bits - 1) if 8 * em_len - em_bits else 0
    return bytes(masked) + h + bytes([trailer])


def _raw_sign(key, em):
    pn = key.private_numbers()
    n = pn.public_numbers.n
    m = int.from_bytes(em, "big")
    assert m < n, "crafted EM is not below n"
    k = (n.bit_length() + 7) // 8
    return pow(m, pn.d, n).to_bytes(k, "big")


def _modulus(key):
    n = key.public_key().public_numbers().n
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def _pss(key, salt_len=32, hash_alg=None, mgf_hash=None, msg=MSG):
    hash_alg = hash_alg or hashes.SHA256()
    return key.sign(msg, padding.PSS(mgf=padding.MGF1(mgf_hash or hashes.SHA256()), salt_length=salt_len), hash_alg)


def _vectors(keys):
    k = keys["main"]
    n = _modulus(k)
    bits = k.key_size
    mh = hashlib.sha256(MSG).digest()
    ok = None  # expected reason None = valid
    v = []

    def add(name, sig, reason, key=k, digest=mh):
        v.append({"name": name, "n": _modulus(key).hex(), "sig": sig.hex(), "digest": digest.hex(),
                  "expect": reason})

    # valid ones
    add("valid-cryptography", _pss(k), ok)
    add("valid-cryptography-2", _pss(k, msg=b"another"), ok, digest=hashlib.sha256(b"another").digest())
    add("valid-own-encoder", _raw_sign(k, _encode(mh, bits)), ok)
    add("valid-3073-bit-modulus", _pss(keys["odd"]), ok, key=keys["odd"])
    add("valid-2048-bit-key", _pss(keys["small"]), ok, key=keys["small"])
    # padding defects (one at a time)
    add("trailer-0xbd", _raw_sign(k, _encode(mh, bits, trailer=0xBD)), "trailer byte is not 0xbc")
    add("trailer-0x00", _raw_sign(k, _encode(mh, bits, trailer=0x00)), "trailer byte is not 0xbc")
    for _ in range(64):  # the top bit set must still leave EM < n
        em = _encode(mh, bits, set_top=True)
        if int.from_bytes(em, "big") < k.public_key().public_numbers().n:
            break
    add("top-bit-set", _raw_sign(k, em), "top bits of the encoded message are not zero")
    add("padding-byte-0-nonzero", _raw_sign(k, _encode(mh, bits, pad_byte=0)), "padding byte 0 is not zero")
    add("padding-byte-200-nonzero", _raw_sign(k, _encode(mh, bits, pad_byte=200)), "padding byte 200 is not zero")
    add("last-padding-byte-nonzero", _raw_sign(k, _encode(mh, bits, pad_byte=384 - 32 - 32 - 3)),
        "padding byte 317 is not zero")
    add("separator-missing-0x00", _raw_sign(k, _encode(mh, bits, separator=0x00)), "no 0x01 separator")
    add("separator-0x02", _raw_sign(k, _encode(mh, bits, separator=0x02)), "no 0x01 separator")
    # salt length other than 32: the separator lands elsewhere
    add("salt-20-cryptography", _pss(k, salt_len=20), "no 0x01 separator")
    add("salt-0-cryptography", _pss(k, salt_len=0), "no 0x01 separator")
    add("salt-64-cryptography", _pss(k, salt_len=64), "padding byte")
    add("salt-max-cryptography", _pss(k, salt_len=padding.PSS.MAX_LENGTH), "padding byte")
    add("salt-31-own", _raw_sign(k, _encode(mh, bits, salt_len=31)), "no 0x01 separator")
    add("salt-33-own", _raw_sign(k, _encode(mh, bits, salt_len=33)), "padding byte")
    # wrong hash: other message, other hash algorithms, other MGF hash
    add("other-message", _pss(k, msg=b"altered"), "hash does not match")
    add("sha384-hash", _pss(k, hash_alg=hashes.SHA384(), mgf_hash=hashes.SHA384(), salt_len=32), "")
    add("mgf1-sha1", _pss(k, mgf_hash=hashes.SHA1()), "")
    add("digest-of-other-message", _pss(k), "hash does not match", digest=hashlib.sha256(b"x").digest())
    add("pkcs1v15-signature", k.sign(MSG, padding.PKCS1v15(), hashes.SHA256()), "")
    # wrong key
    add("other-key", _pss(keys["other"]), "")
    add("other-key-claimed", _pss(k), "", key=keys["other"])
    # length and range defects
    good = _pss(k)
    nint = k.public_key().public_numbers().n
    add("short-signature", good[1:], "signature is 383 bytes, the modulus 384")
    add("long-signature-leading-zero", b"\x00" + good, "signature is 385 bytes, the modulus 384")
    add("long-signature-trailing-zero", good + b"\x00", "signature is 385 bytes, the modulus 384")
    add("empty-signature", b"", "signature is 0 bytes")
    add("s-equals-n", n, "out of range (s >= n)")
    add("s-n-plus-1", (nint + 1).to_bytes(384, "big"), "out of range (s >= n)")
    add("s-all-ff", b"\xff" * 384, "out of range (s >= n)")
    add("s-zero", bytes(384), "trailer byte is not 0xbc")
    add("s-one", (1).to_bytes(384, "big"), "trailer byte is not 0xbc")
    add("s-n-minus-1", (nint - 1).to_bytes(384, "big"), "")
    flipped = bytearray(good)
    flipped[100] ^= 0x04
    add("bit-flip", bytes(flipped), "")
    return v


def _run(tmp_path, vectors):
    vf = tmp_path / "vectors.csv"
    vf.write_text("".join("%s,%s,%s,%s\n" % (v["name"], v["n"], v["sig"], v["digest"]) for v in vectors))
    r = run_mp(script=MP / "rsapss_vectors.py", args=[vf], path=[ROOT / "lib"])
    assert r.returncode == 0, r.stdout + r.stderr
    out = {}
    for line in r.stdout.splitlines():
        name, _, rest = line.partition(" ")
        out[name] = rest
    return out


def test_every_vector_gets_the_right_verdict_and_reason(keys, tmp_path):
    vectors = _vectors(keys)
    out = _run(tmp_path, vectors)
    assert set(out) == {v["name"] for v in vectors}
    for v in vectors:
        got = out[v["name"]]
        if v["expect"] is None:
            assert got == "OK", "%s: valid signature refused: %s" % (v["name"], got)
        else:
            assert got.startswith("REFUSED rsapss: "), "%s: defective signature accepted (%s)" % (v["name"], got)
            assert v["expect"] in got, "%s: wrong reason %r (wanted %r)" % (v["name"], got, v["expect"])


def test_cryptography_agrees_on_the_crafted_vectors(keys):
    """Our crafted encodings are what OpenSSL means by valid and invalid: it accepts the
    valid own-encoder signature and refuses each crafted defect."""
    from cryptography.exceptions import InvalidSignature
    k = keys["main"]
    pub = k.public_key()
    mh = hashlib.sha256(MSG).digest()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    pub.verify(_raw_sign(k, _encode(mh, k.key_size)), MSG, pss, hashes.SHA256())
    for defect in ({"trailer": 0xBD}, {"pad_byte": 0}, {"separator": 0x00}, {"salt_len": 31}):
        with pytest.raises(InvalidSignature):
            pub.verify(_raw_sign(k, _encode(mh, k.key_size, **defect)), MSG, pss, hashes.SHA256())


def test_refuses_bad_key_and_digest_shapes(tmp_path, keys):
    r = run_mp(script=MP / "rsapss_shapes.py", path=[ROOT / "lib"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "rsapss: modulus must be at least 1024 bits, big-endian without leading zeros",
        "rsapss: modulus must be at least 1024 bits, big-endian without leading zeros",
        "rsapss: digest must be a 32-byte SHA-256 hash"]
