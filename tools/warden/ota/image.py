"""Signed updates: the manifest, the update file, app bundles; signing and checking them.

The formats and their checks: it must not keep keys (warden.ota.keys does) nor send an
update anywhere (warden.ota.push does).

Update file (what `warden sign` writes and `warden ota push` serves)::

    offset      size  field
    0           4     magic b"WUP1"
    4           2     manifest length M, big-endian (at most MANIFEST_MAX = 512)
    6           2     signature length S, big-endian (384 for RSA-3072)
    8           M     manifest
    8 + M       S     signature: RSASSA-PSS (SHA-256, MGF1-SHA-256, salt 32) over the manifest bytes
    8 + M + S   ...   payload: exactly the manifest's size bytes

Manifest: b"WMF1", then records of tag (1 byte), length (1 byte), value, every tag
exactly once and in this order; unknown tags, repeats, other lengths or trailing bytes
make the manifest malformed (the device parses the same way):

    1 alg      ASCII  "rsa3072-pss-sha256"
    2 key_id   8      first 8 bytes of SHA-256(public key SubjectPublicKeyInfo DER)
    3 kind     ASCII  "app" (a bundle of .mpy files) or "firmware" (an ESP32 app image)
    4 target   ASCII  "<chip>/<app>", e.g. "esp32/warden": 1-64 of [a-z0-9._/-]
    5 version  ASCII  1-32 printable characters, no spaces
    6 counter  4      security counter, big-endian, 1..2^32-1; must grow with every release
    7 size     4      payload size in bytes, big-endian
    8 sha256   32     SHA-256 of the payload

App bundle (the payload of an `app` update; the device unpacks it into its inactive
app slot, streaming)::

    b"WAB1", then per file: path length L (1 byte, 1..96), path (ASCII, relative,
    under firmware/ or lib/, components of [A-Za-z0-9_.-] that are not "." or ".."),
    size (4 bytes, big-endian), the file's bytes; then a single 0 byte. Paths are
    unique; nothing may follow the end byte.
"""
from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ..board import espimage
from ..errors import WardenError

UPDATE_MAGIC = b"WUP1"
MANIFEST_MAGIC = b"WMF1"
MANIFEST_MAX = 512
ALG = "rsa3072-pss-sha256"
SIG_LEN = 384
KINDS = ("app", "firmware", "keys")   # keys: a set of trusted signing keys (warden.ota.keys)
COUNTER_MAX = 2 ** 32 - 1

BUNDLE_MAGIC = b"WAB1"
BUNDLE_PATH_MAX = 96
BUNDLE_FILES_MAX = 256
BUNDLE_ROOTS = ("firmware", "lib")

_T_ALG, _T_KEY, _T_KIND, _T_TARGET, _T_VERSION, _T_COUNTER, _T_SIZE, _T_SHA = range(1, 9)
_TARGET_RE = re.compile(r"^[a-z0-9._/-]{1,64}$")
_VERSION_RE = re.compile(r"^[\x21-\x7e]{1,32}$")
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class UpdateError(WardenError):
    """A refused update; `reason` is the same wording the device uses."""

    hint = ("check the file with `warden ota inspect FILE`; make it again with `warden build app --bundle` or "
            "the firmware's micropython.bin, and `warden sign` (docs/ota.md, 'Host side')")

    def __init__(self, reason, hint=None):
        super().__init__(reason, hint)
        self.reason = reason


def default_target(state) -> str:
    return "esp32/" + state.app


def check_target(target: str) -> str:
    if not isinstance(target, str) or not _TARGET_RE.match(target):
        raise UpdateError(f"target {target!r} must be 1-64 characters of a-z 0-9 . _ / -",
                          hint='the form is "<chip>/<app>", e.g. esp32/warden')
    return target


def check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise UpdateError(f"version {version!r} must be 1-32 printable characters without spaces")
    return version


def check_counter(counter: int) -> int:
    if not isinstance(counter, int) or not 1 <= counter <= COUNTER_MAX:
        raise UpdateError(f"counter {counter!r} must be an integer from 1 to {COUNTER_MAX}",
                          hint="raise it with every release: devices refuse a counter not above theirs")
    return counter


