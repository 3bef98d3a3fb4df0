"""The device's heap on the two builds of its MicroPython, side by side in one run: the twin's
64-bit unix port and, where one is present, the 32-bit port (4-byte pointers and 16-byte GC blocks,
as on an ESP32; $MICROPYTHON32 or the development machine's ../shared/tools/micropython32).

For the factory app and for an app running from an update slot: the heap in use once connected at
`-X heapsize=64k` (the device's own `heap in use` log line), and the smallest heap, in steps of
2 KiB, at which a session (boot, connect, 5 readings acknowledged) completes three times in a row.
For the factory app, the smallest heap (steps of 4 KiB) at which an app update pushed during a
session is installed and confirmed, twice in a row (the budget is 64 KiB on the 32-bit port).
Where the 32-bit port's GC-peak build is present (micropython-gcpeak beside it), the peak live heap
(the largest heap in use right after any collection, collecting every 512 bytes) of each boot of
an app update: the session it is pushed in, update mode, and the self-test boot after it.

    run(fleet) -> rows        python -m bench.heap_bench
"""
import re
import subprocess

from warden.board import build, flashimage, twin as twinlib
from warden.fleet import devices

COLS = ["metric", "64-bit twin", "32-bit port", "ratio"]
NOTE = "ratio: 64-bit / 32-bit (the twin needs that much more heap than a board for the same code)"


def _flash(fleet, thing, slot):
    state = fleet.state
    devices.add_device(state, thing)
    path = twinlib.flash_path(state, thing)
    twinlib.update_config(path, broker={"host": "localhost", "port": fleet.broker.port}, interval_ms=20,
                          max_readings=5)
    if slot:   # as after an app update: the app runs from slot a
        ff = flashimage.FlashFile(path)
        ff.write({"/app/a" + k: v for k, v in build.build_app().items() if not k.endswith(".py")})
        ff.write({"/app/active": b"a valid -"})
        ff.save()
    return path


def _session(path, heap, binary):
    """The heap in use after connect, or None if the session did not complete."""
    argv, env = twinlib.twin_command(path, heap, binary=binary)
    try:
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None
    m = re.search(r"heap in use (\d+) bytes", p.stdout)
    if p.returncode != 0 or not m or "MemoryError" in p.stdout:
        return None
    return int(m.group(1))


def _smallest(path, binary, lo=30, hi=96):
    for k in range(lo, hi + 1, 2):
        if all(_session(path, "%dk" % k, binary) for _ in range(3)):
            return k
    return None


def _update_fits(fleet, heap, binary, n):
    """Does an app update during a session install and confirm at `heap`?"""
    from tests.support.twinproc import Twin
    from warden.ota import image, keys, push as otapush
    state = fleet.state
    if not keys.has_key(state):
        keys.init_keys(state)
    state.broker_port = fleet.broker.port
    thing = "bench-upd-%d" % n
    devices.add_device(state, thing)
    path = twinlib.flash_path(state, thing)
    twinlib.update_config(path, broker={"host": "localhost", "port": fleet.broker.port}, interval_ms=200,
                          selftest_ms=20000)
    t = Twin(path, heap=heap, binary=binary).start()
    try:
        t.wait_for(r"INFO telemetry: first reading", 20)
        upd = fleet.tmp / ("%s.wup" % thing)
        upd.write_bytes(image.sign(image.build_bundle(), "app", "9.0.0", 9, image.default_target(state),
                                   keys.load_private_key(state)))
        try:
            out = otapush.push(state, thing, upd, timeout=5, confirm_timeout=30)
        except otapush.OtaPushError:
            return False
        return out.result == otapush.INSTALLED
    except AssertionError:      # it never came up at this heap
        return False
    finally:
        t.stop()


def _smallest_update(fleet, binary, lo, hi, tag):
    n = 0
    for k in range(lo, hi + 1, 4):
        ok = True
        for _ in range(2):
            n += 1
            if not _update_fits(fleet, "%dk" % k, binary, n + 1000 * tag):
                ok = False
                break
        if ok:
            return k
    return None


def _peaks(fleet, port32):
    """Peak live heap of each boot (session, update mode, self-test boot) of an app update, on
    the 32-bit GC-peak build; [] without it."""
    import os
    import tempfile
    gcpeak = port32 and port32 + "-gcpeak"
    if not gcpeak or not os.access(gcpeak, os.X_OK):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = os.path.join(tmp, "peaks")
        saved = {k: os.environ.get(k) for k in ("MP_GC_THRESHOLD", "MP_GC_PEAK_FILE")}
        os.environ.update(MP_GC_THRESHOLD="512", MP_GC_PEAK_FILE=peak_file)
        try:
            ok = _update_fits(fleet, "64k", gcpeak, 9000)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        peaks = [int(x.split("=")[1]) for x in open(peak_file).read().split() if x.startswith("peak_live=")]
    if not ok or len(peaks) < 3:
        return [{"metric": "peak live heap of an app update's boots (32-bit, gcpeak)", "32-bit port": "failed"}]
    names = ("the session it is pushed in", "update mode", "the self-test boot after it")
    return [{"metric": "app update at 64k, peak live heap: %s, bytes" % n, "64-bit twin": "(no gcpeak build)",
             "32-bit port": p} for n, p in zip(names, peaks)]


def run(fleet):
    from tests.support.devrun import micropython32
    port32 = micropython32()
    rows = []
    for slot in (False, True):
        app = "app from an update slot" if slot else "factory app"
        path = _flash(fleet, "bench-heap-%s" % ("slot" if slot else "factory"), slot)
        heaps = [_session(path, "64k", None), _session(path, "64k", port32) if port32 else None]
        least = [_smallest(path, None), _smallest(path, port32) if port32 else None]
        for what, (a, b), unit in (("heap in use after connect at 64k, bytes", heaps, ""),
                                   ("smallest heap for a session (3 runs in a row), KiB", least, "k")):
            rows.append({"metric": "%s: %s" % (app, what), "64-bit twin": a if a else "fails",
                         "32-bit port": b if b else ("(no 32-bit port)" if not port32 else "fails"),
                         "ratio": round(a / b, 2) if a and b else None})
    rows += _peaks(fleet, port32)
    a = _smallest_update(fleet, None, 60, 128, 1)
    b = _smallest_update(fleet, port32, 44, 96, 2) if port32 else None
    rows.append({"metric": "factory app: smallest heap for an app update during a session (2 in a row), KiB",
                 "64-bit twin": a or "fails", "32-bit port": b if b else ("(no 32-bit port)" if not port32 else "fails"),
                 "ratio": round(a / b, 2) if a and b else None})
    return rows


if __name__ == "__main__":
    from bench.common import fleet, print_table
    with fleet() as f:
        print_table("Device heap: 64-bit twin and 32-bit port", run(f), COLS, note=NOTE)
