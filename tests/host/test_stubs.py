"""The device code type-checks against micropython-esp32-stubs 1.29 (pyright): our proof, without
a board, that the board code calls APIs that exist on the board with arguments they accept.

- The board's hal (firmware/hal/esp32.py, esp32boot.py, common.py, __init__.py) must be clean:
  no error and no warning.
- The rest of the device code (firmware/, lib/, boot.py, main.py) must have no error. Rules
  about None-narrowing, possibly-unbound names and ticks arithmetic are warnings
  (pyrightconfig.json): they are about our own code's typing, not about board APIs. The few
  errors below are known stub gaps or dynamic attributes, each matched on its source line.
- The check catches a wrong API name, a wrong keyword, a missing argument and a CPython-only
  function (the typeshed is MicroPython's, not CPython's).
"""
import re
import textwrap
from pathlib import Path

import pytest

from warden.board import stubcheck

ROOT = stubcheck.ROOT
HAL = ["firmware/hal/esp32.py", "firmware/hal/esp32boot.py", "firmware/hal/common.py", "firmware/hal/__init__.py"]

# Errors that are not board-API misuse: (rule, regex on the message, regex on the source line or
# None, why). Stub gaps first (the stub is narrower than the port's C code), then our own
# typing that pyright cannot follow.
KNOWN = [
    ("reportArgumentType", r'parameter "id" of type "str" in function "__init__"', r"Partition\((esp32\.)?Partition\.(RUNNING|BOOT)\)",
     "stub gap: esp32.Partition(Partition.RUNNING / BOOT) is documented; the stub types id as str"),
    ("reportArgumentType", r'"memoryview\[int\]".*parameter "buf".*"(writeblocks|readblocks)"', None,
     "stub gap: Partition.writeblocks/readblocks take any buffer (buffer protocol); the stub says bytes | bytearray"),
    ("reportCallIssue", r"Expected 1 positional argument", r"\.write\(\w+, \w+\)",
     "stub gap: MicroPython streams take write(buf, max_len); the stub lists only write(buf)"),
    ("reportGeneralTypeIssues", r"Index 3 is out of range for type Tuple\[str, int, int\]", r"ilistdir|\be\[3\]",
     "stub gap: os.ilistdir() yields (name, type, inode, size) on littlefs; the stub says a 3-tuple"),
    ("reportAttributeAccessIssue", r'for class "Store\*?"', None,
     "lib/logstore.Store is set up by logread.open_store() (boot-only code, unloaded): attributes pyright cannot see"),
    ("reportAttributeAccessIssue", r'for class "MQTTClient\*?"', None,
     "lib/mqtt.MQTTClient is set up by lib/mqttconn.init() (loaded per call, not resident): attributes pyright cannot see"),
    ("reportGeneralTypeIssues", r'"None" is not iterable', None,
     "unpacking a value an earlier test proved not None: None-narrowing, like the rules kept as warnings"),
]


def _line(d):
    try:
        return (ROOT / d.file).read_text().splitlines()[d.line - 1]
    except (OSError, IndexError):
        return ""


def _known(d):
    return any(d.rule == rule and re.search(msg, d.message) and (line is None or re.search(line, _line(d)))
               for rule, msg, line, _ in KNOWN)


@pytest.fixture(scope="module")
def tree_diagnostics():
    return stubcheck.run_pyright()


def test_board_hal_is_clean(tree_diagnostics):
    found = [d for d in tree_diagnostics if d.file in HAL]
    assert not found, "the board hal does not type-check against the ESP32 stubs:\n" + "\n".join(map(str, found))
    # and it was checked at all: the include covers it
    assert (ROOT / "pyrightconfig.json").read_text().count('"firmware"') == 1


def test_device_code_has_no_errors_against_the_stubs(tree_diagnostics):
    errors = [d for d in tree_diagnostics if d.severity == "error" and not _known(d)]
    assert not errors, "device code calls something the ESP32 port lacks:\n" + "\n".join(
        f"{d}\n    {_line(d).strip()}" for d in errors)


BAD = """\
import esp32
import machine
import time
import network

esp32.Partition(esp32.Partition.RUNNING).get_next_updat()
machine.WDT(timeout_ms=1000)
esp32.NVS("warden").get_blob("log_key")
time.monotonic()
network.WLAN(network.STA_IF).conect("ssid", "pw")
machine.ADC(machine.Pin(34)).read_mv()
"""
EXPECTED = {  # line -> (rule, words in the message)
    6: ("reportAttributeAccessIssue", "get_next_updat"),
    7: ("reportCallIssue", "timeout_ms"),
    8: ("reportCallIssue", "positional"),
    9: ("reportAttributeAccessIssue", "monotonic"),
    10: ("reportAttributeAccessIssue", "conect"),
    11: ("reportAttributeAccessIssue", "read_mv"),
}


def test_the_check_catches_wrong_names_arguments_and_cpython_only_calls(tmp_path):
    bad = tmp_path / "bad_board_code.py"
    bad.write_text(BAD)
    diags = stubcheck.run_pyright([bad])
    by_line = {d.line: d for d in diags if d.severity == "error"}
    for line, (rule, word) in EXPECTED.items():
        d = by_line.get(line)
        assert d is not None, f"line {line} ({BAD.splitlines()[line - 1]}) passed the check:\n" + "\n".join(map(str, diags))
        assert d.rule == rule and word in d.message, d


def test_the_same_calls_spelled_right_pass(tmp_path):
    good = tmp_path / "good_board_code.py"
    good.write_text(textwrap.dedent("""\
        import esp32
        import machine
        import time
        import network
        import ntptime

        nxt = esp32.Partition.find(esp32.Partition.TYPE_APP, label="ota_1")[0]
        esp32.Partition.mark_app_valid_cancel_rollback()
        machine.WDT(timeout=1000).feed()
        buf = bytearray(32)
        esp32.NVS("warden").get_blob("log_key", buf)
        time.ticks_diff(time.ticks_ms(), 0)
        network.WLAN(network.STA_IF).connect("ssid", "pw")
        machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB).read_uv()
        ntptime.settime()
        """))
    diags = stubcheck.run_pyright([good])
    assert not diags, "\n".join(map(str, diags))


def test_stub_tree_is_exactly_the_pinned_distributions():
    out = stubcheck.prepare_stubs()
    stamp = (out / ".stamp").read_text()
    reqs = (ROOT / "requirements.txt").read_text()
    for name in stubcheck.STUB_DISTS:
        pin = re.search(rf"^{re.escape(name)}==(\S+)", reqs, re.M)
        assert pin, f"{name} is not pinned in requirements.txt"
        assert f"{name}=={pin.group(1)}" in stamp, (stamp, pin.group(0))
    assert (out / "esp32.pyi").exists() and (out / "stdlib" / "builtins.pyi").exists()
    assert not list(Path(out).rglob("*.py")), "only stubs in the stub tree"
