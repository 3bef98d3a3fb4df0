"""`warden status`: the state folder, CA, CRL, brokers, twins and signing key, and every problem
with its fix. A thin layer over warden.doctor: it must not look at anything itself."""
from __future__ import annotations

import json

import click

from .common import console, pass_state


def _broker_line(b: dict) -> str:
    where = f"{b['host']}:{b['port']}"
    if b.get("running") and b.get("reachable"):
        pids = f"pid {b['pid']}" + (f", warden pid {b['warden_pid']}" if b.get("warden_pid") else "")
        return f"[green]{b['name']}[/] {where} ({b['kind']}, {pids}): reachable"
    why = b.get("reachable_error") or "not reachable"
    pid = f", pid {b['pid']}" if b.get("pid") else ""
    return f"[red]{b['name']}[/] {where} ({b['kind']}{pid}): {why}"


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (exit code as without it).")
@pass_state
def status(state, as_json):
    """Which state, CA, brokers and twins, and anything inconsistent with its fix (exit 1 if any)."""
    from .. import doctor

    r = doctor.check(state)
    if as_json:
        click.echo(json.dumps(r.as_dict(), indent=2))
    else:
        console.print(f"[bold]state[/]   {r.state['root']} ({r.state['how']})")
        if r.ca:
            fp = r.ca["fingerprint"]   # whole when piped (a script compares it), short on a terminal
            fp = fp[:16] + "..." if console.is_terminal else fp
            console.print(f"[bold]CA[/]      SHA-256 {fp}, {r.ca['days_left']} days left")
        if r.crl:
            console.print(f"[bold]CRL[/]     {r.crl['revoked']} revoked, {r.crl['days_left']} days left "
                          "(renewed by `warden broker sync` and a running broker)")
        for i, b in enumerate(r.brokers):
            console.print(("[bold]brokers[/] " if i == 0 else "        ") + _broker_line(b))
        if not r.twins:
            console.print("[bold]twins[/]   none running")
        for i, t in enumerate(r.twins):
            pids = ", ".join(map(str, t["micropython_pids"])) or "-"
            console.print(("[bold]twins[/]   " if i == 0 else "        ")
                          + f"{t['thing']}: running (warden pid {t['pid'] or '-'}, micropython {pids})")
        k = r.signing_key
        if k:
            console.print(f"[bold]OTA key[/] {k['key_id']}" + (" (encrypted)" if k.get("encrypted") else "")
                          + f", devices trust {len(k['trusted'])} key(s)")
        else:
            console.print("[bold]OTA key[/] none (`warden keys init` makes the fleet's signing key)")
        if r.healthy:
            console.print("[green]no problems found[/]")
        for p in r.problems:
            console.print(f"[red]problem:[/] {p.what}")
            console.print(f"  fix: {p.fix}")
    if not r.healthy:
        raise click.exceptions.Exit(1)
