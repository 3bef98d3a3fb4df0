# Device tests for the metrics report (firmware/metrics.py) at the board's 64 KiB: a real Device
# (firmware/device.py) and its real MQTT client on a littlefs of its own; the report has every
# field of the format (docs/device.md, "The metrics report"), connect failures by short reason,
# counters that only grow from one report to the next, boots counted on flash across "boots"
# (a new Device on the same flash), and the code is gone after each report. A report is built
# and published with only REPORT_BUDGET bytes of heap free.
import gc
import json
import os
import sys
import time

import devtest
import mqtt  # noqa: F401  resident on the device: loaded before the test's littlefs is mounted

# What building and handing over one report may need free, a boot's first check included (the
# hal's boot-time part and the state file). Measured: from ~7 to ~9 KB free in a heap cut in small
# pieces (which sizes are left decides it: a 232-byte block for the code, ~300 for the report).
REPORT_BUDGET = 12 * 1024
KEYS = ("v", "seq", "up", "rc", "boots", "hf", "hl", "tx", "txb", "rx", "rxb", "ca", "cf", "sl", "kept",
        "wait", "drop", "ota", "rssi", "temp")


class FileBlocks:
    """A block device in a host file (not in the heap): littlefs over it, as a board's /."""

    def __init__(self, path, n=32, size=512):
        self.size = size
        self.n = n
        self.f = open(path, "w+b")
        for _ in range(n):
            self.f.write(b"\xff" * size)

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * self.size + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=None):
        self.f.seek(block * self.size + (off or 0))
        self.f.write(buf)
        self.f.flush()

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.size
        if op == 6:
            return 0


def _root():
    """A fresh littlefs at / (the state file is written at /state/metrics, as on a device)."""
    bd = FileBlocks(devtest.tmp + "/fs.bin")
    os.VfsLfs2.mkfs(bd)
    host = os.VfsPosix("/")
    os.umount("/")
    os.mount(os.VfsLfs2(bd), "/")
    os.mount(host, "/host")
    sys.path[:] = [".frozen"] + ["/host" + p for p in sys.path if p.startswith("/")]
    os.chdir("/")
    os.mkdir("/state")


class Session:
    """What the broker receives of the device's session: the report goes out through the real
    client's publish() onto this stand-in socket (tests/integration/test_metrics.py has a broker)."""

    def __init__(self):
        # Made before the test squeezes the heap: a write copies into it and allocates nothing,
        # so what a report costs is the device's, not this stand-in's.
        self.buf = bytearray(1024)
        self.n = 0

    def write(self, buf, n=-1):
        n = len(buf) if n < 0 else n
        self.buf[self.n:self.n + n] = memoryview(buf)[:n]
        self.n += n
        return n

    def reports(self):
        """(topic, report) of each metrics PUBLISH (QoS 0) written so far."""
        got = []
        p = bytes(self.buf[:self.n])
        i = 0
        while i < len(p):
            op = p[i]
            n = sh = 0
            i += 1
            while True:
                n |= (p[i] & 0x7F) << sh
                sh += 7
                i += 1
                if not p[i - 1] & 0x80:
                    break
            tl = p[i] << 8 | p[i + 1]
            topic = p[i + 2:i + 2 + tl].decode()
            if op == 0x30 and topic.endswith("/metrics"):
                self.last = n + 1 + sh // 7         # the packet's size in bytes
                got.append((topic, json.loads(p[i + 2 + tl:i + n])))
            i += n
        return got


def _device(metrics_s=300):
    import tls
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)   # first, as at boot: ~3 KB in one piece
    from firmware import config, core, device
    cfg = config.validate({"thing": "m-1", "broker": {"host": "localhost", "port": 8883}, "metrics_s": metrics_s})
    core.unload(("firmware.config",))   # boot-time code, as on the device
    topics = ("m-1", "dt/warden/m-1/telemetry", "dt/warden/m-1/status", "dt/warden/m-1/ota", "cmd/warden/m-1/")
    dev = device.Device(cfg, ctx, {"t": lambda n: 1.0}, topics)
    if dev.mqtt is None:
        dev.make_client()        # as connect() does when making it in __init__ ran short
    s = Session()
    dev.mqtt.sock = s            # the client's socket: what it writes is what a broker would read
    dev.client = dev.mqtt
    return dev, s


def _send(dev):
    from firmware import metrics
    metrics.send(dev)


def _loaded():
    return [m for m in sys.modules if m in ("firmware.metrics", "firmware.hal.unixboot", "firmware.hal.esp32boot")]


