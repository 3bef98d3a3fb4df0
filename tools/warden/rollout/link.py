"""A rollout's two MQTT sessions, each shared by all its devices: one connection per role, whatever
the fleet's size.

- `SharedTechnician`: the technician principal's session. It publishes on cmd/<app>/<thing>/ota and
  reads dt/<app>/+/ota, and hands each device's answers to that device's `DeviceChannel`, which the
  single-device code (warden.ota.push) drives exactly as it drives its own session.
- `Watcher`: the operator principal's session. It reads every device's status, telemetry and
  metrics (the policy lets the operator read them and send nothing), and keeps what the health gate
  needs: each device's last status, the times of its recent messages, its last vitals.

Least privilege holds: the technician cannot read readings, the operator cannot send commands.
Neither reconnects by itself: a lost session ends the run (its state is in the registry; run it
again to resume).
"""
from __future__ import annotations

import collections
import json
import queue
import ssl
import threading
import time

from ..broker.channel import LOST, CommandChannel
from ..ota.push import OtaPushError, Technician

_TOPIC_KINDS = ("status", "telemetry", "metrics")


class SharedTechnician(CommandChannel):
    """The technician's one session for every device of a rollout."""

    error = OtaPushError
    lost_hint = "run the rollout again to resume (`warden rollout run NAME`)"

    def __init__(self, state, *, principal="technician.default", host=None, port=None, concurrency=4):
        super().__init__(state, "+", "ota", principal=principal, host=host, port=port)
        self.state = state
        self._views: dict = {}
        self._lock = threading.Lock()
        # Each device has up to push.WINDOW chunks in flight: paho must not hold them back.
        self.client.max_inflight_messages_set(min(1000, 20 * max(1, concurrency)))
        self.client.max_queued_messages_set(0)     # no limit on what waits to be sent
        self.client.on_message = self._route
        self.client.on_disconnect = self._lost

    def _route(self, client, userdata, m):
        parts = m.topic.split("/")
        if len(parts) != 4:
            return
        with self._lock:
            v = self._views.get(parts[2])
        if v is not None:
            v.inbox.put((m.payload, m.retain))

    def _lost(self, *args):
        with self._lock:
            views = list(self._views.values())
        for v in views:
            v.inbox.put(LOST)

    def channel(self, thing: str) -> "DeviceChannel":
        """THING's conversation on this session (its answers from now on)."""
        v = DeviceChannel(self, thing)
        with self._lock:
            self._views[thing] = v
        return v

    def release(self, thing: str) -> None:
        with self._lock:
            self._views.pop(thing, None)


class DeviceChannel(Technician):
    """One device's OTA conversation on a SharedTechnician (the interface warden.ota.push drives)."""

    def __init__(self, shared: SharedTechnician, thing: str):    # noqa: D107 (no session of its own)
        self.shared = shared
        self.client = shared.client
        self.principal = shared.principal
        self.host, self.port = shared.host, shared.port
        self.command = "ota"
        self.cmd = f"cmd/{shared.state.app}/{thing}/ota"
        self.dt = f"dt/{shared.state.app}/{thing}/ota"
        self.thing = thing
        self.inbox = queue.Queue()

    def connect(self, timeout=10.0):
        return self

    def close(self):
        self.shared.release(self.thing)


class WatchError(OtaPushError):
    hint = ("the rollout's health gate reads the devices as the operator principal: is it active "
            "(`warden principal list`), and the broker running?")


