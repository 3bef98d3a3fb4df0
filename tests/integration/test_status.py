"""Issue 15 through the CLI with a real mosquitto and a real twin: `broker run --port` is the port
twin, watch and status use; one process per twin; Ctrl-C on `broker run` with a device connected
is a clean stop; the broker's start leaves no error in its log; `warden status` sees two brokers
and a stale pid file, each with its fix; demo beside a running broker leaves it up and says so."""
import json
import re
import os
import signal
import sys

import pytest
from click.testing import CliRunner

from support.process import Process
from warden.broker.server import Broker, free_port
from warden.cli import main
from warden.state import State

THING = "lamp-1"


def cli(state, *args):
    return CliRunner().invoke(main, ["--state", str(state.root), *args])


def warden_process(state, *args, name):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("WARDEN_STATE", None)
    return Process([sys.executable, "-m", "warden.cli", "--state", str(state.root), *args], env=env,
                   start_new_session=True, name=name).start()


def ctrl_c(p, timeout=20):
    """Ctrl-C as a terminal sends it: to the whole process group (mosquitto, micropython too)."""
    os.killpg(p.proc.pid, signal.SIGINT)
    try:
        return p.wait_exit(timeout)
    finally:
        if p.running:
            os.killpg(p.proc.pid, signal.SIGKILL)
            p.kill()


@pytest.fixture
def fleet(tmp_path):
    state = State(tmp_path / "st")
    assert cli(state, "pki", "init").exit_code == 0
    r = cli(state, "device", "add", THING)
    assert r.exit_code == 0, r.output
    state.broker_port = free_port()     # project.json's port: nothing listens there
    return state


def test_broker_port_twin_lock_status_and_a_clean_ctrl_c(fleet, tmp_path):
    port = free_port()
    broker = warden_process(fleet, "broker", "run", "--port", str(port), name="warden broker run")
    twin = None
    try:
        broker.wait_for("broker running", 30)
        twin = warden_process(fleet, "twin", "run", THING, name="warden twin run")
        twin.wait_for(rf"broker localhost:{port} \(the running broker, pid \d+\)", 60)
        r = cli(fleet, "watch", "--thing", THING, "--count", "1", "--timeout", "60")
        assert r.exit_code == 0, r.output
        assert f"watching localhost:{port} (the running broker" in r.output

        # one process per twin: the second copy is refused and names the first
        second = cli(fleet, "twin", "run", THING)
        assert second.exit_code == 1
        assert f"already runs (pid {twin.proc.pid})" in second.output and "Traceback" not in second.output

        r = cli(fleet, "status", "--json")
        report = json.loads(r.output)
        assert r.exit_code == 0 and report["healthy"], r.output
        local = report["brokers"][0]
        assert (local["port"], local["running"], local["reachable"]) == (port, True, True)
        assert local["warden_pid"] == broker.proc.pid
        assert [(t["thing"], t["pid"]) for t in report["twins"]] == [(THING, twin.proc.pid)]
        assert report["state"]["root"] == str(fleet.root.absolute()) and report["ca"]["days_left"] > 3000

        # a second broker for the same state is a problem, with its fix
        other = Broker(fleet, port=free_port(), run_dir=tmp_path / "b2").start()
        try:
            r = cli(fleet, "status")
            assert r.exit_code == 1
            assert "2 brokers run for this state" in r.output and "fix: stop all but one" in r.output
        finally:
            other.stop()

        # Ctrl-C with the device connected: a stop, not "mosquitto exited by itself"
        assert ctrl_c(broker) == 0, broker.output
        assert "broker stopped" in broker.output and "exited" not in broker.output, broker.output
        log = (fleet.broker_dir / "mosquitto.log").read_text()
        assert "New client connected" in log and f"as {THING}" in log
        assert "OpenSSL Error" not in log and "Protocol error" not in log, log
        assert ctrl_c(twin) == 0 and "twin stopped" in twin.output
    finally:
        for p in (twin, broker):
            if p is not None and p.running:
                os.killpg(p.proc.pid, signal.SIGKILL)
                p.kill()


def test_status_names_a_stale_pid_file_and_a_missing_state(fleet, tmp_path):
    gone = Process([sys.executable, "-c", "pass"], name="gone").start()
    gone.wait_exit(10)
    fleet.broker_dir.mkdir(exist_ok=True)
    pid_file = fleet.broker_dir / "mosquitto.pid"
    pid_file.write_text(f"{gone.proc.pid}\n")
    r = cli(fleet, "status")
    assert r.exit_code == 1
    assert f"stale pid file {pid_file}" in r.output and f"rm {pid_file}" in r.output
    # not a terminal: the CA's fingerprint whole (a script compares it), not cut with "..."
    assert re.search(r"CA +SHA-256 [0-9a-f]{64},", r.output), r.output
    r = cli(fleet, "status", "--json")
    problems = json.loads(r.output)["problems"]
    assert r.exit_code == 1 and any("stale pid file" in p["what"] and p["fix"] for p in problems)
    r = cli(State(tmp_path / "nowhere"), "status")
    assert r.exit_code == 1 and "no Warden state" in r.output and "warden pki init" in r.output


def test_demo_beside_a_running_broker_leaves_it_up_and_says_so(fleet):
    port = free_port()
    broker = warden_process(fleet, "broker", "run", "--port", str(port), name="warden broker run")
    try:
        broker.wait_for("broker running", 30)
        demo = warden_process(fleet, "demo", THING, name="warden demo")
        demo.wait_for(rf"using the one already running on 127.0.0.1:{port}", 30)
        demo.wait_for(" #", 60)
        assert ctrl_c(demo) == 0, demo.output
        last = [ln for ln in demo.output.splitlines() if ln.startswith("stopped:")]
        assert last and "twin is down" in last[-1] and f"still running: the broker on 127.0.0.1:{port}" in last[-1]
        assert broker.running and Broker.find_running(fleet).port == port
    finally:
        if broker.running:
            ctrl_c(broker)
