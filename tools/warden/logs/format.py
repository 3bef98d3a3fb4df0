"""The device log store's format, read (and, for tests, written) on the host: lib/logstore.py's bytes.

This module works on bytes it is given: it must not read the project state, a twin's flash or
a board (warden.logs.pull gets the segments and the device's key).

A store is a folder of segment files ``<segno:08x>.seg``. Integers are little-endian.

Segment header (52 bytes)::

    "WLOG" version:u8 flags:u8 header_len:u16 segno:u32 first_seq:u32 oldest:u32
    store_id:8s key_id:8s  tag:16s = HMAC(mac_key, the 36 bytes before)[:16]

Record (40 bytes + ciphertext)::

    "Wr" ct_len:u16 seq:u32 iv:16s ct:ct_len  tag:16s = HMAC(mac_key, segment tag + "Wr"...ct)[:16]
    ct = AES-256-CBC(enc_key, iv, kind:u8 time:u32 payload + PKCS#7 padding)

Keys: HKDF-SHA-256(ikm=the device's 256-bit log key, salt=b"warden-log-v1", info=b"enc" | b"mac"
(32 bytes each) | b"key-id" (8 bytes, stored in every header so a wrong key is told apart from
tampering)). The record MAC covers its segment's tag, which binds the segment number, the store
id and the key id: a record moved to another segment or store, or from another device, fails.

`read_log` verifies and decrypts everything it can and lists every integrity problem; it never
raises on damaged input, only on a key that matches none of the segments (`LogKeyError`).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
import re
import struct
from dataclasses import asdict, dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import WardenError

VERSION = 1
MAGIC = b"WLOG"
RMAGIC = b"Wr"
HFMT = "<4sBBHIII8s8s"
HLEN = struct.calcsize(HFMT)      # 36
SEGHDR = HLEN + 16                # 52
RH = 24                           # record header: magic, ct_len, seq, iv
OVER = RH + 16
SALT = b"warden-log-v1"
SEGMENT_RE = re.compile(r"^([0-9a-f]{8})\.seg$")

EVENT, READING, DROP, CUT, SKIP = 1, 2, 16, 17, 18
KIND_NAMES = {EVENT: "event", READING: "reading", DROP: "drop", CUT: "cut", SKIP: "skip"}

# Problem kinds, in the words `warden logs show` prints them.
PROBLEMS = {
    "foreign-segment": "written with another key: a segment spliced in from another device",
    "tampered-header": "segment header fails authentication",
    "not-a-segment": "not a log segment",
    "unsupported-version": "segment format version this warden does not know",
    "renamed-segment": "segment stored under another number: moved or replayed",
    "spliced-segment": "segment of another store of this device: spliced in",
    "replayed-segment": "segment that had been dropped is back: replayed",
    "missing-segment": "segment file deleted",
    "tampered": "bytes that fail authentication: tampered or damaged",
    "truncated": "segment ends inside a record",
    "missing": "sequence numbers missing: records deleted",
    "out-of-order": "sequence number goes back: records swapped or moved",
    "duplicate": "sequence number seen twice: a record replayed",
    "rollback": "the log ends before what an earlier pull saw: records cut off the end or an old log restored",
    "new-store": "the log was replaced since the last pull",
    "cut-tail": "records an earlier pull saw are gone, and the device has written past them: the tail was cut",
    "lost-before-restart": "the device's high-water mark is past the log's end by more than one block: "
                           "records were cut off or a segment lost before it restarted",
}


class LogError(WardenError):
    pass


class LogKeyError(LogError):
    pass


# -- keys and crypto -------------------------------------------------------------------------------
def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA-256 (RFC 5869)."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes((i,)), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


@dataclass(frozen=True)
class Keys:
    enc: bytes
    mac: bytes
    key_id: bytes

    @classmethod
    def derive(cls, log_key: bytes) -> "Keys":
        if not isinstance(log_key, (bytes, bytearray)) or len(log_key) != 32:
            raise LogKeyError("a log key is 32 bytes", hint="use the key from the device registry")
        return cls(hkdf(log_key, SALT, b"enc"), hkdf(log_key, SALT, b"mac"), hkdf(log_key, SALT, b"key-id", 8))

    def tag(self, *parts) -> bytes:
        h = hmac.new(self.mac, digestmod=hashlib.sha256)
        for p in parts:
            h.update(p)
        return h.digest()[:16]


def _aes(key, iv):
    return Cipher(algorithms.AES(key), modes.CBC(iv))


# -- writing (the same bytes as the device; used by tests and for building logs) ------------------
class SegmentWriter:
    """Build one segment's bytes exactly as lib/logstore.py writes them."""

    def __init__(self, log_key: bytes, segno: int, first_seq: int, oldest: int | None = None,
                 store_id: bytes = bytes(8), version: int = VERSION):
        self.keys = Keys.derive(log_key)
        self.segno = segno
        self.next_seq = first_seq
        head = struct.pack(HFMT, MAGIC, version, 0, SEGHDR, segno, first_seq,
                           segno if oldest is None else oldest, store_id, self.keys.key_id)
        self.tag = self.keys.tag(head)
        self.data = bytearray(head + self.tag)
        self.offsets = []

    def record(self, kind: int, payload: bytes, time: int = 0, seq: int | None = None,
               iv: bytes | None = None) -> bytes:
        seq = self.next_seq if seq is None else seq
        iv = os.urandom(16) if iv is None else iv
        pt = struct.pack("<BI", kind, time & 0xFFFFFFFF) + bytes(payload)
        pad = 16 - len(pt) % 16
        pt += bytes((pad,)) * pad
        enc = _aes(self.keys.enc, iv).encryptor()
        ct = enc.update(pt) + enc.finalize()
        body = RMAGIC + struct.pack("<HI", len(ct), seq) + iv + ct
        rec = body + self.keys.tag(self.tag, body)
        self.offsets.append(len(self.data))
        self.data += rec
        self.next_seq = seq + 1
        return rec


