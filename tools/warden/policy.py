"""Roles and their topic rules, as data, rendered to a mosquitto ACL (and later an AWS IoT policy).

The policy file (`state.policy_path`, JSON) declares roles. Each role has either
`"principal": "thing"` (every device: its own thing name is its identity) or a list of
`"principals"` (certificate CNs such as `operator.default`), and `allow` rules:

    {"action": "publish" | "subscribe", "topic": "dt/{app}/{thing}/#"}

`publish` lets the principal send to topics matching the filter; `subscribe` lets it subscribe
to and receive from them. Placeholders: `{app}` (the project's app name) and, for the thing
role only, `{thing}` (the connecting device's own thing name). They render to `%u` in
mosquitto and `${iot:Connection.Thing.ThingName}` in AWS IoT. Everything not allowed is
denied. Note that mosquitto drops a denied publish silently and grants a denied subscription
(filtering delivery): tests must observe isolation from a privileged client.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field

from .names import parse_principal, validate_app
from .state import State, WardenError, write_file

POLICY_VERSION = 1
ACTIONS = ("publish", "subscribe")
THING = "thing"

DEFAULT_POLICY = {
    "version": POLICY_VERSION,
    "roles": {
        "device": {
            "description": "a device: telemetry, status and OTA progress out, commands in, own topics only",
            "principal": THING,
            "allow": [
                {"action": "publish", "topic": "dt/{app}/{thing}/#"},
                {"action": "subscribe", "topic": "cmd/{app}/{thing}/#"},
            ],
        },
        "operator": {
            "description": "runs the fleet: reads all device data, sends commands",
            "principals": ["operator.default"],
            "allow": [
                {"action": "subscribe", "topic": "dt/#"},
                {"action": "publish", "topic": "cmd/{app}/#"},
            ],
        },
        "technician": {
            "description": "services devices: reads device data of this app",
            "principals": ["technician.default"],
            "allow": [
                {"action": "subscribe", "topic": "dt/{app}/#"},
            ],
        },
    },
}

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TOPIC_BAD = re.compile(r"[\x00-\x20\x7f]")


class PolicyError(WardenError):
    pass


@dataclass
class Rule:
    action: str
    topic: str


@dataclass
class Role:
    name: str
    allow: list
    principals: list = field(default_factory=list)   # CNs; empty for the thing role
    per_thing: bool = False                           # principal is every device's own thing name
    description: str = ""


@dataclass
class Policy:
    roles: dict   # name -> Role

    def principals(self, role: str) -> list:
        return list(self.roles[role].principals) if role in self.roles else []


def _check_topic(role, topic, per_thing):
    if not isinstance(topic, str) or not topic:
        raise PolicyError(f"role {role!r}: empty topic")
    if _TOPIC_BAD.search(topic):
        raise PolicyError(f"role {role!r}: topic {topic!r} contains a space or control character")
    if topic.startswith("$"):
        raise PolicyError(f"role {role!r}: topic {topic!r}: '$' topics are reserved for the broker")
    if "%" in topic:
        raise PolicyError(f"role {role!r}: topic {topic!r}: write {{thing}}, not mosquitto's %u/%c")
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
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise PolicyError(f"role {role!r}: '#' must be a whole last level in {topic!r}")
        if "+" in level and level != "+":
            raise PolicyError(f"role {role!r}: '+' must be a whole level in {topic!r}")


def parse_policy(data) -> Policy:
    """Validate policy data (a dict as in the JSON file) and return a Policy."""
    if not isinstance(data, dict) or not isinstance(data.get("roles"), dict):
        raise PolicyError("a policy is a JSON object with a \"roles\" object")
    if data.get("version", POLICY_VERSION) != POLICY_VERSION:
        raise PolicyError(f"policy version {data.get('version')!r} is not supported (want {POLICY_VERSION})")
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
            # A principal must have a dot: it then can never be a thing name (names.py).
            if parse_principal(cn) is None:
                raise PolicyError(f"role {name!r}: principal {cn!r} is not a <role>.<name> CN",
                                  hint="principals look like operator.default")
            if cn in seen:
                raise PolicyError(f"principal {cn!r} is in two roles ({seen[cn]!r} and {name!r})")
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
    return Policy(roles)


def default_policy() -> Policy:
    return parse_policy(DEFAULT_POLICY)


def ensure_policy(state: State):
    """Write the default policy file if there is none; return its path."""
    if not state.policy_path.exists():
        write_file(state.policy_path, json.dumps(DEFAULT_POLICY, indent=2) + "\n")
    return state.policy_path


def load_policy(state: State) -> Policy:
    """The state's policy (the default one if the file does not exist)."""
    path = state.policy_path
    if not path.exists():
        return default_policy()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PolicyError(f"cannot read {path}: {e}", hint="fix the JSON or delete the file for the default") from e
    return parse_policy(data)


def save_policy(state: State, data: dict) -> Policy:
    policy = parse_policy(data)
    write_file(state.policy_path, json.dumps(data, indent=2) + "\n")
    return policy


def default_policy_data() -> dict:
    return copy.deepcopy(DEFAULT_POLICY)


def _mosquitto_topic(topic, app):
    return topic.replace("{app}", app).replace("{thing}", "%u")


_MOSQ_ACCESS = {"publish": "write", "subscribe": "read"}


def render_mosquitto_acl(app: str, policy: Policy | None = None) -> str:
    """The mosquitto acl_file text for `policy` (default policy if None) and app name `app`.

    The thing role becomes `pattern` lines (%u = the certificate CN = the thing name); the other
    roles become `user <cn>` blocks. Nothing is granted on `$SYS` or to anonymous clients.
    """
    validate_app(app)
    policy = policy or default_policy()
    lines = [f"# Generated by warden from the policy (app {app!r}). Edit the policy, not this file.", ""]
    for role in policy.roles.values():
        if role.per_thing:
            lines.append(f"# role {role.name}: every device, scoped to its own thing name (%u)")
            for rule in role.allow:
                lines.append(f"pattern {_MOSQ_ACCESS[rule.action]} {_mosquitto_topic(rule.topic, app)}")
            lines.append("")
    for role in policy.roles.values():
        if role.per_thing:
            continue
        for cn in role.principals:
            lines.append(f"# role {role.name}")
            lines.append(f"user {cn}")
            for rule in role.allow:
                lines.append(f"topic {_MOSQ_ACCESS[rule.action]} {_mosquitto_topic(rule.topic, app)}")
            lines.append("")
    return "\n".join(lines)
