"""`warden monitor`'s session: the operator principal over mutual TLS reads `dt/<app>/+/status`,
`dt/<app>/+/metrics` and `dt/<app>/+/telemetry` (readings: kept, sampled, for the dashboard; no rule
judges them), the broker's log gives its signals, each data point goes through the rules
(engine.py), and each alert is reported, kept, optionally published on
`alerts/<app>/<thing>/<rule>` and acted on (actions.py).

It must not decide what an alert is (engine.py) nor parse the log (signals.py). Messages arrive on
paho's network thread and are handed over through a queue: the store is used from one thread.
`once` ends the run at a barrier, not after a guessed wait: one more subscription, to a topic no
device can publish on (a thing name never holds a dot), whose SUBACK the broker sends after the
retained messages of the subscriptions before it (as warden.fleet.view does); the log is read to
its end, and open count alerts are judged once more at the current time.
"""
from __future__ import annotations

import json
import queue
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import WardenError
from ..fleet.names import parse_principal
from ..state import State
from .engine import BROKER, Engine
from .rules import load_rules
from .signals import LogReader
from .store import Store

BARRIER = ".end"
TICK_S = 30.0         # how often a long run re-judges open count alerts
LOG_POLL_S = 0.25     # how often the broker log is read for new lines


class MonitorError(WardenError):
    hint = "is the broker running (`warden broker run`), and the operator principal active (`warden principal list`)?"


@dataclass
class Summary:
    reports: int = 0
    signals: int = 0
    raised: int = 0
    cleared: int = 0


def default_log(state: State) -> Path:
    """The log of the broker `warden broker run` runs from this state (its folder, else the state's)."""
    from ..broker.server import LOG_FILE, Broker

    running = Broker.find_running(state)
    return running.log_path if running is not None else state.broker_dir / LOG_FILE


