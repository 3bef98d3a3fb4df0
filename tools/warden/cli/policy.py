"""`warden policy render|check`: the fleet policy rendered for mosquitto and AWS IoT, and proved.

A thin layer over warden.policy (model, mosquitto, aws, proof): it must not render or judge a
policy itself.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .common import WardenGroup, console, fail, pass_state


# -- policy --------------------------------------------------------------------------------------
@click.group(cls=WardenGroup)
def policy():
    """The fleet policy: roles rendered for mosquitto and AWS IoT."""


def _aws_options(f):
    f = click.option("--account", default=lambda: os.environ.get("AWS_ACCOUNT_ID", "123456789012"),
                     show_default="$AWS_ACCOUNT_ID or 123456789012",
                     help="AWS account id in the ARNs.")(f)
    f = click.option("--region", default=lambda: os.environ.get("AWS_REGION", "us-east-1"),
                     show_default="$AWS_REGION or us-east-1", help="AWS region in the ARNs.")(f)
    return f


@policy.command("render")
@click.option("--format", "fmt", type=click.Choice(["mosquitto", "aws"]), required=True,
              help="mosquitto: the broker ACL; aws: one AWS IoT policy document per role.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="mosquitto: a file; aws: a folder receiving <role>.json (--defender: a file). Default: print.")
@click.option("--defender", is_flag=True,
              help="aws: the monitor's rules (rules.json) as a Device Defender security profile instead.")
@_aws_options
@pass_state
def policy_render(state, fmt, out, defender, region, account):
    """Render the policy. The AWS documents are proved equal to the ACL first (policy check)."""
    from ..policy import aws as awspolicy, proof as policyproof
    from ..policy.model import PolicyError, load_policy
    from ..policy.mosquitto import render_mosquitto_acl
    from ..state import write_file

    if defender:
        if fmt != "aws":
            fail("--defender renders for AWS IoT", "add --format aws")
        from ..monitor.rules import load_rules

        profile, skipped = awspolicy.render_defender(load_rules(state), state.app)
        for name, why in skipped:
            click.echo(f"note: rule {name!r} has no Device Defender behavior: {why}", err=True)
        text = json.dumps(profile, indent=2) + "\n"
        if out is None:
            click.echo(text, nl=False)
        else:
            write_file(out, text)
            console.print(f"security profile written to {out}")
        return
    pol = load_policy(state)
    if fmt == "mosquitto":
        text = render_mosquitto_acl(state.app, pol)
        if out is None:
            click.echo(text, nl=False)
        else:
            write_file(out, text)
            console.print(f"mosquitto ACL written to {out}")
        return
    docs = awspolicy.render_aws(pol, state.app, region, account)
    bad = policyproof.prove(pol, state.app, render_mosquitto_acl(state.app, pol), docs, region, account)
    if bad:
        raise PolicyError("the AWS documents cannot give the same answers as the mosquitto ACL:\n  "
                          + "\n  ".join(str(m) for m in bad),
                          hint="see docs/security.md, 'Two renderings, one policy, proved equal': AWS '*' spans levels, so a '+' level cannot be "
                               "followed by '#', and overlapping rules must not cut into each other")
    if out is None:
        click.echo(awspolicy.dumps(docs), nl=False)
        return
    for role, doc in docs.items():
        path = write_file(Path(out) / f"{role}.json", json.dumps(doc, indent=2) + "\n")
        console.print(f"{role}: {path}")


@policy.command("check")
@_aws_options
@pass_state
def policy_check(state, region, account):
    """Prove the mosquitto ACL and the AWS documents allow exactly the same topics."""
    import time

    from ..policy import proof as policyproof
    from ..policy.model import load_policy

    pol = load_policy(state)
    t0 = time.monotonic()
    bad = policyproof.prove_policy(pol, state.app, region, account)
    ms = (time.monotonic() - t0) * 1000
    if bad:
        for m in bad:
            console.print(f"[red]differs[/] {m}")
        fail(f"{len(bad)} disagreement(s) between the renderings",
             "change the policy (docs/security.md, 'Two renderings, one policy, proved equal', explains which rules AWS cannot express)")
    console.print(f"[green]proved[/]: for every principal of the policy and every topic AWS IoT accepts "
                  f"(<= 256 bytes, <= 7 slashes), publish, retained publish and subscribe get the same answer from the "
                  f"mosquitto ACL and the AWS documents ({ms:.0f} ms)")
