"""The dashboard's web server (aiohttp): the page, its static files and the JSON it polls.

It decides who may look, and must not assemble data (data.py does) nor change anything: every
route is a GET. On loopback (the default) anyone on this machine may look, as they may run
`warden device list`; the Host header must then name the loopback too, so a web site that
points its own name at 127.0.0.1 (DNS rebinding) gets nothing from a browser here. Any other
address needs `principal`, an active operator principal: the server then speaks HTTPS only,
with a certificate of the fleet CA for that address (a session certificate of the principal,
logged, never written), and asks every client for a certificate of the fleet CA, checked
against the CRL in the handshake and, on every request, against the registry: an operator
principal, still active (one revoked after the server started is refused at once).

Every response says no-store (fleet data in no cache) and carries a Content-Security-Policy that
allows the page's own script and style only: nothing inline, nothing from elsewhere.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import tempfile
from pathlib import Path

from ..errors import WardenError
from ..state import State, ensure_dir, write_file, write_private
from . import data

STATIC = Path(__file__).with_name("static")
FILES = {"index.html": "text/html", "app.js": "application/javascript", "style.css": "text/css"}
LOOPBACK_NAMES = ("localhost",)
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class DashboardError(WardenError):
    hint = ("`warden dashboard` listens on 127.0.0.1; another address needs "
            "`--principal operator.NAME` (docs/dashboard.md, \"Beyond this machine\")")


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(state: State, host: str, principal: str | None) -> bool:
    """May the dashboard listen on `host`? Returns True when it must serve mutual TLS (any address
    but the loopback); raises DashboardError when it may not."""
    from ..fleet import pki
    from ..fleet.names import parse_principal
    from ..fleet.principals import PrincipalError, check_active

    if principal is not None:
        parsed = parse_principal(principal)
        if not parsed or parsed[0] != "operator":
            raise DashboardError(f"{principal!r} is not an operator principal",
                                 hint="give --principal operator.NAME (`warden principal list` shows them)")
        if not pki.has_ca(state):
            raise DashboardError("there is no fleet CA in this state", hint="run `warden pki init` first")
        try:
            check_active(state, principal)
        except PrincipalError as e:
            raise DashboardError(f"cannot serve as {principal}: {e}", hint=e.hint) from None
    if is_loopback(host):
        return False
    if principal is None:
        raise DashboardError(
            f"will not listen on {host}, which is not the loopback, without an operator principal",
            hint=f"`warden dashboard --host {host} --principal operator.NAME` serves HTTPS there and admits "
                 "only browsers with an operator's certificate of the fleet CA (docs/dashboard.md)")
    return True


def tls_context(state: State, principal: str, hosts) -> ssl.SSLContext:
    """The server's mutual-TLS context: a session server certificate of `principal` for `hosts`,
    client certificates required, from the fleet CA, checked against its CRL."""
    from ..fleet import pki

    cert, key = pki.issue_session_server(state, principal, hosts)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ca, _, _, crl = pki.broker_paths(state)
    ctx.load_verify_locations(cafile=str(ca))
    if crl.exists():
        ctx.load_verify_locations(cafile=str(crl))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    # The ssl module loads keys from files only: a private folder, deleted at once.
    ensure_dir(state.pki_dir)
    with tempfile.TemporaryDirectory(dir=state.pki_dir, prefix=".dashboard-") as tmp:
        cert_file, key_file = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        write_file(cert_file, pki.cert_pem(cert), 0o600)
        write_private(key_file, pki.key_pem(key))
        ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def server_hosts(host: str) -> list:
    """The names a server certificate for `host` carries: the address, or for a wildcard bind the
    machine's names (a browser checks the name it was given against them)."""
    import socket

    if host in ("0.0.0.0", "::", ""):
        names = [socket.gethostname(), socket.getfqdn()]
        try:
            names.append(socket.gethostbyname(socket.gethostname()))
        except OSError:
            pass
        names += ["localhost", "127.0.0.1"]
    else:
        names = [host]
    return list(dict.fromkeys(n for n in names if n))


