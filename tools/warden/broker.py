"""A local mosquitto broker configured like the fleet's: TLS 1.2+, client certificates, per-device ACL.

`render_config` writes one TLS listener on a loopback address (never a public interface):
client certificates are required and verified against the fleet CA and its CRL, the
certificate CN becomes the username and the client id (so a device can neither pose as
another nor kick it off with its client id), anonymous clients are refused, and the ACL
generated from the policy scopes every device to its own topics.

`Broker` runs one mosquitto process with that configuration (a context manager);
`Broker.find_running(state)` finds the one `warden broker run` (or `make run`) started, through
the pid file mosquitto keeps next to its config, so `warden device revoke` can make it reload
its CRL and cut a revoked device off (`kick`).
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from . import pki
from .policy import load_policy, render_mosquitto_acl
from .state import State, WardenError, ensure_dir, write_file

CONF_FILE = "mosquitto.conf"
ACL_FILE = "acl"
LOG_FILE = "mosquitto.log"
OUT_FILE = "mosquitto.out"
PID_FILE = "mosquitto.pid"
KICK_LINE = "Client %s already connected, closing old connection."
READY_LINE = " running"          # "mosquitto version X running", logged once the listeners are up
RELOAD_LINE = "Reloading config"  # logged on SIGHUP, before the reload (same loop turn: no race)
INSTALL_HINT = "run `make setup`, or install it: sudo apt-get install mosquitto (brew install mosquitto)"


class BrokerError(WardenError):
    pass


def find_mosquitto() -> str:
    """Path of the mosquitto binary: $PATH, then /usr/sbin/mosquitto (Debian keeps it there)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError("mosquitto (>= 2.0) is not installed", hint=INSTALL_HINT)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_our_mosquitto(pid: int, conf_path: Path) -> bool:
    """Is `pid` a live mosquitto started with `conf_path`? (/proc where there is one.)"""
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return True   # no /proc (macOS): the pid file is all we have
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    if not args or "mosquitto" not in Path(args[0].decode(errors="replace")).name:
        return False
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        cwd = Path.cwd()
    want = conf_path.resolve()
    for arg in args[1:]:
        if arg and (cwd / arg.decode(errors="replace")).resolve() == want:
            return True
    return False


def _quote(path) -> str:
    path = str(path)
    if any(c in path for c in "\n\r"):
        raise BrokerError(f"path {path!r} cannot be used in a mosquitto config")
    return path


