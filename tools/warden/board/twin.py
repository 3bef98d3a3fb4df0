"""The device twin: a device's flash file, and running the device code on it under `micropython`.

It must not hand the device code anything a board would not give it: the app, identity and
config come from the flash file, only the ROM stand-ins (twin/) from the host.

A twin's flash (devices/<thing>/flash.bin in the project state) is built like a
board's: partition table, app slots, and a littlefs vfs holding boot.py, main.py,
the compiled app, /identity/ (certificate, key, fleet CA) and /config.json.
`run_twin` starts `micropython twin/rom.py` on it and restarts it when the device
resets (exit code RESET_EXIT), as a board reboots.

One process per twin: `TwinLock` holds an flock on `flash.bin.lock` beside the flash for as
long as the twin runs (its micropython inherits the descriptor, so the lock outlives a killed
host process exactly as long as the device code runs). Two copies on one flash would take the
same client id and knock each other off the broker, and both would write the log. The kernel
drops the lock with its last holder: a stale lock file never blocks.
"""
import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import WardenError
from . import build, flashimage

ROOT = build.ROOT
RESET_EXIT = 75          # firmware/hal/unix.py: machine.reset() on the twin
RESET_SOFT, RESET_PWRON = 5, 1
# docs/design.md, "The heap budget", sets the device's budget at 64 KiB, on a board: the 32-bit
# port meets it, updates included. This 64-bit port needs about 1.38 times the heap for the same
# code (8-byte pointers, 32-byte GC blocks): an app update during a session installs from 88k,
# three in a row at 96k (docs/heap.md, "The budget"; `make bench`, heap). The default keeps a
# wider margin: at 96k a session that had just refused a rollback lost the next update's head.
DEFAULT_HEAP = "128k"
APP_DIRS = ("/firmware", "/lib")


class TwinError(WardenError):
    pass


def flash_path(state, thing):
    return Path(state.device_dir(thing)) / "flash.bin"


def lock_path(flash):
    return Path(str(flash) + ".lock")


