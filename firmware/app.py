# The Warden device application: boot checks -> time -> identity -> connect ->
# sample / publish -> commands, for the device's whole life.
#
# What happens on each failure:
# - bad config or identity: logged, then the device idles and re-checks every
#   minute (no reboot loop: re-provisioning fixes it without a power cycle);
# - network, TLS or MQTT failure: logged with the reason, the session is
#   dropped and retried with a capped backoff; readings are not lost in the
#   meantime once the outbox arrives (issue 4), here they are counted as missed;
# - Ctrl-C / shutdown: `offline` is published and the session closed cleanly.
import gc
import json
import sys
import time

from firmware import eventlog, hal
from firmware.backoff import Backoff
from firmware.seqno import SequenceNumbers
from firmware.sensors import Sensors
from firmware.topics import Topics

VERSION = "0.1.0"
_IDLE_RETRY_MS = 60000
_BACKOFF_MAX_MS = 30000


class Device:
    """The device's session loop: readings on a fixed schedule, connected or not.

    While the link is down readings keep being taken (and, once the outbox
    lands, kept); reconnects are scheduled with Backoff, never slept through,
    so one failing connect never stops the sampling clock.
    """

    def __init__(self, cfg, ssl_context):
        self.cfg = cfg
        self.ssl_context = ssl_context
        self.topics = Topics(cfg["app"], cfg["thing"])
        self.sensors = Sensors(hal.sensor_sources(cfg))
        self.seq = SequenceNumbers()
        self.backoff = Backoff(cfg["backoff_ms"], cfg["backoff_max_ms"])
        self.client = None
        self.connected_at = 0
        self.acked = 0
        self.missed = 0
        self.command = None     # the last command received, handled by the loop
        self.ota = None         # firmware.otalink.OtaLink, made at the first OTA request
        self.selftest = None    # an update awaiting its self-test (firmware/ota_state.py)
        self.selftest_until = time.ticks_ms()
        self.report = None      # the last OTA outcome, published (retained) once connected
        store = eventlog.store()
        if store is None:
            eventlog.warn("outbox", "no log store: readings taken while offline are lost")
            self.outbox = None
        else:
            from firmware.outbox import Outbox
            self.outbox = Outbox(store, self.sensors)

    def _status(self, state, reason=None):
        s = '{"state":"%s","version":"%s"' % (state, VERSION)
        if reason:
            s += ',"reason":"%s"' % reason
        d = self.cfg.get("cert_days")  # set by boot_checks when expiry nears
        if d is not None:
            s += ',"warning":"certificate expires in %d days"' % d
        return s + "}"

    def connect(self):
        from mqtt import MQTTClient  # imported after the boot checks are unloaded (heap peak)
        cfg = self.cfg
        b = cfg["broker"]
        host = b["host"]
        ka = cfg["keepalive"]
        # A dead link must be noticed within 1.5 keepalive intervals: a PINGREQ goes out
        # after ka/2 of silence and its PINGRESP (or a PUBACK, one retry) may take
        # 2 * timeout, so timeout is held to ka/2.
        c = MQTTClient(
            self.topics.thing, host, b.get("port", 8883), keepalive=ka, ssl=self.ssl_context,
            server_hostname=b.get("hostname", host), timeout=min(cfg["timeout"], ka / 2), retries=1,
        )
        c.set_last_will(self.topics.status, self._status("offline", "lost"), retain=True, qos=1)
        c.set_callback(self.on_command)
        t0 = time.ticks_ms()
        try:
            c.connect()
            c.subscribe(self.topics.command_filter, qos=1)
            c.publish(self.topics.status, self._status("online"), retain=True, qos=1)
        except Exception:
            _close(c)
            raise
        self.client = c
        self.connected_at = time.ticks_ms()
        self.publish_report()
        ms = time.ticks_diff(self.connected_at, t0)
        gc.collect()
        eventlog.info("mqtt", "connected to %s:%d in %d ms, heap in use %d bytes" % (
            host, b.get("port", 8883), ms, gc.mem_alloc()))

    def on_command(self, topic, msg):
        # Runs inside the MQTT client's receive path: only note it; the loop handles it.
        name = self.topics.command_name(topic.decode() if isinstance(topic, bytes) else topic)
        if name == "ota":
            self.command = msg
        else:
            eventlog.info("cmd", "command %r (%d bytes) ignored: no handler" % (name, len(msg)))

    def say_ota(self, d, retain=False):
        self.client.publish(self.topics.ota, json.dumps(d), retain=retain, qos=1 if retain else 0)

    def handle_command(self):
        msg = self.command
        self.command = None
        if self.ota is None:
            from firmware.otalink import OtaLink
            self.ota = OtaLink("esp32/" + self.cfg["app"], self.say_ota)
        self.ota.handle(msg)
        if self.ota.installed:
            self.close("ota-reset")
            hal.reset()

    def selftest_passed(self):
        from firmware import ota_state
        p = ota_state.confirm()
        unload(("firmware.ota_state",))
        self.selftest = None
        if p:
            eventlog.info("ota", "self-test passed: %s %s confirmed" % (p["kind"], p["version"]))
            self.report = {"step": "confirmed", "kind": p["kind"], "version": p["version"],
                           "counter": p["counter"]}
            self.publish_report()

    def selftest_failed(self, reason):
        from firmware import ota_state
        p = ota_state.rollback(reason)
        unload(("firmware.ota_state",))
        if p:
            eventlog.error("ota", "%s %s rolled back: %s" % (p["kind"], p["version"], reason))
        self.close("ota-rollback")
        hal.reset()

    def publish_report(self):
        if self.report is not None and self.client is not None:
            try:
                self.say_ota(self.report, retain=True)
                self.report = None
            except Exception as e:
                self.lost(_reason(e))

    def lost(self, reason):
        """Drop the session after a failure; the reason goes to the device log."""
        eventlog.error("mqtt", "session lost: %s" % reason)
        _close(self.client)
        self.client = None
        if self.outbox is not None:
            self.outbox.save()

    def sample(self):
        """Take the next reading; publish it, or keep it in the outbox when that fails."""
        n = self.seq.next()
        ts = int(hal.unix_time())
        values = self.sensors.sample(n)
        if self.client is not None:
            try:
                self.client.publish(self.topics.telemetry, self.sensors.to_json(n, ts, values), qos=self.cfg["qos"])
                self.acked += 1
                if self.acked == 1:
                    eventlog.info("telemetry", "first reading %d acknowledged" % n)
                if self.selftest is not None:
                    self.selftest_passed()
                return
            except Exception as e:
                self.lost(_reason(e))
        self.keep(n, ts, values)

    def keep(self, n, ts, values):
        if self.outbox is None:
            self.missed += 1
            return
        try:
            self.outbox.add(n, ts, values)
        except Exception as e:  # a failing store must not stop the sampling clock
            self.missed += 1
            eventlog.error("outbox", "reading %d lost: %s" % (n, _reason(e)))

    def _publish_kept(self, payload):
        self.client.publish(self.topics.telemetry, payload, qos=1)
        self.acked += 1

    def drain(self, budget_ms):
        ob = self.outbox
        if ob is None or not ob.waiting or self.client is None:
            return
        try:
            if ob.drain(self._publish_kept, budget_ms) and not ob.waiting:
                eventlog.info("outbox", "backlog delivered (%d readings since boot)" % ob.sent)
        except Exception as e:
            self.lost(_reason(e))

    def close(self, reason):
        c = self.client
        self.client = None
        if self.outbox is not None:
            self.outbox.save()
        if c is None:
            return
        try:
            c.publish(self.topics.status, self._status("offline", reason), retain=True, qos=1)
            c.disconnect()
        except Exception as e:
            eventlog.warn("mqtt", "unclean close: %s" % _reason(e))
            _close(c)

    def run(self, max_readings=0):
        interval = self.cfg["interval_ms"]
        stable_ms = self.cfg["stable_ms"]
        now = time.ticks_ms()
        next_reading = now
        next_connect = now
        while True:
            hal.watchdog_feed()
            now = time.ticks_ms()
            if self.client is None and time.ticks_diff(now, next_connect) >= 0:
                try:
                    self.connect()
                except Exception as e:
                    delay = self.backoff.next_delay()
                    eventlog.error("mqtt", "connect failed: %s; retry in %d ms" % (_reason(e), delay))
                    next_connect = time.ticks_add(time.ticks_ms(), delay)
            now = time.ticks_ms()
            if time.ticks_diff(now, next_reading) >= 0:
                self.sample()
                next_reading = time.ticks_add(next_reading, interval)
                if time.ticks_diff(now, next_reading) > interval:
                    next_reading = time.ticks_add(now, interval)  # fell behind (a long connect): skip ahead
                if max_readings and self.acked >= max_readings:
                    return
                if self.cfg["sleep_ms"] and self.acked and self.selftest is None and (
                        self.outbox is None or not self.outbox.waiting):
                    # Duty cycle: delivered, nothing waiting: sleep until the next reading.
                    eventlog.info("app", "deep sleep for %d ms" % self.cfg["sleep_ms"])
                    self.close("sleep")
                    hal.deep_sleep(self.cfg["sleep_ms"])
            if self.client is not None:
                if self.backoff.failures and time.ticks_diff(now, self.connected_at) >= stable_ms:
                    self.backoff.reset()
                self.drain(self.cfg["drain_ms"])
            if self.client is not None:
                try:
                    self.client.check_msg()
                    if self.command is not None:
                        self.handle_command()
                except Exception as e:
                    self.lost(_reason(e))
                    next_connect = time.ticks_add(time.ticks_ms(), self.backoff.next_delay())
            if self.selftest is not None and time.ticks_diff(time.ticks_ms(), self.selftest_until) >= 0:
                self.selftest_failed("self-test: no reading acknowledged within %d s"
                                     % (self.cfg["selftest_ms"] // 1000))
            if self.client is not None and self.outbox is not None and self.outbox.waiting:
                continue  # a backlog is draining: no idle wait between its time slices
            wake = next_reading if self.client is not None else _earliest(next_reading, next_connect)
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
                if self.command is not None:
                    self.handle_command()
            except Exception as e:
                self.lost(_reason(e))
                next_connect = time.ticks_add(time.ticks_ms(), self.backoff.next_delay())


def _earliest(a, b):
    return a if time.ticks_diff(a, b) <= 0 else b


def _reason(e):
    """A one-line reason for the device log: the error's class and message (mbedTLS
    messages carry newlines; a log record is one line)."""
    return "%s: %s" % (type(e).__name__, " ".join(str(e).split()))


def _close(c):
    if c is None:
        return
    try:
        c.sock.close()
    except Exception:
        pass


# Modules needed only once, at boot. They are dropped afterwards so their
# bytecode does not occupy the heap for the device's whole life.
_BOOT_ONLY = ("firmware.config", "firmware.identity", "der")


def unload(names):
    """Forget modules so the GC can reclaim their bytecode (sys.modules and the parent package)."""
    for name in names:
        sys.modules.pop(name, None)
        pkg, _, leaf = name.rpartition(".")
        if pkg in sys.modules:
            try:
                delattr(sys.modules[pkg], leaf)
            except (AttributeError, TypeError):
                pass
    gc.collect()


def log_quota(default=262144):
    """The log store's flash quota from /config.json ("log_quota", bytes), or the default when the
    config is missing or bad (boot_checks reports that)."""
    try:
        import json as j
        with open("/config.json") as f:
            q = j.load(f).get("log_quota", default)
        return q if isinstance(q, int) and q >= 65536 else default
    except Exception:
        return default


def boot_checks():
    """Config, network, clock and identity, retried until they pass.

    Returns (config, TLS context). A bad config or identity is logged and
    re-checked every minute: the device idles instead of rebooting in a loop.
    """
    from firmware import config, identity
    while True:
        try:
            cfg = config.load()
            hal.connect_network(cfg, eventlog)
            hal.sync_clock(cfg, eventlog)
            now = int(hal.unix_time())
            ident = identity.load(cfg["thing"], now)
            break
        except (config.ConfigError, identity.IdentityError) as e:
            eventlog.error("boot", "%s" % e)
            time.sleep_ms(_IDLE_RETRY_MS)
    days = ident.days_left(now)
    if days < identity.EXPIRY_WARNING_DAYS:
        eventlog.warn("identity", "certificate expires in %d days: rotate it (warden device rotate)" % days)
        cfg["cert_days"] = days  # also reported in the status message
    eventlog.info("identity", "%s, certificate valid for %d more days" % (ident.thing, days))
    return cfg, ident.ssl_context()


def main():
    # The encrypted device log (and outbox) in /log (README: 'The encrypted device log'), opened once per boot,
    # before the config is checked so that even a config error is logged.
    eventlog.open_store(quota=log_quota())
    eventlog.info("boot", "warden %s on %s, reset cause %s" % (
        VERSION, hal.PLATFORM, hal.RESET_NAMES.get(hal.reset_cause(), "?")))
    cfg, ctx = boot_checks()
    unload(_BOOT_ONLY)
    dev = Device(cfg, ctx)
    if cfg["watchdog_ms"]:
        hal.watchdog_start(cfg["watchdog_ms"])  # from here on the loop feeds it; a hang resets
    from firmware import ota_state
    dev.selftest = ota_state.pending()
    last = ota_state.last()
    unload(("firmware.ota_state",))
    if dev.selftest is not None:
        dev.selftest_until = time.ticks_add(time.ticks_ms(), cfg["selftest_ms"])
        eventlog.info("ota", "self-test of %s %s: a reading must be acknowledged within %d s" % (
            dev.selftest["kind"], dev.selftest["version"], cfg["selftest_ms"] // 1000))
    elif last is not None:
        dev.report = dict(last, step=last["outcome"])  # re-published (retained) at each boot
    try:
        # max_readings (0 = forever) lets tests and benchmarks run a bounded session.
        dev.run(cfg.get("max_readings", 0))
        dev.close("done")
    except KeyboardInterrupt:
        eventlog.info("app", "stopped")
        dev.close("shutdown")
