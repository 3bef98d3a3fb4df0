"""`warden pki`, `warden device`, `warden principal` and `warden audit`: the fleet's identities.

A thin layer over warden.fleet (pki, devices, principals, registry, audit) and, for the changes
brokers must hear about, warden.broker.control. Only option parsing and printing: a command
here must not decide anything a library function could.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from .common import WardenGroup, console, fail, pass_state, print_table, report_brokers


# -- pki -----------------------------------------------------------------------------------------
@click.group(cls=WardenGroup)
def pki():
    """The fleet PKI: CA, broker and role certificates."""


@pki.command("init")
@click.option("--force", is_flag=True, help="Replace an existing CA (invalidates every device certificate).")
@pass_state
def pki_init(state, force):
    """Create the fleet CA, broker certificate, operator/technician certificates and CRL."""
    from ..fleet import pki as lib
    from ..fleet.devices import list_devices

    old = list_devices(state) if force and lib.has_ca(state) else []
    if force:
        from ..fleet.backups import backup_registry

        backup_registry(state, "pki-init-force")
    result = lib.init_pki(state, force=force)
    console.print(f"[bold green]Fleet PKI created[/] in {state.pki_dir}")
    console.print(f"CA fingerprint (SHA-256): {result.ca_fingerprint}")
    table = Table("file", "path", box=None, pad_edge=False)
    for name, path in result.files.items():
        table.add_row(name, str(path))
    print_table(table)
    if old:
        console.print(f"[yellow]warning:[/] {len(old)} registered device(s) have certificates from the "
                      "replaced CA; they cannot connect until re-provisioned.")


# -- device --------------------------------------------------------------------------------------
@click.group(cls=WardenGroup)
def device():
    """Provision and list devices."""


@device.command("add")
@click.argument("thing")
@click.option("--replace", is_flag=True,
              help="THING's folder holds files the registry does not list: archive them, then provision afresh.")
@click.option("--broker", "broker_kind", type=click.Choice(["mosquitto", "aws"]), default="mosquitto",
              show_default=True, help="aws: its twin flash points at AWS IoT Core (warden aws setup) with Amazon's roots.")
@pass_state
def device_add(state, thing, replace, broker_kind):
    """Provision THING: certificate and key, registry entry, twin flash."""
    from ..fleet.devices import add_device

    if broker_kind == "aws":
        from ..aws.device import broker as aws_broker

        aws_broker(state)         # set up for AWS first (warden aws setup), before anything is issued
    with console.status(f"provisioning {thing}..."):
        dev = add_device(state, thing, replace=replace)
    if broker_kind == "aws":
        from ..aws.device import provision_twin

        provision_twin(state, thing)
        console.print(f"broker: AWS IoT Core {aws_broker(state)['host']}:8883 (run `warden aws sync` "
                      "to register it there)")
    folder = state.device_dir(thing)
    if getattr(dev, "archived", None):
        console.print(f"[yellow]the previous files of {thing} are in {dev.archived}[/]")
    console.print(f"[bold green]Device {dev.thing} added[/]")
    console.print(f"fingerprint (SHA-256): {dev.fingerprint}")
    console.print(f"certificate expires:   {dev.not_after}")
    console.print(f"identity files:        {folder}")


@device.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every field but secrets).")
@click.option("--offline", is_flag=True, help="Only what the registry knows: do not ask the broker.")
@click.option("--listen", type=click.FloatRange(0, 600), default=0, show_default=True,
              help="Seconds to wait for a reading from each online device (telemetry is not retained).")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=3, show_default=True,
              help="Seconds to wait for the broker.")
@click.option("--group", "groups", multiple=True, metavar="KEY=VALUE",
              help="Only devices tagged KEY=VALUE (repeatable: every one must match).")
@pass_state
def device_list(state, as_json, offline, listen, timeout, groups):
    """The fleet: each device's registry entry and tags and, from the broker's retained messages,
    whether it is online and since when, the versions it runs, its last reading and OTA outcome."""
    from ..fleet.groups import parse_selectors
    from ..fleet.view import fleet_view

    parse_selectors(groups)      # a bad selector is an error before anything is asked of the broker
    view = fleet_view(state, broker=not offline, timeout=timeout, listen=listen, groups=groups)
    for line in ([view.note] if view.note else []) + view.warnings:
        click.echo(f"note: {line}", err=True)
    if as_json:
        click.echo(json.dumps(view.rows, indent=2))
        return
    if not view.rows:
        click.echo("no device matches " + " ".join(f"--group {g}" for g in groups) if groups
                   else "no devices yet: add one with `warden device add NAME`")
        return
    table = Table("name", "status", "connection", "since", "version", "firmware", "last reading", "last OTA",
                  "cert expires", "fingerprint", "tags", box=None, pad_edge=False)
    colour = {"online": "green", "revoked": "red", "offline": "yellow"}
    for r in view.rows:
        conn = r["connection"] + (f" ({r['reason']})" if r["reason"] and r["connection"] != "revoked" else "")
        reading = r["last_reading"]
        ota = r["last_ota"]
        table.add_row(
            r["thing"], f"[{'green' if r['status'] == 'active' else 'red'}]{r['status']}[/]",
            f"[{colour.get(r['connection'], 'dim')}]{conn}[/]", r["since"] or "-", r["version"] or "-",
            r["firmware_version"] or "factory",
            f"#{reading['seq']} at {reading['time']}" if reading else "-",
            f"{ota['kind']} {ota['version']} {ota['outcome']}" if ota else "-",
            (r["cert_expires"] or "-")[:10], r["fingerprint"],
            escape(",".join(f"{k}={v}" for k, v in r["tags"].items()) or "-"))    # a value may hold "["
    print_table(table)
    if view.source == "registry" and not offline:
        console.print("connection state unknown: the broker did not answer (see the note above)", style="dim")


@device.command("tag")
@click.argument("thing")
@click.argument("tags", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--remove", "remove", multiple=True, metavar="KEY", help="Remove tag KEY (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the device's tags as a JSON object.")
@pass_state
def device_tag(state, thing, tags, remove, as_json):
    """Set tags KEY=VALUE on THING, remove them (--remove KEY), or, with neither, list them.
    Tags name device groups: `device list --group KEY=VALUE`, `aws sync`'s thing groups."""
    from ..fleet.groups import set_tags

    result = set_tags(state, thing, tags, remove)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    if not result:
        console.print(f"{thing} has no tags")
    for k, v in result.items():
        click.echo(f"{k}={v}")


