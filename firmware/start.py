# The boot phase (firmware/app.py runs it once, then unloads it): the encrypted log
# store, the config, network, clock and identity, the TLS context, and the state of
# an OTA update.
#
# What happens on each failure:
# - no log key, or a log store that cannot open: logged, events go to the console only;
# - bad config or identity: logged, then the device idles and re-checks every minute
#   (no reboot loop: re-provisioning fixes it without a power cycle);
# - no network or clock yet: the hal retries with backoff until they come.
import time

from firmware import eventlog, hal
from firmware.core import VERSION

_IDLE_RETRY_MS = 60000

# The boot phase's modules, this one among them: firmware/app.py unloads them once boot()
# returned (firmware/core.py, "Code lifetimes").
_BOOT_ONLY = ("firmware.start", "firmware.logboot", "firmware.config", "firmware.identity", "der",
              "firmware.ota_state", "firmware.slots", "firmware.hal.unixboot", "firmware.hal.esp32boot",
              "firmware.topics", "firmware.topiccheck", "logopen", "logread", "cryptokit")


def boot(log=True):
    """(config, TLS context, sensor sources, topics (thing, telemetry, status, ota, command
    prefix), update awaiting its self-test or None, last OTA outcome or None). log=False (update
    mode, firmware/otamode.py): the log store is not opened, events go to the console only."""
    # The TLS context embeds mbedTLS's structures (~3 KB in one block): made first, while
    # the heap is still in one piece.
    import tls
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    # The device log (and outbox) in /log (docs/log.md), opened once per
    # boot, before the config is checked so that even a config error is logged.
    hb = hal.boot()
    if log:
        from firmware import logboot
        logboot.open_store(hb.log_key(), quota=_log_quota())
    eventlog.info("boot", "warden %s on %s, reset cause %s" % (
        VERSION, hal.PLATFORM, hb.RESET_NAMES.get(hb.reset_cause(), "?")))
    cfg = _checks(ctx, hb)
    sources = hb.sensor_sources(cfg)
    from firmware.topics import Topics
    t = Topics(cfg["app"], cfg["thing"])
    topics = (t.thing, t.telemetry, t.status, t.ota, t.commands)  # strings: the module is dropped
    # What only the boot needed: not kept for the device's life (the Wi-Fi password least of all).
    for k in ("sensors", "wifi", "log_quota"):
        cfg.pop(k, None)
    from firmware import ota_state
    pending = ota_state.pending()
    # What runs, for the status message (docs/device.md, "The status message"): an update on
    # trial, else the last confirmed update of that kind, else the factory build (core.VERSION,
    # the MicroPython release). Made once per boot, so the resident loop formats no version per
    # message. Every new name or string in device code is a qstr for the device's life (docs/heap.md,
    # "Interned names"): so no helper function, "versions" key or format string here. cfg["version"] is what the status message's "version":"%s" gets: the app's
    # version, then the firmware's as a field of its own, both escaped by json.dumps.
    import gc
    import json
    import sys
    try:
        v = ota_state.counters()
    except ValueError:
        v = {}  # a corrupt OTA state: the factory's is the best guess (ota status reports it)
    for k in ("app", "firmware"):
        v[k] = (pending["version"] if pending and pending["kind"] == k else (v.get(k) or (0, None))[1]) or (
            VERSION if k == "app" else ".".join(map(str, sys.implementation.version[:3])))
    cfg["version"] = json.dumps(v["app"])[1:] + ", " + json.dumps({"firmware": v["firmware"]})[1:-2]
    del v
    gc.collect()
    return cfg, ctx, sources, topics, pending, ota_state.last()


def _log_quota(default=262144):
    """The log store's flash quota from /config.json ("log_quota", bytes), or the default when the
    config is missing or bad (the config check reports that)."""
    try:
        import json
        with open("/config.json") as f:
            q = json.load(f).get("log_quota", default)
        return q if isinstance(q, int) and q >= 65536 else default
    except Exception:
        return default


def _checks(ctx, hb):
    """Config, network, clock and identity (loaded into `ctx`), retried until they pass."""
    from firmware import config, identity
    while True:
        try:
            cfg = config.load()
            hb.connect_network(cfg, eventlog)
            hb.sync_clock(cfg, eventlog)
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
    ident.load_into(ctx)
    return cfg