@dataclass(frozen=True)
class Manifest:
    alg: str
    key_id: bytes
    kind: str
    target: str
    version: str
    counter: int
    size: int
    sha256: bytes

    def encode(self) -> bytes:
        fields = [
            (_T_ALG, self.alg.encode()), (_T_KEY, self.key_id), (_T_KIND, self.kind.encode()),
            (_T_TARGET, self.target.encode()), (_T_VERSION, self.version.encode()),
            (_T_COUNTER, struct.pack(">I", self.counter)), (_T_SIZE, struct.pack(">I", self.size)),
            (_T_SHA, self.sha256),
        ]
        out = bytearray(MANIFEST_MAGIC)
        for tag, value in fields:
            if len(value) > 255:
                raise UpdateError("manifest field %d is longer than 255 bytes" % tag)
            out += bytes([tag, len(value)]) + value
        if len(out) > MANIFEST_MAX:
            raise UpdateError(f"manifest oversized: {len(out)} bytes > {MANIFEST_MAX}")
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> "Manifest":
        """Strict parse (the device's rules); UpdateError("manifest malformed: ...") otherwise."""
        if len(data) > MANIFEST_MAX:
            raise UpdateError(f"manifest oversized: {len(data)} bytes > {MANIFEST_MAX}")
        if data[:4] != MANIFEST_MAGIC:
            raise UpdateError("manifest malformed: no WMF1 header")
        pos = 4
        values = []
        for tag in range(1, 9):
            if pos + 2 > len(data):
                raise UpdateError("manifest malformed: ends before field %d" % tag)
            t, n = data[pos], data[pos + 1]
            if t != tag:
                raise UpdateError("manifest malformed: field %d where %d belongs" % (t, tag))
            if pos + 2 + n > len(data):
                raise UpdateError("manifest malformed: field %d runs past the end" % tag)
            values.append(data[pos + 2:pos + 2 + n])
            pos += 2 + n
        if pos != len(data):
            raise UpdateError("manifest malformed: %d bytes after the last field" % (len(data) - pos))
        alg, kid, kind, target, version, counter, size, sha = values
        for tag, v, want in ((_T_KEY, kid, 8), (_T_COUNTER, counter, 4), (_T_SIZE, size, 4), (_T_SHA, sha, 32)):
            if len(v) != want:
                raise UpdateError("manifest malformed: field %d is %d bytes, not %d" % (tag, len(v), want))
        try:
            alg, kind, target, version = (v.decode("ascii") for v in (alg, kind, target, version))
        except UnicodeDecodeError:
            raise UpdateError("manifest malformed: a text field is not ASCII") from None
        if not _TARGET_RE.match(target):
            raise UpdateError("manifest malformed: bad target")
        if not _VERSION_RE.match(version):
            raise UpdateError("manifest malformed: bad version")
        return cls(alg, bytes(kid), kind, target, version, struct.unpack(">I", counter)[0],
                   struct.unpack(">I", size)[0], bytes(sha))

    def describe(self) -> dict:
        return {"alg": self.alg, "key_id": self.key_id.hex(), "kind": self.kind, "target": self.target,
                "version": self.version, "counter": self.counter, "size": self.size,
                "sha256": self.sha256.hex()}


# -- signing -----------------------------------------------------------------------------------
def _pss():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()


def check_payload(payload: bytes, kind: str):
    """Refuse to sign what no device could install (a broken ESP32 image, a malformed bundle)."""
    if kind == "firmware":
        why = espimage.check_image(payload)
        if why:
            raise UpdateError("broken ESP32 image: " + why,
                              hint="a firmware update is a MicroPython firmware .bin for the OTA slots")
    elif kind == "app":
        unpack_bundle(payload)
    elif kind == "keys":
        from .keys import KeysError, parse_key_set
        try:
            parse_key_set(payload)
        except KeysError as e:
            raise UpdateError(str(e)) from None
    else:
        raise UpdateError(f"wrong kind: {kind!r} (app, firmware or keys)")


def sign(payload: bytes, kind: str, version: str, counter: int, target: str, key, *, check: bool = True) -> bytes:
    """A signed update file (see the module docstring) for `payload`, signed with RSA-3072 `key`."""
    from .keys import key_id
    if kind not in KINDS:
        raise UpdateError(f"wrong kind: {kind!r} (app, firmware or keys)")
    if check:
        check_payload(payload, kind)
    m = Manifest(ALG, key_id(key.public_key()), kind, check_target(target), check_version(version),
                 check_counter(counter), len(payload), hashlib.sha256(payload).digest()).encode()
    pss, h = _pss()
    sig = key.sign(m, pss, h)
    return UPDATE_MAGIC + struct.pack(">HH", len(m), len(sig)) + m + sig + payload


