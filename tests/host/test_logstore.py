"""The log store format on the host (tools/warden/logs/format.py) against the device writer (lib/logstore.py
under micropython): byte-for-byte agreement, and every kind of damage detected, located and survived."""
import json
import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from support.devrun import MP, run_mp
from warden.logs import format as ls
from warden.logs.pull import read_dir

KEY = bytes(range(32))
OTHER = bytes(range(100, 132))
SID = b"store-01"


def build_log(key=KEY, segments=3, per_segment=8, first_segno=1, first_seq=1, sid=SID, oldest=None,
              drops=()):
    """{name: bytes} of a log written by the host writer, and [(seq, segno, offset, end)] of its records.
    `drops` are DROP records (segno, first, next) put first in the first segment."""
    files, where = {}, []
    seq = first_seq
    for i in range(segments):
        segno = first_segno + i
        w = ls.SegmentWriter(key, segno, seq, oldest if oldest is not None else first_segno, sid)
        if i == 0:
            for d in drops:
                w.record(ls.DROP, struct.pack("<III", *d), 1700000000)
                where.append((w.next_seq - 1, segno, w.offsets[-1], len(w.data)))
        for j in range(per_segment):
            kind = ls.EVENT if j % 2 else ls.READING
            if kind == ls.EVENT:
                payload = b"INFO test: record %d" % w.next_seq + b"." * (j * 5)
            else:  # the compact reading of firmware/sensors.py, 1 + j values
                payload = struct.pack("<II%df" % (1 + j), w.next_seq, 1700000000 + w.next_seq,
                                      *[20 + k for k in range(1 + j)])
            w.record(kind, payload, 1700000000 + w.next_seq)
            where.append((w.next_seq - 1, segno, w.offsets[-1], len(w.data)))
        files["%08x.seg" % segno] = bytes(w.data)
        seq = w.next_seq
    return files, where


def seqs(report):
    return [r.seq for r in report.records]


def kinds(report):
    return sorted({p.kind for p in report.problems})


# -- keys and crypto ------------------------------------------------------------------------------
def test_hkdf_matches_rfc5869():
    assert ls.hkdf(b"\x0b" * 22, bytes(range(13)), bytes(range(0xF0, 0xFA)), 42).hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    assert ls.hkdf(b"\x0b" * 22, b"", b"", 42).hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")


def test_keys_are_separate_and_a_bad_key_is_refused():
    k = ls.Keys.derive(KEY)
    assert len({k.enc, k.mac}) == 2 and len(k.key_id) == 8 and k.key_id != ls.Keys.derive(OTHER).key_id
    for bad in (b"", b"x" * 31, b"x" * 33, "a string of thirty-two chars!!!!"):
        with pytest.raises(ls.LogKeyError):
            ls.Keys.derive(bad)


# -- device and host agree -------------------------------------------------------------------------
RECORDS = [(1, b"INFO boot: warden 0.1.0 on unix, reset cause power-on"),
           (2, b'{"seq":1,"ts":1700000000,"values":{"temperature":21.5}}'),
           (0, b""), (3, bytes(range(240))), (255, b"x" * 11), (1, "ERROR mqtt: caf\u00e9".encode())]


def test_device_writes_exactly_what_the_host_writes(tmp_path):
    out = tmp_path / "log"
    records = tmp_path / "records.txt"
    records.write_text("".join("%d %s\n" % (kind, payload.hex()) for kind, payload in RECORDS))
    r = run_mp(script=MP / "logstore_write.py", args=[out, records])
    assert r.returncode == 0, r.stdout + r.stderr
    dev = (out / "00000001.seg").read_bytes()

    n = [0]

    def rnd(k):
        n[0] += 1
        return bytes([(n[0] * 7 + i) & 255 for i in range(k)])

    # The device makes each IV by encrypting a fresh random block, CBC-chained from the previous
    # record (NIST SP 800-38A appendix C): IV = AES(enc_key, random XOR previous last block).
    enc = ls.Keys.derive(KEY).enc
    w = ls.SegmentWriter(KEY, 1, 1, 1, rnd(8))
    chain = bytes(16)
    for kind, payload in RECORDS:
        e = Cipher(algorithms.AES(enc), modes.ECB()).encryptor()
        iv = e.update(bytes(a ^ b for a, b in zip(rnd(16), chain))) + e.finalize()
        rec = w.record(kind, payload, 1700000000, iv=iv)
        chain = rec[-32:-16]
    assert dev == bytes(w.data)
    assert dev[:4] == b"WLOG" and dev[4] == ls.VERSION
    report = ls.read_log({"00000001.seg": dev}, KEY)
    assert report.ok and [(r.kind, r.payload) for r in report.records] == RECORDS
    assert [r.seq for r in report.records] == [1, 2, 3, 4, 5, 6]


