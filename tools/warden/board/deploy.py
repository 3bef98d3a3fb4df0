"""Put a provisioned device's files on a real ESP32: over mpremote, or as a littlefs image.

It must not replace an identity already on a board unless asked (`force_identity`), nor
overwrite a board's log segments without saving them first, nor give a board a broker it
cannot verify: `check_broker_address` refuses a missing or loopback address and a name that no
broker certificate of the state carries (subjectAltName DNS or IP), before anything is written.

What a board gets is what its twin gets (tools/warden/board/twin.py), byte for byte:

    /boot.py /main.py /firmware/... /lib/...     the compiled app (build.build_app())
    /identity/cert.der key.der ca.der            from <state>/devices/<thing>/ and pki/ca.der
    /identity/log_key                            the registry's log key; the board's hal moves it
                                                 into NVS at first boot and deletes the file
    /keys/<key id>.pk                            trusted OTA keys, if `warden keys init` ran
    /config.json                                 board_config(): broker, Wi-Fi, real sensors

Two ways to write them:

- **mpremote** (`deploy_mpremote`): a probe script on the board reports which identity files
  exist and their SHA-256; an identity that differs from the one we would write is never
  replaced unless `force_identity`. The app folders are replaced whole, the files copied, then
  a verify script prints the SHA-256 of every file and each must match, or DeployError.
- **image** (`deploy_image`): `build_image()` makes the littlefs2 image of the vfs region
  (flashimage.build_vfs: the geometry the board mounts and the twin uses) and esptool writes it
  at 0x310000. Because an image replaces the whole filesystem, the current region is read back
  first: its identity is checked the same way, and any log segments on it are saved to
  <state>/devices/<thing>/board-logs/ before they are overwritten. After writing, the region is
  read back again and compared byte for byte.

Every command line is built by a function here (tests assert on them); `runner` runs them.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WardenError
from ..state import ensure_dir, write_private
from . import build, flashimage
from .flash import DEFAULT_BAUD, esptool_argv

VFS = flashimage.VFS
IDENTITY_FILES = ("/identity/cert.der", "/identity/key.der", "/identity/ca.der")
LOG_KEY_FILE = "/identity/log_key"
MAINTENANCE_FILE = "/maintenance"   # while it exists the board's hal starts no watchdog
APP_TREES = ("/firmware", "/lib")
STALE = ("/app", "/state/ota.pending")
DEFAULT_LOG_QUOTA = 256 * 1024
# What a board measures by default: its own chip temperature (config "sensors"; docs/board.md, '9. Sensors').
BOARD_SENSORS = {"chip_temperature": {"kind": "chip_temperature"}}


class DeployError(WardenError):
    pass


# -- what goes on the board -----------------------------------------------------------------
def board_config(state, thing, *, wifi_ssid=None, wifi_password=None, broker_host=None, broker_port=None,
                 hostname=None, sensors=None, **overrides) -> dict:
    """The device config for a board: the twin's defaults with a reachable broker (`broker_host`
    is required: the project's default is the host's loopback), Wi-Fi and real sensors."""
    from .twin import device_config

    if not broker_host:   # the project's own (localhost) would be the board itself
        raise DeployError("a board's config needs the broker's address",
                          hint="pass --broker-host HOST_OR_IP (the address the board reaches the broker at)")
    broker = {"host": broker_host, "port": broker_port or state.broker_port}
    if hostname:
        broker["hostname"] = hostname    # the name in the broker's certificate, if not the host
    cfg = device_config(state, thing, broker=broker, interval_ms=5000,
                        sensors=sensors if sensors is not None else dict(BOARD_SENSORS))
    if wifi_ssid:
        cfg["wifi"] = {"ssid": wifi_ssid, "password": wifi_password or ""}
    cfg.update(overrides)
    return cfg


# -- the broker a board reaches ------------------------------------------------------------------
# A board's loopback is the board itself: a broker there is never right (the twin's is, and the
# twin is made by `warden device add`, not by deploy).
LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def broker_certificates(state) -> list:
    """[(which broker, PEM bytes)]: the server certificates of every broker this state made:
    the local one (pki/) and each `warden broker config` folder still on this host."""
    from ..fleet import pki
    from ..fleet.registry import Registry

    out = []
    local = state.pki_dir / pki.BROKER_CERT
    if local.exists():
        out.append(("the local broker (warden broker run)", local.read_bytes()))
    if state.registry_path.exists():
        with Registry(state.registry_path) as reg:
            rows = reg.brokers()
        for b in rows:
            cert = Path(b.folder) / "server.crt.pem"
            if cert.exists():
                out.append((f"broker {b.name} ({cert})", cert.read_bytes()))
    return out


def certificate_names(pem: bytes) -> list:
    """The subjectAltName DNS names and IP addresses of a PEM certificate, as text."""
    from cryptography import x509

    try:
        san = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [*san.value.get_values_for_type(x509.DNSName),
            *(str(a) for a in san.value.get_values_for_type(x509.IPAddress))]


def name_matches(name: str, pattern: str) -> bool:
    """Does the board's broker name `name` match a certificate name (IP by value, DNS without
    case, a leading `*.` for exactly one label), as the board's TLS checks it?"""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:   # an address matches only an address (never a DNS name or a wildcard)
        try:
            return ip == ipaddress.ip_address(pattern)
        except ValueError:
            return False
    name, pattern = name.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return name == pattern


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower().rstrip(".") in LOOPBACK_NAMES