def sign_raw(manifest: bytes, key) -> bytes:
    """The PSS signature over arbitrary manifest bytes (tests craft malformed manifests with it)."""
    pss, h = _pss()
    return key.sign(manifest, pss, h)


def assemble(manifest: bytes, signature: bytes, payload: bytes) -> bytes:
    return UPDATE_MAGIC + struct.pack(">HH", len(manifest), len(signature)) + manifest + signature + payload


def split(data: bytes):
    """(manifest bytes, signature, payload) of an update file; UpdateError if the framing is wrong."""
    if len(data) < 8 or data[:4] != UPDATE_MAGIC:
        raise UpdateError("not a Warden update file (no WUP1 header)",
                          hint="sign the payload with `warden sign FILE --kind ... --version ... --counter ...`")
    m_len, s_len = struct.unpack_from(">HH", data, 4)
    if m_len > MANIFEST_MAX:
        raise UpdateError(f"manifest oversized: {m_len} bytes > {MANIFEST_MAX}")
    if 8 + m_len + s_len > len(data):
        raise UpdateError("update file is truncated: it ends inside the manifest or signature")
    return data[8:8 + m_len], data[8 + m_len:8 + m_len + s_len], data[8 + m_len + s_len:]


def verify(data: bytes, trusted: dict, *, target: str | None = None, kind: str | None = None,
           installed_counter: int | None = None, slot_size: int | None = None) -> Manifest:
    """Check an update file as a device would, in the device's order; returns its manifest.

    `trusted` is {key id: public key} (keys.trusted_keys). UpdateError(reason) on the first failure.
    """
    from cryptography.exceptions import InvalidSignature
    m_bytes, sig, payload = split(data)
    m = Manifest.decode(m_bytes)
    if m.alg != ALG:
        raise UpdateError(f"unsupported algorithm {m.alg!r}")
    pub = trusted.get(m.key_id)
    if pub is None:
        raise UpdateError(f"unknown signing key {m.key_id.hex()}",
                          hint="the devices trust only the keys in <state>/keys/device/")
    if len(sig) != SIG_LEN:
        raise UpdateError(f"bad signature: {len(sig)} bytes, an RSA-3072 signature is {SIG_LEN}")
    pss, h = _pss()
    try:
        pub.verify(sig, m_bytes, pss, h)
    except InvalidSignature:
        raise UpdateError(f"bad signature: the manifest was altered or not signed by key {m.key_id.hex()}") \
            from None
    if m.kind not in KINDS:
        raise UpdateError(f"wrong kind: {m.kind!r} is not app, firmware or keys")
    if kind is not None and m.kind != kind:
        raise UpdateError(f"wrong kind: the update is {m.kind!r}, expected {kind!r}")
    if target is not None and m.target != target:
        raise UpdateError(f"wrong target: the update is for {m.target!r}, this device is {target!r}")
    if installed_counter is not None and m.counter <= installed_counter:
        raise UpdateError(counter_reason(m.counter, installed_counter))
    if slot_size is not None and m.size > slot_size:
        raise UpdateError(f"too large for the slot: {m.size} bytes > {slot_size}")
    if len(payload) < m.size:
        raise UpdateError(f"payload short: {len(payload)} of {m.size} bytes")
    if len(payload) > m.size:
        raise UpdateError(f"payload too long: more than the signed {m.size} bytes")
    if hashlib.sha256(payload).digest() != m.sha256:
        raise UpdateError("payload altered: its SHA-256 does not match the signed manifest")
    if m.kind == "firmware":
        why = espimage.check_image(payload)
        if why:
            raise UpdateError("broken ESP32 image: " + why)
    return m


def counter_reason(counter: int, installed: int) -> str:
    if counter == installed:
        return f"counter {counter} is not newer than the installed {installed} (replay)"
    return f"downgrade: counter {counter} is lower than the installed {installed}"


