"""The twin's NVS region: encode and decode the format twin/nvs.py (the twin's esp32.NVS) uses.

The twin's format only: it must not be taken for, or used to write, a real board's NVS.

The nvs partition (0x9000, 16 KiB) holds two 4 KiB slots; each is
``"WNVS" gen:u32 length:u32 0xFFFFFFFF sha256(first 16 bytes + entries)[:16] entries`` with
entries ``ns_len:u8 ns key_len:u8 key type:u8 value_len:u16 value`` (type 1 = i32 little-endian,
2 = blob). The valid slot with the higher generation is current; the rest of the region is
erased flash (0xFF). A real board's NVS uses ESP-IDF's own page format: this one is the twin's.
"""
from __future__ import annotations

import hashlib
import struct

from ..errors import WardenError

SLOT = 4096
HEADER = 32
I32, BLOB = 1, 2
MAX_NAME = 15


class NvsError(WardenError, ValueError):
    hint = "NVS keeps ESP-IDF's limits: names of 1-15 ASCII characters, i32 or blob values, one page of entries"


def _digest(head: bytes, body: bytes) -> bytes:
    return hashlib.sha256(head + body).digest()[:16]


def _check_name(what: str, name: str):
    if not name or len(name) > MAX_NAME or not name.isascii():
        raise NvsError(f"NVS {what} {name!r} must be 1-{MAX_NAME} ASCII characters")


def encode_entries(values: dict) -> bytes:
    """The entries of {namespace: {key: int | bytes}}, in the order twin/nvs.py writes them."""
    flat = {}
    for ns, kv in values.items():
        _check_name("namespace", ns)
        for key, v in kv.items():
            _check_name("key", key)
            if isinstance(v, bool) or not isinstance(v, (int, bytes, bytearray)):
                raise NvsError(f"NVS value for {ns}/{key} must be an int (i32) or bytes (blob)")
            flat[(ns, key)] = v
    out = bytearray()
    for (ns, key), v in sorted(flat.items()):
        if isinstance(v, int):
            if not -2**31 <= v < 2**31:
                raise NvsError(f"NVS i32 {ns}/{key} out of range: {v}")
            t, raw = I32, struct.pack("<i", v)
        else:
            t, raw = BLOB, bytes(v)
        out += bytes((len(ns),)) + ns.encode() + bytes((len(key),)) + key.encode()
        out += struct.pack("<BH", t, len(raw)) + raw
    if len(out) > SLOT - HEADER:
        raise NvsError(f"NVS contents too large: {len(out)} bytes, at most {SLOT - HEADER}")
    return bytes(out)


def encode(values: dict, size: int = 0x4000, gen: int = 0) -> bytes:
    """A whole nvs partition image holding `values` in slot 0 (slot 1 erased)."""
    body = encode_entries(values)
    head = struct.pack("<4sIII", b"WNVS", gen, len(body), 0xFFFFFFFF)
    slot = head + _digest(head, body) + body
    return slot + b"\xff" * (size - len(slot))


def decode(region: bytes) -> dict:
    """{namespace: {key: value}} of the current slot of an nvs partition image ({} if none is valid)."""
    best = None
    for slot in (0, 1):
        raw = region[slot * SLOT:(slot + 1) * SLOT]
        if len(raw) < HEADER:
            continue
        magic, gen, n, _ = struct.unpack_from("<4sIII", raw)
        if magic != b"WNVS" or n > SLOT - HEADER:
            continue
        body = raw[HEADER:HEADER + n]
        if _digest(raw[:16], body) != raw[16:32]:
            continue
        if best is None or gen > best[0]:
            best = (gen, body)
    out: dict = {}
    if best is None:
        return out
    b, i = best[1], 0
    while i < len(b):
        n = b[i]
        ns = b[i + 1:i + 1 + n].decode()
        i += 1 + n
        n = b[i]
        key = b[i + 1:i + 1 + n].decode()
        i += 1 + n
        t, n = struct.unpack_from("<BH", b, i)
        i += 3
        raw = b[i:i + n]
        i += n
        out.setdefault(ns, {})[key] = struct.unpack("<i", raw)[0] if t == I32 else bytes(raw)
    return out
