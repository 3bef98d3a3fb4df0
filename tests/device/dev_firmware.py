# Device tests for config, topics, sequence numbers and sensors (firmware/).
import json
import os

import devtest
from devtest import raises

from firmware import config, topics
from firmware.hal import unixboot as hal_unix
from firmware.sensors import Sensors
from firmware.seqno import BLOCK, SequenceNumbers

GOOD = {"thing": "t-1", "broker": {"host": "localhost", "port": 8883}}


def cfg(**kw):
    c = json.loads(json.dumps(GOOD))
    c.update(kw)
    return c


def test_config_defaults_fill_in():
    c = config.validate(cfg())
    assert c["app"] == "warden" and c["keepalive"] == 60 and c["qos"] == 1


def test_config_errors_name_the_field():
    for bad, field in ((cfg(keepalive=1), "keepalive"), (cfg(qos=2), "qos"), (cfg(broker={}), "broker.host"),
                       (cfg(interval_ms="x"), "interval_ms"), ({"broker": GOOD["broker"]}, "thing")):
        e = raises(config.ConfigError, config.validate, bad)
        assert field in str(e), (field, e)


def test_config_file_missing_or_not_json():
    p = devtest.tmp + "/config.json"
    assert "missing" in str(raises(config.ConfigError, config.load, p))
    devtest.write(p, b"{not json")
    assert "not valid JSON" in str(raises(config.ConfigError, config.load, p))
    devtest.write(p, json.dumps(GOOD).encode())
    assert config.load(p)["thing"] == "t-1"


def test_topics_shape():
    t = topics.Topics("warden", "t-1")
    assert t.telemetry == "dt/warden/t-1/telemetry"
    assert t.status == "dt/warden/t-1/status"
    assert t.ota == "dt/warden/t-1/ota"
    assert t.command_filter == "cmd/warden/t-1/#"
    assert t.commands == "cmd/warden/t-1/"   # the device's command prefix (firmware/device.py, on_command)


def test_topics_refuse_other_things_and_wildcards():
    t = topics.Topics("warden", "t-1")
    for bad in ("dt/warden/t-2/telemetry", "dt/warden/+/telemetry", "dt/warden/t-1/#",
                "dt/warden/t-10/telemetry", "cmd/warden/t-1/x", "dt/warden/t-1/" + "a/" * 6):
        raises(topics.TopicError, t.guard_publish, bad)
    assert t.guard_publish("dt/warden/t-1/telemetry")


def test_topics_refuse_bad_thing_names():
    for bad in ("", "a/b", "a+b", "a#", "$sys", "x" * 129):
        raises(topics.TopicError, topics.Topics, "warden", bad)


def test_sequence_numbers_never_repeat_across_restarts():
    p = devtest.tmp + "/state/seq"
    s = SequenceNumbers(p)
    first = [s.next() for _ in range(BLOCK + 5)]
    assert first == list(range(1, BLOCK + 6))
    s2 = SequenceNumbers(p)  # a reset: resumes after the reserved block
    n = s2.next()
    assert n > first[-1] and n <= first[-1] + BLOCK + 1, n


def test_sequence_numbers_survive_a_corrupt_file():
    p = devtest.tmp + "/seq"
    devtest.write(p, b"garbage")
    assert SequenceNumbers(p).next() == 1


def test_simulated_sensors_are_deterministic():
    spec = {"sensors": {"t": {"kind": "sine", "base": 20, "amplitude": 2, "period": 4},
                        "r": {"kind": "ramp", "start": 1, "step": 0.5}}}
    a = Sensors(hal_unix.sensor_sources(spec))
    b = Sensors(hal_unix.sensor_sources(spec))
    ra = json.loads(a.to_json(3, 1000, a.sample(3)))
    assert ra == json.loads(b.to_json(3, 1000, b.sample(3)))
    assert ra["seq"] == 3 and ra["ts"] == 1000
    assert ra["values"] == {"t": 18.0, "r": 2.5}, ra


def test_a_failing_sensor_yields_null_and_others_continue():
    s = Sensors({"ok": lambda n: 1.0, "bad": lambda n: 1 / 0})
    r = json.loads(s.to_json(1, 0, s.sample(1)))
    assert r["values"] == {"ok": 1.0, "bad": None}


def test_unknown_simulated_sensor_kind_is_a_clear_error():
    e = raises(ValueError, hal_unix.sensor_sources, {"sensors": {"x": {"kind": "warp"}}})
    assert "warp" in str(e)