def check_broker_address(state, host, hostname=None) -> str:
    """Refuse a broker address a board cannot use: none, a loopback one, or a name (`hostname`,
    else `host`) that no broker certificate of this state carries. Returns which broker's
    certificate names it."""
    if not host:
        raise DeployError("a board needs the broker's address: --broker-host is missing",
                          hint="pass --broker-host HOST_OR_IP, the address the board reaches the broker at on "
                               "its network (see docs/board.md, step 3)")
    if is_loopback(host):
        raise DeployError(f"--broker-host {host} is the board itself, not the broker",
                          hint="pass the broker's LAN or server address (warden broker run listens on 127.0.0.1 "
                               "only: write a broker for the LAN with `warden broker config`)")
    name = hostname or host
    seen = []
    for which, pem in broker_certificates(state):
        names = certificate_names(pem)
        if any(name_matches(name, n) for n in names):
            return which
        seen.append(f"{which}: {', '.join(names) or 'no names'}")
    known = ("; ".join(seen)) or "none (no broker certificate in this state)"
    raise DeployError(f"no broker certificate names {name!r}, so the board would refuse the broker's TLS "
                      f"(certificates: {known})",
                      hint=f"re-issue the broker certificate with that name: warden broker config DIR "
                           f"--listen ADDR:8883 --name {name} (and run that broker from DIR), or pass "
                           f"--broker-hostname NAME with a name its certificate carries")


def identity(state, thing) -> dict:
    """{device path: bytes} of THING's identity (certificate, key, fleet CA)."""
    from ..fleet.devices import get_device

    get_device(state, thing)
    folder = Path(state.device_dir(thing))
    files = {}
    for dev_path, src in zip(IDENTITY_FILES, (folder / "cert.der", folder / "key.der", Path(state.pki_dir) / "ca.der")):
        if not src.exists():
            raise DeployError(f"{src} is missing", hint=f"provision the device first: warden device add {thing}")
        files[dev_path] = src.read_bytes()
    return files


def trusted_keys(state) -> dict:
    """{'/keys/<id>.pk': bytes} of the fleet's trusted OTA keys (none before `warden keys init`)."""
    try:
        from ..ota import keys
    except ImportError:
        return {}
    return keys.device_files(state)


def log_key(state, thing) -> bytes | None:
    from ..fleet.devices import get_device

    return getattr(get_device(state, thing), "log_key", None)


SECURITY_STATE = "/state/ota.json"   # the device's anti-downgrade counters (firmware/ota_state.py)


def security_state(state, thing) -> dict:
    """{kind: [counter, version]}: the registry's anti-downgrade state of THING (empty before
    its first confirmed update)."""
    from ..fleet.devices import get_device

    return get_device(state, thing).security_state()


