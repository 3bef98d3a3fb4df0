"""Benchmark: provisioning throughput and the time a revocation takes to cut a connected device off.

Measured in one run against one broker (a throwaway fleet):
  - provisioning: devices added per second, each followed by a broker reload (as `warden device
    add` on a live fleet would be): full (certificate, registry, twin flash) and identity only
    (certificate, registry, files: what a real board gets before flashing); and a batch with one
    reload at the end, to show what the reload costs;
  - revocation: from the call to `revoke_device` until the connected paho client sees its
    connection closed (client-side clock), with the library's own split (CRL written, CRL
    reloaded = next handshake refused, session closed); against the peer approach, restarting
    the broker (every client is cut off and retained messages are lost: persistence is off).

    run(fleet=None) -> rows        python -m bench.fleet_bench
"""
from __future__ import annotations

import ssl
import statistics
import tempfile
import threading
import time
from pathlib import Path

COLS = ["metric", "warden", "peer", "peer value", "ratio"]


def _register(state, thing):
    from cryptography import x509

    from warden import pki
    from warden.registry import Registry
    from warden.state import write_file, write_private

    cert_der, key_der = pki.issue_device_cert(state, thing)
    cert = x509.load_der_x509_certificate(cert_der)
    with Registry(state.registry_path) as reg:
        reg.add(thing, pki.fingerprint(cert_der), cert.serial_number, not_after=cert.not_valid_after_utc)
    write_file(state.device_dir(thing) / "cert.der", cert_der)
    write_private(state.device_dir(thing) / "key.der", key_der)
    return cert_der, key_der


def provisioning(state, broker, n=10):
    from warden import devices

    devices.add_device(state, "bench-warm")          # builds the app once (cached afterwards)
    out = {}
    t0 = time.perf_counter()
    for i in range(n):
        devices.add_device(state, f"bench-full-{i}")
        broker.reload()
    out["full"] = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(n):
        _register(state, f"bench-id-{i}")
        broker.reload()
    out["identity"] = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(n):
        _register(state, f"bench-batch-{i}")
    broker.reload()
    out["batch"] = n / (time.perf_counter() - t0)
    return out


class _Device:
    """A paho client with the device's identity that timestamps its disconnection."""

    def __init__(self, state, broker, thing, cert_der, key_der, folder: Path):
        import paho.mqtt.client as paho
        from cryptography.hazmat.primitives import serialization

        from warden import pki

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "c.pem").write_bytes(pki.cert_pem(pki.load_cert(cert_der)))
        (folder / "k.pem").write_bytes(pki.key_pem(serialization.load_der_private_key(key_der, None)))
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(state.pki_dir / pki.CA_CERT))
        ctx.load_cert_chain(str(folder / "c.pem"), str(folder / "k.pem"))
        self.up = threading.Event()
        self.down = threading.Event()
        self.down_at = None
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=thing, protocol=paho.MQTTv311,
                        reconnect_on_failure=False)
        c.tls_set_context(ctx)
        c.on_connect = lambda *a: self.up.set()

        def on_disconnect(*a):
            self.down_at = time.perf_counter()
            self.down.set()

        c.on_disconnect = on_disconnect
        c.connect(broker.host if broker.host != "localhost" else "127.0.0.1", broker.port, keepalive=60)
        c.loop_start()
        if not self.up.wait(10):
            raise RuntimeError("device did not connect")
        self.client = c

    def close(self):
        self.client.loop_stop()


def revocation(state, broker, folder: Path, rounds=5):
    from warden import devices

    seen, split = [], []
    for i in range(rounds):
        thing = f"bench-rv-{i}"
        dev = _Device(state, broker, thing, *_register(state, thing), folder / thing)
        t0 = time.perf_counter()
        r = devices.revoke_device(state, thing, "bench", broker=broker)
        if not dev.down.wait(10):
            raise RuntimeError("the revoked device was not cut off")
        seen.append((dev.down_at - t0) * 1000)
        split.append((r.crl_ms, r.reload_ms, r.cutoff_ms))
        dev.close()
    restart, accepting = [], []
    for i in range(3):
        thing = f"bench-rs-{i}"
        dev = _Device(state, broker, thing, *_register(state, thing), folder / thing)
        t0 = time.perf_counter()
        broker.restart()
        done = time.perf_counter()
        if not dev.down.wait(10):
            raise RuntimeError("restart did not cut the device off")
        restart.append((dev.down_at - t0) * 1000)
        accepting.append((done - t0) * 1000)
        dev.close()
    med = statistics.median
    return {
        "seen_ms": med(seen), "crl_ms": med(s[0] for s in split), "reload_ms": med(s[1] for s in split),
        "cutoff_ms": med(s[2] for s in split), "restart_seen_ms": med(restart),
        "restart_accepting_ms": med(accepting), "rounds": rounds,
    }


def run(fleet=None):
    """Rows for `make bench` (fleet: bench.common.Fleet with a running broker, or None)."""
    if fleet is None:
        from bench.common import fleet as make_fleet

        with make_fleet() as f:
            return run(f)
    state, broker = fleet.state, fleet.broker
    with tempfile.TemporaryDirectory() as tmp:
        p = provisioning(state, broker)
        r = revocation(state, broker, Path(tmp))
    rnd = lambda x: round(x, 1)
    return [
        {"metric": "provision + broker reload, devices/s (cert, registry, twin flash)",
         "warden": rnd(p["full"]), "peer": "identity only (no twin)", "peer value": rnd(p["identity"]),
         "ratio": round(p["full"] / p["identity"], 2)},
        {"metric": "provision identity only, devices/s (one reload per device)",
         "warden": rnd(p["identity"]), "peer": "one reload per batch", "peer value": rnd(p["batch"]),
         "ratio": round(p["identity"] / p["batch"], 2)},
        {"metric": f"revocation: connected device cut off, ms (median of {r['rounds']}, client clock)",
         "warden": rnd(r["seen_ms"]), "peer": "broker restart", "peer value": rnd(r["restart_seen_ms"]),
         "ratio": round(r["restart_seen_ms"] / r["seen_ms"], 2)},
        {"metric": "revocation: next handshake refused after, ms (CRL written + reloaded)",
         "warden": rnd(r["reload_ms"]), "peer": "restart until accepting", "peer value": rnd(r["restart_accepting_ms"]),
         "ratio": round(r["restart_accepting_ms"] / r["reload_ms"], 2)},
        {"metric": "revocation split: CRL written / session closed (library clock), ms",
         "warden": f"{rnd(r['crl_ms'])} / {rnd(r['cutoff_ms'])}", "peer": "", "peer value": None, "ratio": None},
    ]


if __name__ == "__main__":
    from bench.common import print_table

    print_table("Fleet: provisioning and revocation", run(), COLS,
                note="ratio: peer / warden for times (> 1: warden faster); warden / peer for rates")
