# An encrypted, tamper-evident, append-only record store in a littlefs folder:
# the writing half, which stays loaded (opening, recovery and reading are in
# logopen.py and logread.py, loaded only while they run).
#
# Records are AES-256-CBC encrypted (random IV) and then MACed with HMAC-SHA-256
# (truncated to 16 bytes), with keys derived by HKDF-SHA-256 from one 256-bit key.
# The MAC covers the record header (sequence number, length, IV) and the tag of
# the segment header the record sits in, which binds it to this store, this key
# and this segment number: records cannot be deleted, reordered, moved between
# segments or spliced in from another device without a reader noticing.
#
# Layout: <dir>/<segment number, 8 hex digits>.seg, append-only, each at most
# `segment` bytes; when a new segment would pass `quota`, the oldest segments are
# deleted and each deletion is logged as a DROP record in the new segment.
# Format (docs/log.md, "Format (version 1)"; integers little-endian):
#   segment header, 52 B: "WLOG" ver:u8 flags:u8 hlen:u16 segno:u32 first_seq:u32
#                         oldest:u32 store_id:8s key_id:8s, then tag:16s = MAC(first 36 B)
#   record, 40 B + ct:    "Wr" ctlen:u16 seq:u32 iv:16s ct tag:16s = MAC(segment tag + "Wr"..ct)
#   plaintext in ct:      kind:u8 time:u32 payload, PKCS#7 padding
#
# Hot path: append() fills preallocated buffers and uses one cryptolib CBC object
# for the store's whole life (see _seal). hashlib has no copy() or reset, so each
# MAC still allocates two small hash objects; nothing else of size is allocated.
import os
import struct
from hashlib import sha256

from micropython import const

VERSION = const(1)
EVENT = const(1)      # an event line from the device log: b"LEVEL source: message"
READING = const(2)    # a sensor reading (the outbox)
DROP = const(16)      # the store deleted a segment; payload <III: segno, first_seq, next_seq
CUT = const(17)       # the store cut a torn record off; payload <III: segno, offset, bytes cut
SKIP = const(18)      # at opening, numbers reserved before were skipped; payload <III: first, next, block
BLOCK = const(64)     # sequence numbers reserved per write of the high-water file

HFMT = "<4sBBHIII8s8s"
_HLEN = const(36)
_SEGHDR = const(52)   # header + tag
_RH = const(24)       # "Wr", ctlen, seq, iv
_OVER = const(40)     # _RH + tag


