"""Benchmark: signed OTA on the device, measured side by side in one run.

  - signature check: lib/rsapss.py (precompiled .mpy) under micropython against
    `cryptography` (OpenSSL) on CPython, same RSA-3072-PSS key, signature and manifest
    (median of `samples` verifications; ratio = OpenSSL time / micropython time);
  - heap of the check: the smallest `-X heapsize` in which micropython imports rsapss and
    verifies, against the smallest in which it only imports it (the difference is what the
    check needs), and the heap left allocated after the import;
  - install: a 1 MiB firmware update through firmware/ota.py (begin with its signature
    check, write in 4 KiB chunks while hashing, finish with set_boot's image check) into the
    twin's next OTA partition, against the same bytes written raw with
    esp32.Partition.writeblocks (ratio = raw time / engine time, the engine's overhead);
  - heap of an update: the smallest `-X heapsize` in which the whole 1 MiB firmware update
    runs, against the smallest in which the same process only boots and mounts the flash.
    It includes the twin's set_boot emulation (twin/bootloader.py, ~7 KB loaded for the
    call), which is C on a board. Fragmentation makes it vary by a few KB between runs.

The MQTT chunk transport is not part of this benchmark (it comes with `warden ota push`).

    run() -> rows                 python -m bench.ota_bench
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from warden.board import build, espimage, flashimage  # noqa: E402
from warden.ota import image, keys

SAMPLES = 50
PAYLOAD = 1024 * 1024
CHUNK = 4096
TARGET = "esp32/warden"
COLS = ["metric", "warden (micropython)", "peer", "peer value", "ratio"]

VERIFY = r"""
import gc, sys, time, hashlib
from binascii import unhexlify
with open(sys.argv[1]) as f:
    n, sig, m = (unhexlify(x.strip()) for x in f.read().split())
gc.collect()
base = gc.mem_alloc()
import rsapss
gc.collect()
code = gc.mem_alloc() - base
if sys.argv[2] == "import":
    print("OK")
    raise SystemExit
d = hashlib.sha256(m).digest()
times = []
for _ in range(int(sys.argv[2])):
    t = time.ticks_us()
    rsapss.verify(n, sig, d)
    times.append(time.ticks_diff(time.ticks_us(), t))