# -- reading ---------------------------------------------------------------------------------------
@dataclass
class Record:
    seq: int
    kind: int
    time: int
    payload: bytes
    segment: int
    offset: int
    tag: bytes = b""      # the record's MAC: what a later pull checks it is still the same record

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, f"kind-{self.kind}")

    def fields(self) -> dict:
        """level / source / message for display (events); message for the others."""
        p = self.payload
        if self.kind == EVENT:
            text = p.decode("utf-8", "replace")
            level, _, rest = text.partition(" ")
            source, sep, message = rest.partition(": ")
            if not sep:
                return {"level": "", "source": "", "message": text}
            return {"level": level, "source": source, "message": message}
        if self.kind == READING:
            r = self.reading()
            if r is None:
                return {"level": "", "source": "reading", "message": p.hex()}
            values = " ".join("null" if v is None else "%g" % v for v in r["values"])  # None: a failed sensor
            return {"level": "", "source": "reading", "message": f"#{r['seq']} values {values}"}
        if self.kind == DROP and len(p) == 12:
            s, first, nxt = struct.unpack("<III", p)
            return {"level": "INFO", "source": "log",
                    "message": f"dropped segment {s} (seq {first}..{nxt - 1}) to stay within the quota"}
        if self.kind == CUT and len(p) == 12:
            s, off, n = struct.unpack("<III", p)
            return {"level": "WARN", "source": "log",
                    "message": f"cut a torn record off segment {s} at offset {off} ({n} bytes): a power cut"}
        if self.kind == SKIP and len(p) == 12:
            first, nxt, block = struct.unpack("<III", p)
            lost = nxt - first > block
            return {"level": "WARN" if lost else "INFO", "source": "log",
                    "message": f"skipped seq {first}..{nxt - 1} at opening (the high-water mark; "
                               + ("more than one block: records were lost" if lost else "reserved, unused")
                               + ")"}
        return {"level": "", "source": self.kind_name, "message": p.hex()}

    def to_json(self) -> dict:
        d = {"type": "record", "seq": self.seq, "kind": self.kind_name, "time": self.time,
             "utc": iso_time(self.time), "segment": self.segment, "offset": self.offset}
        d.update(self.fields())
        if self.kind == READING:
            r = self.reading()
            if r is not None:
                d["reading"] = r
        return d

    def reading(self) -> dict | None:
        """A READING record's compact form (firmware/sensors.py): <II seq, ts, then float32
        values in the order of the device's sorted sensor names."""
        p = self.payload
        if len(p) < 8 or (len(p) - 8) % 4:
            return None
        seq, ts, *values = struct.unpack("<II%df" % ((len(p) - 8) // 4), p)
        return {"seq": seq, "ts": ts, "values": [None if v != v else round(v, 4) for v in values]}


def iso_time(t: int) -> str | None:
    if t < 946684800:   # before 2000: the clock was not set
        return None
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Problem:
    kind: str
    detail: str
    segment: int | None = None
    offset: int | None = None
    seqs: tuple | None = None     # (first, last) sequence numbers concerned

    def to_json(self) -> dict:
        d = asdict(self)
        d = {"type": "problem", "problem": d.pop("kind"), **d}
        if self.seqs is not None:
            d["seqs"] = list(self.seqs)
        return d


@dataclass
class Segment:
    name: str
    segno: int
    size: int
    status: str = "ok"           # ok, or the problem kind that excludes it
    first_seq: int = 0
    oldest: int = 0
    store_id: bytes = b""
    key_id: bytes = b""
    tag: bytes = b""
    records: int = 0
    hseg: int = 0
    version: int = 0
    magic: bool = False


@dataclass
class LogReport:
    records: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    segments: list = field(default_factory=list)
    store_id: bytes | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def last_seq(self) -> int | None:
        return max((r.seq for r in self.records), default=None)


def _header(name: str, segno: int, data: bytes, keys: Keys) -> Segment:
    """Parse a segment header; status "ok" only if it verifies and is segment `segno` of this key."""
    seg = Segment(name, segno, len(data))
    if len(data) < SEGHDR:
        seg.status = "truncated" if data[:4] == MAGIC[:len(data[:4])] else "not-a-segment"
        return seg
    magic, ver, _flags, hlen, hseg, first, oldest, sid, kid = struct.unpack_from(HFMT, data)
    seg.first_seq, seg.oldest, seg.store_id, seg.key_id = first, oldest, sid, kid
    seg.tag = data[HLEN:SEGHDR]
    seg.hseg, seg.version, seg.magic = hseg, ver, magic == MAGIC
    if not hmac.compare_digest(keys.tag(data[:HLEN]), seg.tag):
        seg.status = "unverified"      # decided once its records are tried
    elif ver != VERSION or hlen != SEGHDR:
        seg.status = "unsupported-version"
    elif hseg != segno:
        seg.status = "renamed-segment"
    return seg


def _header_problem(seg: Segment, keys: Keys, verified_records: int) -> Problem | None:
    n = seg.name
    if seg.status == "truncated":
        return Problem("truncated", f"{n}: {seg.size} bytes, shorter than a segment header", seg.segno, 0)
    if seg.status == "not-a-segment":
        return Problem("not-a-segment", f"{n}: no segment header", seg.segno, 0)
    if seg.status == "unsupported-version":
        return Problem("unsupported-version", f"{n}: format version {seg.version} (this warden reads {VERSION})",
                       seg.segno, 0)
    if seg.status == "renamed-segment":
        return Problem("renamed-segment", f"{n}: holds segment {seg.hseg} (moved or replayed; "
                       f"{verified_records} records left out)", seg.segno, 0)
    if seg.status == "tampered-header":
        return Problem("tampered-header", f"{n}: the segment header fails authentication "
                       f"({verified_records} records in it still verify and are shown)", seg.segno, 0)
    if seg.status == "foreign-segment":
        return Problem("foreign-segment", f"{n}: written with another key (key id {seg.key_id.hex()}, this "
                       f"device's is {keys.key_id.hex()}): spliced in from another device", seg.segno, 0)
    return None


def _walk(seg: Segment, data: bytes, keys: Keys):
    """(records, problems) of one segment whose header verified."""
    records, problems = [], []
    size = len(data)

    def check(pos):
        # Length of a valid record at pos, 0 if one starts there but runs past the end, -1 if none.
        if size - pos < 8:
            return 0
        if data[pos:pos + 2] != RMAGIC:
            return -1
        n, seq = struct.unpack_from("<HI", data, pos + 2)
        if n == 0 or n % 16:
            return -1
        if pos + OVER + n > size:
            return 0
        body = data[pos:pos + RH + n]
        if not hmac.compare_digest(keys.tag(seg.tag, body), data[pos + RH + n:pos + OVER + n]):
            return -1
        return OVER + n

    def resync(pos):
        p = pos + 1
        while True:
            p = data.find(RMAGIC, p)
            if p < 0 or size - p < OVER + 16:
                return size
            if check(p) > 0:
                return p
            p += 1

    pos = SEGHDR
    while pos < size:
        r = check(pos)
        nxt = resync(pos) if r <= 0 else 0
        if r == 0 and nxt >= size:
            problems.append(Problem("truncated", f"{seg.name}: ends inside a record at offset {pos} "
                                    f"({size - pos} bytes): a power cut while writing, or a cut copy",
                                    seg.segno, pos))
            break
        if r <= 0:
            problems.append(Problem("tampered", f"{seg.name}: {nxt - pos} bytes at offset {pos} fail "
                                    "authentication (flipped bits, edited or inserted bytes)", seg.segno, pos))
            pos = nxt
            continue
        n = r - OVER
        seq = struct.unpack_from("<I", data, pos + 4)[0]
        iv = data[pos + 8:pos + RH]
        dec = _aes(keys.enc, iv).decryptor()
        pt = dec.update(data[pos + RH:pos + RH + n]) + dec.finalize()
        pad = pt[-1]
        if not 1 <= pad <= 16 or len(pt) - pad < 5 or pt[-pad:] != bytes((pad,)) * pad:
            problems.append(Problem("tampered", f"{seg.name}: record at offset {pos} authenticates but does "
                                    "not decrypt (a writer bug?)", seg.segno, pos, (seq, seq)))
        else:
            kind, t = struct.unpack_from("<BI", pt)
            records.append(Record(seq, kind, t, bytes(pt[5:len(pt) - pad]), seg.segno, pos,
                                  bytes(data[pos + RH + n:pos + OVER + n])))
        pos += r
    return records, problems


def _ranges(numbers):
    """Sorted ints -> [(first, last)] runs."""
    out = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return [tuple(r) for r in out]


def read_log(files: dict, log_key: bytes, mark: dict | None = None) -> LogReport:
    """Verify and decrypt a store's segment files ({file name: bytes}) with `log_key`.

    Every record that verifies is returned (oldest first), with every integrity problem found.
    `mark` ({"store_id": hex, "seq": n}) is what an earlier pull saw: a log that now ends before
    it is reported as a rollback. Raises LogKeyError only if no segment was written with this key.
    """
    keys = Keys.derive(log_key)
    report = LogReport()
    problems = report.problems
    segs = []
    for name in sorted(files):
        m = SEGMENT_RE.match(name)
        if not m:
            if not name.endswith(".tmp"):
                problems.append(Problem("not-a-segment", f"{name}: not a segment file name"))
            continue
        segs.append(_header(name, int(m.group(1), 16), bytes(files[name]), keys))
    report.segments = segs
    if not segs:
        raise LogError("no log segments to read", hint="pull them first: warden logs pull THING")

    # Records verify against the tag stored in their segment's header, so they are tried even
    # where the header itself does not verify: one damaged header byte loses no record.
    walked = {}
    for s in segs:
        if s.status in ("ok", "unverified"):
            walked[s.segno] = _walk(s, bytes(files[s.name]), keys)
            s.records = len(walked[s.segno][0])
            if s.status == "unverified":
                s.status = "tampered-header" if s.records or s.key_id == keys.key_id else (
                    "foreign-segment" if s.magic else "not-a-segment")
        elif s.status == "renamed-segment":
            s.records = len(_walk(s, bytes(files[s.name]), keys)[0])
    if not any(s.status in ("ok", "tampered-header", "renamed-segment", "unsupported-version") for s in segs):
        ids = sorted({s.key_id.hex() for s in segs if s.status == "foreign-segment"})
        if ids:
            raise LogKeyError(f"wrong key: the log was written with key id {', '.join(ids)}; "
                              f"this key's id is {keys.key_id.hex()}",
                              hint="use the registry key of the device the log came from (--thing)")

    good = [s for s in segs if s.status == "ok"]
    if good:
        report.store_id = good[-1].store_id
    for s in good:
        if s.store_id != report.store_id:
            s.status = "spliced-segment"
    # A segment older than the `oldest` a later segment recorded had been dropped.
    later_oldest = 0
    for s in reversed(good):
        if s.status == "ok" and s.segno < later_oldest:
            s.status = "replayed-segment"
        if s.status == "ok":
            later_oldest = max(later_oldest, s.oldest)
    dropped_segs, dropped_seqs, skipped_seqs = set(), [], []
    for s in segs:
        if s.status in ("ok", "tampered-header"):
            for r in walked[s.segno][0]:
                if r.kind == DROP and len(r.payload) == 12:
                    d, first, nxt = struct.unpack("<III", r.payload)
                    dropped_segs.add(d)
                    dropped_seqs.append((first, nxt - 1))
                elif r.kind == SKIP and len(r.payload) == 12:
                    # Numbers the device skipped at a restart: never used, unless more than a
                    # block was skipped (lib/logstore.py: the high-water mark)
                    first, nxt, block = struct.unpack("<III", r.payload)
                    skipped_seqs.append((first, nxt - 1))
                    if nxt - first > block:
                        problems.append(Problem(
                            "lost-before-restart",
                            f"record {r.seq} says the log ended at {first - 1} when the device "
                            f"restarted, but it had numbered records up to at least {nxt - block}: "
                            "records were cut off the end or a segment lost", r.segment, r.offset,
                            (first, nxt - block)))

    for s in segs:
        if s.status == "ok" and s.segno in dropped_segs:
            s.status = "replayed-segment"
        recs, probs = walked.get(s.segno, ([], []))
        if s.status == "spliced-segment":
            problems.append(Problem("spliced-segment", f"{s.name}: belongs to store {s.store_id.hex()}, "
                                    f"not this log's {report.store_id.hex()} ({len(recs)} records left out)",
                                    s.segno, 0, _span(recs)))
        elif s.status == "replayed-segment":
            problems.append(Problem("replayed-segment", f"{s.name}: was dropped by the device, yet is here "
                                    f"({len(recs)} records left out): replayed, or a drop a power cut "
                                    "interrupted (the device finishes it at its next start)",
                                    s.segno, 0, _span(recs)))
        else:
            prob = _header_problem(s, keys, s.records)
            if prob:
                problems.append(prob)
            if s.status in ("ok", "tampered-header"):
                problems.extend(probs)
                report.records.extend(recs)

    live = [s for s in good if s.status == "ok"]
    present = {s.segno for s in segs}
    if live:
        base = max(s.oldest for s in live)
        for n in range(base, live[-1].segno):
            if n not in present and n not in dropped_segs:
                problems.append(Problem("missing-segment", f"segment {n:08x}.seg is missing (deleted)", n))

    # Sequence numbers: every number from the first segment's first_seq to the last seen,
    # in order, once; numbers in dropped segments are accounted for by their DROP records,
    # numbers skipped at a restart by SKIP records.
    seen = set()
    high = None
    for r in report.records:
        if r.seq in seen:
            problems.append(Problem("duplicate", f"record {r.seq} appears again (segment {r.segment}, "
                                    f"offset {r.offset}): replayed", r.segment, r.offset, (r.seq, r.seq)))
        elif high is not None and r.seq < high:
            problems.append(Problem("out-of-order", f"record {r.seq} comes after {high} (segment {r.segment}, "
                                    f"offset {r.offset}): swapped or moved", r.segment, r.offset, (r.seq, r.seq)))
        seen.add(r.seq)
        high = r.seq if high is None else max(high, r.seq)
    if live and high is not None:
        start = live[0].first_seq
        gone = [n for n in range(start, high + 1)
                if n not in seen and not any(a <= n <= b for a, b in dropped_seqs + skipped_seqs)]
        for a, b in _ranges(gone):
            problems.append(Problem("missing", f"records {a}..{b} are missing (deleted)"
                                    if a != b else f"record {a} is missing (deleted)", None, None, (a, b)))
    if mark and report.store_id is not None:
        if mark.get("store_id") and mark["store_id"] != report.store_id.hex():
            problems.append(Problem("new-store", f"the log is store {report.store_id.hex()}, an earlier pull "
                                    f"read store {mark['store_id']}: the log folder was wiped or replaced"))
        elif mark.get("seq") and (high or 0) < mark["seq"]:
            problems.append(Problem("rollback", f"the log ends at record {high}, an earlier pull saw record "
                                    f"{mark['seq']}: records cut off the end, or an old log restored",
                                    None, None, ((high or 0) + 1, mark["seq"])))
        elif mark.get("seq") and mark.get("tag"):
            # Pull-to-pull continuity that binds contents: the last record the earlier pull saw
            # must still be here, the same record, unless the device dropped its segment.
            n = mark["seq"]
            same = [r for r in report.records if r.seq == n]
            if same and same[0].tag.hex() != mark["tag"]:
                problems.append(Problem("cut-tail", f"record {n} is not the record an earlier pull saw: "
                                        "the log was cut and written again", None, None, (n, n)))
            elif not same and not any(a <= n <= b for a, b in dropped_seqs):
                problems.append(Problem("cut-tail", f"record {n}, which an earlier pull saw, is gone, and the "
                                        f"log goes on to {high}: its tail was cut", None, None, (n, n)))
    return report


def _span(recs):
    return (min(r.seq for r in recs), max(r.seq for r in recs)) if recs else None
