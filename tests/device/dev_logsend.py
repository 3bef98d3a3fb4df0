# Device tests for remote log pulls (firmware/logsend.py) under the real micropython at 64 KiB:
# what it sends is the segment files' bytes as they are, every refusal is answered with its
# reason, nothing stays loaded or allocated after a request, and a window holds one chunk.
import gc
import os
import struct
import sys

import devtest
from hashlib import sha256

from firmware import eventlog
from logstore import Store

KEY = bytes(range(32))


class Client:
    """The session's client: keeps what is published, and the heap in use at each publish."""

    def __init__(self):
        self.sent = []
        self.heap = []

    def publish(self, topic, msg, retain=False, qos=0):
        gc.collect()
        self.heap.append(gc.mem_alloc())
        msg = msg.encode() if isinstance(msg, str) else msg
        # a chunk is kept as its header and the SHA-256 of its data: a window of them would not fit
        self.sent.append((topic, bytes(msg) if msg[:1] != b"D" else bytes(msg[:17]) + sha256(msg[17:]).digest()))


class Dev:
    ota_topic = "dt/warden/t-1/ota"

    def __init__(self):
        self.client = Client()
        self.ota = None


def ask(dev, msg):
    from firmware import logsend
    logsend.handle(dev, msg)
    assert "firmware.logsend" not in sys.modules       # unloaded after every request
    return dev.client.sent.pop(0) if dev.client.sent else None


def answer(dev, msg):
    topic, payload = ask(dev, msg)
    assert topic == "dt/warden/t-1/logs" and not dev.client.sent, (topic, dev.client.sent)
    import json
    return json.loads(payload)


def store(name):
    d = devtest.tmp + "/" + name
    os.mkdir(d)
    st = Store(d + "/log", KEY)
    for i in range(120):
        st.append(1, b"INFO test: event %d " % i + b"." * 150, True)
    eventlog._store = st
    return st


def test_refusals_are_answered_with_their_reason():
    dev = Dev()
    eventlog._store = None
    assert answer(dev, None)["reason"].startswith("retained request")
    assert answer(dev, b"")["reason"] == "malformed request (0 bytes)"
    assert answer(dev, b"I\0\0\0\1xx") == {"step": "refused", "id": 1, "reason": "malformed request (7 bytes)"}
    assert answer(dev, b"I\0\0\0\2")["reason"] == "no log store on this device"
    store("refusals")
    dev.ota = object()
    assert answer(dev, b"I\0\0\0\3")["reason"] == "busy: an OTA conversation is under way"
    dev.ota = None
    assert answer(dev, b"R" + struct.pack(">IIIB", 4, 9, 0, 1))["reason"] == "no segment 9 (dropped?)"
    r = answer(dev, b"R" + struct.pack(">IIIB", 5, 1, 99999, 1))["reason"]
    assert r.startswith("offset 99999 beyond the end of segment 1"), r
    assert answer(dev, b"R" + struct.pack(">IIIB", 6, 1, 0, 0))["reason"] == "window of 0 chunks (1-16)"
    d = answer(dev, b"I\0\0\0\7")
    assert d["step"] == "index" and d["id"] == 7 and [s for s, _ in d["segments"]] == [1, 2], d


def test_chunks_are_the_files_bytes_and_a_window_holds_one_chunk():
    dev = Dev()
    st = store("chunks")
    segs = answer(dev, b"I\0\0\0\x09")["segments"]

    def file_part(segno, off, n):
        with open("%s/%08x.seg" % (st._dir, segno), "rb") as f:
            f.seek(off)
            return f.read(n)
    gc.collect()
    base = gc.mem_alloc()
    from firmware import logsend
    gc.collect()
    code = gc.mem_alloc() - base
    dev.client.heap = []
    logsend.handle(dev, b"R" + struct.pack(">IIIB", 9, segs[0][0], 0, 16))
    sent, dev.client.sent = dev.client.sent, []
    h = [x - base - code for x in dev.client.heap]
    print("logsend loaded: %d bytes; sending its first chunk: %d bytes more; per chunk after: %s"
          % (code, h[0], [b - a for a, b in zip(h, h[1:])]))
    assert h[0] <= 3584, h   # one chunk (2048 + 17 bytes), the file, the topic, small objects
    assert all(b - a <= 192 for a, b in zip(h, h[1:])), h   # what grows is this test's record of them
    off = 0
    for topic, p in sent:
        assert p[:1] == b"D"
        rid, segno, o, size = struct.unpack_from(">IIII", p, 1)
        assert (rid, segno, o, size) == (9, segs[0][0], off, segs[0][1])
        n = min(2048, size - off)
        assert p[17:] == sha256(file_part(segno, off, n)).digest()
        off += n
    assert off == segs[0][1] and len(sent) == (off + 2047) // 2048
    del sent, logsend
    dev.client.heap = []
    gc.collect()
    assert gc.mem_alloc() - base <= 512, gc.mem_alloc() - base   # kept: only names the first run interned, this test's locals
    # the end: at offset == size one empty chunk says so; from an offset within, the rest
    last, size = segs[-1]
    _, p = ask(dev, b"R" + struct.pack(">IIIB", 9, last, size, 4))
    assert p[9:17] == struct.pack(">II", size, size) and p[17:] == sha256(b"").digest() and not dev.client.sent
    _, p = ask(dev, b"R" + struct.pack(">IIIB", 9, last, size - 5, 4))
    assert p[17:] == sha256(file_part(last, size - 5, 5)).digest() and not dev.client.sent
