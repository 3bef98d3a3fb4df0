"""The fleet policy as data: roles and their topic rules, read, validated and saved.

This module only models the policy: it must not render it for a broker or a cloud (mosquitto.py,
aws.py), evaluate a rendering (acleval.py, aws.py, proof.py) or talk to a broker (warden.broker).

The policy file (`state.policy_path`, JSON, documented in docs/security.md, 'Roles and the policy file') declares roles. Each role
has either `"principal": "thing"` (every device: its own thing name is its identity) or a list of
`"principals"` (certificate CNs `<role>.<name>`, such as `operator.default`), and `allow` rules:

    {"action": "publish" | "subscribe", "topic": "dt/{app}/{thing}/#"}

`publish` lets the principal send to topics matching the filter; `subscribe` lets it subscribe
to and receive from them. Placeholders: `{app}` (the project's app name) and, for the thing
role only, `{thing}` (the connecting device's own thing name). They render to `%u` in
mosquitto (warden.policy.mosquitto) and `${iot:Connection.Thing.ThingName}` in AWS IoT
(warden.policy.aws). Everything not allowed is denied. `"version"` is the format version (1);
`"revision"` counts saves.

Certificates carry their role: OU = the role name, and CN = the thing name for devices or
`<role>.<name>` for principals. A dot is never allowed in a thing name, so no device can be
named (and so authenticate) like a principal; the principal's role is its CN prefix, which
is what the broker sees as the username.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field

from ..errors import WardenError
from ..fleet.names import parse_principal
from ..state import State, write_file
from .topics import MAX_SLASHES

POLICY_VERSION = 1
ACTIONS = ("publish", "subscribe")
THING = "thing"

DEFAULT_POLICY = {
    "version": POLICY_VERSION,
    "revision": 1,
    "roles": {
        "device": {
            "description": "a device: publishes its telemetry, status and OTA progress, receives its "
                           "commands; its own topics only",
            "principal": THING,
            "allow": [
                {"action": "publish", "topic": "dt/{app}/{thing}/#"},
                {"action": "subscribe", "topic": "cmd/{app}/{thing}/#"},
            ],
        },
        "operator": {
            "description": "watches the fleet: reads every device's telemetry, status and metrics, "
                           "publishes and reads the monitor's alerts, sends devices nothing",
            "principals": ["operator.default"],
            "allow": [
                {"action": "subscribe", "topic": "dt/{app}/+/telemetry"},
                {"action": "subscribe", "topic": "dt/{app}/+/status"},
                {"action": "subscribe", "topic": "dt/{app}/+/metrics"},
                {"action": "publish", "topic": "alerts/{app}/+/+"},
                {"action": "subscribe", "topic": "alerts/{app}/+/+"},
            ],
        },
        "technician": {
            "description": "updates devices: sends OTA commands, signed remote settings and log requests, "
                           "reads their progress and answers (logs: the segments' ciphertext), nothing else",
            "principals": ["technician.default"],
            "allow": [
                {"action": "publish", "topic": "cmd/{app}/+/ota"},
                {"action": "subscribe", "topic": "dt/{app}/+/ota"},
                {"action": "publish", "topic": "cmd/{app}/+/config"},
                {"action": "subscribe", "topic": "dt/{app}/+/config"},
                {"action": "publish", "topic": "cmd/{app}/+/logs"},
                {"action": "subscribe", "topic": "dt/{app}/+/logs"},
            ],
        },
    },
}

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TOPIC_BAD = re.compile(r"[\x00-\x20\x7f]")


class PolicyError(WardenError):
    hint = ("fix the policy file (policy.json in the state folder; its format: docs/security.md, "
            "'Roles and the policy file'), then `warden policy check`")


@dataclass
class Rule:
    action: str
    topic: str

    def expand(self, app: str, thing: str | None = None) -> str:
        """The MQTT filter with {app} (and {thing}, if given) filled in."""
        out = self.topic.replace("{app}", app)
        return out.replace("{thing}", thing) if thing is not None else out


@dataclass
class Role:
    name: str
    allow: list
    principals: list = field(default_factory=list)   # CNs; empty for the thing role
    per_thing: bool = False                           # principal is every device's own thing name
    description: str = ""

    def rules(self, action: str) -> list:
        return [r for r in self.allow if r.action == action]


@dataclass
class Policy:
    roles: dict   # name -> Role
    version: int = POLICY_VERSION
    revision: int = 1

    def principals(self, role: str) -> list:
        return list(self.roles[role].principals) if role in self.roles else []

    @property
    def thing_role(self) -> Role | None:
        for role in self.roles.values():
            if role.per_thing:
                return role
        return None

    def role_of(self, cn: str) -> Role | None:
        """The role whose principal `cn` is (a thing name gets the thing role)."""
        if parse_principal(cn) is None:
            return self.thing_role
        for role in self.roles.values():
            if cn in role.principals:
                return role
        return None


def _check_topic(role, topic, per_thing):
    if not isinstance(topic, str) or not topic:
        raise PolicyError(f"role {role!r}: empty topic")
    if _TOPIC_BAD.search(topic):
        raise PolicyError(f"role {role!r}: topic {topic!r} contains a space or control character")
    if topic.startswith("$"):
        raise PolicyError(f"role {role!r}: topic {topic!r}: '$' topics are reserved for the broker")
    if "%" in topic:
        raise PolicyError(f"role {role!r}: topic {topic!r}: write {{thing}}, not mosquitto's %u/%c")
    if "*" in topic or "?" in topic:
        raise PolicyError(f"role {role!r}: topic {topic!r}: '*' and '?' are wildcards in AWS IoT policies",
                          hint="use MQTT's + and # in the policy; warden renders them for AWS")
    for name in _PLACEHOLDER.findall(topic):
        if name == "app":
            continue
        if name == THING and per_thing:
            continue
        raise PolicyError(f"role {role!r}: unknown placeholder {{{name}}} in {topic!r}",
                          hint="{app} anywhere; {thing} only in the thing role")
    if _PLACEHOLDER.sub("x", topic).count("{") or _PLACEHOLDER.sub("x", topic).count("}"):
        raise PolicyError(f"role {role!r}: unbalanced braces in {topic!r}")
    levels = topic.split("/")
    if len(levels) - 1 > MAX_SLASHES:
        raise PolicyError(f"role {role!r}: topic {topic!r} has more than {MAX_SLASHES} slashes (AWS IoT limit)")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise PolicyError(f"role {role!r}: '#' must be a whole last level in {topic!r}")
        if "+" in level and level != "+":
            raise PolicyError(f"role {role!r}: '+' must be a whole level in {topic!r}")
        if "{thing}" in level and level != "{thing}":
            raise PolicyError(f"role {role!r}: {{thing}} must be a whole level in {topic!r}")


def parse_policy(data) -> Policy:
    """Validate policy data (a dict as in the JSON file) and return a Policy."""
    if not isinstance(data, dict) or not isinstance(data.get("roles"), dict):
        raise PolicyError("a policy is a JSON object with a \"roles\" object")
    if data.get("version", POLICY_VERSION) != POLICY_VERSION:
        raise PolicyError(f"policy version {data.get('version')!r} is not supported (want {POLICY_VERSION})")
    revision = data.get("revision", 1)
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
        raise PolicyError(f"policy revision {revision!r} must be a positive integer")
    roles = {}
    seen = {}
    for name, spec in data["roles"].items():
        if not isinstance(spec, dict):
            raise PolicyError(f"role {name!r} must be an object")
        per_thing = spec.get("principal") == THING
        principals = list(spec.get("principals", []))
        if per_thing and principals:
            raise PolicyError(f"role {name!r}: give either \"principal\": \"thing\" or \"principals\"")
        if "principal" in spec and not per_thing:
            raise PolicyError(f"role {name!r}: \"principal\" can only be \"thing\"")
        for cn in principals:
            if cn in seen:
                raise PolicyError(f"principal {cn!r} is in two roles ({seen[cn]!r} and {name!r})")
            # A principal must have a dot: it then can never be a thing name (tools/warden/fleet/names.py).
            parsed = parse_principal(cn)
            if parsed is None:
                raise PolicyError(f"role {name!r}: principal {cn!r} is not a <role>.<name> CN",
                                  hint="principals look like operator.default")
            if parsed[0] != name:
                raise PolicyError(f"role {name!r}: principal {cn!r} is named for role {parsed[0]!r}",
                                  hint=f"a principal's CN starts with its role: {name}.<name>")
            seen[cn] = name
        rules = []
        for rule in spec.get("allow", []):
            if not isinstance(rule, dict) or rule.get("action") not in ACTIONS:
                raise PolicyError(f"role {name!r}: each rule needs an action in {ACTIONS}: {rule!r}")
            _check_topic(name, rule.get("topic"), per_thing)
            rules.append(Rule(rule["action"], rule["topic"]))
        roles[name] = Role(name, rules, principals, per_thing, spec.get("description", ""))
    if sum(r.per_thing for r in roles.values()) > 1:
        raise PolicyError("only one role can have \"principal\": \"thing\"")
    return Policy(roles, POLICY_VERSION, revision)


def default_policy() -> Policy:
    return parse_policy(DEFAULT_POLICY)


def ensure_policy(state: State):
    """Write the default policy file if there is none; return its path."""
    if not state.policy_path.exists():
        write_file(state.policy_path, json.dumps(DEFAULT_POLICY, indent=2) + "\n")
    return state.policy_path


def load_policy_data(state: State) -> dict:
    path = state.policy_path
    if not path.exists():
        return default_policy_data()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PolicyError(f"cannot read {path}: {e}", hint="fix the JSON or delete the file for the default") from e


def load_policy(state: State) -> Policy:
    """The state's policy (the default one if the file does not exist)."""
    return parse_policy(load_policy_data(state))


def save_policy(state: State, data: dict) -> Policy:
    """Validate and write `data`; the revision goes up by one over the file's current one."""
    data = copy.deepcopy(data)
    current = 0
    if state.policy_path.exists():
        try:
            current = int(json.loads(state.policy_path.read_text()).get("revision", 1))
        except (OSError, ValueError, TypeError, AttributeError):
            current = 0
    data["revision"] = max(int(data.get("revision", 1) or 1), current + 1)
    policy = parse_policy(data)
    write_file(state.policy_path, json.dumps(data, indent=2) + "\n")
    return policy


def default_policy_data() -> dict:
    return copy.deepcopy(DEFAULT_POLICY)


def policy_digest(policy: Policy) -> str:
    """A short SHA-256 of the policy's meaning (roles, principals, rules), for headers and drift checks."""
    canon = {n: {"thing": r.per_thing, "principals": r.principals,
                 "allow": [[x.action, x.topic] for x in r.allow]} for n, r in policy.roles.items()}
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:16]
