# Device tests for the board's hal (firmware/hal/esp32.py, esp32boot.py), compiled, under the
# real micropython. The unix port has no Wi-Fi, ADC, WDT, I2C, NVS or temperature sensor:
# tests/device/boardfakes/ stands in for exactly those (same names and arguments as the
# ESP32 port); everything else (time, os, the hal's logic) is real.
import os
import sys

import devtest

_here = __file__.rpartition("/")[0] or "."
sys.path.insert(0, _here + "/boardfakes")

import esp32  # noqa: E402  (the fakes, found first)
import machine  # noqa: E402
import network  # noqa: E402
import ntptime  # noqa: E402

from firmware.hal import esp32 as hal  # noqa: E402


class Log:
    def __init__(self):
        self.lines = []

    def info(self, kind, msg):
        self.lines.append("INFO %s: %s" % (kind, msg))

    def warn(self, kind, msg):
        self.lines.append("WARN %s: %s" % (kind, msg))

    def error(self, kind, msg):
        self.lines.append("ERROR %s: %s" % (kind, msg))


SECRET = "hunter2-wifi-secret"


def cfg(**kw):
    c = {"thing": "board-1", "wifi": {"ssid": "lab-net", "password": SECRET, "backoff_ms": 1,
                                      "backoff_max_ms": 4, "timeout_ms": 300},
         "ntp_backoff_ms": 1, "sensors": {}}
    c.update(kw)
    return c


def test_same_names_as_the_twin_hal():
    # The session's names (firmware/hal/unix.py) on the hal itself, the boot phase's
    # (firmware/hal/unixboot.py) on hal.boot(); simulated() makes the twin's sensors.
    from firmware.hal import unix, unixboot
    for twin, board in ((unix, hal), (unixboot, hal.boot())):
        for name in dir(twin):
            if not name.startswith("_") and name not in ("math", "os", "sys", "const", "simulated"):
                assert hasattr(board, name), "firmware/hal/esp32.py lacks %s (%s has it)" % (name, twin.__name__)
    assert hal.PLATFORM == "esp32" and hal.unique_id() == machine.unique_id()


def test_wifi_retries_each_failure_with_its_reason_and_never_logs_the_password():
    network.script[:] = [network.STAT_WRONG_PASSWORD, network.STAT_NO_AP_FOUND, network.STAT_GOT_IP]
    network.calls[:] = []
    log = Log()
    assert hal.connect_network(cfg(), log) is True
    connects = [c for c in network.calls if c[0] == "connect"]
    assert connects == [("connect", "lab-net", SECRET)] * 3, network.calls
    assert network.calls.count(("disconnect",)) == 2
    errors = [l for l in log.lines if l.startswith("ERROR wifi")]
    assert len(errors) == 2, log.lines
    assert "wrong password" in errors[0] and "attempt 1" in errors[0]
    assert "no access point" in errors[1] and "attempt 2" in errors[1]
    assert "connected to 'lab-net'" in log.lines[-1] and "192.168.4.20" in log.lines[-1]
    assert not [l for l in log.lines if SECRET in l]
    assert network.hostname() == "board-1"
    # boot-only code dropped after the call: from sys.modules and from its package (a binding left
    # there would keep its code in the heap for the device's life)
    assert "firmware.hal.esp32boot" not in sys.modules
    assert not hasattr(sys.modules["firmware.hal"], "esp32boot")


def test_wifi_attempt_that_hangs_times_out_and_is_retried():
    network.script[:] = [network.STAT_CONNECTING, network.STAT_GOT_IP]
    log = Log()
    assert hal.connect_network(cfg(), log)
    assert "timed out after 300 ms" in [l for l in log.lines if l.startswith("ERROR")][0]


def test_clock_failure_is_logged_and_retried_before_tls():
    ntptime.errors[:] = [OSError(110), OSError(-202)]
    ntptime.calls[:] = []
    log = Log()
    assert hal.sync_clock(cfg(ntp_host="ntp.lan"), log) is True
    assert ntptime.calls == ["ntp.lan"] * 3
    errs = [l for l in log.lines if l.startswith("ERROR clock")]
    assert len(errs) == 2 and "ntp.lan" in errs[0] and "OSError" in errs[0] and "110" in errs[0] and "TLS" in errs[0]
    assert log.lines[-1] == "INFO clock: set from ntp.lan"


