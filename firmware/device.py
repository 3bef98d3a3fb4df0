# The device's session loop (firmware/app.py starts it after the boot phase,
# firmware/start.py): readings on a fixed schedule, the MQTT session, the outbox
# and commands, for the rest of the device's life.
#
# What happens on each failure:
# - network, TLS or MQTT failure: logged with the reason, the session is
#   dropped and retried with a capped backoff; readings taken meanwhile go to
#   the encrypted outbox and are delivered, oldest first, after the reconnect;
# - a store that fails: the reading is counted as missed and logged, sampling goes on;
# - a reading that cannot be numbered (the counter's block could not be reserved on
#   flash, e.g. short of heap): it is not taken, counted as missed, and the next
#   interval tries again; numbers are never reused, so none is taken unreserved;
# - an update on trial whose self-test fails: rolled back, the device resets
#   (firmware/otacmd.py);
# - Ctrl-C / shutdown: `offline` is published and the session closed cleanly.
#
# This module stays loaded for the device's whole life: the OTA command handling and
# the self-test live in firmware/otacmd.py, loaded only while they are needed.
import gc
import sys
import time

from firmware import eventlog, hal
from firmware.core import VERSION, backoff_delay, describe
from firmware.seqno import SequenceNumbers
from firmware.sensors import Sensors


def _ota():
    """firmware/otacmd.py, loaded for the call; it unloads the OTA code (otacmd.OTA) once no
    OTA conversation, outcome report or self-test is pending."""
    from firmware import otacmd
    return otacmd