class Monitor:
    def __init__(self, state: State, *, host=None, port=None, principal: str = "operator.default",
                 broker_log=None, publish: bool | None = None, emit=None, points: bool = False):
        self.state = state
        self.rules = load_rules(state)
        self.publish = self.rules.publish if publish is None else publish
        self.principal = principal
        self.host, self.port = host, port
        self.broker_log = Path(broker_log) if broker_log else default_log(state)
        self.emit = emit or (lambda event: None)
        self.points = points            # emit every data point too, not only signals and alerts
        self.inbox = queue.Queue()
        self.summary = Summary()
        self.client = None
        self._published = []

    # -- the session -------------------------------------------------------------------------------
    def _connect(self, timeout: float):
        import paho.mqtt.client as mqtt

        from ..broker.server import client_address
        from ..fleet.principals import session_context

        if self.host is None or self.port is None:
            h, p, _ = client_address(self.state)
            self.host, self.port = self.host or h, self.port or p
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        c.tls_set_context(session_context(self.state, self.principal))
        up = queue.Queue()
        c.on_connect = lambda cl, ud, fl, rc, pr=None: up.put(("connack", rc))
        c.on_subscribe = lambda cl, ud, mid, rcs, pr=None: self.inbox.put(("suback", mid, rcs))
        c.on_message = lambda cl, ud, m: self.inbox.put(("msg", m.topic, m.payload, time.time()))
        c.on_disconnect = lambda cl, ud, fl, rc, pr=None: self.inbox.put(("lost", rc))
        where = f"{self.host}:{self.port}"
        try:
            c.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            raise MonitorError(f"cannot reach the broker at {where}: {e}") from None
        c.loop_start()
        self.client = c
        try:
            _, rc = up.get(timeout=timeout)
        except queue.Empty:
            raise MonitorError(f"the broker at {where} did not answer (CONNACK)") from None
        if rc != 0:
            raise MonitorError(f"the broker refused {self.principal}: {rc}")
        app = self.state.app
        _, self._sub_mid = c.subscribe([(f"dt/{app}/+/status", 0), (f"dt/{app}/+/metrics", 0),
                                        (f"dt/{app}/+/telemetry", 0)])
        _, self._barrier_mid = c.subscribe(f"dt/{app}/{BARRIER}/status", 0)

    def close(self):
        if self.client is not None:
            for info in self._published:      # alerts published: out before the session ends
                try:
                    info.wait_for_publish(5.0)
                except (RuntimeError, ValueError):
                    pass                      # the session is gone: nothing more can go out
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    # -- the run -----------------------------------------------------------------------------------
    def run(self, *, once: bool = False, duration: float | None = None, timeout: float = 10.0) -> Summary:
        """Watch until the barrier (`once`), for `duration` seconds, or until interrupted."""
        store = Store(self.state, self.rules.retention_days, self.rules.points_per_device)
        engine = Engine(self.rules, store)
        reader = LogReader(self.broker_log, store)
        try:
            self._connect(timeout)
            start = time.monotonic()
            deadline = start + duration if duration is not None else None
            barrier_deadline = start + timeout
            next_log = next_tick = 0.0
            barrier = False
            while True:
                now = time.monotonic()
                if now >= next_log:
                    for sig in reader.read():
                        self._signal(engine, sig)
                    next_log = now + LOG_POLL_S
                if now >= next_tick and not once:
                    self._events(engine.tick(time.time()))
                    next_tick = now + TICK_S
                if once and barrier:
                    break
                if deadline is not None and now >= deadline:
                    break
                if once and now >= barrier_deadline:
                    raise MonitorError(f"the broker sent no SUBACK within {timeout:g} s")
                try:
                    item = self.inbox.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item[0] == "suback":
                    if item[1] == self._sub_mid and any(getattr(r, "is_failure", False) or r == 128 for r in item[2]):
                        raise MonitorError(f"the broker refused {self.principal} a subscription to status or metrics",
                                           hint="the policy lets the operator role read dt/<app>/+/status and "
                                                "dt/<app>/+/metrics (docs/security.md, 'Roles and the policy file')")
                    if item[1] == self._barrier_mid:
                        barrier = True
                elif item[0] == "lost":
                    raise MonitorError("lost the connection to the broker", hint="run it again")
                else:
                    self._message(engine, *item[1:])
            for sig in reader.read():        # what the broker logged meanwhile
                self._signal(engine, sig)
            while True:                       # what arrived with the barrier
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if item[0] == "msg":
                    self._message(engine, *item[1:])
            self._events(engine.tick(time.time()))
        finally:
            self.close()
            store.close()
        return self.summary

    # -- one data point ----------------------------------------------------------------------------
    def _message(self, engine: Engine, topic: str, payload: bytes, ts: float):
        from ..fleet.names import validate_thing

        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != "dt" or parts[1] != self.state.app:
            return
        thing, kind = parts[2], parts[3]
        try:
            validate_thing(thing)
            data = json.loads(payload)
        except (WardenError, ValueError):
            return
        if not isinstance(data, dict):
            return
        if kind != "telemetry":
            self.summary.reports += 1
        if self.points:
            self.emit({"event": kind, "thing": thing, "time": ts, "data": data})
        if kind == "metrics":
            self._events(engine.metrics(thing, ts, data))
        elif kind == "status":
            self._events(engine.status(thing, ts, data))
        elif kind == "telemetry":
            engine.reading(thing, ts, data)

    def _signal(self, engine: Engine, sig):
        name = sig.name
        if name is not None and ("@" in name or parse_principal(name) is not None):
            return      # a principal's own session: not a device
        self.summary.signals += 1
        if sig.signal in ("auth_fail", "cert_fail", "refused_id") or self.points:
            self.emit(sig.as_dict())
        self._events(engine.signal(name, sig.ts, sig.signal, sig.detail))

    def _events(self, events):
        for ev in events:
            if ev.state == "raised":
                self.summary.raised += 1
                ev.actions = self._act(ev) if ev.actions else []
            else:
                self.summary.cleared += 1
            self.emit(ev.as_dict())
            if self.publish and self.client is not None:
                self._published.append(self.client.publish(f"alerts/{self.state.app}/{ev.thing}/{ev.rule}",
                                                           json.dumps(ev.as_dict(), sort_keys=True), qos=1))

    def _act(self, ev) -> list:
        """Run the rule's actions on the alert's device; what each did, in words."""
        from . import actions

        done = []
        if ev.thing == BROKER:
            return ["none: not a device"]
        for action in ev.actions:
            try:
                if action == "quarantine":
                    _, report = actions.quarantine(self.state, ev.thing, ev.rule, ev.detail)
                    done.append("quarantined" + ("" if not report.failed else " (pending on some brokers)"))
                elif action == "revoke":
                    actions.revoke(self.state, ev.thing, f"monitor: {ev.rule}")
                    done.append("revoked")
                elif action == "pause-rollouts":
                    names = actions.pause_rollouts(self.state, ev.thing, f"monitor: {ev.rule} on {ev.thing}")
                    done.append("paused " + ", ".join(names) if names else "no rollout to pause")
            except WardenError as e:
                done.append(f"{action} failed: {e}")
        with Store(self.state) as store:
            store.set_actions(ev.alert_id, done)
        return done
