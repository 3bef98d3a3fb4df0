"""The fleet's OTA signing key (RSA-3072) and the trusted-key files devices carry.

`warden keys init` makes one RSA-3072 key (e = 65537) in the state folder:

    <state>/keys/ota-signing.key.der   private key, PKCS#8 DER, mode 0600
    <state>/keys/ota-signing.pub.der   public key, SubjectPublicKeyInfo DER
    <state>/keys/device/<key id>.pk    the device-side trusted key file

The key id is the first 8 bytes of SHA-256 over the public key's DER
(SubjectPublicKeyInfo); manifests name it, so a device picks the right key and a
rotated key can be added next to the old one.

Device trusted-key file (`/keys/<key id hex>.pk` on the device, written at
provisioning; app and firmware updates never touch /keys/):

    offset  size  field
    0       4     magic b"WPK1"
    4       8     key id
    12      4     public exponent e, big-endian (65537)
    16      2     modulus length in bytes, big-endian (384 for RSA-3072)
    18      n     modulus, big-endian
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .state import WardenError, ensure_dir, write_file, write_private

KEY_BITS = 3072
EXPONENT = 65537
DEVICE_KEYS_DIR = "/keys/"
KEYFILE_MAGIC = b"WPK1"


class KeysError(WardenError):
    pass


@dataclass(frozen=True)
class SigningKeyInfo:
    key_id: str          # 16 hex digits
    private_path: Path
    public_path: Path
    device_path: Path    # the trusted-key file provisioning writes to the device


def keys_dir(state) -> Path:
    return Path(state.root) / "keys"


def private_path(state) -> Path:
    return keys_dir(state) / "ota-signing.key.der"


def public_path(state) -> Path:
    return keys_dir(state) / "ota-signing.pub.der"


def spki_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(public_key) -> bytes:
    """First 8 bytes of SHA-256 over the SubjectPublicKeyInfo DER."""
    return hashlib.sha256(spki_der(public_key)).digest()[:8]


def device_key_file(public_key) -> bytes:
    """The trusted-key file a device reads (format in the module docstring)."""
    nums = public_key.public_numbers()
    n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
    return KEYFILE_MAGIC + key_id(public_key) + struct.pack(">IH", nums.e, len(n)) + n


def parse_device_key_file(data: bytes):
    """(key id, e, modulus bytes) from a device trusted-key file; KeysError if malformed."""
    if len(data) < 18 or data[:4] != KEYFILE_MAGIC:
        raise KeysError("not a Warden trusted-key file (no WPK1 header)")
    kid = data[4:12]
    e, n_len = struct.unpack_from(">IH", data, 12)
    if len(data) != 18 + n_len:
        raise KeysError("trusted-key file length does not match its modulus length")
    return kid, e, data[18:]


def device_key_name(kid: bytes) -> str:
    return DEVICE_KEYS_DIR + kid.hex() + ".pk"


def has_key(state) -> bool:
    return private_path(state).exists()


def init_keys(state) -> SigningKeyInfo:
    """Make the fleet's RSA-3072 signing key. Refuses to replace an existing one."""
    if has_key(state):
        kid = key_id(load_private_key(state).public_key()).hex()
        raise KeysError(f"a signing key already exists (key id {kid}) in {keys_dir(state)}",
                        hint="devices trust that key: keep it. Replacing it would strand every device "
                             "provisioned with it; move the folder away first if you really mean to.")
    state.ensure()
    ensure_dir(keys_dir(state) / "device")
    key = rsa.generate_private_key(public_exponent=EXPONENT, key_size=KEY_BITS)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_private(private_path(state), der)
    pub = key.public_key()
    write_file(public_path(state), spki_der(pub))
    kid = key_id(pub)
    dev = keys_dir(state) / "device" / (kid.hex() + ".pk")
    write_file(dev, device_key_file(pub))
    return SigningKeyInfo(kid.hex(), private_path(state), public_path(state), dev)


def load_private_key(state):
    path = private_path(state)
    if not path.exists():
        raise KeysError(f"no OTA signing key in {keys_dir(state)}", hint="create it with `warden keys init`")
    try:
        key = serialization.load_der_private_key(path.read_bytes(), password=None)
    except ValueError as e:
        raise KeysError(f"{path} is not a DER private key: {e}") from e
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != KEY_BITS or \
            key.public_key().public_numbers().e != EXPONENT:
        raise KeysError(f"{path} is not an RSA-{KEY_BITS} key with e = {EXPONENT}")
    return key


def info(state) -> SigningKeyInfo:
    kid = key_id(load_private_key(state).public_key())
    return SigningKeyInfo(kid.hex(), private_path(state), public_path(state),
                          keys_dir(state) / "device" / (kid.hex() + ".pk"))


def trusted_keys(state) -> dict:
    """{key id: public key} of every trusted key in <state>/keys/device/ (what devices trust)."""
    out = {}
    folder = keys_dir(state) / "device"
    for p in sorted(folder.glob("*.pk")) if folder.is_dir() else ():
        kid, e, n = parse_device_key_file(p.read_bytes())
        out[kid] = rsa.RSAPublicNumbers(e, int.from_bytes(n, "big")).public_key()
    return out


def device_files(state) -> dict:
    """{'/keys/<id>.pk': bytes} for provisioning: every trusted key, in the device's format."""
    folder = keys_dir(state) / "device"
    out = {}
    for p in sorted(folder.glob("*.pk")) if folder.is_dir() else ():
        kid, _, _ = parse_device_key_file(p.read_bytes())
        out[device_key_name(kid)] = p.read_bytes()
    return out
