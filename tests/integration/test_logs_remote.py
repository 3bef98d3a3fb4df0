"""`warden logs pull THING --via mqtt`: the log over the device's own MQTT session (firmware/logsend.py,
tools/warden/logs/remote.py), on one real twin and a real broker with the policy's ACL.

The twin's log is filled first with ~100 KB of events written by the host writer with its registry
key (the device opens them as its own and logs on after them), so a pull spans several segments and
many windows. In order: a principal without the right is refused by the broker (its request never
reaches the device, and it reads none of the chunks a technician gets); requests the device refuses
are answered with why, and the device answers a good request after them; a pull interrupted
half-way resumes from what the host has; after a power cut, the twin's flash pulled locally is
byte for byte what came over MQTT, and a pull over MQTT says the device does not answer.
"""
import struct
import time

import pytest
from click.testing import CliRunner

from support.twinproc import Twin
from warden.board import flashimage, twin as twinlib
from warden.cli import main
from warden.fleet import devices
from warden.logs import format as lf, remote

THING = "logs-remote-1"
SEGMENTS = 6            # of ~16 KB each, written by the host before the twin's first boot


def prefill(state, path):
    key = devices.get_device(state, THING).log_key
    files, seq, sid = {}, 1, bytes(range(8))
    for segno in range(1, SEGMENTS + 1):
        w = lf.SegmentWriter(key, segno, seq, 1, sid)
        while len(w.data) < 16384 - 320:
            w.record(lf.EVENT, b"INFO test: filler %d " % w.next_seq + b"." * 200, 1700000000 + w.next_seq)
        files["/log/%08x.seg" % segno] = bytes(w.data)
        seq = w.next_seq
    ff = flashimage.FlashFile(path)
    ff.write(files)
    ff.save()


@pytest.fixture(scope="module")
def twin(pki_state, broker):
    pki_state.broker_port = broker.port   # the CLI uses the project's broker: this one
    devices.add_device(pki_state, THING)
    path = twinlib.flash_path(pki_state, THING)
    prefill(pki_state, path)
    twinlib.update_config(path, broker={"host": "localhost", "port": broker.port}, interval_ms=100)
    t = Twin(path, heap=twinlib.DEFAULT_HEAP).start()
    t.wait_for(r"INFO telemetry: first reading", 20)
    yield t
    t.stop()
    print("--- twin\n" + "\n".join(t.lines[-30:]))   # shown when a test fails


def link(state, principal="technician.default"):
    return remote._Link(state, THING, principal, "localhost", state.broker_port).connect()


def answers(lk, rid, n, timeout=5.0):
    """The next n JSON answers to request id `rid`."""
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        d = remote._answer(lk.next(deadline - time.monotonic()), rid)
        if d is not None:
            out.append(d)
    return out


def test_a_principal_without_the_right_is_refused_by_the_broker(pki_state, twin):
    # The operator may read telemetry and status only: its request is dropped by the broker (mosquitto
    # denies silently), so the device never hears it, and its subscription gets none of the chunks.
    spy = link(pki_state, "operator.default")
    try:
        with pytest.raises(remote.RemoteLogError, match="did not answer"):
            remote.pull_remote(pki_state, THING, wait=0, principal="operator.default", answer=0.5)
        assert not [ln for ln in twin.lines if "log index asked" in ln]
        r, _ = remote.pull_remote(pki_state, THING, window=16)     # a technician's pull meanwhile
        assert len(r.files) >= SEGMENTS and r.report.ok
        assert spy.next(0.5) is None                               # none of it reached the operator
    finally:
        spy.close()


def test_requests_the_device_refuses_are_answered_with_why_and_do_not_wedge_it(pki_state, twin):
    lk = link(pki_state)
    try:
        rid = 77
        for req, why in ((b"X" + struct.pack(">I", rid), "malformed request (5 bytes)"),
                         (b"R" + struct.pack(">IIIB", rid, 1, 10 ** 6, 4), "offset 1000000 beyond the end of segment 1"),
                         (b"R" + struct.pack(">IIIB", rid, 0xFFFF, 0, 4), "no segment 65535"),
                         (b"R" + struct.pack(">IIIB", rid, 1, 0, 0), "window of 0 chunks"),
                         (b"R" + struct.pack(">IIIB", rid, 1, 0, 17), "window of 17 chunks")):
            lk.send(req)
            got = answers(lk, rid, 1)
            assert got and got[0]["step"] == "refused" and got[0]["reason"].startswith(why), (req, got)
        lk.send(b"I" + struct.pack(">I", rid))           # and it still answers a good request
        got = answers(lk, rid, 1)
        assert got and got[0]["step"] == "index" and len(got[0]["segments"]) >= SEGMENTS
    finally:
        lk.close()


def test_an_interrupted_pull_resumes_and_equals_a_local_pull_byte_for_byte(pki_state, twin, tmp_path):
    with pytest.raises(remote.RemoteLogError, match="stopped after"):
        remote.pull_remote(pki_state, THING, window=4, stop_after=40000)
    part = remote.partial_dir(pki_state, THING)
    kept = sum(p.stat().st_size for p in part.glob("*.seg"))
    assert kept >= 40000
    out = tmp_path / "remote"
    r = CliRunner().invoke(main, ["--state", str(pki_state.root), "logs", "pull", THING, "--via", "mqtt",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "over MQTT" in r.output and f"resumed after {kept} bytes" in r.output, r.output
    assert "no integrity problems" in r.output, r.output
    assert not part.exists()
    twin.kill()                                           # a power cut: the flash is as it was
    local = tmp_path / "local"
    r = CliRunner().invoke(main, ["--state", str(pki_state.root), "logs", "pull", THING, "--out", str(local)])
    assert r.exit_code == 0 and "from its twin flash" in r.output and "no integrity problems" in r.output, r.output
    got = {p.name: p.read_bytes() for p in out.glob("*.seg")}
    want = {p.name: p.read_bytes() for p in local.glob("*.seg")}
    assert got == want and len(got) >= SEGMENTS + 1
    assert sum(map(len, got.values())) > SEGMENTS * 16000
    # the device is off now: over MQTT nobody answers, and the error says what to do
    r = CliRunner().invoke(main, ["--state", str(pki_state.root), "logs", "pull", THING, "--via", "mqtt",
                                  "--wait", "0"])
    assert r.exit_code == 1 and "did not answer over MQTT" in r.stderr and "--wait" in r.stderr, r.output