@device.command("restore")
@click.argument("backup", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--list", "show", is_flag=True, help="List the registry backups, newest first.")
@pass_state
def device_restore(state, backup, show):
    """Put a registry backup back (default: the newest); the registry it replaces is kept aside."""
    from ..fleet import backups

    if show:
        found = backups.list_backups(state)
        if not found:
            console.print(f"no registry backups in {backups.backups_dir(state)}")
        for p in found:
            console.print(str(p))
        return
    used, moved, count = backups.restore(state, backup)
    console.print(f"[bold green]registry restored[/] from {used}: {count} device(s)")
    if moved:
        console.print(f"the registry it replaced is kept as {moved}")


# -- device revoke / rotate ----------------------------------------------------------------------
@device.command("revoke")
@click.argument("thing")
@click.option("--reason", default=None, help="Why (kept in the registry; 'compromised' etc. set the CRL reason).")
@pass_state
def device_revoke(state, thing, reason):
    """Revoke THING: registry, CRL, broker reload; cut off if connected."""
    from ..fleet.devices import revoke_device

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
    from ..fleet.devices import finish_rotation, rotate_device

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


@device.command("config")
@click.argument("thing")
@click.argument("action", type=click.Choice(["get", "set"]))
@click.argument("key", required=False)
@click.argument("value", required=False)
@click.option("--timeout", type=click.FloatRange(1), default=30.0, show_default=True,
              help="Seconds to wait for the device's answer (a sleeping device answers at its wake).")
@click.option("--json", "as_json", is_flag=True, help="Print the device's answer as JSON.")
@pass_state
def device_config(state, thing, action, key, value, timeout, as_json):
    """Read (get [KEY]) or change (set KEY VALUE) THING's remote settings, signed, over MQTT."""
    from ..fleet import devconfig as lib

    if action == "set":
        if key is None or value is None:
            fail("set needs KEY and VALUE", "e.g. warden device config twin-001 set interval_ms 2000")
        try:
            d = lib.set_settings(state, thing, lib.check({key: lib.parse_value(key, value)}), timeout=timeout)
        except lib.ConfigRefused as e:
            fail(str(e), e.hint, code=2)
    else:
        if value is not None:
            fail("get takes at most a KEY", f"to change it: warden device config {thing} set {key} {value}")
        if key is not None and key not in lib.SETTINGS:
            lib.check({key: None})   # words why (provisioned, or no such setting)
        d = lib.get(state, thing, timeout=timeout)
    if as_json:
        click.echo(json.dumps({k: v for k, v in d.items() if k != "step"}, indent=2))
        return
    if action == "set":
        console.print(f"[bold green]{thing} applied {key}[/] (command {d['counter']})")
    for k, v in d["settings"].items():
        if key is None or k == key:
            when = " (stored; in force after the next boot)" if k in d.get("at_boot", []) else ""
            console.print(f"{k} = {json.dumps(v)}{when}")


# -- principals ----------------------------------------------------------------------------------
@click.group(cls=WardenGroup)
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
    from ..broker import control as brokerctl
    from ..fleet import principals

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

    from ..fleet import principals

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
        table.add_row(p.cn, p.role, f"[{style}]{p.status}[/]", p.fingerprint or "-",
                      (p.not_after or "-")[:10], "yes" if p.in_policy else "no")
    print_table(table)


def _cn(state, name):
    """ROLE.NAME as given, or NAME when exactly one principal has that name."""
    from ..fleet import principals
    from ..fleet.registry import Registry

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
    from ..broker import control as brokerctl
    from ..fleet import principals

    from ..fleet.backups import backup_registry

    cn = _cn(state, name)
    backup_registry(state, f"principal-revoke-{cn}")
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
    from ..broker import control as brokerctl
    from ..fleet import principals

    from ..fleet.backups import backup_registry

    cn = _cn(state, name)
    backup_registry(state, f"principal-rotate-{cn}")
    old = principals.rotate_principal(state, cn, days=days, out=out)
    console.print(f"[bold green]{cn} rotated[/]; revoked: {', '.join(old) or '-'}")
    report_brokers(brokerctl.sync(state, kick=[cn]), f"the revocation of {cn}'s old certificate")


# -- audit ---------------------------------------------------------------------------------------
_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--fail-on", type=click.Choice(["info", "low", "medium", "high", "critical"]), default="low",
              show_default=True, help="Exit 1 if a finding is at or above this severity.")
@click.option("--days", type=click.IntRange(0), default=30, show_default=True,
              help="Report certificates (and the CRL) expiring within N days.")
@pass_state
def audit(state, as_json, fail_on, days):
    """Check the fleet for drift from least privilege; every finding says how to fix it."""
    from ..fleet import audit as lib

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