def test_a_report_has_every_field_and_its_counters_only_grow():
    _root()
    dev, s = _device()
    io = dev.mqtt.io
    io[4] += 10                   # as the client counts: ten connects tried, nine failed (of every kind)
    io[5] += 1                    # and one made (the session the report goes out on)
    for k in (111, "[addrinfo error -2]", MemoryError, mqtt.MQTTConnectError, ValueError, -30592, 110, 5, 12):
        io[6][k] = 1
    _send(dev)
    assert _loaded() == [], _loaded()
    (topic, r), = s.reports()
    assert topic == "dt/warden/m-1/metrics", topic
    assert sorted(r) == sorted(KEYS), sorted(r)
    assert r["v"] == 1 and r["seq"] == 1 and r["rc"] == "power-on" and r["boots"] == 1, r
    assert r["cf"] == {"refused": 2, "dns": 1, "memory": 2, "tls": 2, "timeout": 1, "other": 1}, r["cf"]
    assert r["ca"] == 10 and r["sl"] == 0 and r["kept"] == 0 and r["wait"] == 0 and r["drop"] == 0, r
    assert r["ota"] == "idle" and r["rssi"] is None and r["temp"] is None, r
    assert 0 < r["hl"] <= r["hf"] < 64 * 1024 and 0 <= r["up"] < 60, r
    assert r["tx"] == 0 and r["txb"] == 0 and r["rx"] == 0, r    # nothing was sent before it
    # a session's worth of traffic and events, then the next report: totals, never less
    dev.client.publish(dev.telemetry, b'{"n":1}')
    dev.lost("test: a lost session")
    dev.client = dev.mqtt
    dev.mqtt.sock = s
    io[4] += 1                    # the reconnect: a session lost is one made that is not the current one
    io[5] += 1
    dev.vit[0] += 2               # two readings kept while it was down
    dev.selftest = {"kind": "app", "version": "2.0.0"}
    _send(dev)
    r2 = s.reports()[-1][1]
    assert r2["seq"] == 2 and r2["boots"] == 0 and r2["sl"] == 1 and r2["ota"] == "trial", r2
    assert r2["ca"] == 11 and r2["kept"] == 2, r2
    assert r2["tx"] == 2 and r2["txb"] > len(json.dumps(r)), r2    # the first report and the reading
    for k in ("tx", "txb", "rx", "rxb", "ca", "sl", "kept", "drop", "up"):
        assert r2[k] >= r[k], (k, r, r2)
    for k, n in r["cf"].items():
        assert r2["cf"][k] >= n, (r, r2)
    assert len(json.dumps(r2)) < 400, r2     # compact: one small packet
    print("report: %d bytes of JSON, %d bytes of MQTT packet" % (len(json.dumps(r2).replace(" ", "")), s.last))


def _boot(cause, metrics_s=300):
    """A new boot on the same flash (a new Device, its first check), after a reset of `cause`
    (machine.reset_cause(): 1 power-on, 3 watchdog, 4 deep-sleep): the reports it published and
    in how many ms its next check is due. The Device goes with the call, as with a reboot."""
    os.putenv("WARDEN_RESET_CAUSE", str(cause))    # what firmware/hal/unixboot.py reports
    gc.collect()
    dev, s = _device(metrics_s)
    _send(dev)
    return time.ticks_diff(dev.vit[2], time.ticks_ms()), [r for _, r in s.reports()]


def test_reboots_are_counted_on_flash_wakes_are_not_and_a_wake_reports_once_metrics_s_passed():
    _root()
    from firmware import core
    _, got = _boot(1)                     # the first boot: no state yet, a report is due
    assert [(r["boots"], r["rc"]) for r in got] == [(1, "power-on")], got
    due, got = _boot(3)                     # a watchdog reset a moment later: counted, not reported
    assert got == [] and devtest.read("/state/metrics").split()[0] == b"1"
    # the next check: 300 s after the last report
    assert 290 * 1000 < due <= 300 * 1000
    _, got = _boot(4)                       # a wake from deep sleep: neither a boot nor due
    assert got == [] and devtest.read("/state/metrics").split()[0] == b"1"
    last = int(devtest.read("/state/metrics").split()[1])
    core.replace("/state/metrics", "1 %d" % (last - 301))   # the next wake comes 301 s after the report
    _, got = _boot(4)
    assert [(r["boots"], r["rc"]) for r in got] == [(1, "deep-sleep")], got   # the watchdog's reboot
    assert devtest.read("/state/metrics").split()[0] == b"0"
    os.unsetenv("WARDEN_RESET_CAUSE")


def _squeeze(budget):
    """Leave only about `budget` bytes of heap free, held in blocks of all sizes as a running
    device holds its heap (tests/device/dev_ota_heap.py does the same)."""
    hold = []
    size = 4096
    while size >= 64:
        gc.collect()
        if gc.mem_free() - size < budget:
            size //= 2
            continue
        try:
            hold.append(bytearray(size))
        except MemoryError:
            size //= 2
    return hold


def test_a_report_is_built_and_sent_with_little_heap_free():
    """The least heap free (in steps of 256 B) a report is built and handed to the client with:
    that is its peak (loading the module, the hal's part, the report's string), within REPORT_BUDGET;
    each try that runs short lets the code go all the same."""
    _root()
    dev, s = _device()
    # As firmware/interning.py does at boot: the names of the code a report loads are interned
    # first, so a new qstr pool (~7 KB in one piece on this twin) does not land in the figure.
    from firmware import core, hal
    import firmware.metrics   # noqa: F401
    hal.boot()
    core.unload(("firmware.metrics", "firmware.hal.unixboot"))
    budget = 1024
    while not s.reports() and budget <= REPORT_BUDGET:
        budget += 256
        hold = _squeeze(budget)
        gc.collect()
        free = gc.mem_free()
        try:
            _send(dev)
        except MemoryError:
            pass
        assert _loaded() == [], _loaded()   # a report that did not fit leaves nothing loaded
        hold = None
        dev.vit[3] = None         # each try as a boot's first check (it reads the flash too)
    assert len(s.reports()) == 1, "no report with %d bytes free" % free
    print("a report built and sent with %d bytes free" % free)
