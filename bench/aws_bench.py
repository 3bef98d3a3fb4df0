"""`warden aws sync` for 1,000 devices against moto in server mode (AWS's API on loopback).

Counts every AWS call by operation (the client's `before-call` events, warden.aws.client) for a
sync from an empty account, a second sync with nothing to change (target: reads only), and a sync
after ten revocations. The times are moto's on this machine, not AWS's: AWS answers each call in
tens of milliseconds and limits the account's rate per API (docs/aws.md, 'What it costs in calls').
"""
import os
import tempfile
import time
from pathlib import Path

DEVICES = 1000
COLS = ["metric", "sync 1 (empty account)", "sync 2 (no change)", "sync 3 (10 revoked)"]
NOTE = ("calls per device: every AWS call of the sync / 1,000 devices; writes are the calls that change "
        "something. AWS has no batch call for things, certificates or attachments: a new device costs "
        "four writes; a sync with nothing to change one ListThingPrincipals per thing plus a page of "
        "each list per 250")


def _register(state, thing):
    from cryptography import x509

    from warden.fleet import pki
    from warden.fleet.registry import Registry
    from warden.state import write_file

    cert_der, _key = pki.issue_device_cert(state, thing)
    cert = x509.load_der_x509_certificate(cert_der)
    with Registry(state.registry_path) as reg:
        reg.add(thing, pki.fingerprint(cert_der), cert.serial_number, not_after=cert.not_valid_after_utc)
    write_file(state.device_dir(thing) / "cert.der", cert_der)


def _sync(state):
    from warden.aws import project, sync

    proj = project.load(state)
    client = proj.client()
    t0 = time.perf_counter()
    plan = sync.plan(state, proj, client)
    sync.apply(plan, client)
    dt = time.perf_counter() - t0
    return dt, client, plan


def run():
    from tests.support.motoserver import MotoServer
    from warden.aws import setup
    from warden.fleet import devices, pki, principals
    from warden.fleet.registry import Registry
    from warden.state import State

    saved = dict(os.environ)
    server = MotoServer().start()
    try:
        os.environ.update(MotoServer.env(os.environ))
        with tempfile.TemporaryDirectory() as tmp:
            state = State(Path(tmp) / ".warden")
            pki.init_pki(state)
            principals.ensure_default_principals(state)
            for i in range(DEVICES):
                _register(state, f"fleet-{i:04d}")
            setup.setup(state, "eu-west-1", endpoint_url=server.url)
            runs = [_sync(state), _sync(state)]
            with Registry(state.registry_path) as reg:
                reg_things = [d.thing for d in reg.list()][:10]
            for thing in reg_things:
                devices.revoke_device(state, thing, "bench")
            runs.append(_sync(state))
    finally:
        server.stop()
        os.environ.clear()
        os.environ.update(saved)
    rows = []

    def row(metric, fn):
        r = {"metric": metric}
        for col, (dt, client, plan) in zip(COLS[1:], runs):
            r[col] = fn(dt, client, plan)
        rows.append(r)

    row("time (s)", lambda dt, c, p: f"{dt:.1f}")
    row("AWS calls", lambda dt, c, p: sum(c.calls.values()))
    row("calls per device", lambda dt, c, p: f"{sum(c.calls.values()) / DEVICES:.2f}")
    row("writes", lambda dt, c, p: c.writes)
    row("writes per device", lambda dt, c, p: f"{c.writes / DEVICES:.2f}")
    row("steps planned", lambda dt, c, p: len(p.steps))
    for op in sorted({op for _dt, c, _p in runs for op in c.calls}):
        row(f"  {op}", lambda dt, c, p, op=op: c.calls.get(op) or "")
    return rows
