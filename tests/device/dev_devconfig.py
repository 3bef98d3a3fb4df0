# Device tests for firmware/devconfig.py (remote settings) on a littlefs of its own: a signed
# set is applied (stored whole, the "now" settings in force at once); every forged, replayed,
# older, misdirected, out-of-range or off-the-list command is refused with its reason and changes
# nothing; the code lets itself go after each command.
# devtest: needs=config_vectors
import json
import os
import sys

import devtest

C = devtest.ctx()["config_vectors"]


class FileBlocks:
    """A block device in a host file (not in the 64 KiB heap): littlefs over it, as a board's /."""

    def __init__(self, path, n=64, size=512):
        self.size = size
        self.n = n
        self.f = open(path, "w+b")
        blank = b"\xff" * size
        for _ in range(n):
            self.f.write(blank)

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
    """A fresh littlefs mounted at / (the host's files stay reachable at /host), holding the
    trusted key and a provisioned /config.json, as on a device."""
    bd = FileBlocks(devtest.tmp + "/fs.bin")
    os.VfsLfs2.mkfs(bd)
    host = os.VfsPosix("/")
    os.umount("/")
    os.mount(os.VfsLfs2(bd), "/")
    os.mount(host, "/host")
    sys.path[:] = [".frozen"] + ["/host" + p for p in sys.path if p.startswith("/")]
    os.chdir("/")
    for d in ("/keys", "/state"):
        os.mkdir(d)
    for name, path in C["keys"].items():
        devtest.write(name, devtest.read("/host" + path))
    devtest.write("/config.json", devtest.read("/host" + C["config"]))


_root()


class Client:
    def __init__(self):
        self.sent = []

    def publish(self, topic, msg, retain=False, qos=0):
        self.sent.append((topic, json.loads(msg), retain))


class Dev:
    def __init__(self):
        self.thing = C["thing"]
        self.ota_topic = "dt/warden/%s/ota" % self.thing
        self.cfg = {"thing": self.thing, "interval_ms": 1000, "qos": 1, "sleep_ms": 0, "keepalive": 60}
        self.client = Client()


def cmd(name):
    return devtest.read("/host" + C[name])


def send(dev, name):
    """Handle command `name` as the session loop does; the answer it published."""
    from firmware import devconfig
    devconfig.handle(dev, cmd(name))
    for m in ("firmware.devconfig", "rsapss", "firmware.config"):
        assert m not in sys.modules, m   # let go after each command
    import firmware
    assert not hasattr(firmware, "devconfig") and not hasattr(firmware, "config")   # nor held by the package
    topic, d, retain = dev.client.sent.pop()
    assert topic == "dt/warden/%s/config" % dev.thing and not retain and not dev.client.sent
    return d


def state():
    return devtest.read("/config.json"), (devtest.read("/state/config.ctr") if _exists("/state/config.ctr") else None)


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def refused(dev, name, reason):
    before, cfg = state(), dict(dev.cfg)
    d = send(dev, name)
    assert d["step"] == "refused" and reason in d["reason"], (name, d)
    assert state() == before and dev.cfg == cfg, name   # nothing written, nothing in force
    return d["reason"]


def test_a_signed_set_is_stored_and_in_force_and_a_replay_is_refused():
    dev = Dev()
    d = send(dev, "get")
    assert d["step"] == "settings" and d["counter"] == 0 and d["at_boot"] == []
    assert d["settings"]["interval_ms"] == 1000 and d["settings"]["qos"] == 1 and d["settings"]["sleep_ms"] == 0
    d = send(dev, "first")
    assert d["step"] == "applied" and d["counter"] == 1 and d["at_boot"] == ["keepalive"], d
    assert dev.cfg["interval_ms"] == 2000 and dev.cfg["qos"] == 0   # at once
    assert dev.cfg["keepalive"] == 60                                # the session's client keeps its own
    stored = json.loads(devtest.read("/config.json"))
    assert stored["interval_ms"] == 2000 and stored["keepalive"] == 30 and stored["qos"] == 0
    assert stored["broker"] == {"host": "localhost"} and stored["wifi"] == {"ssid": "s"}   # the rest kept
    assert devtest.read("/state/config.ctr") == b"1"
    assert not _exists("/config.json.tmp") and not _exists("/state/config.ctr.tmp")
    assert "replay" in refused(dev, "first", "counter 1 is not newer than the applied 1")
    d = send(dev, "second")
    assert d["counter"] == 2 and d["settings"]["sensors"] == {"t": {"kind": "ramp", "start": 1, "step": 0.5}}
    assert sorted(d["at_boot"]) == ["keepalive", "log_quota", "sensors"] and dev.cfg["sleep_ms"] == 1000
    refused(dev, "first", "older command: counter 1 is lower than the applied 2")
    d = send(dev, "get")
    assert d["counter"] == 2 and d["settings"]["log_quota"] == 131072 and "sensors" in d["at_boot"]
    assert send(dev, "third")["counter"] == 7   # counters may skip; only going back is refused
    refused(dev, "second", "older command")


def test_forged_and_misdirected_commands_are_refused_with_the_reason():
    dev = Dev()
    refused(dev, "bad_signature", "bad signature")
    refused(dev, "altered", "bad signature")
    refused(dev, "other_key", "bad signature")
    refused(dev, "unknown_key", "unknown signing key")
    refused(dev, "wrong_target", "wrong target: the command is for 'cfg-2', this device is 'cfg-1'")
    refused(dev, "malformed", "malformed config command")
    refused(dev, "not_a_command", "not a config command")
    d = send(dev, "first")
    assert d["step"] == "applied", d   # none of them used up a counter


def test_out_of_range_and_off_the_list_settings_are_refused_by_the_device():
    dev = Dev()
    refused(dev, "out_of_range", "interval_ms must be an integer 100..86400000, got 5")
    refused(dev, "qos_2", "qos must be an integer 0..1, got 2")
    refused(dev, "bool_qos", "qos must be an integer 0..1, got true")
    refused(dev, "sleep_short", "sleep_ms must be an integer 0..86400000 (0: off, else at least 1000), got 10")
    refused(dev, "i2c_sensor", "i2c is provisioned only")
    refused(dev, "broker_host", "broker may not be set remotely")
    refused(dev, "thing_name", "thing may not be set remotely")
    refused(dev, "one_bad_of_two", "app may not be set remotely")   # all or nothing
    refused(dev, "empty", "settings must be a non-empty JSON object")


def test_a_corrupt_counter_refuses_every_set():
    dev = Dev()
    devtest.write("/state/config.ctr", b"garbage")
    refused(dev, "first", "counter /state/config.ctr is corrupt")
