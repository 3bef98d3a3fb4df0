"""Host-side helpers for the OTA tests: a cached signing key, twin flash files with a factory
firmware image and trusted keys, and signed updates (good ones and each kind of bad one)."""
import functools
import hashlib
import struct

from cryptography.hazmat.primitives.asymmetric import rsa

from warden.board import espimage, flashimage as fi
from warden.ota import image, keys

TARGET = "esp32/warden"


def signing_key(name="fleet"):
    """An RSA-3072 key per name, generated once per test session (generation takes ~0.5 s)."""
    return _key(name)


@functools.lru_cache(maxsize=None)
def _key(name):
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def key_id(name="fleet"):
    return keys.key_id(signing_key(name).public_key())


def trusted(*names):
    return {key_id(n): signing_key(n).public_key() for n in names or ("fleet",)}


def key_files(*names):
    """{'/keys/<id>.pk': bytes} as provisioning writes them."""
    out = {}
    for n in names or ("fleet",):
        pub = signing_key(n).public_key()
        out[keys.device_key_name(keys.key_id(pub))] = keys.device_key_file(pub)
    return out


def firmware(version="2.0.0", size=96 * 1024, **kw):
    return espimage.build_image(version, size, **kw)


def signed(payload, kind="app", version="2.0.0", counter=2, target=TARGET, key="fleet", check=True):
    return image.sign(payload, kind, version, counter, target, signing_key(key), check=check)


def manifest(kind="app", version="2.0.0", counter=2, target=TARGET, size=0, sha=b"\0" * 32, key="fleet",
             alg=image.ALG):
    return image.Manifest(alg, key_id(key), kind, target, version, counter, size, sha).encode()


def tlv(*fields, magic=image.MANIFEST_MAGIC):
    """A raw manifest from (tag, value) pairs: for malformed-manifest tests."""
    out = bytearray(magic)
    for tag, value in fields:
        out += bytes([tag, len(value)]) + value
    return bytes(out)


def good_fields(kind="app", size=10, counter=2):
    return [(1, image.ALG.encode()), (2, key_id()), (3, kind.encode()), (4, TARGET.encode()),
            (5, b"2.0.0"), (6, struct.pack(">I", counter)), (7, struct.pack(">I", size)),
            (8, hashlib.sha256(b"x").digest())]


def make_flash(path, files=None, factory_version="1.0.0", factory_size=96 * 1024, key_names=("fleet",)):
    """A twin flash: factory firmware image in ota_0, `files` + trusted keys in the vfs."""
    all_files = dict(files or {})
    all_files.update(key_files(*key_names))
    img = fi.new_flash(all_files)
    fw = espimage.build_image(factory_version, factory_size)
    ota0 = fi.part("ota_0")
    img[ota0.offset:ota0.offset + len(fw)] = fw
    path.write_bytes(img)
    return path
