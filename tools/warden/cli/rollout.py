"""`warden rollout create|run|status|pause|resume|abort`: staged OTA campaigns (docs/rollout.md).

A thin layer over warden.rollout (store, runner, link): it must not decide what a rollout does.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import click

from .common import WardenGroup, console, pass_state, print_table


def _when(ts) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _say(line: str):
    console.print(line, highlight=False)


@click.group(cls=WardenGroup)
def rollout():
    """Staged OTA rollouts: canary first, at a rate with a ramp, each device held to a health gate,
    stopped by an abort rule (docs/rollout.md)."""


@rollout.command("create")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "to", multiple=True, metavar="THING[,THING...]", help="These devices (repeatable).")
@click.option("--group", "groups", multiple=True, metavar="KEY=VALUE", help="Devices whose tags match (repeatable: all).")
@click.option("--all", "everyone", is_flag=True, help="Every active device.")
@click.option("--canary", type=int, default=1, show_default=True, help="Devices of the first stage.")
@click.option("--rate", type=float, default=10.0, show_default=True, help="Devices started per minute after the canary.")
@click.option("--ramp", "ramp_factor", type=float, default=1.0, show_default=True,
              help="Multiply the rate by this after every --ramp-every devices that succeeded (exponential ramp).")
@click.option("--ramp-every", type=int, default=0, show_default=True, help="Succeeded devices per ramp step (0: no ramp).")
@click.option("--max-rate", type=float, default=1000.0, show_default=True, help="The ramp's ceiling, devices per minute.")
@click.option("--concurrency", type=int, default=4, show_default=True, help="Transfers at once.")
@click.option("--abort-percent", type=float, default=20.0, show_default=True,
              help="Abort when this share of the finished devices failed ...")
@click.option("--abort-min", type=int, default=5, show_default=True, help="... once at least this many finished.")
@click.option("--soak", "soak_s", type=float, default=60.0, show_default=True,
              help="Seconds of the health gate after a device confirms.")
@click.option("--heap-margin", type=int, default=12288, show_default=True,
              help="Bytes a device's free heap may fall below its pre-update level (vitals).")
@click.option("--max-msgs", "max_msgs_per_min", type=float, default=120.0, show_default=True,
              help="Messages a minute a healthy device sends at most during the soak.")
@click.option("--min-readings", type=int, default=1, show_default=True, help="Readings it must send during the soak.")
@click.option("--timeout", "timeout_s", type=float, default=600.0, show_default=True,
              help="Seconds for one device's update, from its head to its self-test's verdict.")
@click.option("--json", "as_json", is_flag=True, help="Print the new rollout as JSON.")
@pass_state
def create_cmd(state, name, file, to, groups, everyone, as_json, **plan):
    """Check FILE (a signed update) against every device as each will check it, and record the rollout
    NAME; nothing is sent until `warden rollout run NAME`."""
    from ..fleet.groups import select_devices
    from ..rollout.runner import create
    from ..rollout.store import Plan, RolloutError

    chosen = [t for item in to for t in item.split(",") if t]
    if sum(bool(x) for x in (chosen, groups, everyone)) != 1:
        raise RolloutError("say which devices: --to THINGS, --group KEY=VALUE or --all (one of them)")
    if not chosen:
        chosen = [d.thing for d in select_devices(state, {} if everyone else groups, status="active")]
    s = create(state, name, file, chosen, Plan(**plan))
    if as_json:
        click.echo(json.dumps(s, indent=2, sort_keys=True))
        return
    _say(f"rollout {name}: {s['kind']} {s['version']} (counter {s['counter']}) to {s['devices']} device(s), "
         f"canary {min(s['plan']['canary'], s['devices'])}; run it with `warden rollout run {name}`")


def _session_options(f):
    f = click.option("--host", default=None, help="Broker host (default: the running broker, else project.json).")(f)
    f = click.option("--port", type=int, default=None, help="Broker port (default: the running broker's).")(f)
    return f


@rollout.command("run")
@click.argument("name")
@_session_options
@pass_state
def run_cmd(state, name, host, port):
    """Run the rollout NAME to its end (or until paused or aborted). Interrupted, run it again: it
    resumes where it was."""
    from ..rollout.runner import Run
    _run(state, name, host, port, Run)


def _run(state, name, host, port, Run):
    try:
        s = Run(state, name, out=_say, host=host, port=port).run()
    except KeyboardInterrupt:
        _say(f"interrupted: devices mid-update finish or wait; `warden rollout run {name}` resumes")
        raise SystemExit(130)
    _summary(s)
    if s["state"] == "aborted":
        raise SystemExit(3)
    if s["state"] == "paused":
        raise SystemExit(4)


@rollout.command("resume")
@click.argument("name")
@_session_options
@pass_state
def resume_cmd(state, name, host, port):
    """Resume the paused rollout NAME and run it."""
    from ..rollout.runner import Run, resume
    resume(state, name)
    _run(state, name, host, port, Run)


@rollout.command("pause")
@click.argument("name")
@click.option("--reason", default="paused by an operator", show_default=True)
@pass_state
def pause_cmd(state, name, reason):
    """Pause NAME: its run starts no other device, lets the transfers under way end, and stops."""
    from ..rollout.runner import pause
    pause(state, name, reason)
    _say(f"rollout {name} paused; `warden rollout resume {name}` goes on")


@rollout.command("abort")
@click.argument("name")
@click.option("--rollback", is_flag=True, help="Send every device it updated back to its previous version (signed rollback).")
@click.option("--reason", default="aborted by an operator", show_default=True)
@_session_options
@pass_state
def abort_cmd(state, name, rollback, reason, host, port):
    """Abort NAME for good; with --rollback, the devices it updated go back to their previous version."""
    from ..rollout.runner import abort
    s = abort(state, name, reason, rollback=rollback, out=_say, host=host, port=port)
    _summary(s)


@rollout.command("status")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="JSON: the rollout(s), counts by state and stage, every device.")
@pass_state
def status_cmd(state, name, as_json):
    """Every rollout (or NAME in detail: each device, its stage, state and reason)."""
    from rich.table import Table

    from ..rollout.store import Store

    with Store(state) as st:
        rows = [st.summary(name)] if name else [st.summary(r.name) for r in st.list()]
    if as_json:
        click.echo(json.dumps(rows[0] if name else rows, indent=2, sort_keys=True))
        return
    if name:
        _summary(rows[0])
        table = Table("device", "stage", "state", "was", "started", "finished", "reason")
        for m in rows[0]["members"]:
            table.add_row(m["thing"], m["stage"], m["state"], m["old_version"] or "-", _when(m["started"]),
                          _when(m["finished"]), m["reason"] or "")
        print_table(table)
        return
    if not rows:
        _say("no rollouts yet: `warden rollout create NAME FILE --to THINGS`")
        return
    table = Table("rollout", "state", "update", "devices", "succeeded", "failed", "open", "reason")
    for s in rows:
        c = s["counts"]
        table.add_row(s["name"], s["state"], f"{s['kind']} {s['version']}", str(s["devices"]),
                      str(c.get("succeeded", 0)), str(c.get("failed", 0)),
                      str(sum(c.get(k, 0) for k in ("waiting", "sending", "soaking"))), s["reason"] or "")
    print_table(table)


def _summary(s):
    c = s["counts"]
    parts = ", ".join(f"{v} {k}" for k, v in sorted(c.items()))
    _say(f"rollout {s['name']}: {s['state']}" + (f" ({s['reason']})" if s["reason"] else "")
         + f"; {s['kind']} {s['version']}; {parts}")
