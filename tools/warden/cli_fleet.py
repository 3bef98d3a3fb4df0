"""CLI for least privilege: `warden policy render|check`, `warden device revoke|rotate`,
`warden principal add|list|revoke|rotate`, `warden broker config|sync|list`, `warden audit`.

A thin layer over warden.policy (model, aws, proof), warden.fleet.devices,
warden.fleet.principals, warden.broker.control and warden.fleet.audit.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .cli import broker, console, device, fail, main, pass_state


def report_brokers(report, what: str):
    """Print each broker's outcome; exit 1 if any broker could not be reached."""
    if report.outcomes:
        console.print("brokers (as admin.default, over each broker's TLS listener):", style="dim")
    for line in report.lines():
        console.print("  " + line, style="red" if "NOT APPLIED" in line else None)
    if report.failed:
        names = ", ".join(o.name for o in report.failed)
        fail(f"{what} is not applied on {len(report.failed)} broker(s): {names}",
             "it stays pending (a high finding of `warden audit`); when the broker is reachable, "
             "run `warden broker sync` (or `warden broker forget NAME` for a broker that is gone)")


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
    from .policy import aws as awspolicy, proof as policyproof
    from .policy.model import PolicyError, load_policy
    from .policy.mosquitto import render_mosquitto_acl
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

    from .policy import proof as policyproof
    from .policy.model import load_policy

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


# -- device revoke / rotate ----------------------------------------------------------------------
@device.command("revoke")
@click.argument("thing")
@click.option("--reason", default=None, help="Why (kept in the registry; 'compromised' etc. set the CRL reason).")
@pass_state
def device_revoke(state, thing, reason):
    """Revoke THING: registry, CRL, broker reload; cut off if connected."""
    from .fleet.devices import revoke_device

    r = revoke_device(state, thing, reason)
    console.print(f"[bold red]Device {thing} revoked[/]" + (f" ({reason})" if reason else ""))
    console.print(f"certificates in the CRL: {', '.join(r.serials)}")
    report_brokers(r.brokers, f"the revocation of {thing}")


@device.command("rotate")
@click.argument("thing")
@click.option("--finish", is_flag=True, help="The device has its pending identity: activate it, revoke the old one.")
@pass_state
def device_rotate(state, thing, finish):
    """Give THING a new key and certificate; revoke the old one once the device has it."""
    from .fleet.devices import finish_rotation, rotate_device

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
        report_brokers(r.revocation.brokers, f"the revocation of {thing}'s old certificate")


# -- principals ----------------------------------------------------------------------------------
@main.group()
def principal():
    """People and scripts: one certificate each, revocable (operator, technician, admin)."""


@principal.command("add")
@click.argument("name")
@click.option("--role", required=True, help="operator, technician (roles of the policy) or admin (brokers).")
@click.option("--days", type=click.IntRange(1, 825), default=365, show_default=True, help="Certificate lifetime.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write cert.pem, key.pem and ca.pem here, for other MQTT clients.")
@pass_state
def principal_add(state, name, role, days, out):
    """Give NAME a certificate as ROLE (CN ROLE.NAME) and the role's rights on every broker."""
    from .broker import control as brokerctl
    from .fleet import principals

    p = principals.add_principal(state, name, role, days=days, out=out)
    console.print(f"[bold green]principal {p.cn} added[/] (role {p.role}, certificate until {p.not_after})")
    if out:
        console.print(f"cert.pem, key.pem, ca.pem written to {out} (the key is a secret)")
    report_brokers(brokerctl.sync(state), f"the ACL with {p.cn}")


@principal.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def principal_list(state, as_json):
    """Every principal: role, status, certificate fingerprint and expiry."""
    from rich.table import Table

    from .fleet import principals

    rows = principals.list_principals(state)
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in rows], indent=2))
        return
    if not rows:
        console.print("no principals yet: run `warden pki init`")
        return
    table = Table("principal", "role", "status", "fingerprint", "expires", "in policy", box=None, pad_edge=False)
    for p in rows:
        style = "green" if p.status == "active" else "red"
        table.add_row(p.cn, p.role, f"[{style}]{p.status}[/]", (p.fingerprint or "-")[:16],
                      (p.not_after or "-")[:10], "yes" if p.in_policy else "no")
    console.print(table)


