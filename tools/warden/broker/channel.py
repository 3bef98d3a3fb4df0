"""One device's command channel over MQTT: the host's side of a conversation with a device's own
session (`warden ota push|status|rollback`, `warden device config`, `warden logs pull --via mqtt`).

A paho client acting as a principal (mutual TLS, its session certificate) publishes on
cmd/<app>/<thing>/<command> and reads the device's answers from dt/<app>/<thing>/<command>.
`connect` returns only once the broker has granted the subscription, so no answer to the first
command can be missed; a refused subscription is an error at once (mosquitto would otherwise drop
every answer without a word, and the tool would wait out its timeout not knowing why). Answers are
queued raw, with their retained flag: the protocol on top decides what a message means. Each tool
keeps its own error class and hints (class attributes of a subclass).

It must not reconnect by itself: a lost session ends the conversation, and the tool says to run it
again (each protocol resumes from what the device kept).
"""
from __future__ import annotations

import json
import queue
import ssl
import time

from ..errors import WardenError

LOST = (None, False)     # queued on disconnect: it ends the wait of whoever reads the queue


class CommandChannel:
    """`principal`'s MQTT session to THING's `command` topics. Without host or port, the broker
    `warden broker run` runs from this state (on the port it listens on), else project.json's."""

    error = WardenError                                   # what a subclass's tool raises
    qos = 1                                               # of the subscription to the answers
    reach_hint = "is it running? (warden broker run)"     # when the broker cannot be reached
    lost_hint = "run it again"                            # when the session is lost mid-conversation

    def __init__(self, state, thing, command, *, principal="technician.default", host=None, port=None):
        import paho.mqtt.client as mqtt

        from ..fleet.principals import session_context

        if host is None or port is None:
            from .server import client_address

            found_host, found_port, _ = client_address(state)
            host, port = host or found_host, port or found_port
        self.host, self.port, self.principal, self.command = host, port, principal, command
        self.cmd = f"cmd/{state.app}/{thing}/{command}"
        self.dt = f"dt/{state.app}/{thing}/{command}"
        self.inbox = queue.Queue()      # (payload, retained) per message; LOST once the session is gone
        self._up = queue.Queue()        # the CONNACK's code, then the SUBACK's codes
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        c.tls_set_context(session_context(state, principal))
        c.on_connect = lambda cl, ud, fl, rc, pr=None: self._up.put(rc)
        c.on_subscribe = lambda cl, ud, mid, rcs, pr=None: self._up.put(rcs)
        c.on_message = lambda cl, ud, m: self.inbox.put((m.payload, m.retain))
        c.on_disconnect = lambda cl, ud, fl, rc, pr=None: self.inbox.put(LOST)
        self.client = c

    def connect(self, timeout=10.0):
        where = f"{self.host}:{self.port}"
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as e:
            raise self.error(f"cannot reach the broker at {where}: {e}", hint=self.reach_hint)
        self.client.loop_start()
        try:
            self._handshake(where, timeout)
        except WardenError:
            self.close()     # the caller gets no channel to close: stop its network thread here
            raise
        return self

    def _handshake(self, where, timeout):
        """Wait for the CONNACK, subscribe, wait for the SUBACK."""
        for want in ("connack", "suback"):
            try:
                rc = self._up.get(timeout=timeout)
            except queue.Empty:
                raise self.error(f"the broker at {where} did not answer ({want})", hint=self.reach_hint) from None
            if want == "connack":
                if rc != 0:
                    raise self.error(f"the broker refused {self.principal}: {rc}",
                                     hint="is the principal active, with a technician's role? (`warden principal list`)")
                self.client.subscribe(self.dt, self.qos)
            elif any(getattr(x, "is_failure", False) or x == 128 for x in rc):
                raise self.error(f"the broker refused {self.principal} a subscription to {self.dt}",
                                 hint=f"the policy lets the technician role read dt/<app>/+/{self.command}")

    def send(self, payload):
        self.client.publish(self.cmd, payload, qos=1)

    def receive(self, timeout):
        """The next (payload, retained), or None after `timeout` seconds; `error` if the session is lost."""
        try:
            got = self.inbox.get(timeout=max(timeout, 0))
        except queue.Empty:
            return None
        if got == LOST:
            raise self.error("lost the connection to the broker", hint=self.lost_hint)
        return got

    def answer(self, steps, timeout):
        """The next JSON object whose "step" is in `steps`, or None after `timeout` seconds. Retained
        messages are skipped (leftovers of an earlier conversation), as is anything not a JSON object."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            got = self.receive(left)
            if got is None or got[1]:
                continue
            try:
                d = json.loads(got[0])
            except ValueError:
                continue
            if isinstance(d, dict) and d.get("step") in steps:
                return d

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
