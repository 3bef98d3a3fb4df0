"""The `warden` command line: a thin click layer over the warden library.

Every command calls library functions; the command modules only parse options and print. Errors
the user can fix (any `warden.errors.WardenError`, or an OSError such as a permission problem)
print `error: ...` and what to do, and exit with code 1, never with a traceback (cli/common.py).

This module defines the `main` group and registers every command on it, here and nowhere else:
a command module defines its groups and commands (`@click.group(cls=WardenGroup)`,
`@click.command()`) and never touches `main`; add a new one below with `main.add_command`.
Importing a command module registers nothing.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..state import ENV_VAR, ORIGIN_ENV, ORIGIN_OPTION, State
from . import aws, board, broker, dashboard, fleet, logs, monitor, ota, policy, rollout, status
from .common import WardenGroup


@click.group(cls=WardenGroup)
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), envvar=ENV_VAR,
              default=None, help=f"Project state folder (or ${ENV_VAR}; default: the first .warden/ "
                                 "from here upwards, as git finds its repository, else ./.warden).")
@click.version_option(package_name="warden-tools", prog_name="warden")
@click.pass_context
def main(ctx, state_dir):
    """Warden: provision, run, update and audit a fleet of ESP32 devices."""
    if state_dir is None:
        ctx.obj = State.locate()
    else:
        source = ctx.get_parameter_source("state_dir")
        ctx.obj = State(state_dir, ORIGIN_ENV if source == click.core.ParameterSource.ENVIRONMENT else ORIGIN_OPTION)


cli = main

# The fleet's identities: pki init; device add/list/revoke/rotate; principal add/list/revoke/rotate; audit
main.add_command(fleet.pki)
main.add_command(fleet.device)
main.add_command(fleet.principal)
main.add_command(fleet.audit)
# The policy: render, check
main.add_command(policy.policy)
# Brokers: run, config, sync, list, forget
main.add_command(broker.broker)
# Device code onto a twin or a board, and watching it
main.add_command(board.build)
main.add_command(board.twin)
main.add_command(board.watch)
main.add_command(board.demo)
main.add_command(board.flash_cmd)
main.add_command(board.deploy_cmd)
# The device's encrypted log: pull, show
main.add_command(logs.logs)
# Signed OTA: keys, sign, ota inspect/push/status
main.add_command(ota.keys)
main.add_command(ota.sign)
main.add_command(ota.ota)
# The doctor: the state, brokers, twins and keys, and what is inconsistent
main.add_command(status.status)
# AWS IoT Core as the fleet's broker: setup, sync, audit
main.add_command(aws.aws)
# The fleet's monitor: status, metrics and broker signals against rules.json; alerts; quarantine
main.add_command(monitor.monitor)
main.add_command(rollout.rollout)
fleet.device.add_command(monitor.device_quarantine)
fleet.device.add_command(monitor.device_unquarantine)
# The fleet's web page: devices, vitals, alerts, rollouts (reads only)
main.add_command(dashboard.dashboard)
