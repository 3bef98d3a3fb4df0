"""`warden dashboard`: serve the fleet's web page (warden.dashboard; docs/dashboard.md).

A thin layer over warden.dashboard.server: it must not decide who may look, nor read the stores.
"""
from __future__ import annotations

import click

from .common import console, pass_state


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but the loopback needs --principal and serves mutual TLS.")
@click.option("--port", type=int, default=8765, show_default=True, help="Port to listen on (0: any free one).")
@click.option("--principal", default=None, metavar="operator.NAME",
              help="The active operator principal the dashboard serves as off the loopback: HTTPS with a certificate "
                   "of the fleet CA, and only browsers with an operator's certificate are let in.")
@pass_state
def dashboard(state, host, port, principal):
    """Serve a live web page of the fleet, its devices' vitals and alerts, and the rollouts. It only
    reads; Ctrl-C stops it."""
    from ..dashboard.server import serve

    def ready(url):
        console.print(f"dashboard of {state.app} at {url} (state {state.root}); Ctrl-C stops it")

    serve(state, host, port, principal, ready=ready)
