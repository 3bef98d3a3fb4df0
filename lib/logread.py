# The log store's Reader (logstore.Store.reader): verified, decrypted records from
# a sequence number on, and the record checks opening the store (logopen.py) shares.
# Loaded only while something reads (the outbox, tests) or the store opens.
import struct

from cryptolib import aes
from micropython import const

from logstore import HFMT, VERSION

_HLEN = const(36)
_SEGHDR = const(52)
_RH = const(24)
_OVER = const(40)
_SKIP = const(18)   # logstore.SKIP


def head(st, segno):
    """(first_seq, oldest, store_id, tag, ok) of segment `segno`, None if it is shorter than
    a header. ok: the header verifies and is this store's segment `segno`. The tag is the
    stored one either way: records verify against it even if other header bytes are damaged."""
    hb = bytearray(_SEGHDR)
    try:
        with open(st._name(segno), "rb") as f:
            if f.readinto(hb) != _SEGHDR:
                return None
    except OSError:
        return None
    m, v, _, hl, s, first, oldest, sid, kid = struct.unpack_from(HFMT, hb)
    t = st._mac(b"", memoryview(hb)[:_HLEN])
    r = 0
    for i in range(16):
        r |= t[i] ^ hb[_HLEN + i]     # no early exit: constant time
    ok = not r and m == b"WLOG" and v == VERSION and hl == _SEGHDR and s == segno and kid == st._kid
    return first, oldest, sid, bytes(hb[_HLEN:]), ok


def check(st, f, pos, size, mv, tag):
    """Length of the valid record at `pos` (read into `mv`); 0 if the file ends inside
    the record there (torn); -1 if no valid record starts at `pos`."""
    if size - pos < 8:
        return 0
    f.seek(pos)
    f.readinto(mv[:8])
    n = mv[2] | mv[3] << 8
    if mv[0] != 0x57 or mv[1] != 0x72 or n & 15 or not n or n > st._maxct:
        return -1
    if pos + _OVER + n > size:
        return 0
    if f.readinto(mv[8:_OVER + n]) != _OVER + n - 8:
        return 0
    d = st._mac(tag, mv[:_RH + n])
    r = 0
    for i in range(16):
        r |= d[i] ^ mv[_RH + n + i]   # no early exit: constant time
    return -1 if r else _OVER + n


def resync(st, f, pos, size, buf, mv, tag):
    """The first offset after `pos` where a valid record starts, or `size` if none does."""
    p = pos + 1
    while size - p >= _OVER + 16:
        n = min(len(buf), size - p)
        f.seek(p)
        f.readinto(mv[:n])
        i = buf.find(b"Wr", 0, n)
        if i < 0:
            p += n - 1
            continue
        if check(st, f, p + i, size, mv, tag) > 0:
            return p + i
        p += i + 1
    return size


def _seq(b):
    return b[4] | b[5] << 8 | b[6] << 16 | b[7] << 24


