"""Power cuts: kill -9 a micropython process appending to a log store on a twin flash (littlefs over the
file-backed esp32.Partition, as the twin mounts it) at well over 100 random points; after each cut every
record acknowledged as durable is on flash and verifies, numbers are never reused, and the store opens
again. The quota holds on the flash all along."""
import random
import subprocess
import time

import pytest

from support.devrun import MP, ROOT, mp_command
from warden.board import flashimage
from warden.logs.format import read_log
from warden.logs.pull import read_flash

KEY = bytes(range(32))
SEGMENT, QUOTA = 4096, 4096 * 14          # 6 segments: frequent rolls and drops
RUNS = 130

def payload(seed, n):
    return b"%d-%d:" % (seed, n) + b"x" * ((n * 37 + seed) % 150)


@pytest.fixture
def flash(tmp_path):
    p = tmp_path / "flash.bin"
    p.write_bytes(flashimage.new_flash({}))
    return p


def start(flash, app_build, seed):
    """tests/support/mp/logstore_appender.py appending on `flash` (bytes on stdout and stderr,
    read by the test itself: it cuts the power between lines)."""
    argv, env = mp_command(script=MP / "logstore_appender.py", args=[seed, QUOTA, SEGMENT], heap="64k", env={
        "WARDEN_FLASH": str(flash), "MICROPYPATH": ":".join([".frozen", str(ROOT / "twin"), str(app_build / "lib")])})
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_every_durable_record_survives_kill_9_at_random_points(flash, app_build):
    rnd = random.Random(20240601)
    acked = {}         # seq -> the payload acknowledged under it
    base = flashimage.FlashFile(flash).fs.used_block_count
    worst = 0
    high = 0           # the highest sequence number ever acknowledged
    cuts = 0
    t_start = time.monotonic()
    for run in range(RUNS):
        p = start(flash, app_build, run)
        # Cut at a random moment: mostly while appending, sometimes while opening (recovery).
        opened = p.stdout.readline().split()
        seen = []
        if rnd.random() < 0.15:
            time.sleep(rnd.random() * 0.005)
        else:
            assert opened[:1] == [b"OPEN"], (opened, p.stderr.read()[-2000:])
            assert int(opened[1]) > high, "a sequence number would be reused"
            # after a random number of acknowledgements (the appender writes on meanwhile, so
            # the cut lands anywhere in its next writes): the count does not depend on speed
            for _ in range(rnd.randrange(40)):
                seen.append(p.stdout.readline())
        p.kill()
        out, err = p.communicate()
        out = b"".join(seen) + out
        assert p.returncode == -9, err.decode()[-2000:]
        cuts += 1
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"A":
                seq = int(parts[1])
                assert seq not in acked, "sequence number %d acknowledged twice" % seq
                acked[seq] = payload(run, int(parts[2]))
                high = max(high, seq)
        used = (flashimage.FlashFile(flash).fs.used_block_count - base) * 4096
        worst = max(worst, used)
        assert used <= QUOTA, (run, used)
        # What is on flash now, read by the host exactly as a pull would.
        files = read_flash(flash)
        report = read_log(files, KEY)
        # The only state a cut may leave is a drop the device finishes at its next start.
        assert {p.kind for p in report.problems} <= {"replayed-segment"}, report.problems
        present = {r.seq for r in report.records}
        oldest = min(present) if present else high + 1
        lost = sorted(s for s in acked if s >= oldest and s not in present)
        assert not lost, ("acknowledged records missing after a cut", run, lost[:10])
        bad = [r for r in report.records if r.seq in acked and r.payload != acked[r.seq]]
        assert not bad, bad[:3]
        assert not present or max(present) >= high   # nothing acknowledged is beyond the log's end
    # A last start without a cut: the device reader sees the same log, clean.
    p = start(flash, app_build, RUNS)
    opened = p.stdout.readline().split()
    p.kill()
    p.communicate()
    assert int(opened[1]) > high
    elapsed = time.monotonic() - t_start
    print("%d power cuts, %d records acknowledged, highest %d, %.1f s, log at most %d of %d bytes"
          % (cuts, len(acked), high, elapsed, worst, QUOTA))
    assert cuts >= 100 and len(acked) > 1000
