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


def print_table(table):
    """Print a rich Table whole. On a terminal it fits the width, and a long value (a hash, a
    path) folds onto more lines instead of being cut with "…". Piped or redirected, it is plain
    text: a header line, then one line per row with every value whole, in columns two spaces
    apart, however wide (rich would wrap at 80 columns there, and lay out a thousand rows slowly)."""
    from rich.text import Text

    if console.is_terminal:
        for column in table.columns:
            column.overflow = "fold"
        console.print(table)
        return

    def plain(cell):
        return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)

    columns = [[plain(c.header)] + [plain(cell) for cell in c.cells] for c in table.columns]
    if table.title:
        click.echo(plain(table.title))
    if not columns:
        return
    widths = [max(map(len, col)) for col in columns]
    for i in range(len(columns[0])):
        click.echo("  ".join(col[i].ljust(w) for col, w in zip(columns, widths)).rstrip())


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