class Device:
    """The device's session loop: readings on a fixed schedule, connected or not.

    While the link is down readings keep being taken (and, once the outbox
    lands, kept); reconnects are scheduled with backoff_delay(), never slept through,
    so one failing connect never stops the sampling clock.
    """

    # The commands the loop handles, by the last level of their topic cmd/<app>/<thing>/<command>,
    # with the first bytes a request may start with to be queued (b"": any; its handler answers
    # a malformed one). A new command is a line here and a branch in handle(). A logs request is
    # queued even retained (as None): firmware/logsend.py answers why it is refused.
    # (The key type admits None: on_command looks up None for a message it got no body of. An
    # annotation compiles to nothing, so it costs no heap.)
    COMMANDS: dict[bytes | None, bytes] = {b"ota": b"BCFSAR", b"logs": b"", b"config": b"GS"}

    def __init__(self, cfg, ssl_context, sources, topics):
        self.cfg = cfg
        # The topics, built and checked at boot by firmware/topics.py (not kept loaded for this):
        # the thing name, dt/.../telemetry, dt/.../status, dt/.../ota, and the cmd/<app>/<thing>/ prefix.
        self.thing, self.telemetry, self.status_topic, self.ota_topic, self.commands = topics
        self.ssl_context = ssl_context
        self.mqtt = None
        # Connecting needs about 0.5 KB in one piece (the TLS socket's mbedTLS context), and
        # the heap of a running device is fragmented: this room is held while there is no
        # session and let go right before connecting, so the piece is there (docs/heap.md).
        self.room = bytearray(1024)
        try:
            # Made first: loading and setting up the client needs the most heap in one piece,
            # and the heap is least fragmented right after the boot phase is unloaded.
            self.make_client()
        except MemoryError:
            pass  # connect() tries again, and a failure there is retried with backoff
        self.sensors = Sensors(sources)
        self.seq = SequenceNumbers()
        self.failures = 0       # consecutive failed connects or sessions (the backoff's n)
        self.next_connect = time.ticks_ms()  # when to connect next while there is no session
        self.drain_at = None    # while a heap shortage pauses the outbox: ticks_ms to retry at
        self.short = False      # a drain ran short of heap in this backlog (warned once)
        self.client = None      # self.mqtt while a session is up, else None
        self.connected_at = 0
        self.acked = 0          # readings acknowledged since boot, live and kept
        self.first = True       # no live reading acknowledged yet (logged once)
        self.missed = 0
        # For the metrics report (firmware/metrics.py, loaded only to build and send one; the
        # client counts its traffic and connects): [readings kept since boot, lowest heap free
        # since the last report, ticks_ms of the next report, the report's own state]. One list:
        # one name for life.
        self.vit = [0, gc.mem_free(), time.ticks_ms(), None]
        self.pending = []       # commands received, (name, msg), handled by the loop in order (bounded)
        self.ota = None         # firmware.otalink.OtaLink, made at the first OTA request
        self.selftest = None    # an update awaiting its self-test (firmware/ota_state.py)
        self.selftest_until = time.ticks_ms()
        self.report = None      # type: dict | None  # the last OTA outcome, published (retained) once connected
        store = eventlog.store()
        if store is None:
            eventlog.warn("outbox", "no log store: readings taken while offline are lost")
            self.outbox = None
        else:
            from firmware.outbox import Outbox
            self.outbox = Outbox(store, self.sensors)

    def _status(self, state, reason=None):
        # "version": the app's and, as a field of its own, the firmware's, made once at boot
        # (firmware/start.py); "since": when this state began, but not in the last will
        # ("lost"), which is made once per client and published whenever the session is lost.
        s = '{"state":"%s","version":"%s"' % (state, self.cfg.get("version") or VERSION)
        if reason != "lost":
            s += ',"since":%d' % int(hal.unix_time())
        if reason:
            s += ',"reason":"%s"' % reason
        d = self.cfg.get("cert_days")  # set by boot_checks when expiry nears
        if d is not None:
            s += ',"warning":"certificate expires in %d days"' % d
        return s + "}"

    def make_client(self):
        """The one MQTT client of the device's life (self.mqtt), reconnected as often as needed."""
        from mqtt import MQTTClient
        cfg = self.cfg
        b = cfg["broker"]
        host = b["host"]
        ka = cfg["keepalive"]
        # A dead link must be noticed within 1.5 keepalive intervals: a PINGREQ goes out
        # after ka/2 of silence and its PINGRESP (or a PUBACK, one retry) may take
        # 2 * timeout, so timeout is held to ka/2.
        c = MQTTClient(
            self.thing, host, b.get("port", 8883), keepalive=ka, ssl=self.ssl_context,
            server_hostname=b.get("hostname", host), timeout=min(cfg["timeout"], ka / 2), retries=1,
        )
        c.set_last_will(self.status_topic, self._status("offline", "lost"), retain=True, qos=1)
        c.set_callback(self.on_command)
        self.mqtt = c

    def connect(self):
        if self.mqtt is None:
            self.make_client()
        b = self.cfg["broker"]
        c = self.mqtt
        # Connecting loads the client's setup code and makes the TLS socket: start from a
        # collected heap so they find room (the 64 KiB budget has little slack).
        self.room = None
        gc.collect()
        t0 = time.ticks_ms()
        try:
            # A duty-cycled device keeps its session at the broker while it sleeps, so that what a
            # technician sends meanwhile (an update's begin) is queued and delivered at its wake.
            c.connect(clean_session=not self.cfg["sleep_ms"])
            c.subscribe(self.commands + "#", qos=1)
            c.publish(self.status_topic, self._status("online"), retain=True, qos=1)
        except Exception:
            _close(c)
            raise
        self.client = c
        self.connected_at = time.ticks_ms()
        if self.report is not None:
            try:
                _ota().report(self)
            except MemoryError:
                pass  # published at the next connect
        ms = time.ticks_diff(self.connected_at, t0)
        gc.collect()
        eventlog.info("mqtt", "connected to %s:%d in %d ms, heap in use %d bytes" % (
            b["host"], b.get("port", 8883), ms, gc.mem_alloc()))

    def retry_in(self):
        """The delay (ms) before the next connect, counting this failure."""
        d = backoff_delay(self.failures, self.cfg["backoff_ms"], self.cfg["backoff_max_ms"])
        self.failures += 1
        return d

    def on_command(self, topic, msg):
        # Runs inside the MQTT client's receive path: only note it; the loop handles it in order
        # (handle()). It always returns, so a QoS 1 command is acknowledged and never redelivered.
        # Queued: a live (not retained) request of a command in COMMANDS (the broker sends only
        # cmd/<app>/<thing>/#), while the queue has room. The rest is refused by
        # firmware/refusal.py, loaded only then: it says why and counts (a flood writes few records).
        p = self.pending
        name = bytes(topic[len(self.commands):]) if msg is not None else None  # hashable
        ok = Device.COMMANDS.get(name)
        if ok is not None and len(p) < 3:  # 3: the queue's room
            if not ok:
                p.append((name, None if self.mqtt.retained else msg))
                return
            if msg and not self.mqtt.retained and msg[0] in ok:
                if msg[0] == 0x43 and p and p[-1][0] == name and p[-1][1][0] == 0x43:
                    # A chunk while another waits (the tool keeps a window of them in flight, and a
                    # reading's PUBACK wait reads what came meanwhile): not kept, so the heap holds
                    # one chunk at a time. The next answer asks the tool to resend from its offset.
                    if self.ota is not None:
                        self.ota.gap = 1
                    return
                p.append((name, msg))
                return
        try:
            from firmware import refusal
            refusal.command(self, topic, msg, ok is not None)
        except MemoryError:
            pass  # no heap to load the words: refused all the same (and acknowledged)

    def handle(self):
        """Handle the oldest command waiting (self.pending), by its name; each command's code is
        loaded for the call and lets itself go."""
        name, msg = self.pending.pop(0)
        if name == b"ota":
            _ota().handle(self, msg)
        elif name == b"config":
            from firmware import devconfig  # remote settings; unloads itself (and rsapss) when done
            devconfig.handle(self, msg)
        else:
            from firmware import logsend  # unloads itself when done
            logsend.handle(self, msg)

    def lost(self, reason):
        """Drop the session after a failure (the reason goes to the device log) and schedule the
        reconnect (a fresh ticks value: a stale one is meaningless after ~6 days of uptime)."""
        eventlog.error("mqtt", "session lost: %s" % reason)
        _close(self.client)
        self.client = None
        self.pending = []   # the lost session's requests: their senders get no answer and try again
        self.next_connect = time.ticks_add(time.ticks_ms(), self.retry_in())
        if self.ota is not None:
            try:
                _ota().drop(self, "session lost")
            except Exception:
                self.ota = None  # at least the link and its transfer state go
        if self.outbox is not None:
            self.outbox.save()
        gc.collect()  # what the session (and an OTA conversation) held: then the room is one piece
        try:
            self.room = bytearray(1024)  # for the reconnect (see __init__)
        except MemoryError:
            pass

    def sample(self):
        """Take the next reading; publish it, or keep it in the outbox when that fails."""
        r = sys.modules.get("firmware.refusal")  # loaded: refusals counted since the last reading
        if r:
            r.flush()
        try:
            n = self.seq.next()
        except Exception as e:
            self.missed += 1
            try:
                eventlog.error("telemetry", "reading not taken: %s" % describe(e))
            except Exception:
                pass  # as short of heap as the reservation was: the count says it
            return
        ts = int(hal.unix_time())
        values = self.sensors.sample(n)
        if self.client is not None:
            try:
                self.client.publish(self.telemetry, self.sensors.to_json(n, ts, values), qos=self.cfg["qos"])
                self.acked += 1
            except Exception as e:
                self.lost(describe(e))
                self.keep(n, ts, values)
                return
            if self.first:
                self.first = False
                eventlog.info("telemetry", "first reading %d acknowledged" % n)
            if self.selftest is not None:
                try:
                    _ota().passed(self)
                except Exception as e:  # tried again at the next acknowledged reading (the deadline stands)
                    eventlog.error("ota", "self-test verdict not recorded: %s" % describe(e))
            return
        self.keep(n, ts, values)

    def keep(self, n, ts, values):
        if self.outbox is None:
            self.missed += 1
            return
        try:
            self.outbox.add(n, ts, values)
            self.vit[0] += 1
        except Exception as e:  # a failing store must not stop the sampling clock
            self.missed += 1
            eventlog.error("outbox", "reading %d lost: %s" % (n, describe(e)))

    def _publish_kept(self, payload):
        try:
            self.client.publish(self.telemetry, payload, qos=1)
        except MemoryError:
            # Inside the client a packet may be half read: not the reader's shortage that
            # drain() waits out, but an end to the session.
            raise OSError(12, "out of memory in the MQTT client")  # ENOMEM
        self.acked += 1

    def draining(self):
        """A backlog waits and may be sent now."""
        ob = self.outbox
        return (ob is not None and ob.waiting and self.client is not None
                and (self.drain_at is None or time.ticks_diff(time.ticks_ms(), self.drain_at) >= 0))

    def drain(self, budget_ms):
        if not self.draining():
            return
        ob = self.outbox
        try:
            ob.drain(self._publish_kept, budget_ms)
            self.drain_at = None
            if not ob.waiting:
                self.short = False
                if ob.sent:  # the backlog just emptied (the last slice may have sent none)
                    eventlog.info("outbox", "backlog delivered (%d readings since boot)" % ob.sent)
        except MemoryError:
            # Reading the backlog (~4.7 KB on top of the session) did not fit now: the session
            # stays and the drain is tried again one reading interval later; nothing is lost.
            if not self.short:
                self.short = True
                eventlog.warn("outbox", "not enough heap to send the backlog now: retrying")
            self.drain_at = time.ticks_add(time.ticks_ms(), self.cfg["interval_ms"])
        except Exception as e:
            self.lost(describe(e))

    def close(self, reason):
        c = self.client
        self.client = None
        if self.outbox is not None:
            self.outbox.save()
        if c is None:
            return
        try:
            c.publish(self.status_topic, self._status("offline", reason), retain=True, qos=1)
            c.disconnect()
        except Exception as e:
            eventlog.warn("mqtt", "unclean close: %s" % describe(e))
            _close(c)

    def run(self, max_readings=0):
        stable_ms = self.cfg["stable_ms"]
        now = time.ticks_ms()
        next_reading = now
        self.next_connect = now
        while True:
            hal.watchdog_feed()
            now = time.ticks_ms()
            if self.client is None and time.ticks_diff(now, self.next_connect) >= 0:
                try:
                    self.connect()
                except Exception as e:
                    delay = self.retry_in()
                    eventlog.error("mqtt", "connect failed: %s; retry in %d ms" % (describe(e), delay))
                    self.next_connect = time.ticks_add(time.ticks_ms(), delay)
            now = time.ticks_ms()
            if time.ticks_diff(now, next_reading) >= 0:
                self.sample()
                interval = self.cfg["interval_ms"]   # read per reading: a remote setting is in force at once
                next_reading = time.ticks_add(next_reading, interval)
                if time.ticks_diff(now, next_reading) > interval:
                    next_reading = time.ticks_add(now, interval)  # fell behind (a long connect): skip ahead
                v = self.vit
                k = gc.mem_free()
                if k < v[1]:
                    v[1] = k
                if self.client is not None and self.cfg["metrics_s"] and time.ticks_diff(now, v[2]) >= 0:
                    try:
                        from firmware import metrics   # builds and publishes the report, then unloads itself
                        metrics.send(self)
                    except Exception:
                        pass   # a report is QoS 0 and holds totals: the next one says it all
                    metrics = None   # this frame lives for life: it must not keep the module
                if max_readings and self.acked >= max_readings:
                    return
                if self.cfg["sleep_ms"] and self.acked and self.selftest is None and self.ota is None and (
                        not self.pending and (self.outbox is None or not self.outbox.waiting)):
                    # Duty cycle: delivered, nothing waiting (no backlog, no OTA conversation: an
                    # update queued while it slept keeps it awake): sleep until the next reading.
                    eventlog.info("app", "deep sleep for %d ms" % self.cfg["sleep_ms"])
                    self.close("sleep")
                    hal.deep_sleep(self.cfg["sleep_ms"])
            if self.client is not None:
                if self.failures and time.ticks_diff(now, self.connected_at) >= stable_ms:
                    self.failures = 0  # the session proved stable: back to the shortest delay
                self.drain(self.cfg["drain_ms"])
            if self.client is not None:
                try:
                    self.client.check_msg()
                    if self.pending:
                        self.handle()
                except Exception as e:
                    self.lost(describe(e))
            if self.ota is not None:
                _ota().idle(self)  # a conversation the technician left is dropped (a sleeper sleeps again)
            if self.selftest is not None and time.ticks_diff(time.ticks_ms(), self.selftest_until) >= 0:
                _ota().failed(self, "self-test: no reading acknowledged within %d s"
                     % (self.cfg["selftest_ms"] // 1000))
            if self.draining():
                continue  # a backlog is draining: no idle wait between its time slices
            wake = next_reading
            if self.client is None and time.ticks_diff(self.next_connect, wake) < 0:
                wake = self.next_connect
            wait = time.ticks_diff(wake, time.ticks_ms())
            if wait <= 0:
                continue
            if self.client is None:
                time.sleep_ms(min(wait, 20))
                continue
            try:
                # Idle on the socket, not in sleep: a command (an OTA chunk) is handled the
                # moment it arrives.
                self.client.wait_msg(min(wait, 20) / 1000)
                if self.pending:
                    self.handle()
            except Exception as e:
                self.lost(describe(e))


def _close(c):
    if c is None:
        return
    try:
        c.sock.close()
    except Exception:
        pass


def run(cfg, ctx, sources, topics, selftest, last):
    """The device's life after boot (firmware/start.py's results); returns on max_readings or Ctrl-C."""
    dev = Device(cfg, ctx, sources, topics)
    if cfg["watchdog_ms"]:
        hal.watchdog_start(cfg["watchdog_ms"])  # from here on the loop feeds it; a hang resets
    dev.selftest = selftest
    if selftest is not None:
        dev.selftest_until = time.ticks_add(time.ticks_ms(), cfg["selftest_ms"])
        eventlog.info("ota", "self-test of %s %s: a reading must be acknowledged within %d s" % (
            selftest["kind"], selftest["version"], cfg["selftest_ms"] // 1000))
    elif last is not None:
        dev.report = dict(last, step=last["outcome"])  # re-published (retained) at each boot
    try:
        # max_readings (0 = forever) lets tests and benchmarks run a bounded session.
        dev.run(cfg.get("max_readings", 0))
        dev.close("done")
    except KeyboardInterrupt:
        eventlog.info("app", "stopped")
        dev.close("shutdown")
