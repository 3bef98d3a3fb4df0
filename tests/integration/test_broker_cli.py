"""`warden broker run` in the foreground, as a user runs it: starts, serves, stops on Ctrl-C / SIGTERM."""
import os
import signal
import socket
import sys
import time

import pytest

from support.fixtures_broker import Probe, client_files
from support.process import Process
from warden.broker.server import free_port


def start_cli(state, port):
    env = dict(os.environ, WARDEN_STATE=str(state.root), PYTHONUNBUFFERED="1")
    return Process([sys.executable, "-m", "warden.cli", "broker", "run", "--port", str(port)], env=env,
                   name="warden broker run").start()


def wait_port(proc, port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.running, proc.output
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"broker did not listen on {port}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_broker_run_serves_and_stops_cleanly(pki_state, sig):
    port = free_port()
    proc = start_cli(pki_state, port)
    try:
        # The CLI's own readiness line is printed once mosquitto is up.
        line = proc.wait_for("broker running", 30).string
        assert f"127.0.0.1:{port}" in line
        wait_port(proc, port)
        ca, cert, key = client_files(pki_state, "operator")
        probe = Probe("127.0.0.1", port, ca=ca, cert=cert, key=key)
        probe.connect()
        probe.close()
        assert proc.stop(sig, timeout=10) == 0, proc.output   # killed (-9) if it does not stop
        out = proc.output
        assert "broker stopped" in out and "Traceback" not in out
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        proc.kill()
