"""The `warden` command line: a thin click layer over the warden library.

Every command calls one library function; this module only parses options and prints. Errors
the user can fix (any `warden.state.WardenError`, or an OSError such as a permission problem)
print `error: ...` and what to do, and exit with code 1, never with a traceback.

Commands are grouped (`pki`, `device`, `broker`, ...): add new ones with `@main.command()` or
`@main.group()`, and get the project state with the `pass_state` decorator.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .state import DEFAULT_ROOT, ENV_VAR, State, WardenError

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


@click.group(cls=WardenGroup)
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), envvar=ENV_VAR,
              default=DEFAULT_ROOT, show_default=True, help=f"Project state folder (or ${ENV_VAR}).")
@click.version_option(package_name="warden-tools", prog_name="warden")
@click.pass_context
def main(ctx, state_dir):
    """Warden: provision, run, update and audit a fleet of ESP32 devices."""
    ctx.obj = State(state_dir)


cli = main


# -- pki -----------------------------------------------------------------------------------------
@main.group()
def pki():
    """The fleet PKI: CA, broker and role certificates."""


@pki.command("init")
@click.option("--force", is_flag=True, help="Replace an existing CA (invalidates every device certificate).")
@pass_state
def pki_init(state, force):
    """Create the fleet CA, broker certificate, operator/technician certificates and CRL."""
    from .fleet import pki as lib
    from .fleet.devices import list_devices

    old = list_devices(state) if force and lib.has_ca(state) else []
    result = lib.init_pki(state, force=force)
    console.print(f"[bold green]Fleet PKI created[/] in {state.pki_dir}")
    console.print(f"CA fingerprint (SHA-256): {result.ca_fingerprint}")
    table = Table("file", "path", box=None, pad_edge=False)
    for name, path in result.files.items():
        table.add_row(name, str(path))
    console.print(table)
    if old:
        console.print(f"[yellow]warning:[/] {len(old)} registered device(s) have certificates from the "
                      "replaced CA; they cannot connect until re-provisioned.")


# -- device --------------------------------------------------------------------------------------
@main.group()
def device():
    """Provision and list devices."""


@device.command("add")
@click.argument("thing")
@pass_state
def device_add(state, thing):
    """Provision THING: certificate and key, registry entry, twin flash."""
    from .fleet.devices import add_device

    with console.status(f"provisioning {thing}..."):
        dev = add_device(state, thing)
    folder = state.device_dir(thing)
    console.print(f"[bold green]Device {dev.thing} added[/]")
    console.print(f"fingerprint (SHA-256): {dev.fingerprint}")
    console.print(f"certificate expires:   {dev.not_after}")
    console.print(f"identity files:        {folder}")


@device.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every field but secrets).")
@pass_state
def device_list(state, as_json):
    """List the registered devices."""
    from .fleet.devices import list_devices

    devices = list_devices(state)
    if as_json:
        click.echo(json.dumps([d.public_dict() for d in devices], indent=2))
        return
    if not devices:
        console.print("no devices yet: add one with `warden device add NAME`")
        return
    table = Table("name", "fingerprint", "status", "created")
    for d in devices:
        style = "green" if d.status == "active" else "red"
        table.add_row(d.thing, d.fingerprint[:16], f"[{style}]{d.status}[/]", d.created)
    console.print(table)


# -- broker --------------------------------------------------------------------------------------
@main.group()
def broker():
    """The local MQTT broker (mosquitto, TLS with client certificates)."""


@broker.command("run")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="TCP port on 127.0.0.1 (default: the project's broker port, 8883).")
@pass_state
def broker_run(state, port):
    """Run the broker in the foreground until Ctrl-C."""
    import subprocess

    from .broker.server import Broker, BrokerError
    from .broker.control import CRL_CHECK_S, keep_crl_fresh

    b = Broker(state, port=port or state.broker_port, log_stdout=True, output=None)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        b.start()
        console.print(f"[bold green]broker running[/] on {b.host}:{b.port} (pid {b.pid}): TLS 1.2+, "
                      "client certificates from the fleet CA, ACL from the policy")
        console.print(f"config {b.conf_path}, log {b.log_path}. Ctrl-C stops it.")
        while True:
            try:
                code = b.wait(timeout=CRL_CHECK_S)
                break
            except subprocess.TimeoutExpired:
                keep_crl_fresh(state, b.name)    # the CRL never lapses on a broker left running
        raise BrokerError(f"mosquitto exited by itself (code {code}):\n{b.log_tail()}",
                          hint=f"see {b.log_path}")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        b.stop()
    console.print("broker stopped")


# -- build ---------------------------------------------------------------------------------------
@main.group()
def build():
    """Compile device code."""


@build.command("app")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default build/app).")
@click.option("--bundle", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also pack firmware/ and lib/ as an OTA app bundle file (then `warden sign` it).")
def build_app(out, bundle):
    """Compile firmware/ and lib/ to .mpy with mpy-cross (only what changed)."""
    from .board import build as b

    files = b.build_app(out)
    total = sum(len(v) for v in files.values())
    console.print(f"app built: {len(files)} files, {total} bytes -> {out or b.ROOT / 'build' / 'app'}")
    if bundle:
        from .ota.image import pack_bundle
        from .state import write_file
        write_file(bundle, pack_bundle(files))
        console.print(f"app bundle: {bundle} ({bundle.stat().st_size} bytes)")


# -- twin ----------------------------------------------------------------------------------------
@main.group()
def twin():
    """The device twin: device code under `micropython` on a flash file."""


@twin.command("run")
@click.argument("thing")
@click.option("--heap", default=None, help="MicroPython heap (default: the twin's, see docs/heap.md, 'The budget').")
@click.option("--keep-app", is_flag=True, help="Boot the app already in the flash; do not install the current build.")
@click.option("--interval-ms", type=click.IntRange(10), default=None, help="Change the reading interval first.")
@pass_state
def twin_run(state, thing, heap, keep_app, interval_ms):
    """Run THING's twin until Ctrl-C; it restarts when the device resets, as a board does."""
    from .fleet import devices
    from .board import twin as t

    devices.get_device(state, thing)
    path = t.flash_path(state, thing)
    if not path.exists():
        raise t.TwinError(f"no twin flash at {path}", hint=f"run `warden device add {thing}` first")
    if not keep_app:
        t.sync_app(path)
    if interval_ms:
        t.update_config(path, interval_ms=interval_ms)
    heap = heap or t.DEFAULT_HEAP
    console.print(f"twin {thing}: flash {path}, heap {heap}. Ctrl-C stops it.", style="dim")

    def on_term(signum, frame):
        raise KeyboardInterrupt  # SIGTERM stops the twin as cleanly as Ctrl-C

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        code = t.run_twin(path, heap=heap)
    except KeyboardInterrupt:
        console.print("twin stopped", style="dim")
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
        fail(f"the twin exited with code {code} (see its output above)",
             "a device error that escapes main.py drops a board to its REPL; the twin exits instead")