def inspect(data: bytes) -> dict:
    """What an update file says about itself (nothing verified)."""
    m_bytes, sig, payload = split(data)
    out = Manifest.decode(m_bytes).describe()
    out.update({"manifest_bytes": len(m_bytes), "signature_bytes": len(sig), "payload_bytes": len(payload)})
    return out


def sign_file(state, path, kind: str, version: str, counter: int, target: str | None = None,
              out=None, key_id: str | None = None) -> tuple[Path, Manifest]:
    """Sign the payload file `path` with the state's key (or, during a rotation, the previous key
    `key_id`); writes `out` (default: path + '.wup')."""
    from .keys import signing_key
    from ..state import write_file
    path = Path(path)
    try:
        payload = path.read_bytes()
    except OSError as e:
        raise UpdateError(f"cannot read {path}: {e.strerror}") from e
    data = sign(payload, kind, version, counter, target or default_target(state), signing_key(state, key_id))
    out = Path(out) if out else path.with_name(path.name + ".wup")
    write_file(out, data)
    return out, Manifest.decode(split(data)[0])


# -- app bundles -------------------------------------------------------------------------------
def check_bundle_path(path: str) -> str:
    parts = path.split("/")
    if not 0 < len(path) <= BUNDLE_PATH_MAX or not path.isascii():
        raise UpdateError(f"malformed app bundle: path {path!r} is empty, too long or not ASCII")
    if parts[0] not in BUNDLE_ROOTS or len(parts) < 2:
        raise UpdateError(f"malformed app bundle: {path!r} is not under firmware/ or lib/")
    for p in parts:
        if p in (".", "..") or not _COMPONENT_RE.match(p):
            raise UpdateError(f"malformed app bundle: path {path!r} has a bad component {p!r}")
    return path


def pack_bundle(files: dict) -> bytes:
    """An app bundle of {'/firmware/x.mpy': bytes, ...}: entries outside /firmware and /lib are left out."""
    out = bytearray(BUNDLE_MAGIC)
    n = 0
    for name in sorted(files):
        rel = name.lstrip("/")
        if rel.split("/")[0] not in BUNDLE_ROOTS:
            continue  # boot.py, main.py, config and identity are not the app's to replace
        check_bundle_path(rel)
        data = files[name]
        out += bytes([len(rel)]) + rel.encode() + struct.pack(">I", len(data)) + data
        n += 1
    if n == 0:
        raise UpdateError("the app bundle would be empty: no files under /firmware or /lib")
    if n > BUNDLE_FILES_MAX:
        raise UpdateError(f"the app bundle has {n} files, more than {BUNDLE_FILES_MAX}")
    return bytes(out + b"\x00")


def unpack_bundle(data: bytes) -> dict:
    """{'firmware/x.mpy': bytes} of a bundle, checked as strictly as the device does."""
    if data[:4] != BUNDLE_MAGIC:
        raise UpdateError("malformed app bundle: no WAB1 header")
    pos = 4
    out = {}
    while True:
        if pos >= len(data):
            raise UpdateError("malformed app bundle: ends without its end byte")
        n = data[pos]
        pos += 1
        if n == 0:
            break
        if pos + n + 4 > len(data):
            raise UpdateError("malformed app bundle: truncated entry")
        try:
            path = check_bundle_path(data[pos:pos + n].decode("ascii"))
        except UnicodeDecodeError:
            raise UpdateError("malformed app bundle: a path is not ASCII") from None
        size = struct.unpack_from(">I", data, pos + n)[0]
        pos += n + 4
        if pos + size > len(data):
            raise UpdateError(f"malformed app bundle: {path} runs past the end")
        if path in out:
            raise UpdateError(f"malformed app bundle: {path} appears twice")
        if len(out) >= BUNDLE_FILES_MAX:
            raise UpdateError(f"malformed app bundle: more than {BUNDLE_FILES_MAX} files")
        out[path] = data[pos:pos + size]
        pos += size
    if pos != len(data):
        raise UpdateError("malformed app bundle: bytes after the end")
    if not out:
        raise UpdateError("malformed app bundle: no files")
    return out


def build_bundle(out=None) -> bytes:
    """Compile the device code (build.build_app) and pack it as an app bundle; write `out` if given."""
    from ..board import build
    data = pack_bundle(build.build_app())
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(data)
    return data