class Store:
    """Store(path, key): open (or create) the store in folder `path` with the 32-byte `key`.

    quota: bytes of flash for the folder, counted in littlefs blocks (it keeps
    (quota - 32 KiB) // segment segments; the 32 KiB are littlefs's own blocks around them);
    segment: bytes per segment file (a multiple of 4096); max_payload: the largest record;
    clock: a function giving Unix seconds for each record's time (none: 0);
    hw: a file outside the folder for the high-water mark (none: numbers are not reserved).

    Sequence numbers are never reused, also after the log's tail was cut or its newest segment
    lost: with `hw`, before using the first number of each block of BLOCK numbers the store
    writes the block's end to that file (temporary file and rename), and opening resumes from
    at least that mark. Numbers skipped that way (after any restart: at most one block, more
    only if records were lost) are logged as a SKIP record, so a reader can tell them apart
    from deleted records.

    A failed write closes the store (broken is then True): the segment's tail is unknown. The
    next append recovers the folder as opening does (a torn record is cut and logged as CUT)
    and goes on; close() closes it for good."""

    def __init__(self, path, key, quota=262144, segment=16384, max_payload=240,
                 clock=None, urandom=os.urandom, hw=None):
        from logopen import open_store   # boot-time code, dropped again by the caller
        open_store(self, path, key, quota, segment, max_payload, clock, urandom, hw)

    def _name(self, segno):
        return "%s/%08x.seg" % (self._dir, segno)

    def _mac(self, a, b):
        h = sha256(self._ip)
        h.update(a)
        h.update(b)
        o = sha256(self._op)
        o.update(h.digest())
        return o.digest()

    def _roll(self):
        """Start the next segment, deleting the oldest ones to stay within the quota.

        The new segment (header and DROP records) is written under a temporary name and
        renamed into place before anything is deleted, so a power cut leaves either the
        old state or the new one (opening the store finishes an interrupted drop)."""
        self.close()
        segs = self._segs   # [segno, first_seq, ...] (logopen.py)
        new = segs[-2] + 1 if segs else 1
        nd = max(0, len(segs) // 2 + 1 - self._max)
        keep = segs[2 * nd:]
        tmp = self._dir + "/seg.tmp"
        self._f = f = open(tmp, "wb")
        hb = bytearray(_SEGHDR)
        struct.pack_into(HFMT, hb, 0, b"WLOG", VERSION, 0, _SEGHDR, new, self.next_seq,
                         keep[0] if keep else new, self._sid, self._kid)
        hb[_HLEN:] = self._mac(b"", memoryview(hb)[:_HLEN])[:16]
        f.write(hb)
        self._tag = bytes(hb[_HLEN:])
        self._cur = new
        self._pos = _SEGHDR
        keep.append(new)
        keep.append(self.next_seq)
        for i in range(0, 2 * nd, 2):
            self._put(self._seal(DROP, struct.pack("<III", segs[i], segs[i + 1], segs[i + 3])))
        f.close()
        self._f = None
        os.rename(tmp, self._name(new))
        for i in range(0, 2 * nd, 2):
            os.remove(self._name(segs[i]))
        self._segs = keep
        self._f = open(self._name(new), "ab")

    def _seal(self, kind, payload):
        # Encrypt and MAC the record into self._rec; returns its ciphertext length. Touches no
        # file: a failure here (a MemoryError on a full heap) leaves the store as it was.
        n = len(payload)
        ct = (n + 5) // 16 * 16 + 16
        pt = self._pt
        rec = self._rec
        pt[:16] = self._rand(16)
        struct.pack_into("<BI", pt, 16, kind, int(self._clock()) & 0xFFFFFFFF if self._clock else 0)
        pt[21:21 + n] = payload
        for i in range(21 + n, 16 + ct):
            pt[i] = ct - 5 - n
        seq = self.next_seq
        struct.pack_into("<2sHI", rec, 0, b"Wr", ct, seq)
        # One CBC call makes the IV and the ciphertext: the IV is the encryption of a fresh
        # random block (NIST SP 800-38A, appendix C), chained from the previous record by
        # the store's one CBC object; the ciphertext is then CBC under that IV.
        self._enc.encrypt(self._pmv[:16 + ct], self._rmv[8:_RH + ct])
        rec[_RH + ct:_OVER + ct] = self._mac(self._tag, self._rmv[:_RH + ct])[:16]
        return ct

    def _put(self, ct):
        # Write the sealed record (ciphertext length ct) to the open segment; returns its number.
        seq = self.next_seq
        self._f.write(self._rmv[:_OVER + ct])
        self._pos += _OVER + ct
        self.next_seq = seq + 1
        return seq

    def append(self, kind, payload, durable=False):
        """Append a record (kind 0-255, payload bytes); returns its sequence number.

        It is on flash when append(..., durable=True) returns, or after the next sync();
        until then a power cut may lose it, never a record made durable before."""
        if self._f is None:
            if not self.broken:
                raise OSError("log store is closed")
            from logopen import reopen
            reopen(self)  # raises if it still cannot: the next append tries again
        if len(payload) > self.max_payload or not 0 <= kind < 256:
            raise ValueError("record payload too long, or kind not 0-255")
        n = self.next_seq
        if n >= self._hwm:
            # Reserve the next block: write its end to the high-water file first (raises
            # with nothing appended: no number is ever used unreserved).
            n += BLOCK
            with open(self._hwf + ".tmp", "w") as f:
                f.write(str(n))
            os.rename(self._hwf + ".tmp", self._hwf)
            self._hwm = n
        try:
            if self._pos + _OVER + 21 + len(payload) > self._lim:
                self._roll()
        except Exception:
            self._broke()  # the segment files are in an unknown state: the next append recovers them
            raise
        ct = self._seal(kind, payload)  # raises with nothing written: the store stays open
        try:
            seq = self._put(ct)
            if durable:
                self._f.flush()
        except Exception:
            # The file's tail is unknown now: stop; the next append recovers it (as opening does).
            self._broke()
            raise
        return seq

    def _broke(self):
        f = self._f
        self._f = None
        self.broken = True
        try:
            f.close()
        except Exception:
            pass    # a failing flash may fail this too: the file is let go either way


    def sync(self):
        """Make every record appended so far durable (littlefs commits a file on flush)."""
        if self._f:
            self._f.flush()

    def close(self):
        """Close the store for good (append then raises OSError)."""
        f = self._f
        self._f = None
        self.broken = False
        if f:
            f.close()

    def reader(self, from_seq=0, on_problem=None):
        """A logread.Reader over this store's records from sequence number `from_seq` on."""
        from logread import Reader
        return Reader(self, from_seq, on_problem)
