"""`warden aws setup|sync|audit`: the fleet on AWS IoT Core (docs/aws.md).

A thin layer over warden.aws: it parses options and prints; the library decides and talks to AWS.
"""
from __future__ import annotations

import json

import click

from .common import WardenGroup, console, pass_state


@click.group(cls=WardenGroup)
def aws():
    """AWS IoT Core as the fleet's broker: setup, sync, audit."""


@aws.command("setup")
@click.option("--region", required=True, help="AWS region, e.g. eu-west-1.")
@click.option("--profile", default=None, help="AWS credentials profile (default: the default chain).")
@click.option("--without-ca", is_flag=True,
              help="Register each certificate without the fleet CA (multi-account registration).")
@click.option("--endpoint-url", default=None,
              help="Another AWS API endpoint (a stand-in such as moto); recorded for the other commands.")
@pass_state
def setup_cmd(state, region, profile, without_ca, endpoint_url):
    """Find the ATS endpoint and register the fleet CA (or choose multi-account registration)."""
    from ..aws import setup as lib

    _project, lines = lib.setup(state, region, profile, without_ca=without_ca, endpoint_url=endpoint_url)
    for line in lines:
        console.print(line)
    console.print("next: warden aws sync --dry-run, then warden aws sync", style="dim")


@aws.command("sync")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--delete", is_flag=True,
              help="Also delete what the registry no longer has (things, hand-attached principals, policies, groups).")
@pass_state
def sync_cmd(state, dry_run, delete):
    """Make AWS IoT match the registry: things, certificates, policies, groups, revocations."""
    import time

    from ..aws import project, sync as lib

    proj = project.load(state)
    client = proj.client()
    t0 = time.monotonic()
    plan = lib.plan(state, proj, client, delete=delete)
    for note in plan.notes:
        console.print(f"note: {note}", style="yellow")
    if plan.empty:
        held = f", {len(plan.held)} deletion(s) held back" if plan.held else ""
        console.print(f"[green]in sync[/]: nothing to change ({plan.reads} reads{held})")
    for step in plan.steps:
        console.print(("would " if dry_run else "") + str(step))
    if plan.held:
        console.print(f"{len(plan.held)} deletion(s) held back (pass --delete to make them):", style="yellow")
        for step in plan.held:
            console.print("  " + str(step), style="yellow")
    if dry_run or plan.empty:
        return
    done = lib.apply(plan, client)
    c = plan.counts()
    console.print(f"[green]synced[/]: {done} step(s) ({c['create']} create, {c['update']} update, "
                  f"{c['delete']} delete), {sum(client.calls.values())} AWS calls, "
                  f"{time.monotonic() - t0:.1f} s")


_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


@aws.command("audit")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON (warden audit's format).")
@click.option("--fail-on", type=click.Choice(["info", "low", "medium", "high", "critical"]), default="low",
              show_default=True, help="Exit 1 if a finding is at or above this severity.")
@pass_state
def audit_cmd(state, as_json, fail_on):
    """Compare the registry with AWS IoT; findings in `warden audit`'s format."""
    from ..aws import audit as lib, project

    proj = project.load(state)
    report = lib.audit(state, proj, proj.client())
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for f in report.sorted():
            console.print(f"[{_STYLE[f.severity]}]{f.severity.upper():8}[/] [bold]{f.check}[/]  {f.subject}")
            console.print(f"         {f.message}")
            console.print(f"         fix: {f.fix}", style="green")
        console.print(f"{len(report.findings)} finding(s)" if report.findings else "[bold green]no findings[/]")
        for what, why in report.skipped:
            console.print(f"not checked: {what} ({why})", style="dim")
    code = report.exit_code(fail_on)
    if code:
        raise click.exceptions.Exit(code)
