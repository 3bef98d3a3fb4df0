"""Carrying the fleet's revocations and ACL to every broker warden configured, wherever it runs.

It must not reach a broker by any other way than the broker's own TLS listener, as an admin
principal, and it must not start or stop brokers (server.py runs the local one).

Each broker loads the guard plugin (warden.broker.guard), which listens on `$CONTROL/warden/v1`. An
admin principal connects over the broker's own TLS listener (mutual TLS, broker name checked:
never an unauthenticated channel) and sends, one command per message, answered on
`.../response`:

    crl   the CRL (mosquitto reloads it: the next handshake of a revoked certificate is refused)
    acl   the ACL rendered from the policy plus the admin block (reloaded with it)
    ban   names that get nothing from now on (revoked devices and principals)
    kick  names whose live sessions are closed now (a revoked or rotated identity)
    quarantine  the devices limited to their status and metrics topics (warden.monitor's action),
          the whole list each time

`sync` sends the whole fleet state (CRL, ACL, every ban, the quarantine list) and then the kicks, so it is idempotent
and repairs a broker that missed earlier changes. The outcome is kept per broker in the registry:
a broker that could not be reached keeps `pending` (its reason) until a later sync reaches it, and
`warden audit` reports it as a high finding. A broker warden runs itself (`warden broker run`)
that is not running is skipped: it reads the same files when it starts.

Brokers are registered by `warden broker run` (while it runs) and `warden broker config`.
"""
from __future__ import annotations

import queue
import secrets
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..fleet import pki
from ..fleet.principals import ensure_default_principals, session_context
from ..fleet.registry import BrokerEntry, Registry
from ..state import State, ensure_dir, write_file, write_private
from . import guard
from .server import (BANS_FILE, CONTROL_TOPIC, QUARANTINE_FILE, Broker, BrokerError, BrokerFiles, fleet_acl,
                     fleet_bans, fleet_quarantine, render_config)

RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
TIMEOUT = 5.0
CRL_CHECK_S = 3600      # how often `warden broker run` checks that its CRL is not close to lapsing


class ControlError(BrokerError):
    hint = ("is the broker running and reachable on that address, with the guard plugin loaded (a folder from "
            "`warden broker config`)? the change stays pending: `warden broker sync` carries it later")


