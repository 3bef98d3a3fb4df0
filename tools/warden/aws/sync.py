"""`warden aws sync`: a plan that makes AWS IoT match the registry, and applying it.

It reads the registry, the policy file and the PKI and never changes them; in AWS it touches only
what is Warden's: things carrying the attribute `warden_app=<app>`, policies and thing groups
named `warden-<app>-...`, and the fleet's certificates (AWS's id of a certificate is the SHA-256
of its DER, the registry's fingerprint). What it wants, for every registry entry:

- an active device: a thing named as its CN; each of its certificates that is active or
  pending (a rotation under way) registered ACTIVE, attached to the thing and to the device
  policy; its tags KEY=VALUE (`warden device tag`) as thing groups `warden-<app>-KEY:VALUE`;
- a revoked certificate (a revoked device's, a rotated one's, a revoked principal's): REVOKED
  in AWS, detached from its thing and its policy;
- an operator or technician principal: its certificate ACTIVE, attached to its role's policy
  (no thing: its client id is its CN);
- one policy per role of the policy file, `warden-<app>-<role>`, exactly the document
  `warden.policy.aws` renders (proved equal to the mosquitto ACL by `warden policy check`); a
  changed rendering becomes the policy's new default version.

`plan()` only reads: a constant number of list calls per page of 250 and per role, plus one
`ListThingPrincipals` per Warden thing. `apply()` runs the steps in order (policies, certificates,
things, attachments, groups, revocations, deletions); each step is safe to repeat, and the plan is
made from what AWS holds, so a sync that stopped half-way (throttling, a lost network) is
completed by the next one. Deletions (things of revoked or unknown devices, principals attached
to Warden things by hand, policies of roles that are gone) are listed but held back unless
`delete=True` (`--delete`). AWS has no batch call for things, certificates or attachments, so a
new device costs four writes (register, create thing, attach to the thing, attach the policy).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..fleet import pki
from ..fleet.names import parse_principal
from ..fleet.registry import Registry
from ..state import State
from .client import Aws, AwsConflict, AwsError
from .project import AwsProject

ATTR = "warden_app"
_GROUP_RE = re.compile(r"[a-zA-Z0-9:_-]{1,128}")


def policy_name(app: str, role: str) -> str:
    return f"warden-{app}-{role}"


def group_name(app: str, tag: str) -> str:
    return f"warden-{app}-{tag}"


def cert_arn(project: AwsProject, cert_id: str) -> str:
    return f"arn:aws:iot:{project.region}:{project.account}:cert/{cert_id}"


@dataclass
class Step:
    verb: str          # create | update | delete
    kind: str          # policy | certificate | thing | attachment | group
    name: str
    detail: str
    calls: list        # [(operation, params)]; operations starting with '_' are sync's own

    def __str__(self):
        return f"{self.verb:<6} {self.kind} {self.name}: {self.detail}"


@dataclass
class Plan:
    steps: list = field(default_factory=list)
    held: list = field(default_factory=list)     # deletions that need --delete
    notes: list = field(default_factory=list)    # what sync cannot do, and why
    reads: int = 0

    def counts(self) -> Counter:
        return Counter(s.verb for s in self.steps)

    @property
    def empty(self) -> bool:
        return not self.steps


# -- what the registry wants ------------------------------------------------------------------------
@dataclass
class _Want:
    cert_id: str
    status: str               # ACTIVE | REVOKED
    owner: str                # thing name or principal CN
    role: str                 # policy role
    thing: str | None         # the thing it is attached to (devices)
    pem_path: Path | None     # where its certificate is, for registering it


def _tags(tags: dict) -> list:
    """A device's registry tags {key: value} as group suffixes `key:value`: ':' is in no tag key
    (warden.fleet.groups), so two different tags never name one group."""
    return sorted(f"{k}:{v}" for k, v in tags.items())


def _wanted(state: State, docs: dict, thing_role):
    """(certificates {id: _Want}, things {name: [tags]}, revoked things, notes)."""
    certs, things, revoked_things, notes = {}, {}, set(), []
    with Registry(state.registry_path) as reg:
        devices = reg.list()
        history = {}
        for c in reg.certificates():
            history.setdefault(c.thing, []).append(c)
        principals = reg.principals()
        tags = reg.tags()
    for d in devices:
        if d.status == "active":
            things[d.thing] = _tags(tags.get(d.thing, {}))
        else:
            revoked_things.add(d.thing)
        folder = state.device_dir(d.thing)
        for c in history.get(d.thing, []):
            live = c.status in ("active", "pending") and d.status == "active"
            path = folder / ("cert.der" if c.status == "active" else "pending/cert.der")
            certs[c.fingerprint] = _Want(c.fingerprint, "ACTIVE" if live else "REVOKED", d.thing,
                                         thing_role or d.role, d.thing, path if live else None)
    for p in principals:
        if p.role not in docs:
            continue      # admin: mosquitto's guard only, nothing to do in AWS
        role, name = parse_principal(p.cn)
        for c in history.get(p.cn, []):
            live = c.status == "active" and p.status == "active"
            path = pki.principal_paths(state, role, name)[0] if live else None
            certs[c.fingerprint] = _Want(c.fingerprint, "ACTIVE" if live else "REVOKED", p.cn, p.role, None, path)
    return certs, things, revoked_things, notes


def _pem(want: _Want):
    """The certificate's PEM if its file holds exactly the registry's certificate, else None."""
    try:
        cert = pki.load_cert(want.pem_path.read_bytes())
    except (OSError, ValueError, AttributeError):
        return None
    return pki.cert_pem(cert).decode() if pki.fingerprint(cert) == want.cert_id else None


# -- what AWS holds -----------------------------------------------------------------------------------
@dataclass
class Current:
    policies: dict            # warden policy name -> (document, default version id)
    targets: dict             # warden policy name -> set of attached ARNs
    certs: dict               # certificate id -> (arn, status)
    things: dict              # warden thing -> set of attached principal ARNs
    foreign_things: set       # things of the same names that are not Warden's
    groups: dict              # warden group -> set of thing names


def read(aws: Aws, project: AwsProject, app: str, thing_names) -> Current:
    """Everything plan() compares, read from AWS (only list/get calls)."""
    prefix = f"warden-{app}-"
    policies, targets = {}, {}
    for p in aws.pages("list_policies", "policies", pageSize=250):
        name = p["policyName"]
        if name.startswith(prefix):
            got = aws.call("get_policy", policyName=name)
            policies[name] = (json.loads(got["policyDocument"]), got.get("defaultVersionId"))
            targets[name] = set(aws.pages("list_targets_for_policy", "targets", policyName=name, pageSize=250))
    certs = {c["certificateId"]: (c["certificateArn"], c["status"])
             for c in aws.pages("list_certificates", "certificates", pageSize=250)}
    things, foreign = {}, set()
    wanted = set(thing_names)
    for t in aws.pages("list_things", "things", maxResults=250):
        name = t["thingName"]
        if (t.get("attributes") or {}).get(ATTR) == app:
            things[name] = None
        elif name in wanted:
            foreign.add(name)
    for name in things:
        things[name] = set(aws.pages("list_thing_principals", "principals", thingName=name, maxResults=100))
    groups = {}
    for g in aws.pages("list_thing_groups", "thingGroups", namePrefixFilter=prefix, maxResults=250):
        name = g["groupName"]
        groups[name] = set(aws.pages("list_things_in_thing_group", "things", thingGroupName=name,
                                     maxResults=250))
    return Current(policies, targets, certs, things, foreign, groups)


# -- the plan ------------------------------------------------------------------------------------------
def plan(state: State, project: AwsProject, aws: Aws, *, delete: bool = False) -> Plan:
    from ..policy import aws as awspolicy
    from ..policy.model import load_policy

    app = state.app
    policy = load_policy(state)
    docs = awspolicy.render_aws(policy, app, project.region, project.account)
    thing_role = policy.thing_role.name if policy.thing_role is not None else None
    want_certs, want_things, revoked_things, notes = _wanted(state, docs, thing_role)
    before = sum(aws.calls.values())
    cur = read(aws, project, app, set(want_things) | revoked_things)
    out = Plan(notes=notes)
    out.reads = sum(aws.calls.values()) - before
    if cur.foreign_things:
        names = sorted(cur.foreign_things)
        raise AwsConflict(f"{len(names)} thing name(s) are already used in this AWS account by things that are "
                          f"not Warden's: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}",
                          hint=f"delete or rename them in AWS, or give them the attribute {ATTR}={app} to let "
                               "warden manage them; then run `warden aws sync` again")
    ca_pem = None
    if project.mode == "ca":
        ca_pem = pki.cert_pem(pki.load_ca(state)[0]).decode()

    def add(verb, kind, name, detail, *calls, held=False):
        step = Step(verb, kind, name, detail, list(calls))
        (out.held if held and not delete else out.steps).append(step)

    # policies, one per role
    for role, doc in docs.items():
        name = policy_name(app, role)
        if name not in cur.policies:
            add("create", "policy", name, f"the {role} role's rendering",
                ("create_policy", {"policyName": name, "policyDocument": json.dumps(doc)}))
        elif cur.policies[name][0] != doc:
            add("update", "policy", name, "a new default version: the current rendering of the policy file",
                ("_update_policy", {"policyName": name, "policyDocument": json.dumps(doc)}))
    for name in sorted(set(cur.policies) - {policy_name(app, r) for r in docs}):
        add("delete", "policy", name, "its role is no longer in the policy file",
            *[("detach_policy", {"policyName": name, "target": t}) for t in sorted(cur.targets.get(name, ()))],
            ("_delete_policy", {"policyName": name}), held=True)

    # certificates
    live_arns = set()
    for cid, w in sorted(want_certs.items(), key=lambda kv: (kv[1].owner, kv[0])):
        arn, status = cur.certs.get(cid, (cert_arn(project, cid), None))
        pname = policy_name(app, w.role)
        if w.status == "ACTIVE":
            live_arns.add(arn)
            if status is None:
                pem = _pem(w)
                if pem is None:
                    out.notes.append(f"certificate {cid[:12]}... of {w.owner}: its file {w.pem_path} is missing "
                                     "or is not the registry's: not registered")
                    continue
                call = ("register_certificate", {"certificatePem": pem, "caCertificatePem": ca_pem,
                                                 "status": "ACTIVE"}) if ca_pem else \
                    ("register_certificate_without_ca", {"certificatePem": pem, "status": "ACTIVE"})
                add("create", "certificate", cid[:12], f"{w.owner}'s, registered ACTIVE", call)
            elif status == "REVOKED":
                out.notes.append(f"certificate {cid[:12]}... of {w.owner} is REVOKED in AWS (AWS cannot re-activate "
                                 f"it): give {w.owner} a new one (warden device rotate / warden principal rotate)")
                continue
            elif status != "ACTIVE":
                add("update", "certificate", cid[:12], f"{w.owner}'s, {status} -> ACTIVE",
                    ("update_certificate", {"certificateId": cid, "newStatus": "ACTIVE"}))
            if arn not in cur.targets.get(pname, ()):
                add("create", "attachment", f"{pname} -> {cid[:12]}", f"{w.owner}'s certificate gets the {w.role} policy",
                    ("attach_policy", {"policyName": pname, "target": arn}))
        elif status is not None:
            if status != "REVOKED":
                add("update", "certificate", cid[:12], f"{w.owner}'s, revoked here: {status} -> REVOKED",
                    ("update_certificate", {"certificateId": cid, "newStatus": "REVOKED"}))
            for name, attached in sorted(cur.targets.items()):
                if arn in attached:
                    add("delete", "attachment", f"{name} -> {cid[:12]}", "a revoked certificate loses its policy",
                        ("detach_policy", {"policyName": name, "target": arn}))
            if w.thing and arn in (cur.things.get(w.thing) or ()):
                add("delete", "attachment", f"{w.thing} -> {cid[:12]}", "a revoked certificate leaves its thing",
                    ("detach_thing_principal", {"thingName": w.thing, "principal": arn}))

    # things and what is attached to them
    thing_certs = {}
    for cid, w in want_certs.items():
        if w.thing and w.status == "ACTIVE" and cur.certs.get(cid, (None, None))[1] != "REVOKED":
            thing_certs.setdefault(w.thing, []).append(cur.certs.get(cid, (cert_arn(project, cid),))[0])
    for thing in sorted(want_things):
        attached = cur.things.get(thing)
        if attached is None:
            add("create", "thing", thing, f"attribute {ATTR}={app}",
                ("create_thing", {"thingName": thing, "attributePayload": {"attributes": {ATTR: app}}}))
            attached = set()
        for arn in sorted(thing_certs.get(thing, [])):
            if arn not in attached:
                add("create", "attachment", f"{thing} -> {arn.rsplit('/', 1)[1][:12]}", "its certificate",
                    ("attach_thing_principal", {"thingName": thing, "principal": arn}))
        revoked_here = {cert_arn(project, c) for c, w in want_certs.items() if w.thing == thing}
        for arn in sorted(attached - set(thing_certs.get(thing, [])) - revoked_here):
            add("delete", "attachment", f"{thing} -> {arn.rsplit('/', 1)[-1][:12]}",
                "a principal Warden did not attach", ("detach_thing_principal", {"thingName": thing, "principal": arn}),
                held=True)
    for thing in sorted(set(cur.things) - set(want_things)):
        why = "its device is revoked" if thing in revoked_things else "no such device in the registry"
        add("delete", "thing", thing, why,
            *[("detach_thing_principal", {"thingName": thing, "principal": a}) for a in sorted(cur.things[thing])],
            ("delete_thing", {"thingName": thing}), held=True)

    # thing groups from tags
    members = {}
    for thing, tags in want_things.items():
        for tag in tags:
            g = group_name(app, tag)
            if not _GROUP_RE.fullmatch(g):
                out.notes.append(f"tag {tag.replace(':', '=', 1)!r} of {thing} cannot name an AWS thing group (letters, digits, ':_-'): "
                                 f"{thing} joins no group for it")
                continue
            members.setdefault(g, set()).add(thing)
    for g in sorted(members):
        if g not in cur.groups:
            add("create", "group", g, "from the devices' tags", ("create_thing_group", {"thingGroupName": g}))
        for thing in sorted(members[g] - cur.groups.get(g, set())):
            add("create", "attachment", f"{g} <- {thing}", "a tagged device joins its group",
                ("add_thing_to_thing_group", {"thingGroupName": g, "thingName": thing}))
        for thing in sorted(cur.groups.get(g, set()) - members[g]):
            add("delete", "attachment", f"{g} <- {thing}", "the device no longer has the tag",
                ("remove_thing_from_thing_group", {"thingGroupName": g, "thingName": thing}), held=True)
    for g in sorted(set(cur.groups) - set(members)):
        add("delete", "group", g, "no device has its tag", ("delete_thing_group", {"thingGroupName": g}), held=True)
    order = {"policy": 0, "certificate": 1, "thing": 2, "group": 3, "attachment": 4}
    out.steps.sort(key=lambda s: (s.verb == "delete", order[s.kind] if s.verb != "delete" else -order[s.kind]))
    return out


# -- applying it ---------------------------------------------------------------------------------------
MAX_POLICY_VERSIONS = 5     # AWS IoT keeps at most five versions of a policy


def _run(aws: Aws, op: str, params: dict):
    if op == "_update_policy":
        versions = aws.pages("list_policy_versions", "policyVersions", policyName=params["policyName"])
        old = sorted((v for v in versions if not v.get("isDefaultVersion")), key=lambda v: int(v["versionId"]))
        while len(old) >= MAX_POLICY_VERSIONS - 1 and old:
            aws.call("delete_policy_version", policyName=params["policyName"], policyVersionId=old.pop(0)["versionId"])
        return aws.call("create_policy_version", setAsDefault=True, **params)
    if op == "_delete_policy":
        for v in aws.pages("list_policy_versions", "policyVersions", policyName=params["policyName"]):
            if not v.get("isDefaultVersion"):
                aws.call("delete_policy_version", policyName=params["policyName"], policyVersionId=v["versionId"])
        return aws.call("delete_policy", **params)
    return aws.call(op, **params)


def apply(plan_: Plan, aws: Aws, progress=None) -> int:
    """Run every step of the plan in order; the number of steps done. A failure raises (what is
    done stays done; the next sync plans the rest)."""
    done = 0
    for step in plan_.steps:
        for op, params in step.calls:
            try:
                _run(aws, op, params)
            except AwsConflict as e:
                if op == "register_certificate" or op == "register_certificate_without_ca":
                    continue     # registered meanwhile (another sync): the next plan checks its status
                raise AwsError(f"{step}: {e}", hint=e.hint, code=e.code) from None
        done += 1
        if progress:
            progress(step)
    return done
