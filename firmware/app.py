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
import sys
import time

from firmware import eventlog, hal
from firmware.seqno import SequenceNumbers
from firmware.sensors import Sensors
from firmware.topics import Topics

VERSION = "0.1.0"
_IDLE_RETRY_MS = 60000
_BACKOFF_MAX_MS = 30000


class Device:
    def __init__(self, cfg, ssl_context):
        self.cfg = cfg
        self.ssl_context = ssl_context
        self.topics = Topics(cfg["app"], cfg["thing"])
        self.sensors = Sensors(hal.sensor_sources(cfg))
        self.seq = SequenceNumbers()
        self.client = None
        self.acked = 0

    def _status(self, state, reason=None):
        s = '{"state":"%s","version":"%s"' % (state, VERSION)
        if reason:
            s += ',"reason":"%s"' % reason
        return s + "}"

    def connect(self):
        from mqtt import MQTTClient  # imported after the boot checks are unloaded (heap peak)
        b = self.cfg["broker"]
        host = b["host"]
        c = MQTTClient(
            self.topics.thing, host, b.get("port", 8883),
            keepalive=self.cfg["keepalive"], ssl=self.ssl_context,
            server_hostname=b.get("hostname", host), timeout=self.cfg["timeout"],
        )
        c.set_last_will(self.topics.status, self._status("offline", "lost"), retain=True, qos=1)
        c.set_callback(self.on_command)
        t0 = time.ticks_ms()
        c.connect()
        self.client = c
        c.subscribe(self.topics.command_filter, qos=1)
        c.publish(self.topics.status, self._status("online"), retain=True, qos=1)
        ms = time.ticks_diff(time.ticks_ms(), t0)
        gc.collect()
        eventlog.info("mqtt", "connected to %s:%d in %d ms, heap in use %d bytes" % (
            host, b.get("port", 8883), ms, gc.mem_alloc()))

    def on_command(self, topic, msg):
        name = self.topics.command_name(topic.decode() if isinstance(topic, bytes) else topic)
        eventlog.info("cmd", "command %r (%d bytes) ignored: no handler" % (name, len(msg)))

    def publish_reading(self):
        n = self.seq.next()
        payload = self.sensors.reading(n, int(hal.unix_time()))
        self.client.publish(self.topics.guard_publish(self.topics.telemetry), payload, qos=self.cfg["qos"])
        self.acked += 1
        if self.acked == 1:
            eventlog.info("telemetry", "first reading %d acknowledged" % n)
        return n

    def close(self, reason):
        c = self.client
        self.client = None
        if c is None:
            return
        try:
            c.publish(self.topics.status, self._status("offline", reason), retain=True, qos=1)
            c.disconnect()
        except Exception as e:
            eventlog.warn("mqtt", "unclean close: %r" % e)

    def run(self, max_readings=0):
        interval = self.cfg["interval_ms"]
        backoff = 1000
        next_at = time.ticks_ms()
        while True:
            if self.client is None:
                try:
                    self.connect()
                    backoff = 1000
                except Exception as e:
                    eventlog.error("mqtt", "connect failed: %r; retry in %d ms" % (e, backoff))
                    self.client = None
                    time.sleep_ms(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_MS)
                    continue
            try:
                if time.ticks_diff(time.ticks_ms(), next_at) >= 0:
                    self.publish_reading()
                    next_at = time.ticks_add(next_at, interval)
                    if max_readings and self.acked >= max_readings:
                        return
                self.client.check_msg()
                wait = time.ticks_diff(next_at, time.ticks_ms())
                if wait > 0:
                    time.sleep_ms(min(wait, 50))
            except Exception as e:
                eventlog.error("mqtt", "session lost: %r" % e)
                try:
                    self.client.sock.close()
                except Exception:
                    pass
                self.client = None


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
    eventlog.info("identity", "%s, certificate valid for %d more days" % (ident.thing, days))
    return cfg, ident.ssl_context()


def main():
    eventlog.info("boot", "warden %s on %s, reset cause %s" % (
        VERSION, hal.PLATFORM, hal.RESET_NAMES.get(hal.reset_cause(), "?")))
    cfg, ctx = boot_checks()
    unload(_BOOT_ONLY)
    dev = Device(cfg, ctx)
    try:
        # max_readings (0 = forever) lets tests and benchmarks run a bounded session.
        dev.run(cfg.get("max_readings", 0))
        dev.close("done")
    except KeyboardInterrupt:
        eventlog.info("app", "stopped")
        dev.close("shutdown")