class BrokerControl:
    """One admin session on a broker's control channel (a context manager)."""

    def __init__(self, state: State, host: str, port: int, *, admin: str = "admin.default", timeout: float = TIMEOUT):
        import paho.mqtt.client as paho

        self.host, self.port, self.timeout = host, int(port), timeout
        self.admin = admin
        self._events = queue.Queue()
        self._answers = queue.Queue()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv311,
                        reconnect_on_failure=False)
        c.tls_set_context(session_context(state, admin))
        c.on_connect = lambda cl, ud, fl, rc, pr=None: self._events.put(("connack", rc))
        c.on_subscribe = lambda cl, ud, mid, rcs, pr=None: self._events.put(("suback", rcs))
        c.on_disconnect = lambda cl, ud, fl, rc, pr=None: self._answers.put(None)
        c.on_message = lambda cl, ud, m: self._answers.put(m.payload.decode(errors="replace"))
        self.client = c
        self._started = False

    def _event(self, kind):
        try:
            got, value = self._events.get(timeout=self.timeout)
        except queue.Empty:
            raise ControlError(f"the broker at {self.host}:{self.port} did not answer ({kind})") from None
        return value

    def connect(self) -> "BrokerControl":
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except ssl.SSLError as e:
            raise ControlError(f"TLS with the broker at {self.host}:{self.port} failed: {e}",
                               hint="is it a broker of this fleet (same CA, a certificate naming this host)?") from e
        except OSError as e:
            raise ControlError(f"cannot reach the broker at {self.host}:{self.port}: {e.strerror or e}",
                               hint="is it running, and reachable from here?") from e
        self.client.loop_start()
        self._started = True
        rc = self._event("CONNACK")
        if rc != 0:
            raise ControlError(f"the broker at {self.host}:{self.port} refused {self.admin}: {rc}")
        self.client.subscribe(RESPONSE_TOPIC, 1)
        rcs = self._event("SUBACK")
        if any(getattr(r, "is_failure", False) for r in rcs):
            raise ControlError(f"the broker at {self.host}:{self.port} refused the control channel's response topic")
        return self

    def command(self, verb: str, *args: str, body: bytes = b"") -> str:
        """Send one command; return the broker's answer after "ok" (ControlError on "error")."""
        cid = secrets.token_hex(4)
        head = " ".join((cid, verb) + tuple(args)).encode()
        self.client.publish(CONTROL_TOPIC, head + (b"\n" + body if body else b""), qos=1)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            try:
                answer = self._answers.get(timeout=max(left, 0))
            except queue.Empty:
                raise ControlError(f"the broker at {self.host}:{self.port} did not answer {verb!r} within "
                                   f"{self.timeout:g} s", hint="does it load warden's guard plugin? "
                                   "(`warden broker config` writes a config that does)") from None
            if answer is None:
                raise ControlError(f"the broker at {self.host}:{self.port} closed the control session during {verb!r}")
            got_id, _, rest = answer.partition(" ")
            if got_id != cid:
                continue
            status, _, detail = rest.partition(" ")
            if status != "ok":
                raise ControlError(f"the broker at {self.host}:{self.port} refused {verb!r}: {detail}")
            return detail

    def publish_retained(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(self.timeout)

    def close(self):
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()


@dataclass
class BrokerOutcome:
    """What one sync did on one broker. Times are ms from the start of the sync."""
    name: str
    address: str
    applied: bool
    skipped: str | None = None    # why it was not contacted (a stopped warden-run broker)
    error: str | None = None
    crl_ms: float | None = None   # the broker had reloaded the CRL: new handshakes refused
    cutoff_ms: float | None = None  # the kicks were done: live sessions closed

    def line(self) -> str:
        if self.skipped:
            return f"{self.name} ({self.address}): {self.skipped}"
        if not self.applied:
            return f"{self.name} ({self.address}): NOT APPLIED: {self.error}"
        text = f"{self.name} ({self.address}): CRL reloaded in {self.crl_ms:.0f} ms"
        if self.cutoff_ms is not None:
            text += f", sessions closed at {self.cutoff_ms:.0f} ms"
        return text


@dataclass
class SyncReport:
    outcomes: list = field(default_factory=list)

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if not o.applied and not o.skipped]

    def lines(self) -> list:
        if not self.outcomes:
            return ["no broker is registered: the CRL is written, and a broker started later "
                    "(`warden broker run`, or a config from `warden broker config`) loads it"]
        return [o.line() for o in self.outcomes]


@dataclass
class FleetState:
    """What every broker must hold, read once per sync."""
    crl: bytes
    acl: bytes
    bans: list
    kick: list
    quarantine: list = field(default_factory=list)

    @classmethod
    def read(cls, state: State, kick) -> "FleetState":
        return cls((state.pki_dir / pki.CRL).read_bytes(), fleet_acl(state).encode(), fleet_bans(state),
                   _with_sessions(state, kick), fleet_quarantine(state))


def _apply(state: State, entry: BrokerEntry, fleet: FleetState, status, t0) -> BrokerOutcome:
    out = BrokerOutcome(entry.name, f"{entry.host}:{entry.port}", False)
    crl, acl, bans = fleet.crl, fleet.acl, fleet.bans
    folder = Path(entry.folder)
    if not entry.name.startswith("local"):
        _refresh_folder(folder, crl, acl, bans, fleet.quarantine)    # a broker started from this folder later is current
    with BrokerControl(state, entry.host, entry.port) as ctl:
        ctl.command("crl", body=crl)
        out.crl_ms = (time.monotonic() - t0) * 1000
        ctl.command("acl", body=acl)
        for i in range(0, len(bans), 50):
            ctl.command("ban", *bans[i:i + 50])
        ctl.command("quarantine", body="".join(n + "\n" for n in fleet.quarantine).encode())
        if fleet.kick:
            for i in range(0, len(fleet.kick), 50):
                ctl.command("kick", *fleet.kick[i:i + 50])
            out.cutoff_ms = (time.monotonic() - t0) * 1000
        for topic, payload in status:
            ctl.publish_retained(topic, payload)
    out.applied = True
    return out


