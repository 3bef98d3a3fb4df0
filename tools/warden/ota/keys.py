"""The fleet's OTA signing key (RSA-3072) and the trusted-key files devices carry.

Private keys stay in the state folder's keys/ (mode 0600): this module must not write one
anywhere else, and it must not frame or sign updates itself (a key update goes through
warden.ota.image.sign).

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

Rotation: `keys rotate` makes a new current key (the old one moves to keys/previous/ and stays
trusted) and a `keys` update (keys/updates/keys-N.wup: the whole trusted set, signed with the
old key, its own counter N); `keys revoke KEYID` makes one without that key, signed with the
current key. They are pushed like any update (`warden ota push THING FILE`); a device replaces
its /keys/ with the set at once (firmware/ota_keys.py). During a rotation a release can be
signed with either key (`warden sign --key KEYID`).

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

from ..errors import WardenError
from ..state import ensure_dir, write_file, write_private

PASSPHRASE_ENV = "WARDEN_SIGNING_PASSPHRASE"

KEY_BITS = 3072
EXPONENT = 65537
DEVICE_KEYS_DIR = "/keys/"
KEYFILE_MAGIC = b"WPK1"


class KeysError(WardenError):
    hint = "`warden keys show` lists the fleet's keys; `warden keys init` makes the first (docs/ota.md, 'Host side')"


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


def _no_key_hint(state) -> str:
    # `keys init` in the wrong folder makes a key no device trusts: say which state this was.
    return (f"the state is {state.root} ({state.describe_origin()}); if your fleet lives elsewhere, run "
            "from there or pass --state DIR. If this is your fleet and it has no key yet: `warden keys init`")


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
    state.refuse_second_fleet("an OTA signing key")
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
        raise KeysError(f"no OTA signing key in {keys_dir(state)}", hint=_no_key_hint(state))
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
        raise KeysError(f"no OTA signing key in {keys_dir(state)}", hint=_no_key_hint(state))
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
    from ..board import flashimage, twin as twinlib
    from ..fleet.devices import get_device, twin_running

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


# -- rotation: the set of keys devices trust, changed by a signed `keys` update ----------------------
KEYSET_MAGIC = b"WKS1"
KEYSET_MAX = 8
_KEYFILE_LEN = 18 + KEY_BITS // 8


def key_set(files) -> bytes:
    """The payload of a `keys` update: the whole trusted set (each a trusted-key file)."""
    files = list(files)
    if not 1 <= len(files) <= KEYSET_MAX:
        raise KeysError(f"a key set holds 1 to {KEYSET_MAX} keys, not {len(files)}")
    return KEYSET_MAGIC + bytes([len(files)]) + b"".join(files)


def parse_key_set(data: bytes) -> list:
    """The trusted-key files of a key set (as the device checks it); KeysError if malformed."""
    if data[:4] != KEYSET_MAGIC or len(data) < 5 or not 1 <= data[4] <= KEYSET_MAX \
            or len(data) != 5 + data[4] * _KEYFILE_LEN:
        raise KeysError(f"malformed key set: want WKS1, 1-{KEYSET_MAX} keys of {_KEYFILE_LEN} bytes")
    files = [data[5 + i * _KEYFILE_LEN:5 + (i + 1) * _KEYFILE_LEN] for i in range(data[4])]
    for f in files:
        parse_device_key_file(f)
    return files


def previous_path(state, kid: str) -> Path:
    return keys_dir(state) / "previous" / f"{kid}.key.der"


def signing_key(state, kid: str | None = None):
    """The current signing key, or (during a rotation) the previous key `kid` still trusted."""
    if kid is None or kid == info(state).key_id:
        return load_private_key(state)
    path = previous_path(state, kid)
    if (keys_dir(state) / "revoked" / path.name).exists() or \
            (path.exists() and not (keys_dir(state) / "device" / f"{kid}.pk").exists()):
        raise KeysError(f"key {kid} is revoked: devices refuse what it signs",
                        hint="sign with the current key (no --key)")
    if not path.exists():
        raise KeysError(f"no signing key {kid} in {keys_dir(state)}",
                        hint="`warden keys show` lists the current key; previous ones are in keys/previous/")
    data = path.read_bytes()
    try:
        return serialization.load_der_private_key(data, password=None)
    except TypeError:
        secret = passphrase()
        if secret is None:
            raise KeysError(f"key {kid} is encrypted and no passphrase was given",
                            hint=f"set ${PASSPHRASE_ENV}") from None
        return serialization.load_der_private_key(data, password=secret.encode())


def _keyset_counter(state, bump: bool) -> int:
    import json

    path = keys_dir(state) / "keyset.json"
    n = json.loads(path.read_text())["counter"] if path.exists() else 0
    if bump:
        n += 1
        write_file(path, json.dumps({"counter": n}) + "\n")
    return n


def _key_update(state, signer) -> Path:
    """Sign the trusted set as it now stands (keys/device/) as a `keys` update; returns its file."""
    from . import image

    folder = keys_dir(state) / "device"
    payload = key_set(p.read_bytes() for p in sorted(folder.glob("*.pk")))
    n = _keyset_counter(state, bump=True)
    data = image.sign(payload, "keys", f"keyset-{n}", n, image.default_target(state), signer)
    return write_file(keys_dir(state) / "updates" / f"keys-{n}.wup", data)


def rotate(state, secret: str | None = None) -> tuple[SigningKeyInfo, Path]:
    """A new signing key: devices are told to trust it by a key update signed with the current
    key, which stays trusted (and can still sign, `sign --key`) until `revoke`. Returns the new
    key and the update to push to every device."""
    old = load_private_key(state)
    old_kid = key_id(old.public_key()).hex()
    if len(list((keys_dir(state) / "device").glob("*.pk"))) >= KEYSET_MAX:
        raise KeysError(f"devices trust {KEYSET_MAX} keys already", hint="revoke an old one first")
    ensure_dir(keys_dir(state) / "previous")
    write_private(previous_path(state, old_kid), private_path(state).read_bytes())
    key = rsa.generate_private_key(public_exponent=EXPONENT, key_size=KEY_BITS)
    write_private(private_path(state), key.private_bytes(serialization.Encoding.DER,
                                                         serialization.PrivateFormat.PKCS8, _encryption(secret)))
    pub = key.public_key()
    write_file(public_path(state), spki_der(pub))
    kid = key_id(pub)
    write_file(keys_dir(state) / "device" / (kid.hex() + ".pk"), device_key_file(pub))
    return info(state), _key_update(state, old)


def revoke(state, kid: str) -> Path:
    """Stop trusting key `kid`: a key update without it, signed with the current key. Returns
    the update to push to every device. The current key cannot be revoked (rotate first)."""
    if kid == info(state).key_id:
        raise KeysError(f"{kid} is the current signing key",
                        hint="`warden keys rotate` first; then revoke the old key")
    pk = keys_dir(state) / "device" / f"{kid}.pk"
    if not pk.exists():
        raise KeysError(f"devices do not trust a key {kid}", hint="see keys/device/ for the trusted set")
    pk.unlink()
    old = previous_path(state, kid)
    if old.exists():
        ensure_dir(keys_dir(state) / "revoked")
        old.rename(keys_dir(state) / "revoked" / old.name)
    return _key_update(state, load_private_key(state))