def _peer_operator(state: State, peercert: dict | None) -> str | None:
    """The operator principal a client certificate (as ssl reports it) belongs to, if it is one,
    active in the registry; None otherwise."""
    from ..fleet.names import parse_principal
    from ..fleet.registry import Registry

    if not peercert:
        return None
    subject = {k: v for rdn in peercert.get("subject", ()) for k, v in rdn}
    cn = subject.get("commonName", "")
    base = cn.split("@", 1)[0]            # a session certificate of the principal: `<cn>@<tag>`
    parsed = parse_principal(base)
    if not parsed or parsed[0] != "operator" or subject.get("organizationalUnitName") != "operator":
        return None
    with Registry(state.registry_path) as reg:
        p = reg.principal(base)
    return base if p is not None and p.status == "active" and p.role == "operator" else None


def build_app(state: State, *, tls: bool = False):
    """The aiohttp application (routes, headers, the access check); `tls`: clients are admitted by
    their operator certificate, not by being on the loopback."""
    from aiohttp import web

    @web.middleware
    async def guard(request, handler):
        try:
            if tls:
                who = await asyncio.to_thread(_peer_operator, state, request.transport.get_extra_info("peercert"))
                if who is None:
                    raise web.HTTPForbidden(text="an active operator principal's certificate is required\n")
            else:
                name = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
                if not is_loopback(name):
                    raise web.HTTPMisdirectedRequest(text="this dashboard answers to its loopback address only\n")
            resp = await handler(request)
        except web.HTTPException as e:
            e.headers.update(HEADERS)
            raise
        resp.headers.update(HEADERS)
        return resp

    def static(name):
        body = (STATIC / name).read_bytes()

        async def handler(request):
            return web.Response(body=body, content_type=FILES[name], charset="utf-8")
        return handler

    def dumps(obj):
        return json.dumps(obj, default=str, sort_keys=True)

    async def snapshot(request):
        return web.json_response(await asyncio.to_thread(data.snapshot, state), dumps=dumps)

    async def device(request):
        out = await asyncio.to_thread(data.device, state, request.match_info["thing"])
        if out is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "no such device"}), content_type="application/json")
        return web.json_response(out, dumps=dumps)

    async def rollout(request):
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="since must be an event id\n") from None
        out = await asyncio.to_thread(data.rollout, state, request.match_info["name"], since)
        if out is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "no such rollout"}), content_type="application/json")
        return web.json_response(out, dumps=dumps)

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", static("index.html"))
    for name in FILES:
        if name != "index.html":
            app.router.add_get(f"/{name}", static(name))
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/api/device/{thing}", device)
    app.router.add_get("/api/rollout/{name}", rollout)
    return app


async def start(state: State, host: str = "127.0.0.1", port: int = 8765, principal: str | None = None):
    """Check the bind, start serving; returns (aiohttp AppRunner, URL). The caller cleans the runner up."""
    from aiohttp import web

    tls = check_bind(state, host, principal)
    ctx = tls_context(state, principal, server_hosts(host)) if tls else None
    runner = web.AppRunner(build_app(state, tls=tls), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ctx, reuse_address=True)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise DashboardError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                             hint="is another dashboard running there? choose another --port") from None
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = server_hosts(host)[0] if host in ("0.0.0.0", "::", "") else host    # a name a browser can use
    shown = f"[{shown}]" if ":" in shown else shown
    return runner, f"{'https' if tls else 'http'}://{shown}:{bound}/"


def serve(state: State, host: str = "127.0.0.1", port: int = 8765, principal: str | None = None,
          ready=None) -> None:
    """Serve until interrupted (Ctrl-C); `ready(url)` is called once it listens."""
    async def main():
        runner, url = await start(state, host, port, principal)
        try:
            if ready:
                ready(url)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
