"""`warden broker run|config|sync|list|forget`: the fleet's mosquitto brokers.

A thin layer over warden.broker (server: the broker `run` starts; control: `config`, `sync`)
and the registry's broker list: it must not configure or reach a broker itself.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import click

from .common import WardenGroup, console, fail, pass_state, report_brokers


# -- broker --------------------------------------------------------------------------------------
@click.group(cls=WardenGroup)
def broker():
    """The local MQTT broker (mosquitto, TLS with client certificates)."""


@broker.command("run")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="TCP port on 127.0.0.1 (default: the project's broker port, 8883).")
@pass_state
def broker_run(state, port):
    """Run the broker in the foreground until Ctrl-C."""
    import subprocess

    from ..broker.server import Broker, BrokerError
    from ..broker.control import CRL_CHECK_S, keep_crl_fresh

    b = Broker(state, port=port or state.broker_port, log_stdout=True, output=None)
    asked = []   # the signal that asked us to stop, once one did

    def on_stop(signum, frame):
        asked.append(signum)
        raise KeyboardInterrupt

    # Ctrl-C in a terminal signals mosquitto too (same process group): it may exit before we
    # see our own KeyboardInterrupt. The flag, set first, says the stop was asked for.
    previous = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        b.start()
        console.print(f"[bold green]broker running[/] on {b.host}:{b.port} (pid {b.pid}): TLS 1.2+, "
                      "client certificates from the fleet CA, ACL from the policy")
        console.print(f"config {b.conf_path}, log {b.log_path}. Ctrl-C stops it.")
        while not asked:
            try:
                code = b.wait(timeout=CRL_CHECK_S)
                break
            except subprocess.TimeoutExpired:
                keep_crl_fresh(state, b.name)    # the CRL never lapses on a broker left running
        if not asked:
            pid = b.pid
            b.stop()
            if code == 0:
                raise BrokerError(f"mosquitto (pid {pid}) was stopped from outside warden (it exits 0 on "
                                  "SIGINT/SIGTERM): the broker is down",
                                  hint="start it again with `warden broker run`; stop it with Ctrl-C here")
            raise BrokerError(f"mosquitto (pid {pid}) exited by itself with code {code}:\n{b.log_tail()}",
                              hint=f"see {b.log_path}")
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        b.stop()
    console.print("broker stopped")


# -- brokers anywhere ----------------------------------------------------------------------------
@broker.command("config")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--listen", required=True, help="ADDR:PORT the broker listens on, e.g. 0.0.0.0:8883.")
@click.option("--name", "names", multiple=True,
              help="A host name or address clients use to reach it (repeat); its certificate names them all.")
@click.option("--id", "broker_id", default=None, help="Its name in `warden broker list` (default: first name:port).")
@click.option("--install-dir", type=click.Path(path_type=Path), default=None,
              help="Where the folder will live on the broker's host (default: OUT_DIR as it is here).")
@pass_state
def broker_config(state, out_dir, listen, names, broker_id, install_dir):
    """Write a self-contained broker config folder for a LAN or server host (run it with
    `mosquitto -c OUT_DIR/mosquitto.conf`, or under systemd with the unit file beside it)."""
    from ..broker import control as brokerctl

    r = brokerctl.write_broker_config(state, out_dir, listen, names, name=broker_id, install_dir=install_dir)
    console.print(f"[bold green]broker {r.name}[/] written to {r.folder}: listens on {r.listen}, "
                  f"certificate for {', '.join(r.names)}")
    console.print(f"run it:  mosquitto -c {r.conf}")
    console.print(f"systemd: {r.unit} (install steps inside)")
    console.print(f"devices and tools reach it as {r.names[0]}:{r.listen.rsplit(':', 1)[1]}; "
                  "revocations reach it over that listener")


@broker.command("sync")
@click.option("--only", default=None, help="Only this broker (a name from `warden broker list`).")
@pass_state
def broker_sync(state, only):
    """Bring every broker up to date: CRL (renewed if it is close to lapsing), ACL and bans."""
    from ..broker import control as brokerctl

    report_brokers(brokerctl.sync(state, only=only), "the fleet's revocations and ACL")
    console.print("brokers in sync", style="green")


@broker.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def broker_list(state, as_json):
    """The brokers warden configured, and whether the last revocation reached each."""
    from ..fleet.registry import Registry

    with Registry(state.registry_path) as reg:
        rows = reg.brokers()
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    if not rows:
        console.print("no brokers yet: `warden broker run` (local) or `warden broker config` (another host)")
    for r in rows:
        state_text = f"[red]pending: {r.pending}[/]" if r.pending else f"applied {r.applied or '-'}"
        console.print(f"[bold]{r.name}[/]  {r.host}:{r.port}  {r.folder}  {state_text}")


@broker.command("forget")
@click.argument("name")
@pass_state
def broker_forget(state, name):
    """Stop tracking broker NAME (it was shut down for good)."""
    from ..fleet.registry import Registry

    with Registry(state.registry_path) as reg:
        if not reg.forget_broker(name):
            fail(f"no broker named {name!r}", "see `warden broker list`")
    console.print(f"broker {name} forgotten")
