"""The fleet's mosquitto brokers: their config (TLS 1.2+ with AEAD suites, client certificates,
the policy's ACL, the guard plugin), and the one `warden broker run` runs on loopback.

It must not signal a broker it did not start (`reload` is for the one it runs), nor carry
revocations to brokers: warden.broker.control reaches every broker, this one included.

`render_config` writes one TLS listener: client certificates are required and verified against
the fleet CA and its CRL, the certificate CN becomes the username and the client id (so a device
can neither pose as another nor kick it off with its client id), anonymous clients are refused,
the ACL generated from the policy scopes every device to its own topics, and the guard plugin
(warden.broker.guard) refuses names outside the policy and takes revocations at run time.
`warden broker run` listens on loopback only; `warden broker config` (warden.broker.control) writes the
same config for any address.

`Broker` runs one mosquitto process for a state (a context manager), holding its run folder's
lock for as long as mosquitto runs: a second broker on the same folder refuses to start.
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

from dataclasses import dataclass

from ..errors import WardenError
from ..fleet import pki
from ..fleet.registry import Registry
from ..policy.model import load_policy
from ..policy.mosquitto import render_mosquitto_acl
from ..state import State, ensure_dir, write_file
from . import guard

CONF_FILE = "mosquitto.conf"
ACL_FILE = "acl"
LOG_FILE = "mosquitto.log"
OUT_FILE = "mosquitto.out"
PID_FILE = "mosquitto.pid"
BANS_FILE = "banned"
QUARANTINE_FILE = "quarantined"   # beside the ban list: the devices `warden monitor` quarantined
LOCK_FILE = "broker.lock"
CONTROL_TOPIC = "$CONTROL/warden/v1"
READY_LINE = " running"          # "mosquitto version X running", logged once the listeners are up
RELOAD_LINE = "Reloading config"  # logged on SIGHUP, before the reload (same loop turn: no race)
INSTALL_HINT = "run `make setup`, or install it: sudo apt-get install mosquitto (brew install mosquitto)"


class BrokerError(WardenError):
    hint = "see the broker's log (mosquitto.log in its folder) and docs/security.md, 'The broker'"


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


def _listening(port: int) -> bool | None:
    """Does a socket listen on TCP `port` (/proc/net/tcp*)? None where there is no /proc. Asking
    the kernel leaves no trace in the broker's log, as a probe connection would."""
    found = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        found = bool(found)
        for row in rows:
            fields = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return found


def _quote(path) -> str:
    path = str(path)
    if any(c in path for c in "\n\r"):
        raise BrokerError(f"path {path!r} cannot be used in a mosquitto config")
    return path


def client_address(state: State):
    """(host, port, source): where a client on this machine reaches the fleet's broker. The broker
    `warden broker run` runs from this state wins, on the port it actually listens on (`--port`
    may differ from project.json); with none running, project.json's."""
    b = Broker.find_running(state)
    if b is not None:
        host = state.broker_host if _is_loopback(state.broker_host) else b.host
        return host, b.port, f"the running broker, pid {b.pid}"
    return state.broker_host, state.broker_port, "project.json: no broker runs from this state"


TLS_VERSION = "tlsv1.2"
# AEAD suites with forward secrecy only (the broker key is EC P-256, so ECDSA suites): what
# MicroPython's mbedTLS and current clients negotiate (docs/revocation.md, 'TLS').
TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"
TLS13_CIPHERS = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


@dataclass
class BrokerFiles:
    """Where one broker's config points: TLS material, ACL, CRL, ban list, plugin, log and pid."""
    ca: Path
    cert: Path
    key: Path
    crl: Path
    acl: Path
    bans: Path
    plugin: Path
    log: Path
    pid: Path

    @classmethod
    def for_state(cls, state: State, run_dir: Path, plugin: Path) -> "BrokerFiles":
        """A broker run by warden: the state's PKI files, the rest in `run_dir`."""
        ca, cert, key, crl = pki.broker_paths(state)
        return cls(ca, cert, key, crl, run_dir / ACL_FILE, run_dir / BANS_FILE, plugin,
                   run_dir / LOG_FILE, run_dir / PID_FILE)

    @classmethod
    def in_folder(cls, folder: Path) -> "BrokerFiles":
        """A self-contained config folder (`warden broker config`): everything inside it."""
        return cls(folder / "ca.crt.pem", folder / "server.crt.pem", folder / "server.key.pem",
                   folder / "crl.pem", folder / ACL_FILE, folder / BANS_FILE, folder / guard.LIB_NAME,
                   folder / LOG_FILE, folder / PID_FILE)


