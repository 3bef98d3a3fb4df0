"""The monitor's rules file, `<state>/rules.json`: read, validated, written with defaults on first use.

This module only models the rules: it must not evaluate them (engine.py does) nor act on an alert
(actions.py). The format is documented in docs/monitor.md, 'The rules file':

    {"version": 1,
     "retention": {"days": 7, "points_per_device": 2000},
     "publish": false,
     "rules": [{"name": "heap-low", "type": "below", "metric": "hl", "threshold": 8192,
                "datapoints_to_alarm": 2, "datapoints_to_clear": 2, "actions": []}, ...]}

Rule types: `above` / `below` (a metric against a threshold), `sum` (a metric summed over
`window` seconds, above the threshold), `count` (a broker signal counted over `window` seconds,
above the threshold), `rising` (a metric that rose from each report to the next, `reports` times in a row, with a
backlog waiting) and
`fleet` (a metric above the `percentile` of the other devices' values over `window` seconds, once
at least `min_devices` others reported). `datapoints_to_alarm` / `datapoints_to_clear` are AWS
IoT Device Defender's: consecutive breaching data points to raise an alert, consecutive
non-breaching ones to clear it.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field

from ..errors import WardenError
from ..state import State, write_file

RULES_VERSION = 1
RULES_FILE = "rules.json"
TYPES = ("above", "below", "sum", "count", "rising", "fleet")
SIGNALS = ("auth_fail", "cert_fail", "refused_id", "connect", "disconnect")
ACTIONS = ("quarantine", "revoke", "pause-rollouts")
# What a metrics report yields (its fields: docs/device.md, "The metrics report"), plus what is
# worked out from it (engine.derive): from two reports of one boot msg_rate (messages sent a
# minute, from tx) and byte_rate (from txb); cf_total (connect failures since boot) and cf_new
# (since the previous report).
METRICS = ("hf", "hl", "boots", "tx", "txb", "rx", "rxb", "ca", "sl", "kept", "wait", "drop", "up",
           "rssi", "temp", "msg_rate", "byte_rate", "cf_total", "cf_new")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")

DEFAULT_RULES = {
    "version": RULES_VERSION,
    "retention": {"days": 7, "points_per_device": 2000},
    "publish": False,
    "rules": [
        # a twin sends a reading every few seconds; a storm is an order of magnitude above that
        {"name": "message-rate", "type": "above", "metric": "msg_rate", "threshold": 120,
         "datapoints_to_alarm": 2, "datapoints_to_clear": 2, "actions": []},
        # a device never needs a topic outside its own: one refusal is worth a look
        {"name": "authorization-failure", "type": "count", "signal": "auth_fail", "window": 300,
         "threshold": 0, "datapoints_to_alarm": 1, "datapoints_to_clear": 1, "actions": []},
        {"name": "certificate-failure", "type": "count", "signal": "cert_fail", "window": 300,
         "threshold": 3, "datapoints_to_alarm": 1, "datapoints_to_clear": 1, "actions": []},
        {"name": "reboot-loop", "type": "sum", "metric": "boots", "window": 3600, "threshold": 3,
         "datapoints_to_alarm": 1, "datapoints_to_clear": 2, "actions": []},
        # the session guard wants 8 KiB free after connect (docs/heap.md): below that, trouble comes
        {"name": "heap-low", "type": "below", "metric": "hl", "threshold": 8192,
         "datapoints_to_alarm": 2, "datapoints_to_clear": 2, "actions": []},
        {"name": "outbox-growing", "type": "rising", "metric": "kept", "reports": 5,
         "datapoints_to_alarm": 1, "datapoints_to_clear": 1, "actions": []},
        {"name": "message-rate-outlier", "type": "fleet", "metric": "msg_rate", "percentile": 99,
         "window": 3600, "min_devices": 10, "datapoints_to_alarm": 3, "datapoints_to_clear": 3,
         "actions": []},
    ],
}


class RulesError(WardenError):
    hint = ("fix rules.json in the state folder (its format and the defaults: docs/monitor.md, "
            "'The rules file'), or move it aside: `warden monitor` writes the defaults again")


@dataclass
class Rule:
    name: str
    type: str
    threshold: float = 0
    metric: str | None = None
    signal: str | None = None
    window: float = 300
    reports: int = 5
    percentile: float = 99
    min_devices: int = 10
    datapoints_to_alarm: int = 1
    datapoints_to_clear: int = 1
    actions: list = field(default_factory=list)

    def describe(self) -> str:
        what = self.signal or self.metric
        if self.type == "above":
            return f"{what} > {self.threshold:g}"
        if self.type == "below":
            return f"{what} < {self.threshold:g}"
        if self.type == "sum":
            return f"sum of {what} over {self.window:g} s > {self.threshold:g}"
        if self.type == "count":
            return f"{what} signals over {self.window:g} s > {self.threshold:g}"
        if self.type == "rising":
            return f"{what} rising for {self.reports} reports"
        return f"{what} above the fleet's p{self.percentile:g}"


@dataclass
class Rules:
    rules: list
    retention_days: float = 7
    points_per_device: int = 2000
    publish: bool = False
    version: int = RULES_VERSION

    def get(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


def _number(where, value, *, integer=False, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise RulesError(f"{where}: {value!r} is not {'an integer' if integer else 'a number'}")
    if minimum is not None and value < minimum:
        raise RulesError(f"{where}: {value!r} is below {minimum}")
    return value


def parse_rules(data) -> Rules:
    """Validate rules data (a dict as in the file) and return Rules; RulesError says what is wrong."""
    if not isinstance(data, dict):
        raise RulesError("the rules file is a JSON object with \"version\" and \"rules\"")
    if data.get("version") != RULES_VERSION:
        raise RulesError(f"rules version {data.get('version')!r} is not supported (want {RULES_VERSION})")
    unknown = set(data) - {"version", "retention", "publish", "rules"}
    if unknown:
        raise RulesError(f"unknown key(s) in the rules file: {', '.join(sorted(unknown))}")
    retention = data.get("retention", {})
    if not isinstance(retention, dict) or set(retention) - {"days", "points_per_device"}:
        raise RulesError("\"retention\" is an object with \"days\" and \"points_per_device\"")
    days = _number("retention.days", retention.get("days", 7), minimum=0.001)
    points = _number("retention.points_per_device", retention.get("points_per_device", 2000), integer=True, minimum=10)
    publish = data.get("publish", False)
    if not isinstance(publish, bool):
        raise RulesError("\"publish\" is true or false")
    if not isinstance(data.get("rules"), list):
        raise RulesError("\"rules\" is a list of rule objects")
    rules, names = [], set()
    for i, spec in enumerate(data["rules"]):
        where = f"rule {i + 1}"
        if not isinstance(spec, dict):
            raise RulesError(f"{where} is not an object")
        name = spec.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RulesError(f"{where}: name {name!r} must be 1-48 characters of a-z, 0-9 and '-'",
                             hint="it becomes the last level of the alert topic alerts/<app>/<thing>/<rule>")
        where = f"rule {name!r}"
        if name in names:
            raise RulesError(f"{where} is defined twice")
        names.add(name)
        kind = spec.get("type")
        if kind not in TYPES:
            raise RulesError(f"{where}: type {kind!r} is not one of {', '.join(TYPES)}")
        allowed = {"name", "type", "threshold", "metric", "signal", "window", "reports", "percentile",
                   "min_devices", "datapoints_to_alarm", "datapoints_to_clear", "actions", "description"}
        unknown = set(spec) - allowed
        if unknown:
            raise RulesError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        rule = Rule(name, kind)
        if kind == "count":
            if spec.get("signal") not in SIGNALS:
                raise RulesError(f"{where}: \"signal\" must be one of {', '.join(SIGNALS)}")
            rule.signal = spec["signal"]
        else:
            if spec.get("metric") not in METRICS:
                raise RulesError(f"{where}: \"metric\" must be one of {', '.join(METRICS)}")
            rule.metric = spec["metric"]
        if kind in ("above", "below", "sum", "count"):
            if "threshold" not in spec:
                raise RulesError(f"{where}: a {kind} rule needs a \"threshold\"")
            rule.threshold = _number(f"{where}: threshold", spec["threshold"])
        if kind in ("sum", "count", "fleet"):
            rule.window = _number(f"{where}: window", spec.get("window", 300), minimum=1)
        if kind == "rising":
            rule.reports = _number(f"{where}: reports", spec.get("reports", 5), integer=True, minimum=2)
        if kind == "fleet":
            rule.percentile = _number(f"{where}: percentile", spec.get("percentile", 99), minimum=1)
            if rule.percentile >= 100:
                raise RulesError(f"{where}: percentile must be below 100")
            rule.min_devices = _number(f"{where}: min_devices", spec.get("min_devices", 10), integer=True, minimum=1)
        rule.datapoints_to_alarm = _number(f"{where}: datapoints_to_alarm", spec.get("datapoints_to_alarm", 1),
                                           integer=True, minimum=1)
        rule.datapoints_to_clear = _number(f"{where}: datapoints_to_clear", spec.get("datapoints_to_clear", 1),
                                           integer=True, minimum=1)
        if rule.datapoints_to_alarm > 10 or rule.datapoints_to_clear > 10:
            raise RulesError(f"{where}: datapoints_to_alarm and datapoints_to_clear are 1-10 (as in Device Defender)")
        actions = spec.get("actions", [])
        if not isinstance(actions, list) or any(a not in ACTIONS for a in actions):
            raise RulesError(f"{where}: \"actions\" is a list of {', '.join(ACTIONS)}")
        rule.actions = list(dict.fromkeys(actions))
        rules.append(rule)
    return Rules(rules, days, points, publish, RULES_VERSION)


def rules_path(state: State):
    return state.root / RULES_FILE


def default_rules_data() -> dict:
    return copy.deepcopy(DEFAULT_RULES)


def load_rules(state: State) -> Rules:
    """The state's rules; the defaults are written to `<state>/rules.json` if there is none."""
    path = rules_path(state)
    if not path.exists():
        write_file(path, json.dumps(DEFAULT_RULES, indent=2) + "\n")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise RulesError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:
        raise RulesError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return parse_rules(data)
    except RulesError as e:
        raise RulesError(f"{path}: {e}", hint=e.hint) from None
