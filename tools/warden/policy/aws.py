"""The fleet policy as AWS IoT Core policy documents, and an evaluator for the grammar we emit.

It must not guess: a document outside the grammar it knows is an AwsPolicyError, never an
answer. It must not read the policy file or write documents (the CLI does).

`render_aws(policy, app, region, account)` gives one policy document per role:

- iot:Connect on `client/${iot:Connection.Thing.ThingName}` for the thing role, with the
  conditions `iot:Connection.Thing.IsAttached` = true (the certificate is attached to the thing
  whose name is the client id: the client id is pinned to the thing name) and the
  certificate's OU = the role; for the other roles on `client/${iot:Certificate.Subject.CommonName}`
  with the OU = role and the CN one of the role's principals.
- `publish` rules become iot:Publish and iot:RetainPublish on `topic/...` (mosquitto lets any
  allowed publish carry the retain flag; AWS checks iot:RetainPublish as well as iot:Publish for a
  retained message, e.g. a device's `online` status and its retained last will); `subscribe` rules
  become iot:Subscribe on `topicfilter/...` and iot:Receive on `topic/...`.
- MQTT wildcards do not exist in AWS policies ('+' and '#' are literal characters there) and AWS's
  '*' matches any characters *including* '/'. So a rule `a/#` becomes the resources `a` and `a/*`,
  and a '+' level becomes '*' plus a Deny of the same resource with that '*' spanning two levels
  ('*/*'): together they allow exactly one level. `warden.policy.proof` proves, for every topic
  AWS accepts, that the documents and the mosquitto ACL give the same answer, and refuses a
  policy where they cannot (e.g. '+' followed by '#').
- mosquitto applies the device patterns to every client; the principal blocks deny the topics
  that would be a principal's own thing topics, and the documents carry the same Deny.

`evaluate(docs, ctx, action, resource)` implements the subset of the AWS IoT policy language the
renderer emits (and what `warden audit` needs to judge hand-edited documents): Effect Allow/Deny
(an explicit Deny wins, nothing allowed means denied), Action and Resource strings or lists with
'*' and '?' wildcards, policy variables `${...}` (an unresolvable variable makes that resource
match nothing), the special `${*}` `${?}` `${$}`, and Condition operators StringEquals,
StringNotEquals, StringLike, StringNotLike and Bool.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..errors import WardenError
from ..fleet.names import validate_app
from .model import Policy, PolicyError, default_policy
from .topics import filter_contains

POLICY_LANGUAGE_VERSION = "2012-10-17"
THING_VAR = "${iot:Connection.Thing.ThingName}"
CN_VAR = "${iot:Certificate.Subject.CommonName}"
IS_ATTACHED = "iot:Connection.Thing.IsAttached"
OU_KEY = "iot:Certificate.Subject.OrganizationalUnit"
CN_KEY = "iot:Certificate.Subject.CommonName"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"

CONNECT, PUBLISH, SUBSCRIBE, RECEIVE = "iot:Connect", "iot:Publish", "iot:Subscribe", "iot:Receive"
RETAIN_PUBLISH = "iot:RetainPublish"
# what a client does -> the AWS actions that must all allow it and the ARN kind each one is
# checked on ('retain_publish': a PUBLISH with the retain flag set)
ACTION_MAP = {
    "publish": ((PUBLISH, "topic"),),
    "retain_publish": ((PUBLISH, "topic"), (RETAIN_PUBLISH, "topic")),
    "subscribe": ((SUBSCRIBE, "topicfilter"), (RECEIVE, "topic")),
}
# policy action -> what its rules grant: (AWS actions sharing one statement, ARN kind, Sid)
GRANTS = {
    "publish": (((PUBLISH, RETAIN_PUBLISH), "topic", "Publish"),),
    "subscribe": (((SUBSCRIBE,), "topicfilter", "Subscribe"), ((RECEIVE,), "topic", "Receive")),
}
_ACCOUNT_RE = re.compile(r"\d{12}")
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")


class AwsPolicyError(WardenError):
    hint = ("warden's evaluator reads the documents warden renders (`warden policy render --format aws`); "
            "see docs/security.md, 'Two renderings, one policy, proved equal'")


# -- ARNs -------------------------------------------------------------------------------------
def arn_prefix(region: str, account: str) -> str:
    return f"arn:aws:iot:{region}:{account}:"


def arn(region: str, account: str, kind: str, name: str) -> str:
    """`arn:aws:iot:<region>:<account>:<kind>/<name>` (kind: topic, topicfilter, client)."""
    return f"{arn_prefix(region, account)}{kind}/{name}"


def check_region_account(region: str, account: str):
    """Concrete values only: a '*' in the region or account lets a topic containing ':' satisfy
    another resource (the '*' spans the ':' separators), so the renderer never emits one."""
    if not _REGION_RE.fullmatch(region or ""):
        raise AwsPolicyError(f"AWS region {region!r} is not a region name", hint="e.g. eu-west-1")
    if not _ACCOUNT_RE.fullmatch(account or ""):
        raise AwsPolicyError(f"AWS account {account!r} is not a 12-digit account id")


# -- rendering ----------------------------------------------------------------------------------
def relaxed(flt: str, thing_var: str | None = None) -> tuple:
    """(allow patterns, one-level deny patterns) for MQTT filter `flt` in AWS resource syntax.

    '+' -> '*' (and a deny pattern where that '*' spans two levels), a trailing '/#' -> the
    parent and parent/'*', a lone '#' -> '*'. `{thing}` -> `thing_var`.
    """
    levels = flt.split("/")
    if thing_var is not None:
        levels = [thing_var if lv == "{thing}" else lv for lv in levels]
    tail = levels[-1] == "#"
    if tail:
        levels = levels[:-1]
    if not levels:
        return ["*"], []
    plus = [i for i, lv in enumerate(levels) if lv == "+"]
    base = ["*" if lv == "+" else lv for lv in levels]
    allow = ["/".join(base)]
    if tail:
        allow.append("/".join(base) + "/*")
    deny = []
    for pattern in allow:
        parts = pattern.split("/")
        for i in plus:
            variant = list(parts)
            variant[i] = "*/*"
            deny.append("/".join(variant))
    return allow, deny


def essential_rules(role) -> list:
    """The role's rules without those another rule of the same action already covers: a covered
    rule adds nothing, and its one-level Deny would cut into the covering rule."""
    out = []
    for i, rule in enumerate(role.allow):
        covered = False
        for j, other in enumerate(role.allow):
            if i == j or other.action != rule.action:
                continue
            if filter_contains(other.topic, rule.topic) and (
                    not filter_contains(rule.topic, other.topic) or j < i):
                covered = True
                break
        if not covered:
            out.append(rule)
    return out


def _unique(items):
    out = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def _action(actions: tuple):
    return actions[0] if len(actions) == 1 else list(actions)


def render_role(policy: Policy, role_name: str, app: str, region: str, account: str) -> dict:
    """The AWS IoT policy document of one role."""
    role = policy.roles[role_name]
    thing_var = THING_VAR if role.per_thing else None
    statements = []
    if role.per_thing:
        statements.append({
            "Sid": "ConnectAsItsThing",
            "Effect": "Allow",
            "Action": CONNECT,
            "Resource": arn(region, account, "client", THING_VAR),
            "Condition": {"Bool": {IS_ATTACHED: "true"}, "StringEquals": {OU_KEY: role.name}},
        })
    else:
        statements.append({
            "Sid": "ConnectAsItsCommonName",
            "Effect": "Allow",
            "Action": CONNECT,
            "Resource": arn(region, account, "client", CN_VAR),
            "Condition": {"StringEquals": {OU_KEY: role.name, CN_KEY: list(role.principals)}},
        })
    allow = {}   # Sid -> resources
    deny = {}
    for rule in essential_rules(role):
        pats, one_level = relaxed(rule.expand(app), thing_var)
        for _actions, kind, sid in GRANTS[rule.action]:
            allow.setdefault(sid, []).extend(arn(region, account, kind, p) for p in pats)
            deny.setdefault(sid, []).extend(arn(region, account, kind, p) for p in one_level)
    grants = [g for action in ("publish", "subscribe") for g in GRANTS[action]]
    for actions, _kind, sid in grants:
        if allow.get(sid):
            statements.append({"Sid": sid, "Effect": "Allow", "Action": _action(actions),
                               "Resource": _unique(allow[sid])})
    # iot:RetainPublish shares the Denies of iot:Publish: on its own it allows what Publish allows
    for actions, _kind, sid in grants:
        if deny.get(sid):
            statements.append({"Sid": sid + "OneLevelOnly", "Effect": "Deny",
                               "Action": _action(actions), "Resource": _unique(deny[sid])})
    thing_role = policy.thing_role
    if not role.per_thing and thing_role is not None and thing_role.allow:
        # mosquitto's patterns reach principals too; their blocks deny the principal's own-name
        # thing topics, so these documents deny the same (no device can have a dotted name).
        topics, filters = [], []
        for rule in thing_role.allow:
            pats, _ = relaxed(rule.topic.replace("{app}", app), CN_VAR)
            topics += [arn(region, account, "topic", p) for p in pats]
            filters += [arn(region, account, "topicfilter", p) for p in pats]
        statements.append({"Sid": "NotItsOwnThingTopics", "Effect": "Deny",
                           "Action": [PUBLISH, RETAIN_PUBLISH, RECEIVE], "Resource": _unique(topics)})
        statements.append({"Sid": "NotItsOwnThingFilters", "Effect": "Deny",
                           "Action": SUBSCRIBE, "Resource": _unique(filters)})
    return {"Version": POLICY_LANGUAGE_VERSION, "Statement": statements}


def render_aws(policy: Policy | None, app: str, region: str = DEFAULT_REGION,
               account: str = DEFAULT_ACCOUNT) -> dict:
    """{role name: AWS IoT policy document} for every role of `policy` (default policy if None)."""
    validate_app(app)
    check_region_account(region, account)
    policy = policy or default_policy()
    return {name: render_role(policy, name, app, region, account) for name in policy.roles}


def dumps(docs: dict) -> str:
    return json.dumps(docs, indent=2) + "\n"


# -- evaluation ---------------------------------------------------------------------------------
@dataclass
class Context:
    """What AWS IoT knows about a connection when it evaluates a policy."""
    client_id: str
    cn: str | None = None                  # certificate subject CN
    ou: str | None = None                  # certificate subject OU (the role)
    thing: str | None = None               # the thing the certificate is attached to (if any)
    extra: dict = field(default_factory=dict)

    def variables(self) -> dict:
        v = {"iot:ClientId": self.client_id}
        if self.cn is not None:
            v[CN_KEY] = self.cn
        if self.ou is not None:
            v[OU_KEY] = self.ou
        # The thing variables resolve only for the thing the certificate is attached to whose
        # name is the client id (AWS takes the thing name from the MQTT client id).
        attached = self.thing is not None and self.thing == self.client_id
        v[IS_ATTACHED] = "true" if attached else "false"
        if attached:
            v["iot:Connection.Thing.ThingName"] = self.thing
        v.update(self.extra)
        return v


@dataclass
class Decision:
    allowed: bool
    reason: str            # "allow: <sid>", "explicit deny: <sid>", "implicit deny"

    def __bool__(self):
        return self.allowed


_VAR = re.compile(r"\$\{([^}]*)\}")
_SPECIAL = {"*": "*", "?": "?", "$": "$"}
_UNSUPPORTED = ("NotAction", "NotResource", "Principal", "NotPrincipal")


def _as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def substitute(template: str, variables: dict):
    """Resolve ${...} in `template`: a list of ('lit', text) / ('wild', '*'|'?') pieces, or None
    when a variable cannot be resolved. Wildcards come only from the template itself."""
    pieces = []
    pos = 0
    for m in _VAR.finditer(template):
        pieces.extend(_split_wild(template[pos:m.start()]))
        name = m.group(1)
        if name in _SPECIAL:
            pieces.append(("lit", _SPECIAL[name]))
        elif name in variables and variables[name] is not None:
            pieces.append(("lit", str(variables[name])))
        else:
            return None
        pos = m.end()
    pieces.extend(_split_wild(template[pos:]))
    return pieces


def _split_wild(text):
    out = []
    buf = []
    for ch in text:
        if ch in "*?":
            if buf:
                out.append(("lit", "".join(buf)))
                buf = []
            out.append(("wild", ch))
        else:
            buf.append(ch)
    if buf:
        out.append(("lit", "".join(buf)))
    return out


def _regex(pieces) -> re.Pattern:
    rx = []
    for kind, text in pieces:
        if kind == "lit":
            rx.append(re.escape(text))
        else:
            rx.append(".*" if text == "*" else ".")
    return re.compile("".join(rx), re.DOTALL)


def glob_match(pattern: str, value: str, variables: dict, *, case: bool = True) -> bool:
    pieces = substitute(pattern, variables)
    if pieces is None:
        return False
    rx = _regex(pieces)
    if not case:
        rx = re.compile(rx.pattern, re.DOTALL | re.IGNORECASE)
    return rx.fullmatch(value) is not None


def _joined(pieces) -> str:
    return "".join(text for _kind, text in pieces)


def _condition_holds(condition: dict, variables: dict) -> bool:
    """All operators and keys must hold (AND); several values for one key are alternatives (OR).
    A key missing from the request fails the positive operators and satisfies the negated ones."""
    if not condition:
        return True
    if not isinstance(condition, dict):
        raise AwsPolicyError(f"a Condition must be an object, not {condition!r}")
    for op, tests in condition.items():
        if op not in ("StringEquals", "StringNotEquals", "StringLike", "StringNotLike", "Bool"):
            raise AwsPolicyError(f"condition operator {op!r} is not supported by warden's evaluator")
        if not isinstance(tests, dict):
            raise AwsPolicyError(f"condition {op}: expected an object of key: value(s)")
        for key, wanted in tests.items():
            actual = variables.get(key)
            values = [p for p in (substitute(str(w), variables) for w in _as_list(wanted)) if p is not None]
            if actual is None:
                hit = False
            elif op in ("StringEquals", "StringNotEquals"):
                hit = any(_joined(p) == actual for p in values)   # '*' and '?' are plain here
            elif op == "Bool":
                hit = any(_joined(p).lower() == str(actual).lower() for p in values)
            else:
                hit = any(_regex(p).fullmatch(actual) for p in values)
            ok = (not hit) if op in ("StringNotEquals", "StringNotLike") else hit
            if not ok:
                return False
    return True


def _statements(docs):
    if isinstance(docs, dict) and "Statement" in docs:
        docs = [docs]
    elif isinstance(docs, dict):
        docs = list(docs.values())
    for doc in docs:
        statements = doc.get("Statement") if isinstance(doc, dict) else None
        if statements is None:
            raise AwsPolicyError("a policy document needs a \"Statement\"")
        for st in _as_list(statements):
            if not isinstance(st, dict):
                raise AwsPolicyError(f"a statement must be an object, not {st!r}")
            for key in _UNSUPPORTED:
                if key in st:
                    raise AwsPolicyError(f"statement element {key!r} is not supported by warden's evaluator")
            if st.get("Effect") not in ("Allow", "Deny"):
                raise AwsPolicyError(f"statement Effect must be Allow or Deny, not {st.get('Effect')!r}")
            yield st


def statement_applies(st: dict, ctx: Context, action: str, resource: str) -> bool:
    variables = ctx.variables()
    if not any(glob_match(a, action, {}, case=False) for a in _as_list(st.get("Action"))):
        return False
    if not any(glob_match(r, resource, variables) for r in _as_list(st.get("Resource"))):
        return False
    return _condition_holds(st.get("Condition"), variables)


def evaluate(docs, ctx: Context, action: str, resource: str) -> Decision:
    """AWS IoT's verdict on `action` (e.g. iot:Publish) on `resource` (a full ARN) for `ctx`.

    `docs`: one policy document, a list of them, or {name: document} (all attached at once).
    """
    allow = None
    for st in _statements(docs):
        if statement_applies(st, ctx, action, resource):
            sid = st.get("Sid", "?")
            if st["Effect"] == "Deny":
                return Decision(False, f"explicit deny: {sid}")
            allow = allow or sid
    if allow:
        return Decision(True, f"allow: {allow}")
    return Decision(False, "implicit deny")


def resource_patterns(docs, ctx: Context, action: str) -> tuple:
    """(allow, deny) lists of resolved resource patterns (pieces) of the statements whose action
    matches and whose conditions hold for `ctx`. Used by the equivalence proof."""
    variables = ctx.variables()
    allow, deny = [], []
    for st in _statements(docs):
        if not any(glob_match(a, action, {}, case=False) for a in _as_list(st.get("Action"))):
            continue
        if not _condition_holds(st.get("Condition"), variables):
            continue
        for r in _as_list(st.get("Resource")):
            pieces = substitute(r, variables)
            if pieces is None:
                continue
            (deny if st["Effect"] == "Deny" else allow).append(pieces)
    return allow, deny


# -- convenience for the policy's own actions -----------------------------------------------------
class AwsEvaluator:
    """Answers (principal, policy action, topic) questions against rendered documents, as the
    matrix tests and the audit ask them: 'publish' -> iot:Publish; 'retain_publish' -> iot:Publish
    and iot:RetainPublish; 'subscribe' on a topic ->
    iot:Subscribe on it as a filter and iot:Receive on it; 'subscribe_filter' -> iot:Subscribe only;
    'receive' -> iot:Receive only; 'connect' -> iot:Connect on the client id."""

    def __init__(self, docs: dict, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT):
        self.docs = docs
        self.region, self.account = region, account

    def context(self, policy: Policy, cn: str, client_id: str | None = None, thing_attached: bool = True):
        role = policy.role_of(cn)
        if role is None:
            raise PolicyError(f"{cn!r} has no role in the policy")
        client_id = cn if client_id is None else client_id
        thing = cn if (role.per_thing and thing_attached) else None
        return role, Context(client_id=client_id, cn=cn, ou=role.name, thing=thing)

    def allowed(self, policy: Policy, cn: str, action: str, topic: str, client_id: str | None = None) -> bool:
        role, ctx = self.context(policy, cn, client_id)
        doc = self.docs.get(role.name)
        if doc is None:
            return False
        a = lambda aws_action, kind, name: evaluate(doc, ctx, aws_action, arn(self.region, self.account, kind, name)).allowed
        if action == "connect":
            return a(CONNECT, "client", topic)
        if action == "publish":
            return a(PUBLISH, "topic", topic)
        if action == "retain_publish":
            return a(PUBLISH, "topic", topic) and a(RETAIN_PUBLISH, "topic", topic)
        if action == "receive":
            return a(RECEIVE, "topic", topic)
        if action == "subscribe_filter":
            return a(SUBSCRIBE, "topicfilter", topic)
        if action == "subscribe":
            return a(SUBSCRIBE, "topicfilter", topic) and a(RECEIVE, "topic", topic)
        raise ValueError(f"unknown action {action!r}")


# -- the monitor's rules as a Device Defender security profile ------------------------------------
# The cloud-side metrics AWS IoT Device Defender (Rules Detect) counts per device, for each of the
# monitor's signals and rates (docs/monitor.md, 'On AWS IoT'); the device-side ones (heap, boots,
# the outbox) would need AWS's agent on the device, which a Warden device does not run.
_DEFENDER_DURATIONS = (300, 600, 900, 1800, 3600)
_DEFENDER_STATISTICS = ("p0", "p0.1", "p0.01", "p1", "p10", "p50", "p90", "p99", "p99.9", "p99.99", "p100")
_DEFENDER_SIGNALS = {"auth_fail": "aws:num-authorization-failures", "disconnect": "aws:num-disconnects",
                     "connect": "aws:num-connection-attempts"}


def render_defender(rules, app: str) -> tuple:
    """(security profile, [(rule name, why it has no AWS behavior)]) for the monitor's `rules`
    (warden.monitor.rules.Rules): the CreateSecurityProfile request body, one behavior per rule
    that a cloud-side metric can express, with the rule's datapoints to alarm and to clear."""
    validate_app(app)
    behaviors, skipped = [], []
    for rule in rules.rules:
        criteria = {"consecutiveDatapointsToAlarm": rule.datapoints_to_alarm,
                    "consecutiveDatapointsToClear": rule.datapoints_to_clear}
        if rule.type == "count" and rule.signal in _DEFENDER_SIGNALS:
            metric = _DEFENDER_SIGNALS[rule.signal]
            duration = next((d for d in _DEFENDER_DURATIONS if d >= rule.window), _DEFENDER_DURATIONS[-1])
            criteria.update(comparisonOperator="greater-than", value={"count": int(rule.threshold)},
                            durationSeconds=duration)
        elif rule.type == "above" and rule.metric == "msg_rate":
            # a rate a minute, as AWS's count over five minutes
            metric = "aws:num-messages-sent"
            criteria.update(comparisonOperator="greater-than", value={"count": int(rule.threshold * 5)},
                            durationSeconds=300)
        elif rule.type == "fleet" and rule.metric == "msg_rate":
            statistic = f"p{rule.percentile:g}"
            if statistic not in _DEFENDER_STATISTICS:
                skipped.append((rule.name, f"AWS offers the statistics {', '.join(_DEFENDER_STATISTICS)} only"))
                continue
            metric = "aws:num-messages-sent"
            criteria.update(statisticalThreshold={"statistic": statistic}, durationSeconds=300)
        else:
            what = rule.signal or rule.metric
            skipped.append((rule.name, f"{what} is not a metric AWS IoT counts in the cloud (only `warden monitor` watches it)"))
            continue
        behaviors.append({"name": rule.name, "metric": metric, "criteria": criteria})
    profile = {"securityProfileName": f"warden-{app}",
               "securityProfileDescription": f"the warden monitor's rules for app {app} (rules.json version {rules.version})",
               "behaviors": behaviors}
    return profile, skipped
