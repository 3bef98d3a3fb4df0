"""The device's heap budget (docs/design.md, "The heap budget"): the whole twin (ROM, boot.py, the encrypted
log store, boot checks, the MQTT session over mutual TLS, readings and the outbox) runs within a
board's 64 KiB, and what it holds once connected leaves headroom for the transients of its
life (a reconnect, an outbox drain, a log segment roll, the user's own code).

The figure is the device's own: the log line `heap in use N bytes` (gc.collect(); gc.mem_alloc()
after the session is up). The twin is provisioned as `warden device add` does (a log key in NVS,
so the log store is open), which costs more than a keyless one.

Every check runs on two builds of the same MicroPython: the twin's 64-bit port (8-byte pointers,
32-byte GC blocks: it needs about 1.36 times a board's heap, so it gets 88k), and, where one is
present, the 32-bit port (support.devrun.micropython32: the heap as an ESP32 lays it out), at the
board's budget plus what the twin's stand-ins for the board's C code hold there
(support.devrun.STANDIN_32). Once connected at least HEADROOM of the twin's heap stays free; the
reconnect test also holds the factory app's steady state to 64 KiB less HEADROOM on both builds."""
import os
import re
import subprocess

import pytest

from support.devrun import STANDIN_32, micropython32
from support.twinproc import Twin
from warden.board import build, flashimage, twin as twinlib

BUDGET = 64 * 1024
# The 64-bit twin needs about 1.36 times a board's heap (8-byte pointers, 32-byte GC blocks:
# `make bench`, heap), so it gets 88k, a board's 64 KiB on that build. It once ran at 64k, a
# stricter budget than a board's; that held for the factory app's steady state, but the peaks of a
# reconnect (a TLS handshake with a backlog waiting) at 64k and, for an app from an update slot
# (~3 KB more, docs/heap.md "What is left"), at 72k and 80k ran short in some runs, and a device
# short of heap there loses readings: a fault of the budget, not of the device. On the 32-bit port,
# a board's layout, the twin gets a board's 64 KiB plus its stand-ins' allowance.
HEAP_64BIT = 88 * 1024
HEADROOM = 8 * 1024      # at least this much of the 64 KB stays free once connected
PORT32 = micropython32()
BUILDS = ["64-bit", pytest.param("32-bit", marks=pytest.mark.skipif(
    PORT32 is None, reason="no 32-bit MicroPython port here ($MICROPYTHON32; `make setup` installs libc6-i386)"))]


@pytest.fixture(params=BUILDS)
def build32(request):
    """The unix port a test's twins run on: the twin's own (64-bit), or the 32-bit one."""
    return PORT32 if request.param == "32-bit" else None


