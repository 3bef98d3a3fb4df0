"""`warden logs pull` and `warden logs show`: the device's encrypted log, read on the host.

A thin layer over warden.logs.pull (and warden.board.deploy for a board's log): it must not
decode or verify records itself.

Exit codes of `logs show`: 0 the log verified clean, 3 it was read but has integrity problems
(all listed), 1 an error (no such device, no segments, wrong or missing key).
"""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from .common import WardenGroup, console, pass_state

EXIT_PROBLEMS = 3


@click.group(cls=WardenGroup)
def logs():
    """The device's encrypted log: pull it (over MQTT, from a twin or a board), verify and show it."""


@logs.command("pull")
@click.argument("thing")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the segments (default: the device's folder in the state, logs/).")
@click.option("--port", default=None,
              help="Pull from a real board on this serial port (mpremote), not the twin; auto: the one board attached.")
@click.option("--via", type=click.Choice(["auto", "mqtt", "twin", "serial"]), default="auto", show_default=True,
              help="How to reach the log: over the device's MQTT session, its twin flash, or a board's serial "
                   "port; auto: --port if given, the twin flash if its twin is not running, else MQTT.")
@click.option("--wait", type=click.FloatRange(0), default=5.0, show_default=True,
              help="MQTT: seconds to keep asking a device that does not answer (offline, or connecting).")
@click.option("--principal", default="technician.default", show_default=True,
              help="MQTT: the principal that asks (its role must allow cmd/<app>/+/logs).")
@pass_state
def logs_pull(state, thing, out, port, via, wait, principal):
    """Copy THING's log segments (over MQTT, from its twin flash, or a board: --port) into a folder, and verify them."""
    from ..logs.pull import pull
    from ..logs.remote import choose

    how, why = choose(state, thing, via, port)
    note = ""
    if how == "serial":
        from ..board.deploy import pull_logs   # the board's /log over mpremote (tools/warden/board/deploy.py)
        from ..board.ports import resolve
        r = pull_logs(state, thing, resolve(port), out)
        note = "over its serial port"
    elif how == "mqtt":
        from ..errors import WardenError
        from ..logs.remote import RemoteLogError, pull_remote
        try:
            with console.status(f"asking {thing} for its log over MQTT ({why})"):
                r, st = pull_remote(state, thing, out, wait=wait, principal=principal)
        except WardenError as e:
            if via == "auto" and why.startswith("no twin flash"):   # say both ways were tried
                raise RemoteLogError(f"no twin flash for {thing}, and over MQTT: {e}", hint=e.hint) from None
            raise
        resumed = f", resumed after {st.resumed} bytes" if st.resumed else ""
        note = f"over MQTT ({st.host}:{st.port}, {st.received / max(st.seconds, 1e-6) / 1e6:.2f} MB/s{resumed})"
    else:
        r = pull(state, thing, out)
        note = f"from its twin flash ({why})"
    size = sum(len(d) for d in r.files.values())
    console.print(f"pulled {len(r.files)} segments ({size} bytes) of {thing}'s log to {r.out}, {note}")
    if r.error:
        console.print(f"[yellow]not verified:[/] {r.error}")
    elif r.report is not None:
        _summary(r.report)
        console.print(f"show it: warden logs show {r.out}", style="dim")


def _summary(report):
    n = len(report.records)
    first = report.records[0].seq if n else None
    span = f", seq {first}..{report.last_seq}" if n else ""
    if report.ok:
        console.print(f"[green]verified:[/] {n} records{span}, no integrity problems")
    else:
        console.print(f"[red]{len(report.problems)} integrity problem(s)[/] in {n} readable records{span}")


@logs.command("show")
@click.argument("source")
@click.option("--thing", default=None, help="Whose registry key decrypts SOURCE (default: from its pull.json).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: records, then problems.")
@click.option("--from", "from_seq", type=click.IntRange(0), default=0, help="Only records from this sequence number.")
@pass_state
def logs_show(state, source, thing, as_json, from_seq):
    """Verify, decrypt and print a log: SOURCE is a thing (its twin flash) or a pulled folder."""
    from ..logs.format import iso_time
    from ..logs.pull import show

    thing, report = show(state, source, thing)
    records = [r for r in report.records if r.seq >= from_seq]
    if as_json:
        for r in records:
            click.echo(json.dumps(r.to_json()))
        for p in report.problems:
            click.echo(json.dumps(p.to_json()))
    else:
        table = Table("seq", "time (UTC)", "kind", "level", "source", "message", title=f"log of {thing}")
        styles = {"ERROR": "red", "WARN": "yellow"}
        for r in records:
            f = r.fields()
            t = iso_time(r.time)
            table.add_row(str(r.seq), t.replace("+00:00", "") if t else str(r.time), r.kind_name, f["level"],
                          f["source"], f["message"], style=styles.get(f["level"]))
        console.print(table)
        for p in report.problems:
            where = []
            if p.segment is not None:
                where.append(f"segment {p.segment}")
            if p.offset is not None:
                where.append(f"offset {p.offset}")
            loc = f" ({', '.join(where)})" if where else ""
            console.print(f"[red]{p.kind}[/]{loc}: {p.detail}")
        _summary(report)
    if not report.ok:
        raise click.exceptions.Exit(EXIT_PROBLEMS)
