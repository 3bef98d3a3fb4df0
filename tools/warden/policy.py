"""The fleet policy: roles and their topic rules, as data, rendered to a mosquitto ACL and to AWS IoT.

The policy file (`state.policy_path`, JSON, documented in docs/security.md, 'Roles and the policy file') declares roles. Each role
has either `"principal": "thing"` (every device: its own thing name is its identity) or a list of
`"principals"` (certificate CNs `<role>.<name>`, such as `operator.default`), and `allow` rules:

    {"action": "publish" | "subscribe", "topic": "dt/{app}/{thing}/#"}

`publish` lets the principal send to topics matching the filter; `subscribe` lets it subscribe
to and receive from them. Placeholders: `{app}` (the project's app name) and, for the thing
role only, `{thing}` (the connecting device's own thing name). They render to `%u` in
mosquitto and `${iot:Connection.Thing.ThingName}` in AWS IoT (warden.awspolicy). Everything
not allowed is denied. `"version"` is the format version (1); `"revision"` counts saves.

Certificates carry their role: OU = the role name, and CN = the thing name for devices or
`<role>.<name>` for principals. A dot is never allowed in a thing name, so no device can be
named (and so authenticate) like a principal; the principal's role is its CN prefix, which
is what the broker sees as the username.

This module also holds an evaluator of the mosquitto ACL file format with mosquitto 2.0's own
semantics (`MosquittoAcl`), used to prove the two renderings equal (warden.policyproof) and by
`warden audit`. Note that mosquitto drops a denied publish silently and grants every
subscription (filtering delivery): tests must observe isolation from a privileged client.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field

from .fleet.names import parse_principal, validate_app
from .state import State, WardenError, write_file

POLICY_VERSION = 1
ACTIONS = ("publish", "subscribe")
THING = "thing"
MAX_SLASHES = 7          # AWS IoT: at most 7 slashes in a topic or topic filter
MAX_TOPIC_BYTES = 256    # AWS IoT: topic names and filters of at most 256 bytes

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
            "description": "watches the fleet: reads every device's telemetry and status, sends nothing",
            "principals": ["operator.default"],
            "allow": [
                {"action": "subscribe", "topic": "dt/{app}/+/telemetry"},
                {"action": "subscribe", "topic": "dt/{app}/+/status"},
            ],
        },
        "technician": {
            "description": "updates devices: sends OTA commands and reads OTA progress, nothing else",
            "principals": ["technician.default"],
            "allow": [
                {"action": "publish", "topic": "cmd/{app}/+/ota"},
                {"action": "subscribe", "topic": "dt/{app}/+/ota"},
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


# -- mosquitto ---------------------------------------------------------------------------------
_MOSQ_ACCESS = {"publish": "write", "subscribe": "read"}


def _mosquitto_topic(topic, app):
    return topic.replace("{app}", app).replace("{thing}", "%u")


def render_mosquitto_acl(app: str, policy: Policy | None = None) -> str:
    """The mosquitto acl_file text for `policy` (default policy if None) and app name `app`.

    The thing role becomes `pattern` lines (%u = the certificate CN = the thing name); the other
    roles become `user <cn>` blocks. mosquitto applies patterns to every client, principals
    included, so each principal block first denies the topics the patterns would open under the
    principal's own name (the AWS rendering carries the same denials). Nothing is granted on
    `$SYS` or to anonymous clients.
    """
    validate_app(app)
    policy = policy or default_policy()
    lines = [f"# Generated by warden from the policy (revision {policy.revision}, digest "
             f"{policy_digest(policy)}, app {app!r}). Edit the policy, not this file.", ""]
    thing_role = policy.thing_role
    if thing_role is not None:
        lines.append(f"# role {thing_role.name}: every device, scoped to its own thing name (%u)")
        for rule in thing_role.allow:
            lines.append(f"pattern {_MOSQ_ACCESS[rule.action]} {_mosquitto_topic(rule.topic, app)}")
        lines.append("")
    for role in policy.roles.values():
        if role.per_thing:
            continue
        for cn in role.principals:
            lines.append(f"# role {role.name}")
            lines.append(f"user {cn}")
            for topic in principal_denials(policy, app, cn):
                lines.append(f"topic deny {topic}")
            for rule in role.allow:
                lines.append(f"topic {_MOSQ_ACCESS[rule.action]} {rule.expand(app)}")
            lines.append("")
    return "\n".join(lines)


def principal_denials(policy: Policy, app: str, cn: str) -> list:
    """The thing-role filters with {thing} = `cn`: closed to principal `cn` in both renderings."""
    role = policy.thing_role
    if role is None:
        return []
    out = []
    for rule in role.allow:
        topic = rule.expand(app, cn)
        if topic not in out:
            out.append(topic)
    return out


# -- MQTT topic semantics -------------------------------------------------------------------------
def valid_topic(topic) -> bool:
    """An MQTT topic name (what is published): non-empty, no wildcards, no NUL."""
    return isinstance(topic, str) and bool(topic) and not any(c in topic for c in "+#\x00")


def valid_filter(flt) -> bool:
    """An MQTT topic filter: '+' only as a whole level, '#' only as the whole last level."""
    if not isinstance(flt, str) or not flt or "\x00" in flt:
        return False
    levels = flt.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def aws_valid(name: str) -> bool:
    """Within AWS IoT's limits: at most 256 bytes and 7 slashes."""
    return len(name.encode()) <= MAX_TOPIC_BYTES and name.count("/") <= MAX_SLASHES


