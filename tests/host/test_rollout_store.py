"""The rollout's books (warden.rollout.store) and the decisions that need no device: who a rollout
holds, pause and resume, the monitor's pause action, the health gate's verdicts, and a single push
refused for a held device before anything touches the network."""
import pytest

from warden.fleet.registry import Registry
from warden.monitor import actions
from warden.ota import push as otapush
from warden.rollout import runner
from warden.rollout.store import Plan, RolloutError, Store, held_by
from warden.state import State


@pytest.fixture
def state(tmp_path):
    s = State(tmp_path / ".warden")
    with Registry(s.registry_path) as reg:
        for i, t in enumerate(("a", "b", "c")):
            reg.add(t, "%02d" % i * 32, i + 1)
    return s


def _make(state, name="r1", things=("a", "b")):
    with Store(state) as st:
        return st.create(name, "/u.wup", "ab" * 32, "app", "2.0.0", 7, Plan(canary=1), list(things), {"a": "1.0"})


def test_a_rollout_holds_its_open_devices_until_it_finishes_with_them(state):
    _make(state)
    assert held_by(state, "a") == "r1" and held_by(state, "c") is None
    with Store(state) as st:
        st.set_member("r1", "a", "succeeded", finished=True)
        s = st.summary("r1")
    assert held_by(state, "a") is None and held_by(state, "b") == "r1"
    assert s["counts"] == {"succeeded": 1, "waiting": 1} and s["stages"]["canary"] == {"succeeded": 1}
    with pytest.raises(RolloutError, match="exists already"):
        _make(state)


def test_a_single_push_or_rollback_is_refused_for_a_held_device(state, tmp_path):
    _make(state)
    upd = tmp_path / "u.wup"
    upd.write_bytes(b"not even an image")       # refused before it is read: nothing is sent
    with pytest.raises(otapush.OtaPushError, match="held by the rollout r1") as e:
        otapush.push(state, "b", upd)
    assert "rollout pause r1" in e.value.hint
    with pytest.raises(otapush.OtaPushError, match="held by the rollout r1"):
        otapush.rollback(state, "a")


def test_pause_resume_and_the_monitors_pause_action(state):
    _make(state)
    _make(state, "r2", ("c",))
    assert actions.pause_rollouts(state, "a", "monitor: rate on a") == ["r1"]
    with Store(state) as st:
        assert (st.get("r1").state, st.get("r1").reason) == ("paused", "monitor: rate on a")
        assert st.get("r2").state == "created"
    with pytest.raises(RolloutError, match="paused"):
        runner.Run(state, "r1").run()        # refused before any connection
    runner.resume(state, "r1")
    with pytest.raises(RolloutError, match="not paused"):
        runner.resume(state, "r1")
    runner.abort(state, "r2")
    with pytest.raises(RolloutError, match="nothing left to run"):
        runner.Run(state, "r2").run()
    with pytest.raises(RolloutError, match="only a created or running"):
        runner.pause(state, "r2")


def test_the_health_gate():
    p = Plan(soak_s=60, max_msgs_per_min=60, min_readings=2, heap_margin=1000)
    quiet = {"status": 0, "telemetry": 0, "metrics": 0, "offline": 0}
    assert runner.gate_failure(p, quiet, 10, {}, None, []) is None                  # not yet: still soaking
    assert "readings" in runner.gate_failure(p, quiet, 60, {}, None, [])            # too few at the end
    ok = dict(quiet, telemetry=30)
    assert runner.gate_failure(p, ok, 60, {"hf": 20000}, {"hf": 19500}, []) is None
    assert "heap free fell" in runner.gate_failure(p, ok, 60, {"hf": 20000}, {"hf": 18000}, [])
    assert "messages" in runner.gate_failure(p, dict(quiet, telemetry=61), 5, {}, None, [])   # at once
    assert "offline" in runner.gate_failure(p, dict(ok, offline=1), 5, {}, None, [])
    assert "monitor alert(s): rate" in runner.gate_failure(p, ok, 5, {}, None, ["rate"])