class Watcher:
    """The operator's one session: every device's status, message times and vitals."""

    KEEP_S = 3600.0          # message times older than this are forgotten

    def __init__(self, state, *, principal="operator.default", host=None, port=None):
        import paho.mqtt.client as mqtt

        from ..broker.server import client_address
        from ..fleet.principals import session_context

        if host is None or port is None:
            h, p, _ = client_address(state)
            host, port = host or h, port or p
        self.host, self.port, self.app = host, port, state.app
        self._lock = threading.Lock()
        self.status: dict = {}          # thing -> (received, the status message as a dict)
        self.messages: dict = {}        # thing -> deque of (received, kind)
        self.metrics: dict = {}         # thing -> (received, the latest metrics report)
        self.lost = False
        self._up = queue.Queue()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        c.tls_set_context(session_context(state, principal))
        c.on_connect = lambda cl, ud, fl, rc, pr=None: self._up.put(rc)
        c.on_subscribe = lambda cl, ud, mid, rcs, pr=None: self._up.put(rcs)
        c.on_message = self._message
        c.on_disconnect = self._disconnected
        self.client = c
        self.principal = principal

    def connect(self, timeout=10.0) -> "Watcher":
        where = f"{self.host}:{self.port}"
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            raise WatchError(f"cannot reach the broker at {where}: {e}") from None
        self.client.loop_start()
        try:
            rc = self._up.get(timeout=timeout)
            if rc != 0:
                raise WatchError(f"the broker refused {self.principal}: {rc}")
            self.client.subscribe([(f"dt/{self.app}/+/{k}", 0) for k in _TOPIC_KINDS])
            rcs = self._up.get(timeout=timeout)
            if any(getattr(x, "is_failure", False) or x == 128 for x in rcs):
                raise WatchError(f"the broker refused {self.principal} the devices' status, telemetry or metrics",
                                 hint="the policy lets the operator role read dt/<app>/+/status, telemetry "
                                      "and metrics")
            # A barrier: the SUBACK of one more subscription (a topic no device can publish on: a
            # thing name never holds a dot) comes after the retained status messages of the first,
            # so every device's last status is known when connect() returns.
            self.client.subscribe(f"dt/{self.app}/.end/status", 0)
            self._up.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise WatchError(f"the broker at {where} did not answer") from None
        except WatchError:
            self.close()
            raise
        return self

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def _disconnected(self, *args):
        self.lost = True

    def _message(self, client, userdata, m):
        parts = m.topic.split("/")
        if len(parts) != 4 or parts[3] not in _TOPIC_KINDS:
            return
        thing, kind, now = parts[2], parts[3], time.time()
        data = None
        if kind != "telemetry":
            try:
                data = json.loads(m.payload)
            except ValueError:
                return
            if not isinstance(data, dict):
                return
        with self._lock:
            if kind == "status":
                self.status[thing] = (now, data)
            elif kind == "metrics":
                self.metrics[thing] = (now, data)
            if not m.retain:        # a retained message is history, not something sent now
                q = self.messages.setdefault(thing, collections.deque())
                # a status that is not online: "offline" (a reboot, a lost session, its last will),
                # or "asleep" (a duty-cycled device going to sleep as its settings say: not a fault)
                st = None
                if kind == "status":
                    st = "online" if data.get("state") == "online" else (
                        "asleep" if data.get("reason") == "sleep" else "offline")
                q.append((now, kind, st))
                while q and q[0][0] < now - self.KEEP_S:
                    q.popleft()

    # ---- what the runner asks ----

    def online(self, thing: str) -> str | None:
        """'online', 'asleep' (offline because it sleeps: its session waits at the broker), 'offline', or None
        (never seen)."""
        with self._lock:
            st = self.status.get(thing)
        if st is None:
            return None
        s = st[1]
        if s.get("state") == "online":
            return "online"
        return "asleep" if s.get("reason") == "sleep" else "offline"

    def last_metrics(self, thing: str) -> dict | None:
        with self._lock:
            m = self.metrics.get(thing)
        return m[1] if m else None

    def since(self, thing: str, t0: float) -> dict:
        """What THING sent since `t0`: counts of messages by kind, and "offline": how many of its
        status messages said it was offline for a fault (a reboot, a lost session: its last will; a
        device that sleeps by its settings is not)."""
        with self._lock:
            q = list(self.messages.get(thing, ()))
        counts = {"status": 0, "telemetry": 0, "metrics": 0, "offline": 0}
        for ts, kind, st in q:
            if ts >= t0:
                counts[kind] += 1
                if st == "offline":
                    counts["offline"] += 1
        return counts
