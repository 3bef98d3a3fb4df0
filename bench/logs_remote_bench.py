"""A device's whole log pulled over its own MQTT session (warden logs pull --via mqtt) against the
local pull of the same log from the twin's flash file (--via twin), in one run.

The twin's log is made full first: 14 segments of ~16 KiB (the store's quota of 256 KiB keeps at
most (256 - 32) // 16 of them), written by the host writer with the device's registry key, which
the device opens as its own (and trims to its quota, counted in littlefs blocks). Both pulls end the same way (the pull folder written, every record
verified with the key, the mark kept), so the end-to-end ratio compares the transports; the MQTT
transfer alone (the index, then windows of 16 chunks of 2 KiB from the device) is given too.
Medians of ROUNDS, alternating."""
import statistics
import time

from tests.support.twinproc import Twin
from warden.board import flashimage, twin as twinlib
from warden.fleet import devices
from warden.logs import format as lf, pull as logpull, remote

ROUNDS = 5
SEGMENTS = 14
TARGET = 1.0      # MB/s over MQTT on loopback
COLS = ["metric", "over MQTT", "from the twin flash", "ratio", "target"]
NOTE = ("ratio: MQTT / twin flash (throughput) or twin flash / MQTT (time); both include writing the pull "
        "folder and verifying every record")


def _fill(state, thing):
    key = devices.get_device(state, thing).log_key
    files, seq = {}, 1
    for segno in range(1, SEGMENTS + 1):
        w = lf.SegmentWriter(key, segno, seq, 1, bytes(range(8)))
        while len(w.data) < 16384 - 320:
            w.record(lf.EVENT, b"INFO bench: filler %d " % w.next_seq + b"." * 200, 1700000000 + w.next_seq)
        files["/log/%08x.seg" % segno] = bytes(w.data)
        seq = w.next_seq
    ff = flashimage.FlashFile(twinlib.flash_path(state, thing))
    ff.write(files)
    ff.save()


def run(fleet):
    state, thing = fleet.state, "bench-logs"
    state.broker_port = fleet.broker.port
    devices.add_device(state, thing)
    _fill(state, thing)
    flash = twinlib.flash_path(state, thing)
    twinlib.update_config(flash, broker={"host": "localhost", "port": fleet.broker.port}, interval_ms=200)
    t = Twin(flash).start()
    mq, mq_transfer, local, size, segs = [], [], [], 0, 0
    try:
        t.wait_for(r"INFO telemetry: first reading", 20)
        for i in range(ROUNDS):
            t0 = time.monotonic()
            r, st = remote.pull_remote(state, thing, fleet.tmp / "remote")
            mq.append(time.monotonic() - t0)
            mq_transfer.append(st.received / st.seconds / 1e6)
            if not (r.report and r.report.ok):
                raise RuntimeError("the MQTT pull did not verify: %s" % (r.error or r.report.problems))
            size, segs = sum(map(len, r.files.values())), len(r.files)
            t0 = time.monotonic()
            r = logpull.pull(state, thing, fleet.tmp / "local")
            local.append(time.monotonic() - t0)
            if not (r.report and r.report.ok):
                raise RuntimeError("the local pull did not verify: %s" % (r.error or r.report.problems))
    finally:
        t.stop()
    m, lo, tr = statistics.median(mq), statistics.median(local), statistics.median(mq_transfer)
    return [
        {"metric": "the whole log as the device keeps it (%d segments), bytes" % segs, "over MQTT": size, "from the twin flash": size,
         "ratio": "", "target": ""},
        {"metric": "pull, end to end, s", "over MQTT": round(m, 3), "from the twin flash": round(lo, 3),
         "ratio": round(lo / m, 2), "target": ""},
        {"metric": "pull, end to end, MB/s", "over MQTT": round(size / m / 1e6, 2),
         "from the twin flash": round(size / lo / 1e6, 2), "ratio": round(lo / m, 2), "target": ""},
        {"metric": "MQTT transfer alone (index + windows), MB/s", "over MQTT": round(tr, 2),
         "from the twin flash": "", "ratio": "", "target": ">= %.1f" % TARGET},
    ]