def _with_sessions(state: State, names) -> list:
    """`names` plus the session CNs warden minted for any of them that may still be live: a
    session that has made no request yet still has its own name at the broker."""
    names = list(names)
    wanted = {n for n in names if "." in n}
    if not wanted:
        return names
    now = time.time()
    import datetime as _dt

    for e in pki.issued_log(state):
        cn = e.get("cn") or ""
        if e.get("kind") == "session" and cn.split("@", 1)[0] in wanted:
            try:
                if _dt.datetime.fromisoformat(e["not_after"]).timestamp() < now:
                    continue
            except (KeyError, ValueError):
                pass
            names.append(cn)
    return list(dict.fromkeys(names))


def _refresh_folder(folder: Path, crl: bytes, acl: bytes, bans, quarantine=()) -> None:
    if folder.is_dir():
        write_file(folder / "crl.pem", crl)
        write_file(folder / "acl", acl)
        write_file(folder / BANS_FILE, "".join(n + "\n" for n in bans))
        write_file(folder / QUARANTINE_FILE, "".join(n + "\n" for n in quarantine))


def sync(state: State, *, kick=(), status=(), only: str | None = None) -> SyncReport:
    """Bring every registered broker (or `only` that one) up to the fleet's state, then close the
    live sessions of the names in `kick` and publish `status` ((topic, payload) retained)."""
    ensure_default_principals(state)
    pki.refresh_crl(state)     # a CRL close to its nextUpdate is re-signed and goes out with this sync
    report = SyncReport()
    with Registry(state.registry_path) as reg:
        entries = reg.brokers()
    if only is not None:
        entries = [e for e in entries if e.name == only]
        if not entries:
            raise BrokerError(f"no broker named {only!r}", hint="see `warden broker list`")
    fleet = FleetState.read(state, kick)
    for entry in entries:
        t0 = time.monotonic()
        if entry.name.startswith("local") and not Broker.folder_in_use(entry.folder):
            with Registry(state.registry_path) as reg:
                reg.forget_broker(entry.name)
            report.outcomes.append(BrokerOutcome(entry.name, f"{entry.host}:{entry.port}", False,
                                                 skipped="not running: it loads the revocations when it starts"))
            continue
        try:
            outcome = _apply(state, entry, fleet, status, t0)
        except BrokerError as e:
            outcome = BrokerOutcome(entry.name, f"{entry.host}:{entry.port}", False, error=str(e))
        with Registry(state.registry_path) as reg:
            reg.mark_broker(entry.name, None if outcome.applied else outcome.error)
        report.outcomes.append(outcome)
    return report


def keep_crl_fresh(state: State, name: str) -> bool:
    """Re-sign the CRL if it is close to its nextUpdate and send it to broker `name`. True if renewed."""
    if not pki.refresh_crl(state):
        return False
    sync(state, only=name)
    return True


# -- `warden broker config`: a broker for another host ---------------------------------------------
UNIT = """# systemd unit for a Warden broker (written by `warden broker config`).
# Install: cp {name}.service /etc/systemd/system/ && systemctl daemon-reload && systemctl enable --now {name}
[Unit]
Description=Warden MQTT broker ({address})
After=network-online.target
Wants=network-online.target

[Service]
ExecStart={mosquitto} -c {conf}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""

SYNC_UNIT = """# On the FLEET host (where the state and its CA key are), not the broker host:
# re-signs the CRL before it lapses and brings every broker up to date.
[Unit]
Description=Warden: renew the CRL and sync the fleet's brokers

[Service]
Type=oneshot
Environment=WARDEN_STATE={state}
ExecStart=/usr/bin/env warden broker sync
"""

SYNC_TIMER = """# On the FLEET host: runs warden-broker-sync.service daily.
[Unit]
Description=Warden: daily CRL renewal and broker sync

[Timer]
OnCalendar=daily
Persistent=true

[Install]
WantedBy=timers.target
"""

README = """A Warden broker, written by `warden broker config` for {address}.

Run it:            mosquitto -c {conf}
Under systemd:     see {name}.service beside this file
On another host:   copy this folder to the same path there ({folder}), or write it again
                   with --install-dir for the path it will have there. The plugin
                   warden_guard.so was built for this machine; on another architecture
                   build it there: cc -shared -fPIC -O2 -o warden_guard.so warden_guard.c
                   (Debian: apt-get install gcc mosquitto-dev libmosquitto-dev).

