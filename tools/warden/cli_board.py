"""`warden flash` and `warden deploy`: MicroPython and a device's files onto a real ESP32."""
from __future__ import annotations

import os
from pathlib import Path

import click

from .cli import console, main, pass_state


@main.command("flash")
@click.option("--port", required=True, help="Serial port of the board (/dev/ttyUSB0, /dev/cu.usbserial-*, COM3).")
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
    from .board import flash as lib

    info = lib.inspect_image(firmware, chip)
    console.print(f"{firmware}: {info.kind} image for {info.chip}, app {info.app_size} bytes "
                  f"({100 * info.app_size // lib.SLOT_SIZE}% of the 1.5 MiB slot)"
                  + (f", {info.project} {info.version}" if info.version else ""))
    if check_only:
        return
    if erase is None:
        erase = info.kind == "combined"
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
    lib.run_steps(steps, say=lambda s: console.print(f"esptool: {s}", style="dim"))
    console.print(f"[bold green]flashed[/] {firmware} at 0x{info.offset:x}. Next: warden deploy THING --port {port}")


@main.command("deploy")
@click.argument("thing")
@click.option("--port", default=None, help="Serial port of the board (not needed with --image-only).")
@click.option("--image", "use_image", is_flag=True, help="Write a littlefs image with esptool instead of mpremote.")
@click.option("--image-only", "image_only", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Only build the filesystem image into this file (write it at 0x310000 yourself).")
@click.option("--wifi-ssid", default=None, help="Wi-Fi network the board joins.")
@click.option("--wifi-password-env", default="WARDEN_WIFI_PASSWORD", show_default=True,
              help="Environment variable holding the Wi-Fi password (never a command-line argument).")
@click.option("--broker-host", default=None, help="Broker address the board connects to (default: the project's).")
@click.option("--broker-port", type=click.IntRange(1, 65535), default=None)
@click.option("--broker-hostname", default=None, help="Name in the broker's certificate, if not --broker-host.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON merged over the generated device config (sensors, interval_ms, ...).")
@click.option("--force-identity", is_flag=True, help="Replace an identity already on the board.")
@click.option("--chip", default="esp32", show_default=True)
@pass_state
def deploy_cmd(state, thing, port, use_image, image_only, wifi_ssid, wifi_password_env, broker_host,
               broker_port, broker_hostname, config_file, force_identity, chip):
    """Write THING's app, identity, keys and config to a board (mpremote, or a littlefs image)."""
    import json

    from .board import deploy as lib

    extra = {}
    if config_file:
        try:
            extra = json.loads(config_file.read_text())
        except (OSError, ValueError) as e:
            raise lib.DeployError(f"cannot read {config_file}: {e}", hint="give a JSON object") from e
        if not isinstance(extra, dict):
            raise lib.DeployError(f"{config_file} must hold a JSON object")
    password = os.environ.get(wifi_password_env) if wifi_ssid else None
    if wifi_ssid and password is None:
        raise lib.DeployError(f"${wifi_password_env} is not set",
                              hint=f"export {wifi_password_env}=... (an empty value for an open network)")
    if not wifi_ssid and "wifi" not in extra:
        console.print("[yellow]warning:[/] no --wifi-ssid: the board will wait for a Wi-Fi config")
    cfg = lib.board_config(state, thing, wifi_ssid=wifi_ssid, wifi_password=password, broker_host=broker_host,
                           broker_port=broker_port, hostname=broker_hostname, **extra)
    say = lambda s: console.print(s, style="dim")  # noqa: E731
    if image_only:
        out, files = lib.write_image_file(state, thing, cfg, image_only)
        b = lib.budget(files)
        console.print(f"[bold green]image written[/] {out}: {len(files)} files; vfs budget {b.need} of {b.total} "
                      f"bytes (2 app slots, 256 KiB log quota). Write it: esptool write-flash 0x{lib.VFS.offset:x} {out}")
        return
    if not port:
        raise lib.DeployError("no serial port given", hint="pass --port (or --image-only FILE)")
    if use_image:
        r = lib.deploy_image(state, thing, port, cfg, force_identity=force_identity, chip=chip, say=say)
    else:
        r = lib.deploy_mpremote(state, thing, port, cfg, force_identity=force_identity, say=say)
    console.print(f"[bold green]deployed[/] {thing}: {len(r.files)} files verified by SHA-256"
                  + ("" if r.identity_written else " (identity already on the board, kept)"))
    if r.saved_logs:
        console.print(f"log segments that were on the board: {r.saved_logs}")
    console.print("watch it: warden watch --thing " + thing)
