"""Benchmark: provisioning throughput and the time a revocation takes to cut a connected device off.

Measured in one run against one broker (a throwaway fleet):
  - provisioning: devices added per second, each followed by a broker reload (as `warden device
    add` on a live fleet would be): full (certificate, registry, twin flash) and identity only
    (certificate, registry, files: what a real board gets before flashing); and a batch with one
    reload at the end, to show what the reload costs;
  - revocation, on the broker warden runs and on one started by hand (`mosquitto -c` on the
    `warden broker config` output, listening on 127.0.0.2 as another host would): from the call
    to `revoke_device` / `revoke_principal` + sync until the connected paho client sees its
    connection closed, and until a new handshake with the revoked certificate is refused
    (client-side clock; both brokers are synced by every revocation); against the peer
    approach, restarting the broker (every client is cut off and retained messages are lost).

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

    from warden.fleet import pki
    from warden.fleet.registry import Registry
    from warden.state import write_file, write_private

    cert_der, key_der = pki.issue_device_cert(state, thing)
    cert = x509.load_der_x509_certificate(cert_der)
    with Registry(state.registry_path) as reg:
        reg.add(thing, pki.fingerprint(cert_der), cert.serial_number, not_after=cert.not_valid_after_utc)
    write_file(state.device_dir(thing) / "cert.der", cert_der)
    write_private(state.device_dir(thing) / "key.der", key_der)
    return cert_der, key_der


def provisioning(state, broker, n=10):
    from warden.fleet import devices

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

    def __init__(self, state, broker, thing, cert_der, key_der, folder: Path, client_id=None):
        import paho.mqtt.client as paho
        from cryptography.hazmat.primitives import serialization

        from warden.fleet import pki

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "c.pem").write_bytes(pki.cert_pem(pki.load_cert(cert_der)))
        (folder / "k.pem").write_bytes(pki.key_pem(serialization.load_der_private_key(key_der, None)))
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(state.pki_dir / pki.CA_CERT))
        ctx.load_cert_chain(str(folder / "c.pem"), str(folder / "k.pem"))
        self.ctx = ctx
        self.up = threading.Event()
        self.down = threading.Event()
        self.down_at = None
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or thing, protocol=paho.MQTTv311,
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

    def refused_at(self, broker, deadline_s=10.0):
        """perf_counter time of the first handshake with this identity that the broker refuses."""
        import socket

        end = time.perf_counter() + deadline_s
        while time.perf_counter() < end:
            try:
                with socket.create_connection((broker.host, broker.port), timeout=2) as raw:
                    with self.ctx.wrap_socket(raw, server_hostname=broker.host) as tls:
                        tls.write(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")   # CONNECT
                        if not tls.read(4):
                            return time.perf_counter()
            except (ssl.SSLError, OSError):
                return time.perf_counter()
        raise RuntimeError("the revoked certificate was still accepted")


def _principal(state, name, folder):
    """A principal added as warden would (registry, policy, every broker's ACL): (cert DER, key DER)."""
    from cryptography.hazmat.primitives import serialization

    from warden.broker import control as brokerctl
    from warden.fleet import pki, principals

    principals.add_principal(state, name, "operator", out=folder)
    brokerctl.sync(state)
    cert = pki.load_cert((folder / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), None)
    return pki.cert_der(cert), pki.key_der_sec1(key)


def revocation(state, broker, folder: Path, rounds=5, tag="w"):
    """Median ms from the revocation call to the live session closed and to a handshake refused."""
    from warden.broker import control as brokerctl
    from warden.fleet import devices, principals

    seen, refused, pseen, prefused = [], [], [], []
    for i in range(rounds):
        thing = f"bench-rv-{tag}{i}"
        dev = _Device(state, broker, thing, *_register(state, thing), folder / thing)
        t0 = time.perf_counter()
        r = devices.revoke_device(state, thing, "bench")
        if r.failed:
            raise RuntimeError(f"revocation not applied: {r.failed}")
        if not dev.down.wait(10):
            raise RuntimeError("the revoked device was not cut off")
        seen.append((dev.down_at - t0) * 1000)
        refused.append((dev.refused_at(broker) - t0) * 1000)
        dev.close()
        name = f"bench-{tag}{i}"
        cn = f"operator.{name}"
        who = _Device(state, broker, cn, *_principal(state, name, folder / name), folder / name, client_id="")
        t0 = time.perf_counter()
        principals.revoke_principal(state, cn, "bench")
        rep = brokerctl.sync(state, kick=[cn])
        if rep.failed:
            raise RuntimeError(f"principal revocation not applied: {rep.failed}")
        if not who.down.wait(10):
            raise RuntimeError("the revoked principal was not cut off")
        pseen.append((who.down_at - t0) * 1000)
        prefused.append((who.refused_at(broker) - t0) * 1000)
        who.close()
    med = statistics.median
    return {"seen_ms": med(seen), "refused_ms": med(refused), "p_seen_ms": med(pseen),
            "p_refused_ms": med(prefused), "rounds": rounds}


def restart_peer(state, broker, folder: Path):
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
    return {"restart_seen_ms": med(restart), "restart_accepting_ms": med(accepting)}


class HandStarted:
    """`warden broker config` output on 127.0.0.2, started with plain `mosquitto -c`."""

    host = "127.0.0.2"

    def __init__(self, state, folder: Path):
        import subprocess

        from warden.broker import control as brokerctl
        from warden.broker.server import find_mosquitto, free_port

        self.port = free_port(self.host)
        brokerctl.write_broker_config(state, folder, f"{self.host}:{self.port}", [self.host], name="bench-hand")
        self.proc = subprocess.Popen([find_mosquitto(), "-c", str(folder / "mosquitto.conf")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        from warden.board.watch import Observer

        end = time.monotonic() + 10
        while True:
            try:
                Observer(state, self.host, self.port).connect(timeout=2).close()
                break
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)

    def stop(self):
        from warden.fleet.registry import Registry

        self.proc.terminate()
        self.proc.wait(timeout=10)
        with Registry(self.state_path) as reg:
            reg.forget_broker("bench-hand")


def run(fleet=None):
    """Rows for `make bench` (fleet: bench.common.Fleet with a running broker, or None)."""
    if fleet is None:
        from bench.common import fleet as make_fleet

        with make_fleet() as f:
            return run(f)
    state, broker = fleet.state, fleet.broker
    with tempfile.TemporaryDirectory() as tmp:
        p = provisioning(state, broker)
        hand = HandStarted(state, Path(tmp) / "hand-broker")
        hand.state_path = state.registry_path
        try:
            r = revocation(state, broker, Path(tmp), tag="w")
            h = revocation(state, hand, Path(tmp), tag="h")
        finally:
            hand.stop()
        peer = restart_peer(state, broker, Path(tmp))
    rnd = lambda x: round(x, 1)
    return [
        {"metric": "provision + broker reload, devices/s (cert, registry, twin flash)",
         "warden": rnd(p["full"]), "peer": "identity only (no twin)", "peer value": rnd(p["identity"]),
         "ratio": round(p["full"] / p["identity"], 2)},
        {"metric": "provision identity only, devices/s (one reload per device)",
         "warden": rnd(p["identity"]), "peer": "one reload per batch", "peer value": rnd(p["batch"]),
         "ratio": round(p["identity"] / p["batch"], 2)},
        {"metric": f"device revoke -> live session closed, ms (warden broker run; median of {r['rounds']})",
         "warden": rnd(r["seen_ms"]), "peer": "broker restart", "peer value": rnd(peer["restart_seen_ms"]),
         "ratio": round(peer["restart_seen_ms"] / r["seen_ms"], 2)},
        {"metric": "device revoke -> next handshake refused, ms (warden broker run)",
         "warden": rnd(r["refused_ms"]), "peer": "restart until accepting", "peer value": rnd(peer["restart_accepting_ms"]),
         "ratio": round(peer["restart_accepting_ms"] / r["refused_ms"], 2)},
        {"metric": "device revoke -> live session closed, ms (hand-started, 127.0.0.2)",
         "warden": rnd(h["seen_ms"]), "peer": "broker restart", "peer value": rnd(peer["restart_seen_ms"]),
         "ratio": round(peer["restart_seen_ms"] / h["seen_ms"], 2)},
        {"metric": "device revoke -> next handshake refused, ms (hand-started, 127.0.0.2)",
         "warden": rnd(h["refused_ms"]), "peer": "restart until accepting", "peer value": rnd(peer["restart_accepting_ms"]),
         "ratio": round(peer["restart_accepting_ms"] / h["refused_ms"], 2)},
        {"metric": "principal revoke -> session closed / handshake refused, ms (warden broker run)",
         "warden": f"{rnd(r['p_seen_ms'])} / {rnd(r['p_refused_ms'])}", "peer": "", "peer value": None, "ratio": None},
        {"metric": "principal revoke -> session closed / handshake refused, ms (hand-started)",
         "warden": f"{rnd(h['p_seen_ms'])} / {rnd(h['p_refused_ms'])}", "peer": "", "peer value": None, "ratio": None},
    ]


if __name__ == "__main__":
    from bench.common import print_table

    print_table("Fleet: provisioning and revocation", run(), COLS,
                note="ratio: peer / warden for times (> 1: warden faster); warden / peer for rates")
