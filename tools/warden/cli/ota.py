"""CLI for signed OTA: `warden keys init|encrypt|rotate|revoke|give|show`, `warden sign`,
`warden ota inspect|push|status`.

A thin layer over warden.ota (keys, image, push): it must not sign, verify or send anything
itself. warden/cli/__init__.py registers these commands on `main`.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from .common import WardenGroup, console, pass_state, print_table


# -- keys ----------------------------------------------------------------------------------------
@click.group(cls=WardenGroup)
def keys():
    """The fleet's OTA signing key (RSA-3072)."""


def _new_secret(encrypt: bool):
    """The passphrase a new key is encrypted with (--encrypt), or None."""
    from ..ota import keys as lib

    if not encrypt:
        return None
    secret = lib.passphrase("passphrase for the new signing key: ", confirm=True, env=lib.NEW_PASSPHRASE_ENV) \
        or lib.passphrase(env=lib.PASSPHRASE_ENV)
    if not secret:
        raise lib.KeysError("--encrypt needs a passphrase",
                            hint=f"set ${lib.NEW_PASSPHRASE_ENV} (or ${lib.PASSPHRASE_ENV}), or run it on a terminal")
    return secret


@keys.command("init")
@click.option("--encrypt", is_flag=True,
              help="Keep the key encrypted with a passphrase ($WARDEN_SIGNING_PASSPHRASE, or asked for).")
@pass_state
def keys_init(state, encrypt):
    """Create the fleet's OTA signing key and the trusted-key file devices are provisioned with."""
    from ..ota import keys as lib

    secret = _new_secret(encrypt)
    with console.status("generating an RSA-3072 key..."):
        info = lib.init_keys(state, secret)
    console.print(f"[bold green]OTA signing key created[/], key id [bold]{info.key_id}[/]"
                  + (" (encrypted)" if secret else ""))
    _show(info)
    from ..fleet.devices import list_devices

    before = [d.thing for d in list_devices(state, "active")]
    if before:
        console.print(f"[yellow]{len(before)} device(s) made before this key do not trust it yet[/] "
                      f"({', '.join(before[:5])}{' ...' if len(before) > 5 else ''}): give it to a twin with "
                      "`warden keys give THING`, to a board with `warden deploy THING`")


@keys.command("encrypt")
@pass_state
def keys_encrypt(state):
    """Encrypt the signing key with a passphrase (or change it: the old one is asked for first)."""
    from ..ota import keys as lib

    old = lib.passphrase("current passphrase: ") if lib.is_encrypted(state) else None
    new = lib.passphrase("new passphrase: ", confirm=True, env=lib.NEW_PASSPHRASE_ENV)
    if not new:
        raise lib.KeysError("no new passphrase given",
                            hint=f"run it on a terminal, or set ${lib.NEW_PASSPHRASE_ENV} (and "
                                 f"${lib.PASSPHRASE_ENV} for the current one)")
    lib.encrypt_key(state, new, old)
    console.print("[bold green]signing key encrypted[/]: signing now needs the passphrase "
                  f"(${lib.PASSPHRASE_ENV} in CI)")


@keys.command("rotate")
@click.option("--encrypt", is_flag=True, help="Keep the new key encrypted ($WARDEN_NEW_SIGNING_PASSPHRASE or asked).")
@pass_state
def keys_rotate(state, encrypt):
    """A new signing key, and the signed key update that makes devices trust it (push it to each)."""
    from ..ota import keys as lib

    with console.status("generating an RSA-3072 key..."):
        info, update = lib.rotate(state, _new_secret(encrypt))
    console.print(f"[bold green]new signing key[/] {info.key_id}; the previous one stays trusted until revoked")
    console.print(f"key update: {update}. Push it to every device: warden ota push THING {update}")
    console.print("new devices (device add, deploy) trust both keys already", style="dim")


@keys.command("revoke")
@click.argument("key_id")
@pass_state
def keys_revoke(state, key_id):
    """Stop trusting KEY_ID (a leaked or retired key): a signed key update without it."""
    from ..ota import keys as lib

    update = lib.revoke(state, key_id)
    console.print(f"[bold red]key {key_id} revoked[/] here; key update: {update}")
    console.print(f"push it to every device: warden ota push THING {update} (until then they still trust it)")


@keys.command("give")
@click.argument("thing")
@pass_state
def keys_give(state, thing):
    """Give THING's twin the fleet's trusted keys (a device made before `keys init` has none)."""
    from ..ota import keys as lib

    files = lib.give_to_twin(state, thing)
    console.print(f"[bold green]{thing}[/] now trusts: {', '.join(files)}")


@keys.command("show")
@pass_state
def keys_show(state):
    """Show the signing key's id and files."""
    from ..ota import keys as lib

    info = lib.info(state)
    console.print(f"key id [bold]{info.key_id}[/] (RSA-3072, PSS/SHA-256)")
    _show(info)


def _show(info):
    from ..ota.keys import device_key_name

    table = Table("file", "path", box=None, pad_edge=False)
    table.add_row("private key (0600)", str(info.private_path))
    table.add_row("public key", str(info.public_path))
    table.add_row("device trusted key", f"{info.device_path} -> {device_key_name(bytes.fromhex(info.key_id))}")
    print_table(table)


