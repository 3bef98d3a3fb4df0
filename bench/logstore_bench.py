"""Benchmark: the encrypted log store against plaintext appends to the same littlefs, in one run.

One micropython process (-X heapsize=64k) mounts the vfs of a twin flash file (littlefs2 over the
twin's file-backed esp32.Partition, as the twin does), through a wrapper that counts the bytes
programmed and the blocks erased. The same N readings-sized records are appended

  - to the encrypted store (lib/logstore.py: AES-256-CBC + HMAC-SHA-256 per record), and
  - in plaintext (2-byte length + payload) to files of the same segment size,

first each one durable (a littlefs commit per record), then in batches of 16 with one commit per
batch, in alternating rounds (the median round is reported, so other load on the machine hits
both alike). Reported: appends/s and flash bytes written per record for both, the encrypted/plaintext
ratio (target: >= 0.70 for durable appends), the store's reader in decrypted MB/s (beside plain
reads of the same files), and the heap the open store holds while appending.

    run() -> rows                     python -m bench.logstore_bench
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import gc, json, os, sys, time, esp32
N = int(sys.argv[1])
SEGMENT = 16384

class Counting:
    # The vfs partition, counting what littlefs programs and erases.
    def __init__(self, p):
        self.p = p
        self.prog = 0
        self.erase = 0
    def readblocks(self, n, buf, off=0):
        self.p.readblocks(n, buf, off)
    def writeblocks(self, n, buf, off=None):
        if off is None:
            self.erase += (len(buf) + 4095) // 4096
            self.p.writeblocks(n, buf)
        else:
            self.p.writeblocks(n, buf, off)
        self.prog += len(buf)
    def ioctl(self, op, arg):
        if op == 6:
            self.erase += 1
        return self.p.ioctl(op, arg)

dev = Counting(esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0])
os.VfsLfs2.mkfs(dev)
os.mount(os.VfsLfs2(dev), "/f")
PAYLOADS = [b'{"seq":%d,"ts":1700000000,"values":{"temperature":%d.25,"humidity":%d.5}}' % (i, 18 + i % 7, 40 + i % 11)
            for i in range(64)]
gc.collect()
base = gc.mem_alloc()
import logstore
st = logstore.Store("/f/enc", bytes(range(32)), clock=time.time)   # defaults: 256 KiB quota, 16 KiB segments
for m in ("logopen", "logread", "cryptokit"):
    sys.modules.pop(m, None)
gc.collect()
heap_store = gc.mem_alloc() - base
out = {"heap_store": heap_store, "payload": sum(len(p) for p in PAYLOADS) / len(PAYLOADS)}

class Plain:
    # Plaintext records (length + payload) in files of the same segment size, made the way the
    # store makes its segments (a 52-byte header under a temporary name, renamed), and as many
    # as the store keeps (the oldest deleted): the same littlefs work, minus the crypto.
    def __init__(self, d, keep):
        os.mkdir(d)
        self.d = d
        self.n = 0
        self.keep = keep
        self.size = SEGMENT
        self.f = None
        self.hdr = bytearray(2)
    def append(self, payload, durable=False):
        if self.size + 2 + len(payload) > SEGMENT - 48:
            if self.f:
                self.f.close()
            self.n += 1
            if self.n > self.keep:
                os.remove("%s/%08x.txt" % (self.d, self.n - self.keep))
            with open(self.d + "/seg.tmp", "wb") as t:
                t.write(HEADER)
            os.rename(self.d + "/seg.tmp", "%s/%08x.txt" % (self.d, self.n))
            self.f = open("%s/%08x.txt" % (self.d, self.n), "ab")
            self.size = 52
        self.hdr[0] = len(payload) & 255
        self.hdr[1] = len(payload) >> 8
        self.f.write(self.hdr)
        self.f.write(payload)
        self.size += 2 + len(payload)
        if durable:
            self.f.flush()
    def sync(self):
        self.f.flush()

HEADER = bytes(52)
plain = Plain("/f/plain", st._max)

ROUNDS = 7

def run(name, append, sync, batch):
    # One round of N // ROUNDS records; rounds of the peers alternate, the median is reported.
    n = N // ROUNDS
    p0, e0 = dev.prog, dev.erase
    gc.collect()
    t0 = time.ticks_us()
    for i in range(n):
        append(PAYLOADS[i & 63], batch == 1)
        if batch > 1 and i % batch == batch - 1:
            sync()
    sync()
    us = time.ticks_diff(time.ticks_us(), t0)
    r = out.setdefault(name, {"rates": [], "prog": 0, "erase": 0, "n": 0})
    r["rates"].append(n * 1e6 / us)
    r["prog"] += dev.prog - p0
    r["erase"] += dev.erase - e0
    r["n"] += n

enc_append = lambda p, d: st.append(2, p, d)
for k in range(ROUNDS):
    run("enc_durable", enc_append, st.sync, 1)
    if k == 0:
        gc.collect()
        out["heap_appending"] = gc.mem_alloc() - base
    run("plain_durable", plain.append, plain.sync, 1)
for k in range(ROUNDS):
    run("enc_batch", enc_append, st.sync, 16)
    run("plain_batch", plain.append, plain.sync, 16)
for name in ("enc_durable", "plain_durable", "enc_batch", "plain_batch"):
    r = out[name]
    rates = sorted(r["rates"])
    out[name] = {"per_s": rates[len(rates) // 2], "prog": r["prog"] / r["n"], "erase": r["erase"] / r["n"]}
plain.f.close()

# Reading: every record back, decrypted and verified / plain.
probs = []
r = st.reader(0, lambda *a: probs.append(a))
n = nbytes = 0
t0 = time.ticks_us()
while r.next():
    n += 1
    nbytes += len(r.payload)
us = time.ticks_diff(time.ticks_us(), t0)
r.close()
out["read"] = {"records": n, "bytes": nbytes, "mb_s": nbytes / us, "problems": len(probs)}
buf = bytearray(512)
mv = memoryview(buf)
n2 = nbytes2 = 0
t0 = time.ticks_us()
for name in sorted(os.listdir("/f/plain")):
    with open("/f/plain/" + name, "rb") as f:
        while f.readinto(mv[:2]) == 2:
            k = buf[0] | buf[1] << 8
            f.readinto(mv[:k])
            n2 += 1
            nbytes2 += k
us = time.ticks_diff(time.ticks_us(), t0)
out["read_plain"] = {"records": n2, "mb_s": nbytes2 / us}
# The store's own cost per append, without flash I/O (its file swapped for a sink).
class Sink:
    def write(self, b):
        return len(b)
    def flush(self):
        pass
    def close(self):
        pass
real, st._f = st._f, Sink()
pos, seq, lim = st._pos, st.next_seq, st._lim
st._lim = 1 << 30       # no roll (that is flash I/O)
t0 = time.ticks_us()
for i in range(1000):
    st.append(2, PAYLOADS[i & 63])
out["cpu_us"] = time.ticks_diff(time.ticks_us(), t0) / 1000
st._f, st._pos, st.next_seq, st._lim = real, pos, seq, lim

st.close()
print("RESULT " + json.dumps(out))
"""