# -- watch ---------------------------------------------------------------------------------------
@main.command()
@click.option("--thing", default=None, help="Only this device (default: all).")
@click.option("--count", type=click.IntRange(1), default=None, help="Exit 0 after N readings.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None,
              help="Exit non-zero if --count readings did not arrive within S seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per reading.")
@click.option("--status", is_flag=True, help="Also show online/offline status messages.")
@click.option("--as", "as_", default="operator.default", show_default=True,
              help="The operator principal to act as (ROLE.NAME, or NAME for an operator).")
@pass_state
def watch(state, thing, count, timeout, as_json, status, as_):
    """Print readings as they arrive (as an operator principal, with a session of its own)."""
    from .board import watch as w
    from .fleet.principals import resolve

    cn = resolve(as_, None if "." in as_ else "operator")

    def show(m):
        body = m.json()
        if as_json:
            click.echo(json.dumps({"thing": m.thing, "kind": m.kind, "retained": m.retain,
                                   "payload": body if body is not None else m.payload.decode("utf-8", "replace")}))
        elif m.kind == "telemetry" and isinstance(body, dict):
            values = "  ".join(f"{k}={v}" for k, v in (body.get("values") or {}).items())
            console.print(f"[bold]{m.thing}[/] #{body.get('seq')}  {values}")
        else:
            console.print(f"[bold]{m.thing}[/] {m.kind}: {m.payload.decode('utf-8', 'replace')}", style="cyan")

    kinds = ("telemetry", "status") if status else ("telemetry",)
    if not as_json:
        console.print(f"watching {state.broker_host}:{state.broker_port} as {cn} "
                      f"({'all devices' if not thing else thing}); Ctrl-C stops", style="dim")
    try:
        w.watch(state, thing=thing, count=count, timeout=timeout, on_message=show, kinds=kinds, principal=cn)
    except w.WatchError as e:
        fail(str(e), "is the broker running (warden broker run) and the device connected?")
    except KeyboardInterrupt:
        pass


# -- demo ----------------------------------------------------------------------------------------
@main.command()
@click.argument("thing", default="twin-001")
@pass_state
@click.pass_context
def demo(ctx, state, thing):
    """Broker + one twin + the live view (what `make run` does). Ctrl-C stops all of it."""
    from .board import demo as d

    d.run_demo(state, thing, watch=lambda: ctx.invoke(watch, thing=thing, status=True),
               say=lambda s: console.print(s, style="dim"))


# -- policy, device revoke/rotate, audit (tools/warden/cli_fleet.py) ------------------------------
from . import cli_fleet  # noqa: E402,F401  (registers `policy`, `device revoke|rotate`, `audit`)


# -- logs (warden logs pull/show: tools/warden/cli_logs.py) ---------------------------------------
from . import cli_logs  # noqa: E402,F401  (registers the `logs` group on main)


# -- keys, sign, ota (signed OTA: tools/warden/cli_ota.py) ----------------------------------------
from . import cli_ota  # noqa: E402,F401  (registers `keys`, `sign` and `ota` on main)


# -- flash, deploy (a real ESP32: tools/warden/cli_board.py) -------------------------------------
from . import cli_board  # noqa: E402,F401  (registers `flash` and `deploy` on main)


if __name__ == "__main__":
    # `python -m warden.cli` runs this file as __main__: take `main` from the imported package
    # module, on which every command module above registered its commands.
    from warden.cli import main as _main

    _main()
