# The twin's stand-in for esp32.NVS, over the flash file's `nvs` partition.
#
# Real semantics (ESP-IDF via MicroPython's esp32.NVS): keys and namespaces of at
# most 15 characters; a missing key raises OSError(-4354) (ESP_ERR_NVS_NOT_FOUND),
# also for a key stored with another type; get_blob into a too-small buffer raises
# OSError(-4364) (ESP_ERR_NVS_INVALID_LENGTH); set_*/erase_key are lost unless
# commit() follows. Not encrypted, as on a board.
#
# Format (tools/warden/board/nvsimage.py writes the same): two 4 KiB slots at the start
# of the partition, each
#   "WNVS" gen:u32 length:u32 0xFFFFFFFF sha256(those 16 B + entries)[:16] entries
# entries = (ns_len:u8 ns key_len:u8 key type:u8 value_len:u16 value)*, sorted by
# (ns, key); type 1 = i32 (4 bytes LE), 2 = blob. The valid slot with the higher
# gen is current; commit() writes the whole store to the other slot with gen+1
# (erase, then write), so a power cut during a commit leaves the previous state.
import struct
from hashlib import sha256


def _load():
    """(gen, slot, {(ns, key): (type, raw value)}); gen -1 if no slot is valid."""
    import esp32
    p = esp32._Dev(esp32._find("nvs"))  # the ROM's block device: no Partition API needed
    best = (-1, 1, {})
    for slot in (0, 1):
        h = bytearray(32)
        p.readblocks(slot, h)
        magic, gen, n = struct.unpack_from("<4sII", h)
        if magic == b"WNVS" and n <= 4064 and gen > best[0]:
            b = bytearray(n)
            p.readblocks(slot, b, 32)
            d = sha256(h[:16])
            d.update(b)
            if d.digest()[:16] == h[16:]:
                e = {}
                i = 0
                while i < n:
                    ns = bytes(b[i + 1:i + 1 + b[i]]).decode()
                    i += 1 + b[i]
                    k = bytes(b[i + 1:i + 1 + b[i]]).decode()
                    i += 1 + b[i]
                    t, m = struct.unpack_from("<BH", b, i)
                    e[(ns, k)] = (t, bytes(b[i + 3:i + 3 + m]))
                    i += 3 + m
                best = (gen, slot, e)
    return p, best


def _name(s):
    if len(s) > 15 or not s:
        raise OSError(-4361)   # ESP_ERR_NVS_KEY_TOO_LONG
    return s


class NVS:
    def __init__(self, namespace):
        self._ns = _name(namespace)
        self._new = {}   # key -> (type, raw value), None for an erased key

    def _get(self, key, t=0):
        e = self._new[key] if key in self._new else _load()[1][2].get((self._ns, _name(key)))
        if e is None or t and e[0] != t:
            raise OSError(-4354)   # ESP_ERR_NVS_NOT_FOUND
        return e[1]

    def set_i32(self, key, value):
        if not -0x80000000 <= value < 0x80000000:
            raise OverflowError("overflow converting long int to machine word")
        self._new[_name(key)] = (1, struct.pack("<i", value))

    def get_i32(self, key):
        return struct.unpack("<i", self._get(key, 1))[0]

    def set_blob(self, key, value):
        self._new[_name(key)] = (2, bytes(value))

    def get_blob(self, key, buf):
        v = self._get(key, 2)
        if len(v) > len(buf):
            raise OSError(-4364)   # ESP_ERR_NVS_INVALID_LENGTH
        buf[:len(v)] = v
        return len(v)

    def erase_key(self, key):
        self._get(key)
        self._new[key] = None

    def commit(self):
        p, (gen, slot, e) = _load()
        for k, v in self._new.items():
            if v is None:
                e.pop((self._ns, k), None)
            else:
                e[(self._ns, k)] = v
        b = bytearray()
        for (ns, k), (t, v) in sorted(e.items()):
            b += bytes((len(ns),)) + ns.encode() + bytes((len(k),)) + k.encode() + struct.pack("<BH", t, len(v)) + v
        if len(b) > 4064:
            raise OSError(-4357)   # ESP_ERR_NVS_NOT_ENOUGH_SPACE
        h = struct.pack("<4sIII", b"WNVS", gen + 1, len(b), 0xFFFFFFFF)
        d = sha256(h)
        d.update(b)
        p.writeblocks(1 - slot, h + d.digest()[:16] + b)   # erases the slot first
        self._new = {}