def _micropython():
    return os.environ.get("MICROPYTHON") or str(Path(sys.executable).parent / "micropython")


def measure(records=2800, heap="64k"):
    from warden.board import build, flashimage
    with tempfile.TemporaryDirectory() as tmp:
        app = build.build_app(Path(tmp) / "app") and Path(tmp) / "app"
        flash = Path(tmp) / "flash.bin"
        flash.write_bytes(flashimage.new_flash({}))
        env = dict(os.environ, WARDEN_FLASH=str(flash),
                   MICROPYPATH=":".join([".frozen", str(build.build_twin_rom()), str(app / "lib")]))
        r = subprocess.run([_micropython(), "-X", "heapsize=" + heap, "-c", SCRIPT, str(records)],
                           capture_output=True, text=True, env=env, timeout=600)
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
    if r.returncode or line is None:
        raise RuntimeError("log store benchmark failed:\n%s\n%s" % (r.stdout[-3000:], r.stderr[-3000:]))
    return json.loads(line[7:])


def run(records=2800):
    d = measure(records)
    rows = []

    def row(metric, enc, plain, higher_is_better=True):
        ratio = (enc / plain if higher_is_better else plain / enc) if enc and plain else None
        rows.append({"metric": metric, "encrypted store": round(enc, 1),
                     "plaintext": None if plain is None else round(plain, 1),
                     "ratio": None if ratio is None else round(ratio, 2)})

    row("durable appends/s (commit per record)", d["enc_durable"]["per_s"], d["plain_durable"]["per_s"])
    row("flash bytes programmed per durable record", d["enc_durable"]["prog"], d["plain_durable"]["prog"], False)
    row("flash erases per 1000 durable records", d["enc_durable"]["erase"] * 1000,
        d["plain_durable"]["erase"] * 1000, False)
    row("batched appends/s (commit per 16)", d["enc_batch"]["per_s"], d["plain_batch"]["per_s"])
    row("flash bytes programmed per batched record", d["enc_batch"]["prog"], d["plain_batch"]["prog"], False)
    row("read MB/s (store: verified + decrypted)", d["read"]["mb_s"], d["read_plain"]["mb_s"])
    rows.append({"metric": "records read back / problems",
                 "encrypted store": "%d / %d" % (d["read"]["records"], d["read"]["problems"]),
                 "plaintext": "%d / 0" % d["read_plain"]["records"], "ratio": None})
    rows.append({"metric": "store CPU per append, no flash I/O, us", "encrypted store": round(d["cpu_us"], 1),
                 "plaintext": None, "ratio": None})
    rows.append({"metric": "heap held by the open store, bytes", "encrypted store": d["heap_store"],
                 "plaintext": None, "ratio": None})
    rows.append({"metric": "heap in use while appending (store + garbage), bytes",
                 "encrypted store": d["heap_appending"], "plaintext": None, "ratio": None})
    rows.append({"metric": "payload bytes per record (readings)", "encrypted store": round(d["payload"], 1),
                 "plaintext": round(d["payload"], 1), "ratio": None})
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tools"))
    from bench.common import print_table
    rows = run()
    print_table("Encrypted log store vs plaintext on the same littlefs (twin flash, micropython -X heapsize=64k)",
                rows, ["metric", "encrypted store", "plaintext", "ratio"],
                note="ratio: encrypted relative to plaintext (>= 1.0 as good); target >= 0.70 for durable appends/s")
