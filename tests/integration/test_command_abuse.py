"""Nothing a principal sends keeps a twin offline, stops its sampling clock or floods its log:
a retained command (small or larger than the client's max_packet), a burst of commands, and a flood
of junk commands. Real mosquitto, real twins, at a board's 64 KiB (88k on the 64-bit twin, which
needs ~1.36 times a board's heap: docs/heap.md) and at the default heap."""
import json
import time

import pytest

from support.twinproc import Twin
from warden.board import twin as twinlib
from warden.fleet import devices
from warden.logs.format import DROP, EVENT, read_log
from warden.logs.pull import device_key, read_flash

HEAPS = ["88k", twinlib.DEFAULT_HEAP]


@pytest.fixture
def twin(pki_state, broker, tmp_path):
    made = []

    def make(thing, heap):
        devices.add_device(pki_state, thing)
        path = twinlib.flash_path(pki_state, thing)
        twinlib.update_config(path, broker={"host": "localhost", "port": broker.port}, interval_ms=100)
        t = Twin(path, heap=heap).start()
        t.wait_for(r"INFO telemetry: first reading", 15)
        made.append(t)
        return t

    yield make
    for t in made:
        t.stop()
        print("--- twin %s\n%s" % (t.flash, "\n".join(t.lines[-40:])))


def readings(op, thing, n, timeout=15):
    """Wait for n more readings of `thing` (their sequence numbers)."""
    seqs = []
    while len(seqs) < n:
        seqs.append(json.loads(op.expect(f"dt/warden/{thing}/telemetry", timeout=timeout).payload)["seq"])
    return seqs


@pytest.mark.parametrize("heap", HEAPS)
def test_retained_commands_never_act_and_never_jam(twin, mqtt_client, heap):
    thing = f"jam-{heap}"
    t = twin(thing, heap)
    op = mqtt_client("operator")
    op.subscribe(f"dt/warden/{thing}/telemetry")
    bad = mqtt_client("observer")
    topic = f"cmd/warden/{thing}/ota"
    try:
        # the broker hands a retained message to each new subscription, flagged retained: at every
        # connect. (A live subscriber gets it unflagged, as a live command: acted on, correctly.)
        for payload, sign in ((b"B" + b"\x00" * 20000, None),             # larger than max_packet
                              (b"S", "WARN cmd: command refused: retained")):  # a small "status"
            bad.publish(topic, payload, qos=1, retain=True)
            for _ in range(2):
                t.stop()
                seen = len(t.lines)
                t.start()
                t.wait_for(r"INFO mqtt: connected", 15)
                readings(op, thing, 5)
                after = "\n".join(t.lines[seen:])
                assert sign is None or sign in after, t.output   # (logged while subscribing)
                assert "session lost" not in after and "ota: accepted" not in after, t.output
    finally:
        bad.publish(topic, b"", qos=1, retain=True)   # clear it


@pytest.mark.parametrize("heap", HEAPS)
def test_a_command_flood_writes_a_bounded_log_and_sampling_goes_on(twin, mqtt_client, pki_state, heap):
    thing = f"flood-{heap}"
    t = twin(thing, heap)
    op = mqtt_client("operator")
    op.subscribe(f"dt/warden/{thing}/telemetry")
    bad = mqtt_client("observer")
    before = readings(op, thing, 1)[0]
    t0 = time.monotonic()
    for i in range(10000):
        # junk OTA requests (refused by the OTA code), unknown commands and a QoS 1 mix
        topic = f"cmd/warden/{thing}/" + ("ota" if i % 2 else "junk%d" % (i % 50))
        bad.client.publish(topic, b"Zjunk", qos=1 if i % 10 == 0 else 0)
    bad.publish(f"cmd/warden/{thing}/junk", b"last", qos=1)        # the PUBACK: the flood is in
    seqs = readings(op, thing, 10)
    assert seqs[0] > before
    took = time.monotonic() - t0
    t.stop()
    report = read_log(read_flash(t.flash), device_key(pki_state, thing))
    events = [r.payload.decode() for r in report.records if r.kind == EVENT]
    refusals = [e for e in events if "refused" in e]
    # bounded by time, not by the 10,000 commands: a few lines per message and reading interval
    intervals = took / 0.1 + 20    # readings every 100 ms; each flush logs at most 9 lines, each
    assert 0 < len(refusals) <= 18 * intervals and len(refusals) < 3000, (len(refusals), took)  # first twice
    assert any("more times" in e for e in refusals), refusals[:10]
    assert any(e.startswith("INFO boot: warden") for e in events)      # the boot events survived
    assert not any(r.kind == DROP for r in report.records)     # no history evicted