class TwinLock:
    """The lock of one twin's flash file, held while it runs (a context manager)."""

    def __init__(self, flash):
        self.flash = Path(flash)
        self.fd = None

    def acquire(self):
        """Take the lock, or TwinError naming the pid of the twin that holds it."""
        path = lock_path(self.flash)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = _read_pid(fd)
            os.close(fd)
            raise TwinError(f"this twin already runs (pid {pid or '?'}) on {self.flash}",
                            hint="two copies would knock each other off the broker and lose log "
                                 f"records: use the running one, or stop it first (kill {pid or 'PID'})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_pid(fd):
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


def lock_holder(flash):
    """The pid of the process running the twin on `flash` (it holds the lock), or None."""
    try:
        fd = os.open(lock_path(flash), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_pid(fd) or -1
    finally:
        os.close(fd)   # a lock we took goes with the descriptor
    return None


def flash_users(paths):
    """{path: [pid, ...]} of the processes holding each flash file in `paths` open (a running
    micropython), from /proc; None where there is no /proc to tell."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").exists():
        return None
    wanted = {str(Path(p).resolve()): p for p in paths}
    out = {p: [] for p in paths}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target in wanted and int(entry.name) not in out[wanted[target]]:
                    out[wanted[target]].append(int(entry.name))
        except OSError:
            continue
    return out


def device_config(state, thing, **overrides):
    cfg = {
        "thing": thing,
        "app": state.app,
        "broker": {"host": state.broker_host, "port": state.broker_port},
        "keepalive": 60,
        "interval_ms": 1000,
        "qos": 1,
        "timeout": 10,
        "sensors": {
            "temperature": {"kind": "sine", "base": 21.0, "amplitude": 2.0, "period": 60},
            "humidity": {"kind": "sine", "base": 45.0, "amplitude": 5.0, "period": 90},
        },
    }
    cfg.update(overrides)
    return cfg


def identity_files(cert_der, key_der, ca_der):
    return {"/identity/cert.der": cert_der, "/identity/key.der": key_der, "/identity/ca.der": ca_der}


def build_flash(path, identity, config, log_key=None, extra=None):
    """Write a twin flash file at `path`: the current app build, `identity` files and `config`,
    and `log_key` (32 bytes) in the NVS partition, where the device's hal.log_key() finds it."""
    files = dict(build.build_app())
    files.update(identity)
    files.update(extra or {})  # e.g. the trusted OTA keys, /keys/<id>.pk
    files["/config.json"] = json.dumps(config, indent=1).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    image = flashimage.new_flash(files)
    if log_key is not None:
        from . import nvsimage
        nvs = flashimage.part("nvs")
        image[nvs.offset:nvs.offset + nvs.size] = nvsimage.encode({"warden": {"log_key": log_key}}, nvs.size)
    tmp.write_bytes(image)
    os.chmod(tmp, 0o600)  # the flash holds the device private key
    os.replace(tmp, path)
    return path


def provision_twin(state, thing, cert_der, key_der, config=None, log_key=None):
    """Build THING's twin flash in the project state with its identity, the default config
    and its log key (default: the registry's)."""
    ca_der = (Path(state.pki_dir) / "ca.der").read_bytes()
    cfg = config if config is not None else device_config(state, thing)
    dev = None
    if Path(state.registry_path).exists():
        from ..fleet.registry import Registry
        with Registry(state.registry_path) as reg:
            dev = reg.get(thing)
    if log_key is None:
        log_key = dev.log_key if dev else None
    from ..ota.keys import device_files
    extra = device_files(state)
    counters = dev.security_state() if dev else {}
    if counters:  # a re-provisioned twin keeps refusing every older update (docs/ota.md, 'Anti-downgrade')
        extra["/state/ota.json"] = json.dumps(counters).encode()
    return build_flash(flash_path(state, thing), identity_files(cert_der, key_der, ca_der), cfg, log_key,
                       extra=extra)


def sync_app(path):
    """Replace the app in a twin's flash with the current build; identity, config and data stay.

    The build becomes the factory app and the OTA app slots (/app) are cleared, so the code in
    the working tree is what runs (an app installed by OTA would otherwise take precedence)."""
    files = build.build_app()
    ff = flashimage.FlashFile(path)
    for d in APP_DIRS + ("/app",):
        ff.remove_tree(d)
    ff.write(files)
    ff.save()


def update_config(path, **changes):
    ff = flashimage.FlashFile(path)
    cfg = json.loads(ff.read("/config.json"))
    cfg.update(changes)
    ff.write({"/config.json": json.dumps(cfg, indent=1).encode()})
    ff.save()
    return cfg


def micropython_binary():
    exe = os.environ.get("MICROPYTHON")
    if exe:
        return exe
    exe = Path(sys.executable).parent / "micropython"
    if not exe.exists():
        raise TwinError("micropython (the MicroPython unix port) not found",
                        hint="run `make setup`, or set MICROPYTHON to a unix port you built")
    return str(exe)


def twin_command(path, heap=DEFAULT_HEAP, reset_cause=RESET_PWRON, binary=None):
    """(argv, env) that boot the twin on flash file `path` once (with `binary`, another unix port
    of the same MicroPython version: a 32-bit one lays the heap out as an ESP32 does)."""
    env = dict(os.environ)
    env["WARDEN_FLASH"] = str(path)
    env["WARDEN_RESET_CAUSE"] = str(reset_cause)
    # Only the ROM's modules (precompiled) are on the host path; the rest comes from flash.
    env["MICROPYPATH"] = ".frozen:" + str(build.build_twin_rom())
    return [binary or micropython_binary(), "-X", "heapsize=" + heap, "-c", "import rom"], env


def run_twin(path, heap=DEFAULT_HEAP, max_restarts=None, stdout=None, on_start=None, lock=None):
    """Run the twin until it exits without a reset; returns its last exit code.

    A reset (exit RESET_EXIT) starts it again as a soft reset. Ctrl-C is passed to the
    device (KeyboardInterrupt: it publishes `offline` and disconnects), then we return.
    With `lock` (a held TwinLock), each micropython inherits its descriptor.
    """
    if not Path(path).exists():
        raise TwinError(f"no twin flash at {path}", hint="run `warden device add THING` first")
    cause = RESET_PWRON
    restarts = 0
    while True:
        argv, env = twin_command(path, heap, cause)
        proc = subprocess.Popen(argv, env=env, stdout=stdout,
                                pass_fds=(lock.fd,) if lock is not None and lock.fd is not None else ())
        if on_start:
            on_start(proc)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        if code != RESET_EXIT:
            return code
        restarts += 1
        if max_restarts is not None and restarts > max_restarts:
            return code
        cause = RESET_SOFT