Revocations, the CRL and the ACL reach it over its own TLS listener: `warden device
revoke`, `warden principal revoke` and `warden broker sync` connect as the admin
principal. Keep the CRL fresh: `warden broker sync` on the fleet host re-signs it when
fewer than {crl_days} days are left and sends it here; warden-broker-sync.service and
.timer (for the FLEET host) run it daily. Without it, mosquitto refuses every client
once the CRL's nextUpdate has passed.

server.key.pem is this broker's private key: keep the folder readable by mosquitto only.
"""


def parse_listen(text: str):
    """'ADDR:PORT' (IPv6 as [ADDR]:PORT) -> (addr, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise BrokerError(f"--listen {text!r} is not ADDR:PORT", hint="for example 0.0.0.0:8883 or 192.168.1.10:8883")
    host = host.strip("[]")
    try:
        port = int(port)
    except ValueError:
        raise BrokerError(f"--listen {text!r}: {port!r} is not a port number") from None
    if not 0 < port < 65536:
        raise BrokerError(f"--listen {text!r}: port {port} is out of range")
    return host, port


@dataclass
class ConfigResult:
    name: str
    folder: Path
    conf: Path
    unit: Path
    listen: str
    names: list


def write_broker_config(state: State, out_dir, listen: str, names=(), *, name: str | None = None,
                        install_dir=None) -> ConfigResult:
    """Write a self-contained broker config folder for a LAN or server host and register the broker.

    The server certificate names every host name and address in `names` (and the listen address
    unless it is a wildcard); clients verify it. `install_dir` is where the folder will live on the
    broker's host (default: `out_dir` itself): the config's paths point there."""
    from .server import find_mosquitto

    host, port = parse_listen(listen)
    names = list(dict.fromkeys(n for n in names if n))
    if host not in ("0.0.0.0", "::") and host not in names:
        names.insert(0, host)
    if not names:
        raise BrokerError("the broker's certificate needs the names clients reach it by",
                          hint="give --name HOST_OR_IP (once per name), e.g. --name broker.lan --name 192.168.1.10")
    folder = ensure_dir(Path(out_dir))
    target = Path(install_dir) if install_dir else folder.resolve()
    name = name or f"{names[0]}:{port}"
    if name.startswith("local"):
        raise BrokerError(f"broker name {name!r} is reserved for brokers warden runs itself")
    ensure_default_principals(state)
    pki.refresh_crl(state)
    cert, key = pki.issue_broker_cert(state, names)
    write_file(folder / "ca.crt.pem", (state.pki_dir / pki.CA_CERT).read_bytes())
    write_file(folder / "server.crt.pem", pki.cert_pem(cert))
    write_private(folder / "server.key.pem", pki.key_pem(key))
    _refresh_folder(folder, (state.pki_dir / pki.CRL).read_bytes(), fleet_acl(state).encode(), fleet_bans(state),
                    fleet_quarantine(state))
    write_file(folder / guard.LIB_NAME, guard.plugin_path().read_bytes(), 0o755)
    write_file(folder / "warden_guard.c", guard.SOURCE.read_bytes())
    files = BrokerFiles.in_folder(target)
    files.log = target / "mosquitto.log"
    conf_text = render_config(state, port, host, files=files, any_host=True)
    conf = write_file(folder / "mosquitto.conf", conf_text)
    unit_name = "warden-broker"
    try:
        mosquitto = find_mosquitto()
    except BrokerError:
        mosquitto = "/usr/sbin/mosquitto"
    unit = write_file(folder / f"{unit_name}.service",
                      UNIT.format(name=unit_name, address=f"{host}:{port}", mosquitto=mosquitto,
                                  conf=target / "mosquitto.conf"))
    write_file(folder / "warden-broker-sync.service", SYNC_UNIT.format(state=state.root.resolve()))
    write_file(folder / "warden-broker-sync.timer", SYNC_TIMER)
    write_file(folder / "README.txt", README.format(address=f"{host}:{port}", conf=target / "mosquitto.conf",
                                                    name=unit_name, folder=target, crl_days=pki.CRL_RENEW_DAYS))
    # Clients connect to the first name (the listen address may be a wildcard).
    with Registry(state.registry_path) as reg:
        reg.put_broker(name, names[0], port, str(folder.resolve()))
        reg.mark_broker(name, None)
    return ConfigResult(name, folder, conf, unit, f"{host}:{port}", names)
