"""`make run` / `warden demo`: a local broker, one device twin, and the operator's live view.

It only starts and stops what exists elsewhere: it must not leave the broker or the twin
running when it returns, however it returns.

Idempotent: the PKI and the device are made only when missing, so running it
again reuses them. On Ctrl-C (or SIGTERM) the twin is stopped first (it publishes
`offline`), then the broker; nothing is left running.
"""
import signal
import subprocess
import sys

from ..broker.server import Broker
from ..fleet import devices, pki


def ensure_fleet(state, thing, say=print):
    if not pki.has_ca(state):
        pki.init_pki(state)
        say("fleet PKI created in %s" % state.pki_dir)
    try:
        devices.get_device(state, thing)
    except devices.DeviceError:
        devices.add_device(state, thing)
        say("device %s provisioned (twin flash in %s)" % (thing, state.device_dir(thing)))


def run_demo(state, thing, watch, say=print):
    """Start broker and twin, run `watch()` in the foreground, stop everything on the way out.

    A broker `warden broker run` already runs from this state is used as it is (the twin and the
    view reach it on its own port) and left running: the demo stops only what it started."""
    ensure_fleet(state, thing, say)
    log = state.device_dir(thing) / "console.log"
    broker = Broker(state, port=state.broker_port)
    running = Broker.find_running(state)
    twin = None
    previous = signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if running is not None:
            say("broker: using the one already running on %s:%d (pid %s); it stays up after the demo"
                % (running.host, running.port, running.pid))
        else:
            broker.start()
            say("broker on %s:%d (log %s)" % (broker.host, broker.port, broker.log_path))
        with open(log, "ab") as out:
            twin = subprocess.Popen([sys.executable, "-m", "warden.cli", "--state", str(state.root),
                                     "twin", "run", thing], stdout=out, stderr=subprocess.STDOUT)
        say("twin %s running (console %s)" % (thing, log))
        watch()
    except KeyboardInterrupt:
        pass
    finally:
        if twin is not None and twin.poll() is None:
            twin.terminate()  # the twin runner turns SIGTERM into Ctrl-C for the device
            try:
                twin.wait(timeout=15)
            except subprocess.TimeoutExpired:
                twin.kill()
                twin.wait()
        broker.stop()
        signal.signal(signal.SIGTERM, previous)
        say(stopped_message(state, thing, twin))


def stopped_message(state, thing, twin):
    """What is down and what is still up, as it is now (not as the demo meant it to be)."""
    from .twin import flash_path, lock_holder

    down, up = [], []
    if twin is not None:
        holder = lock_holder(flash_path(state, thing))
        if holder:
            up.append("twin %s (pid %s)" % (thing, holder))
        else:
            down.append("twin")
    still = Broker.find_running(state)
    if still is not None:
        up.append("the broker on %s:%d (pid %s)" % (still.host, still.port, still.pid))
    else:
        down.append("broker")
    text = "stopped: %s %s down" % (" and ".join(down) or "nothing", "is" if len(down) == 1 else "are")
    if up:
        text += "; still running: %s" % ", ".join(up)
    return text