def test_clock_kept_through_deep_sleep_needs_no_ntp():
    ntptime.calls[:] = []
    machine.cause = machine.DEEPSLEEP_RESET
    try:
        assert hal.sync_clock(cfg(), Log()) and ntptime.calls == []
        assert hal.reset_cause() == 4 and hal.RESET_NAMES[hal.reset_cause()] == "deep-sleep"
    finally:
        machine.cause = machine.PWRON_RESET


def test_chip_temperature_by_chip():
    esp32.raw_f = 122  # ESP32: Fahrenheit
    s = hal.sensor_sources({"sensors": {"t": {"kind": "chip_temperature"}}})
    assert abs(s["t"](0) - 50.0) < 1e-6
    esp32.mcu_temperature = lambda: 41.5  # S2/S3/C3: Celsius
    try:
        s = hal.sensor_sources({"sensors": {"t": {"kind": "chip_temperature"}}})
        assert s["t"](0) == 41.5
    finally:
        del esp32.mcu_temperature


def test_adc_channels_from_the_config():
    machine.uv[34] = 1650000
    machine.calls[:] = []
    s = hal.sensor_sources({"sensors": {
        "v": {"kind": "adc", "pin": 34},
        "pct": {"kind": "adc", "pin": 34, "atten_db": 6, "scale": 50.0, "offset": -1.0},
    }})
    assert abs(s["v"](0) - 1.65) < 1e-9 and abs(s["pct"](0) - 81.5) < 1e-9
    assert ("ADC", 34, machine.ADC.ATTN_11DB) in machine.calls and ("ADC", 34, machine.ADC.ATTN_6DB) in machine.calls


def test_a_bad_sensor_spec_breaks_only_that_sensor():
    s = hal.sensor_sources({"sensors": {
        "bad_atten": {"kind": "adc", "pin": 1, "atten_db": 7},
        "no_pin": {"kind": "adc"},
        "what": {"kind": "sine"},
        "t": {"kind": "chip_temperature"},
    }})
    assert "atten_db" in str(devtest.raises(ValueError, s["bad_atten"], 0))
    devtest.raises(KeyError, s["no_pin"], 0)
    assert "unknown sensor kind 'sine'" in str(devtest.raises(ValueError, s["what"], 0))
    assert s["t"](0) is not None


def test_i2c_driver_named_by_the_config_shares_one_bus():
    machine.calls[:] = []
    spec = {"kind": "i2c", "driver": "i2cdemo", "scl": 22, "sda": 21, "addr": 0x44}
    s = hal.sensor_sources({"sensors": {"a": dict(spec, reg=5), "b": dict(spec, reg=7, scale=0.5),
                                        "gone": dict(spec, driver="no_such_driver")}})
    assert s["a"](0) == 5 and s["b"](0) == 3.5
    assert [c for c in machine.calls if c[0] == "I2C"] == [("I2C", 0, 22, 21, 100000)]
    devtest.raises(ImportError, s["gone"], 0)


def test_watchdog_started_once_fed_and_skipped_in_maintenance():
    machine.calls[:] = []
    hal.MAINTENANCE_FILE = devtest.tmp + "/maintenance"
    devtest.write(hal.MAINTENANCE_FILE, b"")
    assert hal.watchdog_start(500) is False and hal._wdt is None
    os.remove(hal.MAINTENANCE_FILE)
    assert hal.watchdog_start(500) is True
    assert hal.watchdog_start(9000) is True  # already running: cannot be reconfigured
    hal.watchdog_feed()
    assert machine.calls == [("WDT", 1000), ("feed",)], machine.calls


def test_deep_sleep_powers_down_for_the_time_given():
    machine.calls[:] = []
    devtest.raises(machine.Sleeping, hal.deep_sleep, 30000)
    assert machine.calls == [("deepsleep", 30000)]


def test_log_key_deployed_as_a_file_moves_into_nvs_once():
    esp32._store.clear()
    hal.LOG_KEY_FILE = devtest.tmp + "/log_key"
    assert hal.log_key() is None
    devtest.write(hal.LOG_KEY_FILE, b"short")
    assert hal.log_key() is None  # not a 32-byte key: ignored, left for the user to see
    key = bytes(range(32))
    devtest.write(hal.LOG_KEY_FILE, key)
    assert hal.log_key() == key
    devtest.raises(OSError, os.stat, hal.LOG_KEY_FILE)  # removed once NVS holds it
    assert esp32._store[("warden", "log_key")] == key
    assert hal.log_key() == key  # from NVS from now on
