"""`warden watch`: an operator's live view of the fleet's readings.

It subscribes and reads: it must not publish anything.

Connects to the broker as an operator principal (default operator.default), with a session
certificate of its own (warden.fleet.principals: any number of watches run at once), mutual TLS with
the broker name checked; subscribes to the telemetry and status topics, and hands each reading
to a callback. Used by the CLI and by tests as a privileged observer.
"""
import json
import queue
import ssl
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt


from ..errors import WardenError


class WatchError(WardenError):
    hint = "is the broker running (warden broker run) and the device connected?"


_LOST = object()  # queued when the broker connection drops


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    received: float

    @property
    def thing(self):
        parts = self.topic.split("/")
        return parts[2] if len(parts) > 3 else None

    @property
    def kind(self):
        return self.topic.rsplit("/", 1)[-1]

    def json(self):
        try:
            return json.loads(self.payload)
        except ValueError:
            return None


class Observer:
    """A paho client acting as principal `principal` (a CN; default operator.default), collecting
    messages in a queue."""

    def __init__(self, state, host=None, port=None, principal="operator.default", client_id=None):
        from ..fleet.principals import session_context

        self.principal = principal
        if host is None or port is None:
            # the broker `warden broker run` runs from this state, on its actual port; else project.json's
            from ..broker.server import client_address

            found_host, found_port, _ = client_address(state)
            host, port = host or found_host, port or found_port
        self.host = host
        self.port = port
        self.messages = queue.Queue()
        self._connected = queue.Queue()
        # No automatic reconnect: a lost broker is reported, and close() never waits out a backoff.
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "", protocol=mqtt.MQTTv311,
                        reconnect_on_failure=False)
        c.tls_set_context(session_context(state, principal))
        c.on_connect = lambda cl, ud, flags, rc, props=None: self._connected.put(rc)
        c.on_message = lambda cl, ud, m: self.messages.put(Message(m.topic, m.payload, m.retain, time.monotonic()))
        c.on_disconnect = lambda cl, ud, flags, rc, props=None: self.messages.put(_LOST)
        self.client = c

    def connect(self, timeout=10):
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            raise WatchError("cannot reach the broker at %s:%d (%s): is it running? (warden broker run)"
                             % (self.host, self.port, e))
        self.client.loop_start()
        try:
            rc = self._connected.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise WatchError("no CONNACK from %s:%d within %ss" % (self.host, self.port, timeout))
        if rc != 0:
            self.close()
            raise WatchError("the broker refused %s: %s" % (self.principal, rc))
        return self

    def subscribe(self, topic, qos=1, timeout=10):
        done = queue.Queue()
        self.client.on_subscribe = lambda cl, ud, mid, rcs, props=None: done.put(rcs)
        self.client.subscribe(topic, qos)
        try:
            done.get(timeout=timeout)
        except queue.Empty:
            raise WatchError("no SUBACK for %s" % topic)
        return self

    def next(self, timeout):
        """The next message, or None after `timeout` seconds. Raises WatchError if the link dropped."""
        try:
            m = self.messages.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if m is _LOST:
            raise WatchError("lost the connection to the broker at %s:%d" % (self.host, self.port))
        return m

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def watch(state, thing=None, count=None, timeout=None, on_message=None, kinds=("telemetry",),
          principal="operator.default", host=None, port=None):
    """Print/collect readings; returns the number of readings seen. Raises WatchError at the timeout
    when `count` readings did not arrive."""
    app = state.app
    who = thing or "+"
    obs = Observer(state, host, port, principal=principal).connect()
    try:
        for kind in kinds:
            obs.subscribe("dt/%s/%s/%s" % (app, who, kind))
        seen = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while count is None or seen < count:
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WatchError("timed out after %ss with %d of %s readings" % (timeout, seen, count))
            m = obs.next(min(left, 1.0))
            if m is None:
                continue
            if m.kind == "telemetry":
                seen += 1
            if on_message:
                on_message(m)
        return seen
    finally:
        obs.close()
