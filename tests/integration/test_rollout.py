"""Staged rollouts end to end (docs/rollout.md): `warden rollout` -> one technician session and one
operator session at a real mosquitto -> 20 twins, each with its own MQTT session, its own OTA
engine, reset and self-test.

The fleet is this module's own (its own CA, broker and registry): twenty devices would otherwise
show in other tests' device lists. Readings every 500 ms; the plan's health gate allows 300
messages a minute, and the misbehaving app sends a reading every 20 ms (3,000 a minute)."""
import json
import re

import pytest
from click.testing import CliRunner

from support.twinproc import Twin
from warden.board import build, twin as twinlib
from warden.broker.server import Broker
from warden.cli import main
from warden.fleet import devices, pki
from warden.fleet.registry import Registry
from warden.ota import image, keys, push as otapush
from warden.rollout import runner
from warden.rollout.store import Plan, RolloutError, Store
from warden.state import State

FLEET = 20


@pytest.fixture(scope="module")
def fleet_state(tmp_path_factory):
    state = State(tmp_path_factory.mktemp("rollout-state") / ".warden")
    pki.init_pki(state)
    keys.init_keys(state)
    return state


@pytest.fixture(scope="module")
def rbroker(fleet_state, tmp_path_factory):
    b = Broker(fleet_state, run_dir=tmp_path_factory.mktemp("rollout-broker"))
    b.start()
    fleet_state.broker_port = b.port
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def twins(fleet_state, rbroker):
    """FLEET twins, online and reading (r00 ... r19)."""
    made = {}
    for i in range(FLEET):
        thing = "r%02d" % i
        devices.add_device(fleet_state, thing)
        path = twinlib.flash_path(fleet_state, thing)
        twinlib.update_config(path, broker={"host": "localhost", "port": rbroker.port}, interval_ms=500,
                              selftest_ms=8000)
        made[thing] = Twin(path).start()
    for t in made.values():
        t.wait_for(r"INFO telemetry: first reading", 30)
    yield made
    for t in made.values():
        t.stop()


def signed(state, tmp_path, version, counter, misbehave=False):
    files = build.build_app()
    if misbehave:
        # The same app, but it takes a reading every 20 ms whatever its settings say: it boots,
        # passes its self-test (a reading is acknowledged) and then floods the broker.
        src = (build.ROOT / "firmware" / "device.py").read_text()
        bad = src.replace('interval = self.cfg["interval_ms"]', "interval = 20")
        assert bad != src
        (tmp_path / "bad").mkdir(exist_ok=True)
        (tmp_path / "bad" / "device.py").write_text(bad)
        build.compile_file(tmp_path / "bad" / "device.py", tmp_path / "bad" / "device.mpy", "firmware/device.py")
        files["/firmware/device.mpy"] = (tmp_path / "bad" / "device.mpy").read_bytes()
    data = image.sign(image.pack_bundle(files), "app", version, counter, image.default_target(state),
                      keys.load_private_key(state))
    p = tmp_path / ("app-%s.wup" % version)
    p.write_bytes(data)
    return p


def cli(state, *args):
    return CliRunner().invoke(main, ["--state", str(state.root), *args])


PLAN = dict(soak_s=3.0, max_msgs_per_min=300.0, min_readings=1, timeout_s=120.0)


def test_a_good_app_reaches_all_twenty(fleet_state, rbroker, twins, tmp_path):
    """20 twins, a canary of 2, concurrency 4, 120 devices a minute: every device confirmed and
    passed its gate; the canary finished before any other device began."""
    upd = signed(fleet_state, tmp_path, "2.0.0", 10)
    runner.create(fleet_state, "good", upd, list(twins), Plan(canary=2, concurrency=4, rate=120.0, **PLAN))
    # while the rollout holds them, a technician's single push is refused
    r = cli(fleet_state, "ota", "push", "r05", str(upd))
    assert r.exit_code != 0 and "held by the rollout good" in r.output, r.output
    s = runner.Run(fleet_state, "good", out=print).run()
    assert s["state"] == "done" and s["counts"] == {"succeeded": FLEET}, s
    ms = s["members"]
    canary_end = max(m["finished"] for m in ms if m["stage"] == "canary")
    assert all(m["started"] >= canary_end for m in ms if m["stage"] == "main")
    # the rate: starts after the canary are at least 60/120 s apart (a little slack for the clock)
    starts = sorted(m["started"] for m in ms if m["stage"] == "main")
    assert all(b - a >= 0.45 for a, b in zip(starts, starts[1:])), starts
    with Registry(fleet_state.registry_path) as reg:
        assert {reg.get(t).app_version for t in twins} == {"2.0.0"}
    r = cli(fleet_state, "rollout", "status", "--json")
    assert r.exit_code == 0 and {x["name"]: x["state"] for x in json.loads(r.output)}["good"] == "done"