def _cn(state, name):
    """ROLE.NAME as given, or NAME when exactly one principal has that name."""
    from .fleet import principals
    from .fleet.registry import Registry

    if "." not in name:
        with Registry(state.registry_path) as reg:
            matches = [p.cn for p in reg.principals() if p.cn.split(".", 1)[1] == name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            fail(f"{len(matches)} principals are named {name!r}: {', '.join(matches)}", "give ROLE.NAME")
    try:
        return principals.resolve(name)
    except principals.PrincipalError:
        fail(f"no principal named {name!r}", "see `warden principal list`; give ROLE.NAME")


@principal.command("revoke")
@click.argument("name")
@click.option("--reason", default=None, help="Why (kept in the registry; 'stolen', 'left' ... set the CRL reason).")
@pass_state
def principal_revoke(state, name, reason):
    """Revoke principal NAME (ROLE.NAME): CRL, out of the policy, its sessions closed on every broker."""
    from .broker import control as brokerctl
    from .fleet import principals

    cn = _cn(state, name)
    serials = principals.revoke_principal(state, cn, reason)
    console.print(f"[bold red]principal {cn} revoked[/]" + (f" ({reason})" if reason else ""))
    console.print(f"certificates in the CRL: {', '.join(serials)}")
    report_brokers(brokerctl.sync(state, kick=[cn]), f"the revocation of {cn}")


@principal.command("rotate")
@click.argument("name")
@click.option("--days", type=click.IntRange(1, 825), default=365, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write the new cert.pem, key.pem and ca.pem here.")
@pass_state
def principal_rotate(state, name, days, out):
    """A new certificate for NAME; the old one is revoked and its sessions closed."""
    from .broker import control as brokerctl
    from .fleet import principals

    cn = _cn(state, name)
    old = principals.rotate_principal(state, cn, days=days, out=out)
    console.print(f"[bold green]{cn} rotated[/]; revoked: {', '.join(old) or '-'}")
    report_brokers(brokerctl.sync(state, kick=[cn]), f"the revocation of {cn}'s old certificate")


# -- brokers anywhere ----------------------------------------------------------------------------
@broker.command("config")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--listen", required=True, help="ADDR:PORT the broker listens on, e.g. 0.0.0.0:8883.")
@click.option("--name", "names", multiple=True,
              help="A host name or address clients use to reach it (repeat); its certificate names them all.")
@click.option("--id", "broker_id", default=None, help="Its name in `warden broker list` (default: first name:port).")
@click.option("--install-dir", type=click.Path(path_type=Path), default=None,
              help="Where the folder will live on the broker's host (default: OUT_DIR as it is here).")
@pass_state
def broker_config(state, out_dir, listen, names, broker_id, install_dir):
    """Write a self-contained broker config folder for a LAN or server host (run it with
    `mosquitto -c OUT_DIR/mosquitto.conf`, or under systemd with the unit file beside it)."""
    from .broker import control as brokerctl

    r = brokerctl.write_broker_config(state, out_dir, listen, names, name=broker_id, install_dir=install_dir)
    console.print(f"[bold green]broker {r.name}[/] written to {r.folder}: listens on {r.listen}, "
                  f"certificate for {', '.join(r.names)}")
    console.print(f"run it:  mosquitto -c {r.conf}")
    console.print(f"systemd: {r.unit} (install steps inside)")
    console.print(f"devices and tools reach it as {r.names[0]}:{r.listen.rsplit(':', 1)[1]}; "
                  "revocations reach it over that listener")


@broker.command("sync")
@click.option("--only", default=None, help="Only this broker (a name from `warden broker list`).")
@pass_state
def broker_sync(state, only):
    """Bring every broker up to date: CRL (renewed if it is close to lapsing), ACL and bans."""
    from .broker import control as brokerctl

    report_brokers(brokerctl.sync(state, only=only), "the fleet's revocations and ACL")
    console.print("brokers in sync", style="green")


@broker.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def broker_list(state, as_json):
    """The brokers warden configured, and whether the last revocation reached each."""
    from .fleet.registry import Registry

    with Registry(state.registry_path) as reg:
        rows = reg.brokers()
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    if not rows:
        console.print("no brokers yet: `warden broker run` (local) or `warden broker config` (another host)")
    for r in rows:
        state_text = f"[red]pending: {r.pending}[/]" if r.pending else f"applied {r.applied or '-'}"
        console.print(f"[bold]{r.name}[/]  {r.host}:{r.port}  {r.folder}  {state_text}")


@broker.command("forget")
@click.argument("name")
@pass_state
def broker_forget(state, name):
    """Stop tracking broker NAME (it was shut down for good)."""
    from .fleet.registry import Registry

    with Registry(state.registry_path) as reg:
        if not reg.forget_broker(name):
            fail(f"no broker named {name!r}", "see `warden broker list`")
    console.print(f"broker {name} forgotten")


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
    from .fleet import audit as lib

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
