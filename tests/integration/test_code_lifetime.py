"""What stays loaded on the device after each phase (firmware/phases.py declares it, firmware/core.py
unloads the rest): after boot and a session, after a backlog drained, and after a refused OTA, the
twin's loaded device modules and the modules bound on its packages are the resident ones and
nothing else. A module dropped from sys.modules but still bound on its package keeps its code for
life: that is checked too. Real twins (at the default heap: the report itself needs room), a real
broker."""
import json

import pytest

from support.twinproc import Twin
from warden.board import twin as twinlib
from warden.broker.server import free_port
from warden.fleet import devices

# The app's own main.py, then a report of what is loaded (test code: it runs after the app returns).
MAIN = b"""
import firmware.app
firmware.app.main()
import json, sys
from firmware import phases
mods = sorted(m for m in sys.modules if phases.own(m) and m != "firmware.phases")   # (loaded by this report)
# the device modules that a loaded module holds (as a package attribute, or imported as a name)
held = []
for p in mods:
    for k in dir(sys.modules[p]):
        v = getattr(sys.modules[p], k)
        if type(v) is type(sys) and phases.own(v.__name__) and v.__name__ != "firmware.phases":
            held.append("%s -> %s" % (p, v.__name__))
print("LOADED " + json.dumps({"modules": mods, "held": sorted(held), "resident": phases.RESIDENT}))
"""


@pytest.fixture
def twin(pki_state, broker):
    made = []

    def make(thing, **cfg):
        devices.add_device(pki_state, thing)
        path = twinlib.flash_path(pki_state, thing)
        from warden.board import flashimage
        ff = flashimage.FlashFile(path)
        ff.write({"/main.py": MAIN})
        ff.save()
        cfg.setdefault("broker", {"host": "localhost", "port": broker.port})
        twinlib.update_config(path, interval_ms=50, **cfg)
        t = Twin(path, heap=twinlib.DEFAULT_HEAP, restart_on_reset=False)   # (the report needs room)
        made.append(t)
        return t

    yield make
    for t in made:
        t.stop()


def loaded(t):
    line = [ln for ln in t.lines if ln.startswith("LOADED ")]
    assert line, t.output
    return json.loads(line[-1][7:])


def assert_resident_only(t):
    d = loaded(t)
    resident = set(d["resident"])
    assert set(d["modules"]) <= resident, sorted(set(d["modules"]) - resident)
    # every device module another one holds is loaded and resident: nothing unloaded but still held
    stray = [h for h in d["held"] if h.split(" -> ")[1] not in resident or h.split(" -> ")[1] not in d["modules"]]
    assert not stray, stray
    return d


def test_after_boot_and_a_session_only_the_resident_code_is_loaded(twin):
    t = twin("life-session", max_readings=5).start()
    assert t.wait_exit(30) == 0, t.output
    d = assert_resident_only(t)
    # the boot phase's modules are gone, from sys.modules and from their packages
    for m in ("firmware.start", "firmware.config", "firmware.identity", "firmware.ota_state", "logopen"):
        assert m not in d["modules"] and not [h for h in d["held"] if h.endswith(" " + m)], d


def test_after_a_backlog_drained_its_reader_is_unloaded(twin, broker):
    t = twin("life-drain", broker={"host": "localhost", "port": free_port()}, backoff_ms=200,
             backoff_max_ms=200, max_readings=60).start()
    for _ in range(2):
        t.wait_for(r"connect failed", 10)
    assert t.stop() == 0, t.output
    twinlib.update_config(t.flash, broker={"host": "localhost", "port": broker.port})
    t.start()
    t.wait_for(r"INFO outbox: backlog delivered", 30)
    assert t.wait_exit(30) == 0, t.output
    assert "logread" not in assert_resident_only(t)["modules"]


def test_after_a_refused_ota_request_no_ota_code_stays(twin, mqtt_client):
    t = twin("life-ota", max_readings=40).start()
    t.wait_for(r"INFO telemetry: first reading", 15)
    tech = mqtt_client("observer")
    tech.publish("cmd/warden/life-ota/ota", b"B" + b"not an update", qos=1)   # malformed head
    t.wait_for(r"update refused: malformed update head", 15)
    assert t.wait_exit(30) == 0, t.output
    d = assert_resident_only(t)
    assert not [m for m in d["modules"] if "ota" in m or m == "firmware.refusal"], d