# -- sign ----------------------------------------------------------------------------------------
@click.command("sign")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["app", "firmware"]), required=True,  # keys: `keys rotate/revoke`
              help="app: a bundle from `warden build app --bundle`; firmware: a MicroPython ESP32 .bin.")
@click.option("--version", "version", required=True, help="Version string the device reports (1-32 chars).")
@click.option("--counter", type=int, required=True,
              help="Security counter: devices refuse a counter not above the one they run.")
@click.option("--target", default=None, help='Device target "<chip>/<app>" (default esp32/<project app>).')
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file (default FILE.wup).")
@click.option("--key", "key_id", default=None,
              help="Sign with this still-trusted previous key (during a rotation; default: the current key).")
@pass_state
def sign(state, file, kind, version, counter, target, out, key_id):
    """Sign FILE as an update: manifest (kind, target, version, counter, size, SHA-256) + RSA-PSS."""
    from ..ota import image

    path, m = image.sign_file(state, file, kind, version, counter, target, out, key_id=key_id)
    console.print(f"[bold green]signed[/] {m.kind} {m.version} (counter {m.counter}) for {m.target}: {path}")
    console.print(f"payload {m.size} bytes, SHA-256 {m.sha256.hex()}, key {m.key_id.hex()}", style="dim")


# -- ota -----------------------------------------------------------------------------------------
@click.group(cls=WardenGroup)
def ota():
    """Signed over-the-air updates."""