def deploy_files(state, thing, config: dict, *, app=None) -> dict:
    """{device path: bytes}: the compiled app, identity, log key, trusted keys, config and the
    registry's security counters (so a re-flashed board refuses every older update as before)."""
    files = dict(app if app is not None else build.build_app())
    counters = security_state(state, thing)
    if counters:
        files[SECURITY_STATE] = json.dumps(counters).encode()
    files.update(identity(state, thing))
    from ..aws.device import trust_store_for

    roots = trust_store_for(state, config)   # a broker on AWS IoT Core: Amazon's roots, not the fleet CA
    if roots is not None:
        files["/identity/ca.der"] = roots
    key = log_key(state, thing)
    if key is not None:
        files[LOG_KEY_FILE] = key
    files.update(trusted_keys(state))
    files["/config.json"] = json.dumps(config, indent=1).encode()
    return files


# -- budgets ----------------------------------------------------------------------------------
@dataclass
class Budget:
    """Bytes of the 960 KiB vfs, in littlefs blocks (a file costs whole 4 KiB blocks)."""
    app: int
    data: int          # identity, keys, config
    log_quota: int
    app_slots: int = 2
    overhead: int = 4 * flashimage.BLOCK * 2   # superblock pair + directory blocks, conservatively
    total: int = VFS.size

    @property
    def need(self):
        return self.app * self.app_slots + self.data + self.log_quota + self.overhead

    @property
    def free(self):
        return self.total - self.need

    def check(self):
        if self.need > self.total:
            raise DeployError(
                f"the filesystem budget does not fit the {self.total // 1024} KiB vfs: {self.app_slots} app slots x "
                f"{self.app} + {self.data} data + {self.log_quota} log quota + {self.overhead} overhead = {self.need} bytes",
                hint="lower the log quota, or shrink the app")
        return self


