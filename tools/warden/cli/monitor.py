"""`warden monitor`: watch the fleet's status, metrics and the broker's signals against the rules,
`warden monitor alerts|quarantined`, and `warden device quarantine|unquarantine THING`.

A thin layer over warden.monitor (rules, store, engine, signals, live, actions): it must not judge
a data point or act on an alert itself.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import click

from .common import WardenGroup, console, pass_state, print_table, report_brokers


def _when(ts) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _printer(as_json: bool):
    def emit(event: dict):
        if as_json:
            click.echo(json.dumps(event, sort_keys=True, default=str))
            return
        kind = event.get("event")
        when = _when(event["time"]) if isinstance(event.get("time"), (int, float)) else ""
        if kind == "alert":
            done = f"  [{', '.join(event['actions'])}]" if event.get("actions") else ""
            style = "bold red" if event["state"] == "raised" else "green"
            word = "ALERT" if event["state"] == "raised" else "clear"
            console.print(f"{when}  [{style}]{word}[/]  {event['rule']}  {event['thing']}  {event['detail']}{done}")
        elif kind == "signal":
            extra = event.get("topic") or event.get("reason") or ""
            console.print(f"{when}  signal {event['signal']}  {event.get('name') or '-'}  {extra}", style="yellow")
        else:
            console.print(f"{when}  {kind}  {event.get('thing')}  {json.dumps(event.get('data'), sort_keys=True)}",
                          style="dim")
    return emit


@click.group(cls=WardenGroup, invoke_without_command=True)
@click.option("--once", is_flag=True, help="Judge what is there now (retained status, new log lines), then stop.")
@click.option("--for", "duration", type=float, default=None, metavar="SECONDS", help="Watch this long, then stop.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line: signals, alerts (and with -v, data points).")
@click.option("-v", "--verbose", is_flag=True, help="Print every data point too.")
@click.option("--publish/--no-publish", default=None,
              help="Publish alerts on alerts/<app>/<thing>/<rule> (default: rules.json's \"publish\").")
@click.option("--broker-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The broker's log file (default: the running broker's, else the state's broker folder).")
@click.option("--host", default=None, help="Broker host (default: the running broker, else project.json).")
@click.option("--port", type=int, default=None, help="Broker port (default: the running broker's).")
@click.option("--as", "principal", default="operator.default", show_default=True, help="The operator principal.")
@click.pass_context
def monitor(ctx, once, duration, as_json, verbose, publish, broker_log, host, port, principal):
    """Watch devices' status and metrics and the broker's signals; raise and clear alerts by the rules
    in rules.json (docs/monitor.md). Without --once or --for, until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from ..monitor.live import Monitor

    state = ctx.obj
    if once and duration is not None:
        raise click.UsageError("give --once or --for, not both")
    mon = Monitor(state, host=host, port=port, principal=principal, broker_log=broker_log, publish=publish,
                  emit=_printer(as_json), points=verbose)
    if not as_json:
        console.print(f"monitoring {state.app} as {principal}; broker log {mon.broker_log}; "
                      f"{len(mon.rules.rules)} rules", style="dim")
    try:
        s = mon.run(once=once, duration=duration)
    except KeyboardInterrupt:
        s = mon.summary
    if as_json:
        click.echo(json.dumps({"event": "summary", "reports": s.reports, "signals": s.signals,
                               "raised": s.raised, "cleared": s.cleared}))
    else:
        console.print(f"{s.reports} report(s), {s.signals} broker signal(s); {s.raised} alert(s) raised, "
                      f"{s.cleared} cleared", style="dim")


@monitor.command("alerts")
@click.option("--open", "open_only", is_flag=True, help="Only the alerts not cleared yet.")
@click.option("--thing", default=None, help="One device's alerts.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, each alert with the data that raised it.")
@pass_state
def monitor_alerts(state, open_only, thing, as_json):
    """The alerts raised and cleared, oldest first."""
    from rich.table import Table

    from ..monitor.store import Store

    with Store(state) as store:
        rows = store.alerts(open_only=open_only, thing=thing)
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    table = Table("id", "device", "rule", "state", "raised", "cleared", "detail", "actions")
    for r in rows:
        table.add_row(str(r["id"]), r["thing"], r["rule"], r["state"], r["raised"], r["cleared"] or "-",
                      r["detail"], ", ".join(r["actions"]) or "-")
    print_table(table)


@monitor.command("quarantined")
@click.option("--json", "as_json", is_flag=True, help="A JSON list.")
@pass_state
def monitor_quarantined(state, as_json):
    """The quarantined devices: since when, by which rule."""
    from ..monitor.store import Store

    with Store(state) as store:
        rows = store.quarantined()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['thing']}  since {r['since']}  {r['rule'] or 'by hand'}  {r['reason'] or ''}".rstrip())


@click.command("quarantine")
@click.argument("thing")
@click.option("--reason", default=None, help="Why (kept with the quarantine).")
@pass_state
def device_quarantine(state, thing, reason):
    """Narrow THING at every broker to publishing its status and metrics (nothing else, nothing received)."""
    from ..monitor.actions import quarantine

    new, report = quarantine(state, thing, None, reason)
    console.print(f"[bold yellow]{thing} quarantined[/]" + ("" if new else " (already)")
                  + ": it may publish its status and metrics only")
    report_brokers(report, "the quarantine")


@click.command("unquarantine")
@click.argument("thing")
@pass_state
def device_unquarantine(state, thing):
    """Lift THING's quarantine at every broker: its policy's rights again."""
    from ..monitor.actions import unquarantine

    report = unquarantine(state, thing)
    console.print(f"[bold green]{thing} released[/]: its policy applies again")
    report_brokers(report, "the release")