@ota.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", default=None, help="Also require this target (default: the project's).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@pass_state
def ota_inspect(state, file, target, as_json):
    """Show an update's manifest and check it as a device would (exit 1 if a device would refuse it)."""
    from ..ota import image, keys as k

    data = file.read_bytes()
    facts = image.inspect(data)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
    else:
        table = Table("field", "value", box=None, pad_edge=False)
        for key, value in facts.items():
            table.add_row(key, str(value))
        print_table(table)
    m = image.verify(data, k.trusted_keys(state), target=target or image.default_target(state))
    if not as_json:
        console.print(f"[bold green]valid[/]: signed by trusted key {m.key_id.hex()}, payload matches")


@ota.command("push")
@click.argument("thing")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for each answer from the device.")
@click.option("--confirm-timeout", type=float, default=180.0, show_default=True,
              help="Seconds to wait for the self-test after the device resets.")
@click.option("--as", "as_", default="technician.default", show_default=True,
              help="The technician principal to act as (ROLE.NAME, or NAME for a technician).")
@click.option("--takeover", is_flag=True,
              help="Replace a transfer another technician began (they are gone): theirs is abandoned.")
@click.option("--window", type=click.IntRange(1, 20), default=16, show_default=True,
              help="Chunks in flight (1: stop-and-wait); at most the broker's in-flight limit, 20.")
@click.option("--wait-wake", type=float, default=0, show_default=True,
              help="Seconds to wait for a device that sleeps between readings to wake and take the update.")
@click.option("--json", "as_json", is_flag=True, help="No progress bar; print the outcome as JSON (same exit codes).")
@pass_state
def ota_push(state, thing, file, timeout, confirm_timeout, as_, takeover, window, wait_wake, as_json):
    """Send a signed update to THING, show its progress, and report the outcome.

    Exit 0: installed and confirmed; 2: rejected by the device (its reason); 3: rolled back
    after a failed self-test (its reason); 1: anything else (nothing changed). Interrupt it and
    run it again to resume."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from ..ota import push as otapush
    from ..fleet.principals import resolve

    cn = resolve(as_, None if "." in as_ else "technician")
    if as_json:
        out = otapush.push(state, thing, file, timeout=timeout, confirm_timeout=confirm_timeout, principal=cn,
                           takeover=takeover, window=window, wake_timeout=wait_wake or None)
        _print_outcome_json(thing, cn, out)
        raise click.exceptions.Exit(otapush.EXIT_CODES[out.result])
    console.print(f"as {cn}", style="dim")
    if wait_wake:
        console.print(f"waiting for {thing} to wake (up to {wait_wake:g} s): it takes the update at its next "
                      "reading and stays awake until it is installed")
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(f"{thing}: sending", total=None)

        where = {}    # the device's last offset: all before it is written on the device

        def progress(off, size):
            where.update(off=off, size=size)
            bar.update(task, completed=off, total=size)
            if off >= size:
                bar.update(task, description=f"{thing}: installing, then the self-test")

        try:
            out = otapush.push(state, thing, file, progress=progress, timeout=timeout,
                               confirm_timeout=confirm_timeout, principal=cn, takeover=takeover, window=window,
                               wake_timeout=wait_wake or None)
        except KeyboardInterrupt:
            bar.stop()
            _interrupted(thing, file, where, otapush.CHUNK)
    what = f"{out.kind} {out.version} (counter {out.counter})"
    if out.result == otapush.INSTALLED:
        extra = f", resumed at byte {out.resumed_from}" if out.resumed_from else ""
        console.print(f"[bold green]installed and confirmed[/]: {what} in {out.seconds:.1f} s{extra}")
    elif out.result == otapush.REJECTED:
        console.print(f"[bold red]rejected[/] by {thing}: {out.reason}")
        if (out.reason or "").startswith("unknown signing key"):
            console.print(f"{thing} does not trust this fleet's key (made before `warden keys init`?): "
                          f"`warden keys give {thing}` (a twin) or `warden deploy {thing}` (a board)")
    else:
        console.print(f"[bold yellow]rolled back[/] by {thing}: {out.reason}")
    raise click.exceptions.Exit(otapush.EXIT_CODES[out.result])


def _print_outcome_json(thing, principal, out):
    from dataclasses import asdict

    click.echo(json.dumps({"thing": thing, "as": principal, **asdict(out)}, indent=2))


def _interrupted(thing, file, where, chunk):
    """Ctrl-C during a push: say where it stopped and how to go on, then exit 130."""
    again = f"`warden ota push {thing} {file}`"
    if "off" not in where:
        console.print(f"[yellow]interrupted[/] before {thing} accepted the update: nothing was sent. "
                      f"Run {again} to start it")
    elif where["off"] < where["size"]:
        off, size = where["off"], where["size"]
        console.print(f"[yellow]interrupted[/] at chunk {off // chunk + 1} of {-(-size // chunk)}: {thing} holds "
                      f"{off:,} of {size:,} bytes. Run the same {again} again to resume from byte {off:,}")
    else:
        console.print(f"[yellow]interrupted[/] after all {where['size']:,} bytes were sent: {thing} installs and "
                      f"runs its self-test on its own. `warden ota status {thing}` shows the outcome")
    raise click.exceptions.Exit(130)


@ota.command("rollback")
@click.argument("thing")
@click.option("--kind", type=click.Choice(["app", "firmware"]), default="app", show_default=True)
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for each answer from the device.")
@click.option("--confirm-timeout", type=float, default=180.0, show_default=True,
              help="Seconds to wait for the self-test after the device resets.")
@click.option("--as", "as_", default="technician.default", show_default=True,
              help="The technician principal to act as (ROLE.NAME, or NAME for a technician).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (same exit codes).")
@pass_state
def ota_rollback(state, thing, kind, timeout, confirm_timeout, as_, as_json):
    """Roll THING back to the version in its other slot, with no download.

    A rollback is signed with the project's signing key and carries a new counter, so the device
    checks it as an update (and refuses it when its other slot holds no installed update, or
    something other than what it recorded). Exit codes as `ota push`."""
    from ..ota import push as otapush
    from ..fleet.principals import resolve

    cn = resolve(as_, None if "." in as_ else "technician")
    if not as_json:
        console.print(f"as {cn}", style="dim")
    out = otapush.rollback(state, thing, kind, timeout=timeout, confirm_timeout=confirm_timeout, principal=cn)
    if as_json:
        _print_outcome_json(thing, cn, out)
        raise click.exceptions.Exit(otapush.EXIT_CODES[out.result])
    what = f"{out.kind} {out.version} (counter {out.counter})"
    if out.result == otapush.INSTALLED:
        console.print(f"[bold green]rolled back and confirmed[/]: {what} in {out.seconds:.1f} s")
    elif out.result == otapush.REJECTED:
        console.print(f"[bold red]refused[/] by {thing}: {out.reason}")
    else:
        console.print(f"[bold yellow]the rollback did not pass its self-test[/] on {thing}: {out.reason}")
    raise click.exceptions.Exit(otapush.EXIT_CODES[out.result])


@ota.command("status")
@click.argument("thing")
@click.option("--json", "as_json", is_flag=True)
@click.option("--as", "as_", default="technician.default", show_default=True,
              help="The technician principal to act as (ROLE.NAME, or NAME for a technician).")
@pass_state
def ota_status(state, thing, as_json, as_):
    """THING's versions, slots, pending update and last OTA outcome (asks the device)."""
    from ..ota import push as otapush
    from ..fleet.principals import resolve

    cn = resolve(as_, None if "." in as_ else "technician")
    if not as_json:
        console.print(f"as {cn}", style="dim")
    st = otapush.status(state, thing, principal=cn)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    dev = st["device"]
    table = Table("", "version", "counter", "running slot", box=None, pad_edge=False)
    for kind in ("app", "firmware"):
        k = dev.get(kind) or {}
        table.add_row(kind, str(k.get("version") or "factory"), str(k.get("counter")), str(k.get("slot")))
    print_table(table)
    if dev.get("pending"):
        p = dev["pending"]
        console.print(f"awaiting its self-test: {p['kind']} {p['version']}")
    if dev.get("receiving"):
        r = dev["receiving"]
        console.print(f"receiving: {r['kind']} {r['version']}, {r['offset']} of {r['size']} bytes")
    last = dev.get("last")
    if last:
        why = f": {last['reason']}" if last.get("reason") else ""
        console.print(f"last update: {last['kind']} {last['version']} {last['outcome']}{why}")
    reg = st["registry"]
    console.print(f"registry: version {reg['version'] or '-'}, counter {reg['counter']}", style="dim")
