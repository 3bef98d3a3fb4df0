"""`warden build`, `twin`, `watch`, `demo`, `flash` and `deploy`: device code onto a twin or a board.

A thin layer over warden.board (build, twin, watch, demo, flash, deploy): it parses options
and prints; it must not do any step itself.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import click

from .common import WardenGroup, console, fail, pass_state


# -- build ---------------------------------------------------------------------------------------
@click.group(cls=WardenGroup)
def build():
    """Compile device code."""


@build.command("app")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default build/app).")
@click.option("--bundle", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also pack firmware/ and lib/ as an OTA app bundle file (then `warden sign` it).")
def build_app(out, bundle):
    """Compile firmware/ and lib/ to .mpy with mpy-cross (only what changed)."""
    from ..board import build as b

    files = b.build_app(out)
    total = sum(len(v) for v in files.values())
    console.print(f"app built: {len(files)} files, {total} bytes -> {out or b.ROOT / 'build' / 'app'}")
    if bundle:
        from ..ota.image import pack_bundle
        from ..state import write_file
        write_file(bundle, pack_bundle(files))
        console.print(f"app bundle: {bundle} ({bundle.stat().st_size} bytes)")


# -- twin ----------------------------------------------------------------------------------------
@click.group(cls=WardenGroup)
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
    from ..fleet import devices
    from ..board import twin as t

    from ..broker.server import client_address

    devices.active_device(state, thing, "every broker refuses its certificate, so its twin could only fail to "
                          "connect (it would log `connect failed: OSError: 32`, not knowing why)")
    path = t.flash_path(state, thing)
    if not path.exists():
        raise t.TwinError(f"no twin flash at {path}", hint=f"run `warden device add {thing}` first")
    heap = heap or t.DEFAULT_HEAP
    # The lock first: a second copy must not even rewrite the flash of the one that runs.
    with t.TwinLock(path) as lock:
        if not keep_app:
            t.sync_app(path)
        host, port, source = client_address(state)
        t.update_config(path, broker={"host": host, "port": port})
        if interval_ms:
            t.update_config(path, interval_ms=interval_ms)
        console.print(f"twin {thing}: flash {path}, heap {heap}, broker {host}:{port} ({source}). "
                      "Ctrl-C stops it.", style="dim")

        def on_term(signum, frame):
            raise KeyboardInterrupt  # SIGTERM stops the twin as cleanly as Ctrl-C

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            code = t.run_twin(path, heap=heap, lock=lock)
        except KeyboardInterrupt:
            console.print("twin stopped", style="dim")
            return
        finally:
            signal.signal(signal.SIGTERM, previous)
    if code != 0:
        fail(f"the twin exited with code {code} (see its output above)",
             "a device error that escapes main.py drops a board to its REPL; the twin exits instead")


# -- watch ---------------------------------------------------------------------------------------
@click.command()
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
    from ..board import watch as w
    from ..fleet.principals import resolve

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

    from ..broker.server import client_address

    kinds = ("telemetry", "status") if status else ("telemetry",)
    host, port, source = client_address(state)
    if not as_json:
        console.print(f"watching {host}:{port} ({source}) as {cn} "
                      f"({'all devices' if not thing else thing}); Ctrl-C stops", style="dim")
    try:
        w.watch(state, thing=thing, count=count, timeout=timeout, on_message=show, kinds=kinds, principal=cn,
                host=host, port=port)
    except KeyboardInterrupt:
        pass


# -- demo ----------------------------------------------------------------------------------------
@click.command()
@click.argument("thing", default="twin-001")
@pass_state
@click.pass_context
def demo(ctx, state, thing):
    """Broker + one twin + the live view (what `make run` does). Ctrl-C stops all of it."""
    from ..board import demo as d

    d.run_demo(state, thing, watch=lambda: ctx.invoke(watch, thing=thing, status=True),
               say=lambda s: console.print(s, style="dim"))


@click.command("flash")
@click.option("--port", default="auto", show_default=True,
              help="Serial port of the board (/dev/ttyUSB0, /dev/cu.usbserial-*, COM3); auto: the one board attached.")
@click.option("--firmware", "firmware", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="MicroPython .bin, OTA variant: the combined firmware.bin, or micropython.bin (app only).")
@click.option("--chip", default="esp32", show_default=True, help="esptool chip name.")
@click.option("--erase/--no-erase", default=None,
              help="Erase the whole flash first (default for a combined image; wipes identity and logs).")
@click.option("--baud", type=click.IntRange(9600), default=460800, show_default=True)
@click.option("--check-only", is_flag=True, help="Only check the image (esptool image-info, layout, size).")
@click.option("--yes", is_flag=True, help="Erase without asking (scripts).")
def flash_cmd(port, firmware, chip, erase, baud, check_only, yes):
    """Check a MicroPython image offline, then erase and write it with esptool."""
    from ..board import flash as lib

    info = lib.inspect_image(firmware, chip)
    console.print(f"{firmware}: {info.kind} image for {info.chip}, app {info.app_size} bytes "
                  f"({100 * info.app_size // lib.SLOT_SIZE}% of the 1.5 MiB slot)"
                  + (f", {info.project} {info.version}" if info.version else ""))
    if check_only:
        return
    if erase is None:
        erase = info.kind == "combined"
    from ..board.ports import resolve

    port = resolve(port)
    steps = lib.flash_plan(port, info, erase, baud)
    if erase:
        console.print("[yellow]erasing the whole flash:[/] the board's filesystem goes too: its identity, its "
                      "log and its security counters. `warden deploy THING` puts the device back, counters "
                      "included (from the registry)")
        if not yes:
            import sys

            if not sys.stdin.isatty():
                raise lib.FlashError("erasing needs a yes: this wipes the board's identity, log and counters",
                                     hint="pass --yes, or --no-erase to write the image only")
            click.confirm("erase the whole flash of the board?", abort=True)
    lib.run_steps(steps, say=lambda s: console.print(s, style="dim", markup=False))
    console.print(f"[bold green]flashed[/] {firmware} at 0x{info.offset:x}. Next: warden deploy THING --port {port} "
                  "--broker-host HOST")


@click.command("deploy")
@click.argument("thing")
@click.option("--port", default="auto", show_default=True,
              help="Serial port of the board; auto: the one board attached (with --image-only: only shown).")
@click.option("--image", "use_image", is_flag=True, help="Write a littlefs image with esptool instead of mpremote.")
@click.option("--image-only", "image_only", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Only build the filesystem image into this file (write it at 0x310000 yourself).")
@click.option("--wifi-ssid", default=None, help="Wi-Fi network the board joins.")
@click.option("--wifi-password-env", default="WARDEN_WIFI_PASSWORD", show_default=True,
              help="Environment variable holding the Wi-Fi password (never a command-line argument).")
@click.option("--broker-host", default=None,
              help="Broker address the board connects to (required; a name or IP its certificate carries).")
@click.option("--broker-port", type=click.IntRange(1, 65535), default=None)
@click.option("--broker-hostname", default=None, help="Name in the broker's certificate, if not --broker-host.")
@click.option("--broker", "broker_kind", type=click.Choice(["mosquitto", "aws"]), default="mosquitto",
              show_default=True, help="aws: AWS IoT Core's ATS endpoint (warden aws setup) and Amazon's root CAs.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON merged over the generated device config (sensors, interval_ms, ...).")
@click.option("--force-identity", is_flag=True, help="Replace an identity already on the board.")
@click.option("--chip", default="esp32", show_default=True)
@pass_state
def deploy_cmd(state, thing, port, use_image, image_only, wifi_ssid, wifi_password_env, broker_host,
               broker_port, broker_hostname, broker_kind, config_file, force_identity, chip):
    """Write THING's app, identity, keys and config to a board (mpremote, or a littlefs image)."""
    import json

    from ..board import deploy as lib
    from ..board.flash import command_line

    extra = {}
    if config_file:
        try:
            extra = json.loads(config_file.read_text())
        except (OSError, ValueError) as e:
            raise lib.DeployError(f"cannot read {config_file}: {e}", hint="give a JSON object") from e
        if not isinstance(extra, dict):
            raise lib.DeployError(f"{config_file} must hold a JSON object",
                                  hint='for example {"interval_ms": 10000, "sensors": {...}} (docs/device.md)')
    password = os.environ.get(wifi_password_env) if wifi_ssid else None
    if wifi_ssid and password is None:
        raise lib.DeployError(f"${wifi_password_env} is not set",
                              hint=f"export {wifi_password_env}=... (an empty value for an open network)")
    if not wifi_ssid and "wifi" not in extra:
        console.print("[yellow]warning:[/] no --wifi-ssid: the board will wait for a Wi-Fi config")
    # before anything is built or touched: a board that cannot verify its broker is half deployed
    if broker_kind == "aws":
        from ..aws.device import broker as aws_broker

        b = aws_broker(state)
        broker_host, broker_port, broker_hostname = b["host"], b["port"], None
        console.print(f"broker: AWS IoT Core {broker_host}:{broker_port}, trusted through Amazon's root CAs", style="dim")
    else:
        which = lib.check_broker_address(state, broker_host, broker_hostname)
        console.print(f"broker {broker_hostname or broker_host}: named by the certificate of {which}", style="dim")
    cfg = lib.board_config(state, thing, wifi_ssid=wifi_ssid, wifi_password=password, broker_host=broker_host,
                           broker_port=broker_port, hostname=broker_hostname, **extra)
    say = lambda s: console.print(s, style="dim")  # noqa: E731
    if image_only:
        out, files = lib.write_image_file(state, thing, cfg, image_only)
        b = lib.budget(files)
        shown = port if port and port != "auto" else "PORT"   # no board needed to build an image
        console.print(f"[bold green]image written[/] {out}: {len(files)} files; vfs budget {b.need} of {b.total} "
                      f"bytes (2 app slots, 256 KiB log quota). Write it with:")
        console.print("  " + command_line(lib.write_image_argv(shown, out, chip)), markup=False)
        return
    from ..board.ports import resolve

    port = resolve(port)
    if use_image:
        r = lib.deploy_image(state, thing, port, cfg, force_identity=force_identity, chip=chip, say=say)
    else:
        r = lib.deploy_mpremote(state, thing, port, cfg, force_identity=force_identity, say=say)
    console.print(f"[bold green]deployed[/] {thing}: {len(r.files)} files verified by SHA-256"
                  + ("" if r.identity_written else " (identity already on the board, kept)"))
    if r.saved_logs:
        console.print(f"log segments that were on the board: {r.saved_logs}")
    console.print("watch it: warden watch --thing " + thing)