def test_backoff_grows_caps_and_jitters():
    from firmware.core import backoff_delay
    for n, ceiling in enumerate([100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000]):
        delays = [backoff_delay(n if n < 8 else 40, 100, 1000) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling, (n, ceiling, min(delays), max(delays))
        assert max(delays) > ceiling // 2, (n, ceiling, max(delays))   # the range is used
        assert len(set(delays)) > 20, "no jitter: %r" % delays


def test_watchdog_must_outlast_a_connect():
    e = raises(config.ConfigError, config.validate, cfg(watchdog_ms=5000, timeout=10))
    assert "watchdog_ms" in str(e)
    assert config.validate(cfg(watchdog_ms=0))["watchdog_ms"] == 0
    assert config.validate(cfg())["watchdog_ms"] == 60000


def test_commands_queue_in_order_and_everything_else_is_refused_counted_and_returns():
    # Device.on_command runs inside the MQTT client's receive path: it must return normally for
    # anything (so a QoS 1 command is acknowledged, never redelivered), queue live OTA requests in
    # order (3 at most), and count the rest (firmware/refusal.py, flushed at the next reading).
    import sys
    from firmware import device

    class Client:
        retained = 0

    class Dev:
        pass
    d = Dev()
    d.mqtt, d.pending, d.commands = Client(), [], "cmd/warden/t-1/"
    on = device.Device.on_command
    on(d, b"cmd/warden/t-1/ota", b"B1")
    on(d, b"cmd/warden/t-1/ota", b"C2")
    on(d, b"cmd/warden/t-1/\xff\xfe\xfd", b"S")     # a topic that is not UTF-8
    on(d, b"cmd/warden/t-1/reboot", b"S")            # no handler
    on(d, b"cmd/warden/t-1/ota", b"Zjunk")           # not an OTA request: no OTA code is loaded
    on(d, b"cmd/warden/t-1/ota", b"")
    d.mqtt.retained = 1
    on(d, b"cmd/warden/t-1/ota", b"S")               # retained: would replay at every connect
    d.mqtt.retained = 0
    on(d, None, None)                                # larger than the client's max_packet
    on(d, b"cmd/warden/t-1/ota", b"S")
    on(d, b"cmd/warden/t-1/ota", b"A")               # the queue is full
    assert d.pending == [(b"ota", b"B1"), (b"ota", b"C2"), (b"ota", b"S")], d.pending
    assert "firmware.otalink" not in sys.modules and "firmware.ota" not in sys.modules
    counts = sys.modules["firmware.refusal"]._counts
    assert sorted(counts) == sorted(["command refused: no handler for its topic",
                                     "command refused: not an OTA request",
                                     "command refused: retained (it would replay at every connect)",
                                     "command refused: larger than max_packet (read and dropped)",
                                     "command refused: busy, 3 waiting"]), counts
    assert counts["command refused: no handler for its topic"][2] == 1   # the second only counted
    assert counts["command refused: not an OTA request"][2] == 1
    sys.modules["firmware.refusal"].flush()
    assert "firmware.refusal" not in sys.modules                      # unloaded until the next refusal


def test_log_requests_are_queued_even_retained_or_malformed_for_their_handler_to_answer():
    # firmware/logsend.py answers every log request it is given with a reason: the queue holds a
    # retained one as None; a full queue still refuses (counted, firmware/refusal.py).
    import sys
    from firmware import device

    class Client:
        retained = 0

    class Dev:
        pass
    d = Dev()
    d.mqtt, d.pending, d.commands = Client(), [], "cmd/warden/t-1/"
    on = device.Device.on_command
    on(d, bytearray(b"cmd/warden/t-1/logs"), b"I\0\0\0\1")   # the topic as the client may give it
    d.mqtt.retained = 1
    on(d, b"cmd/warden/t-1/logs", b"I\0\0\0\2")
    d.mqtt.retained = 0
    on(d, b"cmd/warden/t-1/logs", b"")
    on(d, b"cmd/warden/t-1/logs", b"I\0\0\0\3")                # the queue is full
    assert d.pending == [(b"logs", b"I\0\0\0\1"), (b"logs", None), (b"logs", b"")], d.pending
    assert "firmware.logsend" not in sys.modules
    assert list(sys.modules["firmware.refusal"]._counts) == ["command refused: busy, 3 waiting"]
    sys.modules["firmware.refusal"].flush()


def test_a_reading_whose_number_cannot_be_reserved_is_skipped_not_a_crash():
    # Seen at 64k: reserving the next block of reading numbers (a small file written on flash)
    # ran out of heap inside sample() and the MemoryError ended the app. The reading is not
    # taken and counted as missed; the next interval tries again and numbering goes on unreused.
    from firmware import device

    class Seq:
        fail = True
        n = 7

        def next(self):
            if self.fail:
                raise MemoryError("memory allocation failed, allocating 304 bytes")
            self.n += 1
            return self.n

    class Sensors:
        def sample(self, n):
            return [n]

    kept = []

    class Dev:
        client = None
        missed = 0

        def keep(self, n, ts, values):
            kept.append(n)
    d = Dev()
    d.seq, d.sensors = Seq(), Sensors()
    device.Device.sample(d)                  # must return, not raise
    assert d.missed == 1 and kept == [], (d.missed, kept)
    d.seq.fail = False
    device.Device.sample(d)
    assert d.missed == 1 and kept == [8], (d.missed, kept)
