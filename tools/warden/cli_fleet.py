"""CLI for least privilege: `warden policy render|check`, `warden device revoke|rotate`, `warden audit`.

A thin layer over warden.policy / awspolicy / policyproof, warden.devices and warden.audit.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .cli import console, device, fail, main, pass_state


# -- policy --------------------------------------------------------------------------------------
@main.group()
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
              help="mosquitto: a file; aws: a folder receiving <role>.json. Default: print.")
@_aws_options
@pass_state
def policy_render(state, fmt, out, region, account):
    """Render the policy. The AWS documents are proved equal to the ACL first (policy check)."""
    from . import awspolicy, policyproof
    from .policy import PolicyError, load_policy, render_mosquitto_acl
    from .state import write_file

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
                          hint="see the README, 'Least privilege': AWS '*' spans levels, so a '+' level cannot be "
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

    from . import policyproof
    from .policy import load_policy

    pol = load_policy(state)
    t0 = time.monotonic()
    bad = policyproof.prove_policy(pol, state.app, region, account)
    ms = (time.monotonic() - t0) * 1000
    if bad:
        for m in bad:
            console.print(f"[red]differs[/] {m}")
        fail(f"{len(bad)} disagreement(s) between the renderings",
             "change the policy (the README, 'Least privilege', explains which rules AWS cannot express)")
    console.print(f"[green]proved[/]: for every principal of the policy and every topic AWS IoT accepts "
                  f"(<= 256 bytes, <= 7 slashes), publish and subscribe get the same answer from the "
                  f"mosquitto ACL and the AWS documents ({ms:.0f} ms)")


# -- device revoke / rotate ----------------------------------------------------------------------
@device.command("revoke")
@click.argument("thing")
@click.option("--reason", default=None, help="Why (kept in the registry; 'compromised' etc. set the CRL reason).")
@pass_state
def device_revoke(state, thing, reason):
    """Revoke THING: registry, CRL, broker reload; cut off if connected."""
    from .devices import revoke_device

    r = revoke_device(state, thing, reason)
    console.print(f"[bold red]Device {thing} revoked[/]" + (f" ({reason})" if reason else ""))
    console.print(f"certificates in the CRL: {', '.join(r.serials)}")
    console.print(r.summary())


@device.command("rotate")
@click.argument("thing")
@click.option("--finish", is_flag=True, help="The device has its pending identity: activate it, revoke the old one.")
@pass_state
def device_rotate(state, thing, finish):
    """Give THING a new key and certificate; revoke the old one once the device has it."""
    from .devices import finish_rotation, rotate_device

    r = finish_rotation(state, thing) if finish else rotate_device(state, thing)
    if r.pending:
        folder = state.device_dir(thing) / "pending"
        console.print(f"[yellow]new identity for {thing} waiting in {folder}[/]")
        console.print(f"deploy it to the board, then run: warden device rotate {thing} --finish")
        return
    console.print(f"[bold green]{thing} rotated[/]: certificate {r.new_serial} active"
                  + (f" ({r.delivered})" if r.delivered else ""))
    if r.old_serials:
        console.print(f"revoked: {', '.join(r.old_serials)}")
    if r.revocation is not None:
        console.print(r.revocation.summary())


# -- audit ---------------------------------------------------------------------------------------
_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--fail-on", type=click.Choice(["info", "low", "medium", "high", "critical"]), default="low",
              show_default=True, help="Exit 1 if a finding is at or above this severity.")
@click.option("--days", type=click.IntRange(0), default=30, show_default=True,
              help="Report certificates (and the CRL) expiring within N days.")
@pass_state
def audit(state, as_json, fail_on, days):
    """Check the fleet for drift from least privilege; every finding says how to fix it."""
    from . import audit as lib

    report = lib.audit(state, days=days)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        if not report.findings:
            console.print("[bold green]no findings[/]")
        else:
            for f in report.sorted():
                console.print(f"[{_STYLE[f.severity]}]{f.severity.upper():8}[/] [bold]{f.check}[/]  {f.subject}")
                console.print(f"         {f.message}")
                console.print(f"         fix: {f.fix}", style="green")
            counts = {}
            for f in report.findings:
                counts[f.severity] = counts.get(f.severity, 0) + 1
            console.print(f"{len(report.findings)} finding(s): " + ", ".join(
                f"{counts[s]} {s}" for s in ("critical", "high", "medium", "low", "info") if s in counts))
        for what, why in report.skipped:
            console.print(f"not checked: {what} ({why})", style="dim")
    code = report.exit_code(fail_on)
    if code:
        raise click.exceptions.Exit(code)
