"""Shared benchmark setup: a throwaway fleet (PKI, broker) and table printing."""
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from cryptography.hazmat.primitives import serialization

from warden.broker.server import Broker
from warden.fleet import pki
from warden.state import State


class Fleet:
    """A temporary project state with a PKI and a running broker; `identity(thing)` issues a device."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.state = State(self.tmp / ".warden")
        pki.init_pki(self.state)
        self.broker = Broker(self.state, run_dir=self.tmp / "broker")

    def identity(self, thing):
        cert_der, key_der = pki.issue_device_cert(self.state, thing)
        d = self.tmp / ("id-" + thing)
        d.mkdir()
        ca_pem = (self.state.pki_dir / pki.CA_CERT).read_bytes()
        files = {
            "cert.der": cert_der, "key.der": key_der, "ca.der": pki.cert_der(pki.load_cert(ca_pem)),
            "cert.pem": pki.cert_pem(pki.load_cert(cert_der)),
            "key.pem": pki.key_pem(serialization.load_der_private_key(key_der, password=None)),
            "ca.pem": ca_pem,
        }
        for name, data in files.items():
            (d / name).write_bytes(data)
        return SimpleNamespace(thing=thing, dir=d, cert=d / "cert.der", key=d / "key.der", ca=d / "ca.der",
                               cert_pem=d / "cert.pem", key_pem=d / "key.pem", ca_pem=d / "ca.pem",
                               cert_der=cert_der, key_der=key_der)


@contextlib.contextmanager
def fleet():
    with tempfile.TemporaryDirectory() as tmp:
        f = Fleet(tmp)
        with f.broker:
            yield f


def median(xs):
    return statistics.median(xs)


def print_table(title, rows, cols, out=sys.stdout, note=None):
    cells = [[("" if r.get(c) is None else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    print("\n## " + title, file=out)
    print(line(cols), file=out)
    print(line(["-" * w for w in widths]), file=out)
    for row in cells:
        print(line(row), file=out)
    if note:
        print(note, file=out)