def test_round_trip_of_every_kind_device_to_host(tmp_path):
    out = tmp_path / "log"
    r = run_mp(script=MP / "logstore_all_kinds.py", args=[out])
    assert r.returncode == 0, r.stdout + r.stderr
    report = ls.read_log(read_dir(out), KEY)
    assert report.ok, report.problems
    got = {r.kind_name for r in report.records}
    assert got == {"event", "reading", "drop", "cut"}
    drops = [r for r in report.records if r.kind == ls.DROP]
    assert drops and all("dropped segment" in r.fields()["message"] for r in drops)
    cut = [r for r in report.records if r.kind == ls.CUT][0]
    assert "24 bytes" in cut.fields()["message"] and cut.fields()["level"] == "WARN"
    assert report.records[-1].payload == b"INFO after: reopened"
    s = seqs(report)
    assert s == list(range(s[0], s[0] + len(s))) and s[0] > 1   # the oldest were dropped
    assert report.records[-1].to_json()["utc"] == "2023-11-14T22:13:20+00:00"


# -- damage ----------------------------------------------------------------------------------------
def test_clean_log():
    files, where = build_log()
    report = ls.read_log(files, KEY)
    assert report.ok and seqs(report) == [w[0] for w in where] == list(range(1, 25))
    assert report.store_id == SID


def test_cut_last_segment_at_every_offset():
    files, where = build_log()
    last = "00000003.seg"
    raw = files[last]
    ends = [w[3] for w in where if w[1] == 3]
    before = [w[0] for w in where if w[1] < 3]
    for cut in range(len(raw) + 1):
        f = dict(files)
        f[last] = raw[:cut]
        report = ls.read_log(f, KEY)
        whole = [w[0] for w in where if w[1] == 3 and w[3] <= cut]
        assert seqs(report) == before + whole, cut
        if cut < ls.SEGHDR:
            assert kinds(report) == ["truncated"], cut
        elif cut in ends or cut == ls.SEGHDR:
            assert report.ok, (cut, report.problems)   # a cut at a record boundary is invisible...
            mark = {"store_id": SID.hex(), "seq": 24}
            if cut != len(raw):                          # ...except against an earlier pull
                assert kinds(ls.read_log(f, KEY, mark)) == ["rollback"], cut
        else:
            assert kinds(report) == ["truncated"], (cut, report.problems)
            p = report.problems[0]
            assert p.segment == 3 and p.offset == max([ls.SEGHDR] + [e for e in ends if e <= cut])


