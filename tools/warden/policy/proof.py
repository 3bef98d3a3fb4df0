"""Proof that the mosquitto ACL and the AWS IoT documents rendered from one policy agree on every topic.

It only compares the two renderings: it must not change either of them.

For each principal (a representative thing name for the thing role, every principal CN of the
other roles) and each action, both renderings define a set of topic strings:

- mosquitto: the first-match rules of `acleval.MosquittoAcl` over the client's own entries
  and the patterns (deny entries first), with MQTT filter matching;
- AWS: an explicit Deny wins, else any Allow, over the documents' resource patterns with '*'
  (any characters, '/' included) and '?' (one character), for `arn:...:topic/<topic>` (and
  `topicfilter/<topic>` for iot:Subscribe).

The actions: `publish` (mosquitto write; AWS iot:Publish), `retain_publish`, a publish with the
retain flag (mosquitto has no retain permission: write; AWS iot:Publish and iot:RetainPublish),
and `subscribe` (mosquitto read; AWS iot:Subscribe on the topic as a filter and iot:Receive).

Both are regular languages, so equality is decidable: we walk the product of their automata
breadth first over every string AWS IoT accepts as a topic (no '+', '#' or NUL, at most 7
slashes; the search is bounded at 256 characters, AWS's length limit) and report the shortest
topic where the answers differ. Characters are grouped: every character that appears in no
pattern behaves like every other such character, so one representative stands for them all.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from . import aws
from .acleval import MosquittoAcl, READ, WRITE
from .model import Policy
from .topics import MAX_SLASHES, MAX_TOPIC_BYTES

ACTIONS = tuple(aws.ACTION_MAP)   # publish, retain_publish, subscribe
OTHER = "\u2603"   # stands for every character that no pattern mentions

# tokens: ("lit", ch) | ("any",) | ("star", excluded characters)
LIT, ANY, STAR = "lit", "any", "star"


@dataclass(frozen=True)
class Pattern:
    tokens: tuple
    no_dollar: bool = False     # MQTT: a filter not starting with '$' never matches a '$' topic


def mqtt_patterns(flt: str) -> list:
    """A filter as alternatives of token sequences (MQTT semantics, '#' includes the parent)."""
    no_dollar = not flt.startswith("$")
    levels = flt.split("/")
    tail = levels[-1] == "#"
    if tail:
        levels = levels[:-1]
    if not levels:
        return [Pattern(((STAR, frozenset()),), no_dollar)]
    toks = []
    for i, level in enumerate(levels):
        if i:
            toks.append((LIT, "/"))
        if level == "+":
            toks.append((STAR, frozenset("/")))
        else:
            toks.extend((LIT, c) for c in level)
    out = [Pattern(tuple(toks), no_dollar)]
    if tail:
        out.append(Pattern(tuple(toks) + ((LIT, "/"), (STAR, frozenset())), no_dollar))
    return out


def aws_pattern(pieces) -> Pattern:
    toks = []
    for kind, text in pieces:
        if kind == "lit":
            toks.extend((LIT, c) for c in text)
        elif text == "*":
            toks.append((STAR, frozenset()))
        else:
            toks.append((ANY,))
    return Pattern(tuple(toks))


class Group:
    """A union of patterns run as one NFA; its state is a frozenset of (pattern, position)."""

    def __init__(self, patterns):
        self.patterns = list(patterns)

    def _close(self, states):
        out = set(states)
        stack = list(states)
        while stack:
            p, i = stack.pop()
            toks = self.patterns[p].tokens
            if i < len(toks) and toks[i][0] == STAR and (p, i + 1) not in out:
                out.add((p, i + 1))
                stack.append((p, i + 1))
        return frozenset(out)

    def start(self):
        return self._close({(p, 0) for p in range(len(self.patterns))})

    def step(self, states, ch, first):
        nxt = set()
        for p, i in states:
            pat = self.patterns[p]
            if first and ch == "$" and pat.no_dollar:
                continue
            toks = pat.tokens
            if i >= len(toks):
                continue
            kind = toks[i][0]
            if kind == LIT:
                if toks[i][1] == ch:
                    nxt.add((p, i + 1))
            elif kind == ANY:
                nxt.add((p, i + 1))
            elif ch not in toks[i][1]:
                nxt.add((p, i))
        return self._close(nxt)

    def feed(self, states, text):
        first = True
        for ch in text:
            states = self.step(states, ch, first)
            first = False
        return states

    def accepts(self, states):
        return any(i == len(self.patterns[p].tokens) for p, i in states)

    def chars(self):
        out = set()
        for pat in self.patterns:
            for t in pat.tokens:
                if t[0] == LIT:
                    out.add(t[1])
                elif t[0] == STAR:
                    out |= t[1]
        return out


@dataclass
class Mismatch:
    principal: str
    action: str            # publish | retain_publish | subscribe (see aws.ACTION_MAP)
    topic: str
    mosquitto: bool
    aws: bool

    def __str__(self):
        said = lambda b: "allows" if b else "denies"
        return (f"{self.principal} {self.action} {self.topic!r}: mosquitto {said(self.mosquitto)}, "
                f"AWS {said(self.aws)}")


def _mosquitto_groups(acl: MosquittoAcl, username: str, bit: int):
    own, pats = acl.entries_for(username)
    if any(c in username for c in "+#"):
        pats = []

    def groups(entries):
        deny = [p for e in entries if e.access == 0 for p in mqtt_patterns(e.topic)]
        allow = [p for e in entries if e.access & bit for p in mqtt_patterns(e.topic)]
        return Group(deny), Group(allow)

    od, oa = groups(own)
    pd, pa = groups(pats)
    return [od, oa, pd, pa]


def _mosquitto_verdict(acc):
    od, oa, pd, pa = acc
    return (not od) and (oa or ((not pd) and pa))


def _aws_groups(docs, ctx, items, region, account):
    """[(allow group, deny group, ARN prefix)] for each (AWS action, ARN kind) in `items`."""
    out = []
    for aws_action, kind in items:
        allow, deny = aws.resource_patterns(docs, ctx, aws_action)
        out.append((Group(aws_pattern(p) for p in allow), Group(aws_pattern(p) for p in deny),
                    aws.arn(region, account, kind, "")))
    return out


def prove_principal(acl: MosquittoAcl, docs: dict, policy: Policy, cn: str, action: str,
                    region: str, account: str, max_len: int = MAX_TOPIC_BYTES):
    """The shortest topic on which the two renderings disagree for (cn, action), or None."""
    role = policy.role_of(cn)
    doc = docs.get(role.name) if role else None
    ctx = aws.Context(client_id=cn, cn=cn, ou=role.name if role else None,
                      thing=cn if role is not None and role.per_thing else None)
    bit = READ if action == "subscribe" else WRITE
    mgroups = _mosquitto_groups(acl, cn, bit)
    items = aws.ACTION_MAP[action]
    agroups = _aws_groups(doc, ctx, items, region, account) if doc is not None else []
    alphabet = {"/", "$", OTHER}
    for g in mgroups:
        alphabet |= g.chars()
    for a, d, _prefix in agroups:
        alphabet |= a.chars() | d.chars()
    alphabet -= {"+", "#", "\x00"}
    alphabet = sorted(alphabet)

    mstart = tuple(g.start() for g in mgroups)
    astart = tuple(st for a, d, prefix in agroups for st in (a.feed(a.start(), prefix), d.feed(d.start(), prefix)))
    agroup_list = [g for a, d, _p in agroups for g in (a, d)]

    def verdicts(mst, ast):
        m = _mosquitto_verdict([g.accepts(s) for g, s in zip(mgroups, mst)])
        if not agroups:
            return m, False
        acc = [g.accepts(s) for g, s in zip(agroup_list, ast)]
        a = all(acc[2 * k] and not acc[2 * k + 1] for k in range(len(agroups)))
        return m, a

    start = (mstart, astart, 0)
    seen = {start: None}
    queue = deque([(start, "")])
    while queue:
        (mst, ast, slashes), text = queue.popleft()
        if len(text) >= max_len:
            continue
        first = not text
        for ch in alphabet:
            ns = slashes + (ch == "/")
            if ns > MAX_SLASHES:
                continue
            nm = tuple(g.step(s, ch, first) for g, s in zip(mgroups, mst))
            # AWS patterns saw the ARN prefix already: the topic is never "first" for them
            na = tuple(g.step(s, ch, False) for g, s in zip(agroup_list, ast))
            key = (nm, na, ns)
            if key in seen:
                continue
            seen[key] = True
            t = text + ch
            m, a = verdicts(nm, na)
            if m != a:
                return Mismatch(cn, action, t, m, a)
            if not any(nm) and not any(na):
                continue        # nothing can match any longer: both stay 'denied'
            queue.append((key, t))
    return None


def representative_things(policy: Policy, app: str) -> list:
    """Thing names to prove with: a plain one, and ones equal to literal levels of the policy
    (a thing named like a topic level is where a rendering could confuse two levels)."""
    names = ["thing-1", "a:b"]
    for role in policy.roles.values():
        for rule in role.allow:
            for level in rule.expand(app).split("/"):
                if level and level not in ("+", "#", "{thing}") and level not in names \
                        and all(c.isalnum() or c in ":_-" for c in level):
                    names.append(level)
    return names


def prove(policy: Policy, app: str, acl_text: str, docs: dict, region: str = aws.DEFAULT_REGION,
          account: str = aws.DEFAULT_ACCOUNT) -> list:
    """Every disagreement (at most one, the shortest, per principal and action); [] = proved equal."""
    acl = MosquittoAcl(acl_text)
    principals = []
    if policy.thing_role is not None:
        principals += representative_things(policy, app)
    for role in policy.roles.values():
        principals += [cn for cn in role.principals if cn not in principals]
    out = []
    for cn in principals:
        for action in ACTIONS:
            m = prove_principal(acl, docs, policy, cn, action, region, account)
            if m is not None:
                out.append(m)
    return out


def prove_policy(policy: Policy, app: str, region: str = aws.DEFAULT_REGION,
                 account: str = aws.DEFAULT_ACCOUNT) -> list:
    """Render `policy` both ways and prove the renderings equal; returns the mismatches."""
    from .mosquitto import render_mosquitto_acl

    return prove(policy, app, render_mosquitto_acl(app, policy), aws.render_aws(policy, app, region, account),
                 region, account)