def _blocks(n):
    return -(-n // flashimage.BLOCK) * flashimage.BLOCK if n else 0


def budget(files: dict, log_quota: int = DEFAULT_LOG_QUOTA) -> Budget:
    """The vfs budget of `files` with room for both app slots of the `app` OTA kind."""
    app = sum(_blocks(len(v)) for k, v in files.items() if k.startswith(APP_TREES) or k in ("/boot.py", "/main.py"))
    data = sum(_blocks(len(v)) for k, v in files.items() if not (k.startswith(APP_TREES) or k in ("/boot.py", "/main.py")))
    return Budget(app, data, log_quota)


# -- the littlefs image path -------------------------------------------------------------------
def build_image(files: dict) -> bytes:
    """The vfs region (0x310000, 960 KiB) as littlefs2 with `files`: what the board mounts."""
    return flashimage.build_vfs(files)


def write_image_argv(port, image_path, chip="esp32", baud=DEFAULT_BAUD) -> list:
    return esptool_argv("--chip", chip, "--port", port, "--baud", baud, "write-flash", f"0x{VFS.offset:x}", image_path)


def read_region_argv(port, out_path, chip="esp32", baud=DEFAULT_BAUD) -> list:
    return esptool_argv("--chip", chip, "--port", port, "--baud", baud, "read-flash",
                        f"0x{VFS.offset:x}", f"0x{VFS.size:x}", out_path)


def files_in_image(region: bytes) -> dict | None:
    """{path: bytes} of every file in a vfs region, or None if it holds no littlefs (blank board)."""
    from littlefs import LittleFS, UserContext

    fs = LittleFS(context=UserContext(buffer=bytearray(region)), block_size=flashimage.BLOCK,
                  block_count=flashimage.VFS_BLOCKS, read_size=flashimage.LFS_READ,
                  prog_size=flashimage.LFS_PROG, lookahead_size=flashimage.LFS_LOOKAHEAD, mount=False)
    try:
        fs.mount()
    except Exception:
        return None
    out = {}
    for root, _dirs, names in fs.walk("/"):
        for n in names:
            p = (root.rstrip("/") + "/" + n) if root not in ("", "/") else "/" + n
            with fs.open(p.lstrip("/"), "rb") as f:
                out["/" + p.lstrip("/")] = f.read()
    return out


# -- mpremote path ------------------------------------------------------------------------------
def mpremote_argv(port, *cmd) -> list:
    """argv of mpremote on `port`. `resume`: enter the raw REPL without a soft reset (the
    interrupted app has ended; our steps need no clean heap, and the unix port the tests use
    as a board has no soft reset)."""
    return [sys.executable, "-m", "mpremote", "connect", port, "resume", *map(str, cmd)]


# The board runs these (MicroPython): no secrets in them, they only read and hash.
_HASH_SCRIPT = """import hashlib, binascii, json
def _h(p):
    try:
        f = open(p, "rb")
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(1024)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(b[:n] if n < 1024 else b)
    f.close()
    return binascii.hexlify(h.digest()).decode()
for p in %s:  # a line per file: one JSON of every hash would need kilobytes of heap at once
    print("WARDEN-HASHES " + json.dumps({p: _h(p)}))
"""
_LIST_LOGS = """import os, json
try:
    n = [x for x in os.listdir("/log") if x.endswith(".seg")]
except OSError:
    n = []
print("WARDEN-LOGS " + json.dumps(n))
"""


def hash_script(paths) -> str:
    """MicroPython that prints a line `WARDEN-HASHES {path: sha256 hex or null}` per path (`parse_hashes`)."""
    return _HASH_SCRIPT % json.dumps(sorted(paths))


def parse_hashes(output: str) -> dict:
    """{path: sha256 hex or None} from what `hash_script` printed."""
    parse_marked(output, "WARDEN-HASHES")   # none at all: the board did not run it (a clear error)
    got = {}
    for line in output.splitlines():
        if line.startswith("WARDEN-HASHES "):
            got.update(json.loads(line[len("WARDEN-HASHES "):]))
    return got


def parse_marked(output: str, mark: str):
    for line in output.splitlines():
        if line.startswith(mark + " "):
            return json.loads(line[len(mark) + 1:])
    raise DeployError(f"the board did not answer the {mark.split('-')[-1].lower()} script:\n{output.strip()[-500:]}",
                      hint="is MicroPython running on it (warden flash)? is another program using the port?")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def identity_conflicts(current: dict, files: dict) -> list:
    """Identity files on the board (`current`: path -> sha256 or None) that differ from `files`."""
    return [p for p in IDENTITY_FILES if current.get(p) is not None and current[p] != sha256_hex(files[p])]


@dataclass
class Plan:
    """What a deploy will run: each step (description, argv), in order."""
    steps: list = field(default_factory=list)
    skip_identity: bool = False

    def add(self, what, argv):
        self.steps.append((what, argv))


def mpremote_plan(port, stage: Path, files: dict, write_identity: bool) -> Plan:
    """Steps that copy `files` (staged under `stage` as on the device) with mpremote."""
    plan = Plan(skip_identity=not write_identity)
    # the OTA app slots too (a board would go on running an app installed by an update), and an
    # update awaiting its self-test (the app it names is gone)
    plan.add("remove the old app", mpremote_argv(port, "exec", _rm_tree_code(APP_TREES + STALE)))
    top = sorted({"/" + k.lstrip("/").split("/")[0] for k in files if k != SECURITY_STATE})
    if SECURITY_STATE in files:
        # merged on the board, never lowered: the higher counter per kind wins
        plan.add("keep the security counters", mpremote_argv(port, "exec", merge_counters_code(
            json.loads(files[SECURITY_STATE]))))
    for t in top:
        if t == "/identity" and not write_identity:
            names = [k for k in files if k.startswith("/identity/") and k not in IDENTITY_FILES]
            if names:   # the identity is already there (same files): add only the log key
                plan.add("copy the log key", mpremote_argv(port, "fs", "cp", "-f",
                                                           *[stage / n.lstrip("/") for n in names], ":/identity/"))
            continue
        src = stage / t.lstrip("/")
        if src.is_dir():
            plan.add(f"copy {t}/", mpremote_argv(port, "fs", "cp", "-r", "-f", src, ":/"))
        else:
            plan.add(f"copy {t}", mpremote_argv(port, "fs", "cp", "-f", src, ":" + t))
    return plan


def merge_counters_code(counters: dict) -> str:
    """MicroPython that raises the board's /state/ota.json to at least `counters` per kind."""
    return ("import json, os\n"
            "try:\n"
            f"    d = json.load(open({SECURITY_STATE!r}))\n"
            "except (OSError, ValueError):\n"
            "    d = {}\n"
            f"for k, v in {json.dumps(counters)}.items():\n"
            "    if not isinstance(d.get(k), list) or d[k][0] < v[0]:\n"
            "        d[k] = v\n"
            "try:\n"
            "    os.mkdir('/state')\n"
            "except OSError:\n"
            "    pass\n"
            f"f = open({SECURITY_STATE!r} + '.tmp', 'w')\n"
            "f.write(json.dumps(d))\n"
            "f.close()\n"
            f"os.rename({SECURITY_STATE!r} + '.tmp', {SECURITY_STATE!r})\n")


def _rm_tree_code(trees) -> str:
    return ("import os\n"
            "def _rm(p):\n"
            "    try:\n"
            "        st = os.stat(p)\n"
            "    except OSError:\n"
            "        return\n"
            "    if st[0] & 0x4000:\n"
            "        for n in os.listdir(p):\n"
            "            _rm(p + '/' + n)\n"
            "        os.rmdir(p)\n"
            "    else:\n"
            "        os.remove(p)\n"
            f"for _t in {list(trees)!r}:\n"
            "    _rm(_t)\n")


def _run(argv, runner):
    r = runner(argv)
    if r.returncode != 0:
        out = ((getattr(r, "stdout", "") or "") + (getattr(r, "stderr", "") or "")).strip()
        raise DeployError(f"{Path(argv[2]).name if len(argv) > 2 else argv[0]} failed (exit {r.returncode}): {out[-500:]}",
                          hint="check the port (--port), the cable, and that no serial monitor holds the port")
    return getattr(r, "stdout", "") or ""


def _capture(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def stage_files(files: dict, folder: Path) -> Path:
    """Write `files` under `folder` as the device tree (private files 0600)."""
    for k, v in files.items():
        p = folder / k.lstrip("/")
        ensure_dir(p.parent)
        write_private(p, v)
    return folder


@dataclass
class DeployResult:
    files: dict
    verified: dict            # path -> sha256 read back
    identity_written: bool
    saved_logs: Path | None = None


def deploy_mpremote(state, thing, port, config, *, force_identity=False, runner=None, say=None,
                    app=None) -> DeployResult:
    """Copy the device files with mpremote, keeping an existing identity unless `force_identity`."""
    runner = runner or _capture
    say = say or (lambda s: None)
    files = deploy_files(state, thing, config, app=app)
    budget(files).check()
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        probe = td / "probe.py"
        probe.write_text(hash_script(IDENTITY_FILES))
        say("reading the board's identity")
        current = parse_hashes(_run(mpremote_argv(port, "run", probe), runner))
        conflicts = identity_conflicts(current, files)
        if conflicts and not force_identity:
            raise DeployError(f"the board already holds another identity ({', '.join(conflicts)} differ)",
                              hint="this board was provisioned as something else; pass --force-identity to replace it")
        same = all(current.get(p) == sha256_hex(files[p]) for p in IDENTITY_FILES)
        write_identity = force_identity or not same
        stage = stage_files(files, td / "stage")
        plan = mpremote_plan(port, stage, files, write_identity)
        # A running watchdog would reset the board at the REPL: restart it without one first.
        say("restarting the board in maintenance mode (no watchdog)")
        _run(mpremote_argv(port, "exec", f"open({MAINTENANCE_FILE!r}, 'w').close()", "+", "reset"), runner)
        for what, argv in plan.steps:
            say(what)
            _run(argv, runner)
        check = td / "verify.py"
        check.write_text(hash_script(files))
        say("verifying what was written")
        got = parse_hashes(_run(mpremote_argv(port, "run", check), runner))
        bad = [p for p, d in files.items() if p != SECURITY_STATE and got.get(p) != sha256_hex(d)]
        if bad:
            raise DeployError(f"{len(bad)} file(s) differ after writing: {', '.join(sorted(bad)[:5])}",
                              hint="run the deploy again; if it persists the filesystem may be full or damaged")
        say("leaving maintenance mode and resetting the board")
        _run(mpremote_argv(port, "exec", f"import os; os.remove({MAINTENANCE_FILE!r})", "+", "reset"), runner)
    return DeployResult(files, got, write_identity)


def deploy_image(state, thing, port, config, *, force_identity=False, chip="esp32", baud=DEFAULT_BAUD,
                 runner=None, say=None, app=None) -> DeployResult:
    """Write the vfs image with esptool; the current region is read first (identity, logs)."""
    runner = runner or _capture
    say = say or (lambda s: None)
    files = deploy_files(state, thing, config, app=app)
    budget(files).check()
    image = build_image(files)
    saved = None
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        before = td / "before.bin"
        say("reading the board's filesystem")
        _run(read_region_argv(port, before, chip, baud), runner)
        current = files_in_image(before.read_bytes()) or {}
        conflicts = identity_conflicts({p: sha256_hex(current[p]) for p in IDENTITY_FILES if p in current}, files)
        if conflicts and not force_identity:
            raise DeployError(f"the board already holds another identity ({', '.join(conflicts)} differ)",
                              hint="this board was provisioned as something else; pass --force-identity to replace it")
        logs = {k: v for k, v in current.items() if k.startswith("/log/")}
        if logs:
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            saved = Path(state.device_dir(thing)) / "board-logs" / stamp
            ensure_dir(saved)
            for k, v in logs.items():
                (saved / k.rsplit("/", 1)[1]).write_bytes(v)
            say(f"saved {len(logs)} log segment(s) from the board to {saved}")
        img = td / "vfs.bin"
        write_private(img, image)
        say(f"writing the filesystem image at 0x{VFS.offset:x}")
        _run(write_image_argv(port, img, chip, baud), runner)
        after = td / "after.bin"
        say("reading it back")
        _run(read_region_argv(port, after, chip, baud), runner)
        if after.read_bytes() != image:
            raise DeployError("the filesystem read back differs from the image written",
                              hint="run the deploy again; check the power supply and cable")
    return DeployResult(files, {k: sha256_hex(v) for k, v in files.items()}, True, saved)


def write_image_file(state, thing, config, out, *, app=None) -> tuple[Path, dict]:
    """`--image-only`: build the vfs image into `out` (0600: it holds the private key)."""
    files = deploy_files(state, thing, config, app=app)
    budget(files).check()
    write_private(Path(out), build_image(files))
    return Path(out), files


# -- logs over mpremote ------------------------------------------------------------------------
def read_board_logs(port, runner=None) -> dict:
    """{segment name: bytes} of /log/*.seg on the board, copied with mpremote."""
    runner = runner or _capture
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        lister = td / "ls.py"
        lister.write_text(_LIST_LOGS)
        names = parse_marked(_run(mpremote_argv(port, "run", lister), runner), "WARDEN-LOGS")
        if not names:
            return {}
        dest = td / "log"
        dest.mkdir()
        _run(mpremote_argv(port, "fs", "cp", *[":/log/" + n for n in names], str(dest) + "/"), runner)
        return {n: (dest / n).read_bytes() for n in names}


def pull_logs(state, thing, port, out=None, runner=None):
    """`warden logs pull THING --port P`: the board's log segments into a folder, verified like a twin's."""
    from ..logs.format import LogError
    from ..logs.pull import LOG_DIR, save_pull
    from ..fleet.devices import get_device

    get_device(state, thing)
    files = read_board_logs(port, runner)
    if not files:
        raise LogError(f"the board on {port} has no log segments in {LOG_DIR}",
                          hint="the device writes its log from its first boot with a log key")
    return save_pull(state, thing, files, f"board on {port}", out)
