"""`warden aws audit`: the registry compared with AWS IoT, as `warden audit` findings.

It only reads (the same list/get calls as a sync's plan, plus one GetPolicy and
ListTargetsForPolicy per policy of the account that is not Warden's) and returns a
`warden.fleet.audit.Report`; each finding says what fixes it. Checks, by id (severity):

aws-revoked-active (critical)   a certificate revoked in the registry (and the CRL) is ACTIVE in AWS:
                                AWS still lets it connect
aws-policy-by-hand (high)       a policy Warden did not make is attached to a fleet certificate;
                                its statements are judged as `warden audit` judges documents
                                (aws-action-star, aws-resource-star, aws-connect-unpinned)
aws-policy-drift (high)         a Warden policy differs from the rendering of the policy file
aws-thing-without-cert (high)   a Warden thing with no ACTIVE certificate attached: its device cannot
                                connect (or it is left over)
aws-not-synced (medium)         the registry holds what AWS lacks (a device, a certificate, a
                                policy, an attachment): `warden aws sync` adds it
"""
from __future__ import annotations

import json

from ..fleet import audit as fleetaudit
from ..state import State
from .client import Aws, AwsNotFound
from .project import AwsProject
from .sync import ATTR, plan, policy_name, read

SYNC_FIX = "warden aws sync (--dry-run first shows what it changes)"


def audit(state: State, project: AwsProject, aws: Aws) -> fleetaudit.Report:
    from ..policy import aws as awspolicy
    from ..policy.model import load_policy

    report = fleetaudit.Report()
    app = state.app
    policy = load_policy(state)
    docs = awspolicy.render_aws(policy, app, project.region, project.account)
    from ..fleet.registry import Registry

    with Registry(state.registry_path) as reg:
        history = reg.certificates()
        devices = {d.thing: d for d in reg.list()}
    ours = {c.fingerprint: c for c in history}
    cur = read(aws, project, app, set(devices))
    report.facts.append(("AWS things (Warden's)", len(cur.things)))
    report.facts.append(("AWS certificates (the fleet's)", sum(1 for c in cur.certs if c in ours)))

    for cid, (arn, status) in sorted(cur.certs.items()):
        c = ours.get(cid)
        if c is not None and c.status == "revoked" and status == "ACTIVE":
            report.add("aws-revoked-active", "critical", f"certificate {cid[:12]}... ({c.thing})",
                       "revoked in the registry and the CRL, but ACTIVE in AWS IoT: it can still connect there",
                       SYNC_FIX)
    arn_to_id = {arn: cid for cid, (arn, _s) in cur.certs.items()}

    for role, doc in docs.items():
        name = policy_name(app, role)
        if name not in cur.policies:
            report.add("aws-not-synced", "medium", f"policy {name}", "missing in AWS", SYNC_FIX)
        elif cur.policies[name][0] != doc:
            report.add("aws-policy-drift", "high", f"policy {name}",
                       "its default version differs from the rendering of the policy file", SYNC_FIX)

    for thing, principals in sorted(cur.things.items()):
        live = [a for a in principals if cur.certs.get(arn_to_id.get(a), (None, None))[1] == "ACTIVE"]
        if not live:
            d = devices.get(thing)
            why = "its device is revoked" if d is not None and d.status == "revoked" else \
                "no such device in the registry" if d is None else "its device cannot connect"
            fix = "warden aws sync --delete removes it" if d is None or d.status == "revoked" else SYNC_FIX
            report.add("aws-thing-without-cert", "high", f"thing {thing}",
                       f"no ACTIVE certificate is attached ({why})", fix)
    for thing, d in sorted(devices.items()):
        if d.status == "active" and thing not in cur.things:
            report.add("aws-not-synced", "medium", f"device {thing}", "no thing in AWS IoT", SYNC_FIX)

    # policies attached by hand to the fleet's certificates
    ours_arns = {arn for cid, (arn, _s) in cur.certs.items() if cid in ours}
    for p in aws.pages("list_policies", "policies", pageSize=250):
        name = p["policyName"]
        if name in cur.policies:
            continue
        targets = set(aws.pages("list_targets_for_policy", "targets", policyName=name, pageSize=250)) & ours_arns
        if not targets:
            continue
        owners = sorted({ours[arn_to_id[a]].thing for a in targets})
        subject = f"AWS policy {name}"
        report.add("aws-policy-by-hand", "high", subject,
                   f"not Warden's, attached to the fleet's certificates of {', '.join(owners[:5])}"
                   f"{' ...' if len(owners) > 5 else ''}: it adds to what the policy file allows",
                   f"detach it (aws iot detach-policy --policy-name {name} --target ARN) and put what it "
                   "grants into the policy file")
        try:
            doc = json.loads(aws.call("get_policy", policyName=name)["policyDocument"])
            fleetaudit.judge_aws_document(report, subject, list(awspolicy._statements(doc)))
        except (ValueError, awspolicy.AwsPolicyError) as e:
            report.add("aws-invalid", "high", subject, f"cannot judge it: {e}", "detach it")
        except AwsNotFound:
            continue

    # anything else a sync would add
    pending = plan(state, project, aws)
    for step in pending.steps:
        if step.verb == "create" and step.kind in ("certificate", "attachment", "group"):
            report.add("aws-not-synced", "medium", f"{step.kind} {step.name}", step.detail, SYNC_FIX)
    for note in pending.notes:
        report.skipped.append(("AWS", note))
    report.facts.append(("AWS attribute marking Warden's things", f"{ATTR}={app}"))
    return report