def render_config(state: State, port: int, host: str = "127.0.0.1", log_path=None, *, acl_path=None,
                  log_stdout: bool = False, as_root: bool | None = None, pid_path=None,
                  persistence_dir=None, files: BrokerFiles | None = None, any_host: bool = False) -> str:
    """The text of mosquitto.conf for `state`'s PKI, listening on `host`:`port`.

    `warden broker run` listens on loopback only; `any_host` (for `warden broker config`) allows
    any address. `files` says where everything is (default: the state's PKI, the rest in the
    state's broker folder, `acl_path`/`log_path`/`pid_path` overriding). With `persistence_dir`,
    mosquitto keeps retained messages, persistent sessions and their queued QoS 1 messages there
    across restarts (written on shutdown); without it, a restart forgets them.
    `user root` is added only when running as root (`as_root` overrides the check): mosquitto
    started as root otherwise switches to the `mosquitto` user, which cannot read the keys in
    the (0700) state folder.
    """
    if not any_host and not _is_loopback(host):
        raise BrokerError(f"`warden broker run` listens on loopback only, not {host!r}",
                          hint="for a broker other hosts reach, write its config with "
                               "`warden broker config OUT_DIR --listen ADDR:PORT`")
    port = int(port)
    if not 0 < port < 65536:
        raise BrokerError(f"port {port} is not a TCP port")
    if files is None:
        run_dir = Path(log_path).parent if log_path else state.broker_dir
        files = BrokerFiles.for_state(state, run_dir, Path(guard.LIB_NAME))
        if acl_path:
            files.acl = Path(acl_path)
        if log_path:
            files.log = Path(log_path)
        files.pid = Path(pid_path) if pid_path else files.log.parent / PID_FILE
    if as_root is None:
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    lines = [
        "# Generated by warden. Do not edit: warden rewrites it.",
        "per_listener_settings false",
        "allow_anonymous false",
        *(["persistence true", f"persistence_location {_quote(Path(persistence_dir).resolve())}/"]
          if persistence_dir else ["persistence false"]),
        "set_tcp_nodelay true",
        f"acl_file {_quote(files.acl.resolve())}",
        f"pid_file {_quote(files.pid.resolve())}",
        f"log_dest file {_quote(files.log.resolve())}",
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
        "# The guard: identity rules and runtime revocation over $CONTROL/warden/v1 (admin principals)",
        f"plugin {_quote(files.plugin.resolve())}",
        f"plugin_opt_acl_file {_quote(files.acl.resolve())}",
        f"plugin_opt_crl_file {_quote(files.crl.resolve())}",
        f"plugin_opt_ban_file {_quote(files.bans.resolve())}",
        f"plugin_opt_quarantine_file {_quote((files.bans.parent / QUARANTINE_FILE).resolve())}",
        "",
        f"listener {port} {host}",
        "protocol mqtt",
        f"cafile {_quote(files.ca.resolve())}",
        f"certfile {_quote(files.cert.resolve())}",
        f"keyfile {_quote(files.key.resolve())}",
        f"crlfile {_quote(files.crl.resolve())}",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        f"tls_version {TLS_VERSION}",
        f"ciphers {TLS12_CIPHERS}",
        f"ciphers_tls1.3 {TLS13_CIPHERS}",
        "",
    ]
    return "\n".join(lines)


def fleet_acl(state: State) -> str:
    """The ACL every broker of the fleet gets: the policy's rendering, plus the admin principals'
    control channel (and the retained status a revocation leaves for operators)."""
    from ..fleet.principals import ADMIN

    text = render_mosquitto_acl(state.app, load_policy(state))
    admins = []
    if state.registry_path.exists():
        with Registry(state.registry_path) as reg:
            admins = [p.cn for p in reg.principals(ADMIN) if p.status == "active"]
    for cn in admins:
        text += (f"# broker administration (warden.broker.control): not part of the fleet policy\n"
                 f"user {cn}\n"
                 f"topic write {CONTROL_TOPIC}\n"
                 f"topic read {CONTROL_TOPIC}/response\n"
                 f"topic write dt/{state.app}/+/status\n\n")
    return text


def fleet_bans(state: State) -> list:
    """Every name the brokers must refuse: revoked devices and revoked principals."""
    if not state.registry_path.exists():
        return []
    with Registry(state.registry_path) as reg:
        return sorted({d.thing for d in reg.list("revoked")}
                      | {p.cn for p in reg.principals() if p.status == "revoked"})