class Reader:
    """Verified, decrypted records with seq >= from_seq, oldest first:

        r = store.reader(from_seq)
        while r.next():
            use(r.seq, r.kind, r.time, r.payload)   # payload: memoryview, valid until next()

    next() returns False at the end of the log; call it again later for records
    appended since. No damage stops it: each problem goes to on_problem(what, segno,
    offset), what being "header" (a segment header that does not verify: damaged, or
    not this store's; its records are still read if they verify), "damaged" (a record
    fails its MAC; reading goes on at the next valid record), "truncated" (a segment
    ends inside a record), "missing" (sequence numbers skipped: deleted or dropped
    records; not the numbers a SKIP record says were skipped), "order" (a sequence number repeats or goes back: swapped or replayed
    records) or "io" (a file error)."""

    def __init__(self, store, from_seq=0, on_problem=None):
        self._s = store
        m = store._maxct
        self._b = bytearray(_OVER + m)
        self._mv = memoryview(self._b)
        self._pt = bytearray(16 + m)
        self._pmv = memoryview(self._pt)
        self._dec = aes(store._ek, 2, bytes(16))
        self._from = from_seq
        self._high = None
        self._cb = on_problem
        self._seg = -1
        self._f = None
        self.seq = self.kind = self.time = 0
        self.payload = None

    def _problem(self, what, pos):
        if self._cb:
            self._cb(what, self._seg, pos)

    def _next_segment(self):
        segs = self._s._segs   # [segno, first_seq, ...]
        for i in range(0, len(segs), 2):
            s = segs[i]
            if s <= self._seg:
                continue
            if i + 2 < len(segs) and 0 < segs[i + 3] <= self._from:
                self._seg = s
                continue    # every record in it is older than from_seq
            h = head(self._s, s)
            if h is None or not h[4]:
                self._seg = s
                self._problem("header", 0)   # damaged or foreign: its records may still verify
                if h is None:
                    continue
            self._open(s)
            self._tag = h[3]
            self._pos = _SEGHDR
            return True
        return False

    def _open(self, segno):
        # Open segment `segno` (again), then let go of the previous file: a failure (a
        # MemoryError) leaves the reader where it was.
        f = open(self._s._name(segno), "rb")
        if self._f:
            self._f.close()
        self._f = f
        self._seg = segno
        self._size = f.seek(0, 2)

    def close(self):
        if self._f:
            self._f.close()
            self._f = None

    def next(self):
        s = self._s
        while True:
            try:
                if self._f is None and not self._next_segment():
                    return False
                if self._pos >= self._size:
                    # The end of what we saw: the segment may have grown since.
                    if self._seg == s._cur and s._f:
                        if s._pos <= self._size:
                            return False
                        s.sync()
                    size = self._size
                    self._open(self._seg)
                    if self._size <= size:
                        self.close()
                    continue
                r = check(s, self._f, self._pos, self._size, self._mv, self._tag)
                if r <= 0:
                    # A record cut short with nothing valid after it: a truncated segment.
                    nxt = resync(s, self._f, self._pos, self._size, self._b, self._mv, self._tag)
                    self._problem("truncated" if r == 0 and nxt >= self._size else "damaged", self._pos)
                    self._pos = nxt
                else:
                    self._pos += r
                    if self._deliver(r - _OVER):
                        return True
            except MemoryError:
                # Not a problem of the log: next() can be called again and goes on from where
                # it was (treated as an io problem, the rest of the segment would be skipped,
                # and the outbox would never send its readings).
                raise
            except Exception:
                self._problem("io", self._pos if self._f else 0)
                self.close()

    def _deliver(self, n):
        b = self._b
        seq = _seq(b)
        high = self._high
        at = self._pos - _OVER - n
        gap = high is not None and seq != high + 1
        if high is None or seq > high:
            self._high = seq
        if seq < self._from and not gap:
            return False
        pt = self._pt
        # Decrypting the IV block too makes every record independent of what this CBC
        # object decrypted before: its first output block (garbage) is skipped.
        self._dec.decrypt(self._mv[8:_RH + n], self._pmv[:16 + n])
        p = pt[15 + n]
        if p < 1 or p > 16 or n - 5 - p < 0:
            self._problem("damaged", at)
            return False
        # A jump in the numbers is a problem unless it is the one a SKIP record accounts
        # for (the store resumed from its high-water mark: first skipped = high + 1).
        if gap and not (seq > high and pt[16] == _SKIP and n - 5 - p >= 4
                        and pt[21] | pt[22] << 8 | pt[23] << 16 | pt[24] << 24 == high + 1):
            self._problem("missing" if seq > high else "order", at)
        if seq < self._from:
            return False
        self.seq = seq
        self.kind = pt[16]
        self.time = pt[17] | pt[18] << 8 | pt[19] << 16 | pt[20] << 24
        self.payload = self._pmv[21:16 + n - p]
        return True