def test_a_misbehaving_app_stops_at_its_canary_and_rolls_back(fleet_state, rbroker, twins, tmp_path):
    """The canary (2 devices, on 2.0.0 from the rollout before) installs and confirms the flooding
    app, fails its health gate; the rollout stops itself before the next stage, says why, and
    `abort --rollback` returns the canary to 2.0.0 (the signed rollback to its other slot). No
    device outside the canary was touched."""
    upd = signed(fleet_state, tmp_path, "2.5.0", 12, misbehave=True)
    canary = ["r00", "r01"]
    runner.create(fleet_state, "bad", upd, list(twins)[:10], Plan(canary=2, concurrency=2, **PLAN))
    lines = []
    s = runner.Run(fleet_state, "bad", out=lines.append).run()
    assert s["state"] == "aborted", (s, lines)
    assert re.match(r"canary r0[01] failed: health gate: sent \d+ messages", s["reason"]), s["reason"]
    by = {m["thing"]: m for m in s["members"]}
    assert {t for t, m in by.items() if m["state"] != "waiting"} <= set(canary)
    assert any(by[t]["state"] == "failed" for t in canary)
    for t in list(twins)[2:]:
        assert "2.5.0" not in twins[t].output, twins[t].output     # never sent a byte
    # the rollout's CLI shows it, with its reason
    r = cli(fleet_state, "rollout", "status", "bad")
    assert r.exit_code == 0 and "aborted" in r.output and "health gate" in r.output, r.output
    # back to the old version: the signed rollback to the other slot
    s = runner.abort(fleet_state, "bad", rollback=True, out=lines.append)
    for t in canary:
        m = {m["thing"]: m for m in s["members"]}[t]
        assert m["state"] == "restored", (m, lines[-4:])
        st = otapush.status(fleet_state, t)
        assert st["device"]["app"]["version"] == "2.0.0" and st["device"]["last"]["outcome"] == "confirmed", st


def test_a_killed_rollout_resumes_and_an_offline_twin_is_updated_when_it_returns(fleet_state, rbroker, twins,
                                                                                   tmp_path):
    """A run interrupted after its canary resumes without sending again to the devices that finished;
    a twin offline when its turn comes is updated once it is back."""
    upd = signed(fleet_state, tmp_path, "2.1.0", 20)
    group = ["r10", "r11", "r12", "r13"]
    twins["r13"].stop()
    runner.create(fleet_state, "resume", upd, group, Plan(canary=1, concurrency=2, rate=600.0, **PLAN))

    class Stop(Exception):
        pass

    def out(line):
        if "r10: passed its health gate" in line:
            raise Stop     # the run dies here, as a killed process would, right after its canary
    with pytest.raises(Stop):
        runner.Run(fleet_state, "resume", out=out).run()
    with Store(fleet_state) as st:
        states = {m.thing: m.state for m in st.members("resume")}
    assert states["r10"] == "succeeded", states
    sent_before = twins["r10"].output.count("update mode")
    lines = []

    def out2(line):
        lines.append(line)
        if line.startswith("waiting for 1 offline device"):
            twins["r13"].start()     # it comes back while the run waits for it
    s = runner.Run(fleet_state, "resume", out=out2).run()
    assert s["state"] == "done" and s["counts"] == {"succeeded": 4}, (s, lines)
    assert twins["r10"].output.count("update mode") == sent_before      # not sent again
    assert any("waiting for 1 offline device" in x and "r13" in x for x in lines), lines


def test_create_refuses_what_a_device_would_refuse(fleet_state, rbroker, twins, tmp_path):
    # An update no newer than what the registry says a device runs (counter 1): in the order of this
    # file the fleet is on counter 10 or more by now; run alone, r19 is recorded on counter 2 here.
    with Registry(fleet_state.registry_path) as reg:
        if not reg.get("r19").app_counter:
            reg.update("r19", app_counter=2, counter=2)
    old = signed(fleet_state, tmp_path, "0.9.0", 1)
    with pytest.raises(RolloutError, match="r19 would refuse this update"):
        runner.create(fleet_state, "old", old, ["r19"], Plan())
    with pytest.raises(RolloutError, match="no device named"):
        runner.create(fleet_state, "ghost", old, ["nosuch"], Plan())
    r = cli(fleet_state, "rollout", "create", "x", str(old))
    assert r.exit_code != 0 and "--to" in r.output


def test_a_sleeping_device_is_updated_at_its_wake_and_its_sleeps_are_no_fault(fleet_state, rbroker, twins, tmp_path):
    """A duty-cycled twin (asleep when its turn comes: its status says offline, reason sleep) is sent
    the update's head at once; it takes it at its wake, confirms, and passes its gate although it
    goes to sleep again during the soak (a sleep is its settings, not a fault)."""
    t = twins["r15"]
    t.stop()
    twinlib.update_config(t.flash, sleep_ms=1500)
    t.start()
    t.wait_for(r"INFO app: deep sleep for 1500 ms", 20)
    upd = signed(fleet_state, tmp_path, "2.2.0", 30)
    runner.create(fleet_state, "sleepy", upd, ["r15"], Plan(canary=1, **dict(PLAN, soak_s=4.0)))
    lines = []
    s = runner.Run(fleet_state, "sleepy", out=lines.append).run()
    assert s["state"] == "done" and s["counts"] == {"succeeded": 1}, (s, lines)
    log = t.output
    confirmed = log.index("INFO ota: self-test passed: app 2.2.0 confirmed")
    assert "INFO app: deep sleep for 1500 ms" in log[confirmed:], log       # it slept in its soak too