def fleet_quarantine(state: State) -> list:
    """The devices quarantined by `warden monitor` (warden.monitor.store): status and metrics only."""
    if not state.registry_path.exists():
        return []
    from ..monitor.store import quarantined_things

    return quarantined_things(state)


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
        self._lock = None           # the run folder's lock file, held while our mosquitto runs
        self._attached_pid = None   # a mosquitto we did not start (find_running)

    @property
    def name(self) -> str:
        """Its name in the registry's broker list: "local" for the state's own broker folder."""
        if self.run_dir.resolve() == self.state.broker_dir.resolve():
            return "local"
        return f"local:{self.run_dir.resolve()}"

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
    def lock_path(self) -> Path:
        return self.run_dir / LOCK_FILE

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
        return write_file(self.acl_path, fleet_acl(self.state))

    def write_config(self) -> Path:
        """Write mosquitto.conf, the ACL and the ban list (the fleet's state as of now)."""
        ensure_dir(self.run_dir)
        ca, cert, key, _crl = pki.broker_paths(self.state)
        for path in (ca, cert, key):
            if not path.exists():
                raise BrokerError(f"{path} is missing", hint="run `warden pki init` first")
        from ..fleet.principals import ensure_default_principals

        ensure_default_principals(self.state)
        pki.refresh_crl(self.state)
        self.write_acl()
        write_file(self.run_dir / BANS_FILE, "".join(n + "\n" for n in fleet_bans(self.state)))
        write_file(self.run_dir / QUARANTINE_FILE, "".join(n + "\n" for n in fleet_quarantine(self.state)))
        if self.persistence_dir:
            ensure_dir(Path(self.persistence_dir))
        files = BrokerFiles.for_state(self.state, self.run_dir, guard.plugin_path())
        text = render_config(self.state, self.port, self.host, log_stdout=self.log_stdout,
                             persistence_dir=self.persistence_dir, files=files)
        return write_file(self.conf_path, text)

    # -- the run folder's lock: one broker per folder ----------------------------------------------
    def _take_lock(self):
        """Hold the run folder's lock (kept by mosquitto too, so it lasts exactly as long as the
        broker); BrokerError naming the running broker if another holds it."""
        import fcntl
        import json

        ensure_dir(self.run_dir)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                held = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                held = {}
            os.close(fd)
            where = f"{held.get('host', '?')}:{held.get('port', '?')}, pid {held.get('pid', '?')}"
            raise BrokerError(f"a broker already runs from {self.run_dir} ({where})",
                              hint="use it (warden watch, twin run ... connect to it), or stop it first; "
                                   "its files were left as they are") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"host": self.host, "port": self.port, "pid": os.getpid()}).encode(), 0)
        self._lock = fd

    def _release_lock(self):
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    @staticmethod
    def folder_in_use(run_dir) -> bool:
        """Does a warden-run broker hold the lock of `run_dir`?"""
        import fcntl

        try:
            fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

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
        self._take_lock()
        try:
            self.write_config()
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            if self.output == "file":
                self._out = open(self.out_path, "wb")
                out = self._out
            else:
                out = self.output
            try:
                self.proc = subprocess.Popen([binary, "-c", str(self.conf_path.resolve())],
                                             stdin=subprocess.DEVNULL, stdout=out, pass_fds=(self._lock,),
                                             stderr=subprocess.STDOUT if out is not None else None)
            except OSError as e:
                self._close_out()
                raise BrokerError(f"cannot start {binary}: {e}", hint=INSTALL_HINT) from e
            try:
                self._wait_ready(log_start)
            except BaseException:
                self._kill()
                raise
        except BaseException:
            self._release_lock()
            raise
        with Registry(self.state.registry_path) as reg:
            reg.put_broker(self.name, self.host, self.port, str(self.run_dir.resolve()))
            reg.mark_broker(self.name, None)
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
            # mosquitto logs this line after it has bound and opened every listener (a port it
            # cannot bind makes it exit first), so it proves the listener is up and ours. No probe
            # connection: a TCP connect closed before the TLS handshake made mosquitto log an
            # OpenSSL error and a protocol error at every start.
            if self._log_has(READY_LINE, log_start) and _listening(self.port) is not False:
                return
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

    def _forget(self):
        self._release_lock()
        try:
            with Registry(self.state.registry_path) as reg:
                reg.forget_broker(self.name)
        except WardenError:
            pass   # a damaged registry must not keep a broker from stopping

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
        self._forget()
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
