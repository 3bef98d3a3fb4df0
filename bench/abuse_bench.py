"""Benchmark: what a remote party can make a device do. A twin at -X heapsize=64k on the broker,
readings every 100 ms; a privileged observer sends:
  - floods of refused commands (junk OTA requests and commands without a handler, QoS 0 and 1),
    1,000 and 10,000 of them: the log records and the log bytes (encrypted, as stored in flash)
    they add, against the same twin left alone for the same time (the peer: no flood);
  - a poison message (a 20 KB retained command, larger than the client's max_packet): the longest
    gap between two readings arriving around it, against the reading interval.

    run(fleet) -> rows        python -m bench.abuse_bench
"""
from __future__ import annotations

import time

COLS = ["metric", "warden", "peer", "peer value", "ratio"]
INTERVAL_MS = 100
SETTLE = 2.0     # seconds after the flood's last PUBACK before the log is read


def _log_size(state, thing):
    from warden.board.twin import flash_path
    from warden.logs.format import read_log
    from warden.logs.pull import device_key, read_flash

    files = read_flash(flash_path(state, thing))
    report = read_log(files, device_key(state, thing))
    return len(report.records), sum(len(b) for b in files.values())


def _twin(state, broker, thing):
    """Start `thing`'s twin (provisioned at the first call) at the smallest heap the device runs in."""
    import subprocess

    from warden.board import twin as twinlib
    from warden.fleet import devices

    path = twinlib.flash_path(state, thing)
    if not path.exists():
        devices.add_device(state, thing)
        twinlib.update_config(path, broker={"host": "localhost", "port": broker.port}, interval_ms=INTERVAL_MS)
    argv, env = twinlib.twin_command(path, "64k")
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _stop(p):
    import signal

    p.send_signal(signal.SIGINT)
    p.wait(timeout=15)


def _client(state, broker, principal):
    """A paho client as `principal` (a session of its own), with a queue of received messages."""
    from warden.board.watch import Observer

    return Observer(state, broker.host, broker.port, principal=principal).connect()


def _observer_principal(state):
    """A test-style privileged principal that may send any command (added to the policy)."""
    from warden.broker import control as brokerctl
    from warden.fleet import principals
    from warden.policy.model import load_policy_data, save_policy

    data = load_policy_data(state)
    if "bench" not in data["roles"]:
        data["roles"]["bench"] = {"description": "bench only: sends any command", "principals": [],
                                  "allow": [{"action": "publish", "topic": "cmd/#"}]}
        save_policy(state, data)
        principals.add_principal(state, "sender", "bench")
        brokerctl.sync(state)
    return "bench.sender"


def _wait_reading(obs, thing, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = obs.next(0.5)
        if m is not None and m.thing == thing and m.kind == "telemetry":
            return m
    raise RuntimeError(f"{thing}: no reading within {timeout} s")


def log_growth(state, broker, thing, activity):
    """(records added, log bytes added, seconds) while `activity(obs)` runs against a fresh run of
    THING's twin (`obs`: an operator watching its readings); activity returns when it is done."""
    p = _twin(state, broker, thing)
    obs = _client(state, broker, "operator.default")
    obs.subscribe(f"dt/{state.app}/{thing}/telemetry")
    try:
        _wait_reading(obs, thing)
        _stop(p)
        before = _log_size(state, thing)
        p = _twin(state, broker, thing)
        _wait_reading(obs, thing)
        t0 = time.monotonic()
        activity(obs)
        _wait_reading(obs, thing)
        took = time.monotonic() - t0
        _stop(p)
        after = _log_size(state, thing)
        return after[0] - before[0], after[1] - before[1], took
    finally:
        obs.close()
        if p.poll() is None:
            p.kill()


def flood(state, broker, thing, n, sender):
    """n refused commands (junk OTA requests and commands without a handler, QoS 0 and 1)."""
    def activity(obs):
        bad = _client(state, broker, sender)
        for i in range(n):
            topic = f"cmd/{state.app}/{thing}/" + ("ota" if i % 2 else f"junk{i % 50}")
            bad.client.publish(topic, b"Zjunk", qos=1 if i % 10 == 0 else 0)
        bad.client.publish(f"cmd/{state.app}/{thing}/junk", b"last", qos=1).wait_for_publish(30)
        bad.close()
        time.sleep(SETTLE)               # the device works through what the broker still queues
    return log_growth(state, broker, thing, activity)


def idle(state, broker, thing, seconds):
    """The same twin left alone for `seconds` (the peer)."""
    return log_growth(state, broker, thing, lambda obs: time.sleep(seconds))[:2]


def poison(state, broker, thing, sender):
    """The longest gap (ms) between readings arriving in the 3 s around a 20 KB live command."""
    p = _twin(state, broker, thing)
    obs = _client(state, broker, "operator.default")
    obs.subscribe(f"dt/{state.app}/{thing}/telemetry")
    bad = _client(state, broker, sender)
    try:
        _wait_reading(obs, thing)
        arrivals = []
        t_end = time.monotonic() + 3
        sent = False
        while time.monotonic() < t_end:
            if not sent and time.monotonic() > t_end - 2:
                bad.client.publish(f"cmd/{state.app}/{thing}/ota", b"B" + b"\0" * 20000, qos=1).wait_for_publish(10)
                sent = True
            m = obs.next(0.2)
            if m is not None and m.thing == thing and m.kind == "telemetry":
                arrivals.append(m.received)
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
        return max(gaps) * 1000, len(arrivals)
    finally:
        bad.close()
        obs.close()
        _stop(p)


def run(fleet):
    state, broker = fleet.state, fleet.broker
    from warden.ota import keys

    if not keys.has_key(state):
        keys.init_keys(state)
    sender = _observer_principal(state)
    rows = []
    for n in (1000, 10000):
        recs, size, took = flood(state, broker, f"bench-flood-{n}", n, sender)
        base_recs, base_size = idle(state, broker, f"bench-idle-{n}", took)
        rows.append({"metric": f"log records added by {n} refused commands (over {took:.1f} s)",
                     "warden": recs, "peer": "the same time without them", "peer value": base_recs,
                     "ratio": round(recs / max(base_recs, 1), 2)})
        rows.append({"metric": f"log bytes added (encrypted, in flash) by {n} refused commands",
                     "warden": size, "peer": "the same time without them", "peer value": base_size,
                     "ratio": round(size / max(base_size, 1), 2)})
    gap, n = poison(state, broker, "bench-poison", sender)
    rows.append({"metric": f"longest gap between readings around a 20 KB poison command, ms ({n} readings)",
                 "warden": round(gap), "peer": "the reading interval", "peer value": INTERVAL_MS,
                 "ratio": round(gap / INTERVAL_MS, 2)})
    return rows


if __name__ == "__main__":
    from bench.common import fleet, print_table

    with fleet() as f:
        print_table("What a remote party can make a device do", run(f), COLS,
                    note="ratio: warden / peer (records and bytes: near 1 = the flood costs little more "
                         "than the time it took; gap: <= 2 = sampling never stopped for a reading interval)")
