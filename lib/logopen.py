# Opening the log store (logstore.py): key derivation and recovery after a power
# cut (with the record checks of logread.py). Loaded only while the store opens.
import os
import struct

from cryptolib import aes
from micropython import const

from logread import _seq, check, head, resync
from logstore import BLOCK, CUT, DROP, SKIP

_SEGHDR = const(52)
_OVER = const(40)
RESERVE = const(8)   # blocks: the folder's metadata pairs, copy-on-write of the open tail


def keys(key):
    """(AES key, HMAC key, key id) of a 32-byte log key: HKDF-SHA-256, salt b"warden-log-v1"."""
    from cryptokit import hkdf
    if len(key) != 32:
        raise ValueError("log key must be 32 bytes")
    s = b"warden-log-v1"
    return hkdf(key, s, b"enc", 32), hkdf(key, s, b"mac", 32), hkdf(key, s, b"key-id", 8)


def open_store(st, path, key, quota, segment, max_payload, clock, urandom, hw):
    """Store.__init__: check the options, allocate the buffers, recover, open for appending."""
    if segment % 4096 or segment < 4096:
        raise ValueError("segment must be a multiple of 4096")
    # Besides the segments' own blocks littlefs uses, measured, up to 8 more: the folder's
    # metadata pairs and the copy-on-write blocks of the segment being appended.
    st._max = (quota - RESERVE * 4096) // segment
    if st._max < 2:
        raise ValueError("quota must hold 2 segments plus 32 KiB")
    st._lim = segment - (segment >> 9) - 16   # littlefs keeps block pointers in file blocks
    st._dir = path.rstrip("/")
    st._clock = clock
    st._rand = urandom
    m = (max_payload + 5) // 16 * 16 + 16
    st.max_payload = max_payload
    st._maxct = m
    st._rec = bytearray(_OVER + m)
    st._rmv = memoryview(st._rec)
    st._pt = bytearray(16 + m)     # random block (makes the IV), then the plaintext
    st._pmv = memoryview(st._pt)
    st._f = None
    st.broken = False
    st.next_seq = 1
    st._hwf = hw
    st._hwm = 0x7FFFFFFF   # no high-water file: nothing to reserve (_resume sets it)
    later = recover(st, key)
    st._enc = aes(st._ek, 2, bytes(16))
    _resume(st, later)


def _high_water(st, later):
    # The store's high-water file: numbers below its mark may have been used before. Resume
    # from it (logging the skip) and let the next append reserve the next block. A missing or
    # unreadable file (first start, or lost) gives no mark: the log's own numbers are all there is.
    try:
        with open(st._hwf) as f:
            mark = int(f.read())
    except (OSError, ValueError):
        mark = 0
    if mark > st.next_seq:
        later.append((SKIP, struct.pack("<III", st.next_seq, mark, BLOCK)))
        st.next_seq = mark
    st._hwm = st.next_seq   # the first append writes a new mark


def reopen(st):
    """Store.append after the store closed itself on a failed write (st.broken): recover the
    folder as opening does (a torn record is cut and logged), with the keys already derived.
    This module and logread are dropped again afterwards."""
    import sys
    try:
        _resume(st, recover(st, None))
        st.broken = False
    except Exception:
        st._broke()   # (a failed roll leaves it closed, or on seg.tmp): broken, tried again next time
        raise
    finally:
        # A Reader in use keeps its own copy of logread alive; the next one loads it again.
        sys.modules.pop("logopen", None)
        sys.modules.pop("logread", None)


def _resume(st, later):
    if st._hwf:
        _high_water(st, later)
    if st._f is None:
        st._roll()
    for kind, payload in later:   # what recovery did: DROP and CUT records
        st.append(kind, payload, True)


def recover(st, key):
    """Open the store's folder for `st` (a logstore.Store): derive the keys (unless key is
    None: derived already), list the segments, finish an interrupted drop, find the next
    sequence number, cut a torn record off the last segment and reopen it for appending.
    What it did that must be logged is returned as [(kind, payload)]."""
    if key is not None:
        from cryptokit import pads
        st._ek, mk, st._kid = keys(key)
        st._ip, st._op = pads(mk)
    d = st._dir
    try:
        os.stat(d)
    except OSError:
        os.mkdir(d)
    nums = []
    for name in os.listdir(d):
        if name.endswith(".tmp"):
            os.remove(d + "/" + name)   # an unfinished roll or cut; its source is intact
        elif len(name) == 12 and name.endswith(".seg"):
            try:
                nums.append(int(name[:8], 16))
            except ValueError:
                pass
    nums.sort()
    heads = [head(st, s) for s in nums]
    heads = [h if h and h[4] else None for h in heads]
    # The segments as one flat list [segno, first_seq, segno, first_seq, ...]: a list per
    # segment would cost ~70 bytes of heap each for the device's whole life (up to 14).
    segs = []
    for s, h in zip(nums, heads):
        segs.append(s)
        segs.append(h[0] if h else 0)
    later = []
    st._segs = segs
    st._sid = None
    last = len(nums) - 1
    while last >= 0 and not heads[last]:
        last -= 1
    if last < 0:
        st._sid = st._rand(8)   # a new store (or none of the old segments is ours)
        return later
    first, oldest, st._sid, tag, _ = heads[last]
    segno = nums[last]
    # Segments older than the newest header's `oldest` were dropped by a roll that
    # lost power before deleting them: finish the drop (it is already logged).
    while segs[0] < oldest and segs[0] != segno:
        os.remove(st._name(segs[0]))
        del segs[:2]
    name = st._name(segno)
    mv = st._rmv
    with open(name, "rb") as f:
        size = f.seek(0, 2)
        pos = _SEGHDR
        seq = first - 1
        r = -1
        while pos < size:
            r = check(st, f, pos, size, mv, tag)
            if r > 0:
                seq = max(seq, _seq(mv))   # never reuse a number, even after reordered records
                pos += r
                continue
            # Damage (kept as evidence: the reader reports it and skips it), or, if no
            # valid record follows, a record torn by a power cut.
            nxt = resync(st, f, pos, size, st._rec, mv, tag)
            if r == 0 and nxt >= size:
                break
            r = -1
            pos = nxt
    st.next_seq = seq + 1
    if segno != nums[-1]:
        return later    # the newest segment is not ours: start a new one after it
    if r == 0 and pos < size:
        # A torn record at the end (a power cut inside a write): keep what is before it.
        if len(segs) // 2 >= st._max:
            s, f0 = segs[0], segs[1]
            del segs[:2]
            os.remove(st._name(s))
            later.append((DROP, struct.pack("<III", s, f0, segs[1])))
        tmp = d + "/cut.tmp"
        with open(name, "rb") as src:
            with open(tmp, "wb") as dst:
                left = pos
                while left:
                    n = min(left, len(st._rec))
                    src.readinto(mv[:n])
                    dst.write(mv[:n])
                    left -= n
        os.rename(tmp, name)
        later.append((CUT, struct.pack("<III", segno, pos, size - pos)))
        size = pos
    st._cur = segno
    st._tag = tag
    st._pos = size
    st._f = open(name, "ab")
    return later
