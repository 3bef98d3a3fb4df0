# The device configuration: /config.json, checked once at boot.
#
# A missing or malformed file, or a field of the wrong type, raises ConfigError
# naming the field; nothing runs on a half-understood configuration.
import json

PATH = "/config.json"

DEFAULTS = {
    "app": "warden",
    "keepalive": 60,          # seconds; AWS IoT accepts 30..1200
    "interval_ms": 5000,      # one reading every interval
    "qos": 1,                 # telemetry QoS (0 or 1)
    "timeout": 10,            # seconds for TCP connect, TLS handshake and each read
    "backoff_ms": 1000,       # first reconnect delay ceiling (full jitter below it)
    "backoff_max_ms": 60000,  # cap of the reconnect delay ceiling
    "stable_ms": 60000,       # a connection up this long resets the backoff
    "drain_ms": 20,           # outbox: at most this long per loop turn sending the backlog
    "selftest_ms": 120000,    # after an update: a reading must be acknowledged within this
    "log_quota": 262144,      # bytes of flash for the encrypted log and outbox (/log)
    "watchdog_ms": 60000,     # hardware watchdog, fed by the main loop (0: off)
    "sleep_ms": 0,            # duty cycle: after a delivered reading, deep sleep this long (0: stay up)
    "ota_idle_ms": 30000,     # an OTA conversation silent this long is dropped (a sleeper may sleep again)
    "metrics_s": 300,         # a metrics report every this many seconds (0: none; firmware/metrics.py)
    "sensors": {"temperature": {"kind": "sine", "base": 21.0, "amplitude": 2.0, "period": 60}},
}


class ConfigError(Exception):
    pass


def _check(cfg, key, types, what):
    v = cfg.get(key)
    if not isinstance(v, types):
        raise ConfigError("config: %s must be %s, got %r" % (key, what, v))
    return v


def validate(cfg):
    if not isinstance(cfg, dict):
        raise ConfigError("config: top level must be a JSON object")
    for k, v in DEFAULTS.items():
        if k not in cfg:
            cfg[k] = v
    _check(cfg, "thing", str, "the thing name (a string)")
    _check(cfg, "app", str, "a string")
    broker = _check(cfg, "broker", dict, 'an object {"host": ..., "port": ...}')
    if not isinstance(broker.get("host"), str) or not broker["host"]:
        raise ConfigError("config: broker.host must be a host name")
    if not isinstance(broker.get("port", 8883), int) or not 0 < broker.get("port", 8883) < 65536:
        raise ConfigError("config: broker.port must be a TCP port")
    keepalive = _check(cfg, "keepalive", int, "an integer (seconds)")
    # AWS IoT accepts 30..1200 s; shorter ones are for local brokers and tests.
    if not 2 <= keepalive <= 1200:
        raise ConfigError("config: keepalive must be 2..1200 s (AWS IoT: 30..1200), got %d" % keepalive)
    for k in ("watchdog_ms", "sleep_ms"):
        if _check(cfg, k, int, "an integer (ms)") < 0:
            raise ConfigError("config: %s must be 0 (off) or positive" % k)
    if 0 < cfg["watchdog_ms"] < 2 * 1000 * cfg["timeout"] + 5000:
        raise ConfigError("config: watchdog_ms must exceed a connect (2 x timeout + 5 s) or be 0")
    for k in ("backoff_ms", "backoff_max_ms", "stable_ms", "drain_ms", "selftest_ms", "ota_idle_ms"):
        if _check(cfg, k, int, "an integer (ms)") < 1:
            raise ConfigError("config: %s must be positive" % k)
    if _check(cfg, "interval_ms", int, "an integer (ms)") < 10:
        raise ConfigError("config: interval_ms must be at least 10")
    # (a remote setting is 0 or 10..86400, firmware/devconfig.py; a shorter one stays possible in
    # the provisioned config for tests, as for the keepalive)
    m = _check(cfg, "metrics_s", int, "an integer (seconds)")
    if not 0 <= m <= 86400:
        raise ConfigError("config: metrics_s must be 0 (off) or 1..86400 s, got %d" % m)
    if _check(cfg, "qos", int, "0 or 1") not in (0, 1):
        raise ConfigError("config: qos must be 0 or 1")
    _check(cfg, "timeout", (int, float), "a number (seconds)")
    _check(cfg, "sensors", dict, "an object of sensor specs")
    if _check(cfg, "log_quota", int, "an integer (bytes)") < 65536:
        raise ConfigError("config: log_quota must be at least 65536 bytes")
    return cfg


def load(path=PATH):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        raise ConfigError("config: %s is missing: provision the device (warden device add / deploy)" % path)
    except ValueError as e:
        raise ConfigError("config: %s is not valid JSON (%s)" % (path, e))
    return validate(cfg)
