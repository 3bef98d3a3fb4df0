"""The fleet's OTA signing key (RSA-3072) and the trusted-key files devices carry.

`warden keys init` makes one RSA-3072 key (e = 65537) in the state folder:

    <state>/keys/ota-signing.key.der   private key, PKCS#8 DER, mode 0600; encrypted with a
                                       passphrase if made with `keys init --encrypt` or
                                       `keys encrypt` (the passphrase: $WARDEN_SIGNING_PASSPHRASE,
                                       or asked for on a terminal; signing never writes the key
                                       anywhere else)
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

PASSPHRASE_ENV = "WARDEN_SIGNING_PASSPHRASE"

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


def _encryption(passphrase):
    if passphrase is None:
        return serialization.NoEncryption()
    if len(passphrase) < 8:
        raise KeysError("the passphrase is shorter than 8 characters", hint="choose a longer one")
    return serialization.BestAvailableEncryption(passphrase.encode())


def init_keys(state, passphrase: str | None = None) -> SigningKeyInfo:
    """Make the fleet's RSA-3072 signing key (encrypted with `passphrase` if given).
    Refuses to replace an existing one."""
    if has_key(state):
        kid = info(state).key_id
        raise KeysError(f"a signing key already exists (key id {kid}) in {keys_dir(state)}",
                        hint="devices trust that key: keep it. Replacing it would strand every device "
                             "provisioned with it; move the folder away first if you really mean to.")
    state.ensure()
    ensure_dir(keys_dir(state) / "device")
    key = rsa.generate_private_key(public_exponent=EXPONENT, key_size=KEY_BITS)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            _encryption(passphrase))
    write_private(private_path(state), der)
    pub = key.public_key()
    write_file(public_path(state), spki_der(pub))
    kid = key_id(pub)
    dev = keys_dir(state) / "device" / (kid.hex() + ".pk")
    write_file(dev, device_key_file(pub))
    return SigningKeyInfo(kid.hex(), private_path(state), public_path(state), dev)


def is_encrypted(state) -> bool:
    """Is the signing key stored encrypted with a passphrase?"""
    try:
        serialization.load_der_private_key(private_path(state).read_bytes(), password=None)
    except TypeError:
        return True      # "Password was not given but private key is encrypted"
    except ValueError:
        return False     # not a key at all: load_private_key says so
    return False


NEW_PASSPHRASE_ENV = "WARDEN_NEW_SIGNING_PASSPHRASE"


def passphrase(prompt="signing key passphrase: ", confirm=False, env=PASSPHRASE_ENV) -> str | None:
    """The passphrase from $`env`, else asked for on a terminal, else None."""
    import os
    import sys

    value = os.environ.get(env)
    if value:
        return value
    if not sys.stdin.isatty():
        return None
    import getpass

    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != value:
        raise KeysError("the two passphrases differ", hint="run it again")
    return value


def load_private_key(state, secret: str | None = None):
    """The signing key, in memory only. An encrypted key takes `secret`, else passphrase()."""
    path = private_path(state)
    if not path.exists():
        raise KeysError(f"no OTA signing key in {keys_dir(state)}", hint="create it with `warden keys init`")
    data = path.read_bytes()
    try:
        key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        secret = secret if secret is not None else passphrase()
        if secret is None:
            raise KeysError(f"the signing key in {path} is encrypted and no passphrase was given",
                            hint=f"set ${PASSPHRASE_ENV} (CI), or run this on a terminal to be asked") from None
        try:
            key = serialization.load_der_private_key(data, password=secret.encode())
        except ValueError:
            raise KeysError("wrong passphrase for the signing key",
                            hint=f"check ${PASSPHRASE_ENV} or what you typed") from None
    except ValueError as e:
        raise KeysError(f"{path} is not a DER private key: {e}") from e
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != KEY_BITS or \
            key.public_key().public_numbers().e != EXPONENT:
        raise KeysError(f"{path} is not an RSA-{KEY_BITS} key with e = {EXPONENT}")
    return key


def encrypt_key(state, secret: str, old: str | None = None) -> None:
    """Store the signing key encrypted with `secret` (re-encrypt with `old` first if it already is)."""
    key = load_private_key(state, old)
    write_private(private_path(state), key.private_bytes(serialization.Encoding.DER,
                                                         serialization.PrivateFormat.PKCS8, _encryption(secret)))


def info(state) -> SigningKeyInfo:
    """The key id and files (from the public key: no passphrase needed)."""
    if not public_path(state).exists():
        raise KeysError(f"no OTA signing key in {keys_dir(state)}", hint="create it with `warden keys init`")
    kid = key_id(serialization.load_der_public_key(public_path(state).read_bytes()))
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


def give_to_twin(state, thing) -> list:
    """Write the fleet's trusted-key files into THING's twin flash (a twin made before
    `keys init` trusts no key and refuses every update). Returns the files written. The twin
    must be stopped; a board gets them with `warden deploy THING`."""
    from . import flashimage, twin as twinlib
    from .devices import get_device, twin_running

    get_device(state, thing)
    files = device_files(state)
    if not files:
        raise KeysError("this fleet has no signing key yet", hint="run `warden keys init` first")
    flash = twinlib.flash_path(state, thing)
    if not flash.exists():
        raise KeysError(f"{thing} has no twin flash at {flash}",
                        hint=f"a board gets the keys with `warden deploy {thing}`")
    if twin_running(flash):
        raise KeysError(f"the twin of {thing} is running ({flash} is open)", hint="stop it first")
    ff = flashimage.FlashFile(flash)
    ff.write(files)
    ff.save()
    return sorted(files)
