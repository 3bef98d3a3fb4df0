# Device tests for the log store (lib/logstore.py, logopen.py, logread.py, cryptokit.py) and the
# device log that feeds it (firmware/eventlog.py), under the real micropython.
# devtest: heap=1m
import gc
import os
import struct
import sys
import time

import devtest
from devtest import raises

import cryptokit
import logstore
from logstore import BLOCK, CUT, DROP, EVENT, READING, SKIP

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


_ERASED = b"\xff" * 4096


class RamDisk:
    """A block device in RAM with the esp32.Partition interface, counting bytes written."""

    def __init__(self, blocks):
        self.n = blocks
        self.b = bytearray(b"\xff" * (blocks * 4096))
        self.mv = memoryview(self.b)
        self.written = 0

    def readblocks(self, n, buf, off=0):
        o = n * 4096 + off
        buf[:] = self.mv[o:o + len(buf)]

    def writeblocks(self, n, buf, off=None):
        if off is None:
            for b in range(n, n + (len(buf) + 4095) // 4096):
                self.ioctl(6, b)
            off = 0
        o = n * 4096 + off
        self.mv[o:o + len(buf)] = buf
        self.written += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return 4096
        if op == 6:
            self.mv[arg * 4096:arg * 4096 + 4096] = _ERASED
            return 0
        return None


_mounted = []


def ramfs(blocks=80):
    """A fresh littlefs2 on a RAM disk, mounted; returns (mount point, disk)."""
    disk = RamDisk(blocks)
    os.VfsLfs2.mkfs(disk)
    point = "/ram%d" % len(_mounted)
    os.mount(os.VfsLfs2(disk), point)
    _mounted.append(point)
    return point, disk


def tmpdir(name):
    p = devtest.tmp + "/" + name
    os.mkdir(p)
    return p


def records(st, from_seq=0):
    """[(seq, kind, time, payload)] and [problems] read back through a Reader."""
    probs = []
    r = st.reader(from_seq, lambda *a: probs.append(a))
    out = []
    while r.next():
        out.append((r.seq, r.kind, r.time, bytes(r.payload)))
    r.close()
    return out, probs


def clock():
    return 1700000000


class FailingFlash:
    """A segment file whose writes fail as a broken flash's do (EIO)."""
    def write(self, b):
        raise OSError(5)

    def close(self):
        raise OSError(5)


def break_store(st):
    """Make `st`'s next write fail: the store then closes itself (broken)."""
    real = st._f
    st._f = FailingFlash()
    raises(OSError, st.append, READING, b"not kept", True)
    real.close()
    assert st._f is None and st.broken


def drop_open_code():
    """Drop the modules opening a store loads (they stay out of the heap on a device)."""
    for m in ("logopen", "logread", "cryptokit"):
        sys.modules.pop(m, None)


# -- cryptokit ----------------------------------------------------------------------------------
def test_hmac_matches_rfc4231():
    k = b"\x0b" * 20
    assert cryptokit.hmac_sha256(k, b"Hi There") == bytes.fromhex(
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    assert cryptokit.hmac_sha256(b"Jefe", b"what do ya want for nothing?") == bytes.fromhex(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    long_key = b"\xaa" * 131   # longer than a block: hashed first
    assert cryptokit.hmac_sha256(long_key, b"Test Using Larger Than Block-Size Key - Hash Key First") == \
        bytes.fromhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")


def test_hkdf_matches_rfc5869():
    okm = cryptokit.hkdf(b"\x0b" * 22, bytes(range(13)), bytes(range(0xF0, 0xFA)), 42)
    assert okm == bytes.fromhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                                "34007208d5b887185865")
    okm = cryptokit.hkdf(b"\x0b" * 22, b"", b"", 42)   # no salt: 32 zero bytes
    assert okm == bytes.fromhex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
                                "9d201395faa4b61a96c8")


def test_equal_is_exact():
    assert cryptokit.equal(b"abc", b"abc") and cryptokit.equal(b"", b"")
    assert not cryptokit.equal(b"abc", b"abd") and not cryptokit.equal(b"abc", b"ab")
    assert not cryptokit.equal(b"\x00" * 16, b"\x00" * 15 + b"\x80")


# -- writing and reading ------------------------------------------------------------------------
def test_round_trip_all_kinds_and_reopen():
    d = tmpdir("rt") + "/log"
    st = logstore.Store(d, KEY, clock=clock)
    want = [(EVENT, b"INFO boot: hello"), (READING, b'{"seq":1,"values":{"t":21.5}}'), (7, b""),
            (255, bytes(range(256))[:240]), (EVENT, "WARN x: utf-8 \u00e9".encode())]
    seqs = [st.append(k, p, i == 2) for i, (k, p) in enumerate(want)]
    assert seqs == [1, 2, 3, 4, 5] and st.next_seq == 6
    got, probs = records(st)
    assert probs == [] and [(k, p) for _, k, _, p in got] == want and all(t == clock() for _, _, t, _ in got)
    st.close()
    st = logstore.Store(d, KEY, clock=clock)
    assert st.next_seq == 6
    assert st.append(READING, b"after reopen", True) == 6
    got, probs = records(st)
    assert probs == [] and [s for s, _, _, _ in got] == [1, 2, 3, 4, 5, 6] and got[-1][3] == b"after reopen"
    assert raises(ValueError, st.append, EVENT, b"x" * (st.max_payload + 1))
    assert raises(ValueError, st.append, 256, b"x") and st.append(EVENT, b"still open") == 7
    st.close()
    assert "closed" in str(raises(OSError, st.append, EVENT, b"x"))


def test_out_of_memory_while_sealing_a_record_keeps_the_store_open():
    # On a full heap the MemoryError comes before anything reaches the file: the store must
    # stay open (it used to close for the rest of the boot, and every later reading was lost).
    d = tmpdir("oom") + "/log"
    st = logstore.Store(d, KEY, clock=clock)
    assert st.append(EVENT, b"before", True) == 1
    rand = st._rand

    def no_memory(n):
        raise MemoryError("memory allocation failed")
    st._rand = no_memory
    raises(MemoryError, st.append, READING, b"lost: no heap", True)
    st._rand = rand
    assert st.append(READING, b"after", True) == 2   # open, and no number was used up
    got, probs = records(st)
    assert probs == [] and [(s, p) for s, _, _, p in got] == [(1, b"before"), (2, b"after")]
    st.close()
    st = logstore.Store(d, KEY, clock=clock)          # and the files agree after a reopen
    assert st.next_seq == 3
    st.close()


def test_a_failed_write_closes_the_store_and_the_next_append_reopens_it():
    # A write that fails (here the flash reports EIO) leaves the segment's tail unknown: the
    # store closes itself, and the next append recovers the folder (as opening does) and goes
    # on. It used to stay closed until the next boot, losing every reading kept meanwhile.
    d = tmpdir("reopen") + "/log"
    st = logstore.Store(d, KEY, clock=clock)
    assert st.append(READING, b"before", True) == 1
    break_store(st)
    assert st.append(READING, b"after", True) == 2
    assert not st.broken
    got, probs = records(st)
    assert probs == [] and [(s, p) for s, _, _, p in got] == [(1, b"before"), (2, b"after")], (got, probs)
    st.close()      # closed for good
    assert not st.broken and "closed" in str(raises(OSError, st.append, EVENT, b"x"))


def test_a_full_log_costs_little_more_heap_than_an_empty_one():
    # The store keeps its segment list for the device's whole life: two small ints per segment
    # (it was a list per segment, ~70 bytes each: ~1 KB more heap once the log was full).
    def resident(d, records):
        st = logstore.Store(d, KEY, segment=4096, quota=4096 * 22)    # 14 segments at most
        for _ in range(records):
            st.append(EVENT, b"x" * 200)
        st.close()
        st = None
        drop_open_code()
        gc.collect()
        a = gc.mem_alloc()
        st = logstore.Store(d, KEY, segment=4096, quota=4096 * 22)
        drop_open_code()
        gc.collect()
        n = gc.mem_alloc() - a, len([f for f in os.listdir(d) if f.endswith(".seg")])
        st.close()
        return n
    resident(tmpdir("segs0") + "/log", 1)   # first: names (qstrs) and caches that stay
    empty, n1 = resident(tmpdir("segs1") + "/log", 1)
    full, n14 = resident(tmpdir("segs14") + "/log", 300)
    assert n1 == 1 and n14 == 14, (n1, n14)
    assert full - empty <= 13 * 24, (empty, full)   # measured: 224 bytes (928 as lists)


def test_a_reopen_that_fails_leaves_the_store_broken_not_closed():
    # Reopening may itself fail (here: starting a new segment); the store must stay "broken"
    # (tried again at the next append), never end up closed for good or writing to seg.tmp.
    d = tmpdir("reopen2") + "/log"
    st = logstore.Store(d, KEY, clock=clock)
    assert st.append(READING, b"before", True) == 1
    break_store(st)
    with open(st._name(st._cur), "r+b") as f:   # the newest header no longer verifies: a new segment
        f.write(b"XXXX")

    def no_file(*args):
        raise OSError(28)    # ENOSPC
    logstore.open = no_file
    raises(OSError, st.append, READING, b"not kept either", True)
    logstore.__dict__.pop("open")
    assert st.broken and st._f is None
    seq = st.append(READING, b"after", True)
    got, probs = records(st)
    assert got[-1][0] == seq and got[-1][3] == b"after", (got, probs)
    st.close()


def test_reader_goes_on_after_a_memory_error():
    # A MemoryError (the outbox's reader loads on top of a session) is not a problem of the
    # log: next() raises it, and called again reads every record (it used to skip the segment,
    # and the outbox then never sent its readings).
    import logread
    d = tmpdir("rmem") + "/log"
    st = logstore.Store(d, KEY, clock=clock)
    for i in range(5):
        st.append(READING, b"r%d" % i, True)
    r = st.reader(1)

    def no_memory(*args):
        raise MemoryError("memory allocation failed")
    logread.open = no_memory        # opening the segment fails, as on a full heap
    raises(MemoryError, r.next)
    logread.__dict__.pop("open")
    got = []
    while r.next():
        got.append(bytes(r.payload))
    assert got == [b"r0", b"r1", b"r2", b"r3", b"r4"], got
    st.close()


def test_nothing_readable_on_flash():
    d = tmpdir("plain") + "/log"
    st = logstore.Store(d, KEY)
    for i in range(20):
        st.append(EVENT, b"INFO secret: the password is hunter2 #%d" % i)
    st.close()
    for name in os.listdir(d):
        raw = devtest.read(d + "/" + name)
        assert b"hunter2" not in raw and b"secret" not in raw and b"INFO" not in raw


def test_reader_from_sequence_number_and_follows_appends():
    d = tmpdir("from") + "/log"
    st = logstore.Store(d, KEY, segment=4096, quota=65536)
    for i in range(200):    # several segments
        st.append(READING if i % 3 else EVENT, b"r%d" % i)
    assert len(st._segs) >= 6   # 3 segments: [segno, first_seq] each
    got, probs = records(st, 150)
    assert probs == [] and [s for s, _, _, _ in got] == list(range(150, 201))
    r = st.reader(199)
    assert r.next() and r.seq == 199 and r.next() and r.seq == 200 and not r.next()
    st.append(READING, b"late")        # appended after the reader reached the end
    assert r.next() and r.seq == 201 and bytes(r.payload) == b"late" and not r.next()
    for i in range(100):               # and across a roll to a new segment
        st.append(READING, b"more %d" % i)
    n = 0
    while r.next():
        n += 1
        assert r.seq == 201 + n
    assert n == 100
    r.close()


def test_wrong_key_reads_nothing_and_reports_it():
    d = tmpdir("wk") + "/log"
    st = logstore.Store(d, KEY)
    st.append(EVENT, b"mine")
    st.close()
    st2 = logstore.Store(d, OTHER)     # another key: the old segment is not ours, a new one starts
    got, probs = records(st2)
    assert got == [] and probs[0] == ("header", 1, 0) and ("damaged", 1, 52) in probs
    st2.append(EVENT, b"theirs")
    got, probs = records(st2)
    assert [p for _, _, _, p in got] == [b"theirs"]
    st2.close()


# -- recovery -----------------------------------------------------------------------------------
def _segment_files(d):
    return sorted(n for n in os.listdir(d) if n.endswith(".seg"))


def _events(d, n, hw=None):
    """A store at `d` with events 1..n ("event 0".."event n-1"), closed."""
    st = logstore.Store(d, KEY, hw=hw)
    for i in range(n):
        st.append(EVENT, b"event %d" % i)
    st.close()


def test_torn_tail_is_cut_on_open_and_logged():
    d = tmpdir("torn") + "/log"
    _events(d, 5)
    name = d + "/" + _segment_files(d)[-1]
    good = devtest.read(name)
    # a record that starts but never finished (what a power cut inside a write leaves)
    devtest.write(name, good + b"Wr\x40\x00\x06\x00\x00\x00" + b"\x11" * 20)
    st = logstore.Store(d, KEY)
    assert st.next_seq == 7   # 1-5 events, 6 the CUT record
    got, probs = records(st)
    assert probs == []
    assert [s for s, _, _, _ in got] == [1, 2, 3, 4, 5, 6]
    seq, kind, _, payload = got[-1]
    segno, offset, cut = struct.unpack("<III", payload)
    assert kind == CUT and offset == len(good) and cut == 28
    assert devtest.read(name)[:len(good)] == good
    st.close()


def _hw_store(name):
    d = tmpdir(name)
    return d + "/log", d + "/log.hw"


def test_high_water_mark_reserves_blocks_ahead_of_use():
    d, hw = _hw_store("hw-blocks")
    st = logstore.Store(d, KEY, hw=hw)
    assert st.append(EVENT, b"first") == 1 and devtest.read(hw) == b"%d" % (1 + BLOCK)
    for i in range(BLOCK):
        st.append(EVENT, b"more")
    # the block's last number was used: the mark moved on before the next one was
    assert st.next_seq == BLOCK + 2 and devtest.read(hw) == b"%d" % (1 + 2 * BLOCK)
    st.close()


def test_a_restart_skips_the_rest_of_the_reserved_block_and_says_so():
    d, hw = _hw_store("hw-restart")
    _events(d, 10, hw)
    st = logstore.Store(d, KEY, hw=hw)
    got, probs = records(st)
    seq, kind, _, payload = got[-1]
    assert probs == [] and kind == SKIP and seq == 1 + BLOCK, (probs, got[-2:])
    assert struct.unpack("<III", payload) == (11, 1 + BLOCK, BLOCK)   # 11..64: reserved, never used
    assert st.append(EVENT, b"after") == 2 + BLOCK
    st.close()


def test_numbers_are_never_reused_after_the_tail_is_cut():
    d, hw = _hw_store("hw-cut")
    _events(d, 10, hw)
    # cut records 8-10 off the end (each record of "event N" is 56 bytes after the 52-byte header)
    name = d + "/" + _segment_files(d)[-1]
    devtest.write(name, devtest.read(name)[:52 + 7 * 56])
    st = logstore.Store(d, KEY, hw=hw)
    got, probs = records(st)
    assert probs == [] and [s for s, _, _, _ in got][:7] == [1, 2, 3, 4, 5, 6, 7]
    seq, kind, _, payload = got[-1]
    assert kind == SKIP and struct.unpack("<III", payload) == (8, 1 + BLOCK, BLOCK)
    assert st.append(EVENT, b"after the cut") == 2 + BLOCK   # not 8: 8, 9 and 10 were used
    st.close()


def test_losing_more_than_a_block_shows_in_the_skip_record():
    d, hw = _hw_store("hw-lost")
    _events(d, BLOCK + 20, hw)
    name = d + "/" + _segment_files(d)[-1]
    devtest.write(name, devtest.read(name)[:52 + 5 * 56])   # only records 1-5 are left
    st = logstore.Store(d, KEY, hw=hw)
    first, nxt, block = struct.unpack("<III", records(st)[0][-1][3])
    assert (first, nxt) == (6, 1 + 2 * BLOCK) and nxt - first > block   # the reader's "records were lost"
    st.close()


def test_without_its_mark_file_the_store_numbers_on_from_its_own_records():
    d, hw = _hw_store("hw-gone")
    _events(d, 3, hw)
    os.remove(hw)
    st = logstore.Store(d, KEY, hw=hw)
    assert st.append(EVENT, b"on") == 4 and devtest.read(hw) == b"%d" % (4 + BLOCK)
    assert [k for _, k, _, _ in records(st)[0]] == [EVENT] * 4
    st.close()


def test_a_mark_that_cannot_be_written_refuses_the_record_and_loses_nothing():
    d = tmpdir("hw-fail") + "/log"
    st = logstore.Store(d, KEY, hw=devtest.tmp + "/no/such/folder/log.hw")
    assert raises(OSError, st.append, EVENT, b"unnumbered")
    assert st.next_seq == 1 and not st.broken and records(st)[0] == []
    st._hwf = d + ".hw"      # the folder is back (say, the flash recovered): the same append works
    assert st.append(EVENT, b"numbered") == 1
    st.close()


def test_damage_in_the_middle_is_reported_and_skipped():
    d = tmpdir("mid") + "/log"
    st = logstore.Store(d, KEY)
    offsets = []
    for i in range(10):
        offsets.append(st._pos)
        st.append(EVENT, b"event %d" % i)
    st.close()
    name = d + "/" + _segment_files(d)[0]
    raw = bytearray(devtest.read(name))
    raw[offsets[4] + 30] ^= 0x04           # inside record 5's ciphertext
    raw[offsets[7] + 2] ^= 0x80            # record 8's length field: framing lost
    devtest.write(name, raw)
    st = logstore.Store(d, KEY)            # opening keeps the evidence and appends after it
    st.append(EVENT, b"after")
    got, probs = records(st)
    assert [s for s, _, _, _ in got] == [1, 2, 3, 4, 6, 7, 9, 10, 11]
    assert ("damaged", 1, offsets[4]) in probs and ("damaged", 1, offsets[7]) in probs
    assert [p[0] for p in probs].count("missing") == 2
    st.close()


def test_interrupted_roll_is_finished_on_open():
    d = tmpdir("roll") + "/log"
    st = logstore.Store(d, KEY, segment=4096, quota=4096 * 11)   # 3 segments at most
    for i in range(400):
        st.append(EVENT, b"event number %d" % i)
    st.close()
    files = _segment_files(d)
    assert len(files) == 3
    # a power cut after the rename of a new segment and before the old one was deleted:
    # put back a dropped segment below the newest header's `oldest`, plus a leftover tmp
    dropped = "%08x.seg" % (int(files[0][:8], 16) - 1)
    devtest.write(d + "/" + dropped, devtest.read(d + "/" + files[0]))
    devtest.write(d + "/seg.tmp", b"WLOG half written")
    st = logstore.Store(d, KEY, segment=4096, quota=4096 * 11)
    assert _segment_files(d) == files and "seg.tmp" not in os.listdir(d)
    st.close()


# -- quota --------------------------------------------------------------------------------------
def test_quota_holds_on_littlefs_oldest_dropped_first_and_logged():
    point, disk = ramfs(96)
    base = os.statvfs(point)
    quota = 64 * 1024
    st = logstore.Store(point + "/log", KEY, quota=quota, segment=8192, clock=clock)
    worst = 0
    for i in range(3000):
        st.append(READING, b'{"seq":%d,"values":{"t":%d.5}}' % (i, i % 40) + b"x" * (i % 90), i % 3 == 0)
        if i % 25 == 0:
            st.sync()
            used = (base[3] - os.statvfs(point)[3]) * 4096
            worst = max(worst, used)
            assert used <= quota, (i, used)
    st.sync()
    segs = _segment_files(point + "/log")
    nums = [int(n[:8], 16) for n in segs]
    assert nums == list(range(nums[0], nums[0] + len(nums))) and nums[0] > 1   # oldest went first
    got, probs = records(st)
    assert probs == [] and [s for s, _, _, _ in got] == list(range(got[0][0], st.next_seq))
    drops = [struct.unpack("<III", p) for _, k, _, p in got if k == DROP]
    assert drops, "drops are logged"
    # every DROP names the segment just below the survivors, oldest first
    assert [d[0] for d in drops] == sorted(d[0] for d in drops) and drops[-1][0] == nums[0] - 1
    assert all(d[2] > d[1] for d in drops)
    print("quota", quota, "worst used", worst)
    st.close()


# -- the device reader never raises on damage -----------------------------------------------------
def _log_for_damage(name, n=12):
    d = tmpdir(name) + "/log"
    st = logstore.Store(d, KEY, clock=clock)
    ends = []
    for i in range(n):
        st.append(EVENT if i % 2 else READING, b"record %d" % i + b"." * (i * 7))
        ends.append(st._pos)
    st.close()
    return st, d + "/" + _segment_files(d)[0], devtest.read(d + "/" + _segment_files(d)[0]), ends


def test_reader_survives_a_cut_at_every_offset():
    st, name, raw, ends = _log_for_damage("cut")
    for cut in range(len(raw) + 1):
        devtest.write(name, raw[:cut])
        got, probs = records(st)
        whole = len([e for e in ends if e <= cut])
        assert [s for s, _, _, _ in got] == list(range(1, whole + 1)), cut
        if cut < 52:
            assert probs == [("header", 1, 0)], (cut, probs)
        elif cut not in ends and cut != 52:
            assert [p[0] for p in probs] == ["truncated"], (cut, probs)
        else:
            assert probs == [], (cut, probs)


def test_reader_survives_flipped_bits():
    st, name, raw, ends = _log_for_damage("flip")
    starts = [52] + ends[:-1]
    step = max(1, len(raw) * 8 // 400)
    for bit in range(0, len(raw) * 8, step):
        bad = bytearray(raw)
        bad[bit // 8] ^= 1 << (bit % 8)
        devtest.write(name, bad)
        got, probs = records(st)
        at = bit // 8
        if at < 36:        # header fields: the stored tag still authenticates every record
            assert len(got) == len(ends) and probs and probs[0][0] == "header", (bit, probs)
        elif at < 52:      # the header's tag itself: no record of the segment verifies
            assert got == [] and probs, (bit, probs)
        else:
            hit = [i for i in range(len(ends)) if starts[i] <= at < ends[i]][0]
            assert [s for s, _, _, _ in got] == [i + 1 for i in range(len(ends)) if i != hit], (bit, probs)
            assert any(p[0] in ("damaged", "truncated") for p in probs), (bit, probs)


# -- the device log ----------------------------------------------------------------------------
def test_eventlog_writes_events_to_the_store():
    from firmware import eventlog, logboot
    try:
        d = tmpdir("ev")
        st = logboot.open_store(KEY, d + "/log", d + "/state/log.hw")
        assert st is eventlog.store() and "logopen" not in sys.modules and "cryptokit" not in sys.modules
        eventlog.info("boot", "warden test, reset cause power-on")
        eventlog.error("mqtt", "connect failed: " + "x" * 400)    # too long: cut to fit
        got, probs = records(st)
        assert probs == [] and [k for _, k, _, _ in got] == [EVENT, EVENT]
        assert got[0][3] == b"INFO boot: warden test, reset cause power-on"
        assert got[1][3].startswith(b"ERROR mqtt: connect failed: xxx") and len(got[1][3]) == st.max_payload
        assert abs(got[0][2] - time.time()) < 5
        st.close()    # a store that fails is dropped: the log goes on on the console
        eventlog.warn("x", "after the store failed")
        assert eventlog.store() is None
    finally:
        eventlog._store = None


def test_eventlog_without_a_key_is_console_only():
    from firmware import eventlog, hal, logboot
    assert hal.boot().log_key() is None      # no twin flash here: no NVS
    assert logboot.open_store(None, tmpdir("nokey") + "/log") is None and eventlog.store() is None
    eventlog.info("boot", "still logs to the console")