def test_flipped_bits_lose_only_the_record_they_hit():
    files, where = build_log()
    rnd = random.Random(7)
    names = sorted(files)
    for _ in range(400):
        name = rnd.choice(names)
        raw = bytearray(files[name])
        bit = rnd.randrange(len(raw) * 8)
        raw[bit // 8] ^= 1 << (bit % 8)
        report = ls.read_log({**files, name: bytes(raw)}, KEY)
        at, segno = bit // 8, int(name[:8], 16)
        if at < ls.HLEN:       # header fields: the header fails, its records still verify
            lost = set()
            assert "tampered-header" in kinds(report), (name, at)
        elif at < ls.SEGHDR:   # the header tag: nothing in the segment can be authenticated
            lost = {w[0] for w in where if w[1] == segno}
        else:
            lost = {w[0] for w in where if w[1] == segno and w[2] <= at < w[3]}
            assert {"tampered", "truncated"} & set(kinds(report)), (name, at)
        assert seqs(report) == [w[0] for w in where if w[0] not in lost], (name, at, report.problems)
        assert not report.ok
        bad = [p for p in report.problems if p.kind in ("tampered", "truncated")]
        assert all(p.segment == segno for p in bad)


def _cut_record(files, where, seq):
    _, segno, start, end = [w for w in where if w[0] == seq][0]
    name = "%08x.seg" % segno
    raw = files[name]
    return name, raw[:start], raw[start:end], raw[end:]


def test_swapped_records():
    files, where = build_log()
    name, head, a, rest = _cut_record(files, where, 11)
    _, _, b, tail = _cut_record({name: rest and files[name]}, where, 12)
    swapped = head + b + a + tail
    report = ls.read_log({**files, name: swapped}, KEY)
    assert sorted(seqs(report)) == list(range(1, 25)) and kinds(report) == ["out-of-order"]
    assert report.problems[0].seqs == (11, 11)


def test_deleted_records_anywhere():
    files, where = build_log()
    for seq in (1, 5, 8, 9, 16, 24):
        name, head, _, tail = _cut_record(files, where, seq)
        report = ls.read_log({**files, name: head + tail}, KEY)
        assert seqs(report) == [s for s in range(1, 25) if s != seq]
        if seq == 24:
            assert report.ok   # the newest record gone: indistinguishable from never written...
            assert kinds(ls.read_log({**files, name: head + tail}, KEY, {"store_id": SID.hex(), "seq": 24})) \
                == ["rollback"]   # ...unless an earlier pull saw it
        else:
            assert kinds(report) == ["missing"] and report.problems[0].seqs == (seq, seq)


def test_replayed_record_within_a_segment():
    files, where = build_log()
    name, head, a, tail = _cut_record(files, where, 10)
    report = ls.read_log({**files, name: head + a + tail + a}, KEY)
    assert kinds(report) == ["duplicate"] and report.problems[0].seqs == (10, 10)


def test_segment_spliced_from_another_device():
    files, where = build_log()
    theirs, _ = build_log(key=OTHER, sid=b"theirsid")
    report = ls.read_log({**files, "00000002.seg": theirs["00000002.seg"]}, KEY)
    assert kinds(report) == ["foreign-segment", "missing"]
    assert seqs(report) == [w[0] for w in where if w[1] != 2]
    assert report.problems[0].segment == 2 and "another key" in report.problems[0].detail
    # an extra segment from elsewhere, added after ours
    report = ls.read_log({**files, "00000004.seg": theirs["00000003.seg"]}, KEY)
    assert kinds(report) == ["foreign-segment"] and seqs(report) == list(range(1, 25))


def test_segment_of_another_store_with_the_same_key():
    files, where = build_log()
    old, _ = build_log(sid=b"old-one!")
    report = ls.read_log({**files, "00000002.seg": old["00000002.seg"]}, KEY)
    assert "spliced-segment" in kinds(report) and "missing" in kinds(report)
    assert seqs(report) == [w[0] for w in where if w[1] != 2]


def test_renamed_segment():
    files, where = build_log()
    report = ls.read_log({**files, "00000004.seg": files["00000001.seg"]}, KEY)
    assert kinds(report) == ["renamed-segment"] and seqs(report) == list(range(1, 25))
    assert report.problems[0].segment == 4


def test_replayed_old_segment_after_a_drop():
    # segments 1 and 2 were dropped (logged in segment 3, whose header says oldest = 3)
    full, full_where = build_log(segments=5)
    first3 = [w for w in full_where if w[1] == 3][0][0]
    drops = [(1, 1, 9), (2, 9, first3)]
    files, where = build_log(segments=3, first_segno=3, first_seq=first3 - 2, oldest=3, drops=drops)
    assert ls.read_log(files, KEY).ok
    report = ls.read_log({**files, "00000002.seg": full["00000002.seg"]}, KEY)
    assert kinds(report) == ["replayed-segment"], report.problems
    assert seqs(report) == [w[0] for w in where] and report.problems[0].seqs == (9, 16)
    # an old copy of the segment still present, i.e. a shorter one in place of the current one
    name = "00000004.seg"
    short = files[name][:[w for w in where if w[1] == 4][3][3]]
    report = ls.read_log({**files, name: short}, KEY)
    assert kinds(report) == ["missing"]


def test_deleted_segment_in_the_middle():
    files, where = build_log(segments=4)
    del files["00000002.seg"]
    report = ls.read_log(files, KEY)
    assert kinds(report) == ["missing", "missing-segment"] and report.problems[0].segment == 2


def test_wrong_key_is_an_error_not_garbage():
    files, _ = build_log()
    with pytest.raises(ls.LogKeyError) as e:
        ls.read_log(files, OTHER)
    assert "wrong key" in str(e.value) and ls.Keys.derive(KEY).key_id.hex() in str(e.value)
    with pytest.raises(ls.LogError):
        ls.read_log({}, KEY)


def test_no_exception_escapes_on_garbage():
    files, where = build_log()
    rnd = random.Random(11)
    names = sorted(files)
    for i in range(300):
        f = dict(files)
        name = rnd.choice(names)
        raw = bytearray(f[name])
        op = i % 4
        pos = rnd.randrange(len(raw) + 1)
        if op == 0:
            raw[pos:pos] = os.urandom(rnd.randrange(1, 80))
        elif op == 1:
            del raw[pos:pos + rnd.randrange(1, 80)]
        elif op == 2:
            raw[pos:pos + 8] = os.urandom(8)
        else:
            raw = bytearray(os.urandom(rnd.randrange(0, 300)))
        f[name] = bytes(raw)
        try:
            report = ls.read_log(f, KEY)
        except ls.LogError:
            continue
        for r in report.records:   # whatever is returned authenticated: it is one of ours
            assert r.seq in range(1, 25) and (r.payload.startswith(b"INFO test") or r.reading()["seq"] == r.seq)
    for junk in ({"00000001.seg": b""}, {"00000001.seg": b"WLOG"}, {"notes.txt": b"x", "00000001.seg": b"\0" * 60}):
        report = ls.read_log(junk, KEY)
        assert not report.ok and report.records == []


def test_mark_reports_rollback_and_replacement():
    files, _ = build_log()
    report = ls.read_log(files, KEY, {"store_id": SID.hex(), "seq": 30})
    assert kinds(report) == ["rollback"] and report.problems[0].seqs == (25, 30)
    report = ls.read_log(files, KEY, {"store_id": "00" * 8, "seq": 3})
    assert kinds(report) == ["new-store"]
    assert ls.read_log(files, KEY, {"store_id": SID.hex(), "seq": 24}).ok


# -- heap on the device ---------------------------------------------------------------------------
def test_device_heap_resident_and_per_append(tmp_path, app_build):
    # Run from its text (-c), not as a script: a script's own path, interned as its __file__,
    # moves where MicroPython's string pools grow, and with it the resident figure.
    r = run_mp((MP / "logstore_heap.py").read_text(), args=[tmp_path / "log"], heap="64k",
               path=[app_build / "lib", app_build])
    assert r.returncode == 0, r.stdout + r.stderr
    resident, per = map(int, r.stdout.split("RESULT")[1].split())
    print("log store resident %d bytes, %d bytes allocated per durable append" % (resident, per))
    assert resident < 7744    # this 64-bit unix port; pointers and objects are half that on an ESP32
    assert per < 1100     # two hash objects and digests per MAC (hashlib has no reset); no buffers


def test_a_failed_sensor_reading_shows_as_null_not_a_traceback():
    """A kept reading whose sensor failed holds NaN (firmware/sensors.py): shown as null."""
    nan = struct.pack("<f", float("nan"))
    rec = ls.Record(seq=5, kind=ls.READING, time=0, payload=struct.pack("<II", 5, 0) + nan + struct.pack("<f", 21.5),
                    segment=0, offset=0)
    assert rec.fields()["message"] == "#5 values null 21.5"
    assert rec.to_json()["reading"]["values"] == [None, 21.5]
    json.dumps(rec.to_json())   # what `logs show --json` prints


def device_append(log, count, word, hw=None):
    """`count` durable records appended by the device writer (tests/support/mp/logstore_append.py)."""
    return run_mp(script=MP / "logstore_append.py", args=[log, count, word] + ([hw] if hw else []))


def test_a_cut_tail_is_reported_even_after_the_device_wrote_past_it(tmp_path):
    """Pull-to-pull continuity binds contents: the mark of a pull is the last record's number and
    MAC. Cut the log's tail, let the device write on past that number (it numbers on from the last
    surviving record), and the next pull still reports the cut; an untouched log does not."""
    out = tmp_path / "log"
    assert device_append(out, 20, "first").returncode == 0
    first = ls.read_log(read_dir(out), KEY)
    last = first.records[-1]
    mark = {"store_id": first.store_id.hex(), "seq": last.seq, "tag": last.tag.hex()}
    # untouched, written on: clean
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    for n, d in read_dir(out).items():
        (clean_dir / n).write_bytes(d)
    assert device_append(clean_dir, 30, "more").returncode == 0
    assert ls.read_log(read_dir(clean_dir), KEY, mark).ok
    # the tail cut at record 11, then 30 more records: numbers 12.. are used again
    name = sorted(read_dir(out))[-1]
    cut_at = [r for r in first.records if r.seq == 12][0].offset
    (out / name).write_bytes((out / name).read_bytes()[:cut_at])
    assert device_append(out, 30, "after-cut").returncode == 0
    report = ls.read_log(read_dir(out), KEY, mark)
    assert max(r.seq for r in report.records) > mark["seq"]        # written past the mark
    assert [p.kind for p in report.problems] == ["cut-tail"], report.problems
    assert f"record {mark['seq']} is not the record an earlier pull saw" in report.problems[0].detail


def test_with_a_high_water_mark_a_cut_is_never_numbered_over_and_a_big_one_shows_without_a_mark(tmp_path):
    """The device's high-water mark (lib/logstore.py): after a cut the device resumes past every
    number it used, and says so in a SKIP record. Within one block that is what every restart
    looks like (the mark then catches the cut); past a block it is reported on its own."""
    out, hw = tmp_path / "log", str(tmp_path / "log.hw")
    assert device_append(out, 20, "first", hw).returncode == 0
    first = ls.read_log(read_dir(out), KEY)
    last = first.records[-1]
    mark = {"store_id": first.store_id.hex(), "seq": last.seq, "tag": last.tag.hex()}
    name = sorted(read_dir(out))[-1]
    cut_at = [r for r in first.records if r.seq == 12][0].offset
    (out / name).write_bytes((out / name).read_bytes()[:cut_at])
    assert device_append(out, 30, "after-cut", hw).returncode == 0
    report = ls.read_log(read_dir(out), KEY)
    seqs = [r.seq for r in report.records]
    assert not set(range(12, 21)) & set(seqs) and seqs == sorted(seqs), seqs    # 12..20 never again
    skip = [r for r in report.records if r.kind == ls.SKIP]
    assert len(skip) == 1 and struct.unpack("<III", skip[0].payload) == (12, 65, 64)
    assert report.ok, report.problems              # one block at most: a restart looks the same
    assert "reserved, unused" in skip[0].fields()["message"]
    with_mark = ls.read_log(read_dir(out), KEY, mark)
    assert [p.kind for p in with_mark.problems] == ["cut-tail"], with_mark.problems
    assert "record 20, which an earlier pull saw, is gone" in with_mark.problems[0].detail
    # cut 100 records back to 10: more than a block lost, reported without any mark
    big = tmp_path / "big"
    assert device_append(big, 100, "many", hw + "2").returncode == 0
    recs = ls.read_log(read_dir(big), KEY).records
    name = sorted(read_dir(big))[-1]
    at = [r for r in recs if r.seq == 11][0]
    assert at.segment == int(name[:8], 16)
    (big / name).write_bytes((big / name).read_bytes()[:at.offset])
    assert device_append(big, 1, "after", hw + "2").returncode == 0
    report = ls.read_log(read_dir(big), KEY)
    assert [p.kind for p in report.problems] == ["lost-before-restart"], report.problems
    assert report.problems[0].seqs == (11, 65)