@pytest.fixture
def twin64(broker, provision, pki_state, tmp_path, build32):
    made = []

    def make(thing, app_slot=False, heap=None, port=None, ballast=0, log_key=None, **cfg):
        heap = heap or "%dk" % (budget_for(build32, app_slot) // 1024)
        ident = provision(thing)
        cfg.setdefault("interval_ms", 20)
        config = twinlib.device_config(pki_state, thing, broker={"host": "localhost", "port": port or broker.port},
                                       **cfg)
        files = twinlib.identity_files(ident.cert_der, ident.key_der, ident.ca.read_bytes())
        flash = twinlib.build_flash(tmp_path / ("%s.bin" % thing), files, config, log_key=log_key or os.urandom(32))
        if app_slot:
            # As after an app update: the app runs from slot a (boot.py loads firmware/slots.py,
            # sys.path starts at /app/a) rather than from the factory folders.
            ff = flashimage.FlashFile(flash)
            ff.write({"/app/a" + k: v for k, v in build.build_app().items() if not k.endswith(".py")})
            ff.write({"/app/active": b"a valid -"})
            ff.save()
        if ballast:
            # The app's own main.py, with `ballast` bytes held for life before it starts: as if
            # the device code had grown by that much.
            ff = flashimage.FlashFile(flash)
            ff.write({"/main.py": b"_ballast = bytearray(%d)\nimport firmware.app\nfirmware.app.main()\n" % ballast})
            ff.save()
        t = Twin(flash, heap, restart_on_reset=False, binary=build32)
        made.append(t)
        return t

    yield make
    for t in made:
        t.stop()


def budget_for(build32, app_slot):
    """The heap (bytes) a twin gets in these tests: a board's 64 KiB, on the 32-bit port plus what
    the twin's stand-ins for the board's C code hold (support.devrun.STANDIN_32), on the 64-bit
    twin its equivalent (above). The same for the factory app and an app from an update slot."""
    return BUDGET + STANDIN_32 if build32 else HEAP_64BIT


def _heap_after_connect(t):
    m = re.search(r"INFO mqtt: connected .* heap in use (\d+) bytes", t.output)
    assert m, t.output
    return int(m.group(1))


def headroom_problem(t, budget=BUDGET):
    """Why the twin `t` (run to its end) breaks the budget, or None: a MemoryError or a heap
    shortage on the way, or less than HEADROOM free once connected."""
    out = t.output
    if "MemoryError" in out or "not enough heap" in out:
        return "ran short of heap:\n" + out
    heap = _heap_after_connect(t)
    if heap > budget - HEADROOM:
        return "heap in use after connect %d bytes: less than %d bytes free" % (heap, HEADROOM)
    return None


@pytest.mark.parametrize("app_slot", [False, True], ids=["factory-app", "updated-app"])
def test_whole_device_runs_in_64k_with_headroom(twin64, app_slot, build32):
    budget = budget_for(build32, app_slot)
    t = twin64("heap-%s" % ("slot" if app_slot else "factory"), app_slot=app_slot, max_readings=20).start()
    assert t.wait_exit(30) == 0, t.output
    out = t.output
    assert "INFO telemetry: first reading" in out and "no log key" not in out, out
    heap = _heap_after_connect(t)
    print("heap in use after connect: %d bytes of %d (%d free)" % (heap, budget, budget - heap))
    assert headroom_problem(t, budget) is None, headroom_problem(t, budget)


def test_the_budget_check_fails_a_device_that_outgrew_it(twin64, build32):
    """The same check on a twin whose code holds more for life: the check says it no longer
    leaves the headroom, or that it ran short of heap on the way (so a check that passes means
    something)."""
    # (a 32-bit session leaves ~25 KB free, a 64-bit one ~12 KB: the ballast takes it below HEADROOM)
    t = twin64("heap-ballast", ballast=(20 if build32 else 5) * 1024, max_readings=5).start()
    try:
        t.wait_for(r"INFO mqtt: connected|MemoryError", 30)
        t.wait_exit(5)
    except (AssertionError, subprocess.TimeoutExpired):
        pass    # still retrying at the end of the wait: what it logged says why
    t.stop()
    assert headroom_problem(t), t.output   # too little free, or it ran short on the way


@pytest.mark.parametrize("app_slot", [False, True], ids=["factory-app", "updated-app"])
def test_a_backlog_drains_in_64k(twin64, broker, app_slot):
    """After an outage the outbox's reader loads on top of the session: readings kept while the
    broker was unreachable are delivered, at 64k, with no MemoryError on the way."""
    from warden.broker.server import free_port
    t = twin64("heap-backlog-%s" % ("slot" if app_slot else "factory"), app_slot=app_slot, port=free_port(),
               backoff_ms=300, backoff_max_ms=300, max_readings=120)
    t.start()
    for _ in range(3):  # ~15 readings kept per failed connect (20 ms readings, 300 ms retries)
        t.wait_for(r"connect failed", 10)
    assert t.stop() == 0, t.output
    twinlib.update_config(t.flash, broker={"host": "localhost", "port": broker.port})
    t.start()
    t.wait_for(r"INFO outbox: backlog delivered", 30)
    assert t.wait_exit(30) == 0, t.output
    assert "MemoryError" not in t.output and "not enough heap" not in t.output, t.output


# Flash operations into an outage of the test below at which a power cut once left a device that
# could never connect again: the connect interned the name that filled MicroPython's qstr pools,
# and the new pool (~7 KB in one piece on the 64-bit twin) never fit after the TLS handshake, so
# every retry failed the same way (docs/heap.md, "Interned names"). And a spread before them.
CUTS = (150, 400, 670, 680)


@pytest.mark.parametrize("cut", CUTS)
def test_a_power_cut_in_an_outage_does_not_keep_the_device_offline(twin64, broker, cut, monkeypatch):
    """Power cut at any moment while the broker is unreachable (an app from an update slot, whose
    longer module paths intern the most names): at the next boot the device connects, drains
    its backlog and ends cleanly, with no MemoryError."""
    from warden.broker.server import free_port
    t = twin64("heap-cut-%d" % cut, app_slot=True, port=free_port(), backoff_ms=300, backoff_max_ms=300,
               max_readings=60)
    monkeypatch.setenv("WARDEN_CUT", str(cut))
    t.start()
    t.wait_exit(20)
    assert "power cut during flash operation %d" % cut in t.output, t.output
    monkeypatch.delenv("WARDEN_CUT")
    twinlib.update_config(t.flash, broker={"host": "localhost", "port": broker.port})
    t.start()
    t.wait_for(r"INFO mqtt: connected", 30)
    assert t.wait_exit(30) == 0, t.output
    assert "MemoryError" not in t.output, t.output


def test_reconnects_do_not_grow_the_heap(twin64, broker, build32):
    """The heap after a reconnect is what it was after the first connect (nothing is kept per
    session): the broker restarts twice under a running device."""
    t = twin64("heap-reconnect", backoff_ms=50, backoff_max_ms=200, keepalive=5,
               timeout=2).start()
    t.wait_for(r"INFO mqtt: connected", 15)
    for _ in range(2):
        broker.restart()
        t.wait_for(r"ERROR mqtt: session lost", 15)
        t.wait_for(r"INFO mqtt: connected", 15)
    heaps = [int(h) for h in re.findall(r"heap in use (\d+) bytes", t.output)]
    assert len(heaps) == 3, t.output
    assert "MemoryError" not in t.output, t.output
    # the first reconnect may intern a few names (error paths); after that nothing may grow
    assert heaps[2] <= heaps[1] + 256 and heaps[1] <= heaps[0] + 2048, heaps
    # the steady state keeps the headroom of a board's 64 KiB (on the 64-bit twin: of its 88k)
    assert max(heaps) <= (BUDGET if build32 else HEAP_64BIT) - HEADROOM, heaps


def test_a_remote_log_pull_runs_in_64k(twin64, pki_state, broker):
    """A log pull over MQTT (firmware/logsend.py: one chunk in the heap at a time, loaded per
    request) of a ~100 KB log, in windows of 16 chunks, at 64k while the device takes readings:
    every byte arrives, no heap shortage, the session stays up."""
    import struct
    import time

    from warden.logs import format as lf, remote
    key = os.urandom(32)
    t = twin64("heap-logpull", log_key=key)
    files, seq = {}, 1
    for segno in range(1, 7):
        w = lf.SegmentWriter(key, segno, seq, 1, bytes(8))
        while len(w.data) < 16000:
            w.record(lf.EVENT, b"INFO test: filler " + b"." * 200, 1700000000)
        files["/log/%08x.seg" % segno] = bytes(w.data)
        seq = w.next_seq
    ff = flashimage.FlashFile(t.flash)
    ff.write(files)
    ff.save()
    t.start()
    t.wait_for(r"INFO telemetry: first reading", 20)
    lk = remote._Link(pki_state, "heap-logpull", "technician.default", "localhost", broker.port).connect()
    try:
        lk.send(b"I\0\0\0\1")
        index = None
        while index is None:
            d = remote._answer(lk.next(10), 1)
            assert d is not None, t.output
            if d is not None:
                index = dict(d["segments"])
        got = 0
        for segno, size in sorted(index.items()):
            off = 0
            while off < size:
                lk.send(b"R" + struct.pack(">IIIB", 1, segno, off, 16))
                deadline = time.monotonic() + 10
                for _ in range(16):
                    p = lk.next(deadline - time.monotonic())
                    assert p is not None, "no chunk: " + t.output[-2000:]
                    while p[:1] != b"D":
                        p = lk.next(deadline - time.monotonic())
                    _, s, o, sz = struct.unpack_from(">IIII", p, 1)
                    assert (s, o) == (segno, off), (s, o, segno, off)
                    off += len(p) - 17
                    got += len(p) - 17
                    if off >= sz:
                        break
    finally:
        lk.close()
    assert got >= 6 * 16000
    assert t.stop() == 0, t.output
    assert "MemoryError" not in t.output and "not enough heap" not in t.output and "session lost" not in t.output, t.output
