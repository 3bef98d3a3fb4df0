"""What every command module of the CLI shares: the console, `fail`, the group class that turns
errors into `error: ...` lines, `pass_state`, and the report of a change carried to the brokers.

Commands are not defined here, and nothing here registers a command: warden/cli/__init__.py
adds every command family to `main`, in one place.
"""
from __future__ import annotations

import click
from rich.console import Console

from ..errors import WardenError
from ..state import State

console = Console(highlight=False, soft_wrap=True)


def fail(message: str, hint: str | None = None, code: int = 1):
    """Print `error: message` (and the hint) on stderr and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"  {hint}", err=True)
    raise click.exceptions.Exit(code)


class WardenGroup(click.Group):
    """A click group that turns user errors into `error: ...` and exit code 1."""

    group_class = type   # sub-groups made with @group.group() are WardenGroups too

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except WardenError as e:
            fail(str(e), e.hint)
        except OSError as e:
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            fail(f"{e.strerror or e}{where}",
                 "check the path and its permissions (the state folder is --state / $WARDEN_STATE)")


pass_state = click.make_pass_decorator(State)


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