def topic_matches(flt: str, topic: str) -> bool:
    """Does MQTT filter `flt` match topic name `topic`? (MQTT 3.1.1 section 4.7, as mosquitto does it.)

    '+' matches exactly one level (possibly empty), '#' the rest including the parent level
    ("a/#" matches "a"), and a filter starting with a wildcard never matches a '$' topic.
    """
    if not flt or not topic:
        return False
    if (flt[0] == "$") != (topic[0] == "$"):
        return False
    f, t = flt.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(f) == len(t)


def filter_contains(outer: str, inner: str) -> bool:
    """Is every topic matched by filter `inner` also matched by filter `outer`?"""
    o, i = outer.split("/"), inner.split("/")
    if outer[0] in "+#" and inner.startswith("$"):
        return False   # a leading wildcard never matches '$' topics
    for n, level in enumerate(o):
        if level == "#":
            return True
        if n >= len(i):
            return False
        if i[n] == "#":
            return False
        if level == "+":
            continue
        if i[n] != level:          # includes inner '+' under an outer literal
            return False
    return len(o) == len(i)


# -- the mosquitto ACL file, evaluated as mosquitto 2.0 does -------------------------------------
READ, WRITE, SUBSCRIBE = 1, 2, 4
_ACCESS_BITS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": 0}


class AclSyntaxError(PolicyError):
    pass


@dataclass
class AclEntry:
    access: int          # READ/WRITE bits; 0 = deny
    topic: str
    line: int


class MosquittoAcl:
    """A mosquitto 2.0 `acl_file`, parsed and evaluated with the broker's own rules
    (src/security_default.c in mosquitto 2.0.11):

    - `user NAME` starts a block; `topic [read|write|readwrite|deny] FILTER` lines before any
      `user` line belong to anonymous clients; `pattern` lines apply to every client, with %u
      (username) and %c (client id) substituted.
    - The client's own entries are checked first, then the patterns; within each list the
      `deny` entries come first. The first entry whose filter matches decides: deny -> denied,
      the requested access among its bits -> allowed; otherwise the search goes on. No match
      -> denied.
    - A username or client id containing + or # gets nothing from patterns.
    - Subscriptions are not checked by the default ACL (always granted); delivery is (READ).
    """

    def __init__(self, text: str):
        self.users: dict = {}        # username (None = anonymous) -> [AclEntry]
        self.patterns: list = []
        user = None
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            word = parts[0]
            rest = parts[1].strip() if len(parts) > 1 else ""
            if word in ("topic", "pattern"):
                if not rest:
                    raise AclSyntaxError(f"acl line {n}: empty topic")
                bits = rest.split(None, 1)
                if len(bits) == 2:
                    if bits[0] not in _ACCESS_BITS:
                        raise AclSyntaxError(f"acl line {n}: invalid access type {bits[0]!r}")
                    access, topic = _ACCESS_BITS[bits[0]], bits[1].strip()
                else:
                    access, topic = READ | WRITE, bits[0]
                if not valid_filter(topic):
                    raise AclSyntaxError(f"acl line {n}: invalid ACL topic {topic!r}")
                entry = AclEntry(access, topic, n)
                target = self.patterns if word == "pattern" else self.users.setdefault(user, [])
                if access == 0:
                    target.insert(0, entry)     # mosquitto puts "deny" entries at the front
                else:
                    target.append(entry)
            elif word == "user":
                if not rest:
                    raise AclSyntaxError(f"acl line {n}: missing username")
                user = rest
            else:
                raise AclSyntaxError(f"acl line {n}: invalid line {line!r}")

    @staticmethod
    def _first_match(entries, topic, access, subst=None):
        for e in entries:
            flt = subst(e.topic) if subst else e.topic
            if topic.startswith("$") and not flt.startswith("$"):
                continue
            if topic_matches(flt, topic):
                if e.access == 0:
                    return False
                if access & e.access:
                    return True
        return None

    def allowed(self, username: str | None, access: str, topic: str, client_id: str | None = None) -> bool:
        """Would mosquitto allow `access` ('read', 'write' or 'subscribe') on `topic` for this client?

        `client_id` defaults to the username (use_username_as_clientid)."""
        if access == "subscribe":
            return True   # FIXME in mosquitto 2.0: the default ACL does not check subscriptions
        bit = {"read": READ, "write": WRITE}[access]
        client_id = username if client_id is None else client_id
        own = self.users.get(username, [])
        verdict = self._first_match(own, topic, bit)
        if verdict is not None:
            return verdict
        if not self.patterns:
            return False
        if (username and any(c in username for c in "+#")) or (client_id and any(c in client_id for c in "+#")):
            return False
        if not client_id:
            return False

        def subst(t):
            out, i = [], 0
            while i < len(t):
                if t[i] == "%" and i + 1 < len(t) and t[i + 1] == "c":
                    out.append(client_id)
                    i += 2
                elif t[i] == "%" and i + 1 < len(t) and t[i + 1] == "u" and username:
                    out.append(username)
                    i += 2
                else:
                    out.append(t[i])
                    i += 1
            return "".join(out)

        return bool(self._first_match(self.patterns, topic, bit, subst))

    def entries_for(self, username: str) -> tuple:
        """(the user's own entries, the patterns with %u/%c = username), each deny-first."""
        own = list(self.users.get(username, []))
        pats = [AclEntry(e.access, e.topic.replace("%u", username).replace("%c", username), e.line)
                for e in self.patterns]
        return own, pats