def render_config(state: State, port: int, host: str = "127.0.0.1", log_path=None, *, acl_path=None,
                  log_stdout: bool = False, as_root: bool | None = None, pid_path=None,
                  persistence_dir=None) -> str:
    """The text of mosquitto.conf for `state`'s PKI, listening on `host`:`port` (loopback only).

    `acl_path` defaults to `<broker_dir>/acl`, `log_path` to `<broker_dir>/mosquitto.log`,
    `pid_path` to `<broker_dir>/mosquitto.pid`. With `persistence_dir`, mosquitto keeps
    retained messages, persistent sessions and their queued QoS 1 messages there across
    restarts (written on shutdown); without it, a restart forgets them.
    `user root` is added only when running as root (`as_root` overrides the check): mosquitto
    started as root otherwise switches to the `mosquitto` user, which cannot read the keys in
    the (0700) state folder.
    """
    if not _is_loopback(host):
        raise BrokerError(f"the broker listens on loopback only, not {host!r}",
                          hint="use 127.0.0.1 (devices on the network need a real deployment)")
    port = int(port)
    if not 0 < port < 65536:
        raise BrokerError(f"port {port} is not a TCP port")
    ca, cert, key, crl = pki.broker_paths(state)
    acl_path = Path(acl_path) if acl_path else state.broker_dir / ACL_FILE
    log_path = Path(log_path) if log_path else state.broker_dir / LOG_FILE
    pid_path = Path(pid_path) if pid_path else log_path.parent / PID_FILE
    if as_root is None:
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    lines = [
        "# Generated by warden. Do not edit: `warden broker run` rewrites it.",
        "per_listener_settings false",
        "allow_anonymous false",
        *(["persistence true", f"persistence_location {_quote(Path(persistence_dir).resolve())}/"]
          if persistence_dir else ["persistence false"]),
        "set_tcp_nodelay true",
        f"acl_file {_quote(acl_path.resolve())}",
        f"pid_file {_quote(pid_path.resolve())}",
        f"log_dest file {_quote(log_path.resolve())}",
    ]
    if log_stdout:
        lines.append("log_dest stdout")
    lines += [
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if as_root:
        lines += ["# Running as root: stay root, or mosquitto (user `mosquitto`) cannot read the keys.",
                  "user root"]
    lines += [
        "",
        f"listener {port} {host}",
        "protocol mqtt",
        f"cafile {_quote(ca.resolve())}",
        f"certfile {_quote(cert.resolve())}",
        f"keyfile {_quote(key.resolve())}",
        f"crlfile {_quote(crl.resolve())}",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
        "",
    ]
    return "\n".join(lines)


class Broker:
    """One mosquitto process for `state` on `host`:`port` (a free port if None).

    `run_dir` (default `state.broker_dir`) receives mosquitto.conf, acl, mosquitto.log and
    mosquitto.out (the process's own stdout/stderr; `output` may be given instead, e.g. None
    to inherit the terminal). Use as a context manager, or start()/stop().
    """

    def __init__(self, state: State, port: int | None = None, host: str = "127.0.0.1", *,
                 run_dir=None, mosquitto: str | None = None, startup_timeout: float = 10.0,
                 log_stdout: bool = False, output="file", persistence_dir=None):
        self.state = state
        self.persistence_dir = persistence_dir
        self.host = host
        self.port = int(port) if port else free_port(host)
        self.run_dir = Path(run_dir) if run_dir else state.broker_dir
        self.mosquitto = mosquitto
        self.startup_timeout = startup_timeout
        self.log_stdout = log_stdout
        self.output = output
        self.proc = None
        self._out = None
        self._attached_pid = None   # a mosquitto we did not start (find_running)

    # -- paths -----------------------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.run_dir / CONF_FILE

    @property
    def acl_path(self) -> Path:
        return self.run_dir / ACL_FILE

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def out_path(self) -> Path:
        return self.run_dir / OUT_FILE

    @property
    def pid_path(self) -> Path:
        return self.run_dir / PID_FILE

    @property
    def pid(self) -> int | None:
        if self.proc:
            return self.proc.pid
        return self._attached_pid

    def __repr__(self):
        return f"Broker({self.host}:{self.port}, pid={self.pid})"

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self._attached_pid is not None and _is_our_mosquitto(self._attached_pid, self.conf_path)

    @classmethod
    def find_running(cls, state: State, run_dir=None) -> "Broker | None":
        """The mosquitto running with `state`'s config in `run_dir` (default the state's broker
        folder), found through its pid file, or None. The process must still be a mosquitto
        started with that config file (a stale pid file or a reused pid is ignored)."""
        b = cls(state, port=1, run_dir=run_dir)
        try:
            pid = int(b.pid_path.read_text().strip())
            conf = b.conf_path.read_text()
        except (OSError, ValueError):
            return None
        if not _is_our_mosquitto(pid, b.conf_path):
            return None
        for line in conf.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "listener":
                b.port = int(parts[1])
                b.host = parts[2] if len(parts) > 2 else "127.0.0.1"
                break
        b._attached_pid = pid
        return b

    # -- files -----------------------------------------------------------------------------
    def write_acl(self) -> Path:
        return write_file(self.acl_path, render_mosquitto_acl(self.state.app, load_policy(self.state)))

    def write_config(self) -> Path:
        ensure_dir(self.run_dir)
        ca, cert, key, _crl = pki.broker_paths(self.state)
        for path in (ca, cert, key):
            if not path.exists():
                raise BrokerError(f"{path} is missing", hint="run `warden pki init` first")
        pki.refresh_crl(self.state)
        self.write_acl()
        if self.persistence_dir:
            ensure_dir(Path(self.persistence_dir))
        text = render_config(self.state, self.port, self.host, self.log_path, acl_path=self.acl_path,
                             log_stdout=self.log_stdout, persistence_dir=self.persistence_dir)
        return write_file(self.conf_path, text)

    def log_tail(self, lines: int = 20, start: int = 0) -> str:
        """The last `lines` lines of the broker log (from byte `start`) and of its own output."""
        parts = []
        for path, offset in ((self.log_path, start), (self.out_path, 0)):
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
            parts.extend(tail)
        return "\n".join(parts)

    # -- process ---------------------------------------------------------------------------
    def start(self) -> "Broker":
        """Write config and ACL, start mosquitto, return once it accepts connections on the port."""
        if self.running():
            return self
        binary = self.mosquitto or find_mosquitto()
        self.write_config()
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        if self.output == "file":
            self._out = open(self.out_path, "wb")
            out = self._out
        else:
            out = self.output
        try:
            self.proc = subprocess.Popen([binary, "-c", str(self.conf_path.resolve())], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT if out is not None else None)
        except OSError as e:
            self._close_out()
            raise BrokerError(f"cannot start {binary}: {e}", hint=INSTALL_HINT) from e
        try:
            self._wait_ready(log_start)
        except BaseException:
            self._kill()
            raise
        return self

    def _log_has(self, needle: str, start: int) -> bool:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return needle.encode() in f.read()
        except OSError:
            return False

    def _wait_ready(self, log_start: int):
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.005
        while True:
            code = self.proc.poll()
            if code is not None:
                raise BrokerError(
                    f"mosquitto exited with code {code} while starting on {self.host}:{self.port}:\n"
                    + self.log_tail(start=log_start),
                    hint=f"see {self.log_path}; is port {self.port} already in use?")
            # The log line proves the listener is ours (not some other process on a reused port).
            if self._log_has(READY_LINE, log_start):
                try:
                    with socket.create_connection((self.host, self.port), timeout=1):
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"mosquitto did not accept connections on {self.host}:{self.port} within "
                    f"{self.startup_timeout:.0f} s:\n" + self.log_tail(start=log_start),
                    hint=f"see {self.log_path}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _close_out(self):
        if self._out is not None:
            self._out.close()
            self._out = None

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._close_out()

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s. Returns the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._close_out()
        return self.proc.returncode

    def restart(self) -> "Broker":
        """Stop and start again on the same port (clients must reconnect)."""
        self.stop()
        self.proc = None
        return self.start()

    def reload(self, timeout: float = 5.0) -> None:
        """Rewrite the ACL from the policy and send SIGHUP: mosquitto re-reads its config, the ACL
        and the certificates and CRL. Returns once mosquitto has logged the reload; clients
        connected before keep their sessions (a revoked device stays online until it reconnects).
        """
        if not self.running():
            raise BrokerError("the broker is not running", hint="start it first")
        self.write_acl()
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        os.kill(self.pid, signal.SIGHUP)
        self._wake()
        self._wait_log(RELOAD_LINE + ".\n", start, timeout, "reload")
        # mosquitto logs the line when it starts reloading and clears its reload flag when done
        # (a SIGHUP in between is lost). Whatever it logs after that line (here: about a
        # connection we open and close) comes from a later turn of its loop: the reload, done in
        # one turn, is then complete.
        after = self._log_find(RELOAD_LINE + ".\n", start)
        self._wake()
        self._wait_log("\n", after, timeout, "reload to finish")

    def _log_find(self, needle: str, start: int) -> int:
        """The offset just past the first `needle` after `start` (`start` if absent)."""
        with open(self.log_path, "rb") as f:
            f.seek(start)
            data = f.read()
        i = data.find(needle.encode())
        return start + (i + len(needle) if i >= 0 else 0)

    def _wake(self):
        """mosquitto blocks signals while it waits for network events (up to 100 ms): a TCP
        connection, closed at once, wakes its loop so a SIGHUP is handled right away."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                pass
        except OSError:
            pass   # then the reload comes with the loop's next turn

    def kick(self, thing: str, cert_pem: bytes, key_pem: bytes, *, status: bytes | None = None,
             timeout: float = 5.0) -> bool:
        """Close the session that holds client id `thing`, if any; True if there was one.

        Connects with a certificate for `thing` (CN = thing): `use_username_as_clientid` gives
        the new session the thing's client id and mosquitto closes the old one (its last will is
        published). `status` (if given) is then published retained to the thing's status topic.
        Returns once mosquitto has answered; the caller revokes the certificate used here.
        """
        import ssl
        import tempfile
        import threading

        import paho.mqtt.client as paho

        if not self.running():
            raise BrokerError("the broker is not running", hint="start it first")
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(pki.broker_paths(self.state)[0]))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # The ssl module loads keys from files only: a private folder, deleted right away.
        ensure_dir(self.state.pki_dir)
        with tempfile.TemporaryDirectory(dir=self.state.pki_dir, prefix=".kick-") as tmp:
            cert_file, key_file = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
            write_file(cert_file, cert_pem, 0o600)
            write_file(key_file, key_pem, 0o600)
            ctx.load_cert_chain(str(cert_file), str(key_file))
        events = {"connack": threading.Event(), "puback": threading.Event()}
        result = {}
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=thing, protocol=paho.MQTTv311,
                        reconnect_on_failure=False)
        c.tls_set_context(ctx)

        def on_connect(cl, ud, flags, rc, props=None):
            result["rc"] = rc
            events["connack"].set()

        c.on_connect = on_connect
        c.on_disconnect = lambda *a: events["connack"].set()
        c.on_publish = lambda *a: events["puback"].set()
        try:
            c.connect(self.host if self.host != "localhost" else "127.0.0.1", self.port, keepalive=10)
        except (OSError, ssl.SSLError) as e:
            raise BrokerError(f"cannot reach the broker at {self.host}:{self.port} to cut {thing} off: {e}") from e
        c.loop_start()
        try:
            if not events["connack"].wait(timeout) or "rc" not in result or result["rc"].is_failure:
                raise BrokerError(f"the broker did not accept the session that cuts {thing} off "
                                  f"({result.get('rc', 'no CONNACK')})", hint=f"see {self.log_path}")
            if status is not None:
                app = self.state.app
                c.publish(f"dt/{app}/{thing}/status", status, qos=1, retain=True)
                events["puback"].wait(timeout)
            c.disconnect()
        finally:
            c.loop_stop()
        # mosquitto logs the takeover before it sends the CONNACK we waited for
        return self._log_has(KICK_LINE % thing, start)

    def _wait_log(self, needle: str, start: int, timeout: float, what: str):
        # mosquitto answers a SIGHUP within milliseconds: poll finely (the wait is bounded)
        deadline = time.monotonic() + timeout
        delay = 0.001
        while not self._log_has(needle, start):
            if not self.running():
                raise BrokerError(f"mosquitto exited during {what}:\n" + self.log_tail(start=start))
            if time.monotonic() > deadline:
                raise BrokerError(f"mosquitto did not log its {what} within {timeout:.0f} s",
                                  hint=f"see {self.log_path}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.01)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for mosquitto to exit; returns its exit code."""
        return self.proc.wait(timeout=timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