times.sort()
print("OK", times[len(times) // 2], code)
"""

INSTALL = r"""
import gc, os, sys, time
import esp32
esp32.Partition(esp32.Partition.RUNNING)  # the bootloader, as at reset
host = os.VfsPosix("/")
os.umount("/")
os.mount(os.VfsLfs2(esp32.Partition("vfs")), "/")  # the device's own files at /, as rom.py does
os.mount(host, "/host")
sys.path[:] = [".frozen"] + ["/host" + p for p in sys.path if p.startswith("/")]
if sys.argv[2] == "boot":
    print("OK")
    raise SystemExit
with open("/host" + sys.argv[1], "rb") as f:
    head = f.read(8)
    ml, sl = head[4] << 8 | head[5], head[6] << 8 | head[7]
    m, s = f.read(ml), f.read(sl)
    buf = bytearray(%d)
    if sys.argv[2] == "raw":
        part = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
        t0 = time.ticks_us()
        blk = 0
        while True:
            n = f.readinto(buf)
            if not n:
                break
            part.writeblocks(blk, memoryview(buf)[:n])
            blk += 1
        print("OK", time.ticks_diff(time.ticks_us(), t0))
        raise SystemExit
    from firmware import ota
    u = ota.Updater("%s")
    t0 = time.ticks_us()
    pos = u.begin(m, s)
    t1 = time.ticks_us()
    while True:
        n = f.readinto(buf)
        if not n:
            break
        pos = u.write(pos, memoryview(buf)[:n])
    t2 = time.ticks_us()
    p = u.finish()
    t3 = time.ticks_us()
    print("OK", time.ticks_diff(t1, t0), time.ticks_diff(t2, t1), time.ticks_diff(t3, t2), p["slot"])
""" % (CHUNK, TARGET)


def _mp():
    env = os.environ.get("MICROPYTHON")
    return env or str(Path(sys.executable).parent / "micropython")


def _run(code, args, heap, path, env=None):
    full = dict(os.environ)
    full["MICROPYPATH"] = ":".join([".frozen"] + [str(p) for p in path])
    full.update(env or {})
    return subprocess.run([_mp(), "-X", "heapsize=%d" % heap, "-c", code, *args], env=full,
                          capture_output=True, text=True, timeout=120)


def _ok(r):
    return r.returncode == 0 and r.stdout.startswith("OK")


def _min_heap(ok, lo=4096, hi=262144, step=1024):
    """Smallest heap size (a multiple of `step`) for which ok(heap) holds (binary search)."""
    if not ok(hi):
        raise RuntimeError("does not run even with a %d-byte heap" % hi)
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _pss():
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()


def run():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        app = build.build_app(tmp / "app")
        rom = build.build_twin_rom()
        libs = [tmp / "app" / "lib", tmp / "app", rom]
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        fw = espimage.build_image("2.0.0", PAYLOAD)
        update = image.sign(fw, "firmware", "2.0.0", 2, TARGET, key)
        m, sig, payload = image.split(update)
        n = key.public_key().public_numbers().n.to_bytes(384, "big")

        # -- signature check -------------------------------------------------------------
        vec = tmp / "vec.txt"
        vec.write_text("%s %s %s" % (n.hex(), sig.hex(), m.hex()))
        r = _run(VERIFY, [str(vec), str(SAMPLES)], 65536, libs)
        assert _ok(r), r.stdout + r.stderr
        _, mp_us, code = r.stdout.split()
        pub = key.public_key()
        pss, h = _pss()
        times = []
        for _ in range(SAMPLES):
            t = time.perf_counter()
            pub.verify(sig, m, pss, h)
            times.append((time.perf_counter() - t) * 1e6)
        ossl_us = statistics.median(times)
        rows.append({"metric": "RSA-3072-PSS verify, median (us)", "warden (micropython)": int(mp_us),
                     "peer": "cryptography (OpenSSL, CPython)", "peer value": round(ossl_us, 1),
                     "ratio": round(ossl_us / int(mp_us), 3)})
        need = _min_heap(lambda hp: _ok(_run(VERIFY, [str(vec), "1"], hp, libs)))
        base = _min_heap(lambda hp: _ok(_run(VERIFY, [str(vec), "import"], hp, libs)))
        rows.append({"metric": "verify: heap it needs beyond the import (bytes)",
                     "warden (micropython)": need - base, "peer": "smallest heap that verifies",
                     "peer value": need, "ratio": None})
        rows.append({"metric": "verify: rsapss.mpy resident after import (bytes)",
                     "warden (micropython)": int(code), "peer": None, "peer value": None, "ratio": None})

        # -- install through the engine vs raw writes ------------------------------------
        flash = tmp / "flash.bin"
        files = dict(app)
        files[keys.device_key_name(keys.key_id(pub))] = keys.device_key_file(pub)
        files["/state/ota.json"] = json.dumps({"firmware": [1, "1.0.0"]}).encode()
        img = flashimage.new_flash(files)
        f0 = espimage.build_image("1.0.0", 256 * 1024)
        o0 = flashimage.part("ota_0").offset
        img[o0:o0 + len(f0)] = f0
        upd = tmp / "fw.wup"
        upd.write_bytes(update)
        env = {"WARDEN_FLASH": str(flash)}

        def fresh():
            flash.write_bytes(img)

        fresh()
        r = _run(INSTALL, [str(upd), "raw"], 262144, libs, env)
        assert _ok(r), r.stdout + r.stderr
        raw_us = int(r.stdout.split()[1])
        fresh()
        r = _run(INSTALL, [str(upd), "engine"], 262144, libs, env)
        assert _ok(r), r.stdout + r.stderr
        begin_us, write_us, finish_us = (int(x) for x in r.stdout.split()[1:4])
        total = begin_us + write_us + finish_us
        mb = len(payload) / 1e6
        rows.append({"metric": "1 MiB firmware install: write while hashing (MB/s)",
                     "warden (micropython)": round(mb / (write_us / 1e6), 2),
                     "peer": "raw Partition.writeblocks, no engine (MB/s)",
                     "peer value": round(mb / (raw_us / 1e6), 2), "ratio": round(raw_us / write_us, 3)})
        rows.append({"metric": "1 MiB firmware install: begin + write + finish (MB/s)",
                     "warden (micropython)": round(mb / (total / 1e6), 2),
                     "peer": "begin / finish (set_boot check) ms",
                     "peer value": "%.1f / %.1f" % (begin_us / 1e3, finish_us / 1e3), "ratio": None})

        def update_ok(hp):
            fresh()
            return _ok(_run(INSTALL, [str(upd), "engine"], hp, libs, env))

        def boot_ok(hp):
            fresh()
            return _ok(_run(INSTALL, [str(upd), "boot"], hp, libs, env))

        need = _min_heap(update_ok, lo=8192, step=2048)
        base = _min_heap(boot_ok, lo=4096, step=2048)
        rows.append({"metric": "1 MiB firmware update: heap beyond a booted twin (bytes)",
                     "warden (micropython)": need - base, "peer": "smallest heap for the update",
                     "peer value": need, "ratio": None})
    return rows


if __name__ == "__main__":
    from bench.common import print_table
    print_table("Signed OTA", run(), COLS,
                note="ratio: peer time / warden time (1.0 = as fast; verify peer is OpenSSL in C)")
